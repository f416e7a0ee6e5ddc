"""Faces to explain with their masks, from where they live: pairs of a ``.bin`` pack, or the first
images of a rec."""
from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np

from fse_plugin.cam.inputs import as_masks
from fse_plugin.common import FSEError, checks, load_masks, masks_path_for
from fse_plugin.evaluation import load_bin, select_pairs
from fse_plugin.maskcache import MaskCache, default_cache_path
from fse_plugin.parsing import masks_from_checkpoint
from fse_plugin.recordio import RecordReader, image_index, open_rec

__all__ = ["PackPairs", "RecImages", "pack_masks_file", "rec_masks", "load_pack", "load_rec"]


@dataclass(frozen=True)
class PackPairs:
    """Selected pairs of a pack: ``images`` uint8 [2n,H,W,3] and ``masks`` [2n,H,W] in pack order
    (a, b, a, b ...), ``issame`` [n], ``pairs`` (the pairs' indices in the pack, [n]) and
    ``masks_source`` (where the masks came from, in words)."""

    images: np.ndarray
    masks: np.ndarray
    issame: np.ndarray
    pairs: np.ndarray
    masks_source: str


@dataclass(frozen=True)
class RecImages:
    """The first images of a rec: ``images`` uint8 [n,H,W,3], ``masks`` [n,H,W], identity ``labels``
    and record ``keys`` [n], and ``masks_source`` (where the masks came from, in words)."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    keys: np.ndarray
    masks_source: str


def pack_masks_file(bin_path: str | os.PathLike, masks: str | os.PathLike | None = None,
                    parser: str | os.PathLike | None = None) -> Path | None:
    """The masks file a pack's faces are explained with (None: ``parser`` predicts them): ``masks``,
    else ``<pack minus .bin>.masks.npy`` when no parser is given; refused when there are none."""
    if masks is not None and parser is not None:
        raise FSEError("give the masks of the pack (--masks) or a parser to predict them "
                       "(--parser), not both")
    if masks is not None or parser is not None:
        return None if masks is None else Path(masks)
    beside = masks_path_for(bin_path)
    if not beside.is_file():
        raise FSEError(f"{bin_path}: no masks: pass a masks .npy (--masks), a parser checkpoint "
                       f"(--parser), or put {beside.name} beside the pack")
    return beside


def load_pack(bin_path: str | os.PathLike, masks: str | os.PathLike | None = None,
              parser: str | os.PathLike | None = None, pairs: str = "all", limit: int | None = None,
              device: str = "cpu", batch_size: int = 64) -> PackPairs:
    """The first ``limit`` ``pairs`` ('same', 'diff', 'all': ``evaluation.select_pairs``) of a
    verification pack with their masks.

    Masks come from ``masks`` (.npy of the whole pack), else ``parser`` (predicted for the selected
    images only), else ``<pack minus .bin>.masks.npy``.
    """
    masks_file = pack_masks_file(bin_path, masks, parser)
    if limit is not None:
        checks.count(limit, "limit")
    images, issame = load_bin(str(bin_path))
    sel = select_pairs(issame, pairs, limit)
    if not len(sel):
        raise FSEError(f"{bin_path}: no {pairs!r} pairs to explain")
    keep = np.stack([2 * sel, 2 * sel + 1], 1).ravel()
    faces = images[keep]
    if masks_file is None:
        source, m = f"parser {parser}", masks_from_checkpoint(parser, faces, device, batch_size)
    else:
        source = str(masks_file)
        m = np.asarray(load_masks(source, len(images), images.shape[1:3])[keep])
        as_masks(m, where=source)
    return PackPairs(faces, m, np.asarray(issame)[sel], sel, source)


def rec_masks(rec: str | os.PathLike, mask_cache: str | os.PathLike | None = None,
              parser: str | os.PathLike | None = None) -> tuple[MaskCache | None, str]:
    """Where the masks of a rec (a directory or its .rec file) come from: the mask cache
    (``mask_cache`` or ``<rec_dir>/fse_masks``, opened and checked against the rec) or, None,
    ``parser``; and that, in words."""
    if parser is not None:
        if mask_cache is not None:
            raise FSEError("give the rec's mask cache (--mask-cache) or a parser to predict its "
                           "masks (--parser), not both")
        return None, f"parser {parser}"
    rec_dir = Path(rec) if Path(rec).is_dir() else Path(rec).parent
    path = mask_cache or default_cache_path(rec_dir)
    if mask_cache is None and not Path(path).exists():
        raise FSEError(f"{rec}: no mask cache at {path}: build it (fse cache build --rec {rec_dir} "
                       "--parser CKPT), or pass --mask-cache DIR or --parser CKPT")
    cache = MaskCache(path)
    cache.check_source(rec_dir)
    return cache, f"mask cache {path}"


def _records(reader: RecordReader, cache: MaskCache | None,
             source: str) -> Iterator[tuple[int, int, np.ndarray, np.ndarray | None]]:
    """(key, label, image, mask or None) in key order; records the cache has no mask for are skipped
    (e.g. undecodable when the cache was built). All images must share one shape."""
    idx = image_index(reader)
    shape = None
    for key, label in zip(idx.keys.tolist(), idx.labels.tolist()):
        mask = cache.get(key) if cache is not None else None
        if cache is not None and mask is None:
            continue
        img = reader.read_image(key)
        if shape is not None and img.shape != shape:
            raise FSEError(f"{reader.rec_path}: record {key} has image shape {img.shape}, earlier "
                           f"ones {shape}")
        if mask is not None and mask.shape != img.shape[:2]:
            raise FSEError(f"{source}: record {key} mask {mask.shape} does not fit image "
                           f"{img.shape[:2]}")
        shape = img.shape
        yield key, label, img, mask


def load_rec(rec: str | os.PathLike, limit: int | None = None,
             mask_cache: str | os.PathLike | None = None, parser: str | os.PathLike | None = None,
             device: str = "cpu", batch_size: int = 64) -> RecImages:
    """The first ``limit`` images of a rec (all for None) with masks.

    Masks come from ``parser`` if given, else the mask cache (``mask_cache`` or the default
    ``<rec_dir>/fse_masks``, checked against the rec); records the cache has no mask for are
    skipped.
    """
    if limit is not None:
        checks.count(limit, "limit")
    with open_rec(rec) as reader:
        cache, source = rec_masks(reader.rec_path, mask_cache, parser)
        rows = list(islice(_records(reader, cache, source), limit))
    if not rows:
        raise FSEError(f"{rec}: no images with masks to explain")
    keys, labels, images, masks = (list(col) for col in zip(*rows))
    images_np = np.stack(images)
    masks_np = (masks_from_checkpoint(parser, images_np, device, batch_size) if parser is not None
                else np.stack(masks))
    return RecImages(images_np, masks_np, np.asarray(labels), np.asarray(keys), source)
