"""``MaskRuns``: a batch of label maps kept as the mask cache's runs of equal pixels.

Erasing one region of a 112x112 face touches a few hundred of its 12,544 pixels; expanding the whole
map to find them is most of the cost of reading it (``MaskCache.get``). ``MaskCache.get_runs`` gives
the runs, ``MaskRuns`` holds a batch of them, and ``erased_pixels`` expands only the chosen classes'
runs into pixel indices, reading a flipped image's unflipped map mirrored (pixels and left/right
ids).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fse_plugin.common import FSEError, checks
from fse_plugin.labels import MIRROR_LUT, NUM_CLASSES

__all__ = ["MaskRuns", "erased_pixels"]


class MaskRuns:
    """B label maps of one size as runs of equal pixels in row-major order, as the mask cache stores
    them (``MaskCache.get_runs``). Erasing a few classes needs only their runs: this form finds
    their pixels without making the maps (what the dataset passes to ``FSErasing.get_params`` and
    ``erase``).

    runs: one (values, lengths) pair per map, uint8 class ids and lengths (any integer type) whose
    sum is ``height * width``; zero-length runs are allowed.

    Example::

        >>> runs = MaskRuns([cache.get_runs(k) for k in keys], cache.height, cache.width)
        >>> out = erase(imgs, runs, FSErasing(n_erase=2).get_params(runs))
    """

    def __init__(self, runs: Sequence[tuple[np.ndarray, np.ndarray]], height: int,
                 width: int) -> None:
        counts = np.array([len(v) for v, _ in runs], np.intp)
        values = np.concatenate([v for v, _ in runs]) if runs else np.zeros(0, np.uint8)
        lengths = np.concatenate([n for _, n in runs]) if runs else np.zeros(0, np.int64)
        self._setup(values, lengths, counts, height, width)

    @classmethod
    def joined(cls, values: np.ndarray, lengths: np.ndarray, counts: Sequence[int] | np.ndarray,
               height: int, width: int) -> MaskRuns:
        """The maps whose runs are already laid end to end (``MaskCache.get_runs_batch``): map i has
        the ``counts[i]`` runs after those of the maps before it."""
        self = cls.__new__(cls)
        self._setup(values, lengths, np.asarray(counts, np.intp), height, width)
        return self

    def _setup(self, values: np.ndarray, lengths: np.ndarray, counts: np.ndarray, height: int,
               width: int) -> None:
        self.height, self.width = (checks.count(height, "MaskRuns: height"),
                                   checks.count(width, "MaskRuns: width"))
        self.counts, self.values, self.lengths = counts, values, lengths
        kind = self.lengths.dtype.kind
        if (self.values.dtype != np.uint8 or len(self.lengths) != len(self.values)
            or kind not in "iu" or (kind == "i" and (self.lengths < 0).any())):
            raise FSEError("MaskRuns: runs need uint8 values and as many non-negative integer "
                           "lengths, per map")
        if counts.sum() != len(values):
            raise FSEError(f"MaskRuns: the maps' run counts add up to {counts.sum()}, not the "
                           f"{len(values)} runs")
        # map i's runs: bounds[i]:bounds[i + 1]
        self.bounds = np.concatenate(([0], np.cumsum(self.counts)))
        # per run, where it ends in the maps laid end to end: what finding pixels needs, and the
        # coverage check
        self.ends = np.cumsum(lengths, dtype=np.int64)
        if (counts <= 0).any() or (np.diff(self.ends[self.bounds[1:] - 1], prepend=0)
                                    != self.height * self.width).any():
            raise FSEError(f"MaskRuns: every map's runs must cover its {self.height}x{self.width} "
                           "pixels exactly")
        self._keyed: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def keyed(self) -> np.ndarray:
        """Per run, 256 * its map's index + its value: one index into a [B, 256] table per run."""
        if self._keyed is None:
            self._keyed = (np.repeat(np.arange(len(self), dtype=np.int64) << 8, self.counts)
                           + self.values)
        return self._keyed

    def present(self) -> np.ndarray:
        """[B, NUM_CLASSES] bool: which classes each map holds (ids >= NUM_CLASSES ignored)."""
        table = np.zeros(len(self) << 8, bool)
        table[self.keyed] = True
        return table.reshape(len(self), 256)[:, :NUM_CLASSES]

    def map(self, i: int) -> np.ndarray:
        """Label map ``i``, uint8 [H,W]."""
        a, b = self.bounds[i], self.bounds[i + 1]
        return np.repeat(self.values[a:b], self.lengths[a:b]).reshape(self.height, self.width)

    def maps(self) -> list[np.ndarray]:
        """The B label maps, uint8 [H,W] each."""
        return [self.map(i) for i in range(len(self))]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} maps of {self.height}x{self.width}, "
                f"{len(self.values)} runs)")


def _selected_runs(runs: MaskRuns, selected: np.ndarray,
                   mirrored: np.ndarray) -> tuple[np.ndarray, ...]:
    """The runs of the selected classes: (map index, start and end within the map, value), in
    storage order. A mirrored map's image was flipped: its class k is MIRROR[k] of the unflipped
    map."""
    if selected.shape[1] <= 256 and (selected.sum(1) == 1).all():
        # one class each (the reference's)
        shown = selected.argmax(1)
        # MIRROR is its own inverse
        wanted = np.where(mirrored, MIRROR_LUT[shown], shown).astype(np.uint8)
        hit = np.flatnonzero(runs.values == np.repeat(wanted, runs.counts))  # no per-run int64 keys
        b = np.searchsorted(runs.bounds, hit, "right") - 1
    else:
        table = np.zeros((len(runs), 256), bool)
        K = min(selected.shape[1], 256)  # ids >= K are never erased
        table[:, :K] = selected[:, :K]
        if mirrored.any():
            flip = np.flatnonzero(mirrored)
            table[flip] = table[flip][:, MIRROR_LUT]
        hit = np.flatnonzero(table.reshape(-1)[runs.keyed])
        b = runs.keyed[hit] >> 8
    offset = b * (runs.height * runs.width)
    ends = runs.ends[hit] - offset
    return b, ends - runs.lengths[hit], ends, runs.values[hit]


def _shown_pieces(runs: MaskRuns, b, start, end, mirrored: np.ndarray) -> tuple[np.ndarray, ...]:
    """Runs as pieces of the shown (flipped where mirrored) images: (map, start, length, run it came
    from), ascending by (map, start). A mirrored map's runs are cut at image rows; each piece then
    shows as a range of the same row, mirrored."""
    W = runs.width
    mirror = mirrored[b]
    if not mirror.any():  # every piece is its run
        return b, start, end - start, np.arange(len(b))
    first = start // W
    cuts = np.where(mirror, (end - 1) // W - first + 1, 1)  # zero-length runs: no piece
    piece = np.repeat(np.arange(len(b)), cuts)
    row = first[piece] + np.arange(len(piece)) - np.repeat(np.cumsum(cuts) - cuts, cuts)
    m = mirror[piece]
    s = np.where(m, np.maximum(start[piece], row * W), start[piece])
    e = np.where(m, np.minimum(end[piece], row * W + W), end[piece])
    # columns [x0, x1) of row y show at [W - x1, W - x0)
    shown = np.where(m, 2 * row * W + W - e, s)
    # mirrored rows' pieces come right to left: put them in pixel order
    order = np.argsort(b[piece] * (runs.height * W) + shown, kind="stable")
    piece = piece[order]
    return b[piece], shown[order], (e - s)[order], piece


def erased_pixels(runs: MaskRuns, selected: np.ndarray, rows: list[int], mirrored: np.ndarray,
                  with_classes: bool) -> tuple[np.ndarray, list[int], np.ndarray | None]:
    """The pixels to erase in each of ``rows``, laid end to end: their flat indices in the shown
    image (flipped where ``mirrored``), ascending within each row; how many each row has; and their
    classes if asked. selected: [B, K] bool. Only the selected classes' runs are expanded.

    Example::

        >>> # pix[:sizes[0]]: the flat indices erased in image 0
        >>> pix, sizes, _ = erased_pixels(runs, selected, rows=[0, 2],
        ...                               mirrored=np.zeros(len(runs), bool), with_classes=False)
    """
    b, start, end, value = _selected_runs(runs, selected, mirrored)
    b, shown, length, piece = _shown_pieces(runs, b, start, end, mirrored)
    offsets = np.cumsum(length) - length
    pix = np.repeat(shown - offsets, length) + np.arange(int(length.sum()), dtype=np.int64)
    sizes = np.diff(np.append(offsets,
                              len(pix))[np.searchsorted(b, np.append(rows, len(runs)))]).tolist()
    if not with_classes:
        return pix, sizes, None
    shown_class = np.where(mirrored[b], MIRROR_LUT[value[piece]], value[piece])
    return pix, sizes, np.repeat(shown_class, length).astype(np.intp)
