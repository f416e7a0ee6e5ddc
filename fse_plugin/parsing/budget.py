"""How long a parser training run trains: its step budget and schedule (``Budget``) and its clock
(``Clock``)."""
from __future__ import annotations

import math
import time

import torch

__all__ = ["Budget", "Clock"]


class Budget:
    """How long a run trains and how far along its schedule it is.

    ``steps`` optimizer steps (from ``steps``, or ``epochs`` x batches per epoch) set the schedule;
    ``time_budget`` seconds stop the run early when they run out first. Without steps the run is
    timed and its schedule is the time spent.
    """

    def __init__(self, steps: int | None, epochs: int | None, time_budget: float | None) -> None:
        self.steps, self.epochs, self.time_budget = steps, epochs, time_budget

    @classmethod
    def of(cls, epochs: int | None, steps: int | None, time_budget: float | None,
           per_epoch: int) -> "Budget":
        """The budget of a run with ``per_epoch`` batches per epoch
        (the settings checked the values)."""
        if steps is not None:
            return cls(steps, math.ceil(steps / per_epoch), time_budget)
        if epochs is not None:
            return cls(epochs * per_epoch, epochs, time_budget)
        return cls(None, None, time_budget)

    def progress(self, step: int, elapsed: float) -> float:
        """Fraction of the schedule spent: steps, or seconds in a timed run."""
        return step / self.steps if self.steps is not None else elapsed / self.time_budget

    def steps_done(self, step: int) -> bool:
        return self.steps is not None and step >= self.steps

    def epochs_done(self, epoch: int) -> bool:
        return self.epochs is not None and epoch >= self.epochs

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(steps={self.steps}, epochs={self.epochs}, "
                f"time_budget={self.time_budget})")


class Clock:
    """Training seconds so far (earlier runs of a resumed one included), agreed by every rank."""

    def __init__(self, world: int, dev: torch.device, elapsed0: float,
                 time_budget: float | None) -> None:
        self.world, self.dev, self.elapsed0, self.time_budget = world, dev, elapsed0, time_budget
        self.t_start, self.cpu_start, self.val_cost = time.perf_counter(), time.process_time(), 0.0

    def rank_max(self, value: float) -> float:
        """The same number on every rank: ranks must agree on when the budget ends,
        or collectives hang."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.dev)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t.item())

    def local(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.t_start

    def elapsed(self) -> float:
        """The ranks' agreed time; without a time budget nothing depends on it, so no collective
        (and no CUDA sync) runs every step."""
        return self.local() if self.time_budget is None else self.rank_max(self.local())

    def cpu(self) -> float:
        """This process's CPU seconds: how much of the wall-clock a shared machine really gave."""
        return time.process_time() - self.cpu_start

    def left(self, now: float) -> bool:
        """Time for one more validation + checkpoint (x1.5: noisy machines)?"""
        return self.time_budget is None or now + 1.5 * self.val_cost < self.time_budget

    def __repr__(self) -> str:
        return f"{type(self).__name__}(elapsed={self.local():.1f}s, time_budget={self.time_budget})"
