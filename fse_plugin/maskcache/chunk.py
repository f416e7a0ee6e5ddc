"""Chunk files ``chunks/NNNNNN.fsmc``: rows ``[i * chunk_size, (i + 1) * chunk_size)`` of a cache,
self-checking.

Layout (format 2, little-endian)::

    head   <8s "FSEMASK2", u32 version, 8s spec_id, u32 index, u64 row_start, u32 rows,
            u16 height, u16 width, u32 meta_len, u32 crc32 of the data>                 48 bytes
    meta   JSON {errors: [[key, reason]], class_pixels, class_images}, NUL-padded to 8 bytes
    table  (rows + 1) x u32 entry offsets (relative to the data), rows x u32 entry crc32,
           u32 crc32 of every byte before it: the chunk's checksum (it covers the data's crc32)
    data   one entry per row (``codec``); an empty entry means "no mask" (undecodable image)
    end    8s "FSEMEND2"

Every byte is covered by a check the reader makes: head, meta and table by the table crc32 the
first time a process maps the chunk, the end marker and the size at the same time, and each entry by
its own crc32 on every read (costs: benchmarks/README.md, "## maskcache"), so a damaged byte gives
an error, never a wrong mask. The data crc32 lets a build or ``verify`` check all data in one pass.
``spec_id`` (hash of what defines the cache) ties each chunk to its build.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
import sys
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from fse_plugin.maskcache.codec import CorruptEntryError, decode_mask, decode_runs, inflate_runs
from fse_plugin.maskcache.errors import CacheError, DamagedEntryError
from fse_plugin.maskcache.spec import ChunkExpect, JsonRecord, json_bytes

__all__ = ["CHUNK_DIR", "ChunkFile", "ChunkMeta", "Entries", "chunk_bytes", "chunk_ok",
           "chunk_path", "remove_temporaries"]

CHUNK_DIR = "chunks"
VERSION = 2
HEAD = struct.Struct("<8sI8sIQIHHII")
MAGIC = b"FSEMASK2"
END = b"FSEMEND2"


def chunk_path(root: Path, index: int) -> Path:
    return root / CHUNK_DIR / f"{index:06d}.fsmc"


@dataclass(frozen=True)
class ChunkMeta(JsonRecord):
    """A chunk's metadata: its undecodable images ``[key, reason]`` and its class pixel/image
    counts."""
    errors: list
    class_pixels: list
    class_images: list


class Entries(NamedTuple):
    """Encoded entries of consecutive rows, joined: what a chunk's data and table are made of."""
    data: bytes
    lengths: np.ndarray  # int64, one per row
    crcs: np.ndarray  # uint32 crc32 of each entry

    @classmethod
    def of(cls, blobs: Sequence[bytes]) -> "Entries":
        return cls(b"".join(blobs), np.array([len(b) for b in blobs], np.int64),
                   np.array([zlib.crc32(b) for b in blobs], np.uint32))

    @classmethod
    def join(cls, parts: Sequence["Entries"]) -> "Entries":
        return cls(b"".join(p.data for p in parts), np.concatenate([p.lengths for p in parts]),
                   np.concatenate([p.crcs for p in parts]))


def chunk_bytes(spec_id: bytes, index: int, row_start: int, height: int, width: int,
                entries: Entries, meta: ChunkMeta) -> bytes:
    """The bytes of one chunk file (deterministic: same entries, same bytes)."""
    meta_b = json_bytes(meta.to_json())
    meta_b += b"\0" * (-len(meta_b) % 8)
    rows = len(entries.lengths)
    offsets = np.zeros(rows + 1, np.int64)
    np.cumsum(entries.lengths, out=offsets[1:])
    if offsets[-1] >= 1 << 32:
        raise CacheError(f"chunk {index} would hold {offsets[-1]} bytes (limit 4 GiB): "
                         f"use a smaller --chunk-size")
    head = HEAD.pack(MAGIC, VERSION, spec_id, index, row_start, rows, height, width, len(meta_b),
                     zlib.crc32(entries.data))
    index_part = b"".join([head, meta_b, offsets.astype("<u4").tobytes(),
                           entries.crcs.astype("<u4").tobytes()])
    return b"".join([index_part, struct.pack("<I", zlib.crc32(index_part)), entries.data, END])


def remove_temporaries(directory: Path, names: Sequence[str]) -> int:
    """Delete what killed writes left of the files ``names`` (globs) in ``directory``:
    temporary files of ``common.files.atomic_write`` (and of the writers of earlier versions)."""
    found = [p for name in names for p in directory.glob(f"{name}.tmp*")]
    for p in found:
        p.unlink(missing_ok=True)
    return len(found)


def _u32(buf: memoryview, count: int) -> Any:
    """``count`` little-endian u32 of ``buf`` that index to Python ints quickly
    (a memoryview cast where the machine is little-endian, numpy elsewhere)."""
    if sys.byteorder == "little" and struct.calcsize("I") == 4:
        return buf[:4 * count].cast("I")
    return np.frombuffer(buf, "<u4", count)


class ChunkFile:
    """One chunk file, memory-mapped, checked against what the manifest
    (or the build) expects of it.

    Opening checks the size, header fields, table crc32, offsets and end marker (DamagedEntryError,
    naming the file, if any is off); :meth:`runs` and :meth:`mask` check the entry's crc32 before
    decoding it.
    """

    def __init__(self, path: Path, expect: ChunkExpect = ChunkExpect(), hint: str = ""):
        self.path, self.expect, self._hint = path, expect, hint
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < HEAD.size + 4 + len(END):
                    raise self._error(f"truncated: {size} bytes")
                self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise self._error("missing chunk file") from None
        try:
            self._check(size)
        except BaseException:
            self.close()
            raise

    def _check(self, size: int) -> None:
        (magic, version, spec_id, index, row_start, rows, height, width, meta_len,
         data_crc) = HEAD.unpack_from(self.mm)
        if magic != MAGIC or version != VERSION:
            raise self._error(f"not a format-{VERSION} chunk (magic {magic!r}, version {version})")
        want = self.expect
        if want.bytes is not None and size != want.bytes:
            raise self._error(f"truncated or overwritten: {size} bytes, "
                              f"the manifest says {want.bytes}")
        got = {"spec_id": spec_id, "index": index, "row_start": row_start, "rows": rows,
               "height": height, "width": width}
        for k, v in got.items():
            if getattr(want, k) is not None and getattr(want, k) != v:
                raise self._error(f"header field {k} is {v!r}, expected {getattr(want, k)!r} "
                                  "(a chunk of another build?)")
        table = HEAD.size + meta_len
        self.data_start = table + 4 * (2 * rows + 2)
        if meta_len % 8 or self.data_start + len(END) > size:
            raise self._error(f"header says {rows} rows and {meta_len} metadata bytes, "
                              f"more than its {size} bytes hold")
        self.crc32 = struct.unpack_from("<I", self.mm, self.data_start - 4)[0]
        if zlib.crc32(memoryview(self.mm)[:self.data_start - 4]) != self.crc32:
            raise self._error("header/offset table crc32 mismatch (damaged)")
        if want.crc32 is not None and want.crc32 != self.crc32:
            raise self._error(f"checksum {self.crc32:08x}, the manifest says {want.crc32:08x} "
                              "(a chunk of another build?)")
        if self.mm[size - len(END):] != END:
            raise self._error("end marker missing (truncated or damaged)")
        data_len = size - len(END) - self.data_start
        offsets = np.frombuffer(self.mm, "<u4", rows + 1, table).astype(np.int64)
        if offsets[0] != 0 or offsets[-1] != data_len or (np.diff(offsets) < 0).any():
            raise self._error(f"offset table does not match the {data_len} data bytes (damaged)")
        self.rows, self.row_start = rows, row_start
        self.meta_len, self.data_crc = meta_len, data_crc
        view = memoryview(self.mm)
        self._off = _u32(view[table:], rows + 1)
        self._crc = _u32(view[table + 4 * (rows + 1):], rows)
        self._data = view[self.data_start:size - len(END)]

    def _error(self, what: str, key: int | None = None) -> DamagedEntryError:
        return DamagedEntryError(f"{self.path}: {what}." + (f" {self._hint}" if self._hint else ""),
                                 key, self.path)

    def span(self, i: int) -> tuple[int, int]:
        """File byte range of entry ``i``."""
        return self.data_start + self._off[i], self.data_start + self._off[i + 1]

    def entry(self, i: int, key: int | None = None) -> memoryview:
        """The bytes of entry ``i``, after their crc32 check."""
        blob = self._data[self._off[i]:self._off[i + 1]]
        if zlib.crc32(blob) != self._crc[i]:
            blob.release()  # a traceback must not keep the map open
            raise self._error(f"entry {i} (row {self.row_start + i}, key {key}) is damaged: "
                              "crc32 mismatch", key)
        return blob

    def runs(self, i: int, height: int, width: int,
             key: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Runs (values, lengths) of entry ``i`` (None for an empty entry);
        DamagedEntryError if it fails a check."""
        return self._decoded(decode_runs, i, height, width, key)

    def stream(self, i: int, height: int, width: int, key: int | None = None) -> bytes | None:
        """Run stream of entry ``i`` (``codec.inflate_runs``; None for an empty entry), before the
        coverage check its caller makes (``decode_error``); DamagedEntryError if it fails a
        check."""
        return self._decoded(inflate_runs, i, height, width, key)

    def decode_error(self, i: int, why: str, key: int | None = None) -> DamagedEntryError:
        """The error of entry ``i`` whose crc32 matched but whose content does not decode."""
        where = f"entry {i} (row {self.row_start + i}, key {key})"
        return self._error(f"{where} does not decode: {why}", key)

    def mask(self, i: int, height: int, width: int, key: int | None = None) -> np.ndarray | None:
        """Mask of entry ``i`` (None for an empty entry); DamagedEntryError if it fails a check."""
        return self._decoded(decode_mask, i, height, width, key)

    def _decoded(self, decode, i: int, height: int, width: int, key: int | None):
        blob = self.entry(i, key)
        if not len(blob):
            return None
        try:
            return decode(blob, height, width)
        except CorruptEntryError as e:  # its crc32 matched: written damaged, or by something else
            error = self.decode_error(i, str(e), key)
        blob.release()  # a traceback must not keep the map open
        raise error

    def check_data(self) -> None:
        """All entries at once against the data crc32 in the header
        (what a build and ``verify`` check)."""
        if zlib.crc32(self._data) != self.data_crc:
            raise self._error("data crc32 mismatch (damaged)")

    def meta(self) -> ChunkMeta:
        raw = bytes(self.mm[HEAD.size:HEAD.size + self.meta_len]).rstrip(b"\0")
        try:
            meta = json.loads(raw)
        except ValueError as e:
            raise self._error(f"chunk metadata is not valid JSON ({e})") from None
        names = [f.name for f in fields(ChunkMeta)]
        if not isinstance(meta, dict) or not all(isinstance(meta.get(n), list) for n in names):
            raise self._error(f"chunk metadata is not a JSON object of the lists "
                              f"{', '.join(names)}")
        return ChunkMeta.from_json(meta)

    def close(self) -> None:
        for name in ("_off", "_crc", "_data"):
            view = self.__dict__.pop(name, None)
            if isinstance(view, memoryview):
                view.release()
        if hasattr(self, "mm"):
            try:
                self.mm.close()
            except BufferError:  # a view is still referenced somewhere: the map goes when it does
                pass


def chunk_ok(path: Path, expect: ChunkExpect) -> bool:
    """True if ``path`` is a complete, undamaged chunk of this build (a build keeps it)."""
    try:
        ch = ChunkFile(path, expect)
    except (CacheError, OSError):
        return False
    try:
        ch.check_data()
        return True
    except CacheError:
        return False
    finally:
        ch.close()
