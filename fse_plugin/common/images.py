"""uint8 RGB faces <-> the normalised [-1, 1] tensors arcface_torch feeds its models.

arcface_torch normalises with ToTensor + Normalize(0.5, 0.5), i.e. ``((x / 255) - 0.5) / 0.5`` in
float32. Every conversion in the plugin goes through here, with exactly those operations, so that
embeddings and erased images match upstream's bit for bit.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["NORM_LUT", "to_input", "to_uint8"]


def to_input(images: np.ndarray | torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 ``[N,H,W,C]`` (or one ``[H,W,C]``) -> float32 ``[N,C,H,W]`` (``[C,H,W]``) in [-1, 1],
    on the input's device.

    ``channels_last=False`` returns a contiguous NCHW tensor (upstream's memory layout, which
    matters for bit-equal convolutions); ``True`` keeps the NHWC memory order of the input (a
    permuted view made float, no extra copy), which is what cuDNN and oneDNN run fastest.
    """
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim not in (3, 4):
        raise ValueError(f"expected uint8 images [N,H,W,C] or [H,W,C], "
                         f"got {x.dtype} {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x.permute(2, 0, 1)
    if not channels_last:
        x = x.contiguous()
    return ((x.float() / 255) - 0.5) / 0.5


NORM_LUT: np.ndarray = (to_input(torch.arange(256, dtype=torch.uint8).view(1, 256, 1)).numpy()
                        .reshape(1, 256))
"""``to_input`` of every uint8 value, as a cv2.LUT table (the dataset's per-channel fast path)."""


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Normalised float ``[N,C,H,W]`` (or ``[C,H,W]``) -> uint8 ``[N,H,W,C]`` (``[H,W,C]``) for
    pictures; values outside [-1, 1] (noise fills) are clipped."""
    if x.ndim not in (3, 4) or not x.is_floating_point():
        raise ValueError(f"expected normalised float images [N,C,H,W] or [C,H,W], "
                         f"got {x.dtype} {tuple(x.shape)}")
    x = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return (x.permute(0, 2, 3, 1) if x.ndim == 4 else x.permute(1, 2, 0)).cpu().numpy()
