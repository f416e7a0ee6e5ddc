"""The demo's pictures: labelled grids a reader can read without the captions, and the ROC.

Grids of aligned faces carry their row labels at the left and, where a row shows label maps, a
legend of the class colours (``labels.PALETTE`` / ``labels.CLASSES``) of the classes present.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from fse_plugin import labels
from fse_plugin.common import to_input, to_uint8

__all__ = ["labelled_grid", "erased_samples", "parser_vs_truth", "pack_roc"]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def labelled_grid(rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str], path: str | Path,
                  classes: Sequence[int] = (), title: str = "") -> Path:
    """Save rows of equally sized RGB tiles as one picture with ``row_labels`` at the left and a colour
    legend of ``classes`` (label ids) below."""
    from matplotlib.patches import Patch
    plt = _pyplot()
    grid = np.concatenate([np.concatenate(list(r), 1) for r in rows], 0)
    h, w = rows[0][0].shape[:2]
    legend_rows = -(-len(classes) // 5)
    fig_w = 1.6 + grid.shape[1] / 80
    fig_h = 0.4 + grid.shape[0] / 80 + 0.22 * legend_rows
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    ax.imshow(grid, interpolation="nearest")
    ax.set_yticks([(i + 0.5) * h for i in range(len(rows))], list(row_labels))
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    if classes:
        handles = [Patch(facecolor=labels.PALETTE[c] / 255.0, edgecolor="0.5", label=f"{c} {labels.CLASSES[c]}")
                   for c in classes]
        fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, frameon=False, handlelength=1.2,
                   columnspacing=1.0)
    fig.tight_layout(rect=(0, 0.22 * legend_rows / fig_h, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _present(masks: Sequence[np.ndarray]) -> list[int]:
    return [int(c) for c in np.unique(np.concatenate([np.ravel(m) for m in masks])) if c < labels.NUM_CLASSES]


def _rec_faces(rec_dir: Path, n: int) -> tuple[list[int], list[np.ndarray]]:
    """``n`` evenly spaced image keys of the rec and their faces."""
    from fse_plugin import recordio
    reader = recordio.open_rec(rec_dir)
    keys = recordio.image_index(reader).keys
    picks = [int(keys[i]) for i in np.linspace(0, len(keys) - 1, n).round().astype(int)]
    return picks, [recordio.decode_image(recordio.unpack(reader.read(k))[1]) for k in picks]


def erased_samples(rec_dir: Path, masks_path: Path, path: Path, n: int = 8, seed: int = 0) -> Path:
    """Faces of the rec, their cached masks and two FSErasing draws each (1-3 regions, present ones)."""
    from fse_plugin.erasing import FSErasing
    from fse_plugin.maskcache import MaskCache

    cache = MaskCache(masks_path)
    gen = torch.Generator().manual_seed(seed)
    eraser = FSErasing(p=1.0, n_erase=(1, 3), classes=list(range(1, labels.NUM_CLASSES)), present_only=True)
    keys, faces = _rec_faces(Path(rec_dir), n)
    masks = [cache.get(k) for k in keys]
    draws = [[to_uint8(eraser(to_input(img), torch.from_numpy(m), generator=gen)) for img, m in zip(faces, masks)]
             for _ in range(2)]
    return labelled_grid([faces, [labels.colorize(m) for m in masks], *draws],
                         ["face", "cached mask", "erased, draw 1", "erased, draw 2"], path, _present(masks),
                         "FSErasing on training faces (masks from the demo's parser)")


def parser_vs_truth(rec_dir: Path, masks_path: Path, path: Path, n: int = 8) -> tuple[Path, dict[str, float]]:
    """Faces, ground truth and cached parser masks; plus per-class F1 of the whole cache against the
    synthetic ground truth (the parser's accuracy on the actual training data)."""
    from fse_plugin.maskcache import MaskCache
    from fse_plugin.parsing import ParserMetrics, confusion_matrix

    gt = np.load(Path(rec_dir) / "gt_masks.npz")
    cache = MaskCache(masks_path)
    truth = dict(zip(gt["keys"].tolist(), gt["masks"]))
    pred = np.stack([cache.get(int(k)) for k in gt["keys"]])
    scores = ParserMetrics.from_confusion(confusion_matrix(pred, gt["masks"]))
    keys, faces = _rec_faces(Path(rec_dir), n)
    shown_truth, shown_pred = [truth[k] for k in keys], [cache.get(k) for k in keys]
    labelled_grid([faces, [labels.colorize(m) for m in shown_truth], [labels.colorize(m) for m in shown_pred]],
                  ["face", "ground truth", "parser"], path, _present(shown_truth + shown_pred),
                  f"the demo's parser on training faces (mean F1 {scores.mean_f1:.3f} over the rec)")
    return Path(path), {"mean_f1": float(scores.mean_f1), "mean_iou": float(scores.mean_iou),
                        "pixel_accuracy": float((pred == gt["masks"]).mean())}


def pack_roc(models: Mapping[str, nn.Module], images: np.ndarray, issame: np.ndarray, path: Path) -> Path:
    """ROC of cosine scores on a pack, one curve per model."""
    from sklearn.metrics import auc, roc_curve

    from fse_plugin.evaluation import embed, fuse_views
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, model in models.items():
        emb = fuse_views(embed(model, images, progress=False))
        scores = (emb[0::2] * emb[1::2]).sum(1)
        fpr, tpr, _ = roc_curve(issame.astype(int), scores)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr) * 100:.2f}%)")
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.grid(ls="--", lw=0.5)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
