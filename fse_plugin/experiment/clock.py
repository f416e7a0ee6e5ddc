"""Seconds per stage of a demo or study run, logged as each stage ends, the machine they ran on (its
CPU decides the last bits of every float, so scores repeat on one kind of CPU), and a note when the
machine is too busy for the threads asked."""
from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path

import torch

__all__ = ["StageClock", "machine", "warn_if_busy"]

log = logging.getLogger(__name__)


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    """What a run's numbers depend on besides the code and the seed: CPU model, cores, torch and
    threads."""
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def warn_if_busy(prefix: str) -> None:
    """Say so when other jobs load the CPUs: torch's threads then wait on each other at every
    operation, and one thread is several times faster (figures in benchmarks/README.md)."""
    threads, cores = torch.get_num_threads(), os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if threads > 1 and load > cores - 0.5:
        log.warning("[%s] note: load average %.1f on %d cores with %d torch threads; on a busy "
                    "machine --threads 1 is several times faster (scores repeat among runs with "
                    "the same thread count)",
                    prefix, load, cores, threads)


class StageClock:
    """``clock("stage")`` records the seconds since the previous call; ``total()`` adds the whole
    run."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.start = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.last, 1)
        self.last = now
        log.info("[%s] %s done in %.1f s", self.prefix, name, self.seconds[name])

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": round(time.perf_counter() - self.start, 1)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.prefix!r}, stages={list(self.seconds)})"
