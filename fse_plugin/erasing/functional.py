"""``erase``: the functional form of FSErasing, for one image or a batch (torchvision's
``F.erase``)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from fse_plugin.common import FSEError
from fse_plugin.erasing.engines import erase_numpy, erase_torch
from fse_plugin.fseconfig import Fill, check_fill
from fse_plugin.labels import MIRROR_LUT, NUM_CLASSES, parse_class_list
from fse_plugin.maskruns import MaskRuns

__all__ = ["erase"]

Images = torch.Tensor | Sequence[torch.Tensor]


def erase(img: Images, mask: Any, classes: Any, fill: Fill = "random",
          generator: torch.Generator | None = None, *, mirrored: Any = None,
          inplace: bool = False) -> Images:
    """Replace the pixels of the chosen classes of normalised images; the other pixels never change.

    img: float ``[C,H,W]``, ``[B,C,H,W]``, or a list of B ``[C,H,W]`` tensors (a dataset's samples).
    mask: class ids ``[H,W]`` for one image; for a batch ``[B,H,W]`` (tensor or numpy), a list of B
    ``[H,W]``, or ``MaskRuns`` (the mask cache's runs: only the chosen classes' runs are expanded).
    classes: class names or ids erased in every image (``["nose", 21]``), or a bool selection,
    ``[K]`` for every image or ``[B, K]`` per image (``FSErasing.get_params``); ids >= K are never
    erased. fill: ``'random'`` per-pixel N(0,1); ``'random_1'`` one N(0,1) colour per region;
    ``'random_mix'`` per region either of those with probability 1/2 (the reference);
    ``'random_mix_sample'`` the same coin once per image; ``'region_mean'`` each region's mean
    colour; ``'image_mean'`` the image's mean colour; a number: that constant. mirrored: ``[B]``
    bool, images flipped horizontally whose masks were not: those masks are read mirrored (pixels
    and left/right ids), cheaper than flipping them. inplace: write into ``img`` and return it;
    otherwise a copy is erased.

    CPU tensors without grad take a numpy path that touches only the erased pixels; others (CUDA,
    autograd) a torch path. Both draw from ``generator`` (torch's default one if None) in the same
    order, so for one seed they erase with the same values.

    Example::

        >>> out = erase(img, mask, ["nose", "mouth"], fill="random")     # one [3,112,112] image
        >>> erase(batch, masks, FSErasing(p=0.5).get_params(masks), inplace=True)
    """
    fill = check_fill(fill)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise FSEError("erase: generator must be a torch.Generator or None, got "
                       f"{type(generator).__name__}")
    rows, single = _rows(img)
    masks = _masks(mask, len(rows), single)
    selected = _selection(classes, len(rows))
    flips = mirrored_rows(mirrored, len(rows))
    planes = _planes(rows)
    _check_shapes(rows if planes is None else planes, masks)
    if planes is None:
        out = _erase_tensors(rows, masks, selected, fill, generator, flips)
        if not inplace:
            return out[0] if single else out if isinstance(img, torch.Tensor) else list(out)
        if any(r.requires_grad and r.is_leaf for r in rows):
            raise FSEError("erase: inplace=True on images that require grad; erase a copy "
                           "(inplace=False)")
        for r, new in zip(rows, out):
            r.copy_(new)
        return img
    if not inplace:
        img = (img.clone(memory_format=torch.contiguous_format) if isinstance(img, torch.Tensor)
               else [r.clone(memory_format=torch.contiguous_format) for r in rows])
        planes = [r.numpy() for r in _rows(img)[0]]
    if isinstance(img, torch.Tensor) and img.dim() == 4 and img.is_contiguous():
        planes = img.numpy()  # a batch array: written in a few calls
    erase_numpy(planes, masks if isinstance(masks, MaskRuns) else [as_numpy(m) for m in masks],
                selected, fill, generator, flips)
    return img


def _planes(rows: list[torch.Tensor]) -> list[np.ndarray] | None:
    """numpy views of the images if each is a contiguous CPU tensor without grad (the numpy engine),
    else None."""
    try:
        planes = [r.numpy() for r in rows]  # refuses CUDA tensors and tensors that require grad
    except (TypeError, RuntimeError):
        return None
    return planes if all(p.flags.c_contiguous for p in planes) else None


def _erase_tensors(rows: list[torch.Tensor], masks: Any, selected: np.ndarray, fill: Fill,
                   generator: torch.Generator | None, flips: np.ndarray) -> torch.Tensor:
    """The torch engine on the rows stacked, masks flipped where ``flips``: a new [B,C,H,W]."""
    device = rows[0].device
    maps = masks.maps() if isinstance(masks, MaskRuns) else masks
    maps = torch.stack([torch.as_tensor(m if isinstance(m, torch.Tensor)
                                        else as_numpy(m)).to(device) for m in maps])
    maps = maps.long()
    if flips.any():
        lut = torch.from_numpy(MIRROR_LUT).to(device).long()
        maps = torch.where(torch.from_numpy(flips).to(device)[:, None, None], lut[maps].flip(-1),
                           maps)
    return erase_torch(torch.stack(rows), maps, torch.from_numpy(selected).to(device), fill,
                       generator)


def as_numpy(x: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _rows(img: Images) -> tuple[list[torch.Tensor], bool]:
    """The images as a list of [C,H,W] tensors, and whether one image was given (their dims are
    checked with the masks)."""
    if isinstance(img, torch.Tensor) and img.dim() in (3, 4):
        return ([img], True) if img.dim() == 3 else (list(img), False)
    if isinstance(img, (list, tuple)) and img and all(isinstance(r, torch.Tensor) for r in img):
        return list(img), False
    raise FSEError("erase: img must be a float [C,H,W] or [B,C,H,W] tensor or a non-empty list of "
                   f"[C,H,W] tensors, got {type(img).__name__} {tuple(getattr(img, 'shape', ()))}")


def _masks(mask: Any, n: int, single: bool) -> Sequence[Any] | MaskRuns:
    if isinstance(mask, MaskRuns):
        masks = mask
    elif single:
        masks = [mask]
    else:
        masks = list(mask) if isinstance(mask, (list, tuple)) else mask
    if len(masks) != n:
        raise FSEError(f"erase: {len(masks)} masks for {n} images")
    return masks


def _selection(classes: Any, n: int) -> np.ndarray:
    """[n, K] bool from class names/ids (the same for every image) or a bool selection [K] or
    [n, K]."""
    if isinstance(classes, (torch.Tensor, np.ndarray)) and classes.dtype in (torch.bool, np.bool_):
        sel = as_numpy(classes)
        if sel.ndim == 1:
            sel = np.broadcast_to(sel, (n, len(sel)))
        if sel.ndim != 2 or sel.shape[0] != n:
            raise FSEError(f"erase: classes as a selection must be bool [K] or [{n}, K], got "
                           f"{tuple(sel.shape)}")
        return sel
    ids = parse_class_list(as_numpy(classes).tolist()
                           if isinstance(classes, (torch.Tensor, np.ndarray)) else classes,
                           "classes", allow_empty=True)
    sel = np.zeros((n, NUM_CLASSES), bool)
    sel[:, ids] = True
    return sel


def mirrored_rows(mirrored: Any, n: int, name: str = "erase: mirrored") -> np.ndarray:
    """[n] bool from None (nothing mirrored) or n bools; FSEError naming ``name`` otherwise."""
    if mirrored is None:
        return np.zeros(n, bool)
    flips = as_numpy(mirrored)
    if flips.shape != (n,) or flips.dtype != np.bool_:
        raise FSEError(f"{name}: must be {n} bools (True where the image was flipped and its "
                       f"mask not), got {flips.dtype} {flips.shape}")
    return flips


def _check_shapes(images: list[torch.Tensor] | list[np.ndarray],
                  masks: Sequence[Any] | MaskRuns) -> None:
    """Each image float [C,H,W] with its mask's [H,W] (tensors, or their numpy views)."""
    runs_shape = (masks.height, masks.width) if isinstance(masks, MaskRuns) else None
    for r, x in enumerate(images):
        floating = x.is_floating_point() if isinstance(x, torch.Tensor) else x.dtype.kind == "f"
        if x.ndim != 3 or not floating:
            raise FSEError(f"erase: img must be float [C,H,W] images, got {x.dtype} "
                           f"{tuple(x.shape)}")
        shape = runs_shape or tuple(masks[r].shape)
        if shape != tuple(x.shape[1:]):
            raise FSEError(f"erase: mask shape {shape} does not match image shape {tuple(x.shape)}")
