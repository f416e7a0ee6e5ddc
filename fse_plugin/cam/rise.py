"""RISE (Petsiuk et al., BMVC 2018): saliency from randomly masked copies of the image.

Written here because pytorch-grad-cam has no RISE; it is perturbation-based (no hooks, no
gradients), so it is not a BaseCAM, but it is called like one:
``RISE(model)(input_tensor, targets)`` -> ``[N,H,W]`` maps in [0, 1], and it is a context manager
like the library's CAMs.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fse_plugin.cam.inputs import batched_forward
from fse_plugin.cam.targets import ClassTarget, Target
from fse_plugin.common import checks, model_device

__all__ = ["RISE"]


class RISE:
    """Saliency = E[score(x * M) * M] / p1 over ``n_masks`` random masks M (the paper's estimator).

    Masks: an s x s grid of Bernoulli(p1) cells, bilinearly upsampled to (s+1) cells of ceil(H/s)
    pixels, randomly shifted by up to one cell and cropped to H x W; masked inputs are ``x * M`` in
    normalised space (0 = grey), as in the paper. Only the small grids and shifts are stored
    (seeded), masks are built per batch, so N=8000 costs no memory; every image sees the same masks.
    Defaults are the reference's settings (N=8000, s=7, p1=0.1).
    """

    def __init__(self, model: nn.Module, n_masks: int = 8000, s: int = 7, p1: float = 0.1,
                 batch_size: int = 256, seed: int = 0, precision: str = "fp32") -> None:
        checks.count(n_masks, "RISE n_masks")
        checks.count(s, "RISE s")
        checks.number(p1, "RISE p1", 0, 1, lo_open=True)
        checks.count(batch_size, "RISE batch_size")
        self.model, self.n_masks, self.s, self.p1 = model, n_masks, s, p1
        self.batch_size, self.precision = batch_size, precision
        g = torch.Generator().manual_seed(seed)
        self.grids = (torch.rand(n_masks, 1, s, s, generator=g) < p1).float()
        self.shifts = torch.rand(n_masks, 2, generator=g)

    def masks(self, i: int, j: int, size: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Masks i..j-1 at ``size``, ``[j-i,1,H,W]``."""
        h, w = size
        ch, cw = math.ceil(h / self.s), math.ceil(w / self.s)
        up = F.interpolate(self.grids[i:j].to(device), size=((self.s + 1) * ch, (self.s + 1) * cw),
                           mode="bilinear", align_corners=False)
        dy = (self.shifts[i:j, 0] * ch).long().tolist()
        dx = (self.shifts[i:j, 1] * cw).long().tolist()
        return torch.stack([up[k, :, y:y + h, x:x + w] for k, (y, x) in enumerate(zip(dy, dx))])

    def saliency(self, x: torch.Tensor, targets: Sequence[Callable]) -> torch.Tensor:
        """Unscaled saliency ``[N,H,W]``: the score-weighted sum of the masks over all mask
        batches."""
        sal = torch.zeros(len(x), *x.shape[2:], device=x.device)
        for i in range(0, self.n_masks, self.batch_size):
            mk = self.masks(i, min(i + self.batch_size, self.n_masks), tuple(x.shape[2:]), x.device)
            for b in range(len(x)):
                out = batched_forward(self.model, x[b:b + 1] * mk, self.batch_size, self.precision)
                sal[b] += (targets[b](out).float()[:, None, None] * mk[:, 0]).sum(0)
        return sal / (self.n_masks * self.p1)

    @torch.no_grad()
    def __call__(self, input_tensor: torch.Tensor,
                 targets: Sequence[Callable] | Target | None = None) -> np.ndarray:
        from pytorch_grad_cam.utils.image import scale_cam_image  # the library's per-image min-max
        x = input_tensor.to(model_device(self.model))
        if targets is None:
            targets = ClassTarget().resolve(batched_forward(self.model, x, self.batch_size,
                                                            self.precision))
        return scale_cam_image(self.saliency(x, targets).cpu().numpy())

    def __enter__(self) -> "RISE":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def __repr__(self) -> str:
        return f"RISE(n_masks={self.n_masks}, s={self.s}, p1={self.p1})"
