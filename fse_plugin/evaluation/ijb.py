"""IJB-B/C 1:1 verification as arcface_torch's ``eval_ijbc.py`` computes it: image + flip embeddings
times the faceness score, averaged per media, summed per template, L2-normalised; a cosine score per
template pair; TAR at each FAR from sklearn's ROC. Same arithmetic in the same order as upstream, so
the scores agree to the last bit.

Faces are aligned as upstream aligns them (scikit-image's similarity transform estimated in float32
onto the template built as upstream builds it), so the aligned pixels are upstream's too. The
difference, and why: the three meta files are checked against each other (upstream silently pairs
rows by position).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import sklearn.preprocessing
from sklearn.metrics import auc, roc_curve
from torch import nn

from fse_plugin.evaluation.embed import EmbedSettings, FaceImages, embed, given_settings
from fse_plugin.common import FSEError, checks
from fse_plugin.evaluation.errors import MetaError
from fse_plugin.evaluation.outputs import atomic_figure, atomic_npy
from fse_plugin.evaluation.protocols import IJB_FARS
from fse_plugin.evaluation.tables import format_table

__all__ = ["IJBFaces", "IJBMeta", "IJBResult", "evaluate_ijb", "ijb_image_features",
           "image_features", "pair_scores", "read_ijb_meta", "roc_colours", "tar_at_far",
           "template_features"]

_BATCH_SIZE = 128
"""eval_ijbc.py's default batch: the IJB functions' default ``EmbedSettings(batch_size=128)``."""

_TEMPLATE = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                      [33.5493, 92.3655], [62.7299, 92.2041]], dtype=np.float32)
_TEMPLATE[:, 0] += 8.0
"""The ArcFace 5-point template as eval_ijbc.py builds it (float32, x shifted in float32): it
differs from ``align.ARCFACE_TEMPLATE`` in the last bits, and skimage estimates in the points'
float32, so this is what gives upstream's aligned pixels."""


@dataclass
class IJBMeta:
    """The three meta files of an IJB-B/C release, checked against each other; row r of every
    per-image array is row r of both ``{t}_face_tid_mid.txt`` and ``{t}_name_5pts_score.txt``."""
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


def _meta_files(root: str | os.PathLike, target: str) -> dict[str, Path]:
    t = target.lower()
    meta = Path(root) / "meta"
    return {"face_tid_mid": meta / f"{t}_face_tid_mid.txt",
            "template_pair_label": meta / f"{t}_template_pair_label.txt",
            "name_5pts_score": meta / f"{t}_name_5pts_score.txt"}


def _text_rows(path: Path, n_cols: int, layout: str) -> list[list[Any]]:
    """The non-empty rows of a whitespace-separated file, split, each with its line number
    appended."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            cols = line.split()
            if not cols:
                continue
            if len(cols) != n_cols:
                raise MetaError(f"{path}: row {lineno}: expected {n_cols} columns ({layout}), got "
                                f"{len(cols)}: {line.strip()[:80]!r}")
            rows.append(cols + [lineno])
    if not rows:
        raise MetaError(f"{path}: no rows")
    return rows


def _number(value: str, kind: type, path: Path, lineno: int, column: str) -> int | float:
    try:
        return kind(value)
    except ValueError:
        raise MetaError(f"{path}: row {lineno}: column {column} is {value!r}, "
                        f"not a{'n int' if kind is int else ' number'}") from None


def _int_table(path: Path, n_cols: int, layout: str) -> np.ndarray:
    """Whole-number table; numpy's C reader for speed (IJB-C has 15.7M pairs), a line scan for the
    error."""
    try:
        table = np.loadtxt(path, dtype=np.int64, ndmin=2)
        if table.shape[1] == n_cols and len(table):
            return table
    except ValueError:
        pass
    names = layout.split()
    rows = _text_rows(path, n_cols, layout)
    return np.asarray([[_number(v, int, path, r[-1], names[c]) for c, v in enumerate(r[:-1])]
                       for r in rows], dtype=np.int64)


def _read_images(files: dict[str, Path]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(names, templates, medias, 5 points + faceness float64 [N, 11]) of the two per-image files,
    which must list the same images in the same order."""
    tid_file, pts_file = files["face_tid_mid"], files["name_5pts_score"]
    tid_rows = _text_rows(tid_file, 3, "name tid mid")
    names = [r[0] for r in tid_rows]
    tm = [[_number(r[1], int, tid_file, r[3], "tid"), _number(r[2], int, tid_file, r[3], "mid")]
          for r in tid_rows]
    templates, medias = np.asarray(tm, dtype=np.int64).T
    pts_rows = _text_rows(pts_file, 12, "name x1 y1 ... x5 y5 faceness")
    known = dict(zip(names, range(len(names))))
    for i, r in enumerate(pts_rows):
        if r[0] not in known:
            raise MetaError(f"{pts_file}: row {r[-1]}: image {r[0]!r} is not in {tid_file}")
        if i >= len(names) or names[i] != r[0]:
            raise MetaError(f"{pts_file}: row {r[-1]}: image {r[0]!r} is row {tid_rows[known[r[0]]][3]} of "
                            f"{tid_file}: the two files must list the same images in the same order")
    if len(pts_rows) != len(names):
        raise MetaError(f"{pts_file}: {len(pts_rows)} rows but {tid_file} has {len(names)}; first image without "
                        f"landmarks: {names[len(pts_rows)]!r} (row {tid_rows[len(pts_rows)][3]})")
    values = np.asarray([[_number(v, float, pts_file, r[-1], f"{c + 2}")
                          for c, v in enumerate(r[1:-1])] for r in pts_rows], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values).all(1))
    if len(bad):
        raise MetaError(f"{pts_file}: row {pts_rows[bad[0]][-1]}: landmarks or score not finite")
    return names, templates, medias, values


def _read_pairs(files: dict[str, Path], templates: np.ndarray) -> np.ndarray:
    """int64 [M, 3] (template 1, template 2, label) whose templates all have images."""
    path = files["template_pair_label"]
    pairs = _int_table(path, 3, "tid_1 tid_2 label")
    for col, ids in (("tid_1", pairs[:, 0]), ("tid_2", pairs[:, 1])):
        missing = ~np.isin(ids, templates)
        if missing.any():
            i = int(np.argmax(missing))
            raise MetaError(f"{path}: row {i + 1}: template {ids[i]} ({col}) has no image in "
                            f"{files['face_tid_mid']}")
    bad = ~np.isin(pairs[:, 2], (0, 1))
    if bad.any():
        i = int(np.argmax(bad))
        raise MetaError(f"{path}: row {i + 1}: label {pairs[i, 2]} is not 0 or 1")
    return pairs


def read_ijb_meta(root: str | os.PathLike, target: str = "IJBC") -> IJBMeta:
    """Read and cross-check ``meta/{t}_face_tid_mid.txt``, ``{t}_template_pair_label.txt`` and
    ``{t}_name_5pts_score.txt`` of an IJB-B/C root (``target`` IJBB or IJBC)."""
    if not isinstance(target, str) or target.upper() not in ("IJBB", "IJBC"):
        raise FSEError(f"IJB target must be IJBB or IJBC, got {target!r}")
    files = _meta_files(root, target)
    for what, path in files.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing IJB meta file ({what}) under {root}")
    names, templates, medias, values = _read_images(files)
    p1, p2, label = _read_pairs(files, templates).T
    return IJBMeta(Path(root), target.upper(), names,
                   values[:, :10].reshape(-1, 5, 2).astype(np.float32),
                   values[:, 10].astype(np.float32), templates, medias, p1, p2, label, files)


class IJBFaces(FaceImages):
    """IJB images (``loose_crop/<name>``) aligned to 112x112 by their 5 points, as eval_ijbc.py
    aligns them; keys are meta rows."""

    def __init__(self, meta: IJBMeta, keys: Sequence[int] | None = None, masks: Any = None,
                 transform: Callable | None = None) -> None:
        super().__init__(None, masks, transform,
                         keys if keys is not None else np.arange(len(meta.names)))
        self.meta = meta

    def image(self, key: int) -> np.ndarray:
        from skimage.transform import SimilarityTransform
        path = self.meta.image_dir / self.meta.names[key]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        where = f"row {key + 1} of {self.meta.files['name_5pts_score']}"
        if img is None:
            raise MetaError(f"{path}: missing or undecodable image ({where})")
        transform = SimilarityTransform.from_estimate(self.meta.points5[key], _TEMPLATE)
        if not transform:
            raise MetaError(f"{where}: the 5 points of {self.meta.names[key]} do not define an "
                            "alignment")
        return cv2.cvtColor(cv2.warpAffine(img, transform.params[:2], (112, 112), borderValue=0.0),
                            cv2.COLOR_BGR2RGB)


def ijb_image_features(model: nn.Module, meta: IJBMeta, settings: EmbedSettings | None = None,
                       desc: str = "IJB") -> np.ndarray:
    """float32 [N, D] of every image: (image + flip) * faceness, upstream's F2 + D1 mode, in float32
    like upstream. ``settings`` default: ``EmbedSettings(batch_size=128)``, eval_ijbc.py's batch."""
    s = given_settings(settings, EmbedSettings, batch_size=_BATCH_SIZE)
    return image_features(embed(model, IJBFaces(meta), s, desc=desc), meta.faceness)


def image_features(views: np.ndarray, faceness: np.ndarray) -> np.ndarray:
    """(image + flip) * faceness of embeddings [2, N, D] in float32 (upstream's arithmetic)."""
    return (views[0] + views[1]) * faceness[:, np.newaxis]


def template_features(img_feats: np.ndarray, templates: np.ndarray,
                      medias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upstream ``image2template_feature``: mean per media, sum per template, L2 normalise.

    Returns (float64 [T, D], sorted unique template ids). Same arithmetic in the same order as
    upstream (float32 media means and sums), grouped by one sort instead of a scan per template.
    """
    if not len(img_feats) == len(templates) == len(medias):
        raise FSEError(f"{len(img_feats)} features for {len(templates)} template and {len(medias)} "
                       "media ids")
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


def _template_index(unique_templates: np.ndarray, ids: np.ndarray) -> np.ndarray:
    index = np.searchsorted(unique_templates, ids)
    bad = (index >= len(unique_templates)) | (unique_templates[np.minimum(index, len(unique_templates) - 1)] != ids)
    if bad.any():
        raise FSEError(f"pair {int(np.argmax(bad))}: template {ids[np.argmax(bad)]} has no feature")
    return index


def pair_scores(template_feats: np.ndarray, unique_templates: np.ndarray, p1: np.ndarray,
                p2: np.ndarray, template_feats2: np.ndarray | None = None,
                unique_templates2: np.ndarray | None = None, chunk: int = 100000) -> np.ndarray:
    """Cosine score per template pair (upstream ``verification``); ``template_feats2`` (optional)
    holds the second templates of the pairs, e.g. occluded probes against clean references."""
    if template_feats2 is None:
        template_feats2, unique_templates2 = template_feats, unique_templates
    i1 = _template_index(unique_templates, p1)
    i2 = _template_index(unique_templates2, p2)
    score = np.zeros(len(p1))
    for s in range(0, len(p1), chunk):
        score[s:s + chunk] = np.sum(template_feats[i1[s:s + chunk]] * template_feats2[i2[s:s + chunk]], -1)
    return score


def _roc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(FPR, TPR) of sklearn's ROC flipped as upstream flips it, and the AUC: one ``roc_curve`` (a
    sort of every pair score, 15.7M on IJB-C) for both the TAR table and the ROC figure."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return np.flipud(fpr), np.flipud(tpr), float(auc(fpr, tpr))


def _tar_at(fpr: np.ndarray, tpr: np.ndarray, fars: Sequence[float]) -> np.ndarray:
    return np.array([tpr[np.argmin(np.abs(fpr - far))] for far in fars])


def tar_at_far(labels: np.ndarray, scores: np.ndarray,
               fars: Sequence[float] = IJB_FARS) -> tuple[np.ndarray, float]:
    """(TAR at each FAR, AUC) from sklearn's ROC, taking the point whose FPR is nearest each
    FAR - upstream's pick, ties to the higher threshold index of the flipped curve, i.e. ``argmin``
    after ``flipud``."""
    fpr, tpr, roc_auc = _roc(labels, scores)
    return _tar_at(fpr, tpr, fars), roc_auc


def roc_colours(n_colours: int, colour_map: str) -> list[tuple[float, float, float]]:
    """``n_colours`` RGB colours spread over a matplotlib colour map, as menpo's
    ``sample_colours_from_colourmap`` gives them: what the patched eval_ijbc.py colours its ROC
    curves with when menpo (unmaintained, built from an sdist) is not installed."""
    import matplotlib
    cmap = matplotlib.colormaps[colour_map]
    return [tuple(cmap(i / n_colours)[:3]) for i in range(n_colours)]


def _plot_roc(fpr: np.ndarray, tpr: np.ndarray, roc_auc: float, name: str, path: Path,
              title: str) -> Path:
    """Upstream's ROC figure (log FPR 1e-6..0.1, TPR 0.3..1, AUC in the legend) of the flipped
    curve."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure()
    plt.plot(fpr, tpr, color=roc_colours(1, "Set2")[0], lw=1,
             label=f"[{name} (AUC = {roc_auc * 100:0.4f} %)]")
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
    atomic_figure(fig, path, bbox_inches="tight")
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


def _meta(root: str | os.PathLike | IJBMeta, target: str | None) -> IJBMeta:
    """The meta of ``root`` (read, target default IJBC) or ``root`` itself, whose target must be
    ``target``."""
    if not isinstance(root, IJBMeta):
        return read_ijb_meta(root, "IJBC" if target is None else target)
    if target is not None and str(target).upper() != root.target:
        raise FSEError(f"target: {target!r} asked for, but the meta given is {root.target}'s")
    return root


def _fars(fars: Sequence[float]) -> list[float]:
    if isinstance(fars, (str, bytes)) or not isinstance(fars, Sequence) or not len(fars):
        raise FSEError(f"fars: expected a non-empty list of FARs in (0, 1), got {fars!r}")
    return [checks.open_fraction(f, f"fars[{i}]") for i, f in enumerate(fars)]


def evaluate_ijb(model: nn.Module, root: str | os.PathLike | IJBMeta,
                 settings: EmbedSettings | None = None, target: str | None = None,
                 out_dir: str | os.PathLike | None = None, name: str = "model",
                 fars: Sequence[float] = IJB_FARS) -> IJBResult:
    """IJB-B/C 1:1 verification of the set at ``root`` (``target`` IJBB or IJBC, default IJBC) or of
    an ``IJBMeta`` already read; TAR at each of ``fars``. ``settings`` as ``ijb_image_features``.
    With ``out_dir``, saves ``<target>.npy`` scores (as upstream) and a ROC PNG."""
    fars = _fars(fars)
    s = given_settings(settings, EmbedSettings, batch_size=_BATCH_SIZE)
    meta = _meta(root, target)
    feats = ijb_image_features(model, meta, s, meta.target)
    tfeats, unique_templates = template_features(feats, meta.templates, meta.medias)
    scores = pair_scores(tfeats, unique_templates, meta.p1, meta.p2)
    fpr, tpr, roc_auc = _roc(meta.labels, scores)
    result = IJBResult(name, meta.target, len(meta.names), len(unique_templates), len(scores), fars,
                       _tar_at(fpr, tpr, fars).tolist(), roc_auc)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        result.scores_path = str(atomic_npy(out_dir / f"{meta.target.lower()}.npy", scores))
        result.roc_path = str(_plot_roc(fpr, tpr, roc_auc, name,
                                        out_dir / f"{meta.target.lower()}_roc.png",
                                        f"ROC on {meta.target}"))
    return result
