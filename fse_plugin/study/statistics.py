"""Intervals and paired tests over seeds: how sure a study can be of a difference.

A study trains every variant once per seed; a seed fixes the model's initialisation, the data order
and the draws of the augmentation, so the runs of two variants with the same seed are paired. Per
variant and metric: the mean over seeds and its 95% Student t-interval. Per variant against the
reference: the per-seed differences, their mean with a 95% t-interval, the paired t-test
(``scipy.stats.ttest_rel``) and an exact sign-flip permutation test (hand-written: with K seeds it
enumerates the 2^K sign patterns, which scipy's Monte-Carlo ``permutation_test`` would only sample).
The t-interval assumes roughly normal differences; the sign-flip test assumes only that a difference
is as likely positive as negative when the variants do not differ. With K seeds its smallest
p-value is 2 / 2^K (0.0625 for 5 seeds), so a handful of seeds cannot reach 0.05 with it.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["Interval", "PairedDifference", "mean_ci", "paired_difference", "sign_flip_p"]


def _num(x: float) -> float | None:
    """A float for JSON: None instead of NaN or infinity."""
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values, their standard deviation and the ``confidence`` t-interval of the mean
    (NaN bounds when n < 2: one value says nothing about the noise)."""
    mean: float
    lo: float
    hi: float
    std: float
    n: int
    confidence: float = 0.95

    def to_json(self) -> dict[str, Any]:
        return {"mean": _num(self.mean), "ci95": [_num(self.lo), _num(self.hi)], "std": _num(self.std), "n": self.n}


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and Student t-interval: mean +- t(1 - (1 - confidence) / 2, n - 1) * s / sqrt(n)."""
    from scipy import stats
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("mean_ci: no values")
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, math.nan, math.nan, math.nan, 1, confidence)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1)) * std / math.sqrt(x.size)
    return Interval(mean, mean - half, mean + half, std, int(x.size), confidence)


def sign_flip_p(diffs: Sequence[float], exact_max: int = 16, n_random: int = 20000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of the mean of paired differences: the share of sign
    patterns whose |mean| is at least the observed one. Exact up to ``exact_max`` pairs, else
    ``n_random`` seeded random patterns (plus the observed one)."""
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("sign_flip_p: no differences")
    observed = abs(d.mean())
    if d.size <= exact_max:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
    else:
        rng = np.random.default_rng(seed)
        signs = np.vstack([np.ones(d.size), rng.choice((1.0, -1.0), size=(n_random, d.size))])
    means = np.abs(signs @ d) / d.size
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))


@dataclass(frozen=True)
class PairedDifference:
    """Per-seed differences ``a - b``: their mean with its t-interval (``ci``) and two paired tests."""
    values: tuple[float, ...]
    ci: Interval
    t_test_p: float
    sign_flip_p: float

    @property
    def mean(self) -> float:
        return self.ci.mean

    @property
    def lo(self) -> float:
        return self.ci.lo

    @property
    def hi(self) -> float:
        return self.ci.hi

    @property
    def n(self) -> int:
        return self.ci.n

    def to_json(self) -> dict[str, Any]:
        return {**self.ci.to_json(), "t_test_p": _num(self.t_test_p), "sign_flip_p": _num(self.sign_flip_p),
                "values": [float(v) for v in self.values]}


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """``a - b`` paired by position (seed, or fold): mean, t-interval, ``ttest_rel`` p and sign-flip p.

    Differences that are all equal have no spread: the t-test p is then 0 if they are non-zero (an
    infinite t statistic) and 1 if they are all zero, where scipy would answer NaN.
    """
    from scipy import stats
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired_difference: {x.size} values against {y.size}; pairs need equal lengths")
    d = x - y
    ci = mean_ci(d, confidence)
    if d.size < 2:
        p = math.nan
    elif np.all(d == d[0]):
        p = 0.0 if d[0] != 0 else 1.0
    else:
        p = float(stats.ttest_rel(x, y).pvalue)
    return PairedDifference(tuple(float(v) for v in d), ci, p, sign_flip_p(d))
