"""Pictures of CAM results: overlays (with their colour scale and a legend of the regions shown) and
per-region bar charts with 95% intervals. matplotlib draws to files only (Agg)."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from fse_plugin.cam.inputs import IGNORE
from fse_plugin.cam.stats import RegionStats
from fse_plugin.common.files import atomic_output
from fse_plugin.labels import CLASSES, NUM_CLASSES, PALETTE, colorize

__all__ = ["CMAP", "overlay", "overlay_strip", "overlay_grid_figure", "plot_overlay_grid",
           "plot_region_bars"]

CMAP = "jet"
"""Colormap of every importance map (0 = least important region of the image, 1 = most)."""


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5, cmap: str = CMAP) -> np.ndarray:
    """uint8 RGB picture of ``cam`` (values in [0, 1]) blended over ``image``."""
    from matplotlib import colormaps
    heat = colormaps[cmap](np.clip(np.nan_to_num(cam), 0, 1))[..., :3]
    return (255 * ((1 - alpha) * image.astype(np.float32) / 255 + alpha * heat)).clip(0, 255).astype(np.uint8)


def _mask_picture(mask: np.ndarray) -> np.ndarray:
    return colorize(np.where(mask == IGNORE, 0, mask))


def overlay_strip(images: np.ndarray, masks: np.ndarray, maps: Sequence[np.ndarray]) -> np.ndarray:
    """Rows of [image | colorized mask | overlay per map], one uint8 HWC picture (tensorboard)."""
    rows = [np.concatenate([images[i], _mask_picture(masks[i])] + [overlay(images[i], mp[i]) for mp in maps], 1)
            for i in range(len(images))]
    return np.concatenate(rows, 0)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot as plt
    return plt


def _save_figure(fig, path: str | os.PathLike, title: str) -> Path:
    if title:  # wrapped to the figure's width (a one-panel chart is narrower than its title)
        chars = max(20, int(fig.get_figwidth() * 72 / (0.6 * 9)))
        fig.suptitle(textwrap.fill(title, chars), fontsize=9)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    _pyplot().close(fig)
    return Path(path)


def _add_colour_bar(fig, axes) -> None:
    """The importance scale of the overlays: the colormap from 0 to 1 beside the map columns."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), CMAP), ax=axes, fraction=0.05, aspect=40,
                       pad=0.02)
    bar.set_label("importance (per image: 0 least, 1 most)", fontsize=7)
    bar.ax.tick_params(labelsize=6)


def _add_region_legend(fig, masks: np.ndarray) -> None:
    """Colour key of the regions present in the shown masks, under the grid."""
    from matplotlib.patches import Patch
    present = [k for k in range(NUM_CLASSES) if (masks == k).any()]
    handles = [Patch(facecolor=PALETTE[k] / 255, edgecolor="0.5", linewidth=0.3, label=CLASSES[k])
               for k in present]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=6,
               title="mask regions", title_fontsize=7, frameon=False, handlelength=1.2,
               columnspacing=1.0)


def overlay_grid_figure(images: np.ndarray, masks: np.ndarray, maps: Mapping[str, np.ndarray],
                        row_labels: Sequence[str] | None = None):
    """The matplotlib figure of ``plot_overlay_grid`` (one row per image: image, mask, each method's
    map over the image), with the maps' colour bar and a legend of the mask's regions."""
    plt = _pyplot()
    cols = ["image", "mask", *maps]
    n = len(images)
    legend_rows = -(-len(np.setdiff1d(np.unique(masks), [IGNORE])) // 5)
    fig, axes = plt.subplots(n, len(cols),
                             figsize=(1.6 * len(cols) + 0.9, 1.7 * n + 0.6 + 0.2 * legend_rows),
                             squeeze=False, layout="constrained")
    for i in range(n):
        pics = [images[i], _mask_picture(masks[i])] + [overlay(images[i], mp[i]) for mp in maps.values()]
        for j, pic in enumerate(pics):
            ax = axes[i, j]
            ax.imshow(pic)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=8)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=7)
    if maps:
        _add_colour_bar(fig, axes[:, 2:])
    _add_region_legend(fig, masks)
    return fig


def plot_overlay_grid(images: np.ndarray, masks: np.ndarray, maps: Mapping[str, np.ndarray],
                      path: str | os.PathLike, row_labels: Sequence[str] | None = None,
                      title: str = "") -> Path:
    """PNG grid: one row per image, columns image, mask, then each method's map over the image;
    a colour bar gives the maps' scale and a legend names the mask's regions."""
    return _save_figure(overlay_grid_figure(images, masks, maps, row_labels), path, title)


def plot_region_bars(stats: Mapping[str, Mapping[str, RegionStats]], path: str | os.PathLike,
                     title: str = "", xlabel: str = "importance") -> Path:
    """Per-region bar chart with 95% intervals: ``stats[method][series]`` -> one panel per method,
    one bar colour per series (one model, or two models side by side)."""
    plt = _pyplot()
    methods = list(stats)
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 7.0), squeeze=False,
                             sharey=True)
    y = np.arange(NUM_CLASSES)
    for ax, method in zip(axes[0], methods):
        series = stats[method]
        h = 0.8 / max(1, len(series))
        for j, (name, st) in enumerate(series.items()):
            mean = np.asarray(st.mean, np.float64)
            err = np.abs(np.stack([mean - st.lo, st.hi - mean]))
            ax.barh(y + (j - (len(series) - 1) / 2) * h, np.nan_to_num(mean), height=h, label=name,
                    xerr=np.nan_to_num(err), capsize=1.5, error_kw={"elinewidth": 0.7})
        ax.set_title(method, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.axvline(0, color="k", lw=0.5)
        if len(series) > 1:
            ax.legend(fontsize=7)
    axes[0, 0].set_yticks(y)
    axes[0, 0].set_yticklabels(CLASSES, fontsize=7)
    axes[0, 0].invert_yaxis()
    return _save_figure(fig, path, title)
