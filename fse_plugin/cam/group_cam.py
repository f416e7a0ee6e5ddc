"""Group-CAM (Zhang et al. 2021) as a pytorch-grad-cam ``BaseCAM``, written here because the library
lacks it.

The library's hooks, target handling, per-layer loop and final scaling are reused; Group-CAM only
replaces ``get_cam_image``, in two steps: ``group_masks`` (gradient-weighted feature maps summed per
channel group, denoised, upsampled, min-max scaled) and ``weigh_masks`` (each mask scored by how
much it restores the target over a blurred baseline). Importing this module imports
pytorch-grad-cam.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam.base_cam import BaseCAM
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from fse_plugin.cam.inputs import batched_forward
from fse_plugin.common import checks

__all__ = ["GroupCAM"]


class GroupCAM(BaseCAM):
    """Saliency = ReLU(sum_g w_g M_g) over ``groups`` channel-group masks M_g of the target layer.

    M_g: the sum over group g of ``alpha_c * A_c`` (alpha = spatial mean of the gradient), ReLU,
    values under the ``percentile``-th percentile zeroed (the paper's denoising), upsampled to the
    input and min-max normalised. w_g: score of ``x * M_g + blur(x) * (1 - M_g)`` minus the score of
    the blurred baseline (Gaussian, k=51, sigma=50: the reference's setting).
    """

    def __init__(self, model: nn.Module, target_layers: list[nn.Module], groups: int = 32,
                 blur_kernel: int = 51, blur_sigma: float = 50.0, percentile: float = 70.0,
                 batch_size: int = 64) -> None:
        checks.count(groups, "Group-CAM groups")
        checks.count(blur_kernel, "Group-CAM blur_kernel")
        checks.number(blur_sigma, "Group-CAM blur_sigma", 0, lo_open=True)
        checks.number(percentile, "Group-CAM percentile", 0, 100)
        checks.count(batch_size, "Group-CAM batch_size")
        super().__init__(model, target_layers)
        self.groups, self.blur_kernel, self.blur_sigma = groups, blur_kernel, blur_sigma
        self.percentile, self.batch_size = percentile, batch_size

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """The baseline: Gaussian blur, kernel shrunk to fit small images (reflect padding)."""
        k = min(self.blur_kernel, 2 * min(x.shape[-2:]) - 1)
        k -= 1 - k % 2
        return gaussian_blur(x, [k, k], [self.blur_sigma, self.blur_sigma])

    def group_masks(self, activations: np.ndarray, grads: np.ndarray,
                    size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masks [B,G,H,W] in [0, 1], valid [B,G])``; a flat group map (all zero) is not
        valid."""
        acts = torch.from_numpy(np.asarray(activations)).float()
        alpha = torch.from_numpy(np.asarray(grads)).float().mean((2, 3), keepdim=True)
        groups = min(self.groups, acts.shape[1])
        # [B,G,h,w]
        gmaps = torch.stack([c.sum(1) for c in (alpha * acts).tensor_split(groups, 1)], 1).relu()
        thr = torch.quantile(gmaps.flatten(2), self.percentile / 100.0, dim=2)[..., None, None]
        gmaps = torch.where(gmaps > thr, gmaps, torch.zeros_like(gmaps))
        up = F.interpolate(gmaps, size=size, mode="bilinear", align_corners=False)
        lo, hi = up.flatten(2).amin(2)[..., None, None], up.flatten(2).amax(2)[..., None, None]
        masks = (up - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        return masks, (hi > lo)[..., 0, 0]

    @torch.no_grad()
    def weigh_masks(self, x: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor,
                    targets: Sequence[Callable]) -> torch.Tensor:
        """Saliency ``[B,H,W]``: each valid mask weighted by its score gain over the blurred
        image."""
        sal = torch.zeros(len(x), *x.shape[-2:])
        base = self.blur(x)
        for b in range(len(x)):
            mk = masks[b][valid[b]].to(x.device)[:, None]
            if not len(mk):
                continue
            blended = x[b:b + 1] * mk + base[b:b + 1] * (1 - mk)
            out = batched_forward(self.model, torch.cat([base[b:b + 1], blended]), self.batch_size)
            self.activations_and_grads.activations.clear()  # the hooks also saw these forwards
            s = targets[b](out).float().cpu()
            sal[b] = ((s[1:] - s[0])[:, None, None] * mk[:, 0].cpu()).sum(0)
        return sal.relu()

    def get_cam_image(self, input_tensor: torch.Tensor, target_layer: nn.Module,
                      targets: Sequence[Callable], activations: np.ndarray, grads: np.ndarray,
                      eigen_smooth: bool = False) -> np.ndarray:
        x = input_tensor.detach()
        masks, valid = self.group_masks(activations, grads, tuple(x.shape[-2:]))
        return self.weigh_masks(x, masks, valid, targets).numpy()

    def __repr__(self) -> str:
        return (f"GroupCAM(groups={self.groups}, blur=({self.blur_kernel}, {self.blur_sigma:g}), "
                f"percentile={self.percentile:g})")
