"""Dataset-level statistics of region tables ``[N,25]`` (NaN where a region is absent from an
image).

Each region's mean importance over the images where it is present, with a 95% interval: an image
bootstrap (by hand: images are resampled with their regions together and absent regions skipped,
which ``scipy.stats.bootstrap`` cannot express for 25 ragged columns at once) or Student t; and the
paired difference of two models on the same images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fse_plugin.common import FSEError, checks
from fse_plugin.labels import NUM_CLASSES

__all__ = ["CI_METHODS", "RegionStats", "region_mean", "region_stats", "compare_stats"]

CI_METHODS: tuple[str, ...] = ("bootstrap", "t")
"""How the 95% interval is computed: image bootstrap (percentile) or Student t."""


@dataclass(frozen=True)
class RegionStats:
    """One value per region over a dataset: the mean over the images where the region is present,
    the interval's bounds (float64 [25], NaN where fewer than 2 images have the region) and ``n``
    [25]."""

    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: np.ndarray


def region_mean(values: np.ndarray) -> np.ndarray:
    """Mean per region over the images where it is present (NaN where never present)."""
    v = np.asarray(values, dtype=np.float64)
    n = (~np.isnan(v)).sum(0)
    return np.where(n > 0, np.nansum(v, 0) / np.maximum(n, 1), np.nan)


def _t_interval(v: np.ndarray, mean: np.ndarray, n: np.ndarray,
                level: float) -> tuple[np.ndarray, np.ndarray]:
    """mean +- t * sd / sqrt(n) per region."""
    from scipy import stats
    present = ~np.isnan(v)
    sd = np.sqrt(np.where(present, (v - mean) ** 2, 0.0).sum(0) / np.maximum(n - 1, 1))
    half = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1))
    return mean - half, mean + half


def _bootstrap_interval(v: np.ndarray, level: float, n_boot: int,
                        seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the image bootstrap: multinomial image weights, 250 resamples at a
    time (bounded memory); a resample without the region gives NaN and is skipped."""
    present = ~np.isnan(v)
    filled = np.where(present, v, 0.0)
    rng = np.random.default_rng(seed)
    boots = []
    for b in range(0, n_boot, 250):
        w = rng.multinomial(len(v), np.full(len(v), 1.0 / len(v)),
                            size=min(250, n_boot - b)).astype(np.float64)
        boots.append((w @ filled) / (w @ present))
    lo, hi = np.nanpercentile(np.concatenate(boots), [50 * (1 - level), 50 * (1 + level)], axis=0)
    return lo, hi


def region_stats(values: np.ndarray, ci: str = "bootstrap", level: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> RegionStats:
    """Per-region mean and ``level`` interval over images of ``values [N,25]`` (NaN = region
    absent).

    ``ci='bootstrap'``: percentile interval of the image-level bootstrap (images resampled with
    replacement, ``n_boot`` times, seeded; the regions of one image stay together);
    ``ci='t'``: Student-t interval mean +- t * sd / sqrt(n). Regions seen in < 2 images get NaN
    bounds.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != NUM_CLASSES:
        raise FSEError(f"values must be [N,{NUM_CLASSES}], got {v.shape}")
    checks.choice(ci, "ci", CI_METHODS)
    checks.open_fraction(level, "level")
    checks.count(n_boot, "n_boot")
    n = (~np.isnan(v)).sum(0)
    mean = region_mean(v)
    lo, hi = np.full(NUM_CLASSES, np.nan), np.full(NUM_CLASSES, np.nan)
    ok = n >= 2
    if ok.any():
        with np.errstate(invalid="ignore", divide="ignore"):
            if ci == "t":
                lo[ok], hi[ok] = _t_interval(v[:, ok], mean[ok], n[ok], level)
            else:
                lo[ok], hi[ok] = _bootstrap_interval(v[:, ok], level, n_boot, seed)
    return RegionStats(mean, lo, hi, n)


def compare_stats(a: np.ndarray, b: np.ndarray, **kwargs: Any) -> RegionStats:
    """Paired difference b - a per region (same images, same masks: baseline vs
    FSErasing-trained)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise FSEError(f"cannot compare region tables of shapes {a.shape} and {b.shape}")
    return region_stats(b - a, **kwargs)

