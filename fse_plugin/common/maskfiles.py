"""Mask files beside verification packs: ``<stem>.masks.npy``, uint8 label maps ``[N,H,W]``.

One rule for every reader: a plain ``.npy`` (never a pickle), dtype uint8, shape ``(N, H, W)``
matching the images it belongs to; opened memory-mapped, so IJB-size files cost no memory up front.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fse_plugin.common.errors import FSEError

__all__ = ["masks_path_for", "load_masks"]


def masks_path_for(pack: str | os.PathLike) -> Path:
    """Where the masks of a pack live: ``lfw.bin`` -> ``lfw.masks.npy`` beside it."""
    pack = Path(pack)
    return pack.with_name(pack.name[:-4] + ".masks.npy" if pack.name.endswith(".bin")
                          else pack.name + ".masks.npy")


def load_masks(path: str | os.PathLike, n_images: int, size: tuple[int, int] = (112, 112),
               mmap: bool = True) -> np.ndarray:
    """The label maps of ``n_images`` images of ``size`` (H, W) from a ``.npy`` file, checked.

    Raises FSEError naming the file when it is missing, not a plain uint8 array, or of another
    shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FSEError(f"{path}: mask file not found")
    try:
        masks = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise FSEError(f"{path}: not a .npy mask array ({e})") from None
    want = (n_images, *size)
    if masks.dtype != np.uint8 or masks.shape != want:
        raise FSEError(f"{path}: masks are {masks.dtype} {masks.shape}, expected uint8 {want}; "
                       "write them with numpy.save(path, masks.astype(numpy.uint8))")
    return masks
