"""Run upstream arcface_torch's own ``train_v2.py`` and ``eval_ijbc.py`` in the tests, also without
CUDA.

    python tests/arcface_harness.py ARCFACE_DIR configs/NAME
    python tests/arcface_harness.py ARCFACE_DIR eval_ijbc.py --model-prefix ...
        (eval_ijbc.py's flags)

does what ``cd ARCFACE_DIR && python train_v2.py configs/NAME`` (or ``python eval_ijbc.py ...``)
does (``runpy``, ``sys.argv`` set), for train_v2.py after filling in a one-process torch.distributed
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT on a free port) unless torchrun
has set it. arcface_torch is written for CUDA + nccl; without CUDA, and only then, the CUDA-only
calls it makes get CPU stand-ins here, at run time (the patched tree itself stays CUDA code): nccl
-> gloo, ``Tensor.cuda()`` / ``Module.cuda()`` -> no-op, ``torch.cuda.Stream`` / ``stream`` /
``current_stream`` / ``set_device`` -> stand-ins, DDP ``device_ids`` -> None, ``.to(<int device>)``
-> cpu, ``torch.cuda.amp`` GradScaler -> a disabled one, and (several ranks) ``sync_random_seed``'s
device "cuda" -> cpu. With CUDA nothing is changed (nccl, the GPU, fp16 as configured).
"""
from __future__ import annotations

import contextlib
import functools
import os
import runpy
import socket
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_env() -> None:
    """torchrun's variables for one process, where torchrun did not set them."""
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                       ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(free_port()))


class _CPUStream:
    """torch.cuda.Stream stand-in: CPU work is synchronous, so there is nothing to wait for."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def wait_stream(self, stream) -> None:
        pass

    def synchronize(self) -> None:
        pass


class _CPUDDP(DistributedDataParallel):
    """DDP over gloo: CPU modules take no device_ids."""

    def __init__(self, module, *args, device_ids=None, **kwargs) -> None:
        super().__init__(module, *args, device_ids=None, **kwargs)


def _gloo(init):
    @functools.wraps(init)
    def init_process_group(backend=None, *args, **kwargs):
        return init("gloo" if backend in (None, "nccl") else backend, *args, **kwargs)
    return init_process_group


def _cpu_to(to):
    @functools.wraps(to)
    def to_cpu(self, *args, **kwargs):  # DataLoaderX: batch.to(device=local_rank) with an int
        if args and isinstance(args[0], int) and not isinstance(args[0], bool):
            args = ("cpu", *args[1:])
        if isinstance(kwargs.get("device"), int):
            kwargs["device"] = "cpu"
        return to(self, *args, **kwargs)
    return to_cpu


def cpu_stand_ins() -> None:
    """Replace the CUDA-only calls train_v2.py makes by CPU equivalents (call only without CUDA)."""
    dist.init_process_group = _gloo(dist.init_process_group)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, device=None: self
    torch.Tensor.to = _cpu_to(torch.Tensor.to)
    torch.cuda.Stream = _CPUStream
    torch.cuda.stream = lambda stream=None: contextlib.nullcontext()
    torch.cuda.current_stream = lambda device=None: _CPUStream()
    torch.cuda.set_device = lambda device: None
    torch.nn.parallel.DistributedDataParallel = _CPUDDP
    disabled = functools.partial(torch.amp.GradScaler, "cpu", enabled=False)
    torch.cuda.amp.GradScaler = torch.cuda.amp.grad_scaler.GradScaler = disabled


def run_train_v2(arcface_dir: str, config: str) -> None:
    """``python train_v2.py CONFIG`` inside ``arcface_dir`` (its imports and relative config
    path)."""
    single_process_env()
    os.chdir(arcface_dir)
    sys.path.insert(0, os.getcwd())
    if not torch.cuda.is_available():
        cpu_stand_ins()
        from utils import utils_distributed_sampler  # the DistributedSampler's seed broadcast
        utils_distributed_sampler.sync_random_seed.__defaults__ = (None, "cpu")
    sys.argv = ["train_v2.py", config]
    runpy.run_path("train_v2.py", run_name="__main__")


def run_eval_ijbc(arcface_dir: str, argv: list[str]) -> None:
    """``python eval_ijbc.py *argv`` inside ``arcface_dir`` (it calls ``.cuda()`` on its model and
    batches)."""
    os.chdir(arcface_dir)
    sys.path.insert(0, os.getcwd())
    if not torch.cuda.is_available():
        cpu_stand_ins()
    sys.argv = ["eval_ijbc.py", *argv]
    runpy.run_path("eval_ijbc.py", run_name="__main__")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[2] == "eval_ijbc.py":
        run_eval_ijbc(sys.argv[1], sys.argv[3:])
    elif len(sys.argv) == 3:
        run_train_v2(sys.argv[1], sys.argv[2])
    else:
        raise SystemExit(__doc__.split("\n\n")[1])
