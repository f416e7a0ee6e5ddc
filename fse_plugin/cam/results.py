"""What ``explain`` returns: per-region values of each method, their dataset statistics, the
comparison.

Every method yields two tables over images x regions (``[N,25]``, NaN where a region is absent):
``importance``, the value the charts, the report and the comparison rank (normalised region score
for fscam, normalised drop for ablation, the map's mean over the region for pixel methods), and the
method's own ``measure`` (``score``, ``drop`` or ``share`` of the map's mass). The files keep the
kinds' names: ``{"importance": ..., "<measure_kind>": ...}`` in region_scores.json and the CSVs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fse_plugin.cam.stats import RegionStats, compare_stats, region_stats

__all__ = ["RegionValues", "MethodStats", "MethodResult", "Explanation"]


@dataclass(frozen=True)
class RegionValues:
    """One method's values per image and region: ``importance`` and ``measure`` ([N,25] each)."""

    importance: np.ndarray
    measure: np.ndarray
    measure_kind: str
    """What ``measure`` is: 'score' (fscam), 'drop' (ablation) or 'share' (pixel methods)."""

    def kinds(self) -> dict[str, np.ndarray]:
        """The tables by the names the files use, importance first."""
        return {"importance": self.importance, self.measure_kind: self.measure}

    @classmethod
    def concat(cls, parts: Sequence[RegionValues]) -> RegionValues:
        """The values of consecutive chunks of images as one."""
        return cls(np.concatenate([p.importance for p in parts]),
                   np.concatenate([p.measure for p in parts]), parts[0].measure_kind)


@dataclass(frozen=True)
class MethodStats:
    """Dataset statistics of one method's ``importance`` and ``measure`` (or of two models'
    difference)."""

    importance: RegionStats
    measure: RegionStats
    measure_kind: str

    def kinds(self) -> dict[str, RegionStats]:
        return {"importance": self.importance, self.measure_kind: self.measure}

    @classmethod
    def of(cls, values: RegionValues, ci: str = "bootstrap", seed: int = 0) -> MethodStats:
        """Per-region mean and 95% interval of each table (``stats.region_stats``)."""
        return cls(region_stats(values.importance, ci=ci, seed=seed),
                   region_stats(values.measure, ci=ci, seed=seed), values.measure_kind)

    @classmethod
    def difference(cls, a: RegionValues, b: RegionValues, ci: str = "bootstrap",
                   seed: int = 0) -> MethodStats:
        """Paired difference ``b - a`` (same images and masks, two models;
        ``stats.compare_stats``)."""
        return cls(compare_stats(a.importance, b.importance, ci=ci, seed=seed),
                   compare_stats(a.measure, b.measure, ci=ci, seed=seed), a.measure_kind)


@dataclass(frozen=True)
class MethodResult:
    """One method on one model: values per image, their statistics, the first ``grid`` maps
    ``[g,H,W]`` (what the overlays show) and the milliseconds it took per image."""

    values: RegionValues
    stats: MethodStats
    maps: np.ndarray
    ms_per_image: float


@dataclass(frozen=True)
class Explanation:
    """All of one ``explain`` run: ``results[model][method]``, the comparison of two models per
    method (second minus first; empty for one model) and the files written (``files['report']`` the
    page)."""

    results: dict[str, dict[str, MethodResult]]
    comparison: dict[str, MethodStats]
    files: dict[str, Path]

    @property
    def report(self) -> Path:
        return self.files["report"]
