"""FSErasing: erase random face-semantic regions of normalised training faces.

The functional core ``erase`` / ``erase_`` (one image) and ``erase_batch`` (a batch, vectorised for
GPU tensors) replace the pixels of the chosen classes of a 25-class label map; ``FSErasing`` draws
which classes, torchvision-style. Erasing works in the normalised [-1, 1] space, after
ToTensor + Normalize(0.5, 0.5), as the reference does, so N(0, 1) fills have the image's scale.
All randomness comes from a ``torch.Generator`` (or torch's default one, which arcface_torch seeds
per DataLoader worker), so a run is reproducible.
"""
from __future__ import annotations

import numbers
from typing import Sequence, Union

import cv2
import numpy as np
import torch

from fse_plugin.labels import MIRROR_LUT, NUM_CLASSES, class_name, flip_mask, parse_class_list

FILLS: tuple[str, ...] = ("random", "random_1", "random_mix", "region_mean", "image_mean")
Fill = Union[str, float]
NErase = Union[int, tuple, list]

def check_fill(fill: Fill) -> Fill:
    """Return ``fill`` if it is a known mode or a finite number, else raise ValueError."""
    if isinstance(fill, str):
        if fill not in FILLS:
            raise ValueError(f"fill {fill!r} unknown; use one of {', '.join(FILLS)} or a number")
        return fill
    if isinstance(fill, numbers.Real) and not isinstance(fill, bool) and np.isfinite(fill):
        return float(fill)
    raise ValueError(f"fill must be one of {', '.join(FILLS)} or a finite number, got {fill!r}")


def check_probability(p: float, name: str = "p") -> float:
    """``p`` as a float if it is a number in [0, 1], else ValueError naming ``name``."""
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _coin(generator: torch.Generator | None) -> float:
    """One U(0, 1) draw from ``generator`` (any device) or torch's default CPU generator."""
    return float(torch.rand(1, generator=generator, device=None if generator is None else generator.device))


def _device_of(generator: torch.Generator | None, like: torch.Tensor) -> torch.device:
    return generator.device if generator is not None else like.device


def _rand(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=_device_of(generator, like)).to(like.device)


def _randn(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    out = torch.randn(shape, generator=generator, device=_device_of(generator, like), dtype=like.dtype)
    return out.to(like.device)


def _on_numpy(img: torch.Tensor) -> bool:
    return img.is_cpu and not img.requires_grad


def _one_sample(img: torch.Tensor, mask, class_ids: Sequence[int], fill: Fill,
                generator: torch.Generator | None) -> torch.Tensor:
    """``erase`` through ``erase_batch`` (GPU tensors, or images that need autograd)."""
    ids = [int(c) for c in class_ids]
    selected = torch.zeros(1, max([NUM_CLASSES, *(c + 1 for c in ids)]), dtype=torch.bool)
    selected[0, ids] = True
    mask = torch.as_tensor(np.ascontiguousarray(mask) if isinstance(mask, np.ndarray) else mask, device=img.device)
    return erase_batch(img.unsqueeze(0), mask.unsqueeze(0), selected, fill, generator)[0]


def erase_(img: torch.Tensor, mask, class_ids: Sequence[int], fill: Fill = "random",
           generator: torch.Generator | None = None) -> torch.Tensor:
    """In-place ``erase`` (``img`` must be contiguous); returns ``img``.

    The dataset uses it on the tensor it has just built, saving a copy per sample. On CPU the
    indexing goes through numpy views of the same memory (torch's per-op overhead would triple
    the cost); the per-pixel noise still comes from torch's generator.
    """
    if img.dim() != 3 or not img.is_contiguous():
        raise ValueError(f"erase_ needs a contiguous [C,H,W] tensor, got shape {tuple(img.shape)}")
    C, H, W = img.shape
    if tuple(mask.shape) != (H, W):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match image shape {tuple(img.shape)}")
    fill = check_fill(fill)
    if not _on_numpy(img):
        return img.copy_(_one_sample(img, mask, class_ids, fill, generator))
    if fill == "random_mix":  # per-pixel noise or one colour per region, 50/50 per sample
        fill = "random" if _coin(generator) < 0.5 else "random_1"
    flat = img.numpy().reshape(C, H * W)
    labels = (mask.numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)).reshape(H * W)
    image_mean = flat.mean(1).tolist() if fill == "image_mean" else None
    for c in class_ids:
        idx = (labels == c).nonzero()[0]  # labels is 1-D: flatnonzero minus its Python wrappers
        if not idx.size:  # absent class: the image stays as it is (reference behaviour)
            continue
        if fill == "random":
            noise = torch.randn((C, idx.size), generator=generator, dtype=img.dtype).numpy()
            for k in range(C):  # 1-D fancy assignment per channel: 3x faster than 2-D
                flat[k][idx] = noise[k]
            continue
        if fill == "random_1":
            colour = torch.randn(C, generator=generator, dtype=img.dtype).tolist()
        elif fill == "region_mean":
            colour = flat[:, idx].mean(1).tolist()
        elif fill == "image_mean":
            colour = image_mean
        else:
            colour = [fill] * C
        for k in range(C):
            flat[k][idx] = colour[k]
    return img


def erase(img: torch.Tensor, mask, class_ids: Sequence[int], fill: Fill = "random",
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Copy of ``img`` [C,H,W] (normalised) whose pixels of ``class_ids`` in ``mask`` [H,W] are replaced.

    fill: 'random' per-pixel N(0,1); 'random_1' one N(0,1) colour per region; 'random_mix' either of
    those with probability 1/2; 'region_mean' each region's own mean colour; 'image_mean' the
    image's mean colour; a number: that constant. Pixels outside the regions never change.
    CPU tensors take a numpy fast path; CUDA tensors (use a CUDA generator) and tensors that
    require grad go through ``erase_batch``.
    """
    if not _on_numpy(img):
        if tuple(mask.shape) != tuple(img.shape[-2:]):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match image shape {tuple(img.shape)}")
        return _one_sample(img, mask, class_ids, check_fill(fill), generator)
    return erase_(img.clone(memory_format=torch.contiguous_format), mask, class_ids, fill, generator)


def erase_batch(imgs: torch.Tensor, masks: torch.Tensor, selected: torch.Tensor, fill: Fill = "random",
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Batched ``erase`` without a Python loop over samples or a host sync (GPU friendly).

    imgs [B,C,H,W] float, masks [B,H,W] integer (uint8 is fine), selected [B,K] bool: class k is
    erased in sample b. Ids >= K in a mask are never erased. 'random_mix' is drawn per sample.
    Returns a new tensor.
    """
    fill = check_fill(fill)
    if imgs.dim() != 4 or masks.shape != (imgs.shape[0], *imgs.shape[2:]):
        raise ValueError(f"erase_batch needs imgs [B,C,H,W] and masks [B,H,W], got "
                         f"{tuple(imgs.shape)} and {tuple(masks.shape)}")
    if selected.dim() != 2 or selected.shape[0] != imgs.shape[0]:
        raise ValueError(f"selected must be [B,K] bool, got {tuple(selected.shape)}")
    B, C, H, W = imgs.shape
    K = selected.shape[1]
    ids = masks.reshape(B, H * W).long()
    known = ids < K
    ids = ids.clamp(max=K - 1)
    region = (selected.to(imgs.device).gather(1, ids) & known).view(B, 1, H, W)

    def per_region(table: torch.Tensor) -> torch.Tensor:  # table [B,K,C] -> [B,C,H,W]
        return table.gather(1, ids.unsqueeze(2).expand(B, H * W, C)).transpose(1, 2).reshape(B, C, H, W)

    if fill == "random":
        values = _randn(imgs.shape, generator, imgs)
    elif fill == "random_1":
        values = per_region(_randn((B, K, C), generator, imgs))
    elif fill == "random_mix":
        coin = _rand(B, generator, imgs) < 0.5
        noise = _randn(imgs.shape, generator, imgs)
        values = torch.where(coin.view(B, 1, 1, 1), noise, per_region(_randn((B, K, C), generator, imgs)))
    elif fill == "region_mean":
        pix = imgs.reshape(B, C, H * W).transpose(1, 2)
        sums = torch.zeros(B, K, C, dtype=imgs.dtype, device=imgs.device)
        sums.scatter_add_(1, ids.unsqueeze(2).expand(B, H * W, C), pix)
        counts = torch.zeros(B, K, dtype=imgs.dtype, device=imgs.device)
        counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=imgs.dtype))
        values = per_region(sums / counts.clamp(min=1).unsqueeze(2))
    elif fill == "image_mean":
        values = imgs.mean((2, 3), keepdim=True).expand_as(imgs)
    else:
        values = torch.full_like(imgs, fill)
    return torch.where(region, values, imgs)


def _normalize_n_erase(n_erase: NErase, n_classes: int) -> tuple[int, int, list[int] | None]:
    """-> (lo, hi, fixed): draw lo..hi classes (inclusive), or erase exactly ``fixed``."""
    if isinstance(n_erase, bool):
        raise ValueError(f"n_erase must be an int, a (lo, hi) tuple or a list of classes, got {n_erase!r}")
    if isinstance(n_erase, numbers.Integral):
        lo = hi = int(n_erase)
    elif isinstance(n_erase, tuple) and len(n_erase) == 2 and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in n_erase):
        lo, hi = int(n_erase[0]), int(n_erase[1])
    elif isinstance(n_erase, (list, str)):
        fixed = parse_class_list(n_erase)
        if not fixed:
            raise ValueError("n_erase: the fixed list of classes is empty")
        return len(fixed), len(fixed), fixed
    else:
        raise ValueError(f"n_erase must be an int, a (lo, hi) tuple or a list of classes, got {n_erase!r}")
    if not 0 <= lo <= hi:
        raise ValueError(f"n_erase range ({lo}, {hi}) must satisfy 0 <= lo <= hi")
    if hi > n_classes:
        raise ValueError(f"n_erase {hi} exceeds the {n_classes} classes to draw from")
    return lo, hi, None


class FSErasing:
    """Erase ``n_erase`` random face-semantic regions of a normalised image, with probability ``p``.

    n_erase: an int; a tuple (lo, hi), the count drawn uniformly from lo..hi inclusive; or a list of
    class names/ids erased every time. classes: names/ids to draw from (list or "a,b" string),
    None = all 25 incl. background as in the reference. present_only: draw among the classes present
    in the mask (otherwise an absent class leaves the image unchanged, as in the reference).
    fill: see ``erase``. Classes are drawn uniformly without replacement.
    """

    def __init__(self, p: float = 1.0, n_erase: NErase = 1, classes: str | Sequence[str | int] | None = None,
                 present_only: bool = False, fill: Fill = "random") -> None:
        self.p = check_probability(p)
        self.classes = parse_class_list(classes)
        if not self.classes:
            raise ValueError("classes: the list of classes to draw from is empty")
        self.lo, self.hi, self.fixed = _normalize_n_erase(n_erase, len(self.classes))
        if self.fixed is not None and classes is not None:
            raise ValueError("give either classes to draw from or a fixed list of classes in n_erase, not both")
        self.present_only = bool(present_only)
        self.fill = check_fill(fill)
        allowed = torch.zeros(NUM_CLASSES, dtype=torch.bool)
        allowed[self.classes] = True
        self._allowed = allowed

    def choose(self, mask, generator: torch.Generator | None = None) -> list[int]:
        """Class ids to erase for one sample (ignores ``p``); the mask matters only if present_only."""
        if self.fixed is not None:
            return list(self.fixed)
        pool = self.classes
        if self.present_only:
            m = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
            present = np.bincount(m.ravel(), minlength=NUM_CLASSES) > 0
            pool = [c for c in pool if present[c]]
        dev = generator.device if generator is not None else "cpu"
        n = self.lo if self.lo == self.hi else \
            int(torch.randint(self.lo, self.hi + 1, (1,), generator=generator, device=dev))
        n = min(n, len(pool))
        if n == 0:
            return []
        if n == 1:  # the common case, one draw instead of a permutation
            return [pool[int(torch.randint(len(pool), (1,), generator=generator, device=dev))]]
        return [pool[i] for i in torch.randperm(len(pool), generator=generator, device=dev)[:n].tolist()]

    def __call__(self, img: torch.Tensor, mask, generator: torch.Generator | None = None) -> torch.Tensor:
        """img [C,H,W] normalised, mask [H,W] class ids -> a new, possibly erased, image."""
        if _coin(generator) >= self.p:
            return img
        return erase(img, mask, self.choose(mask, generator), self.fill, generator)

    def draw_batch(self, masks: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B,H,W] masks -> selected [B,NUM_CLASSES] bool, the same distribution as ``choose`` + ``p``."""
        B, device = masks.shape[0], masks.device
        like = torch.empty(0, device=device)
        apply = _rand(B, generator, like) < self.p
        if self.fixed is not None:
            selected = torch.zeros(B, NUM_CLASSES, dtype=torch.bool, device=device)
            selected[:, self.fixed] = True
            return selected & apply.unsqueeze(1)
        allowed = self._allowed.to(device).expand(B, NUM_CLASSES)
        if self.present_only:  # ids >= NUM_CLASSES land in one spare column: no host sync
            ids = masks.reshape(B, -1).long().clamp(max=NUM_CLASSES)
            present = torch.zeros(B, NUM_CLASSES + 1, dtype=torch.bool, device=device)
            present.scatter_(1, ids, True)
            allowed = allowed & present[:, :NUM_CLASSES]
        if self.lo == self.hi:
            n = torch.full((B,), self.lo, device=device)
        else:
            dev = _device_of(generator, like)
            n = torch.randint(self.lo, self.hi + 1, (B,), generator=generator, device=dev).to(device)
        # A uniform random subset of size n: the n smallest of i.i.d. uniform scores among allowed ids.
        scores = _rand((B, NUM_CLASSES), generator, like).masked_fill(~allowed, 2.0)
        rank = scores.argsort(1).argsort(1)
        return (rank < n.unsqueeze(1)) & allowed & apply.unsqueeze(1)

    def batch(self, imgs: torch.Tensor, masks: torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """Batched form for tensors already on the GPU (DALI loaders, or after the H2D copy).

        imgs [B,C,H,W] normalised, masks [B,H,W] uint8; per-sample draws are vectorised.
        """
        return erase_batch(imgs, masks, self.draw_batch(masks, generator), self.fill, generator)

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


def flip_pair(img: torch.Tensor | np.ndarray, mask=None) -> tuple:
    """Horizontal flip of an image and its label map, swapping left/right ids (the subject's sides).

    Tensors: img [..., C, H, W] and mask [..., H, W]; numpy arrays: img HxWxC (cv2 layout), mask HxW.
    ``mask`` None flips the image alone (a sample the dataset does not erase).
    """
    if isinstance(img, np.ndarray):
        return cv2.flip(img, 1), None if mask is None else flip_mask(mask)
    if mask is None:
        return img.flip(-1), None
    mask = torch.as_tensor(mask)
    lut = torch.from_numpy(MIRROR_LUT).to(device=mask.device, dtype=mask.dtype)
    return img.flip(-1), lut[mask.long()].flip(-1)


class HorizontalFlipPair:
    """Flip (image, mask) with probability ``p`` so that 'right_eye' stays the subject's right eye."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = check_probability(p)

    def __call__(self, img: torch.Tensor | np.ndarray, mask, generator: torch.Generator | None = None):
        """-> (img, mask), both flipped with probability p (see ``flip_pair`` for layouts)."""
        if _coin(generator) < self.p:
            return flip_pair(img, mask)
        return img, mask

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"

