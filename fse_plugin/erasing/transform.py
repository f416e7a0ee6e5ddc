"""``FSErasing``, the transform (draw with ``get_params``, apply with ``erase``), and
``flip_pair``."""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
import torch

from fse_plugin.erasing.functional import as_numpy, erase, mirrored_rows
from fse_plugin.fseconfig import Fill, FSEConfig, NErase
from fse_plugin.labels import MIRROR, MIRROR_LUT, NUM_CLASSES, class_name, flip_mask
from fse_plugin.maskruns import MaskRuns

__all__ = ["FSErasing", "flip_pair"]

Masks = torch.Tensor | Sequence[np.ndarray] | MaskRuns


def _draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def _rand(shape: int | tuple[int, ...], generator: torch.Generator | None,
          device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=_draw_device(generator, device)).to(device)


def _present(masks: Masks) -> torch.Tensor:
    """[B, NUM_CLASSES] bool: which classes each mask holds (ids >= NUM_CLASSES ignored)."""
    if isinstance(masks, MaskRuns):
        return torch.from_numpy(masks.present())
    if not isinstance(masks, torch.Tensor):
        counts = [np.bincount(as_numpy(m).ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
                  for m in masks]
        return torch.from_numpy(np.stack(counts) > 0)
    B = masks.shape[0]  # ids >= NUM_CLASSES land in one spare column: no host sync
    ids = masks.reshape(B, -1).long().clamp(max=NUM_CLASSES)
    present = torch.zeros(B, NUM_CLASSES + 1, dtype=torch.bool, device=masks.device)
    present.scatter_(1, ids, True)
    return present[:, :NUM_CLASSES]


class FSErasing:
    """Erase ``n_erase`` random face-semantic regions of normalised images, each with probability
    ``p``.

    p: probability that an image is erased. n_erase: an int; a tuple (lo, hi), the count drawn
    uniformly from lo..hi inclusive; or a list of class names erased every time. classes: names or
    int ids to draw from (a list, or an ``"a,b"`` string of names); None = all 25, background
    included, as in the reference. present_only: draw among the classes present in each mask
    (otherwise an absent class leaves the image unchanged, as in the reference). fill: see
    ``erasing.erase``. Classes are drawn uniformly without replacement. Every argument is checked by
    ``FSEConfig`` (an error names ``FSErasing.<argument>``).

    Example::

        >>> t = FSErasing(p=0.5, n_erase=(1, 2), fill="random")
        >>> out = t(img, mask)  # one [3,112,112] image and its [112,112] label map
        >>> out = t(imgs, masks, generator=g)  # a batch [B,3,112,112], [B,112,112]; any device
        >>> selected = t.get_params(masks, g)  # the draw alone: [B, 25] bool, for erasing.erase
    """

    def __init__(self, p: float = 1.0, n_erase: NErase = 1,
                 classes: str | Sequence[str | int] | None = None, present_only: bool = False,
                 fill: Fill = "random") -> None:
        self._setup(FSEConfig.from_mapping(dict(p=p, n_erase=n_erase, classes=classes,
                                                present_only=present_only, fill=fill),
                                           prefix="FSErasing"))

    @classmethod
    def from_config(cls, config: FSEConfig) -> FSErasing:
        """The FSErasing of a checked ``config.fse`` (``FSEConfig.from_mapping``)."""
        self = cls.__new__(cls)
        self._setup(config)
        return self

    def _setup(self, config: FSEConfig) -> None:
        self.p, self.present_only, self.fill = config.p, config.present_only, config.fill
        self.fixed, self.classes = config.fixed, config.pool
        self.lo, self.hi = config.count_range
        self._allowed = torch.zeros(NUM_CLASSES, dtype=torch.bool)
        self._allowed[self.classes] = True
        self._class_ids = torch.tensor(self.classes)
        # row i: the selection of classes[i]
        self._one_hot = np.eye(NUM_CLASSES, dtype=bool)[self.classes]

    def get_params(self, masks: Masks, generator: torch.Generator | None = None,
                   mirrored: Any = None) -> torch.Tensor:
        """Which classes to erase in each of B images (``p`` aside): ``[B, 25]`` bool.

        masks: ``[B,H,W]`` (the result is on its device), a list of B ``[H,W]`` or ``MaskRuns``;
        only ``present_only`` reads them. mirrored: ``[B]`` bool, images flipped whose masks were
        not (see ``erase``). Draws come from ``generator`` (torch's default one if None).
        """
        B = len(masks)
        device = _device(masks)
        flips = (None if mirrored is None
                 else mirrored_rows(mirrored, B, "FSErasing.get_params: mirrored"))
        if self.fixed is not None:
            selected = torch.zeros(B, NUM_CLASSES, dtype=torch.bool, device=device)
            selected[:, self.fixed] = True
            return selected
        if self.lo == self.hi == 1 and not self.present_only:
            # the reference setting: one uniform draw each
            return self._one_each(B, generator, device)
        allowed = self._allowed.to(device).expand(B, NUM_CLASSES)
        if self.present_only:
            present = _present(masks)
            if flips is not None:
                # class k of a flipped image is class MIRROR[k] of its unflipped mask
                flip = torch.from_numpy(flips).to(present.device).unsqueeze(1)
                present = torch.where(flip, present[:, torch.from_numpy(MIRROR)], present)
            allowed = allowed & present.to(device)
        if self.lo == self.hi:
            n = torch.full((B,), self.lo, device=device)
        else:
            n = torch.randint(self.lo, self.hi + 1, (B,), generator=generator,
                              device=_draw_device(generator, device)).to(device)
        # A uniform random subset of size n: the n smallest of i.i.d. uniform scores among allowed
        # ids.
        order = _rand((B, NUM_CLASSES), generator, device).masked_fill(~allowed, 2.0).argsort(1)
        first_n = torch.arange(NUM_CLASSES, device=device).expand(B, NUM_CLASSES) < n.unsqueeze(1)
        return torch.zeros_like(allowed).scatter_(1, order, first_n) & allowed

    def _one_each(self, B: int, generator: torch.Generator | None,
                  device: torch.device) -> torch.Tensor:
        """One class per image, uniform over ``classes``: a scaled U(0, 1) draw each (on CPU in
        numpy, the same float32 product and truncation as torch's, without its per-call
        overhead)."""
        n = len(self.classes)
        u = _rand(B, generator, device)
        if device.type != "cpu":
            pick = (u * n).long().clamp_(max=n - 1)
            selected = torch.zeros(B, NUM_CLASSES, dtype=torch.bool, device=device)
            selected[torch.arange(B, device=device), self._class_ids.to(device)[pick]] = True
            return selected
        pick = np.minimum((u.numpy() * np.float32(n)).astype(np.int64), n - 1)
        return torch.from_numpy(self._one_hot[pick])

    def __call__(self, img: torch.Tensor, mask: Any,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """img ``[C,H,W]`` with mask ``[H,W]``, or a batch ``[B,C,H,W]`` with masks ``[B,H,W]`` (or
        a list, or ``MaskRuns``) -> the erased copy; an image that was not drawn is returned as it
        is."""
        single = isinstance(img, torch.Tensor) and img.dim() == 3
        masks = [mask] if single else mask
        apply = _rand(len(masks), generator, _device(masks)) < self.p
        if single and not bool(apply[0]):
            return img
        selected = self.get_params(masks, generator) & apply.unsqueeze(1)
        return erase(img, mask, selected[0] if single else selected, self.fill, generator)

    def __repr__(self) -> str:
        if self.fixed is not None:
            n, classes = [class_name(c) for c in self.fixed], ""
        else:
            n = self.lo if self.lo == self.hi else (self.lo, self.hi)
            classes = f", classes={[class_name(c) for c in self.classes]!r}"
            if self.classes == list(range(NUM_CLASSES)):
                classes = f", classes=all {NUM_CLASSES}"
        return (f"{type(self).__name__}(p={self.p}, n_erase={n!r}{classes}, "
                f"present_only={self.present_only}, fill={self.fill!r})")


def _device(masks: Masks) -> torch.device:
    return masks.device if isinstance(masks, torch.Tensor) else torch.device("cpu")


def flip_pair(img: torch.Tensor | np.ndarray, mask: Any = None) -> tuple:
    """Horizontal flip of an image and its label map, swapping the ids of left/right pairs
    (``labels.MIRROR``).

    Tensors: img [..., C, H, W] and mask [..., H, W]; numpy arrays: img HxWxC (cv2 layout), mask
    HxW. ``mask`` None flips the image alone.

    Example::

        >>> img, mask = flip_pair(img, mask)
        # right_eye stays right_eye, on the other side of the image
    """
    if isinstance(img, np.ndarray):
        return cv2.flip(img, 1), None if mask is None else flip_mask(mask)
    if mask is None:
        return img.flip(-1), None
    mask = torch.as_tensor(mask)
    lut = torch.from_numpy(MIRROR_LUT).to(device=mask.device, dtype=mask.dtype)
    return img.flip(-1), lut[mask.long()].flip(-1)
