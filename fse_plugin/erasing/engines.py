"""The two engines behind ``erase``: find the erased pixels, ask the fill for their values, write
them.

* numpy (CPU tensors without grad, what the dataset runs): only the erased pixels are touched,
  found from whole masks or from ``MaskRuns`` (the mask cache's runs), in place, over numpy views
  of the images' memory; a flipped image's unflipped mask is read mirrored.
* torch (any device, autograd): the same pixels found with tensor ops, written into a copy.

Both hand the same ``ErasedPixels`` (rows with something selected, pixels in (image, pixel) order)
to ``fills.fill_values``, so one generator gives both the same random values.
"""
from __future__ import annotations

from functools import cached_property
from itertools import accumulate, chain
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch

from fse_plugin.erasing.fills import PER_CLASS, READS_IMAGES, fill_values
from fse_plugin.fseconfig import Fill
from fse_plugin.labels import MIRROR_LUT, flip_mask
from fse_plugin.maskruns import MaskRuns, erased_pixels

__all__ = ["erase_numpy", "erase_torch"]


class _NumpyPixels:
    """``ErasedPixels`` over numpy arrays: erased image ``r`` is ``images[at[r]]`` [C,H,W]; the
    images' pixels are laid end to end in ``pix`` (flat indices, ``sizes[r]`` for image ``r``)."""

    def __init__(self, images: np.ndarray | list[np.ndarray], at: list[int], pix: np.ndarray,
                 sizes: list[int], cls: np.ndarray | None, K: int) -> None:
        self.images, self.at, self.pix, self.sizes, self.cls, self.K = (
            images, at, pix, sizes, cls, K)
        self.C, self.R, self.N = images[0].shape[0], len(at), len(pix)

    @cached_property
    def row(self) -> np.ndarray:
        return np.repeat(np.arange(self.R), self.sizes)

    @cached_property
    def flat(self) -> list[np.ndarray]:
        """Each erased image as [C, H*W] (a view)."""
        return [self.images[i].reshape(self.C, -1) for i in self.at]

    @cached_property
    def pixels(self) -> list[tuple[int, np.ndarray]]:
        """Each erased image's first value in the fill's [C, N] and its pixels (views of
        ``pix``)."""
        ends = list(accumulate(self.sizes))
        return [(a, self.pix[a:b]) for a, b in zip([0, *ends], ends)]

    def randn(self, shape: tuple[int, ...], generator: torch.Generator | None) -> np.ndarray:
        return torch.randn(shape, generator=generator).numpy()

    def rand(self, shape: tuple[int, ...], generator: torch.Generator | None) -> np.ndarray:
        return torch.rand(shape, generator=generator).numpy()

    def where(self, cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(cond, a, b)

    def full(self, value: float) -> np.ndarray:
        return np.full((self.C, self.N), value, self.images[0].dtype)

    def means(self) -> np.ndarray:
        return np.stack([f.mean(1) for f in self.flat])

    def group_means(self, group: np.ndarray, n_groups: int) -> np.ndarray:
        counts = np.maximum(np.bincount(group, minlength=n_groups), 1)
        values = np.concatenate([f[:, p] for f, (_, p) in zip(self.flat, self.pixels)], 1)
        return np.stack([(np.bincount(group, v, n_groups) / counts)[group]
                         for v in values]).astype(values.dtype)

    def write(self, values: np.ndarray) -> None:
        """``values`` [C, N] into the erased pixels: in a C-contiguous [B,C,H,W] array, one 1-D
        fancy assignment per channel for all images; in a list of images, one per image and channel
        (1-D fancy assignments: faster than 2-D ones)."""
        if isinstance(self.images, np.ndarray) and self.images.flags.c_contiguous:
            plane = self.images[0, 0].size
            idx = np.repeat(np.array(self.at, np.int64) * (self.C * plane), self.sizes) + self.pix
            flat = self.images.reshape(-1)  # a view: C-contiguous
            for k in range(self.C):
                flat[idx] = values[k]
                if k + 1 < self.C:
                    idx += plane
            return
        for r, i in enumerate(self.at):
            self.write_one(r, self.images[i], values)

    def write_one(self, r: int, image: np.ndarray, values: np.ndarray) -> None:
        """Erased image ``r``'s values (its columns of ``values`` [C, N]) into ``image``."""
        start, pix = self.pixels[r]
        flat = image.reshape(self.C, -1)  # a view: the images are contiguous
        for k in range(self.C):
            flat[k][pix] = values[k, start:start + len(pix)]


def _region(mask: np.ndarray, selected: np.ndarray, single: int) -> np.ndarray:
    """Bool [H,W]: pixels whose class is selected (ids >= K never are); ``single`` the one selected
    class, or -1 when there are several."""
    if single >= 0:  # the common case: one compare
        return mask == single
    K = len(selected)
    if mask.dtype == np.uint8 and K <= 256:  # the cache's masks: a 256-entry table lookup
        lut = np.zeros(256, np.uint8)
        lut[:K] = selected
        return cv2.LUT(mask, lut).view(np.bool_)
    labels = mask.astype(np.int64)
    known = (labels >= 0) & (labels < K)
    return selected[np.where(known, labels, 0)] & known


def _mask_pixels(mask: np.ndarray, selected: np.ndarray, single: int, mirror: bool,
                 with_classes: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat indices of the erased pixels of one image (and their classes), its mask read mirrored if
    ``mirror`` (the image was flipped, the mask not)."""
    mask = np.ascontiguousarray(mask)
    if mirror:
        # class k of the flipped image is class MIRROR[k] of the unflipped mask, columns reversed
        selected = selected[MIRROR_LUT[:len(selected)]]
        single = int(MIRROR_LUT[single]) if single >= 0 else -1
    region = _region(mask, selected, single)
    if mirror:
        region = cv2.flip(region.view(np.uint8), 1).view(np.bool_)
    # numpy's nonzero is fast on bool only (7x slower on uint8)
    pix = region.reshape(-1).nonzero()[0]
    if not with_classes:
        return pix, None
    shown = flip_mask(mask) if mirror else mask
    return pix, shown.reshape(-1)[pix].astype(np.intp)


def _find(masks: Sequence[np.ndarray] | MaskRuns, selected: np.ndarray, rows: list[int],
          mirrored: np.ndarray,
          with_classes: bool) -> tuple[np.ndarray, list[int], np.ndarray | None]:
    """The erased pixels of ``rows`` laid end to end (flat indices, ascending per row), how many
    each row has and, if asked, their classes."""
    if isinstance(masks, MaskRuns):
        return erased_pixels(masks, selected, rows, mirrored, with_classes)
    single = np.where(selected.sum(1) == 1, selected.argmax(1), -1)
    found = [_mask_pixels(masks[r], selected[r], int(single[r]), bool(mirrored[r]), with_classes)
             for r in rows]
    pix = np.concatenate([p for p, _ in found]) if len(found) > 1 else found[0][0]
    return (pix, [len(p) for p, _ in found],
            np.concatenate([c for _, c in found]) if with_classes else None)


def erase_numpy(images: np.ndarray | list[np.ndarray] | Iterable[np.ndarray],
                masks: Sequence[np.ndarray] | MaskRuns, selected: np.ndarray, fill: Fill,
                generator: torch.Generator | None, mirrored: np.ndarray,
                at: Sequence[int] | None = None) -> np.ndarray | list[np.ndarray]:
    """Erase images in place where ``selected`` [B, K] says: row ``b`` is for image
    ``images[at[b]]`` (``at`` None: ``images[b]``), whose mask is ``masks[b]`` ([H,W] arrays or
    ``MaskRuns``), read mirrored where ``mirrored[b]``. images: a [N,C,H,W] array, a list of
    contiguous [C,H,W] arrays, or an iterator of them (a decoder): when the fill reads no image, the
    pixels are found and the values drawn first, and each image is written as it comes, while still
    in the CPU's caches. Returns the images (a list for an iterator). Shapes are the caller's to
    check."""
    lazy = not isinstance(images, (list, np.ndarray)) and fill not in READS_IMAGES
    if not lazy and not isinstance(images, np.ndarray):
        images = list(images)
    rows = np.flatnonzero(selected.any(1)).tolist()
    pix, sizes, cls = (_find(masks, selected, rows, mirrored, fill in PER_CLASS) if rows
                       else ((), [], None))
    if not len(pix):
        # only absent classes chosen: the images stay as they are (the reference), nothing drawn
        return list(images) if lazy else images
    at = rows if at is None else [at[r] for r in rows]
    if not lazy:
        px = _NumpyPixels(images, at, pix, sizes, cls, selected.shape[1])
        px.write(fill_values(fill, px, generator))
        return images
    images = iter(images)
    first = next(images)  # its channels and dtype are the values'
    px = _NumpyPixels([first], at, pix, sizes, cls, selected.shape[1])
    values, row, out = fill_values(fill, px, generator), dict(zip(at, range(len(at)))), []
    for i, image in enumerate(chain([first], images)):
        if i in row:
            px.write_one(row[i], image, values)
        out.append(image)
    return out


class _TorchPixels:
    """``ErasedPixels`` over tensors: pixel ``i`` is ``pix[i]`` of image ``b[i]`` of ``imgs``
    [B,C,H*W]."""

    def __init__(self, imgs: torch.Tensor, b: torch.Tensor, pix: torch.Tensor, cls: torch.Tensor,
                 selected: torch.Tensor, draw_device: torch.device) -> None:
        self.imgs, self.b, self.pix, self.cls = imgs, b, pix, cls
        chosen = selected.any(1)
        self.rows = chosen.nonzero().squeeze(1)
        self.row = (chosen.cumsum(0) - 1)[b]
        self.C, self.R, self.K, self.N = imgs.shape[1], len(self.rows), selected.shape[1], len(pix)
        self.draw_device = draw_device

    def randn(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        out = torch.randn(shape, generator=generator, device=self.draw_device,
                          dtype=self.imgs.dtype)
        return out.to(self.imgs.device)

    def rand(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=self.draw_device).to(self.imgs.device)

    def where(self, cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(cond, a, b)

    def full(self, value: float) -> torch.Tensor:
        return torch.full((self.C, self.N), value, dtype=self.imgs.dtype, device=self.imgs.device)

    def means(self) -> torch.Tensor:
        return self.imgs[self.rows].mean(2)

    def group_means(self, group: torch.Tensor, n_groups: int) -> torch.Tensor:
        counts = torch.bincount(group, minlength=n_groups).clamp(min=1)
        values = self.imgs[self.b, :, self.pix].T.double()
        sums = torch.zeros(len(values), n_groups, dtype=values.dtype, device=values.device)
        sums = sums.index_add(1, group, values)  # differentiable, unlike bincount's weights
        return (sums / counts)[:, group].to(self.imgs.dtype)


def erase_torch(imgs: torch.Tensor, masks: torch.Tensor, selected: torch.Tensor, fill: Fill,
                generator: torch.Generator | None) -> torch.Tensor:
    """``imgs`` [B,C,H,W] with the pixels of the selected classes replaced, as a new tensor
    (autograd flows to the kept pixels and through the mean fills). masks [B,H,W] integer ids on the
    images' device (ids >= K are never erased), selected [B,K] bool."""
    B, C, H, W = imgs.shape
    ids = masks.reshape(B, H * W).long()
    K = selected.shape[1]
    region = selected.gather(1, ids.clamp(0, K - 1)) & (ids >= 0) & (ids < K)
    b, pix = region.nonzero(as_tuple=True)  # row-major: the numpy engine's (image, pixel) order
    if not len(pix):
        return imgs.clone()
    flat = imgs.reshape(B, C, H * W)
    px = _TorchPixels(flat, b, pix, ids[b, pix], selected,
                      generator.device if generator is not None else imgs.device)
    out = flat.clone()
    out[b, :, pix] = fill_values(fill, px, generator).T.to(imgs.dtype)
    return out.view(B, C, H, W)
