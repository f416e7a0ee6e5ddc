"""Mask cache: the parser's 25-class masks of every image in a RecordIO dataset, on disk, random access.

The public FSErasing code kept all masks in one in-memory tensor (65 GB for MS1MV3, 533 GB for
WebFace42M). Here a mask is stored losslessly in ~500 bytes and decoded in ~20 microseconds, in files
that every DataLoader worker memory-maps, so MS1MV3 needs ~3 GB of disk and no RAM of its own.

Format (version 1): a directory, ``<rec_dir>/fse_masks`` by default.

* ``manifest.json``: written last, so its presence means the cache is complete. Format and codec,
  mask size, label set, the source fingerprint (record count, sha256 of the image keys and of the
  .idx, sha256 of a fixed sample of record bytes), the parser checkpoint's (or label file's) sha256,
  per chunk rows/bytes/crc32, undecodable keys with their reasons, class pixel/image counts, versions.
* ``keys.npy``: int64 image keys, ascending; row ``i`` of the cache is the mask of ``keys[i]``. Key to
  row is arithmetic for contiguous keys (insightface and im2rec recs), else a binary search in the
  memory-mapped keys; row to entry is two offsets in the chunk's table: no scan, no per-key dict.
* ``chunks/NNNNNN.fsmc``: rows ``[i * chunk_size, (i + 1) * chunk_size)``, one file each::

      header  <8s "FSEMASK1", u32 version, 8s spec_id, u32 index, u64 row_start, u32 rows,
               u16 height, u16 width, u32 meta_len>
      meta    JSON {errors: [[key, reason]], class_pixels, class_images}, NUL-padded to 8 bytes
      offsets (rows + 1) x u32 entry offsets, relative to the data start
      data    one entry per row; an empty entry means "no mask" (undecodable image)
      tail    <u32 crc32 of all bytes before it, 8s "FSEMEND1">

  An entry is ``zlib(values || lengths)`` of the mask's runs of equal pixels in row-major order
  (uint8 each, runs over 255 split): codec ``rle8+zlib``, chosen by measurement against zlib/lzma/bz2
  of the raw mask, PNG, 16-bit run lengths and a 4-bit palette (benchmarks/README.md, "## maskcache").
  zlib's adler32 plus the decoded-length check catch a damaged entry; the chunk crc32 catches the rest.
  ``spec_id`` (hash of what defines the cache: source fingerprint, parser, size, settings) ties every
  chunk to its build, so chunks of different builds can never be mixed.
* ``build_info.json``: time, host, world size and speed of the build; the one file that differs
  between two builds of the same cache (everything else is byte-identical, by construction).

Building (``fse cache build``) writes each chunk atomically (temporary file + rename) as soon as it is
complete, so a killed run resumes where it stopped; under torchrun each rank takes every
``world_size``-th chunk and rank 0 writes ``keys.npy`` and the manifest once all chunks exist.
"""
from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import shlex
import socket
import struct
import sys
import time
import zlib
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from fse_plugin import __version__, recordio
from fse_plugin.common import FSEError, autocast, dist_env, resolve_device, to_input
from fse_plugin.labels import CLASSES, LABEL_SET, NUM_CLASSES

FORMAT_NAME = "fse-maskcache"
FORMAT_VERSION = 1
CODEC = "rle8+zlib"
ZLIB_LEVEL = 9
DEFAULT_DIRNAME = "fse_masks"
DEFAULT_CHUNK_SIZE = 16384
"""Masks per chunk file: ~8 MB each; at most this much work is lost when a build is killed."""
FINGERPRINT_SAMPLES = 64
"""Records whose bytes the source fingerprint hashes (evenly spaced over the image keys)."""

MANIFEST = "manifest.json"
KEYS_FILE = "keys.npy"
CHUNK_DIR = "chunks"
BUILD_SPEC = "build_spec.json"
BUILD_INFO = "build_info.json"

_HEAD = struct.Struct("<8sI8sIQIHHI")
_TAIL = struct.Struct("<I8s")
_MAGIC = b"FSEMASK1"
_END = b"FSEMEND1"


class CacheError(FSEError):
    """A mask cache is missing, incomplete, damaged or unreadable; the message says how to rebuild."""


class CacheMismatchError(CacheError):
    """A mask cache belongs to another rec, parser or setting than the one it is used with."""


class DamagedEntryError(CacheError):  # TEMPORARY (train branch): the maskcache branch's version wins at merge
    """One mask (``key``) or its chunk file (``path``) is damaged; raised by ``MaskCache.get``."""

    def __init__(self, message: str, key: int | None = None, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.key, self.path = key, path

    def __reduce__(self):
        return type(self), (str(self), self.key, self.path)


# ----------------------------------------------------------------------------------------------- codec

def _runs(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask index, value, length) of every run of equal pixels of ``[B,H,W]`` masks, row-major."""
    flat = masks.reshape(len(masks), -1)
    n = flat.shape[1]
    start = np.ones(flat.shape, bool)
    start[:, 1:] = flat[:, 1:] != flat[:, :-1]
    which, pos = np.nonzero(start)
    end = np.empty_like(pos)
    end[:-1] = pos[1:]
    end[np.r_[which[1:] != which[:-1], True] if len(pos) else slice(0)] = n
    return which, flat[which, pos], end - pos


def _pack_runs(which: np.ndarray, values: np.ndarray, lengths: np.ndarray, n_masks: int) -> list[bytes]:
    pieces = (lengths + 254) // 255  # uint8 lengths: a run of 600 becomes 255, 255, 90
    values, which = np.repeat(values, pieces), np.repeat(which, pieces)
    lens = np.full(values.size, 255, np.uint8)
    lens[np.cumsum(pieces) - 1] = lengths - 255 * (pieces - 1)
    bounds = np.searchsorted(which, np.arange(n_masks + 1))
    return [zlib.compress(values[s:e].tobytes() + lens[s:e].tobytes(), ZLIB_LEVEL)
            for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist())]


def encode_masks(masks: np.ndarray) -> list[bytes]:
    """One ``rle8+zlib`` entry per mask of a uint8 ``[B,H,W]`` batch (vectorised over the batch)."""
    masks = _check_masks(masks)
    return _pack_runs(*_runs(masks), len(masks))


def decode_mask(blob: bytes | memoryview, height: int, width: int) -> np.ndarray:
    """An entry back to its uint8 ``[height, width]`` mask; ValueError if it is damaged."""
    try:
        raw = zlib.decompress(blob)
    except zlib.error as e:
        raise ValueError(f"zlib: {e}") from None
    n = len(raw) // 2
    if 2 * n != len(raw):
        raise ValueError(f"run stream of odd length {len(raw)}")
    r = np.frombuffer(raw, np.uint8)
    out = np.repeat(r[:n], r[n:])
    if out.size != height * width:
        raise ValueError(f"runs cover {out.size} pixels, expected {height}x{width}")
    return out.reshape(height, width)


def _check_masks(masks: np.ndarray) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.dtype != np.uint8:
        raise ValueError(f"masks must be uint8 [N,H,W], got {masks.dtype} {masks.shape}")
    return np.ascontiguousarray(masks)


def _class_counts(which: np.ndarray, values: np.ndarray, lengths: np.ndarray, keep: np.ndarray,
                  n_masks: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels per class and masks containing each class, from the runs of the masks with ``keep``."""
    sel = keep[which]
    pixels = np.bincount(values[sel], weights=lengths[sel], minlength=NUM_CLASSES).astype(np.int64)
    present = np.zeros((n_masks, NUM_CLASSES), bool)
    present[which[sel], values[sel]] = True
    return pixels, present.sum(0).astype(np.int64)


def _encode_batch(masks: np.ndarray, valid: np.ndarray) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """Worker job: entries (empty where not ``valid``) and class counts of one batch."""
    masks = _check_masks(masks)
    which, values, lengths = _runs(masks)
    if values.size and int(values.max()) >= NUM_CLASSES:
        bad = int(np.flatnonzero(values >= NUM_CLASSES)[0])
        raise ValueError(f"mask {int(which[bad])} of the batch holds label {int(values[bad])}, "
                         f"outside the {NUM_CLASSES} classes")
    blobs = _pack_runs(which, values, lengths, len(masks))
    pixels, images = _class_counts(which, values, lengths, valid, len(masks))
    return [b if v else b"" for b, v in zip(blobs, valid.tolist())], pixels, images


# ---------------------------------------------------------------------------------------------- chunks

def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _chunk_bytes(spec_id: bytes, index: int, row_start: int, height: int, width: int,
                 blobs: Sequence[bytes], meta: Mapping[str, Any]) -> bytes:
    meta_b = _json_bytes(meta)
    meta_b += b"\0" * (-len(meta_b) % 8)
    offsets = np.zeros(len(blobs) + 1, np.int64)
    np.cumsum([len(b) for b in blobs], out=offsets[1:])
    if offsets[-1] >= 1 << 32:
        raise CacheError(f"chunk {index} would hold {offsets[-1]} bytes (limit 4 GiB): use a smaller --chunk-size")
    head = _HEAD.pack(_MAGIC, FORMAT_VERSION, spec_id, index, row_start, len(blobs), height, width, len(meta_b))
    body = b"".join([head, meta_b, offsets.astype("<u4").tobytes(), *blobs])
    return body + _TAIL.pack(zlib.crc32(body), _END)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file + fsync + rename: a reader or a killed writer never sees half a file."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _chunk_path(root: Path, index: int) -> Path:
    return root / CHUNK_DIR / f"{index:06d}.fsmc"


class _Chunk:
    """One chunk file, memory-mapped and checked against what the manifest expects of it."""

    def __init__(self, path: Path, expect: Mapping[str, Any], hint: str = ""):
        self.path = path
        self.expect = expect
        self._hint = hint
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < _HEAD.size + _TAIL.size:
                    raise self._error(f"truncated: {size} bytes")
                self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise self._error("missing chunk file") from None
        magic, version, spec_id, index, row_start, rows, height, width, meta_len = _HEAD.unpack_from(self.mm)
        got = {"spec_id": spec_id, "index": index, "row_start": row_start, "rows": rows,
               "height": height, "width": width}
        if magic != _MAGIC or version != FORMAT_VERSION:
            raise self._error(f"not a version-{FORMAT_VERSION} chunk (magic {magic!r}, version {version})")
        if "bytes" in expect and size != expect["bytes"]:
            raise self._error(f"truncated or overwritten: {size} bytes, the manifest says {expect['bytes']}")
        for k, v in got.items():
            if k in expect and expect[k] != v:
                raise self._error(f"header field {k} is {v!r}, expected {expect[k]!r} (a chunk of another build?)")
        self.meta_start = _HEAD.size
        off_start = self.meta_start + meta_len
        self.data_start = off_start + 4 * (rows + 1)
        self.rows, self.meta_len = rows, meta_len
        if self.data_start + _TAIL.size > size:
            raise self._error(f"truncated: {size} bytes cannot hold {rows} offsets")
        self.offsets = np.frombuffer(self.mm, "<u4", rows + 1, off_start)
        data_len = size - _TAIL.size - self.data_start
        if self.offsets[0] != 0 or self.offsets[-1] != data_len or (np.diff(self.offsets.astype(np.int64)) < 0).any():
            raise self._error(f"offset table does not match the {data_len} data bytes (truncated or damaged)")
        if self.mm[size - 8:] != _END:
            raise self._error("end marker missing (truncated or damaged)")

    def _error(self, what: str) -> CacheError:
        return CacheError(f"{self.path}: {what}." + (f" {self._hint}" if self._hint else ""))

    def blob(self, i: int) -> memoryview:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return memoryview(self.mm)[self.data_start + a:self.data_start + b]

    def meta(self) -> dict:
        raw = bytes(self.mm[self.meta_start:self.meta_start + self.meta_len]).rstrip(b"\0")
        try:
            return json.loads(raw)
        except ValueError as e:
            raise self._error(f"chunk metadata is not valid JSON ({e})") from None

    def crc_ok(self) -> bool:
        stored = _TAIL.unpack_from(self.mm, len(self.mm) - _TAIL.size)[0]
        return zlib.crc32(memoryview(self.mm)[:len(self.mm) - _TAIL.size]) == stored

    @property
    def crc32(self) -> int:
        return _TAIL.unpack_from(self.mm, len(self.mm) - _TAIL.size)[0]

    def close(self) -> None:
        del self.offsets
        self.mm.close()


def _chunk_ok(path: Path, expect: Mapping[str, Any]) -> bool:
    """True if ``path`` is a complete, undamaged chunk of this build (resume keeps it)."""
    try:
        ch = _Chunk(path, expect)
    except (CacheError, OSError, ValueError):
        return False
    try:
        return ch.crc_ok()
    finally:
        ch.close()


# ----------------------------------------------------------------------------------- source identity

def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def default_cache_path(rec_dir: str | os.PathLike) -> Path:
    """``<rec_dir>/fse_masks`` (beside train.rec; for a .rec file path, beside that file)."""
    p = Path(rec_dir)
    return (p.parent if p.suffix == ".rec" and not p.is_dir() else p) / DEFAULT_DIRNAME


class _Source(NamedTuple):
    reader: recordio.RecordReader
    keys: np.ndarray  # image keys, ascending
    fingerprint: dict


def _scan_source(rec_dir: str | os.PathLike) -> _Source:
    """Image keys (ascending) and fingerprint of a rec: cheap even for 42M records (headers + one .idx hash)."""
    reader = recordio.open_rec(rec_dir)
    index = recordio.image_index(reader)
    keys = np.unique(index.keys)
    if len(keys) != len(index.keys):
        reader.close()
        raise CacheError(f"{reader.idx_path}: image keys are not unique; a mask cache needs one mask per key")
    if not len(keys):
        reader.close()
        raise CacheError(f"{reader.rec_path}: no image records")
    sample = keys[np.unique(np.linspace(0, len(keys) - 1, min(FINGERPRINT_SAMPLES, len(keys))).round().astype(np.int64))]
    h = hashlib.sha256()
    for k in sample.tolist():
        try:
            rec = reader.read(k)
        except recordio.RecordIOError as e:  # a damaged record still fingerprints, by its error
            rec = f"unreadable: {e}".encode()
        h.update(struct.pack("<qQ", k, len(rec)))
        h.update(rec)
    fp = {"records": len(reader), "image_records": len(keys), "layout": index.layout,
          "keys_sha256": hashlib.sha256(keys.astype("<i8").tobytes()).hexdigest(),
          "idx_sha256": sha256_file(reader.idx_path), "rec_bytes": os.path.getsize(reader.rec_path),
          "sample_keys": sample.tolist(), "sample_sha256": h.hexdigest()}
    return _Source(reader, keys, fp)


def source_fingerprint(rec_dir: str | os.PathLike) -> dict:
    """What identifies a rec for a cache: counts, sha256 of keys and .idx, sha256 of sampled record bytes."""
    src = _scan_source(rec_dir)
    src.reader.close()
    return src.fingerprint


def _read_image(reader: recordio.RecordReader, key: int) -> np.ndarray:
    """RGB image of one record; ValueError (RecordIOError included) or struct.error if it cannot be had."""
    return recordio.decode_image(recordio.unpack(reader.read(key))[1])


def _probe_size(reader: recordio.RecordReader, keys: np.ndarray) -> tuple[int, int]:
    """(height, width) of the first decodable image: the size of every mask of the cache."""
    for k in keys.tolist():
        try:
            return _read_image(reader, k).shape[:2]
        except (ValueError, struct.error):
            continue
    raise CacheError(f"{reader.rec_path}: no image record decodes")


def _labels_entry() -> dict:
    return {"name": LABEL_SET, "classes": list(CLASSES)}


def _spec(fingerprint: dict, producer: dict, height: int, width: int, count: int, chunk_size: int,
          inference: dict | None) -> dict:
    """Everything that determines the bytes of a cache; its hash (spec_id) is stamped on every chunk."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "codec": CODEC, "labels": _labels_entry(),
            "height": int(height), "width": int(width), "count": int(count), "chunk_size": int(chunk_size),
            "source": fingerprint, "parser": producer, "inference": inference}


def _spec_id(spec: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(_json_bytes(spec)).digest()[:8]


def _n_chunks(count: int, chunk_size: int) -> int:
    return -(-count // chunk_size)


def _chunk_rows(index: int, count: int, chunk_size: int) -> tuple[int, int]:
    return index * chunk_size, min(count, (index + 1) * chunk_size)


def _expect(spec: Mapping[str, Any], spec_id: bytes, index: int) -> dict:
    start, stop = _chunk_rows(index, spec["count"], spec["chunk_size"])
    return {"spec_id": spec_id, "index": index, "row_start": start, "rows": stop - start,
            "height": spec["height"], "width": spec["width"]}


def rebuild_command(cache: str | os.PathLike, rec: str | None = None, parser: str | None = None,
                    labels: str | None = None) -> str:
    """The ``fse cache build`` command line that (re)builds ``cache``; placeholders where a path is unknown."""
    q = shlex.quote
    src = f"--from-labels {q(labels)}" if labels else f"--parser {q(parser) if parser else 'CKPT'}"
    return f"fse cache build --rec {q(rec) if rec else 'REC_DIR'} {src} --out {q(str(cache))} --overwrite"


def _rebuild_hint(cache: Path, manifest: Mapping[str, Any] | None) -> str:
    m = manifest or {}
    rec = m.get("rec_path")
    if rec is None and cache.name == DEFAULT_DIRNAME:
        rec = str(cache.parent)
    parser = (m.get("parser") or {}).get("path") if isinstance(m.get("parser"), dict) else None
    kind = (m.get("parser") or {}).get("kind") if isinstance(m.get("parser"), dict) else None
    cmd = rebuild_command(cache, rec, None if kind == "labels" else parser, parser if kind == "labels" else None)
    return f"Rebuild it with: {cmd}"


# ---------------------------------------------------------------------------------------------- reader

class ClassFrequencies(NamedTuple):
    pixels: np.ndarray  # float64 [25]: fraction of all mask pixels per class
    images: np.ndarray  # float64 [25]: fraction of masks in which the class occurs
    masks: int  # number of masks counted


def _require(m: Mapping[str, Any], key: str, typ: type | tuple, where: Path) -> Any:
    if key not in m or not isinstance(m[key], typ) or isinstance(m[key], bool) and typ is int:
        raise CacheError(f"{where}: field {key!r} missing or of the wrong type. {_rebuild_hint(where.parent, None)}")
    return m[key]


def _read_manifest(path: Path) -> dict:
    mpath = path / MANIFEST
    if not path.is_dir():
        raise CacheError(f"{path}: no mask cache here (not a directory). {_rebuild_hint(path, None)}")
    if not mpath.is_file():
        spec_path = path / BUILD_SPEC
        if spec_path.is_file():
            try:
                cmd = json.loads(spec_path.read_bytes())["command"]
            except (ValueError, KeyError, TypeError):
                cmd = "the same fse cache build command"
            raise CacheError(f"{mpath} missing: {path} is an unfinished build (killed or still running). "
                             f"Resume it with: {cmd}")
        raise CacheError(f"{mpath} missing: {path} is not a mask cache. {_rebuild_hint(path, None)}")
    try:
        m = json.loads(mpath.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise CacheError(f"{mpath}: corrupt manifest ({e}). {_rebuild_hint(path, None)}") from None
    if not isinstance(m, dict):
        raise CacheError(f"{mpath}: corrupt manifest (not a JSON object). {_rebuild_hint(path, None)}")
    hint = _rebuild_hint(path, m)
    if m.get("format") != FORMAT_NAME:
        raise CacheError(f"{mpath}: not a {FORMAT_NAME} manifest (format {m.get('format')!r}). {hint}")
    if m.get("format_version") != FORMAT_VERSION or m.get("codec") != CODEC:
        raise CacheError(f"{mpath}: format version {m.get('format_version')!r} / codec {m.get('codec')!r}; "
                         f"this fse_plugin reads version {FORMAT_VERSION} / {CODEC}. {hint}")
    for key, typ in (("height", int), ("width", int), ("count", int), ("chunk_size", int), ("chunks", list),
                     ("spec_id", str), ("keys", dict), ("labels", dict), ("source", dict), ("parser", dict),
                     ("missing", list), ("class_pixels", list), ("class_images", list)):
        _require(m, key, typ, mpath)
    if m["labels"].get("classes") != list(CLASSES):
        raise CacheError(f"{mpath}: label set {m['labels'].get('name')!r} differs from this plugin's 25 classes. {hint}")
    if m["count"] < 1 or m["chunk_size"] < 1 or len(m["chunks"]) != _n_chunks(m["count"], m["chunk_size"]):
        raise CacheError(f"{mpath}: {len(m['chunks'])} chunks listed for {m['count']} masks of chunk size "
                         f"{m['chunk_size']} (corrupt manifest). {hint}")
    try:
        bytes.fromhex(m["spec_id"])
        if m["keys"].get("contiguous") and not isinstance(m["keys"].get("first"), int):
            raise ValueError("keys.first")
        for i, c in enumerate(m["chunks"]):
            start, stop = _chunk_rows(i, m["count"], m["chunk_size"])
            if (c["file"] != str(_chunk_path(Path(), i)) or not isinstance(c["bytes"], int)
                    or c["row_start"] != start or c["rows"] != stop - start):
                raise ValueError(f"chunk entry {i} is not {start}..{stop - 1} in {_chunk_path(Path(), i)}")
    except (ValueError, KeyError, TypeError) as e:
        raise CacheError(f"{mpath}: corrupt manifest ({e}). {hint}") from None
    return m


class MaskCache:
    """Read-only random access to a mask cache: ``get(key) -> uint8 [H,W] | None``.

    Chunk files are memory-mapped lazily in the process that reads them, so an instance can be
    created before DataLoader workers fork (or be pickled to spawned ones) and each worker maps what
    it touches; the OS page cache is shared by all. Opening checks the manifest and that every chunk
    file exists with its recorded size (missing or truncated chunks fail here, naming the file);
    :meth:`verify` checks every byte.
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if not (path / MANIFEST).is_file() and (path / "train.rec").is_file():
            path = path / DEFAULT_DIRNAME  # a rec dir: its default cache
        self.path = path
        self.manifest = _read_manifest(path)
        self._hint = _rebuild_hint(path, self.manifest)
        self._check_files()
        self._setup()

    def _setup(self) -> None:
        m = self.manifest
        self.height, self.width, self.chunk_size = m["height"], m["width"], m["chunk_size"]
        self._count = m["count"]
        self._first = m["keys"].get("first")
        self._contiguous = bool(m["keys"].get("contiguous"))
        self._keys: np.ndarray | None = None
        self._chunks: dict[int, _Chunk] = {}
        self._spec_id = bytes.fromhex(m["spec_id"])

    def _check_files(self) -> None:
        for i, c in enumerate(self.manifest["chunks"]):
            p = self.path / c["file"]
            if not p.is_file():
                raise CacheError(f"{p}: missing chunk {i} of {len(self.manifest['chunks'])} (rows {c.get('row_start')}.."
                                 f"{c.get('row_start', 0) + c.get('rows', 0) - 1}). {self._hint}")
            size = p.stat().st_size
            if size != c["bytes"]:
                raise CacheError(f"{p}: truncated or overwritten chunk {i}: {size} bytes, the manifest says "
                                 f"{c['bytes']}. {self._hint}")
        kp = self.path / KEYS_FILE
        if not kp.is_file():
            raise CacheError(f"{kp}: missing. {self._hint}")

    def __getstate__(self) -> dict:
        return {"path": self.path, "manifest": self.manifest}

    def __setstate__(self, state: dict) -> None:
        self.path, self.manifest = state["path"], state["manifest"]
        self._hint = _rebuild_hint(self.path, self.manifest)
        self._setup()

    @property
    def keys(self) -> np.ndarray:
        """Image keys, ascending (int64, memory-mapped)."""
        if self._keys is None:
            kp = self.path / KEYS_FILE
            try:
                keys = np.load(kp, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as e:
                raise CacheError(f"{kp}: unreadable ({e}). {self._hint}") from None
            if keys.dtype != np.int64 or keys.shape != (self._count,):
                raise CacheError(f"{kp}: holds {keys.dtype} {keys.shape}, expected int64 ({self._count},). {self._hint}")
            self._keys = keys
        return self._keys

    def __len__(self) -> int:
        return self._count

    def row(self, key: int) -> int:
        """Row of ``key`` (KeyError if the cache has no such image key)."""
        k = int(key)
        if self._contiguous:
            r = k - self._first
            if 0 <= r < self._count:
                return r
        else:
            keys = self.keys
            r = int(np.searchsorted(keys, k))
            if r < self._count and keys[r] == k:
                return r
        raise KeyError(f"key {key} is not an image key of mask cache {self.path} ({self._count} keys)")

    def __contains__(self, key: int) -> bool:
        try:
            self.row(key)
            return True
        except (KeyError, TypeError, ValueError):
            return False

    def _chunk(self, index: int) -> _Chunk:
        ch = self._chunks.get(index)
        if ch is None:
            c = self.manifest["chunks"][index]
            expect = {"spec_id": self._spec_id, "index": index, "row_start": c["row_start"], "rows": c["rows"],
                      "height": self.height, "width": self.width, "bytes": c["bytes"]}
            ch = self._chunks[index] = _Chunk(self.path / c["file"], expect, self._hint)
        return ch

    def get_row(self, row: int) -> np.ndarray | None:
        """Mask of row ``row`` (rows follow ``keys``); None where the image had no mask."""
        if not 0 <= row < self._count:
            raise IndexError(f"row {row} out of range for mask cache {self.path} ({self._count} masks)")
        c, i = divmod(row, self.chunk_size)
        ch = self._chunk(c)
        blob = ch.blob(i)
        if not len(blob):
            return None
        try:
            return decode_mask(blob, self.height, self.width)
        except ValueError as e:
            raise DamagedEntryError(f"{ch.path}: entry {i} (row {row}, byte {ch.data_start + int(ch.offsets[i])}) "
                                    f"is damaged: {e}. {self._hint}", None, ch.path) from None

    def get(self, key: int) -> np.ndarray | None:
        """Mask (uint8 ``[H,W]``, writable) of image record ``key``; None if its image could not be decoded."""
        try:
            return self.get_row(self.row(key))
        except DamagedEntryError as e:
            e.key = int(key)
            raise

    def check(self) -> dict:  # TEMPORARY (train branch): the maskcache branch's version wins at merge
        """Keys ascending and every chunk's structure, without decoding masks."""
        keys = np.asarray(self.keys)
        if len(keys) > 1 and not (np.diff(keys) > 0).all():
            raise CacheError(f"{self.path / KEYS_FILE}: keys are not strictly ascending. {self._hint}")
        for i in range(len(self.manifest["chunks"])):
            self._chunk(i)
        return {"path": str(self.path), "masks": self._count, "chunks": len(self.manifest["chunks"])}

    def class_frequencies(self) -> ClassFrequencies:
        """Per-class pixel share and image share over all masks, from the counts the build stored."""
        m = self.manifest
        n = self._count - len(m["missing"])
        pixels = np.asarray(m["class_pixels"], np.float64)
        images = np.asarray(m["class_images"], np.float64)
        return ClassFrequencies(pixels / max(1, n * self.height * self.width), images / max(1, n), n)

    @property
    def bytes_per_mask(self) -> float:
        return sum(c["bytes"] for c in self.manifest["chunks"]) / self._count

    def check_source(self, rec_dir: str | os.PathLike, parser: str | os.PathLike | None = None) -> None:
        """Raise CacheMismatchError unless this cache was built from ``rec_dir`` (and from ``parser``, if given).

        Compares the fingerprint (record count, keys, .idx sha256, sampled record bytes); a moved rec
        still matches, a regenerated or different one does not.
        """
        fp = source_fingerprint(rec_dir)
        mine = self.manifest["source"]
        diff = [k for k in sorted(set(fp) | set(mine)) if fp.get(k) != mine.get(k)]
        built = self.manifest.get("rec_path")
        prod = self.manifest["parser"]
        labels = prod.get("path") if prod.get("kind") == "labels" else None
        ckpt = str(parser) if parser is not None else (None if labels else prod.get("path"))
        if diff:
            short = lambda v: v[:12] + ".." if isinstance(v, str) and len(v) > 14 else v  # noqa: E731
            detail = "; ".join(f"{k} {short(mine.get(k))!r} vs {short(fp.get(k))!r}" for k in diff if k != "sample_keys")
            raise CacheMismatchError(
                f"mask cache {self.path} was built for another record file (built from {built}; {rec_dir} differs: "
                f"{detail}). Rebuild it for this rec with: "
                f"{rebuild_command(self.path, str(rec_dir), ckpt, 'NPZ' if labels else None)}")
        if parser is not None:
            sha = sha256_file(parser)
            if sha != prod.get("sha256"):
                raise CacheMismatchError(
                    f"mask cache {self.path} was built by another parser ({prod.get('kind')} {prod.get('path')}, "
                    f"sha256 {str(prod.get('sha256'))[:16]}..; {parser} has sha256 {sha[:16]}..). Rebuild it with: "
                    f"{rebuild_command(self.path, str(rec_dir), str(parser))}")

    def verify(self, rec_dir: str | os.PathLike | None = None, parser: str | os.PathLike | None = None,
               progress: bool = False) -> dict:
        """Check every byte: keys, chunk headers/crc32/offsets, every entry decodes, stored counts agree.

        Raises CacheError listing all problems found (CacheMismatchError if only the source differs).
        Returns a summary dict when the cache is sound (and belongs to ``rec_dir``/``parser`` if given).
        """
        from tqdm import tqdm
        m, problems = self.manifest, []
        keys = np.asarray(self.keys)
        if hashlib.sha256(keys.astype("<i8").tobytes()).hexdigest() != m["keys"].get("sha256"):
            problems.append(f"{self.path / KEYS_FILE}: sha256 differs from the manifest")
        if len(keys) > 1 and not (np.diff(keys) > 0).all():
            problems.append(f"{self.path / KEYS_FILE}: keys are not strictly ascending")
        if self._contiguous and len(keys) and (keys[-1] - keys[0] != len(keys) - 1 or keys[0] != self._first):
            problems.append(f"{self.path / KEYS_FILE}: keys are not the contiguous range the manifest says")
        pixels = np.zeros(NUM_CLASSES, np.int64)
        images = np.zeros(NUM_CLASSES, np.int64)
        missing = []
        for i, c in enumerate(tqdm(m["chunks"], desc="verify", unit="chunk", disable=not progress)):
            try:
                ch = self._chunk(i)
            except CacheError as e:
                problems.append(str(e).split(" Rebuild")[0])
                continue
            if ch.crc32 != c.get("crc32") or not ch.crc_ok():
                problems.append(f"{ch.path}: crc32 mismatch (damaged)")
                continue
            meta = ch.meta()
            empty, decoded = [], []
            for j in range(ch.rows):
                row = c["row_start"] + j
                try:
                    mask = self.get_row(row)
                except CacheError as e:
                    problems.append(str(e).split(" Rebuild")[0])
                    continue
                (empty.append(int(keys[row])) if mask is None else decoded.append(mask))
            errors = meta.get("errors", [])
            if sorted(k for k, _ in errors) != empty:
                problems.append(f"{ch.path}: empty entries {empty[:5]} do not match its error list {errors[:5]}")
            missing += errors
            if decoded:
                arr = np.stack(decoded)
                if arr.max() >= NUM_CLASSES:
                    problems.append(f"{ch.path}: label {int(arr.max())} outside the {NUM_CLASSES} classes")
                    continue
                p, n = _class_counts(*_runs(arr), np.ones(len(arr), bool), len(arr))
                if p.tolist() != meta.get("class_pixels") or n.tolist() != meta.get("class_images"):
                    problems.append(f"{ch.path}: class counts differ from the ones stored at build time")
                pixels += p
                images += n
        if pixels.tolist() != m["class_pixels"] or images.tolist() != m["class_images"]:
            problems.append(f"{self.path / MANIFEST}: class counts differ from the chunks'")
        if [[d["key"], d["reason"]] for d in m["missing"]] != missing:
            problems.append(f"{self.path / MANIFEST}: list of undecodable keys differs from the chunks'")
        if problems:
            raise CacheError(f"mask cache {self.path} failed verification ({len(problems)} problems):\n  "
                             + "\n  ".join(problems[:20]) + f"\n{self._hint}")
        if rec_dir is not None:
            self.check_source(rec_dir, parser)
        return {"path": str(self.path), "masks": self._count, "chunks": len(m["chunks"]),
                "missing": len(m["missing"]), "bytes_per_mask": self.bytes_per_mask,
                "source_checked": rec_dir is not None, "parser_checked": parser is not None}

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
        return (f"MaskCache({str(self.path)!r}, masks={self._count}, size={self.height}x{self.width}, "
                f"missing={len(self.manifest['missing'])})")


# ---------------------------------------------------------------------------------------------- build

_OUR_FILES = (MANIFEST, KEYS_FILE, BUILD_SPEC, BUILD_INFO)


def _remove_build(out: Path) -> None:
    """Delete the files a build writes (and only those: ``out`` may hold other things)."""
    for name in _OUR_FILES:
        (out / name).unlink(missing_ok=True)
    for p in (out / CHUNK_DIR).glob("*.fsmc*"):
        p.unlink()


def _spec_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(keys) or "nothing"


def _prepare(out: Path, spec: dict, overwrite: bool, command: str) -> bool:
    """Make ``out`` ready for this build (rank 0 only); True if it already holds this very cache.

    ``build_spec.json`` marks an unfinished build: its spec decides whether a rerun may resume, and
    ``command`` (the same build without --overwrite) is what error messages tell the user to rerun.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / CHUNK_DIR).mkdir(exist_ok=True)
    sid = _spec_id(spec).hex()
    mpath, spath = out / MANIFEST, out / BUILD_SPEC
    if mpath.is_file() and not overwrite:
        try:
            m = json.loads(mpath.read_bytes())
        except ValueError:
            m = None
        if isinstance(m, dict) and m.get("spec_id") == sid:
            try:
                MaskCache(out)
                return True
            except CacheError:  # damaged: rebuild what is bad, keep good chunks
                mpath.unlink()
        else:
            what = "corrupt manifest"
            if isinstance(m, dict):
                old = {k: m.get(k) for k in spec}
                if isinstance(old["parser"], dict):
                    old["parser"] = {k: v for k, v in old["parser"].items() if k != "path"}
                what = _spec_diff(old, spec)
            raise CacheMismatchError(
                f"{out} already holds a mask cache for another rec, parser or setting (differs in: {what}). "
                f"Add --overwrite to replace it, or choose another --out.")
    if spath.is_file() and not overwrite:
        try:
            old = json.loads(spath.read_bytes()).get("spec")
        except (ValueError, AttributeError):
            old = None
        if old != spec:
            what = _spec_diff(old, spec) if isinstance(old, dict) else "unreadable build_spec.json"
            raise CacheMismatchError(
                f"{out} holds an unfinished build for another rec, parser or setting (differs in: {what}). "
                f"Add --overwrite to discard it, or choose another --out.")
    if overwrite:
        _remove_build(out)
    for p in (out / CHUNK_DIR).glob("*.tmp*"):  # left by a killed writer
        p.unlink()
    (out / MANIFEST).unlink(missing_ok=True)
    _atomic_write(spath, json.dumps({"spec": spec, "command": command}, indent=1, sort_keys=True).encode())
    return False


def _todo(out: Path, spec: dict, rank: int, world: int) -> list[int]:
    """Chunks this rank must compute: every ``world``-th one that is not already done."""
    sid = _spec_id(spec)
    return [c for c in range(rank, _n_chunks(spec["count"], spec["chunk_size"]), world)
            if not _chunk_ok(_chunk_path(out, c), _expect(spec, sid, c))]


def _write_chunk(out: Path, spec: dict, index: int, blobs: Sequence[bytes], errors: Sequence[tuple[int, str]],
                 pixels: np.ndarray, images: np.ndarray) -> None:
    """One chunk file, atomically; ``errors`` are (key, reason) of the rows with an empty entry."""
    start, stop = _chunk_rows(index, spec["count"], spec["chunk_size"])
    if len(blobs) != stop - start:
        raise AssertionError(f"chunk {index}: {len(blobs)} entries for rows {start}..{stop - 1}")
    meta = {"errors": [[int(k), r] for k, r in sorted(errors)], "class_pixels": pixels.tolist(),
            "class_images": images.tolist()}
    data = _chunk_bytes(_spec_id(spec), index, start, spec["height"], spec["width"], blobs, meta)
    _atomic_write(_chunk_path(out, index), data)


def _wait_for_chunks(out: Path, spec: dict, poll: float = 2.0) -> None:
    """Rank 0: wait until the other ranks' chunk files exist (they appear atomically)."""
    sid = _spec_id(spec)
    n = _n_chunks(spec["count"], spec["chunk_size"])
    waiting, told = set(range(n)), False
    while waiting:
        waiting = {c for c in waiting if not _chunk_path(out, c).is_file()}
        if waiting:
            if not told:
                print(f"rank 0: waiting for {len(waiting)} chunks from the other ranks", file=sys.stderr)
                told = True
            time.sleep(poll)
    bad = [c for c in range(n) if not _chunk_ok(_chunk_path(out, c), _expect(spec, sid, c))]
    if bad:
        raise CacheError(f"{out}: chunks {bad[:10]} are damaged or from another build; rerun to recompute them")


def _finalize(out: Path, spec: dict, keys: np.ndarray, rec_path: str, producer_path: str | None,
              created: dict, meta: Mapping[str, Any]) -> dict:
    """Rank 0: collect chunk metadata, write keys.npy and (last) manifest.json; deterministic bytes."""
    sid = _spec_id(spec)
    chunks, missing = [], []
    pixels = np.zeros(NUM_CLASSES, np.int64)
    images = np.zeros(NUM_CLASSES, np.int64)
    for c in range(_n_chunks(spec["count"], spec["chunk_size"])):
        ch = _Chunk(_chunk_path(out, c), _expect(spec, sid, c))
        try:
            cm = ch.meta()
            chunks.append({"file": str(_chunk_path(Path(), c)), "row_start": ch.expect["row_start"], "rows": ch.rows,
                           "bytes": len(ch.mm), "crc32": ch.crc32})
        finally:
            ch.close()
        missing += [{"key": k, "reason": r} for k, r in cm["errors"]]
        pixels += np.asarray(cm["class_pixels"], np.int64)
        images += np.asarray(cm["class_images"], np.int64)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(keys, dtype="<i8"), allow_pickle=False)
    _atomic_write(out / KEYS_FILE, buf.getvalue())
    contiguous = bool(keys[-1] - keys[0] == len(keys) - 1)
    manifest = {**spec, "spec_id": sid.hex(), "rec_path": rec_path,
                "parser": {**spec["parser"], "path": producer_path},
                "keys": {"file": KEYS_FILE, "sha256": hashlib.sha256(keys.astype("<i8").tobytes()).hexdigest(),
                         "first": int(keys[0]), "last": int(keys[-1]), "contiguous": contiguous},
                "chunks": chunks, "data_bytes": sum(c["bytes"] for c in chunks),
                "missing": missing, "n_missing": len(missing),
                "class_pixels": pixels.tolist(), "class_images": images.tolist(),
                "created": created, "meta": dict(meta)}
    _atomic_write(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    (out / BUILD_SPEC).unlink(missing_ok=True)
    return manifest


def _summary(out: Path, manifest: Mapping[str, Any], seconds: float, computed: int, world: int,
             compute_seconds: float = 0.0) -> None:
    """Print the result (undecodable count included) and write build_info.json."""
    n, miss = manifest["count"], manifest["n_missing"]
    rate = computed / compute_seconds if computed and compute_seconds > 0 else None
    rate_s = f", {rate:.0f} masks/s on rank 0" if rate else ""
    print(f"mask cache {out}: {n} masks ({manifest['height']}x{manifest['width']}) in {len(manifest['chunks'])} "
          f"chunks, {manifest['data_bytes'] / n:.0f} bytes/mask{rate_s}; undecodable images: {miss}", file=sys.stderr)
    for d in manifest["missing"][:5]:
        print(f"  key {d['key']}: {d['reason']}", file=sys.stderr)
    if miss > 5:
        print(f"  ... {miss - 5} more in {out / MANIFEST} ('missing')", file=sys.stderr)
    info = {"finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": socket.gethostname(),
            "world_size": world, "seconds": round(seconds, 3), "compute_seconds_rank0": round(compute_seconds, 3),
            "masks_computed_rank0": computed, "masks_per_s_rank0": round(rate, 1) if rate else None}
    _atomic_write(out / BUILD_INFO, json.dumps(info, indent=1, sort_keys=True).encode())


def _versions(**extra: str) -> dict:
    return {"fse_plugin": __version__, "numpy": np.__version__, "zlib": zlib.ZLIB_RUNTIME_VERSION, **extra}


def build_from_labels(rec_dir: str | os.PathLike, keys: np.ndarray, masks: np.ndarray,
                      out: str | os.PathLike | None = None, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                      overwrite: bool = False, progress: bool = True, **meta: Any) -> Path:
    """Cache of given masks (e.g. synth ``gt_masks.npz``), no parser: one mask for every image key of the rec.

    ``keys``/``masks`` may be in any order; they must cover exactly the rec's image keys at its image
    size. ``meta`` (JSON values) is stored in the manifest; ``labels_path`` there names the source for
    rebuild messages. Single process (it only encodes), resumable like :func:`precompute`.
    """
    from tqdm import tqdm
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("a cache from labels is built by one process (it only encodes): run it without torchrun")
    t0 = time.perf_counter()
    src = _scan_source(rec_dir)
    out = Path(out) if out is not None else default_cache_path(rec_dir)
    try:
        keys = np.asarray(keys).astype(np.int64, casting="same_kind")
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.dtype != np.uint8 or len(masks) != len(keys):
            raise ValueError(f"need keys [N] and uint8 masks [N,H,W]; got keys {keys.shape}, masks {masks.dtype} {masks.shape}")
        order = np.argsort(keys, kind="stable")
        if not np.array_equal(keys[order], src.keys):
            lost, extra = np.setdiff1d(src.keys, keys), np.setdiff1d(keys, src.keys)
            dup = len(keys) - len(np.unique(keys))
            raise ValueError(f"labels do not match the image records of {src.reader.rec_path}: {len(lost)} image keys "
                             f"without a mask (e.g. {lost[:5].tolist()}), {len(extra)} masks for keys that are not "
                             f"images (e.g. {extra[:5].tolist()}), {dup} duplicate keys")
        size = _probe_size(src.reader, src.keys)
        if tuple(masks.shape[1:]) != tuple(size):
            raise ValueError(f"masks are {masks.shape[1]}x{masks.shape[2]} but the images of {src.reader.rec_path} "
                             f"are {size[0]}x{size[1]}")
        h = hashlib.sha256(src.keys.astype("<i8").tobytes())
        for s in range(0, len(order), 4096):
            h.update(np.ascontiguousarray(masks[order[s:s + 4096]]).tobytes())
        spec = _spec(src.fingerprint, {"kind": "labels", "sha256": h.hexdigest()}, size[0], size[1],
                     len(keys), chunk_size, None)
        lp = meta.get("labels_path")
        rec_abs = str(Path(src.reader.rec_path).parent.resolve())
        cmd = rebuild_command(out, rec_abs, labels=str(Path(lp).resolve()) if lp else "NPZ").removesuffix(" --overwrite")
        if not _prepare(out, spec, overwrite, cmd):
            todo = _todo(out, spec, 0, 1)
            for c in tqdm(todo, desc="encode", unit="chunk", disable=not progress):
                s, e = _chunk_rows(c, spec["count"], chunk_size)
                batch = np.ascontiguousarray(masks[order[s:e]])
                blobs, pixels, images = _encode_batch(batch, np.ones(len(batch), bool))
                _write_chunk(out, spec, c, blobs, [], pixels, images)
            manifest = _finalize(out, spec, src.keys, rec_abs, str(Path(lp).resolve()) if lp else None, _versions(), meta)
            _summary(out, manifest, time.perf_counter() - t0, 0, 1)
    finally:
        src.reader.close()
    return out


# --------------------------------------------------------------------------------- parser precompute

class _RecordImages:
    """Map-style dataset over cache rows: decodes in DataLoader workers, reports instead of raising.

    Item = (row, RGB image or None, JPEG bytes or None, reason or None): JPEG bytes are passed through
    undecoded for GPU decoding; an undecodable record gives its reason so the run goes on.
    """

    def __init__(self, reader: recordio.RecordReader, keys: np.ndarray, height: int, width: int,
                 keep_jpeg: bool = False):
        self.reader, self.keys, self.size, self.keep_jpeg = reader, keys, (height, width), keep_jpeg

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, row: int) -> tuple[int, np.ndarray | None, bytes | None, str | None]:
        key = int(self.keys[row])
        try:
            payload = recordio.unpack(self.reader.read(key))[1]
            if self.keep_jpeg and payload[:3] == b"\xff\xd8\xff":
                return row, None, payload, None
            img = recordio.decode_image(payload)
        except (ValueError, struct.error) as e:
            return row, None, None, f"{type(e).__name__}: {e}"
        if img.shape[:2] != self.size:
            return row, None, None, (f"image is {img.shape[0]}x{img.shape[1]}, the cache is "
                                     f"{self.size[0]}x{self.size[1]}")
        return row, img, None, None


class _Collate:
    """Batch = dict of rows, images ``[B,H,W,3]`` uint8 (zeros where none), JPEG bytes to decode, errors."""

    def __init__(self, height: int, width: int):
        self.size = (height, width)

    def __call__(self, items: list) -> dict:
        import torch
        images = np.zeros((len(items), *self.size, 3), np.uint8)
        jpeg_pos, jpeg, errors = [], [], []
        for i, (_, img, raw, reason) in enumerate(items):
            if img is not None:
                images[i] = img
            elif raw is not None:
                jpeg_pos.append(i)
                jpeg.append(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
            else:
                errors.append((i, reason))
        return {"rows": torch.tensor([it[0] for it in items], dtype=torch.int64), "images": torch.from_numpy(images),
                "jpeg_pos": jpeg_pos, "jpeg": jpeg, "errors": errors}


class _ChunkBatches:
    """Batch sampler: batches never cross a chunk, and split each chunk the same way in every run.

    So a chunk's masks do not depend on which rank computes it or on which chunks were resumed.
    """

    def __init__(self, chunks: Sequence[int], chunk_size: int, count: int, batch_size: int):
        self.batches = [(s, min(s + batch_size, e)) for c in chunks
                        for e in [min(count, (c + 1) * chunk_size)]
                        for s in range(c * chunk_size, e, batch_size)]

    def __iter__(self):
        for s, e in self.batches:
            yield list(range(s, e))

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def rows(self) -> int:
        return sum(e - s for s, e in self.batches)


class _Inference:
    """Parser forward + argmax for one batch, GPU work queued so the CPU prepares the next batch meanwhile.

    CPU: ``parser.predict_masks`` (what ``parser.forward_throughput`` measures). CUDA: channels_last
    (via ``common.to_input``'s NHWC view), bf16 autocast, uint8 upload from pinned memory with
    non_blocking copies, optional nvJPEG decoding (``torchvision.io.decode_jpeg`` on the GPU, batched),
    argmax as uint8 downloaded into pinned memory; ``result()`` waits on a CUDA event.
    """

    def __init__(self, model, device, amp: bool, size: tuple[int, int]):
        import torch
        self.torch, self.device, self.amp, self.size = torch, device, amp, size
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.backends.cudnn.benchmark = False  # fixed algorithms: masks repeat exactly across runs
            torch.backends.cudnn.deterministic = True
            model = model.to(device, memory_format=torch.channels_last)
        self.model = model.eval()

    def _gpu_decode(self, x, batch: dict) -> list[tuple[int, str]]:
        from torchvision.io import ImageReadMode, decode_jpeg
        pos, data, errors = list(batch["jpeg_pos"]), batch["jpeg"], []
        try:
            imgs = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:  # one bad JPEG fails the batch: decode one by one to name it
            imgs = []
            for p, d in zip(list(pos), data):
                try:
                    imgs.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError as e:
                    errors.append((p, f"decode_jpeg: {str(e).splitlines()[0]}"))
                    imgs.append(None)
        for p, img in zip(pos, imgs):
            if img is None:
                continue
            if tuple(img.shape[1:]) != self.size:
                errors.append((p, f"image is {img.shape[1]}x{img.shape[2]}, the cache is {self.size[0]}x{self.size[1]}"))
            else:
                x[p] = img.permute(1, 2, 0)
        return errors

    def launch(self, batch: dict) -> Callable[[], tuple[np.ndarray, list[tuple[int, str]]]]:
        """Queue one batch; the returned function gives (masks uint8 [B,H,W], extra errors)."""
        torch = self.torch
        if not self.cuda:
            from fse_plugin.parsing import predict_masks
            masks = predict_masks(self.model, batch["images"], batch_size=len(batch["images"]),
                                  device=self.device, amp=self.amp)
            return lambda: (masks, [])
        x = batch["images"].to(self.device, non_blocking=True)
        errors = self._gpu_decode(x, batch) if batch["jpeg"] else []
        with torch.inference_mode(), autocast(self.device, self.amp):
            m = self.model(to_input(x, channels_last=True)).argmax(1).to(torch.uint8)
        host = torch.empty(m.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(m, non_blocking=True)
        done = torch.cuda.Event()
        done.record()

        def result():
            done.synchronize()
            return host.numpy(), errors
        return result


class _InlineExecutor:
    """``encode_workers=0``: encode in the main process (tests, tiny jobs)."""

    def submit(self, fn: Callable, *args: Any) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args))
        except Exception as e:  # delivered by .result(), as a pool would
            f.set_exception(e)
        return f

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _exit_with_parent(parent: int) -> None:
    """Encoder process initializer: quit once the parent is gone, so a kill -9 leaves no orphan waiting on its queue."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)
    threading.Thread(target=watch, daemon=True).start()


def _encoder(workers: int):
    if workers <= 0:
        return _InlineExecutor()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    # fork where there is one (instant, and no __main__ re-import as with spawn): the workers only run
    # numpy and zlib, never CUDA or OpenMP, the two things a forked child of this process must not touch.
    methods = multiprocessing.get_all_start_methods()
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork" if "fork" in methods else "spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))


class _ChunkAssembler:
    """Collects encoded batches in chunk order and writes each chunk as soon as all of it is encoded."""

    def __init__(self, out: Path, spec: dict, keys: np.ndarray, max_pending: int):
        self.out, self.spec, self.keys, self.max_pending = out, spec, keys, max_pending
        self.parts: deque = deque()  # (chunk, row_start, rows, errors, future)
        self.written = 0

    def add(self, row_start: int, rows: int, errors: list[tuple[int, str]], future: Future) -> None:
        self.parts.append((row_start // self.spec["chunk_size"], row_start, rows, errors, future))
        while sum(not p[4].done() for p in self.parts) > self.max_pending:
            next(p[4] for p in self.parts if not p[4].done()).result()  # bound memory when encoding lags
        self.flush(final=False)

    def flush(self, final: bool) -> None:
        cs, count = self.spec["chunk_size"], self.spec["count"]
        while self.parts:
            c = self.parts[0][0]
            start, stop = _chunk_rows(c, count, cs)
            mine = [p for p in self.parts if p[0] == c]
            if sum(p[2] for p in mine) < stop - start or not (final or all(p[4].done() for p in mine)):
                return
            blobs, errors = [], []
            pixels = np.zeros(NUM_CLASSES, np.int64)
            images = np.zeros(NUM_CLASSES, np.int64)
            for _, s, _, errs, fut in mine:
                b, p, n = fut.result()
                blobs += b
                pixels += p
                images += n
                errors += [(int(self.keys[s + i]), reason) for i, reason in errs]
            _write_chunk(self.out, self.spec, c, blobs, errors, pixels, images)
            self.written += 1
            for _ in mine:
                self.parts.popleft()


def _coordinate(fn: Callable[[], Any], rank: int, world: int) -> Any:
    """Run ``fn`` on rank 0 and hand its result (or its error) to every rank."""
    if world == 1:
        return fn()
    import torch.distributed as dist
    box: list = [None]
    error = None
    if rank == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # re-raised below, after the other ranks have been told
            error, box[0] = e, (type(e).__name__, f"rank 0: {e}")
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if error is not None:
        raise error
    if status != "ok":
        raise (CacheMismatchError if status == "CacheMismatchError" else CacheError)(value)
    return value


def _compute_chunks(out: Path, spec: dict, src: _Source, todo: list[int], parser_ckpt: Path, dev, amp: bool,
                    batch_size: int, num_workers: int, encode_workers: int, gpu_decode: bool,
                    progress: bool, desc: str) -> tuple[int, float]:
    """The pipeline of one rank: DataLoader decode -> parser -> encode processes -> chunk files.

    Returns (masks computed, seconds of the loop).
    """
    from torch.utils.data import DataLoader
    from tqdm import tqdm
    from fse_plugin.parsing import load_parser

    height, width = spec["height"], spec["width"]
    sampler = _ChunkBatches(todo, spec["chunk_size"], spec["count"], batch_size)
    loader = DataLoader(_RecordImages(src.reader, src.keys, height, width, gpu_decode), batch_sampler=sampler,
                        num_workers=num_workers, collate_fn=_Collate(height, width), pin_memory=dev.type == "cuda",
                        prefetch_factor=4 if num_workers else None)
    infer = _Inference(load_parser(parser_ckpt), dev, amp, (height, width))
    pool = _encoder(encode_workers)
    asm = _ChunkAssembler(out, spec, src.keys, max_pending=4 * max(1, encode_workers) + 2)
    bar = tqdm(total=sampler.rows, unit="mask", desc=desc, disable=not progress, smoothing=0.05)

    def hand_over(batch: dict, result: Callable) -> None:
        masks, extra = result()
        errors = sorted((int(i), str(r)) for i, r in [*batch["errors"], *extra])
        valid = np.ones(len(masks), bool)
        valid[[i for i, _ in errors]] = False
        asm.add(int(batch["rows"][0]), len(masks), errors, pool.submit(_encode_batch, masks, valid))
        bar.update(len(masks))

    t0 = time.perf_counter()
    try:
        prev = None
        for batch in loader:  # batch i+1 is queued on the GPU before batch i is collected
            cur = (batch, infer.launch(batch))
            if prev is not None:
                hand_over(*prev)
            prev = cur
        if prev is not None:
            hand_over(*prev)
        asm.flush(final=True)
    finally:
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)
    return sampler.rows, time.perf_counter() - t0


def precompute(rec_dir: str | os.PathLike, parser_ckpt: str | os.PathLike, out: str | os.PathLike | None = None,
               batch_size: int = 256, device: str = "auto", num_workers: int = 4, *,
               chunk_size: int = DEFAULT_CHUNK_SIZE, encode_workers: int = 1, amp: bool | None = None,
               gpu_decode: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Run the parser over every image record of ``rec_dir`` and write the mask cache (default beside train.rec).

    Decoding happens in ``num_workers`` DataLoader workers and run-length/zlib encoding in
    ``encode_workers`` processes, both overlapped with inference. Under torchrun (gloo on CPU, nccl on
    CUDA, RANK/WORLD_SIZE/LOCAL_RANK from the environment, several nodes if ``out`` is on a shared
    filesystem) rank r computes chunks r, r + world, ...; the other ranks return once their chunks are
    written, rank 0 waits for all chunk files and writes the manifest. Completed chunks survive a
    kill; rerunning the same command resumes, and the result is byte-identical to an uninterrupted or
    single-process run. Undecodable images are recorded in the manifest with their reason.
    ``amp`` (bf16) defaults to on for CUDA; ``gpu_decode`` decodes JPEGs with nvJPEG in batches.
    """
    import torch
    import torch.distributed as dist

    t0 = time.perf_counter()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parser_ckpt = Path(parser_ckpt)
    if not parser_ckpt.is_file():
        raise FileNotFoundError(f"parser checkpoint not found: {parser_ckpt}")
    out = Path(out) if out is not None else default_cache_path(rec_dir)
    owns_group = not (dist.is_available() and dist.is_initialized())
    rank, world, dev = dist_env(resolve_device(device))
    amp = dev.type == "cuda" if amp is None else bool(amp)
    src = None
    try:
        if gpu_decode and dev.type != "cuda":
            raise ValueError("gpu_decode needs a CUDA device")
        src = _scan_source(rec_dir)
        height, width = _probe_size(src.reader, src.keys)
        spec = _spec(src.fingerprint, {"kind": "checkpoint", "sha256": sha256_file(parser_ckpt)}, height, width,
                     len(src.keys), chunk_size, {"batch_size": int(batch_size), "device": dev.type, "amp": amp,
                                                 "decoder": "nvjpeg" if gpu_decode else "cpu"})
        rec_abs = str(Path(src.reader.rec_path).parent.resolve())
        cmd = rebuild_command(out, rec_abs, str(parser_ckpt.resolve())).removesuffix(" --overwrite")
        if _coordinate(lambda: _prepare(out, spec, overwrite, cmd), rank, world):
            if rank == 0:
                print(f"mask cache {out} is complete and up to date", file=sys.stderr)
            return out
        todo = _todo(out, spec, rank, world)
        computed, seconds = 0, 0.0
        if todo:
            computed, seconds = _compute_chunks(out, spec, src, todo, parser_ckpt, dev, amp, batch_size, num_workers,
                                                encode_workers, gpu_decode, progress and rank == 0,
                                                f"precompute rank {rank}/{world}")
        if rank == 0:
            if world > 1:
                _wait_for_chunks(out, spec)
            manifest = _finalize(out, spec, src.keys, rec_abs, str(parser_ckpt.resolve()),
                                 _versions(torch=torch.__version__), {})
            _summary(out, manifest, time.perf_counter() - t0, computed, world, seconds)
    finally:
        if src is not None:
            src.reader.close()
        if world > 1 and owns_group and dist.is_initialized():
            dist.destroy_process_group()
    return out
