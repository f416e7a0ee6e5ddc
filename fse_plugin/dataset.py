"""FSErasing-wrapped RecordIO dataset for arcface_torch, and the ``config.fse`` entry that enables it.

``FSEMXFaceDataset(root_dir, local_rank, fse)`` has MXFaceDataset's constructor and output:
``(float CHW image in [-1, 1], long label)``. The image pipeline keeps upstream's semantics
(RGB, horizontal flip with p=0.5 drawn as ``torch.rand(1) < p``, ToTensor + Normalize(0.5, 0.5),
bit for bit) without PIL round trips: cv2 decode, cv2 flip, a 256-entry lookup table into
channel planes. With ``fse`` set, each sample's mask is read from the mask cache and FSErasing
is applied in [-1, 1] space. All draws come from torch's default generator, which arcface_torch's
``worker_init_fn`` seeds per worker (num_workers * rank + worker_id + seed), so runs repeat.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from fse_plugin import maskcache, recordio
from fse_plugin.common import NORM_LUT, FSEError
from fse_plugin.erasing import FSErasing, check_fill, check_probability, erase_, flip_pair
from fse_plugin.labels import parse_class_list

log = logging.getLogger(__name__)

FSE_DEFAULTS: dict[str, Any] = dict(masks=None, p=1.0, n_erase=1, classes=None, present_only=False,
                                    fill="random", flip=0.5)
"""Keys of ``config.fse`` and their defaults (masks None = ``<rec>/fse_masks``)."""

_MISSING_SLOTS = 1024  # one counter per DataLoader worker (+ the main process): exact without locks


class FSEConfigError(FSEError):
    """A bad ``config.fse`` entry; the message names the key."""


def _key_error(key: str, what: str) -> FSEConfigError:
    return FSEConfigError(f"config.fse.{key}: {what}")


def validate_fse_config(fse: Mapping[str, Any], rec_dir: str | Path | None = None) -> dict[str, Any]:
    """Check ``config.fse`` at start-up and return it normalised (defaults filled, classes as ids,
    masks as an existing path). Raises FSEConfigError naming the bad key, so a typo fails before
    any worker starts rather than inside one."""
    if not isinstance(fse, Mapping):
        raise FSEConfigError(f"config.fse must be a dict such as dict(masks=..., p=0.5), got {fse!r}")
    unknown = sorted(set(fse) - set(FSE_DEFAULTS))
    if unknown:
        raise _key_error(unknown[0], f"unknown key; known keys: {', '.join(FSE_DEFAULTS)}")
    cfg = {**FSE_DEFAULTS, **fse}
    for key in ("p", "flip"):
        try:
            cfg[key] = check_probability(cfg[key], "value")
        except ValueError as e:
            raise _key_error(key, str(e)) from None
    try:
        cfg["classes"] = None if cfg["classes"] is None else parse_class_list(cfg["classes"])
    except (KeyError, ValueError, TypeError) as e:
        raise _key_error("classes", e.args[0]) from None
    if cfg["classes"] == []:
        raise _key_error("classes", "empty list of classes")
    try:
        check_fill(cfg["fill"])
    except ValueError as e:
        raise _key_error("fill", str(e)) from None
    if not isinstance(cfg["present_only"], bool):
        raise _key_error("present_only", f"must be True or False, got {cfg['present_only']!r}")
    try:
        FSErasing(**_erasing_kwargs(cfg))
    except (KeyError, ValueError) as e:
        raise _key_error("n_erase", e.args[0]) from None
    if cfg["masks"] is None:
        if rec_dir is None:
            raise _key_error("masks", "missing: give the mask cache path (or the rec dir to default to "
                                      "<rec>/fse_masks)")
        cfg["masks"] = maskcache.default_cache_path(rec_dir)
    masks = Path(str(cfg["masks"])).expanduser()
    if not masks.exists():
        cmd = maskcache.rebuild_command(masks, None if rec_dir is None else str(rec_dir))
        raise _key_error("masks", f"no mask cache at {masks}; build it with: {cmd}")
    cfg["masks"] = str(masks)
    return cfg


def _erasing_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: cfg[k] for k in ("p", "n_erase", "classes", "present_only", "fill")}


class FSEMXFaceDataset(Dataset):
    """arcface_torch's MXFaceDataset contract, read with fse_plugin.recordio, optionally FSErasing.

    root_dir: dir with train.rec/train.idx. fse: None (plain upstream pipeline, faster) or the
    ``config.fse`` dict (see ``FSE_DEFAULTS``). transform: optional callable applied last to the
    normalised image tensor. A record without a mask in the cache is served un-erased and counted
    in ``missing_masks`` (summed over all DataLoader workers).
    """

    def __init__(self, root_dir: str | Path, local_rank: int, fse: Mapping[str, Any] | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.root_dir = str(root_dir)
        self.local_rank = local_rank
        self.transform = transform
        self.reader = recordio.open_rec(root_dir)
        index = recordio.image_index(self.reader)
        self.keys, self.labels = index.keys, index.labels
        self.fse = None if fse is None else validate_fse_config(fse, root_dir)
        self.flip_p = 0.5 if self.fse is None else self.fse["flip"]
        self.erasing = self.masks = None
        if self.fse is not None:
            self.erasing = FSErasing(**_erasing_kwargs(self.fse))
            self.masks = maskcache.MaskCache(self.fse["masks"])
            self.masks.check_source(self.root_dir)  # CacheMismatchError says how to rebuild
        # Shared memory, so counts made in forked or spawned workers are seen here.
        self._missing = torch.zeros(_MISSING_SLOTS, dtype=torch.int64).share_memory_()

    @property
    def missing_masks(self) -> int:
        """Samples served un-erased because the cache has no mask for their record."""
        return int(self._missing.sum())

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = int(self.keys[index])
        _, payload = recordio.unpack(self.reader.read(key))
        img = recordio.decode_image(payload)
        flip = float(torch.rand(1)) < self.flip_p  # as RandomHorizontalFlip: one draw per sample
        mask = None
        if self.erasing is not None and float(torch.rand(1)) < self.erasing.p:
            mask = self._mask(key, img.shape[:2])  # read only for samples that get erased
        if flip:
            img, mask = flip_pair(img, mask)
        out = np.empty((3, *img.shape[:2]), np.float32)
        for c in range(3):  # HWC uint8 -> CHW [-1, 1] planes: ToTensor + Normalize without PIL
            cv2.LUT(img[:, :, c], NORM_LUT, dst=out[c])
        sample = torch.from_numpy(out)
        if mask is not None:
            erase_(sample, mask, self.erasing.choose(mask), self.erasing.fill)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample, torch.tensor(int(self.labels[index]), dtype=torch.long)

    def _mask(self, key: int, shape: tuple[int, int]) -> np.ndarray | None:
        mask = self.masks.get(key)
        if mask is None:
            info = torch.utils.data.get_worker_info()
            slot = 0 if info is None else 1 + info.id % (_MISSING_SLOTS - 1)
            if self._missing[slot] == 0:
                log.warning("%s: no mask for record %d; serving it un-erased (counted in missing_masks)",
                            self.fse["masks"], key)
            self._missing[slot] += 1
            return None
        if mask.shape != shape:
            raise ValueError(f"{self.fse['masks']}: mask of record {key} is {mask.shape[1]}x{mask.shape[0]}, "
                             f"its image {shape[1]}x{shape[0]}; rebuild the cache for {self.root_dir}")
        return mask

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root_dir={self.root_dir!r}, records={len(self)}, "
                f"flip={self.flip_p}, erasing={self.erasing!r}, masks={self.fse and self.fse['masks']!r})")
