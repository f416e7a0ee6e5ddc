"""Where a computation runs: device choice, torchrun's process group, and autocast."""
from __future__ import annotations

import os
from contextlib import nullcontext
from typing import ContextManager

import torch
from torch import nn

from fse_plugin.common.errors import FSEError
from fse_plugin.common.precision import PRECISIONS

__all__ = ["resolve_device", "dist_env", "resolve_precision", "mixed_precision", "model_device",
           "unwrapped_key"]

# DataParallel / DistributedDataParallel, torch.compile
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def resolve_device(device: str | torch.device = "auto", name: str = "--device") -> torch.device:
    """'auto' is CUDA when available, else CPU; 'cpu', 'cuda' and 'cuda:N' only when this machine
    has them (checked here, so a missing GPU is one clear error naming ``name``, not a driver
    message later)."""
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise FSEError(f"{name}: unknown device {text!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise FSEError(f"{name}: device {text!r} is not supported; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise FSEError(f"{name}: {text} asked for, but this machine has no usable CUDA device "
                       f"(torch {torch.__version__}); use --device cpu or auto")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise FSEError(f"{name}: {text} asked for, but this machine has "
                       f"{torch.cuda.device_count()} CUDA device(s): "
                       f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return dev


def dist_env(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world_size, device) under torchrun (gloo on CPU, nccl on CUDA, the process group
    started once); (0, 1, device) in a plain process. On CUDA each rank takes
    ``cuda:LOCAL_RANK``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``precision`` as it runs on ``device``: 'auto' is bf16 autocast on CUDA and fp32 elsewhere
    (what the parser's training and the cache build did by default before ``--precision``
    existed)."""
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise FSEError(f"precision {precision!r} unknown; "
                       f"use auto or one of {', '.join(PRECISIONS)}")
    return precision


def mixed_precision(device: torch.device | str, precision: str) -> ContextManager:
    """torch.autocast on ``device`` to the dtype ``precision`` names ('fp16', 'bf16'); 'fp32' is a
    no-op."""
    if precision not in PRECISIONS:
        raise FSEError(f"precision {precision!r} unknown; use one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    return (nullcontext() if dtype is None
            else torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype)))


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def unwrapped_key(key: str) -> str:
    """A state_dict key as the bare model names it: ``module.`` (DDP) and ``_orig_mod.``
    (torch.compile) removed, nested in any order (``module._orig_mod.conv0.weight`` ->
    ``conv0.weight``)."""
    while key.startswith(_WRAPPER_PREFIXES):
        for prefix in _WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
    return key
