"""``MaskCache``: read-only random access to a mask cache, ``get(key) -> uint8 [H,W] | None``
(or its runs, ``get_runs``), never a wrong mask.

This is what every DataLoader worker of a training run imports: numpy, zlib and mmap only (no
process pools, no parser, no progress bars).
"""
from __future__ import annotations

import io
import operator
import os
from pathlib import Path
from dataclasses import dataclass, field
from itertools import accumulate
from typing import NamedTuple, Sequence

import numpy as np

from fse_plugin.common.text import plural
from fse_plugin.labels import NUM_CLASSES
from fse_plugin.maskcache.chunk import ChunkFile
from fse_plugin.maskcache.codec import Runs, class_counts, coverage_error, expand_runs, join_runs
from fse_plugin.maskcache.errors import (CacheError, CacheMismatchError, DamagedEntryError,
                                         UnknownKeyError, without_hint)
from fse_plugin.maskcache.manifest import KEYS_FILE, MANIFEST, read_manifest
from fse_plugin.maskcache.rebuild import (DEFAULT_DIRNAME, default_cache_path, rebuild_command,
                                          rebuild_hint, recorded_sources)
from fse_plugin.maskcache.source import sha256_file, source_fingerprint
from fse_plugin.maskcache.spec import ChunkExpect

__all__ = ["MaskCache", "ClassFrequencies", "RunsBatch", "Verification"]


class ClassFrequencies(NamedTuple):
    pixels: np.ndarray  # float64 [25]: fraction of all mask pixels per class
    images: np.ndarray  # float64 [25]: fraction of masks in which the class occurs
    masks: int  # number of masks counted


@dataclass(frozen=True)
class Verification:
    """What ``MaskCache.verify`` found in a sound cache."""
    path: str
    masks: int
    chunks: int
    missing: int
    bytes_per_mask: float
    source_checked: bool
    parser_checked: bool


class RunsBatch(NamedTuple):
    """The masks of several keys as runs laid end to end (``MaskCache.get_runs_batch``): the masks
    found, in key order, mask ``i`` being the ``counts[i]`` runs after those of the masks before
    it."""
    values: np.ndarray  # uint8: the runs' class ids, row-major within each mask
    lengths: np.ndarray  # uint8: the runs' lengths, aligned with values
    counts: list[int]  # runs of each mask found
    found: list[int]  # position in keys of each mask found
    missing: list[int]  # positions of the keys whose images were undecodable at build time
    damaged: dict[int, DamagedEntryError]  # position in keys -> the error get_runs would raise
    height: int
    width: int

    def masks(self) -> list[np.ndarray]:
        """The masks found, uint8 [H,W] each (writable), in key order."""
        ends = list(accumulate(self.counts))
        return [expand_runs(self.values[a:b], self.lengths[a:b], self.height, self.width)
                for a, b in zip([0, *ends], ends)]


@dataclass
class _Totals:
    """What ``verify`` adds up over the chunks, to compare with the manifest."""
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, np.int64))
    images: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, np.int64))
    missing: list = field(default_factory=list)


def _as_key(key: object) -> int:
    """An image key: an integer (Python or numpy), never a float or bool that would be read as
    another key."""
    try:
        if not isinstance(key, bool):
            return operator.index(key)
    except TypeError:
        pass
    raise UnknownKeyError(f"key {key!r} is not an integer image key")


class MaskCache:
    """Read-only random access to a mask cache: ``get(key) -> uint8 [H,W] | None``.

    Chunk files are memory-mapped lazily in the process that reads them, so an instance can be
    created before DataLoader workers fork (or be pickled to spawned ones) and each worker maps what
    it touches; the OS page cache is shared by all. Every returned mask has passed its crc32;
    anything damaged raises :class:`DamagedEntryError` (naming the chunk file and the key).

    Opening checks the manifest (checksum, fields), that every chunk file exists with its recorded
    size, and keys.npy's header, count, first and last key against the manifest. :meth:`check`
    adds every chunk's header and table and keys.npy's sha256 without reading masks (start-up
    cost); :meth:`verify` reads and decodes everything.
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if not (path / MANIFEST).is_file() and (path / "train.rec").is_file():
            path = path / DEFAULT_DIRNAME  # a rec dir: its default cache
        self.path = path
        self.manifest = read_manifest(path)
        self._setup()
        self._check_files()

    def _setup(self) -> None:
        m = self.manifest
        self._hint = rebuild_hint(self.path, m.recorded)
        self.height, self.width, self.chunk_size = m.spec.height, m.spec.width, m.spec.chunk_size
        self._count = m.spec.count
        self._first = m.keys.first
        self._contiguous = m.keys.contiguous
        self._keys: np.ndarray | None = None
        self._chunks: dict[int, ChunkFile] = {}

    def _check_files(self) -> None:
        chunks = self.manifest.chunks
        for i, c in enumerate(chunks):
            p = self.path / c.file
            try:
                size = p.stat().st_size
            except FileNotFoundError:
                raise CacheError(f"{p}: missing chunk {i} of {len(chunks)} (rows {c.row_start}.."
                                 f"{c.row_start + c.rows - 1}). {self._hint}") from None
            if size != c.bytes:
                raise CacheError(f"{p}: truncated or overwritten chunk {i}: {size} bytes, the "
                                 f"manifest says {c.bytes}. {self._hint}")
        self._load_keys()

    def _keys_error(self, what: str) -> CacheError:
        return CacheError(f"{self.path / KEYS_FILE}: {what}. {self._hint}")

    def _load_keys(self) -> np.ndarray:
        """keys.npy memory-mapped; its header (the exact bytes np.save writes for int64 [count]),
        size, first and last key checked against the manifest. No parser of the file's header runs:
        it is compared."""
        kp = self.path / KEYS_FILE
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<i8", "fortran_order": False,
                                                      "shape": (self._count,)})
        header = header.getvalue()
        try:
            with open(kp, "rb") as f:
                head, size = f.read(len(header)), os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            raise self._keys_error("missing") from None
        if head != header or size != len(header) + 8 * self._count:
            raise self._keys_error(f"not the int64 array of {self._count} keys the manifest "
                                   f"describes ({size} bytes; damaged, or from another cache)")
        keys = np.memmap(kp, "<i8", "r", offset=len(header), shape=(self._count,))
        k = self.manifest.keys
        if int(keys[0]) != k.first or int(keys[-1]) != k.last:
            raise self._keys_error(f"keys run {int(keys[0])}..{int(keys[-1])}, the manifest says "
                                   f"{k.first}..{k.last} (shifted, or from another cache)")
        return keys

    def __getstate__(self) -> dict:
        return {"path": self.path, "manifest": self.manifest}

    def __setstate__(self, state: dict) -> None:
        self.path, self.manifest = state["path"], state["manifest"]
        self._setup()

    @property
    def keys(self) -> np.ndarray:
        """Image keys, ascending (int64, memory-mapped); the file checked against the manifest's
        sha256 once per process, on first use."""
        if self._keys is None:
            keys = self._load_keys()
            if sha256_file(self.path / KEYS_FILE) != self.manifest.keys.file_sha256:
                raise self._keys_error("sha256 differs from the manifest's (damaged, or from "
                                       "another cache)")
            self._keys = keys
        return self._keys

    def __len__(self) -> int:
        return self._count

    def row(self, key: int) -> int:
        """Row of ``key`` (UnknownKeyError, a KeyError, if the cache has no such image key)."""
        return self._row(_as_key(key))

    def _row(self, k: int) -> int:
        if self._contiguous:
            r = k - self._first
            if 0 <= r < self._count:
                return r
        else:
            keys = self.keys
            r = int(np.searchsorted(keys, k))
            if r < self._count and keys[r] == k:
                return r
        raise UnknownKeyError(f"key {k} is not an image key of mask cache {self.path} "
                              f"({self._count} keys, {self._first}..{self.manifest.keys.last})")

    def __contains__(self, key: int) -> bool:
        try:
            self.row(key)
            return True
        except KeyError:
            return False

    def _chunk(self, index: int, key: int | None = None) -> ChunkFile:
        ch = self._chunks.get(index)
        if ch is None:
            c = self.manifest.chunks[index]
            expect = ChunkExpect(self.manifest.spec.spec_id, index, c.row_start, c.rows,
                                 self.height, self.width, c.bytes, c.crc32)
            try:
                ch = self._chunks[index] = ChunkFile(self.path / c.file, expect, self._hint)
            except DamagedEntryError as e:
                e.key = key
                raise
        return ch

    def _chunk_of(self, row: int, key: int | None) -> tuple[ChunkFile, int]:
        c, i = divmod(row, self.chunk_size)
        return self._chunks.get(c) or self._chunk(c, key), i

    def _runs(self, row: int, key: int | None) -> tuple[np.ndarray, np.ndarray] | None:
        ch, i = self._chunk_of(row, key)
        return ch.runs(i, self.height, self.width, key)

    def _mask(self, row: int, key: int | None) -> np.ndarray | None:
        ch, i = self._chunk_of(row, key)
        return ch.mask(i, self.height, self.width, key)

    def get(self, key: int) -> np.ndarray | None:
        """Mask (uint8 ``[H,W]``, writable) of image record ``key``; None if its image could not be
        decoded.

        DamagedEntryError if its entry or chunk fails a check; UnknownKeyError if the cache has no
        such key.
        """
        k = _as_key(key)
        return self._mask(self._row(k), k)

    def get_runs(self, key: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``get`` before its last step: the mask of record ``key`` as runs of equal pixels in
        row-major order, (values, lengths), uint8 [n] each, read-only, covering exactly
        ``height * width`` pixels (``codec.expand_runs`` makes the mask). Same checks and errors as
        ``get``. For readers that need only some classes' pixels (erasing): expanding a whole mask
        is most of ``get``'s time."""
        k = _as_key(key)
        return self._runs(self._row(k), k)

    def get_runs_batch(self, keys: Sequence[int] | np.ndarray) -> RunsBatch:
        """``get_runs`` of each of ``keys`` at once, laid end to end: the same checks (crc32,
        decoding, the pixels covered), with the per-key work down to the entry's crc32 and inflate.
        A damaged entry or chunk is reported in ``RunsBatch.damaged`` instead of raised, so the
        other keys' masks still come; UnknownKeyError if a key is not in the cache."""
        integers = isinstance(keys, np.ndarray) and keys.dtype.kind in "iu"
        ks = keys.tolist() if integers else [_as_key(k) for k in keys]
        streams, found, missing, damaged = self._streams(ks)
        values, lengths, counts, pixels = join_runs(streams)
        bad = [b for b, n in enumerate(pixels) if n != self.height * self.width]
        if bad:  # crc32 matched, coverage did not: written damaged; those masks are left out
            for b in bad:
                k = ks[found[b]]
                ch, i = self._chunk_of(self._row(k), k)
                why = coverage_error(pixels[b], self.height, self.width)
                damaged[found[b]] = ch.decode_error(i, str(why), k)
            found = [j for b, j in enumerate(found) if b not in bad]
            values, lengths, counts, _ = join_runs([s for b, s in enumerate(streams)
                                                    if b not in bad])
        return RunsBatch(values, lengths, counts, found, missing, damaged, self.height, self.width)

    def _streams(self, keys: list[int]) -> tuple[list[bytes], list[int], list[int], dict]:
        """The run streams of ``keys`` that have one, crc32-checked and inflated, and the positions
        of the keys found, missing and damaged."""
        streams, found, missing, damaged = [], [], [], {}
        for j, k in enumerate(keys):
            try:
                ch, i = self._chunk_of(self._row(k), k)
                stream = ch.stream(i, self.height, self.width, k)
            except DamagedEntryError as e:
                damaged[j] = e
                continue
            if stream is None:
                missing.append(j)
            else:
                found.append(j)
                streams.append(stream)
        return streams, found, missing, damaged

    def class_frequencies(self) -> ClassFrequencies:
        """Per-class pixel share and image share over all masks, from the counts the build
        stored."""
        m = self.manifest
        n = self._count - len(m.missing)
        pixels = np.asarray(m.class_pixels, np.float64)
        images = np.asarray(m.class_images, np.float64)
        return ClassFrequencies(pixels / max(1, n * self.height * self.width), images / max(1, n),
                                n)

    @property
    def bytes_per_mask(self) -> float:
        return self.manifest.data_bytes / self._count

    # ------------------------------------------------------------------------------------ checks

    def check(self, data: bool = False) -> None:
        """Every file's structure without reading masks: keys.npy (sha256, ascending) and each
        chunk's header, table crc32 and size. Raises CacheError (DamagedEntryError for a chunk)
        naming the file.

        Cheap enough for start-up (benchmarks/README.md, "## maskcache"). ``data=True`` also checks
        every chunk's data crc32 (reads the whole cache; what a build does before it calls a cache
        complete).
        """
        keys = self.keys
        if self._count > 1 and not (np.diff(keys) > 0).all():
            raise self._keys_error("keys are not strictly ascending")
        for i in range(len(self.manifest.chunks)):
            ch = self._chunk(i)
            if data:
                ch.check_data()

    def _verify_chunk(self, i: int, keys: np.ndarray | None, totals: _Totals) -> list[str]:
        """Problems of chunk ``i``: structure, data crc32, every entry, its error list and class
        counts."""
        try:
            ch = self._chunk(i)
            ch.check_data()
        except DamagedEntryError as e:
            return [without_hint(e)]
        problems, empty, decoded = [], [], []
        for j in range(ch.rows):
            try:
                mask = ch.mask(j, self.height, self.width)
            except DamagedEntryError as e:
                problems.append(without_hint(e))
                continue
            (empty.append(ch.row_start + j) if mask is None else decoded.append(mask))
        meta = ch.meta()
        errors = meta.errors
        if keys is not None and sorted(k for k, _ in errors) != keys[empty].tolist():
            problems.append(f"{ch.path}: empty entries do not match its list of undecodable keys "
                            f"{errors[:5]}")
        totals.missing += errors
        if decoded:
            runs = Runs(np.stack(decoded))
            if runs.values.max() >= NUM_CLASSES:
                return problems + [f"{ch.path}: label {int(runs.values.max())} outside the "
                                   f"{NUM_CLASSES} classes"]
            p, n = class_counts(runs, np.ones(len(decoded), bool))
            if p.tolist() != meta.class_pixels or n.tolist() != meta.class_images:
                problems.append(f"{ch.path}: class counts differ from the ones stored at build "
                                "time")
            totals.pixels += p
            totals.images += n
        return problems

    def verify(self, rec_dir: str | os.PathLike | None = None,
               parser: str | os.PathLike | None = None, progress: bool = False) -> Verification:
        """Check every byte: keys, chunk headers/crc32/offsets, every entry decodes, stored counts
        agree.

        Raises CacheError listing all problems found (CacheMismatchError if only the source
        differs). Returns what it found when the cache is sound (and belongs to
        ``rec_dir``/``parser`` if given).
        """
        from tqdm import tqdm
        m, problems, keys = self.manifest, [], None
        try:
            keys = np.asarray(self.keys)
            if len(keys) > 1 and not (np.diff(keys) > 0).all():
                problems.append(f"{self.path / KEYS_FILE}: keys are not strictly ascending")
        except CacheError as e:
            problems.append(without_hint(e))
        totals = _Totals()
        for i in tqdm(range(len(m.chunks)), desc="verify", unit="chunk", disable=not progress):
            problems += self._verify_chunk(i, keys, totals)
        if not problems:  # the totals only mean something when every chunk was read
            if totals.pixels.tolist() != m.class_pixels or totals.images.tolist() != m.class_images:
                problems.append(f"{self.path / MANIFEST}: class counts differ from the chunks'")
            if [[d.key, d.reason] for d in m.missing] != totals.missing:
                problems.append(f"{self.path / MANIFEST}: list of undecodable keys differs from "
                                "the chunks'")
        if problems:
            more = (f"; and {plural(len(problems) - 10, 'more problem')}" if len(problems) > 10
                    else "")
            raise CacheError(f"mask cache {self.path} failed verification "
                             f"({plural(len(problems), 'problem')}: "
                             + "; ".join(problems[:10]) + f"{more}). {self._hint}")
        if rec_dir is not None:
            self.check_source(rec_dir, parser)
        return Verification(str(self.path), self._count, len(m.chunks), len(m.missing),
                            self.bytes_per_mask, rec_dir is not None, parser is not None)

    # ------------------------------------------------------------------------------------ identity

    def _valid_for(self, rec: str) -> bool:
        """True if the rec at ``rec`` still has the fingerprint this cache was built from."""
        try:
            return source_fingerprint(rec) == self.manifest.spec.source
        except (OSError, ValueError):
            return False

    def _other_rec_hint(self, rec_dir: str | os.PathLike) -> str:
        """How to get a cache for ``rec_dir``, never replacing a cache that is valid for its own
        rec."""
        src = recorded_sources(self.path, self.manifest.recorded)
        built = src.pop("rec")
        src.pop("labels", None)  # those labels were for the other rec
        target = default_cache_path(rec_dir)
        if os.path.abspath(target) != os.path.abspath(self.path):
            return f"Build one for {rec_dir} with: {rebuild_command(target, rec_dir, **src)}"
        if built is not None and self._valid_for(built):
            other = target.with_name(DEFAULT_DIRNAME + "_new")
            return (f"It is the valid cache of {built}: keep it and build one for {rec_dir} "
                    f"elsewhere with: {rebuild_command(other, rec_dir, **src)}")
        return (f"It is valid for no rec any more; rebuild it for {rec_dir} with: "
                f"{rebuild_command(self.path, rec_dir, overwrite=True, **src)}")

    def check_source(self, rec_dir: str | os.PathLike,
                     parser: str | os.PathLike | None = None) -> None:
        """Raise CacheMismatchError unless this cache was built from ``rec_dir`` (and from
        ``parser``, if given).

        Compares the fingerprint (record count, keys, .idx sha256, sampled record bytes); a moved
        rec still matches, a regenerated or different one does not.
        """
        fp = source_fingerprint(rec_dir)
        mine = self.manifest.spec.source
        diff = sorted(mine.differences(fp))
        if diff:
            short = lambda v: (v[:12] + ".."  # noqa: E731
                               if isinstance(v, str) and len(v) > 14 else v)
            detail = "; ".join(f"{k} {short(getattr(mine, k))!r} vs {short(getattr(fp, k))!r}"
                               for k in diff if k != "sample_keys")
            raise CacheMismatchError(
                f"mask cache {self.path} was built for another record file (built from "
                f"{self.manifest.rec_path}; {rec_dir} differs: {detail}). "
                f"{self._other_rec_hint(rec_dir)}")
        if parser is not None:
            prod, flags = self.manifest.spec.producer, self.manifest.spec.build_flags()
            beside = self.path.with_name(self.path.name + "_new")
            sha = sha256_file(parser)
            if sha != prod.sha256:
                raise CacheMismatchError(
                    f"mask cache {self.path} was built by another parser ({prod.kind} "
                    f"{self.manifest.parser_path}, "
                    f"sha256 {prod.sha256[:16]}..; {parser} has sha256 {sha[:16]}..). Replace its "
                    "masks "
                    "with: "
                    f"{rebuild_command(self.path, rec_dir, parser, overwrite=True, flags=flags)}, "
                    "or keep them "
                    "and build beside it with: "
                    f"{rebuild_command(beside, rec_dir, parser, flags=flags)}")

    def close(self) -> None:
        for ch in self._chunks.values():
            ch.close()
        self._chunks.clear()
        self._keys = None

    def __enter__(self) -> "MaskCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"MaskCache({str(self.path)!r}, masks={self._count}, "
                f"size={self.height}x{self.width}, missing={len(self.manifest.missing)})")
