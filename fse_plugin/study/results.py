"""From runs to evidence: per variant and metric the mean over seeds with its 95% interval; per
variant the paired per-seed difference from the reference with its interval, tests and verdict;
and what the study can see (``sensitivity``: the spread of each difference, its parts from the test
pairs and from training, the smallest effect its seeds detect)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fse_plugin.common import FSEError
from fse_plugin.experiment.statistics import Interval, PairedDifference, mean_ci, paired_difference
from fse_plugin.experiment.verdict import Verdict, verdict
from fse_plugin.study.probes import describe, higher_is_better, scores
from fse_plugin.study.sensitivity import Sensitivity, pair_resamples, resampled_scores, sensitivity
from fse_plugin.study.variants import REFERENCE

__all__ = ["RunResult", "StudyResults", "summarise"]


@dataclass
class RunResult:
    """One trained model: its variant, seed, scores (metric -> value), training summary and the
    squared distance of every pair per probe (what the scores come from; kept out of JSON)."""
    variant: str
    seed: int
    scores: dict[str, float]
    train: dict[str, Any] = field(default_factory=dict)
    distances: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"variant": self.variant, "seed": self.seed, "scores": self.scores,
                "train": self.train}


@dataclass
class StudyResults:
    variants: list[str]
    seeds: list[int]
    metrics: list[str]
    values: dict[str, dict[str, tuple[float, ...]]]  # variant -> metric -> one value per seed
    intervals: dict[str, dict[str, Interval]]  # variant -> metric
    differences: dict[str, dict[str, PairedDifference]]  # variant (not the reference) -> metric
    verdicts: dict[str, dict[str, Verdict]]
    # as differences; {} without pairs
    sensitivity: dict[str, dict[str, Sensitivity]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``variants[v][metric]`` = mean, ci95, std, n, values; ``differences[v][metric]`` = the
        paired difference ``v - off`` (mean, ci95, t_test_p, sign_flip_p, values) with its outcome,
        sentence and ``sensitivity`` (``Sensitivity.to_json``)."""
        def difference(v: str, m: str) -> dict[str, Any]:
            extra = {"sensitivity": self.sensitivity[v][m].to_json()} if self.sensitivity else {}
            return {**self.differences[v][m].to_json(), "outcome": self.verdicts[v][m].outcome,
                    "sentence": self.verdicts[v][m].sentence, **extra}

        return {
            "reference": REFERENCE, "seeds": self.seeds, "metrics": self.metrics,
            "variants": {v: {m: {**iv.to_json(), "values": list(self.values[v][m])}
                             for m, iv in per.items()}
                         for v, per in self.intervals.items()},
            "differences": {v: {m: difference(v, m) for m in per}
                            for v, per in self.differences.items()},
        }


def _tests(d: PairedDifference, s: Sensitivity | None) -> str:
    """The tests' p-values and, where known, the effect the seeds detect (what a tie or noise may
    hide)."""
    if d.n < 2:
        return ""
    t = "paired t-test p=n/a" if d.t_test_p != d.t_test_p else f"paired t-test p={d.t_test_p:.3g}"
    detectable = "" if s is None else f", which detect {s.detectable:.2f} points at 80% power"
    return f"{t}, sign-flip p={d.sign_flip_p:.3g}, {d.n} seeds{detectable}"


def _sensitivities(by: dict[tuple[str, int], RunResult], variants: list[str], seeds: list[int],
                   metrics: list[str], differences: dict[str, dict[str, PairedDifference]],
                   issame: np.ndarray) -> dict[str, dict[str, Sensitivity]]:
    """Per variant and metric: the spread of the paired difference and its parts (see
    ``sensitivity``)."""
    others = [v for v in variants if v != REFERENCE]
    variances: dict[str, dict[str, list[float]]] = {v: {m: [] for m in metrics} for v in others}
    for seed in seeds:
        resamples = pair_resamples(len(issame), seed)
        ref = resampled_scores(by[(REFERENCE, seed)].distances, issame, resamples, scores)
        for v in others:
            boot = resampled_scores(by[(v, seed)].distances, issame, resamples, scores)
            for m in metrics:
                variances[v][m].append(float(np.var(boot[m] - ref[m], ddof=1)))
    return {v: {m: sensitivity(differences[v][m].values, variances[v][m], len(issame))
                for m in metrics}
            for v in others}


def summarise(runs: list[RunResult], variants: list[str],
              issame: np.ndarray | None = None) -> StudyResults:
    """Aggregate runs over seeds. Every variant must have run with the same seeds (pairs need both
    halves); with the pack's ``issame`` and every run's distances, also the sensitivity of each
    difference."""
    seeds = sorted({r.seed for r in runs})
    by = {(r.variant, r.seed): r for r in runs}
    missing = [f"{v} seed {s}" for v in variants for s in seeds if (v, s) not in by]
    if missing:
        raise FSEError(f"study results incomplete: no run for {', '.join(missing)}")
    metrics = list(by[(variants[0], seeds[0])].scores)
    values = {v: {m: tuple(by[(v, s)].scores[m] for s in seeds) for m in metrics} for v in variants}
    intervals = {v: {m: mean_ci(values[v][m]) for m in metrics} for v in variants}
    others = [v for v in variants if v != REFERENCE]
    differences = {v: {m: paired_difference(values[v][m], values[REFERENCE][m]) for m in metrics}
                   for v in others}
    sens = {}
    if issame is not None and all(r.distances for r in runs):
        sens = _sensitivities(by, variants, seeds, metrics, differences,
                              np.asarray(issame, dtype=bool))
    verdicts = {v: {m: verdict(v, REFERENCE, describe(m), d,
                               tests=_tests(d, sens.get(v, {}).get(m)),
                               higher_is_better=higher_is_better(m))
                    for m, d in differences[v].items()}
                for v in others}
    return StudyResults(variants, seeds, metrics, values, intervals, differences, verdicts, sens)
