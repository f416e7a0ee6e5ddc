"""Batched parser inference: label maps for many aligned faces
(CPU or CUDA, autocast, channels_last).

The same model later labels millions of recognition images (``fse cache build``), so
:func:`predict_masks` is the one inference entry point and :func:`forward_throughput` its yardstick.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch
from torch import nn

from fse_plugin.common import FSEError, checks, to_input
from fse_plugin.common.runtime import mixed_precision
from fse_plugin.parsing.checkpoint import load_parser

__all__ = ["forward_throughput", "masks_from_checkpoint", "predict_masks"]


def _batch_to(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A uint8 batch on ``device``: uint8 crosses the bus
    (4x less than float), pinned for async copies."""
    t = (images if isinstance(images, torch.Tensor)
         else torch.from_numpy(np.array(images, dtype=np.uint8)))
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def predict_masks(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 64,
                  device: str | torch.device = "cpu", precision: str = "fp32") -> np.ndarray:
    """Argmax label maps ``uint8 [N,H,W]`` for uint8 RGB faces ``[N,H,W,3]``
    (numpy, or a tensor on any device).

    Moves ``model`` to ``device`` in channels_last (cuDNN's and oneDNN's fast layout, on CPU too)
    and runs it under inference_mode in batches; ``precision`` 'fp16' or 'bf16' autocasts (meant for
    CUDA; CPUs without bf16 units get slower).
    """
    device = torch.device(device)
    if images.ndim != 4:
        raise FSEError(f"predict_masks expects uint8 images [N,H,W,C], "
                       f"got shape {tuple(images.shape)}")
    checks.count(batch_size, "batch_size")
    model = model.to(device, memory_format=torch.channels_last).eval()
    out = np.empty(tuple(images.shape[:3]), dtype=np.uint8)
    with torch.inference_mode(), mixed_precision(device, precision):
        for s in range(0, len(images), batch_size):
            x = to_input(_batch_to(images[s:s + batch_size], device), channels_last=True)
            out[s:s + len(x)] = model(x).argmax(1).to(torch.uint8).cpu().numpy()
    return out


def masks_from_checkpoint(parser_ckpt: str | os.PathLike, images: np.ndarray,
                          device: str | torch.device = "cpu", batch_size: int = 64) -> np.ndarray:
    """``predict_masks`` with the parser of a checkpoint file (loaded onto ``device``)."""
    return predict_masks(load_parser(parser_ckpt, map_location=device), images,
                         batch_size=batch_size, device=device)


def forward_throughput(model: nn.Module, batch_size: int = 64, device: str | torch.device = "cpu",
                       precision: str = "fp32", iters: int = 5, warmup: int = 1,
                       size: int = 112) -> float:
    """Images/s of the parser's forward + argmax alone on a random uint8 batch already on
    ``device``.

    The yardstick for ``fse cache build``: everything it adds
    (decode, encode, IO) should hide behind this.
    """
    device = torch.device(device)
    model = model.to(device, memory_format=torch.channels_last).eval()
    g = torch.Generator().manual_seed(0)
    shape = (batch_size, size, size, model.in_channels)
    batch = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g).to(device)
    with torch.inference_mode(), mixed_precision(device, precision):
        for i in range(warmup + iters):
            if i == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
            model(to_input(batch, channels_last=True)).argmax(1).to(torch.uint8)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return batch_size * iters / (time.perf_counter() - t0)
