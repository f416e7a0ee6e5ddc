"""The demo's pictures: erased training samples and the parser against ground truth as labelled
grids (row labels, class-colour legend: ``experiment.pictures.labelled_grid``), and the ROC."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from fse_plugin import labels
from fse_plugin.common import to_input, to_uint8
from fse_plugin.experiment.pictures import labelled_grid, present_classes, pyplot, save_figure

__all__ = ["erased_samples", "parser_vs_truth", "pack_roc"]


def _rec_faces(rec_dir: Path, n: int) -> tuple[list[int], list[np.ndarray]]:
    """``n`` evenly spaced image keys of the rec and their faces."""
    from fse_plugin import recordio
    reader = recordio.open_rec(rec_dir)
    keys = recordio.image_index(reader).keys
    picks = [int(keys[i]) for i in np.linspace(0, len(keys) - 1, n).round().astype(int)]
    return picks, [reader.read_image(k) for k in picks]


def erased_samples(rec_dir: Path, masks_path: Path, path: Path, n: int = 8, seed: int = 0) -> Path:
    """Faces of the rec, their cached masks and two FSErasing draws each (1-3 regions, present
    ones)."""
    from fse_plugin.erasing import FSErasing
    from fse_plugin.maskcache import MaskCache

    cache = MaskCache(masks_path)
    gen = torch.Generator().manual_seed(seed)
    eraser = FSErasing(p=1.0, n_erase=(1, 3), classes=list(range(1, labels.NUM_CLASSES)),
                       present_only=True)
    keys, faces = _rec_faces(Path(rec_dir), n)
    masks = [cache.get(k) for k in keys]
    draws = [[to_uint8(eraser(to_input(img), torch.from_numpy(m), generator=gen))
              for img, m in zip(faces, masks)]
             for _ in range(2)]
    return labelled_grid([faces, [labels.colorize(m) for m in masks], *draws],
                         ["face", "cached mask", "erased, draw 1", "erased, draw 2"], path,
                         present_classes(masks),
                         "FSErasing on training faces (masks from the demo's parser)")


def parser_vs_truth(rec_dir: Path, masks_path: Path, path: Path,
                    n: int = 8) -> tuple[Path, dict[str, float]]:
    """Faces, ground truth and cached parser masks; plus per-class F1 of the whole cache against the
    synthetic ground truth (the parser's accuracy on the actual training data)."""
    from fse_plugin.maskcache import MaskCache
    from fse_plugin.parsing import ParserMetrics, confusion_matrix

    # each gt[...] decompresses the array again: read once
    with np.load(Path(rec_dir) / "gt_masks.npz") as gt:
        gt_keys, truth = gt["keys"].tolist(), gt["masks"]
    cache = MaskCache(masks_path)
    pred = np.stack([cache.get(k) for k in gt_keys])
    scores = ParserMetrics.from_confusion(confusion_matrix(pred, truth))
    keys, faces = _rec_faces(Path(rec_dir), n)
    rows = [gt_keys.index(k) for k in keys]
    shown_truth, shown_pred = [truth[i] for i in rows], [pred[i] for i in rows]
    labelled_grid([faces, [labels.colorize(m) for m in shown_truth],
                   [labels.colorize(m) for m in shown_pred]],
                  ["face", "ground truth", "parser"], path,
                  present_classes(shown_truth + shown_pred),
                  f"the demo's parser on training faces (mean F1 {scores.mean_f1:.3f} over the "
                  f"rec)")
    return Path(path), {"mean_f1": float(scores.mean_f1), "mean_iou": float(scores.mean_iou),
                        "pixel_accuracy": float((pred == truth).mean())}


def pack_roc(embeddings: Mapping[str, np.ndarray], issame: np.ndarray, path: Path) -> Path:
    """ROC of cosine scores on a pack, one curve per model (its fused, normalised embeddings ``[2P,
    D]``)."""
    from sklearn.metrics import auc, roc_curve
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, emb in embeddings.items():
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
    return save_figure(fig, path, dpi=120)
