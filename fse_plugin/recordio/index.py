"""The ``.idx`` file: text lines ``key\\toffset`` (offset of a record's first chunk), parsed into
numpy.

Two int64 arrays instead of mxnet's dict of Python ints: several times less memory and time to open
an MS1M-size index (figures in benchmarks/README.md); lookups stay O(1) for the usual key orders.
"""
from __future__ import annotations

import operator
import warnings
from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np

from fse_plugin.recordio.chunks import RecordFile, RecordIOError, _error

_IDX_BLOCK = 1 << 20  # .idx bytes (and index entries) per parsing step: bounds the temporary memory
_I64 = np.iinfo(np.int64)


def _bad_idx_line(path: Any, block: bytes, first_line: int) -> RecordIOError | None:
    """The first malformed or out-of-int64-range line of a block (slow path: only for a block that
    failed the fast parse, or holds int64's extremes, where that parse saturates), else None."""
    for i, line in enumerate(block.split(b"\n")[:-1]):
        fields = line.strip().split(b"\t")
        try:
            if len(fields) != 2:
                raise ValueError
            values = int(fields[0]), int(fields[1])
        except ValueError:
            return RecordIOError(f"{path}: line {first_line + i}: expected 'key<TAB>offset', "
                                 f"got {line[:80]!r}")
        if not all(_I64.min <= v <= _I64.max for v in values):
            return RecordIOError(f"{path}: line {first_line + i}: {line[:80]!r} is outside the "
                                 "64-bit integer range")
    return None


def _parse_int_idx(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(keys, offsets) int64 arrays of an .idx in file order.

    ``np.fromstring(sep=' ')`` parses whitespace-separated ints in C; blocks keep the temporary
    memory small and the tab/newline counts check that every line has exactly two fields.
    """
    try:
        f = open(path, "rb")
    except OSError as e:
        raise RecordIOError(f"{path}: cannot open index file: {e.strerror}") from e
    with f:
        n, last = 0, b"\n"
        while block := f.read(_IDX_BLOCK):
            n, last = n + block.count(b"\n"), block[-1:]
        n += last != b"\n"
        keys, offsets = np.empty(n, np.int64), np.empty(n, np.int64)
        f.seek(0)
        i, tail = 0, b""
        while True:
            block = f.read(_IDX_BLOCK)
            buf = tail + block
            cut = buf.rfind(b"\n") + 1 if block else len(buf)  # parse whole lines only
            buf, tail = buf[:cut], buf[cut:]
            if buf and not block and not buf.endswith(b"\n"):
                buf += b"\n"  # last line without a newline
            if buf:
                m = buf.count(b"\n")
                try:
                    # numpy < 2.3 warns on unparsable text, later ones raise
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)
                        vals = np.fromstring(buf, dtype=np.int64, sep=" ")
                except ValueError:
                    vals = None
                if vals is None or vals.size != 2 * m or buf.count(b"\t") != m or i + m > n:
                    raise (_bad_idx_line(path, buf, i + 1)
                           or RecordIOError(f"{path}: lines {i + 1}..: malformed"))
                if (((vals == _I64.max) | (vals == _I64.min)).any()
                        and (e := _bad_idx_line(path, buf, i + 1))):
                    raise e
                keys[i:i + m], offsets[i:i + m] = vals[0::2], vals[1::2]
                i += m
            if not block:
                break
    if i != n:
        raise RecordIOError(f"{path}: changed while reading ({i} of {n} lines)")
    return keys, offsets


class _Index:
    """key -> offset of an .idx file.

    Int keys live in numpy arrays. Lookup is O(1) where keys run consecutively in file order (the
    usual case: 1..N then the header 0); the few keys that break the run go to a small dict, and
    an index that is mostly out of order uses a sorted copy with binary search.
    """

    def __init__(self, path: str, key_type: type = int):
        self.path = path
        self._extra: dict | None = {}
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None
        if key_type is int:
            self.keys, self.offsets = _parse_int_idx(path)
            self.keys.flags.writeable = self.offsets.flags.writeable = False  # shared by all users
            self._build_int_lookup()
        else:  # mxnet's own loop, for string keys and the like
            try:
                with open(path) as f:
                    lines = [line.strip().split("\t") for line in f]
            except OSError as e:
                raise RecordIOError(f"{path}: cannot open index file: {e.strerror}") from e
            try:
                self.keys = [key_type(line[0]) for line in lines]
                self.offsets = np.array([int(line[1]) for line in lines], dtype=np.int64)
            except (ValueError, IndexError) as e:
                raise RecordIOError(f"{path}: malformed index line: {e}") from e
            self._base, self._n = None, 0
            self._extra = {k: p for p, k in enumerate(self.keys)}
            if len(self._extra) != len(self.keys):
                raise RecordIOError(f"{path}: duplicate keys")

    def _build_int_lookup(self) -> None:
        keys = self.keys
        self._n = n = len(keys)
        self._base = int(keys[0]) if n else 0
        odd = [np.flatnonzero(keys[s:s + _IDX_BLOCK]
                              != np.arange(self._base + s, self._base + min(n, s + _IDX_BLOCK)))
               + s for s in range(0, n, _IDX_BLOCK)]
        odd = np.concatenate(odd) if odd else np.zeros(0, np.int64)
        if len(odd) <= max(1024, n // 64):
            for p in odd.tolist():
                k = int(keys[p])
                if k in self._extra or self._dense_pos(k) is not None:
                    raise RecordIOError(f"{self.path}: duplicate key {k} (line {p + 1})")
                self._extra[k] = p
        else:
            self._extra = None
            order = np.argsort(keys, kind="stable").astype(np.int32 if n < 2**31 else np.int64)
            skeys = keys[order]
            dup = np.flatnonzero(skeys[1:] == skeys[:-1])
            if len(dup):
                raise RecordIOError(f"{self.path}: duplicate key {skeys[dup[0]]} "
                                    f"(line {order[dup[0] + 1] + 1})")
            self._sorted = (skeys, order)

    def _dense_pos(self, key: int) -> int | None:
        p = key - self._base
        return p if 0 <= p < self._n and self.keys[p] == key else None

    def position(self, key: Any) -> int:
        """Line number (0-based) of ``key``; KeyError if absent."""
        if self._base is None:
            return self._extra[key]
        key = operator.index(key)
        p = self._dense_pos(key)
        if p is not None:
            return p
        if self._extra is not None:
            return self._extra[key]
        skeys, order = self._sorted
        i = int(np.searchsorted(skeys, key))
        if i < len(skeys) and skeys[i] == key:
            return int(order[i])
        raise KeyError(key)

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """Vectorised ``position``; -1 where a key is absent."""
        keys = np.asarray(keys, dtype=np.int64)
        out = np.full(len(keys), -1, np.int64)
        if self._base is None:
            return np.array([self._extra.get(k, -1) for k in keys.tolist()], np.int64)
        p = keys - self._base
        ok = (p >= 0) & (p < self._n)
        ok[ok] = self.keys[p[ok]] == keys[ok]
        out[ok] = p[ok]
        rest = np.flatnonzero(~ok)
        if self._extra is not None:
            out[rest] = [self._extra.get(k, -1) for k in keys[rest].tolist()]
        elif len(rest):
            skeys, order = self._sorted
            i = np.minimum(np.searchsorted(skeys, keys[rest]), len(skeys) - 1)
            out[rest] = np.where(skeys[i] == keys[rest], order[i], -1)
        return out

    def check_against(self, rec: RecordFile) -> None:
        """Catch an .idx that does not belong to its .rec at open time: offsets must lie inside the
        file and the first- and last-placed records must start with a valid chunk header."""
        if not len(self.offsets):
            return
        # no argmax: it copies read-only arrays
        for value in (int(self.offsets.min()), int(self.offsets.max())):
            p = int(np.flatnonzero(self.offsets == value)[0])
            if not 0 <= value <= rec.size - 8:
                raise _error(rec.path, self.keys[p], value,
                             f"offset from {self.path} line {p + 1} is outside the file "
                             f"({rec.size} bytes); the .idx does not belong to this .rec "
                             "or the .rec is truncated")
            rec.read_record(value, self.keys[p], limit=0)


class _OffsetMap(Mapping):
    """Read-only ``key -> offset`` view standing in for mxnet's ``MXIndexedRecordIO.idx`` dict."""

    def __init__(self, index: _Index):
        self._index = index

    def __getitem__(self, key: Any) -> int:
        try:
            return int(self._index.offsets[self._index.position(key)])
        except TypeError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator:
        return iter(self._index.keys)

    def __len__(self) -> int:
        return len(self._index.keys)

