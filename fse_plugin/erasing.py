"""FSErasing: erase random face-semantic regions of normalised training faces.

The functional core ``erase`` / ``erase_`` (one image), ``erase_batch`` (a batch, torch ops without a
loop or host sync, for GPU tensors) and ``erase_batch_`` (in place; on CPU a numpy path that touches
only the erased pixels, what the dataset calls once per batch) replace the pixels of the chosen
classes of a 25-class label map; ``FSErasing`` draws which classes, torchvision-style. The maps
can also come as ``MaskRuns``, the mask cache's runs of equal pixels: the CPU path then expands
only the chosen classes' runs, and reads a flipped image's unflipped map mirrored. Erasing works
in the normalised [-1, 1] space, after ToTensor + Normalize(0.5, 0.5), as the reference does, so
N(0, 1) fills have the image's scale. All randomness comes from a ``torch.Generator`` (or torch's
default one, which arcface_torch seeds per DataLoader worker), so a run is reproducible.
"""
from __future__ import annotations

import numbers
from typing import Sequence, Union

import cv2
import numpy as np
import torch

from fse_plugin.labels import MIRROR, MIRROR_LUT, NUM_CLASSES, class_name, flip_mask, parse_class_list
from fse_plugin.maskruns import MaskRuns, erased_pixels

__all__ = ["FILLS", "FSErasing", "HorizontalFlipPair", "MaskRuns", "check_fill", "check_probability", "erase",
           "erase_", "erase_batch", "erase_batch_", "flip_pair"]

FILLS: tuple[str, ...] = ("random", "random_1", "random_mix", "random_mix_sample", "region_mean", "image_mean")
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
    return img.is_cpu and not img.requires_grad and img.is_contiguous()


def _numpy(x) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _selection(class_ids: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """[1, K] bool row with ``class_ids`` set (K covers every id given, at least the 25 classes)."""
    ids = [int(c) for c in class_ids]
    selected = torch.zeros(1, max([NUM_CLASSES, *(c + 1 for c in ids)]), dtype=torch.bool, device=device)
    selected[0, ids] = True
    return selected


def _check_pair(img: torch.Tensor, mask) -> None:
    if tuple(mask.shape) != tuple(img.shape[-2:]):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match image shape {tuple(img.shape)}")


def _check_batch(imgs: torch.Tensor, masks, selected) -> None:
    if imgs.dim() != 4 or tuple(masks.shape) != (imgs.shape[0], *imgs.shape[2:]):
        raise ValueError(f"erase_batch needs imgs [B,C,H,W] and masks [B,H,W], got "
                         f"{tuple(imgs.shape)} and {tuple(masks.shape)}")
    if selected.ndim != 2 or selected.shape[0] != imgs.shape[0]:
        raise ValueError(f"selected must be [B,K] bool, got {tuple(selected.shape)}")


def erase_(img: torch.Tensor, mask, class_ids: Sequence[int], fill: Fill = "random",
           generator: torch.Generator | None = None) -> torch.Tensor:
    """In-place ``erase`` (``img`` [C,H,W]); returns ``img``."""
    if img.dim() != 3:
        raise ValueError(f"erase_ needs a [C,H,W] tensor, got shape {tuple(img.shape)}")
    _check_pair(img, mask)
    mask = mask.unsqueeze(0) if isinstance(mask, torch.Tensor) else np.asarray(mask)[None]
    erase_batch_([img], mask, _selection(class_ids, img.device), fill, generator)
    return img


def erase(img: torch.Tensor, mask, class_ids: Sequence[int], fill: Fill = "random",
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Copy of ``img`` [C,H,W] (normalised) whose pixels of ``class_ids`` in ``mask`` [H,W] are replaced.

    fill: 'random' per-pixel N(0,1); 'random_1' one N(0,1) colour per region; 'random_mix' per
    region either of those with probability 1/2 (the reference); 'random_mix_sample' the same coin
    once per image; 'region_mean' each region's own mean colour; 'image_mean' the image's mean
    colour; a number: that constant. Pixels outside the regions never change. CPU tensors take a
    numpy fast path; CUDA tensors (use a CUDA generator) and tensors that require grad go through
    ``erase_batch``.
    """
    _check_pair(img, mask)
    if not _on_numpy(img):
        mask = torch.as_tensor(np.ascontiguousarray(mask) if isinstance(mask, np.ndarray) else mask, device=img.device)
        return erase_batch(img.unsqueeze(0), mask.unsqueeze(0), _selection(class_ids, img.device), fill, generator)[0]
    return erase_(img.clone(memory_format=torch.contiguous_format), mask, class_ids, fill, generator)


def erase_batch_(imgs: torch.Tensor | Sequence[torch.Tensor], masks, selected, fill: Fill = "random",
                 generator: torch.Generator | None = None, mirrored=None) -> torch.Tensor | Sequence[torch.Tensor]:
    """In-place ``erase_batch``; returns ``imgs``.

    imgs: a [B,C,H,W] tensor, or a list of B [C,H,W] tensors (a dataset's samples); masks: [B,H,W],
    a list of B [H,W], or ``MaskRuns`` (only the erased classes' runs are expanded); selected [B,K]
    bool (tensors or numpy). mirrored: optional [B] bool, rows
    whose image was flipped horizontally but whose mask was not: the mask is read mirrored (pixels
    and left/right ids), which is cheaper than flipping it. On CPU (contiguous, no grad) only the
    erased pixels are touched: numpy over views of the same memory, N(0,1) drawn for those pixels
    alone in one torch call per batch. Elsewhere it is ``erase_batch`` copied back.
    """
    fill = check_fill(fill)
    rows = list(imgs) if isinstance(imgs, torch.Tensor) else imgs
    if len(masks) != len(rows) or selected.ndim != 2 or selected.shape[0] != len(rows):
        raise ValueError(f"erase_batch_ needs B images, B masks and selected [B,K]; got {len(rows)}, {len(masks)} "
                         f"and {tuple(selected.shape)}")
    mirrored = np.zeros(len(rows), bool) if mirrored is None else _numpy(mirrored).astype(bool)
    if all(_on_numpy(img) for img in rows):
        masks = masks if isinstance(masks, MaskRuns) else [_numpy(m) for m in masks]
        _erase_numpy([img.numpy() for img in rows], masks, _numpy(selected).astype(bool), fill, generator, mirrored)
        return imgs
    device = rows[0].device
    masks = masks.maps() if isinstance(masks, MaskRuns) else masks
    masks = torch.stack([torch.as_tensor(flip_mask(_numpy(m)) if f else _numpy(m))
                         for m, f in zip(masks, mirrored)]).to(device)
    for img, new in zip(rows, erase_batch(torch.stack(rows), masks, torch.as_tensor(_numpy(selected)).to(device),
                                          fill, generator)):
        img.copy_(new)
    return imgs


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


def _pixels(mask: np.ndarray, selected: np.ndarray, single: int, mirror: bool,
            with_classes: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat indices of the erased pixels of one image (and their classes), its mask read mirrored if
    ``mirror`` (the image was flipped, the mask not)."""
    mask = np.ascontiguousarray(mask)
    if mirror:  # class k of the flipped image is class MIRROR[k] of the unflipped mask, columns reversed
        selected = selected[MIRROR_LUT[:len(selected)]]
        single = int(MIRROR_LUT[single]) if single >= 0 else -1
    region = _region(mask, selected, single)
    if mirror:
        region = cv2.flip(region.view(np.uint8), 1).view(np.bool_)
    pix = region.reshape(-1).nonzero()[0]  # numpy's nonzero is fast on bool only (7x slower on uint8)
    if not with_classes:
        return pix, None
    shown = flip_mask(mask) if mirror else mask
    return pix, shown.reshape(-1)[pix].astype(np.intp)


def _fill_values(fill: Fill, planes: list[np.ndarray], pixels: list[np.ndarray], cls: np.ndarray | None,
                 K: int, generator: torch.Generator | None) -> np.ndarray:
    """Fill of every erased pixel, [C, N], in the order of ``pixels``. planes: [C,H*W] views of the
    erased images; pixels: their erased flat indices; cls: each pixel's class."""
    C, R = planes[0].shape[0], len(planes)
    sizes = [len(p) for p in pixels]
    N = sum(sizes)
    if fill == "random":  # the reference's default: no per-pixel bookkeeping
        return torch.randn((C, N), generator=generator).numpy()
    row = np.repeat(np.arange(R), sizes)

    def colours() -> np.ndarray:  # one N(0,1) colour per (image, class), per pixel: [C, N]
        return torch.randn((R, K, C), generator=generator).numpy()[row, cls].T

    if fill == "random_1":
        return colours()
    if fill in ("random_mix", "random_mix_sample"):  # the reference tosses per region
        coin = (torch.rand((R, K) if fill == "random_mix" else (R, 1), generator=generator) < 0.5).numpy()
        use_noise = coin[row, cls] if fill == "random_mix" else coin[row, 0]
        noise = torch.randn((C, N), generator=generator).numpy()
        return np.where(use_noise, noise, colours())
    if fill == "region_mean":
        group = row * K + cls
        counts = np.maximum(np.bincount(group, minlength=R * K), 1)
        values = np.concatenate([p[:, i] for p, i in zip(planes, pixels)], 1)  # [C, N]
        return np.stack([(np.bincount(group, v, R * K) / counts)[group] for v in values]).astype(values.dtype)
    if fill == "image_mean":
        return np.stack([p.mean(1) for p in planes])[row].T
    return np.full((C, N), fill, np.float32)


def _erase_numpy(planes: list[np.ndarray], masks: list[np.ndarray] | MaskRuns, selected: np.ndarray, fill: Fill,
                 generator: torch.Generator | None, mirrored: np.ndarray) -> None:
    """The CPU core: each ``planes[b]`` [C,H,W] (contiguous) erased in place where ``selected[b]`` says."""
    rows = np.flatnonzero(selected.any(1)).tolist()
    if not rows:
        return
    for r in rows:
        shape = (masks.height, masks.width) if isinstance(masks, MaskRuns) else masks[r].shape
        if shape != planes[r].shape[1:]:
            raise ValueError(f"mask shape {shape} does not match image shape {planes[r].shape}")
    per_class = fill in ("random_1", "random_mix", "random_mix_sample", "region_mean")
    if isinstance(masks, MaskRuns):
        pixels, cls = erased_pixels(masks, selected, rows, mirrored, per_class)
    else:
        single = np.where(selected.sum(1) == 1, selected.argmax(1), -1)
        found = [_pixels(masks[r], selected[r], int(single[r]), bool(mirrored[r]), per_class) for r in rows]
        pixels = [p for p, _ in found]
        cls = np.concatenate([c for _, c in found]) if per_class else None
    if not sum(len(p) for p in pixels):  # only absent classes chosen: the images stay as they are (reference)
        return
    flat = [planes[r].reshape(planes[r].shape[0], -1) for r in rows]
    values = _fill_values(fill, flat, pixels, cls, selected.shape[1], generator)
    start = 0
    for f, pix in zip(flat, pixels):
        for k in range(len(f)):  # 1-D fancy assignment per channel: faster than one 2-D one
            f[k][pix] = values[k, start:start + len(pix)]
        start += len(pix)


def erase_batch(imgs: torch.Tensor, masks: torch.Tensor, selected: torch.Tensor, fill: Fill = "random",
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Batched ``erase`` without a Python loop over samples or a host sync (GPU friendly).

    imgs [B,C,H,W] float, masks [B,H,W] integer (uint8 is fine), selected [B,K] bool: class k is
    erased in sample b. Ids >= K in a mask are never erased. Returns a new tensor.
    """
    fill = check_fill(fill)
    _check_batch(imgs, masks, selected)
    B, C, H, W = imgs.shape
    K = selected.shape[1]
    ids = masks.reshape(B, H * W).long()
    known = ids < K
    ids = ids.clamp(max=K - 1)
    region = (selected.to(imgs.device).gather(1, ids) & known).view(B, 1, H, W)

    def per_region(table: torch.Tensor) -> torch.Tensor:  # table [B,K,C] -> [B,C,H,W]
        return table.gather(1, ids.unsqueeze(2).expand(B, H * W, table.shape[2])).transpose(1, 2).reshape(
            B, table.shape[2], H, W)

    if fill == "random":
        values = _randn(imgs.shape, generator, imgs)
    elif fill == "random_1":
        values = per_region(_randn((B, K, C), generator, imgs))
    elif fill in ("random_mix", "random_mix_sample"):
        coin = _rand((B, K) if fill == "random_mix" else (B, 1), generator, imgs) < 0.5
        coin = per_region(coin.expand(B, K).unsqueeze(2).to(imgs.dtype)).bool()
        noise = _randn(imgs.shape, generator, imgs)
        values = torch.where(coin, noise, per_region(_randn((B, K, C), generator, imgs)))
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


def _present(masks: torch.Tensor | Sequence[np.ndarray] | MaskRuns) -> torch.Tensor:
    """[B, NUM_CLASSES] bool: which classes each mask holds (ids >= NUM_CLASSES ignored)."""
    if isinstance(masks, MaskRuns):
        return torch.from_numpy(masks.present())
    if not isinstance(masks, torch.Tensor):
        return torch.from_numpy(np.stack([np.bincount(_numpy(m).ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES] > 0
                                          for m in masks]))
    B = masks.shape[0]  # ids >= NUM_CLASSES land in one spare column: no host sync
    ids = masks.reshape(B, -1).long().clamp(max=NUM_CLASSES)
    present = torch.zeros(B, NUM_CLASSES + 1, dtype=torch.bool, device=masks.device)
    present.scatter_(1, ids, True)
    return present[:, :NUM_CLASSES]


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
        if isinstance(n_erase, str) and any(t.strip().isdigit() for t in n_erase.split(",")):
            raise ValueError(f"n_erase {n_erase!r} is a string: give a number of regions as an int "
                             f"(n_erase={n_erase.strip()}) or classes to erase as a list (n_erase=[...])")
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
        if not (classes is None or isinstance(classes, (str, list, tuple))):
            raise ValueError(f"classes must be a list of class names/ids or an 'a,b' string, got {classes!r}")
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
        self._allowed, self._class_ids = allowed, torch.tensor(self.classes)

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
        apply = _rand(masks.shape[0], generator, torch.empty(0, device=masks.device)) < self.p
        return self.select_batch(masks, generator) & apply.unsqueeze(1)

    def select_batch(self, masks: torch.Tensor | Sequence[np.ndarray] | MaskRuns,
                     generator: torch.Generator | None = None, mirrored=None) -> torch.Tensor:
        """``choose`` for B masks at once (ignores ``p``): selected [B,NUM_CLASSES] bool.

        masks: a [B,H,W] tensor (the result is on its device), a list of B [H,W] arrays or
        ``MaskRuns`` (CPU); they matter only with present_only. mirrored: [B] bool, rows whose image was flipped but
        whose mask was not (see ``erase_batch_``)."""
        B = len(masks)
        device = masks.device if isinstance(masks, torch.Tensor) else torch.device("cpu")
        like = torch.empty(0, device=device)
        if self.fixed is not None:
            selected = torch.zeros(B, NUM_CLASSES, dtype=torch.bool, device=device)
            selected[:, self.fixed] = True
            return selected
        if self.lo == self.hi == 1 and not self.present_only:  # the reference setting: one uniform draw each
            pick = (_rand(B, generator, like) * len(self.classes)).long().clamp_(max=len(self.classes) - 1)
            selected = torch.zeros(B, NUM_CLASSES, dtype=torch.bool, device=device)
            selected[torch.arange(B, device=device), self._class_ids.to(device)[pick]] = True
            return selected
        allowed = self._allowed.to(device).expand(B, NUM_CLASSES)
        if self.present_only:
            present = _present(masks)
            if mirrored is not None:  # class k of a flipped image is class MIRROR[k] of its unflipped mask
                flip = torch.as_tensor(_numpy(mirrored), dtype=torch.bool, device=present.device)
                present = torch.where(flip.unsqueeze(1), present[:, torch.from_numpy(MIRROR)], present)
            allowed = allowed & present.to(device)
        if self.lo == self.hi:
            n = torch.full((B,), self.lo, device=device)
        else:
            dev = _device_of(generator, like)
            n = torch.randint(self.lo, self.hi + 1, (B,), generator=generator, device=dev).to(device)
        # A uniform random subset of size n: the n smallest of i.i.d. uniform scores among allowed ids.
        order = _rand((B, NUM_CLASSES), generator, like).masked_fill(~allowed, 2.0).argsort(1)
        first_n = torch.arange(NUM_CLASSES, device=device).expand(B, NUM_CLASSES) < n.unsqueeze(1)
        return torch.zeros_like(allowed).scatter_(1, order, first_n) & allowed

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
    """Horizontal flip of an image and its label map, swapping the ids of left/right pairs (``labels.MIRROR``).

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
    """Flip (image, mask) with probability ``p``; the mask's left/right ids swap, so each class keeps its side."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = check_probability(p)

    def __call__(self, img: torch.Tensor | np.ndarray, mask, generator: torch.Generator | None = None):
        """-> (img, mask), both flipped with probability p (see ``flip_pair`` for layouts)."""
        if _coin(generator) < self.p:
            return flip_pair(img, mask)
        return img, mask

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"

