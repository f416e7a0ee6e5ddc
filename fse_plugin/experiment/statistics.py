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

Planning: ``detectable_effect`` is the smallest true difference the paired t-test finds with a given
power over K seeds, from the standard deviation of the per-seed differences (noncentral t, exact
for normal differences); ``seeds_needed`` inverts it.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from fse_plugin.common import FSEError

__all__ = ["Interval", "PairedDifference", "json_number", "mean_ci", "paired_difference",
           "sign_flip_p", "detectable_effect", "seeds_needed"]


def json_number(x: float | None, digits: int | None = None) -> float | None:
    """A float for JSON (rounded to ``digits`` if given): None instead of NaN or infinity."""
    if x is None or not math.isfinite(x):
        return None
    return float(x) if digits is None else round(float(x), digits)


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
        return {"mean": json_number(self.mean),
                "ci95": [json_number(self.lo), json_number(self.hi)],
                "std": json_number(self.std), "n": self.n}


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and Student t-interval: mean +- t(1 - (1 - confidence) / 2, n - 1) * s / sqrt(n)."""
    from scipy import stats
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise FSEError("mean_ci: no values")
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, math.nan, math.nan, math.nan, 1, confidence)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1)) * std / math.sqrt(x.size)
    return Interval(mean, mean - half, mean + half, std, int(x.size), confidence)


def sign_flip_p(diffs: Sequence[float], exact_max: int = 16, n_random: int = 20000,
                seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of the mean of paired differences: the share of sign
    patterns whose |mean| is at least the observed one. Exact up to ``exact_max`` pairs, else
    ``n_random`` seeded random patterns (plus the observed one)."""
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size == 0:
        raise FSEError("sign_flip_p: no differences")
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
    """Per-seed differences ``a - b``: their mean with its t-interval (``ci``) and two paired
    tests."""
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
        return {**self.ci.to_json(), "t_test_p": json_number(self.t_test_p),
                "sign_flip_p": json_number(self.sign_flip_p),
                "values": [float(v) for v in self.values]}


def paired_difference(a: Sequence[float], b: Sequence[float],
                      confidence: float = 0.95) -> PairedDifference:
    """``a - b`` paired by position (seed, or fold): mean, t-interval, ``ttest_rel`` p and sign-flip
    p.

    Differences that are all equal have no spread: the t-test p is then 0 if they are non-zero (an
    infinite t statistic) and 1 if they are all zero, where scipy would answer NaN.
    """
    from scipy import stats
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise FSEError(f"paired_difference: {x.size} values against {y.size}; pairs need equal "
                       f"lengths")
    d = x - y
    ci = mean_ci(d, confidence)
    if d.size < 2:
        p = math.nan
    elif np.all(d == d[0]):
        p = 0.0 if d[0] != 0 else 1.0
    else:
        p = float(stats.ttest_rel(x, y).pvalue)
    return PairedDifference(tuple(float(v) for v in d), ci, p, sign_flip_p(d))


def _power(effect: float, sd: float, n: int, alpha: float) -> float:
    """Power of the two-sided paired t-test over ``n`` differences of standard deviation ``sd``."""
    from scipy import stats
    df, shift = n - 1, effect * math.sqrt(n) / sd
    critical = float(stats.t.ppf(1 - alpha / 2, df))
    # scipy gives NaN far out in this tail, where it is ~0
    wrong_side = float(stats.nct.cdf(-critical, df, shift))
    return (float(stats.nct.sf(critical, df, shift))
            + (0.0 if math.isnan(wrong_side) else wrong_side))


def detectable_effect(sd: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest true mean difference that a two-sided paired t-test at level ``alpha`` over
    ``n`` seeds detects with probability ``power``, when the per-seed differences have standard
    deviation ``sd`` (NaN with fewer than 2 seeds or an unknown ``sd``)."""
    from scipy.optimize import brentq
    if n < 2 or sd is None or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    hi = sd
    while _power(hi, sd, n, alpha) < power:
        hi *= 2
    return float(brentq(lambda e: _power(e, sd, n, alpha) - power, 0.0, hi, xtol=1e-4 * sd))


def seeds_needed(sd: float, effect: float, power: float = 0.8, alpha: float = 0.05,
                 most: int = 1000) -> int | None:
    """The fewest seeds (at least 2) whose paired t-test detects ``effect`` with ``power``; None
    when ``sd`` is unknown or more than ``most`` seeds would be needed."""
    if sd is None or not math.isfinite(sd) or effect <= 0:
        return None
    if detectable_effect(sd, most, power, alpha) > effect:
        return None
    # the detectable effect falls as seeds are added: double, then bisect for the first that
    # reaches it
    hi = 2
    while detectable_effect(sd, hi, power, alpha) > effect:
        hi *= 2
    lo = max(2, hi // 2)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if detectable_effect(sd, mid, power, alpha) > effect else (lo, mid)
    return lo
