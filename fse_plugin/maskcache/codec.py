"""The ``rle8+zlib`` mask codec: a mask's runs of equal pixels (row-major), zlib-compressed.

An entry is ``zlib(values || lengths)``: one uint8 value and one uint8 length per run, runs longer
than 255 split. Chosen by measurement against zlib/lzma/bz2 of the raw mask, PNG, 16-bit run
lengths and a 4-bit palette (benchmarks/README.md, "## maskcache"): the smallest of the candidates
that decode fast enough for a DataLoader worker, and much faster to encode than zlib of the raw
bytes. Encoding is vectorised over a batch; decoding is capped at the mask's size, so no entry can
make a reader allocate or inflate more than one mask's worth.
"""
from __future__ import annotations

import zlib
from itertools import accumulate
from typing import Sequence

import numpy as np

from fse_plugin.common.errors import FSEError
from fse_plugin.labels import NUM_CLASSES

__all__ = ["CODEC", "CorruptEntryError", "encode_masks", "decode_mask", "decode_runs",
           "expand_runs", "encode_batch", "class_counts", "coverage_error", "inflate_runs",
           "join_runs"]

CODEC = "rle8+zlib"
ZLIB_LEVEL = 9


class CorruptEntryError(ValueError):
    """An entry that does not decode to a mask of the asked size
    (damaged, or not an entry at all)."""


class Runs:
    """The runs of equal pixels of a uint8 ``[B,H,W]`` batch:
    ``bounds[m]:bounds[m+1]`` are mask m's runs."""

    def __init__(self, masks: np.ndarray):
        masks = check_masks(masks)
        n = masks[0].size if len(masks) else 0
        flat = masks.reshape(-1)
        start = np.empty(flat.size, bool)
        start[:1] = True
        np.not_equal(flat[1:], flat[:-1], out=start[1:])
        if n:
            start[::n] = True  # every mask starts a run
        pos = np.flatnonzero(start)
        self.values = flat[pos]
        self.lengths = np.diff(pos, append=flat.size)
        self.bounds = np.searchsorted(pos, np.arange(len(masks) + 1) * n)

    @property
    def which(self) -> np.ndarray:
        """Mask index of every run."""
        return np.repeat(np.arange(len(self.bounds) - 1), np.diff(self.bounds))

    def entries(self) -> list[bytes]:
        """One compressed entry per mask."""
        pieces = (self.lengths + 254) // 255  # uint8 lengths: a run of 600 becomes 255, 255, 90
        values = np.repeat(self.values, pieces)
        lens = np.full(values.size, 255, np.uint8)
        ends = np.cumsum(pieces)
        lens[ends - 1] = self.lengths - 255 * (pieces - 1)
        bounds = np.r_[0, ends][self.bounds].tolist()
        return [zlib.compress(values[s:e].tobytes() + lens[s:e].tobytes(), ZLIB_LEVEL)
                for s, e in zip(bounds[:-1], bounds[1:])]


def check_masks(masks: np.ndarray) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.dtype != np.uint8:
        raise FSEError(f"masks must be uint8 [N,H,W], got {masks.dtype} {masks.shape}")
    return np.ascontiguousarray(masks)


def encode_masks(masks: np.ndarray) -> list[bytes]:
    """One ``rle8+zlib`` entry per mask of a uint8 ``[B,H,W]`` batch (vectorised over the batch)."""
    return Runs(masks).entries()


def inflate_runs(blob: bytes | memoryview, height: int, width: int) -> bytes:
    """An entry's run stream, ``values || lengths`` (one uint8 each per run), before the count of
    the pixels the runs cover.

    Inflates at most the ``2 * height * width`` bytes a mask's runs can take, so a damaged or
    hostile entry costs no more time or memory than a real one;
    CorruptEntryError if the stream is damaged.
    """
    z = zlib.decompressobj()
    try:
        raw = z.decompress(blob, 2 * height * width)
    except zlib.error as e:
        raise CorruptEntryError(f"zlib: {e}") from None
    if not z.eof:
        raise CorruptEntryError("run stream longer than a mask" if z.unconsumed_tail
                                else "zlib stream truncated")
    if z.unused_data:
        raise CorruptEntryError(f"{len(z.unused_data)} bytes after the zlib stream")
    if len(raw) % 2:
        raise CorruptEntryError(f"run stream of odd length {len(raw)}")
    return raw


def _split(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    r = np.frombuffer(raw, np.uint8)
    return r[:len(r) // 2], r[len(r) // 2:]


def coverage_error(pixels: int, height: int, width: int) -> CorruptEntryError | None:
    """The error of runs covering ``pixels`` pixels; None if they make a ``height x width`` mask."""
    if pixels == height * width:
        return None
    return CorruptEntryError(f"runs cover {pixels} pixels, expected {height}x{width}")


def _covers(pixels: int, height: int, width: int) -> None:
    error = coverage_error(pixels, height, width)
    if error is not None:
        raise error


def decode_runs(blob: bytes | memoryview, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An entry's runs: (values, lengths), uint8 [n] each (read-only), covering exactly
    ``height * width`` pixels; CorruptEntryError if it is damaged. What a reader needs when it wants
    a few classes' pixels, not the mask."""
    values, lengths = _split(inflate_runs(blob, height, width))
    _covers(int(lengths.sum()), height, width)
    return values, lengths


def join_runs(streams: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    """Run streams (``inflate_runs``) laid end to end: (values, lengths) uint8 arrays, and per
    stream its number of runs and the pixels they cover; a few numpy calls for any number of
    streams."""
    counts = [len(s) >> 1 for s in streams]
    values = np.frombuffer(b"".join([s[:n] for s, n in zip(streams, counts)]), np.uint8)
    lengths = np.frombuffer(b"".join([s[n:] for s, n in zip(streams, counts)]), np.uint8)
    starts = list(accumulate(counts, initial=0))[:-1]
    if 0 in counts or not counts:  # reduceat would give a stream without runs its neighbour's run
        pixels = [int(lengths[a:a + n].sum()) for a, n in zip(starts, counts)]
        return values, lengths, counts, pixels
    return values, lengths, counts, np.add.reduceat(lengths, starts, dtype=np.int64).tolist()


def expand_runs(values: np.ndarray, lengths: np.ndarray, height: int, width: int) -> np.ndarray:
    """Runs back to their uint8 ``[height, width]`` mask (writable);
    the runs must cover it exactly."""
    return np.repeat(values, lengths).reshape(height, width)


def decode_mask(blob: bytes | memoryview, height: int, width: int) -> np.ndarray:
    """An entry back to its uint8 ``[height, width]`` mask (writable); CorruptEntryError if it is
    damaged. The expanded size is the coverage check: no separate count of the runs' pixels."""
    out = np.repeat(*_split(inflate_runs(blob, height, width)))
    _covers(out.size, height, width)
    return out.reshape(height, width)


def class_counts(runs: Runs, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels per class and number of masks containing each class, over the masks with ``keep``."""
    which = runs.which
    sel = keep[which]
    pixels = np.bincount(runs.values[sel], weights=runs.lengths[sel],
                         minlength=NUM_CLASSES).astype(np.int64)
    n = len(keep)
    present = np.bincount(which[sel] * NUM_CLASSES + runs.values[sel],
                          minlength=n * NUM_CLASSES) > 0
    return pixels, present.reshape(n, NUM_CLASSES).sum(0).astype(np.int64)


def encode_batch(masks: np.ndarray,
                 valid: np.ndarray) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """Entries (empty where not ``valid``) and class pixel/image counts of one batch of masks.

    The job of the encode processes; FSEError for a label outside the 25 classes.
    """
    runs = Runs(masks)
    if runs.values.size and int(runs.values.max()) >= NUM_CLASSES:
        bad = int(np.flatnonzero(runs.values >= NUM_CLASSES)[0])
        raise FSEError(f"mask {int(runs.which[bad])} of the batch holds label "
                       f"{int(runs.values[bad])}, outside the {NUM_CLASSES} classes")
    valid = np.asarray(valid, bool)
    pixels, images = class_counts(runs, valid)
    return [b if v else b"" for b, v in zip(runs.entries(), valid.tolist())], pixels, images
