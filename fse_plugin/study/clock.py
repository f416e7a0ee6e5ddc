"""Seconds per stage of a demo or study run, printed as each stage ends, and a note when the machine
is too busy for the threads asked."""
from __future__ import annotations

import os
import sys
import time

import torch

__all__ = ["StageClock", "warn_if_busy"]


def warn_if_busy(prefix: str) -> None:
    """Say on stderr when other jobs load the CPUs: torch's threads then wait on each other at every
    operation (2-thread runs measured 3.6-8x slower than 1-thread runs on 2 cores at load average 6-7)."""
    threads, cores = torch.get_num_threads(), os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if threads > 1 and load > cores - 0.5:
        print(f"[{prefix}] note: load average {load:.1f} on {cores} cores with {threads} torch threads; on a busy "
              f"machine --threads 1 is several times faster (scores repeat among runs with the same thread count)",
              file=sys.stderr, flush=True)


class StageClock:
    """``clock("stage")`` records the seconds since the previous call; ``total()`` adds the whole run."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.start = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.last, 1)
        self.last = now
        print(f"[{self.prefix}] {name} done in {self.seconds[name]:.1f} s", flush=True)

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": round(time.perf_counter() - self.start, 1)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.prefix!r}, stages={list(self.seconds)})"
