"""What every CAM method is fed: faces as model inputs, label maps checked, batched forwards.

Faces come as uint8 RGB ``[N,H,W,3]`` (as packs and recs store them) or as normalised float
``[N,3,H,W]``; uint8 faces are normalised chunk by chunk (``fse_plugin.common.to_input``,
arcface_torch's normalisation), so a whole pack never exists as float in memory.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from fse_plugin.common import FSEError, checks, mixed_precision, model_device, to_input, to_uint8
from fse_plugin.labels import IGNORE_INDEX, NUM_CLASSES

__all__ = ["IGNORE", "as_input", "as_images", "as_masks", "batched_forward", "picture_images"]

IGNORE = IGNORE_INDEX
"""Mask value of pixels without a class (``labels.IGNORE_INDEX``: no region, painted 0 in FS-CAM
maps)."""


def as_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Model input: uint8 RGB ``[N,H,W,3]`` is normalised as arcface_torch does; float ``[N,3,H,W]``
    is taken as already normalised to [-1, 1]."""
    t = torch.as_tensor(images)
    if t.dtype == torch.uint8 and t.ndim == 4 and t.shape[3] == 3:
        return to_input(t)
    if not t.is_floating_point() or t.ndim != 4 or t.shape[1] != 3:
        raise FSEError("images must be uint8 [N,H,W,3] or normalised float [N,3,H,W], got "
                       f"{t.dtype} {tuple(t.shape)}")
    return t


def as_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Images as a tensor, not yet normalised (uint8 faces are normalised chunk by chunk)."""
    return (images if isinstance(images, torch.Tensor)
            else torch.from_numpy(np.ascontiguousarray(images)))


def picture_images(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 NHWC for pictures; normalised float NCHW inputs are mapped back."""
    t = torch.as_tensor(images)
    return t.numpy() if t.dtype == torch.uint8 else to_uint8(as_input(t))


def as_masks(masks: np.ndarray | torch.Tensor, shape: Sequence[int] | None = None,
             where: str = "masks") -> torch.Tensor:
    """Label maps ``[N,H,W]`` as int64, checked: values 0..24 or 255 (ignore), shape ``shape`` if
    given."""
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    if m.ndim != 3 or m.is_floating_point() or m.is_complex():
        raise FSEError(f"{where}: expected integer label maps [N,H,W], got {m.dtype} "
                       f"{tuple(m.shape)}")
    if shape is not None and tuple(m.shape) != tuple(shape):
        raise FSEError(f"{where}: shape {tuple(m.shape)} does not match the images {tuple(shape)}")
    m = m.long()
    bad = ((m >= NUM_CLASSES) & (m != IGNORE)) | (m < 0)
    if bool(bad.any()):
        i = int(bad.flatten(1).any(1).nonzero()[0, 0])
        raise FSEError(f"{where}: mask {i} holds label {int(m[i][bad[i]][0])}, expected "
                       f"0..{NUM_CLASSES - 1} or {IGNORE}")
    return m


@torch.no_grad()
def batched_forward(model: nn.Module, x: torch.Tensor | np.ndarray, batch_size: int = 256,
                    precision: str = "fp32") -> torch.Tensor:
    """``model(x)`` in batches on the model's device (under autocast for 'bf16' / 'fp16'); float32
    outputs stay on that device. ``x`` as ``as_input`` takes it; uint8 faces are normalised batch by
    batch (no float copy of all)."""
    checks.count(batch_size, "batch_size")
    dev = model_device(model)
    x = as_images(x)
    outs = []
    for i in range(0, len(x), batch_size):
        with mixed_precision(dev, precision):
            out = model(as_input(x[i:i + batch_size]).to(dev, non_blocking=True))
        outs.append(out.float())
    return torch.cat(outs)
