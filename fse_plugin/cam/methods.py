"""Every CAM method by name (``names.METHODS``), run on a chunk of images to per-region values and
pixel maps."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fse_plugin.cam.inputs import as_input
from fse_plugin.cam.pixel import aggregate_per_region, run_pixel_cam
from fse_plugin.cam.regions import fs_cam, normalise_scores, region_ablation
from fse_plugin.cam.results import RegionValues
from fse_plugin.cam.targets import Target, resolve_target
from fse_plugin.common import FSEError

if TYPE_CHECKING:
    from fse_plugin.cam.settings import ExplainSettings

__all__ = ["run_method"]


def run_method(method: str, model: nn.Module, x: torch.Tensor, masks: torch.Tensor, target: Target,
               settings: ExplainSettings, cam: Any = None) -> tuple[RegionValues, np.ndarray]:
    """One method on a chunk: (values per image and region, maps [n,H,W]). ``settings`` gives the
    forward batch, precision, ablation fill and seed. Pixel methods need their CAM object
    (``pixel.make_pixel_cam``), made once for all chunks."""
    st = settings
    if method == "fscam":
        scores, maps = fs_cam(model, x, masks, target, st.batch_size, st.precision)
        return RegionValues(normalise_scores(scores).numpy(), scores.numpy(), "score"), maps.numpy()
    if method == "ablation":
        drops, maps = region_ablation(model, x, masks, target, st.fill, st.batch_size, st.seed,
                                      st.precision)
        return RegionValues(normalise_scores(drops).numpy(), drops.numpy(), "drop"), maps.numpy()
    if cam is None:
        raise FSEError(f"pixel method {method!r} needs a CAM object (make_pixel_cam)")
    x = as_input(x)
    maps = run_pixel_cam(cam, x, resolve_target(model, x, target),
                         batch_size=max(1, min(len(x), 16)))
    mean, share = aggregate_per_region(maps, masks)
    return RegionValues(mean, share, "share"), maps
