"""The region methods: FS-CAM (keep one region) and region ablation (erase one region).

FS-CAM asks, for each of the 25 face-parsing regions, how much of the model's score survives when
only that region is kept: ``x_k = x * mask_k`` (everything else 0 in normalised space), ``s_k`` the
target's score of ``x_k``, the map ``sum_k mask_k * s_k`` min-max normalised per image. Ablation is
its complement: erase region k (FSErasing's erasure) and measure the drop of the score. Both send
the clean image and one variant per present region through the model in one batch.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fse_plugin.cam.inputs import IGNORE, as_images, as_input, as_masks, batched_forward
from fse_plugin.cam.targets import ClassTarget, Target, check_target
from fse_plugin.common import model_device
from fse_plugin.erasing import check_fill, erase
from fse_plugin.labels import NUM_CLASSES

__all__ = ["normalise_scores", "paint", "fs_cam", "region_ablation"]

Variant = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``variant(images [V,3,H,W], masks [V,H,W], class ids [V])`` -> the images the model scores."""


def normalise_scores(scores: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Per-image min-max over the present regions (NaN = absent stays NaN); a flat row becomes 0."""
    s = torch.as_tensor(scores).float()
    lo = torch.where(s.isnan(), torch.inf, s).amin(1, keepdim=True)
    hi = torch.where(s.isnan(), -torch.inf, s).amax(1, keepdim=True)
    rng = hi - lo
    out = (s - lo) / torch.where(rng > 0, rng, torch.ones_like(rng))
    return torch.where((rng > 0) | s.isnan(), out, torch.zeros_like(out))


def paint(values: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Region values ``[N,25]`` -> piecewise-constant maps ``[N,H,W]`` (ignore pixels 0)."""
    table = torch.cat([values.float().nan_to_num(0.0), torch.zeros(len(values), 1)], 1)
    idx = torch.where(masks == IGNORE, NUM_CLASSES, masks).long()
    return table.gather(1, idx.flatten(1).cpu()).view(idx.shape)


def _present_regions(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(image index, class id) of every region present in each image of the chunk."""
    present = (m[:, None] == torch.arange(NUM_CLASSES, device=m.device)[None, :, None, None]).flatten(2).any(2)
    return present.nonzero(as_tuple=True)


def _keep_region(x: torch.Tensor, m: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """FS-CAM's variant: region ``cls`` kept, everything else 0 (grey) in normalised space."""
    return x * (m == cls[:, None, None])[:, None]


@torch.no_grad()
def _score_regions(model: nn.Module, images: torch.Tensor | np.ndarray,
                   masks: torch.Tensor | np.ndarray, target: Target | None, batch_size: int,
                   precision: str,
                   variant: Variant) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loop shared by FS-CAM and ablation: per chunk of ~batch_size/26 images, the clean images and
    ``variant(images, masks, class)`` of every present region go through the model in one batch.
    Returns (clean scores [N], region scores [N,25] with NaN where absent, masks)."""
    x = as_images(images)
    m = as_masks(masks, (len(x), *as_input(x[:1]).shape[2:]))
    target = ClassTarget() if target is None else target
    check_target(target, len(x))
    dev = model_device(model)
    clean = torch.empty(len(x))
    scores = torch.full((len(x), NUM_CLASSES), float("nan"))
    per_chunk = max(1, batch_size // (NUM_CLASSES + 1))
    for s in range(0, len(x), per_chunk):
        xb, mb = as_input(x[s:s + per_chunk]).to(dev).float(), m[s:s + per_chunk].to(dev)
        n = len(xb)
        img, cls = _present_regions(mb)
        out = batched_forward(model, torch.cat([xb, variant(xb[img], mb[img], cls)]), batch_size,
                              precision)
        t = target.take(slice(s, s + n)).resolve(out[:n])
        clean[s:s + n] = t.score(out[:n], torch.arange(n, device=dev)).cpu()
        scores[s + img.cpu(), cls.cpu()] = t.score(out[n:], img).cpu()
    return clean, scores, m


def fs_cam(model: nn.Module, images: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray,
           target: Target | None = None, batch_size: int = 260,
           precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """FS-CAM of each image:
    ``(scores [N,25] float32, NaN where the class is absent; maps [N,H,W])``.

    Per image, the original and one copy per present region (only that region kept, the rest 0 in
    normalised space) go through the model in the same batch (chunks of ~batch_size/26 images), so
    it costs 1 + (present regions) forwards per image. ``s_k`` is the target's score of the copy
    keeping region k (target defaults to the reference: softmax probability of the argmax class);
    the map is ``sum_k mask_k * s_k``, min-max normalised per image, constant within each region.
    Absent classes cost nothing: their score would be that of an all-zero image in every region.
    """
    _, scores, m = _score_regions(model, images, masks, target, batch_size, precision, _keep_region)
    return scores, paint(normalise_scores(scores), m)


def region_ablation(model: nn.Module, images: torch.Tensor | np.ndarray,
                    masks: torch.Tensor | np.ndarray, target: Target | None = None,
                    fill: str | float = 0.0, batch_size: int = 260, seed: int = 0,
                    precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Complement of FS-CAM: ``(drops [N,25], NaN where absent; maps [N,H,W])``.

    ``drop_k = s(x) - s(x with region k erased)``; the erasure is FSErasing's (``erasing.erase`` on
    a batch) with ``fill`` (0.0 = the FS-CAM background; 'random', 'region_mean', ...),
    random fills drawn from a generator seeded with ``seed``. The map is the per-image min-max of
    the drops. Costs 1 + (present regions) forwards per image, like FS-CAM.
    """
    fill = check_fill(fill)
    gen = torch.Generator().manual_seed(seed)

    def erase_region(x: torch.Tensor, m: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        return erase(x, m, F.one_hot(cls, NUM_CLASSES).bool(), fill=fill, generator=gen)

    clean, scores, m = _score_regions(model, images, masks, target, batch_size, precision,
                                      erase_region)
    drops = clean[:, None] - scores
    return drops, paint(normalise_scores(drops), m)
