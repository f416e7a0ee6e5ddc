"""Every CAM method by name, run on a chunk of images to per-region tables and pixel maps."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from fse_plugin.cam.inputs import as_input
from fse_plugin.cam.pixel import PIXEL_METHODS, aggregate_per_region, run_pixel_cam
from fse_plugin.cam.regions import REGION_METHODS, fs_cam, normalise_scores, region_ablation
from fse_plugin.cam.targets import Target, resolve_target

__all__ = ["METHODS", "parse_methods", "run_method"]

METHODS: tuple[str, ...] = REGION_METHODS + PIXEL_METHODS


def parse_methods(methods: str | Sequence[str]) -> list[str]:
    """A comma list or sequence of method names -> known names, lower case, duplicates dropped."""
    items = [m.strip().lower() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    bad = [m for m in items if m not in METHODS]
    if bad or not items:
        raise ValueError(f"unknown CAM methods {bad or methods!r}; known: {', '.join(METHODS)}")
    return list(dict.fromkeys(items))


def run_method(method: str, model: nn.Module, x: torch.Tensor, masks: torch.Tensor, target: Target,
               batch_size: int = 260, amp: bool = False, fill: str | float = 0.0, seed: int = 0,
               cam: Any = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One method on a chunk: (tables {kind: [n,25]}, maps [n,H,W]). ``importance`` is the kind the
    charts use: normalised region score (fscam), normalised drop (ablation), region mean (pixel).
    Pixel methods need their CAM object (``pixel.make_pixel_cam``), made once for all chunks."""
    if method == "fscam":
        scores, maps = fs_cam(model, x, masks, target, batch_size, amp)
        return {"importance": normalise_scores(scores).numpy(), "score": scores.numpy()}, maps.numpy()
    if method == "ablation":
        drops, maps = region_ablation(model, x, masks, target, fill, batch_size, seed, amp)
        return {"importance": normalise_scores(drops).numpy(), "drop": drops.numpy()}, maps.numpy()
    if cam is None:
        raise ValueError(f"pixel method {method!r} needs a CAM object (make_pixel_cam)")
    x = as_input(x)
    maps = run_pixel_cam(cam, x, resolve_target(model, x, target), batch_size=max(1, min(len(x), 16)))
    mean, share = aggregate_per_region(maps, masks)
    return {"importance": mean, "share": share}, maps
