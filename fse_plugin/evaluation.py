"""Face verification evaluation: `.bin` packs and IJB-B/C 1:1, as arcface_torch computes them, plus a
semantic-occlusion benchmark.

Numbers match upstream (``eval/verification.py``, ``eval_ijbc.py`` at 7fadd420) on the same embeddings:
the same float64/float32 steps, the same folds, thresholds and point picking. What differs, and why:

* ``load_bin`` uses a restricted unpickler (a pack is untrusted input; plain pickle runs code) and
  OpenCV instead of mxnet (mxnet does not import with numpy >= 1.24).
* VAL@FAR: upstream interpolates the threshold with ``interp1d(far_train, thresholds, 'slinear')``, which
  raises on repeated FAR values with current scipy (insightface #2152) - and FAR values always repeat.
  ``far_threshold`` interpolates linearly between the last threshold of the FAR value below the target
  and the first threshold of the one above (what ``interp1d(kind='linear')`` does with repeats); where
  the FAR values are distinct that is upstream's 'slinear' interpolation.
* IJB alignment uses ``fse_plugin.align`` (Umeyama least squares, the same template) instead of skimage.
* The IJB meta files are checked against each other (upstream silently pairs rows by position).
"""
from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import math
import os
import pickle
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np
import sklearn.preprocessing
import torch
from sklearn.metrics import auc, roc_curve
from sklearn.model_selection import KFold
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fse_plugin import labels
from fse_plugin.align import align_image
from fse_plugin.common import FSEError, load_masks, resolve_device, to_input
from fse_plugin.recordio import decode_image

THRESHOLDS = np.arange(0, 4, 0.01)
"""Squared-L2 thresholds of the accuracy protocol (upstream ``evaluate``)."""
VAL_THRESHOLDS = np.arange(0, 4, 0.001)
"""Finer thresholds of the VAL@FAR protocol (upstream ``evaluate``)."""
IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
"""FAR points of upstream's IJB table."""
PACK_NAMES = ("lfw", "cfp_fp", "agedb_30", "calfw", "cplfw")
DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "eyes+brows": ("right_eye", "left_eye", "right_brow", "left_brow"),
    "upper_face": ("right_forehead", "left_forehead", "middle_forehead", "around_right_eye", "around_left_eye",
                   "right_eye", "left_eye", "right_brow", "left_brow"),
    "lower_face": ("right_cheek", "left_cheek", "right_chin", "left_chin", "nose", "mouth", "upper_lip",
                   "lower_lip"),
}
"""Region groups of the occlusion benchmark: eyes and brows (what sunglasses hide), the upper face above
the nose, and the lower face a medical mask covers."""


class PackError(FSEError):
    """A verification pack that is malformed or unsafe; the message names the file and the item."""


class MetaError(FSEError):
    """IJB meta files or images that are missing or disagree; the message names the file and the row."""


# ----------------------------------------------------------------------------------------------------
# Verification packs (.bin)
# ----------------------------------------------------------------------------------------------------

def _numpy_attr(name: str) -> Any:
    for module in ("numpy._core.multiarray", "numpy._core.numeric", "numpy.core.multiarray", "numpy.core.numeric"):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {name}")


_PACK_DTYPES = (np.dtype(np.uint8), np.dtype(np.bool_))


class _PackUnpickler(pickle.Unpickler):
    """Unpickler that can only build what a pack holds: bytes, lists, tuples, bools and uint8/bool arrays.

    Every global is replaced by a checking wrapper, so no callable of the file's choosing ever runs.
    """

    class _NDArrayToken:
        """Stands for numpy.ndarray: it may only be passed to _reconstruct, never called."""

    def __init__(self, file, path: str) -> None:
        super().__init__(file, encoding="latin1")  # py2 packs: str -> latin1 str, converted back to bytes below
        self.path = path
        self._reconstruct = _numpy_attr("_reconstruct")
        self._frombuffer = _numpy_attr("_frombuffer")

    def _refuse(self, what: str) -> PackError:
        return PackError(f"{self.path}: refusing to unpickle {what}: a verification pack holds only bytes, "
                         "uint8 arrays, bools, lists and tuples")

    def _dtype(self, spec, align=False, copy=False) -> np.dtype:
        if not isinstance(spec, (str, bytes)):
            raise self._refuse(f"numpy.dtype({spec!r})")
        dt = np.dtype(spec)
        if dt not in _PACK_DTYPES:
            raise self._refuse(f"an array of dtype {dt}")
        return dt

    def _reconstruct_checked(self, subtype, shape, typecode):
        # numpy always writes _reconstruct(ndarray, (0,), b'b'), then sets dtype and data from the state
        if subtype is not self._NDArrayToken or tuple(shape) != (0,) or typecode not in (b"b", "b"):
            raise self._refuse(f"numpy _reconstruct({subtype!r}, {shape!r}, {typecode!r})")
        return self._reconstruct(np.ndarray, (0,), b"b")

    def _frombuffer_checked(self, buf, dtype, shape, order):
        if not isinstance(dtype, np.dtype) or dtype not in _PACK_DTYPES:
            raise self._refuse(f"an array of dtype {dtype!r}")
        return self._frombuffer(buf, dtype, shape, order)

    def _encode(self, text, encoding="latin1"):  # how protocol <= 2 spells bytes
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise self._refuse(f"_codecs.encode({type(text).__name__}, {encoding!r})")
        return text.encode("latin1")

    def _bytearray(self, data=b"", encoding="latin1"):
        if isinstance(data, str):
            return bytearray(self._encode(data, encoding))
        if not isinstance(data, (bytes, bytearray)):
            raise self._refuse(f"bytearray({type(data).__name__})")
        return bytearray(data)

    def find_class(self, module: str, name: str):
        allowed = {
            ("numpy", "dtype"): self._dtype,
            ("numpy", "ndarray"): self._NDArrayToken,
            ("_codecs", "encode"): self._encode,
            ("builtins", "bytearray"): self._bytearray,
            ("__builtin__", "bytearray"): self._bytearray,
        }
        for np_module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed[(np_module, "_reconstruct")] = self._reconstruct_checked
        for np_module in ("numpy.core.numeric", "numpy._core.numeric"):
            allowed[(np_module, "_frombuffer")] = self._frombuffer_checked
        if (module, name) not in allowed:
            raise self._refuse(f"global {module}.{name}")
        return allowed[(module, name)]

    def persistent_load(self, pid):
        raise self._refuse(f"persistent id {pid!r}")


def _as_bytes(item: Any, path: str, index: int) -> bytes:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, str):  # py2 str read with latin1
        return item.encode("latin1")
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    raise PackError(f"{path}: image {index} is a {type(item).__name__}"
                    f"{f' {item.dtype} {item.shape}' if isinstance(item, np.ndarray) else ''}, "
                    "expected encoded image bytes or a 1-D uint8 array")


def read_pack(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
    """The raw content of a pack: (2P encoded images, P bools), read with the restricted unpickler."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            obj = _PackUnpickler(f, path).load()
    except PackError:
        raise
    except FileNotFoundError:
        raise FileNotFoundError(f"verification pack not found: {path}") from None
    except Exception as e:  # truncated or garbled stream
        raise PackError(f"{path}: not a readable verification pack ({type(e).__name__}: {e})") from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise PackError(f"{path}: expected a pair (images, issame), got {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, (list, tuple)):
        raise PackError(f"{path}: images must be a list, got {type(bins).__name__}")
    if isinstance(issame, np.ndarray):
        if issame.dtype != np.bool_ or issame.ndim != 1:
            raise PackError(f"{path}: issame must be a 1-D bool array, got {issame.dtype} {issame.shape}")
        issame = issame.tolist()
    if not isinstance(issame, (list, tuple)):
        raise PackError(f"{path}: issame must be a list of bools, got {type(issame).__name__}")
    for i, v in enumerate(issame):
        if not isinstance(v, (bool, np.bool_)):
            raise PackError(f"{path}: issame[{i}] is {v!r}, expected a bool")
    if len(bins) != 2 * len(issame):
        raise PackError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected {2 * len(issame)})")
    return [_as_bytes(b, path, i) for i, b in enumerate(bins)], np.asarray(issame, dtype=bool)


def load_bin(path: str | os.PathLike, image_size: tuple[int, int] = (112, 112)) -> tuple[np.ndarray, np.ndarray]:
    """A verification pack as (images uint8 [2P,H,W,3] RGB, issame bool [P]); pair i is images 2i, 2i+1.

    Images of another size are resized bicubically (mxnet's resize_short default) to ``image_size``.
    """
    bins, issame = read_pack(path)
    h, w = image_size
    images = np.empty((len(bins), h, w, 3), dtype=np.uint8)
    for i, buf in enumerate(bins):
        try:
            img = decode_image(buf)
        except ValueError as e:
            raise PackError(f"{path}: image {i} (pair {i // 2}): {e}") from None
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
        images[i] = img
    return images, issame


# ----------------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------------

class FaceImages(Dataset):
    """Aligned faces -> (normalised CHW tensor, position). ``keys`` picks (and orders) the images used;
    ``transform(img, mask, key)`` may alter the normalised image - the occlusion benchmark erases a region
    there, in the [-1, 1] space where FSErasing erases in training. ``masks[key]`` gives its mask."""

    def __init__(self, images: np.ndarray | None, masks: Any = None, transform: Callable | None = None,
                 keys: Sequence[int] | None = None) -> None:
        self.images = images
        self.masks = masks
        self.transform = transform
        self.keys = np.arange(len(images)) if keys is None else np.asarray(keys, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    def image(self, key: int) -> np.ndarray:
        return self.images[key]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        key = int(self.keys[index])
        x = to_input(np.ascontiguousarray(self.image(key)))
        if self.transform is not None:
            x = self.transform(x, None if self.masks is None else self.masks[key], key)
        return x, index


@torch.no_grad()
def embed(model: nn.Module, images: np.ndarray | Dataset, batch_size: int = 64, device: str | torch.device = "cpu",
          flip: bool = True, fp16: bool = False, num_workers: int = 0, embedding_size: int | None = None,
          progress: bool = True, desc: str = "embed") -> np.ndarray:
    """Un-normalised embeddings float32 [V, N, D]: V=2 (image, horizontally flipped image) if ``flip``, else 1.

    ``images`` is uint8 NHWC RGB or a Dataset of (normalised CHW tensor, index). ``fp16`` autocasts on CUDA
    (ignored on CPU, where half convolutions are slow or missing).
    """
    dataset = images if isinstance(images, Dataset) else FaceImages(images)
    device = resolve_device(device)
    if fp16 and device.type != "cuda":
        warnings.warn("fp16 autocast applies to CUDA only; running in float32 on CPU")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    n = len(dataset)
    out: np.ndarray | None = None
    model = model.to(device).eval()
    for x, index in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        x = x.to(device, non_blocking=True)
        views = (x, torch.flip(x, dims=[3])) if flip else (x,)
        feats = []
        for v in views:
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=fp16 and device.type == "cuda"):
                f = model(v)
            if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != len(v):
                shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                raise ValueError(f"model output {shape} for a batch of {len(v)}: expected [batch, embedding_size]")
            if embedding_size is not None and f.shape[1] != embedding_size:
                raise ValueError(f"model gives {f.shape[1]}-d embeddings, expected embedding_size={embedding_size}")
            feats.append(f.float().cpu().numpy())
        if out is None:
            out = np.zeros((len(views), n, feats[0].shape[1]), dtype=np.float32)
        elif feats[0].shape[1] != out.shape[2]:
            raise ValueError(f"model output size changed from {out.shape[2]} to {feats[0].shape[1]}")
        out[:, index.numpy()] = np.stack(feats)
    if out is None:
        raise ValueError("nothing to embed: no images")
    return out


# ----------------------------------------------------------------------------------------------------
# Verification protocol (upstream eval/verification.py)
# ----------------------------------------------------------------------------------------------------

def _folds(n: int, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    indices = np.arange(n)
    if n_folds <= 1:  # upstream LFold: one "fold" trained and tested on everything
        return [(indices, indices)]
    if n < n_folds:
        raise ValueError(f"{n} pairs cannot be split into {n_folds} folds")
    return list(KFold(n_splits=n_folds, shuffle=False).split(indices))


def _counts(thresholds: np.ndarray, dist: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, ...]:
    """(tp, fp, tn, fn) per threshold for the rule ``dist < threshold`` (counts exact, via sorted search)."""
    pos, neg = np.sort(dist[issame]), np.sort(dist[~issame])
    tp = np.searchsorted(pos, thresholds, side="left")
    fp = np.searchsorted(neg, thresholds, side="left")
    return tp, fp, len(neg) - fp, len(pos) - tp


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den == 0 (upstream's convention for tpr and fpr)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def squared_distances(emb1: np.ndarray, emb2: np.ndarray) -> np.ndarray:
    if emb1.shape != emb2.shape:
        raise ValueError(f"embedding sets differ in shape: {emb1.shape} vs {emb2.shape}")
    return np.sum(np.square(np.subtract(emb1, emb2)), 1)


def kfold_accuracy(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray = THRESHOLDS,
                   n_folds: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Upstream ``calculate_roc`` (pca=0): per fold the best threshold on the other folds.

    Returns (tpr [T], fpr [T] averaged over test folds, accuracy per fold [F], best threshold per fold [F]).
    """
    issame = np.asarray(issame, dtype=bool)
    folds = _folds(len(issame), n_folds)
    tprs = np.zeros((len(folds), len(thresholds)))
    fprs = np.zeros((len(folds), len(thresholds)))
    accuracy = np.zeros(len(folds))
    best = np.zeros(len(folds))
    for k, (train, test) in enumerate(folds):
        tp, fp, tn, fn = _counts(thresholds, dist[train], issame[train])
        i = int(np.argmax((tp + tn) / len(train)))
        tp, fp, tn, fn = _counts(thresholds, dist[test], issame[test])
        tprs[k], fprs[k] = _ratio(tp, tp + fn), _ratio(fp, fp + tn)
        accuracy[k] = float(tp[i] + tn[i]) / len(test)
        best[k] = thresholds[i]
    return np.mean(tprs, 0), np.mean(fprs, 0), accuracy, best


def far_threshold(far: np.ndarray, thresholds: np.ndarray, target: float) -> float:
    """Threshold at which the training FAR reaches ``target``, robust to repeated FAR values (#2152).

    FAR is a non-decreasing step function of the threshold. Between two FAR values a < target < b the
    threshold is interpolated linearly from the last threshold with FAR a to the first with FAR b (at
    FAR == target exactly: the last threshold with that FAR) - upstream's 'slinear' interpolation where
    the FAR values are distinct, ``interp1d(kind='linear')`` with repeats. 0.0 if FAR never reaches it.
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
               thresholds: np.ndarray = VAL_THRESHOLDS, n_folds: int = 10) -> tuple[float, float, float]:
    """Upstream ``calculate_val``: (VAL mean, VAL std, FAR mean) over test folds, threshold set on the rest.

    A test fold without genuine (or impostor) pairs has no VAL (FAR) and is left out of the means;
    upstream divides by zero there.
    """
    issame = np.asarray(issame, dtype=bool)
    folds = _folds(len(issame), n_folds)
    val, far = np.full(len(folds), np.nan), np.full(len(folds), np.nan)
    for k, (train, test) in enumerate(folds):
        tp, fp, _, _ = _counts(thresholds, dist[train], issame[train])
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


def xnorm(views: np.ndarray) -> float:
    """Mean L2 norm of every un-normalised embedding, flipped views included (upstream's ``_xnorm``)."""
    total, count = 0.0, 0
    for view in views:
        for row in np.asarray(view, dtype=np.float64):
            total += np.linalg.norm(row)
            count += 1
    return float(total / count)


def fuse_views(views: np.ndarray) -> np.ndarray:
    """Image + flip summed (float64, as upstream) and L2-normalised: [V,N,D] -> [N,D]."""
    views = np.asarray(views, dtype=np.float64)
    return sklearn.preprocessing.normalize(views[0] + views[1] if len(views) > 1 else views[0].copy())


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


def evaluate_embeddings(views: np.ndarray, issame: np.ndarray, n_folds: int = 10, name: str = "pack",
                        far_target: float = 1e-3) -> VerificationResult:
    """The .bin protocol on un-normalised embeddings [V, 2P, D] (pairs are rows 2i, 2i+1)."""
    views = np.asarray(views)
    if views.ndim != 3 or views.shape[1] != 2 * len(issame):
        raise ValueError(f"expected embeddings [views, {2 * len(issame)}, D] for {len(issame)} pairs, "
                         f"got {views.shape}")
    emb = fuse_views(views)
    dist = squared_distances(emb[0::2], emb[1::2])
    _, _, acc, best = kfold_accuracy(dist, issame, THRESHOLDS, n_folds)
    val, val_std, far = val_at_far(dist, issame, far_target, VAL_THRESHOLDS, n_folds)
    return VerificationResult(name, len(issame), float(np.mean(acc)), float(np.std(acc)), xnorm(views), val,
                              val_std, far, acc.tolist(), best.tolist())


def evaluate_pack(model: nn.Module, pack: str | os.PathLike | tuple[np.ndarray, np.ndarray], batch_size: int = 64,
                  device: str | torch.device = "cpu", fp16: bool = False, n_folds: int = 10,
                  embedding_size: int | None = None, name: str | None = None,
                  progress: bool = True) -> VerificationResult:
    """Load (or take) a pack, embed image + flip, and run the protocol."""
    if isinstance(pack, tuple):
        images, issame = pack
        name = name or "pack"
    else:
        images, issame = load_bin(pack)
        name = name or Path(pack).stem
    views = embed(model, images, batch_size, device, True, fp16, embedding_size=embedding_size, progress=progress,
                  desc=name)
    return evaluate_embeddings(views, issame, n_folds, name)


# ----------------------------------------------------------------------------------------------------
# IJB-B / IJB-C 1:1 (upstream eval_ijbc.py)
# ----------------------------------------------------------------------------------------------------

@dataclass
class IJBMeta:
    """The three meta files of an IJB-B/C release, checked against each other; row r of every per-image
    array is row r of both ``{t}_face_tid_mid.txt`` and ``{t}_name_5pts_score.txt``."""
    root: Path
    target: str
    names: list[str]
    points5: np.ndarray  # float32 [N, 5, 2]
    faceness: np.ndarray  # float32 [N]
    templates: np.ndarray  # int64 [N]
    medias: np.ndarray  # int64 [N]
    p1: np.ndarray  # int64 [M]
    p2: np.ndarray  # int64 [M]
    labels: np.ndarray  # int64 [M], 1 genuine
    files: dict[str, Path]

    @property
    def image_dir(self) -> Path:
        return self.root / "loose_crop"

    def probe_rows(self) -> np.ndarray:
        """Rows of the images of probe templates (the second template of a pair)."""
        return np.flatnonzero(np.isin(self.templates, np.unique(self.p2)))


def ijb_meta_files(root: str | os.PathLike, target: str = "IJBC") -> dict[str, Path]:
    t = target.lower()
    meta = Path(root) / "meta"
    return {"face_tid_mid": meta / f"{t}_face_tid_mid.txt", "template_pair_label": meta / f"{t}_template_pair_label.txt",
            "name_5pts_score": meta / f"{t}_name_5pts_score.txt"}


def _text_rows(path: Path, n_cols: int, layout: str) -> list[list[str]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            cols = line.split()
            if not cols:
                continue
            if len(cols) != n_cols:
                raise MetaError(f"{path}: row {lineno}: expected {n_cols} columns ({layout}), got {len(cols)}: "
                                f"{line.strip()[:80]!r}")
            rows.append(cols + [lineno])
    if not rows:
        raise MetaError(f"{path}: no rows")
    return rows


def _number(value: str, kind: type, path: Path, lineno: int, column: str):
    try:
        return kind(value)
    except ValueError:
        raise MetaError(f"{path}: row {lineno}: column {column} is {value!r}, not a{'n int' if kind is int else ' number'}") from None


def _int_table(path: Path, n_cols: int, layout: str) -> np.ndarray:
    """Whole-number table; numpy's C reader for speed (IJB-C has 15.7M pairs), a line scan for the error."""
    try:
        table = np.loadtxt(path, dtype=np.int64, ndmin=2)
        if table.shape[1] == n_cols and len(table):
            return table
    except ValueError:
        pass
    names = layout.split()
    table = [[_number(v, int, path, r[-1], names[c]) for c, v in enumerate(r[:-1])] for r in _text_rows(path, n_cols, layout)]
    return np.asarray(table, dtype=np.int64)


def read_ijb_meta(root: str | os.PathLike, target: str = "IJBC") -> IJBMeta:
    """Read and cross-check ``meta/{t}_face_tid_mid.txt``, ``{t}_template_pair_label.txt`` and
    ``{t}_name_5pts_score.txt`` of an IJB-B/C root (``target`` IJBB or IJBC)."""
    if target.upper() not in ("IJBB", "IJBC"):
        raise ValueError(f"target must be IJBB or IJBC, got {target!r}")
    files = ijb_meta_files(root, target)
    for what, path in files.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing IJB meta file ({what}) under {root}")
    tid_rows = _text_rows(files["face_tid_mid"], 3, "name tid mid")
    names = [r[0] for r in tid_rows]
    tm = [[_number(r[1], int, files["face_tid_mid"], r[3], "tid"), _number(r[2], int, files["face_tid_mid"], r[3], "mid")]
          for r in tid_rows]
    templates, medias = np.asarray(tm, dtype=np.int64).T
    pts_rows = _text_rows(files["name_5pts_score"], 12, "name x1 y1 ... x5 y5 faceness")
    known = dict(zip(names, range(len(names))))
    for i, r in enumerate(pts_rows):
        if r[0] not in known:
            raise MetaError(f"{files['name_5pts_score']}: row {r[-1]}: image {r[0]!r} is not in {files['face_tid_mid']}")
        if i >= len(names) or names[i] != r[0]:
            raise MetaError(f"{files['name_5pts_score']}: row {r[-1]}: image {r[0]!r} is row {tid_rows[known[r[0]]][3]} "
                            f"of {files['face_tid_mid']}: the two files must list the same images in the same order")
    if len(pts_rows) != len(names):
        raise MetaError(f"{files['name_5pts_score']}: {len(pts_rows)} rows but {files['face_tid_mid']} has {len(names)}; "
                        f"first image without landmarks: {names[len(pts_rows)]!r} (row {tid_rows[len(pts_rows)][3]})")
    values = np.asarray([[_number(v, float, files["name_5pts_score"], r[-1], f"{c + 2}") for c, v in enumerate(r[1:-1])]
                         for r in pts_rows], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values).all(1))
    if len(bad):
        raise MetaError(f"{files['name_5pts_score']}: row {pts_rows[bad[0]][-1]}: landmarks or score not finite")
    pairs = _int_table(files["template_pair_label"], 3, "tid_1 tid_2 label")
    p1, p2, label = pairs.T
    for col, ids in (("tid_1", p1), ("tid_2", p2)):
        missing = ~np.isin(ids, templates)
        if missing.any():
            i = int(np.argmax(missing))
            raise MetaError(f"{files['template_pair_label']}: row {i + 1}: template {ids[i]} ({col}) has no image in "
                            f"{files['face_tid_mid']}")
    if not np.isin(label, (0, 1)).all():
        i = int(np.argmax(~np.isin(label, (0, 1))))
        raise MetaError(f"{files['template_pair_label']}: row {i + 1}: label {label[i]} is not 0 or 1")
    return IJBMeta(Path(root), target.upper(), names, values[:, :10].reshape(-1, 5, 2).astype(np.float32),
                   values[:, 10].astype(np.float32), templates, medias, p1, p2, label, files)


class IJBFaces(FaceImages):
    """IJB images (``loose_crop/<name>``) aligned to 112x112 by their 5 points; keys are meta rows."""

    def __init__(self, meta: IJBMeta, keys: Sequence[int] | None = None, masks: Any = None,
                 transform: Callable | None = None, size: int = 112) -> None:
        super().__init__(None, masks, transform, keys if keys is not None else np.arange(len(meta.names)))
        self.meta = meta
        self.size = size

    def image(self, key: int) -> np.ndarray:
        path = self.meta.image_dir / self.meta.names[key]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise MetaError(f"{path}: missing or undecodable image (row {key + 1} of {self.meta.files['name_5pts_score']})")
        return align_image(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), self.meta.points5[key], self.size)


def ijb_image_features(model: nn.Module, meta: IJBMeta, keys: Sequence[int] | None = None, masks: Any = None,
                       transform: Callable | None = None, batch_size: int = 128, device: str | torch.device = "cpu",
                       fp16: bool = False, num_workers: int = 0, embedding_size: int | None = None,
                       progress: bool = True, desc: str = "IJB") -> np.ndarray:
    """float32 [len(keys), D]: (image + flip) * faceness, upstream's F2 + D1 mode, in float32 like upstream."""
    dataset = IJBFaces(meta, keys, masks, transform)
    views = embed(model, dataset, batch_size, device, True, fp16, num_workers, embedding_size, progress, desc)
    return (views[0] + views[1]) * meta.faceness[dataset.keys][:, np.newaxis]


def template_features(img_feats: np.ndarray, templates: np.ndarray, medias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upstream ``image2template_feature``: mean per media, sum per template, L2 normalise.

    Returns (float64 [T, D], sorted unique template ids). Same arithmetic in the same order as upstream
    (float32 media means and sums), grouped by one sort instead of a scan per template.
    """
    if not len(img_feats) == len(templates) == len(medias):
        raise ValueError(f"{len(img_feats)} features for {len(templates)} template and {len(medias)} media ids")
    unique_templates = np.unique(templates)
    feats = np.zeros((len(unique_templates), img_feats.shape[1]))
    order = np.argsort(templates, kind="stable")
    bounds = np.searchsorted(templates[order], unique_templates, side="left").tolist() + [len(order)]
    for k in range(len(unique_templates)):
        rows = order[bounds[k]:bounds[k + 1]]
        face_feats, face_medias = img_feats[rows], medias[rows]
        parts = []
        for u, count in zip(*np.unique(face_medias, return_counts=True)):
            group = face_feats[face_medias == u]
            parts.append(group if count == 1 else np.mean(group, axis=0, keepdims=True))
        feats[k] = np.sum(np.array(parts), axis=0)
    return sklearn.preprocessing.normalize(feats), unique_templates


def pair_scores(template_feats: np.ndarray, unique_templates: np.ndarray, p1: np.ndarray, p2: np.ndarray,
                template_feats2: np.ndarray | None = None, unique_templates2: np.ndarray | None = None,
                chunk: int = 100000) -> np.ndarray:
    """Cosine score per template pair (upstream ``verification``); ``template_feats2`` (optional) holds the
    second templates of the pairs, e.g. occluded probes against clean references."""
    if template_feats2 is None:
        template_feats2, unique_templates2 = template_feats, unique_templates
    i1 = _template_index(unique_templates, p1)
    i2 = _template_index(unique_templates2, p2)
    score = np.zeros(len(p1))
    for s in range(0, len(p1), chunk):
        score[s:s + chunk] = np.sum(template_feats[i1[s:s + chunk]] * template_feats2[i2[s:s + chunk]], -1)
    return score


def _template_index(unique_templates: np.ndarray, ids: np.ndarray) -> np.ndarray:
    index = np.searchsorted(unique_templates, ids)
    bad = (index >= len(unique_templates)) | (unique_templates[np.minimum(index, len(unique_templates) - 1)] != ids)
    if bad.any():
        raise ValueError(f"pair {int(np.argmax(bad))}: template {ids[np.argmax(bad)]} has no feature")
    return index


def tar_at_far(labels: np.ndarray, scores: np.ndarray, fars: Sequence[float] = IJB_FARS) -> tuple[np.ndarray, float]:
    """(TAR at each FAR, AUC) from sklearn's ROC, taking the point whose FPR is nearest each FAR - upstream's
    pick, ties to the higher threshold index of the flipped curve, i.e. ``argmin`` after ``flipud``."""
    fpr, tpr, _ = roc_curve(labels, scores)
    roc_auc = auc(fpr, tpr)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    return np.array([tpr[np.argmin(np.abs(fpr - far))] for far in fars]), float(roc_auc)


def plot_roc(labels: np.ndarray, scores: Mapping[str, np.ndarray], path: str | os.PathLike,
             title: str = "ROC on IJB") -> Path:
    """Upstream's ROC figure (log FPR 1e-6..0.1, TPR 0.3..1, AUC in the legend), one curve per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure()
    colours = plt.get_cmap("Set2")(np.linspace(0, 1, max(len(scores), 2)))
    for colour, (method, score) in zip(colours, scores.items()):
        fpr, tpr, _ = roc_curve(labels, score)
        plt.plot(np.flipud(fpr), np.flipud(tpr), color=colour, lw=1, label=f"[{method} (AUC = {auc(fpr, tpr) * 100:0.4f} %)]")
    plt.xlim([10 ** -6, 0.1])
    plt.ylim([0.3, 1.0])
    plt.grid(linestyle="--", linewidth=1)
    plt.xticks(list(IJB_FARS))
    plt.yticks(np.linspace(0.3, 1.0, 8, endpoint=True))
    plt.xscale("log")
    plt.xlabel("False Positive Rate")
    plt.ylabel("True Positive Rate")
    plt.title(title)
    plt.legend(loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


@dataclass
class IJBResult:
    """TAR (fraction) at each FAR of ``fars``; upstream prints them x100 with 2 decimals."""
    name: str
    target: str
    n_images: int
    n_templates: int
    n_pairs: int
    fars: list[float]
    tar: list[float]
    auc: float
    scores_path: str | None = None
    roc_path: str | None = None

    def __str__(self) -> str:
        return format_table([f"{self.name}-{self.target}"] + [f"{t * 100:.2f}" for t in self.tar],
                            ["Methods"] + [str(f) for f in self.fars])


def evaluate_ijb(model: nn.Module, root: str | os.PathLike | IJBMeta, target: str = "IJBC",
                 out_dir: str | os.PathLike | None = None, name: str = "model", batch_size: int = 128,
                 device: str | torch.device = "cpu", fp16: bool = False, num_workers: int = 0,
                 embedding_size: int | None = None, fars: Sequence[float] = IJB_FARS,
                 progress: bool = True) -> IJBResult:
    """IJB-B/C 1:1 verification; with ``out_dir``, saves ``<target>.npy`` scores (as upstream) and a ROC PNG."""
    meta = root if isinstance(root, IJBMeta) else read_ijb_meta(root, target)
    feats = ijb_image_features(model, meta, None, None, None, batch_size, device, fp16, num_workers, embedding_size,
                               progress, meta.target)
    tfeats, unique_templates = template_features(feats, meta.templates, meta.medias)
    scores = pair_scores(tfeats, unique_templates, meta.p1, meta.p2)
    tar, roc_auc = tar_at_far(meta.labels, scores, fars)
    result = IJBResult(name, meta.target, len(meta.names), len(unique_templates), len(scores), list(fars),
                       tar.tolist(), roc_auc)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        result.scores_path = str(out_dir / f"{meta.target.lower()}.npy")
        np.save(result.scores_path, scores)
        result.roc_path = str(plot_roc(meta.labels, {name: scores}, out_dir / f"{meta.target.lower()}_roc.png",
                                       f"ROC on {meta.target}"))
    return result


def format_table(rows: Sequence[Sequence[Any]] | Sequence[Any], header: Sequence[str]) -> str:
    """A plain fixed-width text table (one row may be given flat)."""
    if rows and not isinstance(rows[0], (list, tuple)):
        rows = [rows]
    cells = [[str(h) for h in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line, fmt(cells[0]), line, *map(fmt, cells[1:]), line])


# ----------------------------------------------------------------------------------------------------
# Semantic-occlusion benchmark
# ----------------------------------------------------------------------------------------------------

def parse_groups(spec: str | Mapping[str, Sequence[str | int] | str] | None) -> dict[str, list[int]]:
    """Region groups: None -> ``DEFAULT_GROUPS``; "" or "none" -> no group; "name=cls,cls;name2=cls" or a
    mapping name -> classes (names or ids) otherwise."""
    if spec is None:
        spec = DEFAULT_GROUPS
    if isinstance(spec, str):
        if spec.strip().lower() in ("", "none"):
            return {}
        items = {}
        for part in (p.strip() for p in spec.split(";")):
            if not part:
                continue
            name, sep, classes = part.partition("=")
            if not sep or not name.strip() or not classes.strip():
                raise ValueError(f"group {part!r}: expected name=class,class (groups are separated by ';')")
            if name.strip() in items:
                raise ValueError(f"group {name.strip()!r} given twice")
            items[name.strip()] = classes
        spec = items
    return {name: labels.parse_class_list(classes if isinstance(classes, str) else list(classes))
            for name, classes in spec.items()}


def occlusion_regions(classes: str | Sequence[str | int] | None = None,
                      groups: str | Mapping[str, Any] | None = None) -> list[tuple[str, list[int]]]:
    """(region name, class ids): each class of ``classes`` (default all 25) alone, then each group."""
    regions = [(labels.class_name(c), [c]) for c in labels.parse_class_list(classes)]
    taken = {r for r, _ in regions}
    for name, ids in parse_groups(groups).items():
        if name in taken:
            raise ValueError(f"group name {name!r} is also a class name")
        regions.append((name, ids))
    return regions


class RegionErasing:
    """Erase fixed classes of a normalised image, seeded per image key so that every model, batch size
    and worker count sees the same erased probes (``erasing.erase`` does the pixels)."""

    def __init__(self, class_ids: Sequence[int], fill: Any = "random", seed: int = 0) -> None:
        from fse_plugin.erasing import check_fill
        self.class_ids = labels.class_ids(class_ids)
        self.fill = check_fill(fill)
        self.seed = int(seed)

    def __call__(self, img: torch.Tensor, mask: np.ndarray | None, key: int) -> torch.Tensor:
        from fse_plugin.erasing import erase
        if mask is None:
            raise ValueError(f"image {key}: no mask to erase {self!r} with")
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, int(key)]).generate_state(1)[0]))
        return erase(img, torch.from_numpy(np.array(mask, dtype=np.uint8)), self.class_ids, self.fill, generator)

    def __repr__(self) -> str:
        names = ",".join(labels.class_name(c) for c in self.class_ids)
        return f"{type(self).__name__}(classes=[{names}], fill={self.fill!r}, seed={self.seed})"


class CacheMasks:
    """A ``MaskCache`` as the mask source of a pack or an IJB set: image i (pack index or meta row) has the
    i-th mask of the cache in key order - e.g. a cache of a rec written from those images in order."""

    def __init__(self, path: str | os.PathLike, n_images: int) -> None:
        from fse_plugin.maskcache import MaskCache
        self.cache = MaskCache(path)
        self.path = path
        if len(self.cache) != n_images:
            raise ValueError(f"{path}: mask cache holds {len(self.cache)} masks for {n_images} images")

    def __getitem__(self, index: int) -> np.ndarray:
        key = int(self.cache.keys[int(index)])
        mask = self.cache.get(key)
        if mask is None:
            raise KeyError(f"{self.path}: no mask for image {index} (cache key {key})")
        return mask

    def __len__(self) -> int:
        return len(self.cache)


def open_masks(path: str | os.PathLike, n_images: int, size: tuple[int, int] = (112, 112)) -> Any:
    """Masks for ``n_images`` images from a ``.npy`` [N,H,W] uint8 file (memory-mapped) or a mask-cache dir."""
    path = Path(path)
    if path.is_dir():
        return CacheMasks(path, n_images)
    return load_masks(path, n_images, size)


def class_presence(masks: Any, keys: Sequence[int]) -> np.ndarray:
    """bool [len(keys), 25]: which classes each image's mask contains."""
    out = np.zeros((len(keys), labels.NUM_CLASSES), dtype=bool)
    for i, k in enumerate(keys):
        mask = masks[int(k)]
        if mask is None:
            raise ValueError(f"image {k}: no mask")
        out[i] = np.bincount(np.asarray(mask).ravel(), minlength=256)[:labels.NUM_CLASSES] > 0
    return out


@dataclass
class OcclusionRow:
    region: str
    classes: list[str]
    n_probes: int  # probes that contain the region (the others are unchanged)
    score: dict[str, float]  # per model, percent
    drop: dict[str, float]  # clean - occluded, points


@dataclass
class OcclusionReport:
    """Per-region scores of one or two models with the region erased in every probe image."""
    benchmark: str
    metric: str
    models: list[str]
    clean: dict[str, float]
    rows: list[OcclusionRow]
    skipped: list[str]
    fill: Any
    seed: int
    n_probes: int

    def table(self) -> str:
        header = ["region", "probes"] + [f"{m} {h}" for m in self.models for h in ("score", "drop")]
        rows = [["(clean)", self.n_probes] + [v for m in self.models for v in (f"{self.clean[m]:.2f}", "")]]
        rows += [[r.region, r.n_probes] + [v for m in self.models for v in (f"{r.score[m]:.2f}", f"{r.drop[m]:+.2f}")]
                 for r in self.rows]
        text = f"{self.benchmark}: {self.metric}, region erased in the probe image (fill={self.fill}, seed={self.seed})\n"
        text += format_table(rows, header)
        if self.skipped:
            text += f"\nskipped (absent in every probe): {', '.join(self.skipped)}"
        return text


def _occlusion_loop(models: Mapping[str, nn.Module], regions: Sequence[tuple[str, list[int]]], presence: np.ndarray,
                    probe_keys: np.ndarray, clean: dict[str, float], score_fn: Callable[[str, np.ndarray, RegionErasing], float],
                    fill: Any, seed: int, progress: bool) -> tuple[list[OcclusionRow], list[str]]:
    rows, skipped = [], []
    for region, ids in tqdm(regions, desc="regions", disable=not progress):
        present = presence[:, ids].any(1)
        if not present.any():
            skipped.append(region)
            continue
        eraser = RegionErasing(ids, fill, seed)
        score = {m: score_fn(m, probe_keys[present], eraser) for m in models}
        rows.append(OcclusionRow(region, [labels.class_name(c) for c in ids], int(present.sum()), score,
                                 {m: clean[m] - score[m] for m in models}))
    if skipped:
        print(f"occlusion: skipped regions absent in every probe: {', '.join(skipped)}", file=sys.stderr)
    return rows, skipped


def _size_of(embedding_size: int | Mapping[str, int | None] | None, model: str) -> int | None:
    return embedding_size.get(model) if isinstance(embedding_size, Mapping) else embedding_size


def occlusion_pack(models: Mapping[str, nn.Module], images: np.ndarray, issame: np.ndarray, masks: Any,
                   regions: Sequence[tuple[str, list[int]]], fill: Any = "random", seed: int = 0, batch_size: int = 64,
                   device: str | torch.device = "cpu", fp16: bool = False, n_folds: int = 10, num_workers: int = 0,
                   embedding_size: int | Mapping[str, int | None] | None = None, name: str = "pack",
                   progress: bool = True) -> OcclusionReport:
    """Accuracy (10-fold protocol, %) with each region erased in the probe (second) image of every pair.

    Only probes that contain the region are re-embedded: erasing an absent class changes nothing.
    ``embedding_size`` (checked) is one size or one per model name.
    """
    probe_keys = np.arange(1, len(images), 2)
    presence = class_presence(masks, probe_keys)
    clean_views = {m: embed(model, images, batch_size, device, True, fp16, num_workers, _size_of(embedding_size, m),
                            progress, f"{m} clean") for m, model in models.items()}
    clean = {m: evaluate_embeddings(v, issame, n_folds, name).accuracy * 100 for m, v in clean_views.items()}

    def score(m: str, keys: np.ndarray, eraser: RegionErasing) -> float:
        views = clean_views[m].copy()
        views[:, keys] = embed(models[m], FaceImages(images, masks, eraser, keys), batch_size, device, True, fp16,
                               num_workers, _size_of(embedding_size, m), progress, f"{m} {eraser.class_ids}")
        return evaluate_embeddings(views, issame, n_folds, name).accuracy * 100

    rows, skipped = _occlusion_loop(models, regions, presence, probe_keys, clean, score, fill, seed, progress)
    return OcclusionReport(name, "accuracy (%)", list(models), clean, rows, skipped, fill, seed, len(probe_keys))


def occlusion_ijb(models: Mapping[str, nn.Module], meta: IJBMeta, masks: Any, regions: Sequence[tuple[str, list[int]]],
                  far: float = 1e-4, fill: Any = "random", seed: int = 0, batch_size: int = 128,
                  device: str | torch.device = "cpu", fp16: bool = False, num_workers: int = 0,
                  embedding_size: int | Mapping[str, int | None] | None = None, progress: bool = True) -> OcclusionReport:
    """TAR@FAR (%) with each region erased in every image of the probe templates (the second template of
    each pair); reference templates stay clean, so a pair scores clean t1 against occluded t2."""
    probe_rows = meta.probe_rows()
    presence = class_presence(masks, probe_rows)
    clean_feats, clean_templates, clean = {}, {}, {}
    for m, model in models.items():
        clean_feats[m] = ijb_image_features(model, meta, None, None, None, batch_size, device, fp16, num_workers,
                                            _size_of(embedding_size, m), progress, f"{m} clean")
        clean_templates[m] = template_features(clean_feats[m], meta.templates, meta.medias)
        clean[m] = tar_at_far(meta.labels, pair_scores(*clean_templates[m], meta.p1, meta.p2), [far])[0][0] * 100

    def score(m: str, rows: np.ndarray, eraser: RegionErasing) -> float:
        feats = clean_feats[m].copy()
        feats[rows] = ijb_image_features(models[m], meta, rows, masks, eraser, batch_size, device, fp16, num_workers,
                                         _size_of(embedding_size, m), progress, f"{m} {eraser.class_ids}")
        probe = template_features(feats[probe_rows], meta.templates[probe_rows], meta.medias[probe_rows])
        return tar_at_far(meta.labels, pair_scores(*clean_templates[m], meta.p1, meta.p2, *probe), [far])[0][0] * 100

    rows, skipped = _occlusion_loop(models, regions, presence, probe_rows, clean, score, fill, seed, progress)
    return OcclusionReport(meta.target, f"TAR@FAR={far:g} (%)", list(models), clean, rows, skipped, fill, seed,
                           len(probe_rows))


def plot_occlusion(report: OcclusionReport, path: str | os.PathLike) -> Path:
    """Horizontal bars: the score drop per region, one bar per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n, k = len(report.rows), len(report.models)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.32 * max(n, 1) * max(k, 1) ** 0.5))
    y = np.arange(n)
    height = 0.8 / k
    for j, m in enumerate(report.models):
        ax.barh(y + (j - (k - 1) / 2) * height, [r.drop[m] for r in report.rows], height,
                label=f"{m} (clean {report.clean[m]:.2f})")
    ax.set_yticks(y, [r.region for r in report.rows])
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(f"drop in {report.metric} (clean - occluded)")
    ax.set_title(f"{report.benchmark}: region erased in the probe")
    ax.grid(axis="x", linestyle="--", linewidth=0.5)
    ax.legend(loc="lower right", fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", dpi=120)
    plt.close(fig)
    return path


def write_occlusion_report(report: OcclusionReport, out_dir: str | os.PathLike, stem: str = "occlusion") -> dict[str, Path]:
    """``<stem>.csv``, ``<stem>.json`` and ``<stem>.png`` (chart) under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / f"{stem}.csv", "json": out_dir / f"{stem}.json", "png": out_dir / f"{stem}.png"}
    with open(paths["csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["region", "classes", "n_probes"] + [f"{m} {h}" for m in report.models for h in ("score", "drop")])
        w.writerow(["(clean)", "", report.n_probes] + [v for m in report.models for v in (report.clean[m], 0.0)])
        for r in report.rows:
            w.writerow([r.region, ",".join(r.classes), r.n_probes] + [v for m in report.models for v in (r.score[m], r.drop[m])])
    paths["json"].write_text(json.dumps(asdict(report), indent=2))
    plot_occlusion(report, paths["png"])
    return paths


# ----------------------------------------------------------------------------------------------------
# Masks from a parser, FS-CAM
# ----------------------------------------------------------------------------------------------------

def stack_masks(masks: Any, keys: Sequence[int]) -> np.ndarray:
    return np.stack([np.asarray(masks[int(k)]) for k in keys]).astype(np.uint8)


def select_pairs(issame: np.ndarray, which: str = "same", limit: int | None = None) -> np.ndarray:
    """Indices of pairs to explain: genuine ('same'), impostor ('diff') or 'all', the first ``limit``."""
    issame = np.asarray(issame, dtype=bool)
    if which not in ("same", "diff", "all"):
        raise ValueError(f"pairs must be 'same', 'diff' or 'all', got {which!r}")
    idx = np.arange(len(issame)) if which == "all" else np.flatnonzero(issame if which == "same" else ~issame)
    return idx[:limit] if limit is not None else idx


def predict_ijb_masks(parser_ckpt: str | os.PathLike, meta: IJBMeta, rows: Sequence[int], out_path: str | os.PathLike,
                      batch_size: int = 64, device: str | torch.device = "cpu", progress: bool = True) -> np.ndarray:
    """Parser masks of the aligned images of ``rows``, in a [N,112,112] ``.npy`` beside the results (255 in
    rows not predicted), memory-mapped: IJB-C's 469k masks take 5.9 GB. Reusable with ``--masks``."""
    from fse_plugin.parsing import load_parser, predict_masks
    device = resolve_device(device)
    parser = load_parser(parser_ckpt, map_location=device)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    masks = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint8, shape=(len(meta.names), 112, 112))
    masks[:] = 255
    faces = IJBFaces(meta)
    rows = np.asarray(rows, dtype=np.int64)
    for s in tqdm(range(0, len(rows), batch_size), desc="parser", disable=not progress):
        chunk = rows[s:s + batch_size]
        masks[chunk] = predict_masks(parser, np.stack([faces.image(r) for r in chunk]), batch_size, device)
    masks.flush()
    return masks


# ----------------------------------------------------------------------------------------------------
# Models and configs
# ----------------------------------------------------------------------------------------------------

def _exec_config(path: Path) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location(f"_fse_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: not a Python config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the user's own config, as arcface_torch's get_config imports it
    if not hasattr(module, "config"):
        raise ValueError(f"{path}: defines no `config`")
    return dict(module.config)


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """An arcface_torch config (``configs/NAME.py``): ``configs/base.py`` beside it first, then the job
    config over it, ``output`` defaulting to ``work_dirs/NAME`` - what ``utils_config.get_config`` does."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    base = path.parent / "base.py"
    cfg = _exec_config(base) if base.is_file() and base.resolve() != path.resolve() else {}
    cfg.update(_exec_config(path))
    if cfg.get("output") is None:
        cfg["output"] = os.path.join("work_dirs", path.stem)
    cfg["_path"] = str(path)
    return cfg


def _config_path(cfg: Mapping[str, Any], value: str) -> Path:
    """A path of a config: as given (arcface_torch runs from its root), else relative to that root."""
    p = Path(value)
    root = Path(cfg["_path"]).resolve().parent.parent
    return p if p.is_absolute() or p.exists() or not (root / p).exists() else root / p


def model_spec(args: Any, cfg: Mapping[str, Any] | None, suffix: str = "") -> dict[str, Any]:
    """network / weights / embedding size / label of model ``suffix`` ('' or '2') from flags, else config."""
    cfg = cfg or {}
    network = getattr(args, f"network{suffix}") or (args.network if suffix else None) or cfg.get("network") or "tiny"
    weights = getattr(args, f"weights{suffix}")
    if weights is None and not suffix and cfg.get("output"):
        candidate = _config_path(cfg, cfg["output"]) / "model.pt"
        weights = str(candidate) if candidate.is_file() else None
    size = getattr(args, f"embedding_size{suffix}", None) or (None if suffix else cfg.get("embedding_size"))
    label = (Path(weights).parent.name if Path(weights).stem == "model" else Path(weights).stem) if weights else network
    name = getattr(args, f"name{suffix}") or label
    return {"network": network, "weights": weights, "embedding_size": size, "name": name}


def build_model(spec: Mapping[str, Any], arcface_dir: str | None = None) -> nn.Module:
    from fse_plugin.backbone import load_backbone
    return load_backbone(spec["weights"], spec["network"], spec["embedding_size"] or 512, arcface_dir)
