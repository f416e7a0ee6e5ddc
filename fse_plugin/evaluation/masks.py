"""Face-parsing masks of the evaluated images (uint8 label maps, one per pack image or IJB meta
row): from a ``.npy`` file, a mask cache, or predicted by the parser; the occlusion benchmark and
FS-CAM read them."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from fse_plugin.common import FSEError, load_masks, resolve_device
from fse_plugin.evaluation.ijb import IJBFaces, IJBMeta

__all__ = ["CacheMasks", "open_masks", "predict_ijb_masks", "stack_masks"]


class CacheMasks:
    """A ``MaskCache`` as the mask source of a pack or an IJB set: image i (pack index or meta row)
    has the i-th mask of the cache in key order - e.g. a cache of a rec written from those images in
    order."""

    def __init__(self, path: str | os.PathLike, n_images: int) -> None:
        from fse_plugin.maskcache import MaskCache
        self.cache = MaskCache(path)
        self.path = path
        if len(self.cache) != n_images:
            raise FSEError(f"{path}: mask cache holds {len(self.cache)} masks for {n_images} "
                           "images")

    def __getitem__(self, index: int) -> np.ndarray:
        key = int(self.cache.keys[int(index)])
        mask = self.cache.get(key)
        if mask is None:
            raise FSEError(f"{self.path}: no mask for image {index} (cache key {key})")
        return mask

    def __len__(self) -> int:
        return len(self.cache)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, n_images={len(self)})"


def open_masks(path: str | os.PathLike, n_images: int, size: tuple[int, int] = (112, 112)) -> Any:
    """Masks for ``n_images`` images from a ``.npy`` [N,H,W] uint8 file (memory-mapped) or a
    mask-cache dir."""
    path = Path(path)
    if path.is_dir():
        return CacheMasks(path, n_images)
    return load_masks(path, n_images, size)


def stack_masks(masks: Any, keys: Sequence[int]) -> np.ndarray:
    """uint8 [len(keys), H, W]: the masks of ``keys`` (whole numbers) from any mask source."""
    keys = np.asarray(keys)
    if keys.ndim != 1 or keys.dtype.kind not in "iu":
        raise FSEError(f"keys: expected a 1-D sequence of whole image keys, got {keys.dtype} "
                       f"{keys.shape}")
    return np.stack([np.asarray(masks[int(k)]) for k in keys]).astype(np.uint8)


def predict_ijb_masks(parser_ckpt: str | os.PathLike, meta: IJBMeta, rows: Sequence[int],
                      out_path: str | os.PathLike, batch_size: int = 64,
                      device: str | torch.device = "cpu", progress: bool = True) -> np.ndarray:
    """Parser masks of the aligned images of ``rows``, in a [N,112,112] ``.npy`` beside the results
    (255 in rows not predicted), memory-mapped: IJB-C's 469k masks take 5.9 GB. Reusable with
    ``--masks``."""
    from fse_plugin.parsing import load_parser, predict_masks
    device = resolve_device(device)
    parser = load_parser(parser_ckpt, map_location=device)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    masks = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint8,
                                      shape=(len(meta.names), 112, 112))
    masks[:] = 255
    faces = IJBFaces(meta)
    rows = np.asarray(rows, dtype=np.int64)
    for s in tqdm(range(0, len(rows), batch_size), desc="parser", disable=not progress):
        chunk = rows[s:s + batch_size]
        masks[chunk] = predict_masks(parser, np.stack([faces.image(r) for r in chunk]), batch_size,
                                     device)
    masks.flush()
    return masks
