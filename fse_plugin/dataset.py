"""FSErasing-wrapped RecordIO dataset for arcface_torch, enabled by the ``config.fse`` line.

``FSEMXFaceDataset(root_dir, local_rank, fse)`` has MXFaceDataset's constructor and output:
``(float CHW image in [-1, 1], long label)``. The image pipeline keeps upstream's semantics
(RGB, horizontal flip with p=0.5 drawn as ``torch.rand(1) < p``, ToTensor + Normalize(0.5, 0.5),
bit for bit) without PIL round trips: cv2 decode, cv2 flip, a 256-entry lookup table into
channel planes. With ``fse`` set (checked by ``fseconfig.FSEConfig``), each sample's mask is read
from the mask cache as runs of equal pixels (never expanded: only the chosen classes' runs become
pixel indices) and FSErasing is applied in [-1, 1] space, a whole batch at a time (``__getitems__``,
what DataLoader workers call). All draws come from torch's default generator, which arcface_torch's
``worker_init_fn`` seeds per worker (num_workers * rank + worker_id + seed), so runs repeat.

What a DataLoader worker receives does not grow with the rec: the per-record table (keys, offsets,
labels) moves to shared memory the first time the dataset is pickled (spawn and forkserver workers
map it; forked ones share it anyway), the .rec is read by offset without its index, and the mask
cache is memory-mapped by each worker.

A record whose mask is missing from the cache (its image was undecodable when the cache was
built) or damaged is served un-erased, counted and logged; the training goes on. Messages go to
this module's logger, so inside arcface_torch they land in ``training.log``.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from fse_plugin import maskcache, recordio
from fse_plugin.common import NORM_LUT, FSEError, checks
from fse_plugin.erasing import FSErasing, MaskRuns
from fse_plugin.erasing.engines import erase_numpy
from fse_plugin.fseconfig import FSEConfig

__all__ = ["FSEMXFaceDataset", "validate_fse_config"]

log = logging.getLogger(__name__)

_SLOTS = 1024  # counters per DataLoader worker (+ the main process): exact without locks
_LOGGED = 16  # damaged keys remembered per slot, so each is logged once over all workers and epochs
_MISSING, _DAMAGED = 0, 1
_KEY, _OFFSET, _LABEL = 0, 1, 2  # rows of the per-record table
_FEW = 4  # erased samples up to which their masks are expanded whole rather than read as runs


def validate_fse_config(fse: Mapping[str, Any],
                        rec_dir: str | Path | None = None) -> dict[str, Any]:
    """Deprecated (0.3, removed in 0.4):
    ``FSEConfig.from_mapping(fse, rec_dir=rec_dir).as_dict()``."""
    warnings.warn("validate_fse_config is deprecated; use "
                  "fse_plugin.fseconfig.FSEConfig.from_mapping", DeprecationWarning, stacklevel=2)
    return FSEConfig.from_mapping(fse, rec_dir=rec_dir).as_dict()


def _open_mask_cache(config: FSEConfig, rec_dir: str | Path, progress: bool) -> maskcache.MaskCache:
    """The cache of ``config.masks``, checked against the rec before the first step: it belongs to
    ``rec_dir`` and every file's structure is sound (``MaskCache.check``); with ``config.verify``
    every entry is decoded too. A problem is an FSEError naming the masks key and the rebuild
    command."""
    try:
        cache = maskcache.MaskCache(config.masks)
        cache.check_source(rec_dir)
        if config.verify:
            cache.verify(progress=progress)
        else:
            cache.check()
    except maskcache.CacheError as e:
        raise FSEError(f"{config.prefix}.masks: {e}") from e
    return cache


class FSEMXFaceDataset(Dataset):
    """arcface_torch's MXFaceDataset contract, read with fse_plugin.recordio, optionally FSErasing.

    root_dir: dir with train.rec/train.idx. fse: None (plain upstream pipeline, faster) or the
    ``config.fse`` dict (``FSEConfig``). transform: optional callable applied last to the
    normalised image tensor. A record without a mask in the cache, or whose mask is damaged, is
    served un-erased and counted in ``missing_masks`` / ``damaged_masks`` (summed over all
    DataLoader workers); the first missing one and each damaged one is logged once.

    Example::

        >>> ds = FSEMXFaceDataset("/data/ms1m-retinaface-t1", 0, fse=dict(p=0.5))
        # cache at <rec>/fse_masks
        >>> img, label = ds[0]
    """

    def __init__(self, root_dir: str | Path, local_rank: int, fse: Mapping[str, Any] | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        if transform is not None and not callable(transform):
            raise FSEError("FSEMXFaceDataset: transform must be callable or None, got "
                           f"{type(transform).__name__}")
        self.root_dir = str(root_dir)
        self.local_rank = checks.count(local_rank, "FSEMXFaceDataset: local_rank", minimum=0)
        self.transform = transform
        self.config = None if fse is None else FSEConfig.from_mapping(fse, rec_dir=root_dir)
        with recordio.open_rec(root_dir) as reader:
            index = recordio.image_index(reader)
            self._rec = recordio.RecordFile(reader.rec_path)
        self._table, self._shared = np.stack([index.keys, index.offsets, index.labels]), None
        self.flip_p = 0.5 if self.config is None else self.config.flip
        # float64 comparisons
        self._cuts = None if self.config is None else np.array([self.flip_p, self.config.p])
        self.erasing = self.masks = None
        if self.config is not None:
            self.erasing = FSErasing.from_config(self.config)
            self.masks = _open_mask_cache(self.config, self.root_dir, progress=local_rank == 0)
            # Shared memory, so counts made in forked or spawned workers are seen here.
            self._counts = torch.zeros(_SLOTS, 2, dtype=torch.int64).share_memory_()
            self._logged = torch.full((_SLOTS, _LOGGED), -1, dtype=torch.int64).share_memory_()
            # in arcface_torch's training.log: erasing is on, with these settings
            log.info("%r", self)

    @property
    def keys(self) -> np.ndarray:
        """Image record keys, in the rec's order (int64)."""
        return self._table[_KEY]

    @property
    def labels(self) -> np.ndarray:
        """Identity labels, aligned with ``keys`` (int64)."""
        return self._table[_LABEL]

    @property
    def missing_masks(self) -> int:
        """Samples served un-erased because the cache has no mask for their record."""
        return 0 if self.config is None else int(self._counts[:, _MISSING].sum())

    @property
    def damaged_masks(self) -> int:
        """Samples served un-erased because their mask (or its chunk file) failed the cache's
        checks."""
        return 0 if self.config is None else int(self._counts[:, _DAMAGED].sum())

    def __len__(self) -> int:
        return self._table.shape[1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The samples of a batch (what a DataLoader worker asks for); with erasing on, its draws
        and erasing are done for the whole batch at once."""
        keys, offsets, labels = self._table[:, np.asarray(indices, np.intp)]
        if self.erasing is None:
            # upstream's draws: one torch.rand(1) per sample, as RandomHorizontalFlip
            samples = [torch.from_numpy(_sample(self._image(k, o),
                                                float(torch.rand(1)) < self.flip_p))
                       for k, o in zip(keys.tolist(), offsets.tolist())]
        else:
            samples = list(map(torch.from_numpy, self._erased_samples(keys, offsets)))
        if self.transform is not None:
            samples = [self.transform(s) for s in samples]
        return list(zip(samples, torch.from_numpy(labels).unbind(0)))

    def _erased_samples(self, keys: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
        """The samples of a batch with FSErasing, one set of draws for them all (which samples are
        flipped and erased, then their classes, then the fill's values), written straight into the
        samples (the engine of ``erase``, whose checks the dataset's samples pass by construction).

        The erased samples' masks stay runs (``MaskRuns``): only the chosen classes' runs are
        expanded, and flipped images' masks are read mirrored instead of flipped. Masks, pixels and
        draws come before the decoding, so that each image is erased right after it is decoded,
        while still in the caches."""
        flip, erased = (torch.rand(len(keys), 2).numpy() < self._cuts).T
        erased = np.flatnonzero(erased)
        masks = self._masks(keys[erased]) if len(erased) else None
        # one array per sample, as upstream: the allocator hands back memory that is still in the
        # caches
        samples = (_sample(self._image(k, o), f)
                   for k, o, f in zip(keys.tolist(), offsets.tolist(), flip))
        if masks is None or not masks.found:
            return list(samples)
        rows = erased[masks.found].tolist()
        if len(rows) > _FEW:
            maps = MaskRuns.joined(masks.values, masks.lengths, np.array(masks.counts),
                                   masks.height, masks.width)
        else:
            # a few samples (a single dataset[i]): whole maps take fewer calls than the batched runs
            maps = masks.masks()
        mirrored = flip[rows]
        selected = self.erasing.get_params(maps, mirrored=mirrored).numpy()
        return erase_numpy(self._checked(samples, rows, keys), maps, selected, self.erasing.fill,
                           None, mirrored, at=rows)

    def _checked(self, samples: Iterable[np.ndarray], rows: list[int],
                 keys: np.ndarray) -> Iterator[np.ndarray]:
        """The samples, each one to erase checked against the masks' size as it comes."""
        size, rows = (3, self.masks.height, self.masks.width), set(rows)
        for b, sample in enumerate(samples):
            if sample.shape != size and b in rows:
                raise maskcache.CacheError(
                    f"{self.config.masks}: mask of record {keys[b]} is {size[2]}x{size[1]}, its "
                    "image in "
                    f"{self._rec.path} {sample.shape[2]}x{sample.shape[1]}; rebuild the cache for "
                    f"{self.root_dir}")
            yield sample

    def _image(self, key: int, offset: int) -> np.ndarray:
        _, payload = recordio.unpack(self._rec.read_record(offset, key)[0])
        try:
            return recordio.decode_image(payload)
        except ValueError as e:
            raise recordio.RecordIOError(f"{self._rec.path}: record {key}: {e} (a damaged "
                                         "JPEG?)") from None

    def _slot(self) -> int:
        info = torch.utils.data.get_worker_info()
        return 0 if info is None else 1 + info.id % (_SLOTS - 1)

    def _masks(self, keys: np.ndarray) -> maskcache.RunsBatch:
        """The masks of the erased samples' ``keys``, as runs; missing or damaged ones are counted
        (the first missing one and each damaged one logged)."""
        masks = self.masks.get_runs_batch(keys)
        for j, error in masks.damaged.items():
            self._damaged(int(keys[j]), error)
        missing = masks.missing
        if missing:
            if self._counts[:, _MISSING].sum() == 0:
                log.warning("%s: no mask for record %d of %s (undecodable when the cache was "
                            "built); serving it un-erased. Further ones are counted in "
                            "missing_masks, not logged", self.config.masks, keys[missing[0]],
                            self._rec.path)
            self._counts[self._slot(), _MISSING] += len(missing)
        return masks

    def _damaged(self, key: int, error: maskcache.DamagedEntryError) -> None:
        """Count it; log each damaged key once over all workers and epochs (the first _LOGGED per
        slot)."""
        slot = self._slot()
        self._counts[slot, _DAMAGED] += 1
        if bool((self._logged == key).any()):
            return
        free = (self._logged[slot] < 0).nonzero()
        if len(free):
            self._logged[slot, int(free[0])] = key
            log.warning("record %d of %s: damaged mask, serving it un-erased (counted in "
                        "damaged_masks; `fse cache verify` checks the whole cache): %s", key,
                        self._rec.path, error)

    def __getstate__(self) -> dict[str, Any]:
        """What a spawned or forkserver DataLoader worker receives: the per-record table as a
        shared-memory tensor (moved there once; torch's pickler sends a handle, not the data) and
        where the main process logs to, so that the worker's messages reach the same files."""
        if self._shared is None:
            self._shared = torch.from_numpy(self._table).share_memory_()
            self._table = self._shared.numpy()
        state = {**self.__dict__, "_table": None, "_log_files": _log_files()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        _log_to(state.pop("_log_files"))
        self.__dict__.update(state)
        self._table = self._shared.numpy()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root_dir={self.root_dir!r}, records={len(self)}, "
                f"flip={self.flip_p}, erasing={self.erasing!r}, "
                f"masks={self.config and self.config.masks!r})")


def _log_files() -> list[tuple[str, int, str | None]]:
    """(path, level, format) of the file handlers this module's messages reach (arcface_torch's
    training.log)."""
    files, logger = [], log
    while logger is not None:
        files += [(h.baseFilename, h.level, h.formatter and h.formatter._fmt)
                  for h in logger.handlers if isinstance(h, logging.FileHandler)]
        logger = logger.parent if logger.propagate else None
    return files


def _log_to(files: list[tuple[str, int, str | None]]) -> None:
    """In a spawned worker (no logging configured), send this module's messages to the parent's log
    files."""
    if not files or log.hasHandlers():
        return
    for path, level, fmt in files:
        handler = logging.FileHandler(path)
        handler.setLevel(level)
        handler.setFormatter(logging.Formatter(fmt))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def _sample(img: np.ndarray, flip: bool) -> np.ndarray:
    """HWC uint8 RGB -> CHW float32 in [-1, 1], flipped if asked: ToTensor + Normalize(0.5, 0.5),
    bit for bit, through a 256-entry lookup table per channel plane."""
    if flip:
        img = cv2.flip(img, 1)
    out = np.empty((3, *img.shape[:2]), np.float32)
    for c in range(3):
        cv2.LUT(img[:, :, c], NORM_LUT, dst=out[c])
    return out
