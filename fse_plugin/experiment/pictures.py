"""Pictures a reader can read without the captions: grids of aligned faces with row labels at the
left and, where a row shows label maps, a legend of the class colours (``labels.PALETTE`` /
``labels.CLASSES``) of the classes present. Used by the demo and the study."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fse_plugin import labels

__all__ = ["labelled_grid", "present_classes", "pyplot", "save_figure"]


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str | Path, **savefig) -> Path:
    """Save and close a matplotlib figure through a temporary name (an interrupted run leaves no
    half-written picture); the format follows ``path``'s suffix."""
    from fse_plugin.common.files import atomic_output
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **savefig)
    pyplot().close(fig)
    return path


def labelled_grid(rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str], path: str | Path,
                  classes: Sequence[int] = (), title: str = "") -> Path:
    """Save rows of equally sized RGB tiles as one picture with ``row_labels`` at the left and a
    colour legend of ``classes`` (label ids) below."""
    from matplotlib.patches import Patch
    plt = pyplot()
    grid = np.concatenate([np.concatenate(list(r), 1) for r in rows], 0)
    h = rows[0][0].shape[0]
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
        handles = [Patch(facecolor=labels.PALETTE[c] / 255.0, edgecolor="0.5",
                         label=f"{c} {labels.CLASSES[c]}")
                   for c in classes]
        fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, frameon=False,
                   handlelength=1.2, columnspacing=1.0)
    fig.tight_layout(rect=(0, 0.22 * legend_rows / fig_h, 1, 1))
    return save_figure(fig, path, dpi=100, bbox_inches="tight")  # "tight": long row labels are kept


def present_classes(masks: Sequence[np.ndarray]) -> list[int]:
    """The label ids that occur in ``masks``, ascending."""
    return [int(c) for c in np.unique(np.concatenate([np.ravel(m) for m in masks]))
            if c < labels.NUM_CLASSES]
