"""How much a study can see: the spread of its paired differences over seeds, the part of it that
comes from the test pairs and the part from training, and the smallest effect its seeds detect.

A per-seed difference ``d_s = metric(variant, s) - metric(off, s)`` varies for two reasons:
training (another seed gives other models) and the test pairs (a finite pack: which pairs each
model happens to get wrong). The second is measured with the models fixed: the pairs are resampled
with replacement (the same resample for both models and every metric, each seed its own seeded
resamples), the difference is recomputed with the pack's 10-fold protocol, and its variance over
the resamples is averaged over seeds. The training part is what remains of the variance over
seeds: ``sqrt(max(0, sd_seeds^2 - sd_pairs^2))``. The smallest effect the seeds detect is that of a
two-sided paired t-test at 5% with 80% power over the seeds run (``statistics.detectable_effect``,
from ``sd_seeds``).

Both parts scale in known ways (the pairs' part as ``1 / sqrt(pairs)``, the mean over K seeds as
``1 / sqrt(K)``), so ``Sensitivity.projected`` says what a larger pack or more seeds would detect.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fse_plugin.experiment.statistics import detectable_effect, json_number, seeds_needed

__all__ = ["RESAMPLES", "TARGETS", "Sensitivity", "pair_resamples", "resampled_scores",
           "sensitivity"]

RESAMPLES = 100
"""Resamples of the pairs per seed (the variance over them is averaged over seeds, so the estimate
rests on RESAMPLES x seeds draws)."""
TARGETS = (1.0, 2.0)
"""Effects (accuracy points) for which the study says how many seeds it would take to detect
them."""
POWER = 0.8
_STREAM = 20_241  # seeds the resamples apart from every other draw of the study


@dataclass(frozen=True)
class Sensitivity:
    """What one metric's paired difference can show (points; NaN where one seed says nothing)."""
    sd_seeds: float
    sd_pairs: float
    sd_training: float
    detectable: float
    seeds: int
    pairs: int

    def seeds_for(self, effect: float, pairs: int | None = None) -> int | None:
        """Seeds needed to detect ``effect`` at 80% power, with this pack or one of ``pairs``
        pairs."""
        return seeds_needed(self.projected(pairs), effect, POWER)

    def projected(self, pairs: int | None = None) -> float:
        """The standard deviation over seeds with a pack of ``pairs`` pairs (the pairs' part
        scaled)."""
        if pairs is None or pairs == self.pairs:
            return self.sd_seeds
        return math.sqrt(self.sd_training ** 2 + self.sd_pairs ** 2 * self.pairs / pairs)

    def to_json(self) -> dict[str, Any]:
        sds = {"sd_seeds": self.sd_seeds, "sd_pairs": self.sd_pairs,
               "sd_training": self.sd_training, "detectable_80": self.detectable}
        return {**{k: json_number(v, 6) for k, v in sds.items()},
                "seeds": self.seeds, "pairs": self.pairs,
                "seeds_needed_80": {f"{t:g}": self.seeds_for(t) for t in TARGETS}}


def pair_resamples(n_pairs: int, seed: int, n: int = RESAMPLES) -> np.ndarray:
    """``n`` resamples (with replacement) of the pair indices for the runs of ``seed``."""
    return np.random.default_rng([_STREAM, int(seed)]).integers(0, n_pairs, size=(n, n_pairs))


def resampled_scores(distances: Mapping[str, np.ndarray], issame: np.ndarray, resamples: np.ndarray,
                     score: Callable[[dict[str, np.ndarray], np.ndarray],
                                     dict[str, float]]) -> dict[str, np.ndarray]:
    """Every metric of one model on each resample of the pairs: metric -> values [resamples]."""
    rows = [score({k: d[idx] for k, d in distances.items()}, issame[idx]) for idx in resamples]
    return {m: np.array([r[m] for r in rows]) for m in rows[0]}


def sensitivity(differences: Sequence[float], resampled_variances: Sequence[float],
                pairs: int) -> Sensitivity:
    """One metric's sensitivity from its per-seed differences and, per seed, the variance of the
    difference over resamples of the pairs."""
    seeds = len(differences)
    sd_seeds = float(np.std(differences, ddof=1)) if seeds > 1 else math.nan
    sd_pairs = math.sqrt(float(np.mean(resampled_variances)))
    sd_training = math.sqrt(max(0.0, sd_seeds ** 2 - sd_pairs ** 2)) if seeds > 1 else math.nan
    return Sensitivity(sd_seeds, sd_pairs, sd_training, detectable_effect(sd_seeds, seeds, POWER),
                       seeds, pairs)
