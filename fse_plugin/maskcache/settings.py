"""How a mask cache build runs (``BuildSettings``), apart from the build: the command line reads its
defaults without importing the parser's machinery (torch)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from fse_plugin.common import checks
from fse_plugin.common.precision import PRECISIONS
from fse_plugin.maskcache.spec import DEFAULT_CHUNK_SIZE

__all__ = ["BuildSettings", "default_workers"]


def default_workers(cpus: int | None = None) -> tuple[int, int]:
    """(decode processes, encode processes) for the CPUs this rank may use (those it may run on,
    shared by torchrun's local ranks). One core is left for the main process; of the rest two thirds
    decode (up to 6) and the others encode (up to 4): reading + decoding a face costs more than
    encoding its mask, and the caps are where the build kept up with a GPU's parser
    (benchmarks/README.md, "## maskcache")."""
    if cpus is None:
        cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else (os.cpu_count() or 1))
        cpus = max(1, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    usable = max(1, cpus - 1)
    decode = max(1, min(6, 2 * usable // 3))
    return decode, max(1, min(4, usable - decode))


@dataclass(frozen=True)
class BuildSettings:
    """How ``precompute`` runs: parser batch (per rank), device, autocast ``precision`` (fp32, fp16,
    bf16), decode and encode processes (None: ``default_workers()``; 0 encode processes: in the main
    process), masks per chunk file, whether to replace a cache of another spec at the output, a
    progress bar.

    Batch size, device and precision are recorded in the cache's spec:
    they decide the masks' bits."""
    batch_size: int = 256
    device: str = "auto"
    precision: str = "auto"
    num_workers: int | None = None
    encode_workers: int | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        checks.count(self.batch_size, "batch_size")
        checks.count(self.chunk_size, "chunk_size")
        for name in ("num_workers", "encode_workers"):
            if getattr(self, name) is not None:
                checks.count(getattr(self, name), name, minimum=0)
        checks.choice(self.precision, "precision", ("auto", *PRECISIONS))

    def workers(self) -> tuple[int, int]:
        """(decode, encode) processes, defaults filled in."""
        auto = default_workers()
        return (auto[0] if self.num_workers is None else self.num_workers,
                auto[1] if self.encode_workers is None else self.encode_workers)
