"""Embedding aligned faces as the protocols need them: image and horizontally flipped image, un-normalised."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import sklearn.preprocessing
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fse_plugin.common import FSEError, checks, mixed_precision, resolve_device, to_input
from fse_plugin.common.runtime import PRECISIONS

__all__ = ["FaceImages", "batch_loader", "embed", "embed_batch", "fuse_views", "prepare_model"]


class FaceImages(Dataset):
    """Aligned faces -> (normalised CHW tensor, position). ``keys`` picks (and orders) the images used;
    ``transform(img, mask, key)`` may alter the normalised image - the occlusion benchmark erases a region
    there, in the [-1, 1] space where FSErasing erases in training. ``masks[key]`` gives its mask."""

    def __init__(self, images: np.ndarray | None, masks: Any = None, transform: Callable | None = None,
                 keys: Sequence[int] | None = None) -> None:
        self.images = images
        self.masks = masks
        self.transform = transform
        self.keys = np.arange(len(images)) if keys is None else np.asarray(keys, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    def image(self, key: int) -> np.ndarray:
        return self.images[key]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        key = int(self.keys[index])
        x = to_input(np.ascontiguousarray(self.image(key)))
        if self.transform is not None:
            x = self.transform(x, None if self.masks is None else self.masks[key], key)
        return x, index


def embed_batch(model: nn.Module, x: torch.Tensor, flip: bool = True, precision: str = "fp32",
                embedding_size: int | None = None) -> np.ndarray:
    """float32 [V, B, D] of one batch already on the model's device: V=2 (image, flipped image) if ``flip``."""
    views = (x, torch.flip(x, dims=[3])) if flip else (x,)
    feats = []
    for v in views:
        with mixed_precision(x.device, precision):
            f = model(v)
        if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != len(v):
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise FSEError(f"model output {shape} for a batch of {len(v)}: expected [batch, embedding_size]")
        if embedding_size is not None and f.shape[1] != embedding_size:
            raise FSEError(f"model gives {f.shape[1]}-d embeddings, expected embedding_size={embedding_size}: "
                           "pass the --embedding-size the model was trained with")
        feats.append(f.float().cpu().numpy())
    return np.stack(feats)


def batch_loader(dataset: Dataset, batch_size: int, device: torch.device, num_workers: int) -> DataLoader:
    """Batches in dataset order (the protocols index the results by position)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


def prepare_model(model: nn.Module, device: str | torch.device, precision: str = "fp32") -> torch.device:
    """The device resolved (one this machine has) and the model moved there in eval mode; the precision checked
    (fp16 autocast on a CPU is slow or missing, so it is refused there)."""
    device = resolve_device(device, "device")
    checks.choice(precision, "precision", PRECISIONS)
    if precision == "fp16" and device.type != "cuda":
        raise FSEError("precision fp16 autocasts on CUDA only; use fp32 or bf16 on a CPU")
    model.to(device).eval()
    return device


@torch.no_grad()
def embed(model: nn.Module, images: np.ndarray | Dataset, batch_size: int = 64, device: str | torch.device = "cpu",
          flip: bool = True, precision: str = "fp32", num_workers: int = 0, embedding_size: int | None = None,
          progress: bool = True, desc: str = "embed") -> np.ndarray:
    """Un-normalised embeddings float32 [V, N, D]: V=2 (image, horizontally flipped image) if ``flip``, else 1.

    ``images`` is uint8 NHWC RGB or a Dataset of (normalised CHW tensor, index). ``precision``: 'fp32', or
    autocast to 'bf16' / 'fp16' (CUDA only).
    """
    checks.count(batch_size, "batch_size")
    checks.count(num_workers, "num_workers", minimum=0)
    dataset = images if isinstance(images, Dataset) else FaceImages(images)
    device = prepare_model(model, device, precision)
    out: np.ndarray | None = None
    for x, index in tqdm(batch_loader(dataset, batch_size, device, num_workers), desc=desc, unit="batch",
                         disable=not progress, leave=False):
        views = embed_batch(model, x.to(device, non_blocking=True), flip, precision, embedding_size)
        if out is None:
            out = np.zeros((len(views), len(dataset), views.shape[2]), dtype=np.float32)
        elif views.shape[2] != out.shape[2]:
            raise ValueError(f"model output size changed from {out.shape[2]} to {views.shape[2]}")
        out[:, index.numpy()] = views
    if out is None:
        raise FSEError("nothing to embed: no images")
    return out


def fuse_views(views: np.ndarray) -> np.ndarray:
    """Image + flip summed (float64, as upstream) and L2-normalised: [V,N,D] -> [N,D]."""
    views = np.asarray(views, dtype=np.float64)
    return sklearn.preprocessing.normalize(views[0] + views[1] if len(views) > 1 else views[0].copy())
