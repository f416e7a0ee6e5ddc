"""Embedding aligned faces as the protocols need them: image and horizontally flipped image,
un-normalised."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import sklearn.preprocessing
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fse_plugin.common import FSEError, checks, mixed_precision, resolve_device, to_input
from fse_plugin.common.precision import PRECISIONS

__all__ = ["EmbedSettings", "FaceImages", "batch_loader", "check_precision", "embed", "embed_batch",
           "fuse_views", "given_settings"]

S = TypeVar("S")


class FaceImages(Dataset):
    """Aligned faces -> (normalised CHW tensor, position). ``keys`` picks (and orders) the images
    used; ``transform(img, mask, key)`` may alter the normalised image - the occlusion benchmark
    erases a region there, in the [-1, 1] space where FSErasing erases in training. ``masks[key]``
    gives its mask."""

    def __init__(self, images: np.ndarray | None, masks: Any = None,
                 transform: Callable | None = None, keys: Sequence[int] | None = None) -> None:
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


def check_precision(precision: Any, device: torch.device, name: str) -> str:
    """A precision of ``PRECISIONS`` that runs on ``device``: fp16 autocast on a CPU is slow or
    missing, so it is refused there (naming ``name``: a field or a flag)."""
    checks.choice(precision, name, PRECISIONS)
    if precision == "fp16" and device.type != "cuda":
        raise FSEError(f"{name}: fp16 autocasts on CUDA only; use fp32 or bf16 on a CPU")
    return precision


@dataclass(frozen=True)
class EmbedSettings:
    """How the evaluation runs a model over images: ``batch_size`` images per forward, on ``device``
    ('auto', 'cpu', 'cuda', 'cuda:N'; stored resolved, refused if this machine lacks it), at
    ``precision`` ('fp32', or autocast to 'bf16' / 'fp16', the latter on CUDA only), with
    ``num_workers`` DataLoader processes; ``embedding_size`` (None: not checked) is the size the
    model must give; ``progress``: tqdm bars.

    One object for ``embed``, ``evaluate_pack``, ``evaluate_ijb``, ``ijb_image_features`` and the
    occlusion benchmark (``OcclusionSettings.embed``); every value is checked when it is made,
    errors naming the field."""
    batch_size: int = 64
    device: str | torch.device = "cpu"
    precision: str = "fp32"
    num_workers: int = 0
    embedding_size: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        name = type(self).__name__
        checks.count(self.batch_size, f"{name}.batch_size")
        checks.count(self.num_workers, f"{name}.num_workers", minimum=0)
        if self.embedding_size is not None:
            checks.count(self.embedding_size, f"{name}.embedding_size")
        checks.choice(self.progress, f"{name}.progress", (True, False))
        device = resolve_device(self.device, f"{name}.device")
        # frozen: the resolved device is stored once, here
        object.__setattr__(self, "device", device)
        check_precision(self.precision, device, f"{name}.precision")


def given_settings(settings: Any, kind: type[S], **defaults: Any) -> S:
    """``settings`` if it is a ``kind``, ``kind(**defaults)`` if None; anything else is refused - a
    batch size passed where the settings object now goes must not be read as one."""
    if settings is None:
        return kind(**defaults)
    if not isinstance(settings, kind):
        raise FSEError(f"settings: expected {kind.__name__}(...) or None, got {settings!r} (one "
                       "settings object replaced the separate batch size, device ... arguments)")
    return settings


def embed_batch(model: nn.Module, x: torch.Tensor, flip: bool = True, precision: str = "fp32",
                embedding_size: int | None = None) -> np.ndarray:
    """float32 [V, B, D] of one batch already on the model's device: V=2 (image, flipped image) if
    ``flip``."""
    views = (x, torch.flip(x, dims=[3])) if flip else (x,)
    feats = []
    for v in views:
        with mixed_precision(x.device, precision):
            f = model(v)
        if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != len(v):
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise FSEError(f"model output {shape} for a batch of {len(v)}: expected [batch, "
                           "embedding_size]")
        if embedding_size is not None and f.shape[1] != embedding_size:
            raise FSEError(f"model gives {f.shape[1]}-d embeddings, expected embedding_size={embedding_size}: "
                           "pass the --embedding-size the model was trained with")
        feats.append(f.float().cpu().numpy())
    return np.stack(feats)


def batch_loader(dataset: Dataset, batch_size: int, device: torch.device,
                 num_workers: int) -> DataLoader:
    """Batches in dataset order (the protocols index the results by position)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


def _face_array(images: Any) -> np.ndarray:
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
            and images.shape[3] == 3):
        what = (f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray)
                else type(images).__name__)
        raise FSEError(f"images: expected uint8 [N, H, W, 3] RGB faces (or a Dataset), got {what}")
    return images


@torch.no_grad()
def embed(model: nn.Module, images: np.ndarray | Dataset, settings: EmbedSettings | None = None,
          flip: bool = True, desc: str = "embed") -> np.ndarray:
    """Un-normalised embeddings float32 [V, N, D]: V=2 (image, horizontally flipped image) if
    ``flip``, else 1.

    ``images`` is uint8 NHWC RGB or a Dataset of (normalised CHW tensor, index); ``settings`` says
    how the model runs (default ``EmbedSettings()``), e.g.
    ``embed(model, images, EmbedSettings(batch_size=32, device="auto"))``; ``desc`` labels the
    progress bar.
    """
    s = given_settings(settings, EmbedSettings)
    checks.choice(flip, "flip", (True, False))
    dataset = images if isinstance(images, Dataset) else FaceImages(_face_array(images))
    model.to(s.device).eval()
    out: np.ndarray | None = None
    for x, index in tqdm(batch_loader(dataset, s.batch_size, s.device, s.num_workers), desc=desc,
                         unit="batch", disable=not s.progress, leave=False):
        views = embed_batch(model, x.to(s.device, non_blocking=True), flip, s.precision,
                            s.embedding_size)
        if out is None:
            out = np.zeros((len(views), len(dataset), views.shape[2]), dtype=np.float32)
        elif views.shape[2] != out.shape[2]:
            raise FSEError(f"model output size changed from {out.shape[2]} to {views.shape[2]}")
        out[:, index.numpy()] = views
    if out is None:
        raise FSEError("nothing to embed: no images")
    return out


def fuse_views(views: np.ndarray) -> np.ndarray:
    """Image + flip summed (float64, as upstream) and L2-normalised: [V,N,D] -> [N,D]."""
    views = np.asarray(views, dtype=np.float64)
    return sklearn.preprocessing.normalize(views[0] + views[1] if len(views) > 1
                                           else views[0].copy())
