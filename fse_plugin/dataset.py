"""FSErasing-wrapped RecordIO dataset for arcface_torch, and the ``config.fse`` entry that enables it.

``FSEMXFaceDataset(root_dir, local_rank, fse)`` has MXFaceDataset's constructor and output:
``(float CHW image in [-1, 1], long label)``. The image pipeline keeps upstream's semantics
(RGB, horizontal flip with p=0.5 drawn as ``torch.rand(1) < p``, ToTensor + Normalize(0.5, 0.5),
bit for bit) without PIL round trips: cv2 decode, cv2 flip, a 256-entry lookup table into
channel planes. With ``fse`` set, each sample's mask is read from the mask cache as runs of
equal pixels (never expanded: only the chosen classes' runs become pixel indices) and FSErasing
is applied in [-1, 1] space, a whole batch at a time (``__getitems__``, what DataLoader workers
call): a few numpy and torch calls per batch instead of per sample. All draws come from torch's
default generator, which arcface_torch's ``worker_init_fn`` seeds per worker
(num_workers * rank + worker_id + seed), so runs repeat.

A record whose mask is missing from the cache (its image was undecodable when the cache was
built) or damaged is served un-erased and counted; the training goes on.
"""
from __future__ import annotations

import logging
import numbers
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from fse_plugin import maskcache, recordio
from fse_plugin.common import NORM_LUT, FSEError
from fse_plugin.erasing import FSErasing, check_fill, check_probability, erase_batch_
from fse_plugin.maskruns import MaskRuns
from fse_plugin.labels import class_ids

__all__ = ["FSE_DEFAULTS", "FSEConfigError", "FSEMXFaceDataset", "open_mask_cache", "validate_fse_config"]

log = logging.getLogger(__name__)

FSE_DEFAULTS: dict[str, Any] = dict(masks=None, p=1.0, n_erase=1, classes=None, present_only=False,
                                    fill="random", flip=0.5, verify=False)
"""Keys of ``config.fse`` and their defaults (masks None = ``<rec>/fse_masks``)."""

_SLOTS = 1024  # counters per DataLoader worker (+ the main process): exact without locks
_LOGGED = 16  # damaged keys remembered per slot, so each is logged once over all workers and epochs
_MISSING, _DAMAGED = 0, 1


class FSEConfigError(FSEError):
    """A bad ``config.fse`` entry (or the mask cache it names); the message names the key."""


def _key_error(key: str, what: str) -> FSEConfigError:
    return FSEConfigError(f"config.fse.{key}: {what}")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _class_list(value: Any, key: str) -> list[int]:
    """Class names or int ids (a list/tuple, or a comma string of names) -> ids; strings are never ids."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise _key_error(key, f"must be a list of class names or ids, e.g. ['nose', 'mouth'] or [10, 17]; "
                              f"got {type(value).__name__} {value!r}")
    for item in items:
        if isinstance(item, str) and item.strip().lstrip("-").isdigit():
            raise _key_error(key, f"{item!r} is a string, not a class: write the id as an int ({item.strip()}) or "
                                  f"the class name")
        if not (isinstance(item, str) or _is_int(item)):
            raise _key_error(key, f"{item!r} is not a class name or id")
    try:
        ids = class_ids(i.strip() if isinstance(i, str) else i for i in items)
    except (KeyError, ValueError) as e:
        raise _key_error(key, e.args[0]) from None
    if not ids:
        raise _key_error(key, "empty list of classes")
    return ids


def _n_erase(value: Any) -> int | tuple[int, int] | list[int]:
    if _is_int(value):
        return int(value)
    if isinstance(value, tuple) and len(value) == 2 and all(_is_int(v) for v in value):
        return int(value[0]), int(value[1])
    if isinstance(value, str) and any(t.strip().isdigit() for t in value.split(",")):
        raise _key_error("n_erase", f"{value!r} is a string, not a count or a class: write a number of regions "
                                    f"as an int (n_erase={value.strip()}) or the classes to erase as a list")
    if isinstance(value, (list, str)):
        return _class_list(value, "n_erase")
    raise _key_error("n_erase", f"must be an int (how many regions), a (lo, hi) tuple of ints or a list of "
                                f"classes erased every time; got {type(value).__name__} {value!r}")


def _masks_path(value: Any, rec_dir: str | Path | None) -> str:
    if value is None:
        if rec_dir is None:
            raise _key_error("masks", "missing: give the mask cache path (or the rec dir to default to "
                                      "<rec>/fse_masks)")
        value = maskcache.default_cache_path(rec_dir)
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise _key_error("masks", f"must be the path of a mask cache directory, got {value!r}")
    masks = Path(value).expanduser()
    if not masks.exists():
        cmd = maskcache.rebuild_command(masks, None if rec_dir is None else str(rec_dir))
        raise _key_error("masks", f"no mask cache at {masks}; build it with: {cmd}")
    return str(masks)


def validate_fse_config(fse: Mapping[str, Any], rec_dir: str | Path | None = None) -> dict[str, Any]:
    """Check ``config.fse`` at start-up and return it normalised (defaults filled, classes as ids,
    masks as an existing path). Every key is type-checked; a string is never taken for a class id or
    a number. Raises FSEConfigError naming the key, so a typo fails before any worker starts."""
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
    for key in ("present_only", "verify"):
        if not isinstance(cfg[key], bool):
            raise _key_error(key, f"must be True or False, got {cfg[key]!r}")
    cfg["classes"] = None if cfg["classes"] is None else _class_list(cfg["classes"], "classes")
    cfg["n_erase"] = _n_erase(cfg["n_erase"])
    try:
        cfg["fill"] = check_fill(cfg["fill"])
    except ValueError as e:
        raise _key_error("fill", str(e)) from None
    try:
        FSErasing(**_erasing_kwargs(cfg))
    except (KeyError, ValueError) as e:
        raise _key_error("n_erase", e.args[0]) from None
    cfg["masks"] = _masks_path(cfg["masks"], rec_dir)
    return cfg


def _erasing_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: cfg[k] for k in ("p", "n_erase", "classes", "present_only", "fill")}


def open_mask_cache(path: str | Path, rec_dir: str | Path, verify: bool = False,
                    progress: bool = False) -> maskcache.MaskCache:
    """The mask cache of ``config.fse.masks``, checked against the rec before the first step.

    Always: it belongs to ``rec_dir`` and every file's structure is sound (``MaskCache.check``,
    cheap). ``verify``: every entry is read and decoded too (``MaskCache.verify``, ~20 us per mask
    on one core). A problem is an FSEConfigError naming config.fse.masks and the rebuild command.
    """
    try:
        cache = maskcache.MaskCache(path)
        cache.check_source(rec_dir)
        if verify:
            cache.verify(progress=progress)
        else:
            cache.check()
    except maskcache.CacheError as e:
        raise _key_error("masks", str(e)) from e
    return cache


class FSEMXFaceDataset(Dataset):
    """arcface_torch's MXFaceDataset contract, read with fse_plugin.recordio, optionally FSErasing.

    root_dir: dir with train.rec/train.idx. fse: None (plain upstream pipeline, faster) or the
    ``config.fse`` dict (see ``FSE_DEFAULTS``). transform: optional callable applied last to the
    normalised image tensor. A record without a mask in the cache, or whose mask is damaged, is
    served un-erased and counted in ``missing_masks`` / ``damaged_masks`` (summed over all
    DataLoader workers); the first missing one and each damaged one is logged once.
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
            self.masks = open_mask_cache(self.fse["masks"], self.root_dir, self.fse["verify"], local_rank == 0)
            # Shared memory, so counts made in forked or spawned workers are seen here.
            self._counts = torch.zeros(_SLOTS, 2, dtype=torch.int64).share_memory_()
            self._logged = torch.full((_SLOTS, _LOGGED), -1, dtype=torch.int64).share_memory_()
            log.info("%r", self)  # in arcface_torch's training.log: erasing is on, with these settings

    @property
    def missing_masks(self) -> int:
        """Samples served un-erased because the cache has no mask for their record."""
        return 0 if self.fse is None else int(self._counts[:, _MISSING].sum())

    @property
    def damaged_masks(self) -> int:
        """Samples served un-erased because their mask (or its chunk file) failed the cache's checks."""
        return 0 if self.fse is None else int(self._counts[:, _DAMAGED].sum())

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The samples of a batch (what a DataLoader worker asks for); with erasing on, its draws and
        erasing are done for the whole batch at once."""
        keys = [int(self.keys[i]) for i in indices]
        if self.erasing is None:  # upstream's draws: one torch.rand(1) per sample, as RandomHorizontalFlip
            samples = [_sample(self._image(key), float(torch.rand(1)) < self.flip_p) for key in keys]
        else:
            flip, erase = (torch.rand(len(keys), 2).numpy() < (self.flip_p, self.erasing.p)).T
            masks = {b: self._runs(keys[b]) for b in np.flatnonzero(erase).tolist()}  # together: warm caches
            # one array per sample, as upstream: the allocator reuses them (one batch array would page-fault)
            samples = [_sample(self._image(key), f) for key, f in zip(keys, flip)]
            self._erase(samples, masks, flip, keys)
        if self.transform is not None:
            samples = [self.transform(s) for s in samples]
        labels = torch.from_numpy(np.asarray(self.labels[np.asarray(indices, np.intp)], np.int64)).unbind(0)
        return list(zip(samples, labels))

    def _erase(self, samples: list[torch.Tensor], masks: dict[int, tuple | None], flip: np.ndarray,
               keys: list[int]) -> None:
        """FSErasing of the samples that drew it and have a mask, with one set of draws for them all.

        The masks stay runs (``MaskCache.get_runs``): only the chosen classes' pixels are expanded, and
        flipped images' masks are read mirrored instead of flipped."""
        rows = [b for b, m in masks.items() if m is not None]
        if not rows:
            return
        size = (self.masks.height, self.masks.width)
        for b in rows:
            if size != samples[b].shape[1:]:
                raise maskcache.CacheError(
                    f"{self.fse['masks']}: mask of record {keys[b]} is {size[1]}x{size[0]}, "
                    f"its image in {self.reader.rec_path} {samples[b].shape[2]}x{samples[b].shape[1]}; rebuild "
                    f"the cache for {self.root_dir}")
        runs = MaskRuns([masks[b] for b in rows], *size)
        selected = self.erasing.select_batch(runs, mirrored=flip[rows]).numpy()
        erase_batch_([samples[b] for b in rows], runs, selected, self.erasing.fill, mirrored=flip[rows])

    def _image(self, key: int) -> np.ndarray:
        _, payload = recordio.unpack(self.reader.read(key))
        try:
            return recordio.decode_image(payload)
        except ValueError as e:
            raise recordio.RecordIOError(f"{self.reader.rec_path}: record {key}: {e} (a damaged JPEG?)") from None

    def _slot(self) -> int:
        info = torch.utils.data.get_worker_info()
        return 0 if info is None else 1 + info.id % (_SLOTS - 1)

    def _runs(self, key: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The mask of ``key`` as runs; None (counted, first one logged) if missing or damaged."""
        try:
            runs = self.masks.get_runs(key)
        except maskcache.DamagedEntryError as e:
            self._damaged(key, e)
            return None
        if runs is None:
            if self._counts[:, _MISSING].sum() == 0:
                log.warning("%s: no mask for record %d of %s (undecodable when the cache was built); serving it "
                            "un-erased. Further ones are counted in missing_masks, not logged", self.fse["masks"],
                            key, self.reader.rec_path)
            self._counts[self._slot(), _MISSING] += 1
        return runs

    def _damaged(self, key: int, error: maskcache.DamagedEntryError) -> None:
        """Count it; log each damaged key once over all workers and epochs (the first _LOGGED per slot)."""
        slot = self._slot()
        self._counts[slot, _DAMAGED] += 1
        if bool((self._logged == key).any()):
            return
        free = (self._logged[slot] < 0).nonzero()
        if len(free):
            self._logged[slot, int(free[0])] = key
            log.warning("record %d of %s: damaged mask, serving it un-erased (counted in damaged_masks; "
                        "`fse cache verify` checks the whole cache): %s", key, self.reader.rec_path, error)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root_dir={self.root_dir!r}, records={len(self)}, "
                f"flip={self.flip_p}, erasing={self.erasing!r}, masks={self.fse and self.fse['masks']!r})")


def _sample(img: np.ndarray, flip: bool) -> torch.Tensor:
    """HWC uint8 RGB -> CHW float32 in [-1, 1], flipped if asked: ToTensor + Normalize(0.5, 0.5), bit
    for bit, through a 256-entry lookup table per channel plane."""
    if flip:
        img = cv2.flip(img, 1)
    out = np.empty((3, *img.shape[:2]), np.float32)
    for c in range(3):
        cv2.LUT(img[:, :, c], NORM_LUT, dst=out[c])
    return torch.from_numpy(out)
