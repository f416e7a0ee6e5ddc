"""The dmlc-core chunk layer: record bytes on disk, and a .rec file read with ``pread``.

A record is stored as one or more chunks
``uint32 magic 0xced7230a | uint32 lrec = cflag << 29 | length | data | zero pad to 4 bytes``.
Where the record holds the magic word at a 4-byte-aligned position, the writer cuts it out and
starts a new chunk (cflag 1 first, 2 middle, 3 last; 0 = whole record), so a reader that lost sync
can always find the next record by scanning for the magic.  Readers re-insert the magic between
the parts.
"""
from __future__ import annotations

import os
import struct
from typing import Any

from fse_plugin.common.errors import FSEError

__all__ = ["MAGIC", "RecordIOError", "RecordFile", "encode_record"]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_CHUNK = struct.Struct("<II")  # magic, lrec
_LEN_MASK = (1 << 29) - 1
_PREFETCH = 8192  # first pread of a record: a 112x112 face JPEG fits, so usually one syscall


class RecordIOError(FSEError):
    """A record or index file is missing, truncated, corrupt, or does not belong to its partner."""


def _error(path: Any, key: Any, offset: Any, what: str) -> RecordIOError:
    return RecordIOError(f"{path}: key {key} at offset {offset}: {what}")


def encode_record(buf: bytes) -> bytes:
    """The exact bytes dmlc-core's ``RecordIOWriter::WriteRecord`` writes for one record.

    Each magic word at an aligned position ends a chunk and is dropped (the reader puts it back).
    Chunk lengths before the last are multiples of 4, so only the tail gets zero padding.
    """
    buf = bytes(buf)
    size = len(buf)
    if size >= 1 << 29:
        raise ValueError(f"RecordIO records must be < 2^29 bytes, got {size}")
    out = []
    start = 0
    pos = buf.find(_MAGIC_BYTES)
    while pos >= 0:
        if pos % 4:
            pos = buf.find(_MAGIC_BYTES, pos + 1)
            continue
        out += [_CHUNK.pack(MAGIC, (2 if start else 1) << 29 | (pos - start)), buf[start:pos]]
        start = pos + 4
        pos = buf.find(_MAGIC_BYTES, start)
    out += [_CHUNK.pack(MAGIC, (3 if start else 0) << 29 | (size - start)), buf[start:],
            b"\0" * (-size % 4)]
    return b"".join(out)


class RecordFile:
    """A .rec file read only with ``os.pread``: no file offset is shared, so forked workers may
    read concurrently; the descriptor is dropped on pickling and reopened lazily. Reads by offset
    (``read_record``) need no index: what a dataset that keeps its records' offsets ships to
    workers."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._fd: int | None = None
        self.size = os.fstat(self._open()).st_size

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except OSError as e:
                raise RecordIOError(f"{self.path}: cannot open record file: {e.strerror}") from e
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    __del__ = close

    def __getstate__(self) -> dict:
        return {"path": self.path, "size": self.size, "_fd": None}

    def read_record(self, offset: int, key: Any = None, limit: int | None = None
                    ) -> tuple[bytes, int]:
        """The record whose first chunk starts at ``offset``, and the offset after its last chunk.

        With ``limit`` it may stop once ``limit`` bytes of the record are known (header reads);
        the returned next offset is then -1.  Magic, chunk-flag order and lengths are checked.
        """
        fd = self._open()
        parts: list[bytes] = []
        got, pos = 0, offset
        while True:
            head = os.pread(fd, _PREFETCH if limit is None else 8 + limit - got, pos)
            if len(head) < 8:
                what = ("offset past the end of the file" if pos >= self.size
                        else "truncated chunk header")
                raise _error(self.path, key, offset,
                             f"{what} (chunk at {pos}, file size {self.size})")
            magic, lrec = _CHUNK.unpack_from(head)
            if magic != MAGIC:
                raise _error(self.path, key, offset,
                             f"bad magic 0x{magic:08x} at {pos}: not a record start"
                             " (corrupt file, or an .idx that does not belong to this .rec)")
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            if cflag not in ((2, 3) if parts else (0, 1)):
                raise _error(self.path, key, offset, f"chunk flag {cflag} at {pos} out of order"
                             + ("" if parts else " (offset points inside a split record)"))
            if pos + 8 + length > self.size:
                raise _error(self.path, key, offset,
                             f"truncated record: chunk at {pos} has {length} bytes,"
                             f" file ends at {self.size}")
            data = head[8:8 + length]
            if limit is not None and got + len(data) >= limit:
                parts.append(data)
                return _MAGIC_BYTES.join(parts), -1
            if len(data) < length:
                data += os.pread(fd, length - len(data), pos + 8 + len(data))
                if len(data) < length:
                    raise _error(self.path, key, offset, f"short read at {pos} (file changed?)")
            pos += 8 + ((length + 3) & ~3)
            if cflag == 0:
                return data, pos
            parts.append(data)
            if cflag == 3:
                return _MAGIC_BYTES.join(parts), pos
            got += length + 4

