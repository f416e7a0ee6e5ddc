"""The ``.bin`` verification protocol of arcface_torch (``eval/verification.py``): 10-fold
Accuracy-Flip, XNorm, VAL@FAR=1e-3, with upstream's numbers to the last bit on the same embeddings
(the same float64 steps, folds, thresholds and point picking).

One deliberate difference: upstream sets the VAL threshold with
``interp1d(far_train, thresholds, 'slinear')``, which raises on repeated FAR values with current
scipy (insightface #2152) - and FAR values always repeat. ``far_threshold`` interpolates linearly
between the last threshold of the FAR value below the target and the first threshold of the one
above (what ``interp1d(kind='linear')`` does with repeats); where the FAR values are distinct that
is upstream's 'slinear' interpolation.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import KFold
from torch import nn

from fse_plugin.common import FSEError, checks
from fse_plugin.evaluation.embed import EmbedSettings, embed, fuse_views, given_settings
from fse_plugin.evaluation.packs import load_bin

__all__ = ["VerificationResult", "evaluate_embeddings", "evaluate_pack", "far_threshold",
           "fold_accuracy", "squared_distances", "val_at_far"]

_THRESHOLDS = np.arange(0, 4, 0.01)
"""Squared-L2 thresholds of the accuracy protocol (upstream ``evaluate``)."""
_VAL_THRESHOLDS = np.arange(0, 4, 0.001)
"""Finer thresholds of the VAL@FAR protocol (upstream ``evaluate``)."""


def _folds(n: int, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    indices = np.arange(n)
    if n_folds <= 1:  # upstream LFold: one "fold" trained and tested on everything
        return [(indices, indices)]
    if n < n_folds:
        raise FSEError(f"{n} pair{'s' if n != 1 else ''} cannot be split into {n_folds} folds: a "
                       "pack needs at least as many pairs as folds")
    return list(KFold(n_splits=n_folds, shuffle=False).split(indices))


def _counts(thresholds: np.ndarray, dist: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, ...]:
    """(tp, fp, tn, fn) per threshold for the rule ``dist < threshold`` (counts exact, via sorted
    search)."""
    pos, neg = np.sort(dist[issame]), np.sort(dist[~issame])
    tp = np.searchsorted(pos, thresholds, side="left")
    fp = np.searchsorted(neg, thresholds, side="left")
    return tp, fp, len(neg) - fp, len(pos) - tp


def squared_distances(emb1: np.ndarray, emb2: np.ndarray) -> np.ndarray:
    """Squared L2 distance of each row pair of two sets of fused, normalised embeddings [P, D]."""
    if emb1.shape != emb2.shape:
        raise FSEError(f"embedding sets differ in shape: {emb1.shape} vs {emb2.shape}")
    return np.sum(np.square(np.subtract(emb1, emb2)), 1)


def fold_accuracy(dist: np.ndarray, issame: np.ndarray,
                  n_folds: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Upstream ``calculate_roc`` (pca=0): (accuracy per test fold, its threshold, the best on the
    other folds)."""
    issame = np.asarray(issame, dtype=bool)
    folds = _folds(len(issame), n_folds)
    accuracy, best = np.zeros(len(folds)), np.zeros(len(folds))
    for k, (train, test) in enumerate(folds):
        tp, _, tn, _ = _counts(_THRESHOLDS, dist[train], issame[train])
        i = int(np.argmax((tp + tn) / len(train)))
        tp, _, tn, _ = _counts(_THRESHOLDS[i:i + 1], dist[test], issame[test])
        accuracy[k] = float(tp[0] + tn[0]) / len(test)
        best[k] = _THRESHOLDS[i]
    return accuracy, best


def far_threshold(far: np.ndarray, thresholds: np.ndarray, target: float) -> float:
    """Threshold at which the training FAR reaches ``target``, robust to repeated FAR values
    (#2152).

    FAR is a non-decreasing step function of the threshold. Between two FAR values a < target < b
    the threshold is interpolated linearly from the last threshold with FAR a to the first with FAR
    b (at FAR == target exactly: the last threshold with that FAR) - upstream's 'slinear'
    interpolation where the FAR values are distinct, ``interp1d(kind='linear')`` with repeats. 0.0
    if FAR never reaches it.
    """
    far = np.asarray(far, dtype=np.float64)
    if np.max(far) < target:
        return 0.0
    values, first = np.unique(far, return_index=True)
    last = np.r_[first[1:] - 1, len(far) - 1]
    j = int(np.searchsorted(values, target, side="right")) - 1
    if j < 0:
        return float(thresholds[0])
    if values[j] == target or j == len(values) - 1:
        return float(thresholds[last[j]])
    lo, hi = thresholds[last[j]], thresholds[first[j + 1]]
    return float((hi - lo) / (values[j + 1] - values[j]) * (target - values[j]) + lo)


def val_at_far(dist: np.ndarray, issame: np.ndarray, far_target: float = 1e-3,
               thresholds: np.ndarray = _VAL_THRESHOLDS,
               n_folds: int = 10) -> tuple[float, float, float]:
    """Upstream ``calculate_val``: (VAL mean, VAL std, FAR mean) over test folds, threshold set on
    the rest.

    A test fold without genuine (or impostor) pairs has no VAL (FAR) and is left out of the means;
    upstream divides by zero there.
    """
    issame = np.asarray(issame, dtype=bool)
    folds = _folds(len(issame), n_folds)
    val, far = np.full(len(folds), np.nan), np.full(len(folds), np.nan)
    for k, (train, test) in enumerate(folds):
        _, fp, _, _ = _counts(thresholds, dist[train], issame[train])
        n_diff = np.sum(~issame[train])
        far_train = fp / n_diff if n_diff else np.zeros(len(thresholds))
        threshold = far_threshold(far_train, thresholds, far_target)
        tp, fp, _, _ = _counts(np.array([threshold]), dist[test], issame[test])
        n_same, n_diff = np.sum(issame[test]), np.sum(~issame[test])
        if n_same:
            val[k] = float(tp[0]) / float(n_same)
        if n_diff:
            far[k] = float(fp[0]) / float(n_diff)
    return (*_nan_mean_std(val), _nan_mean_std(far)[0])


def _nan_mean_std(x: np.ndarray) -> tuple[float, float]:
    x = x[~np.isnan(x)]
    return (float(np.mean(x)), float(np.std(x))) if len(x) else (math.nan, math.nan)


def _xnorm(views: np.ndarray) -> float:
    """Mean L2 norm of every un-normalised embedding, flipped views included (upstream's ``_xnorm``,
    its loop and float64 running sum kept for the last bit)."""
    total, count = 0.0, 0
    for view in views:
        for row in np.asarray(view, dtype=np.float64):
            total += np.linalg.norm(row)
            count += 1
    return float(total / count)


@dataclass
class VerificationResult:
    """One pack's numbers; accuracy, VAL and FAR are fractions in [0, 1] as upstream prints them."""
    name: str
    n_pairs: int
    accuracy: float
    accuracy_std: float
    xnorm: float
    val: float
    val_std: float
    far: float
    fold_accuracy: list[float] = field(default_factory=list)
    fold_threshold: list[float] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"[{self.name}]XNorm: {self.xnorm:f}\n[{self.name}]Accuracy-Flip: {self.accuracy:1.5f}+-"
                f"{self.accuracy_std:1.5f}\n[{self.name}]VAL@FAR=1e-3: {self.val:1.5f}+-{self.val_std:1.5f} "
                f"(FAR {self.far:1.5f})")


def _issame(issame: Any) -> np.ndarray:
    """One bool per pair (0/1 accepted): any other value cannot say whether a pair is genuine."""
    flags = np.asarray(issame)
    if flags.ndim != 1 or not (flags.dtype == bool or (flags.dtype.kind in "iu" and np.isin(flags, (0, 1)).all())):
        raise FSEError("issame: expected a 1-D sequence of bools (one per pair), got "
                       f"{flags.dtype} {flags.shape}")
    return flags.astype(bool)


def evaluate_embeddings(views: np.ndarray, issame: np.ndarray, n_folds: int = 10,
                        name: str = "pack", far_target: float = 1e-3) -> VerificationResult:
    """The .bin protocol on un-normalised embeddings [V, 2P, D] (pairs are rows 2i, 2i+1)."""
    checks.count(n_folds, "n_folds", minimum=2)
    checks.open_fraction(far_target, "far_target")
    issame = _issame(issame)
    views = np.asarray(views)
    if views.ndim != 3 or views.shape[1] != 2 * len(issame):
        raise FSEError(f"expected embeddings [views, {2 * len(issame)}, D] for {len(issame)} "
                       f"pairs, got {views.shape}")
    emb = fuse_views(views)
    dist = squared_distances(emb[0::2], emb[1::2])
    acc, best = fold_accuracy(dist, issame, n_folds)
    val, val_std, far = val_at_far(dist, issame, far_target, n_folds=n_folds)
    return VerificationResult(name, len(issame), float(np.mean(acc)), float(np.std(acc)),
                              _xnorm(views), val, val_std, far, acc.tolist(), best.tolist())


def evaluate_pack(model: nn.Module, pack: str | os.PathLike | tuple[np.ndarray, np.ndarray],
                  settings: EmbedSettings | None = None, n_folds: int = 10,
                  name: str | None = None) -> VerificationResult:
    """Load (or take) a pack, embed image + flip as ``settings`` says, and run the ``n_folds``
    protocol."""
    s = given_settings(settings, EmbedSettings)
    checks.count(n_folds, "n_folds", minimum=2)
    if isinstance(pack, tuple):
        if len(pack) != 2:
            raise FSEError("pack: expected a .bin path or (images, issame), got a tuple of "
                           f"{len(pack)}")
        images, issame = pack[0], _issame(pack[1])
        if len(images) != 2 * len(issame):
            raise FSEError(f"pack: {len(images)} images for {len(issame)} pairs (expected "
                           f"{2 * len(issame)})")
        name = name or "pack"
    else:
        images, issame = load_bin(pack)
        name = name or Path(pack).stem
    return evaluate_embeddings(embed(model, images, s, desc=name), issame, n_folds, name)
