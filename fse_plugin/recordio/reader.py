"""``RecordReader``, the read path the plugin uses: numpy index, ``os.pread`` per read (no shared
file offset, so safe in forked DataLoader workers), magic, chunk flags and lengths validated on
every read."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fse_plugin.recordio.chunks import RecordFile, RecordIOError, _error
from fse_plugin.recordio.images import decode_image
from fse_plugin.recordio.index import _Index
from fse_plugin.recordio.mxnet_api import _IR, _IR_SIZE, IRHeader, unpack

__all__ = ["RecordReader", "open_rec"]


class RecordReader:
    """Read-only random access to a .rec by key: numpy index, pread, validated records.

    Fork-safe (no file offset is used) and picklable (the descriptor reopens lazily), so one
    instance can live in a Dataset that DataLoader workers fork or spawn.
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None,
                 key_type: type = int):
        self.rec_path = Path(rec_path)
        self.idx_path = (Path(idx_path) if idx_path is not None
                         else self.rec_path.with_suffix(".idx"))
        self._file = RecordFile(self.rec_path)
        self._index = _Index(str(self.idx_path), key_type)
        self._index.check_against(self._file)

    @property
    def keys(self) -> np.ndarray:
        """Keys in .idx order (int64 array for int keys)."""
        return self._index.keys

    @property
    def offsets(self) -> np.ndarray:
        """Record offsets (int64), aligned with ``keys``."""
        return self._index.offsets

    def __len__(self) -> int:
        return len(self._index.keys)

    def __contains__(self, key: Any) -> bool:
        try:
            self._index.position(key)
            return True
        except (KeyError, TypeError):
            return False

    def offset(self, key: Any) -> int:
        """Offset of ``key``'s first chunk; RecordIOError if the key is not in the index."""
        try:
            return int(self._index.offsets[self._index.position(key)])
        except (KeyError, TypeError):
            raise RecordIOError(f"{self.idx_path}: key {key!r} not in index") from None

    def read(self, key: Any) -> bytes:
        """The whole record (IRHeader bytes included), split chunks reassembled."""
        return self._file.read_record(self.offset(key), key)[0]

    def read_image(self, key: Any, out: np.ndarray | None = None) -> np.ndarray:
        """The RGB image of a record (into ``out`` if given): ``decode_image`` of its payload, with
        its errors."""
        return decode_image(unpack(self.read(key))[1], out=out)

    def read_header(self, key: Any) -> IRHeader:
        """Only the header and label floats of a record (no image bytes read)."""
        offset = self.offset(key)
        data = self._file.read_record(offset, key, limit=_IR_SIZE)[0]
        if len(data) >= _IR_SIZE:
            flag = _IR.unpack_from(data)[0]
            need = _IR_SIZE + 4 * flag
            if len(data) < need:
                data = self._file.read_record(offset, key, limit=need)[0]
            if len(data) >= need:
                header = IRHeader(*_IR.unpack_from(data))
                if flag:
                    header = header._replace(label=np.frombuffer(data, np.float32, flag, _IR_SIZE))
                return header
        raise _error(self.rec_path, key, offset,
                     f"record of {len(data)} bytes is shorter than its image header")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RecordReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RecordReader({str(self.rec_path)!r}, {str(self.idx_path)!r}, records={len(self)})"


def open_rec(path: str | os.PathLike) -> RecordReader:
    """``RecordReader`` for a dataset dir (train.rec + train.idx) or a .rec file (.idx beside
    it)."""
    path = Path(path)
    rec = path / "train.rec" if path.is_dir() else path
    if not rec.is_file():
        raise RecordIOError(f"{rec}: record file not found")
    return RecordReader(rec, rec.with_suffix(".idx"))
