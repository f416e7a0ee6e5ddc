"""Seconds per stage of a demo or study run, printed as each stage ends."""
from __future__ import annotations

import time

__all__ = ["StageClock"]


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
