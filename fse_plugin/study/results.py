"""From runs to evidence: per variant and metric the mean over seeds with its 95% interval, and per
variant the paired per-seed difference from the reference with its interval, tests and verdict."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fse_plugin.common import FSEError
from fse_plugin.study.probes import describe, higher_is_better
from fse_plugin.study.statistics import Interval, PairedDifference, mean_ci, paired_difference
from fse_plugin.study.variants import REFERENCE
from fse_plugin.study.verdict import Verdict, verdict

__all__ = ["RunResult", "StudyResults", "summarise"]


@dataclass
class RunResult:
    """One trained model: its variant, seed, scores (metric -> value) and training summary."""
    variant: str
    seed: int
    scores: dict[str, float]
    train: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyResults:
    variants: list[str]
    seeds: list[int]
    metrics: list[str]
    values: dict[str, dict[str, tuple[float, ...]]]  # variant -> metric -> one value per seed
    intervals: dict[str, dict[str, Interval]]  # variant -> metric
    differences: dict[str, dict[str, PairedDifference]]  # variant (not the reference) -> metric
    verdicts: dict[str, dict[str, Verdict]]

    def to_json(self) -> dict[str, Any]:
        """``variants[v][metric]`` = mean, ci95, std, n, values; ``differences[v][metric]`` = the paired
        difference ``v - off`` (mean, ci95, t_test_p, sign_flip_p, values) with its outcome and sentence."""
        return {
            "reference": REFERENCE, "seeds": self.seeds, "metrics": self.metrics,
            "variants": {v: {m: {**iv.to_json(), "values": list(self.values[v][m])} for m, iv in per.items()}
                         for v, per in self.intervals.items()},
            "differences": {v: {m: {**d.to_json(), "outcome": self.verdicts[v][m].outcome,
                                    "sentence": self.verdicts[v][m].sentence} for m, d in per.items()}
                            for v, per in self.differences.items()},
        }


def _tests(d: PairedDifference) -> str:
    if d.n < 2:
        return ""
    t = "paired t-test p=n/a" if d.t_test_p != d.t_test_p else f"paired t-test p={d.t_test_p:.3g}"
    return f"{t}, sign-flip p={d.sign_flip_p:.3g}, {d.n} seeds"


def summarise(runs: list[RunResult], variants: list[str]) -> StudyResults:
    """Aggregate runs over seeds. Every variant must have run with the same seeds (pairs need both halves)."""
    seeds = sorted({r.seed for r in runs})
    by = {(r.variant, r.seed): r for r in runs}
    missing = [f"{v} seed {s}" for v in variants for s in seeds if (v, s) not in by]
    if missing:
        raise FSEError(f"study results incomplete: no run for {', '.join(missing)}")
    metrics = list(by[(variants[0], seeds[0])].scores)
    values = {v: {m: tuple(by[(v, s)].scores[m] for s in seeds) for m in metrics} for v in variants}
    intervals = {v: {m: mean_ci(values[v][m]) for m in metrics} for v in variants}
    differences, verdicts = {}, {}
    for v in (v for v in variants if v != REFERENCE):
        differences[v] = {m: paired_difference(values[v][m], values[REFERENCE][m]) for m in metrics}
        verdicts[v] = {m: verdict(v, REFERENCE, describe(m), d.mean, d.lo, d.hi, tests=_tests(d),
                                  higher_is_better=higher_is_better(m)) for m, d in differences[v].items()}
    return StudyResults(variants, seeds, metrics, values, intervals, differences, verdicts)
