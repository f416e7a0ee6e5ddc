"""Parser scores: per-class F1 (Dice) and IoU from a confusion matrix,
on arrays or a checkpoint's split."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from fse_plugin.common import FSEError, checks, resolve_device
from fse_plugin.common.files import atomic_output
from fse_plugin.common.precision import PRECISIONS
from fse_plugin.common.text import plural
from fse_plugin.labels import CLASSES, IGNORE_INDEX, NUM_CLASSES
from fse_plugin.parsing.checkpoint import load_parser_and_meta
from fse_plugin.parsing.facesynthetics import prepare_dataset, split_indices
from fse_plugin.parsing.predict import predict_masks

__all__ = ["ParserMetrics", "EvalSettings", "ParserEvaluation", "confusion_matrix",
           "evaluate_checkpoint", "evaluate_parser"]

SPLITS = ("val", "train", "all")


def confusion_matrix(pred: np.ndarray, target: np.ndarray, n_classes: int = NUM_CLASSES,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``C[t, p]`` pixel counts (rows ground truth); ``ignore_index`` pixels skipped.

    np.bincount rather than sklearn.metrics.confusion_matrix: the latter is far slower on the
    millions of pixels of a held-out set; the tests check both agree.
    """
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise FSEError(f"prediction and ground truth differ in size: {pred.size} vs {target.size}")
    keep = target != ignore_index
    pred, target = pred[keep].astype(np.int64), target[keep].astype(np.int64)
    if target.size and (target.max() >= n_classes or pred.max() >= n_classes
                        or min(target.min(), pred.min()) < 0):
        raise FSEError(f"labels outside 0..{n_classes - 1} (besides ignore {ignore_index})")
    return np.bincount(target * n_classes + pred,
                       minlength=n_classes ** 2).reshape(n_classes, n_classes)


class ParserMetrics(NamedTuple):
    """Per-class F1 (= Dice) and IoU; means over the classes present in the ground truth."""
    confusion: np.ndarray
    f1: np.ndarray
    iou: np.ndarray
    present: np.ndarray
    mean_f1: float
    mean_iou: float

    @classmethod
    def from_confusion(cls, conf: np.ndarray) -> "ParserMetrics":
        conf = np.asarray(conf, dtype=np.int64)
        tp = np.diag(conf).astype(np.float64)
        fp, fn = conf.sum(0) - tp, conf.sum(1) - tp
        present = conf.sum(1) > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
            iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        if not present.any():
            return cls(conf, f1, iou, present, float("nan"), float("nan"))
        return cls(conf, f1, iou, present, float(f1[present].mean()), float(iou[present].mean()))

    def rows(self) -> list[dict[str, Any]]:
        gt, pr = self.confusion.sum(1), self.confusion.sum(0)
        return [{"class_id": k, "class": CLASSES[k] if k < len(CLASSES) else str(k),
                 "gt_pixels": int(gt[k]), "pred_pixels": int(pr[k]),
                 "present": bool(self.present[k]), "f1": float(self.f1[k]),
                 "iou": float(self.iou[k])} for k in range(len(self.f1))]

    def table(self) -> str:
        lines = [f"{'id':>3} {'class':<17} {'gt px':>10} {'F1':>7} {'IoU':>7}"]
        for r in self.rows():
            mark = "" if r["present"] else "  (absent)"
            lines.append(f"{r['class_id']:>3} {r['class']:<17} {r['gt_pixels']:>10} "
                         f"{r['f1']:>7.4f} {r['iou']:>7.4f}{mark}")
        lines.append(f"mean over {int(self.present.sum())} present classes: "
                     f"F1 {self.mean_f1:.4f}  IoU {self.mean_iou:.4f}")
        return "\n".join(lines)

    def write_csv(self, path: str | os.PathLike) -> Path:
        """The per-class rows and a mean row, written whole or not at all."""
        path = Path(path)
        rows = self.rows()
        with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
            w.writerow({"class_id": "", "class": "mean_present",
                        "gt_pixels": int(self.confusion.sum()),
                        "pred_pixels": int(self.confusion.sum()),
                        "present": int(self.present.sum()),
                        "f1": self.mean_f1, "iou": self.mean_iou})
        return path


def evaluate_parser(model: nn.Module, images: np.ndarray, masks: np.ndarray, batch_size: int = 64,
                    device: str | torch.device = "cpu", precision: str = "fp32",
                    chunk: int = 1024) -> ParserMetrics:
    """Metrics of ``model`` on aligned faces and their ground-truth maps (streamed in chunks)."""
    if len(images) != len(masks):
        raise FSEError(f"{plural(len(images), 'image')} but {plural(len(masks), 'mask')}")
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for s in range(0, len(images), chunk):
        pred = predict_masks(model, images[s:s + chunk], batch_size, device, precision)
        conf += confusion_matrix(pred, masks[s:s + chunk], n_classes=NUM_CLASSES)
    return ParserMetrics.from_confusion(conf)


@dataclass(frozen=True)
class EvalSettings:
    """How ``evaluate_checkpoint`` scores: which ``split`` ('val': held out, 'train', 'all'), the
    split's ``val_fraction`` and ``seed`` (None: as the checkpoint was trained), batch size, device,
    autocast ``precision``, the aligned-face ``cache_dir`` (None: cache/ beside the checkpoint,
    where ``train_parser`` put it) and the alignment processes used when that cache is built."""
    split: str = "val"
    val_fraction: float | None = None
    seed: int | None = None
    batch_size: int = 64
    device: str = "auto"
    precision: str = "fp32"
    cache_dir: str | os.PathLike | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        checks.choice(self.split, "split", SPLITS)
        if self.val_fraction is not None:
            checks.number(self.val_fraction, "val_fraction", 0.0, 1.0, hi_open=True)
        if self.seed is not None:
            checks.count(self.seed, "seed", minimum=0)
        checks.count(self.batch_size, "batch_size")
        checks.choice(self.precision, "precision", PRECISIONS)
        checks.count(self.workers, "workers", minimum=0)


@dataclass(frozen=True)
class ParserEvaluation:
    """A checkpoint's scores on one split of a FaceSynthetics folder,
    and which frames that split was."""
    metrics: ParserMetrics
    split: str
    val_fraction: float
    seed: int
    frame_ids: np.ndarray

    @property
    def n(self) -> int:
        return len(self.frame_ids)


def evaluate_checkpoint(data: str | os.PathLike, parser_ckpt: str | os.PathLike,
                        settings: EvalSettings = EvalSettings()) -> ParserEvaluation:
    """Metrics of a checkpoint on the held-out, training or all frames of a folder
    (``settings.split``).

    The split's seed and fraction come from the checkpoint (as training saved them) unless given, so
    the held-out faces are the ones training never saw.
    """
    ckpt = Path(parser_ckpt)
    device = resolve_device(settings.device, "device")
    model, meta = load_parser_and_meta(ckpt)
    fraction = (float(meta.get("val_fraction", 0.1)) if settings.val_fraction is None
                else settings.val_fraction)
    seed = int(meta.get("seed", 0)) if settings.seed is None else settings.seed
    cache_dir = settings.cache_dir if settings.cache_dir is not None else ckpt.parent / "cache"
    aligned = prepare_dataset(data, cache_dir, workers=settings.workers)
    train_idx, val_idx = split_indices(len(aligned.frame_ids), fraction, seed)
    idx = {"val": val_idx, "train": train_idx,
           "all": np.arange(len(aligned.frame_ids))}[settings.split]
    if not len(idx):
        raise FSEError(f"{data}: the {settings.split!r} split is empty (val_fraction {fraction})")
    metrics = evaluate_parser(model, aligned.images[idx], aligned.masks[idx], settings.batch_size,
                              device, settings.precision)
    return ParserEvaluation(metrics, settings.split, fraction, seed, aligned.frame_ids[idx])
