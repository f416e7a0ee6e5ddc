"""mxnet's ``recordio`` interface: ``MXRecordIO``, ``MXIndexedRecordIO``, ``IRHeader``, ``pack``,
``unpack``, ``pack_img`` and ``unpack_img`` with mxnet's names, signatures and bytes (what
``mxcompat`` serves as ``mx.recordio`` to arcface_torch's own code)."""
from __future__ import annotations

import numbers
import os
import struct
from collections import namedtuple
from collections.abc import Mapping
from multiprocessing import current_process
from typing import Any

import cv2
import numpy as np

from fse_plugin.recordio.chunks import RecordFile, RecordIOError, encode_record
from fse_plugin.recordio.index import _Index, _OffsetMap

__all__ = ["IRHeader", "MXRecordIO", "MXIndexedRecordIO", "pack", "unpack", "unpack_img",
           "pack_img"]

_IR_FORMAT = "<IfQQ"  # mxnet's native 'IfQQ' on the little-endian machines it runs on
_IR = struct.Struct(_IR_FORMAT)
_IR_SIZE = _IR.size  # 24

IRHeader = namedtuple("HEADER", ["flag", "label", "id", "id2"])
IRHeader.__doc__ = ("Image record header (as mxnet): flag = number of float labels if > 0, label, "
                    "id, id2.")


class MXRecordIO:
    """Sequential RecordIO reader/writer with mxnet's interface (``flag`` 'r' or 'w')."""

    def __init__(self, uri: str | os.PathLike, flag: str):
        self.uri = str(uri)
        self.flag = flag
        self.pid: int | None = None
        self.is_open = False
        self.open()

    def open(self) -> None:
        if self.flag == "w":
            try:
                self._out = open(self.uri, "wb")
            except OSError as e:
                raise RecordIOError(f"{self.uri}: cannot create record file: {e.strerror}") from e
            self.writable = True
        elif self.flag == "r":
            self._file = RecordFile(self.uri)
            self.writable = False
        else:
            raise ValueError("Invalid flag %s" % self.flag)
        self._pos = 0
        self.pid = current_process().pid
        self.is_open = True

    def __del__(self) -> None:
        if getattr(self, "is_open", False):
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        if getattr(self, "writable", False):
            raise TypeError(f"cannot pickle a RecordIO writer ({self.uri})")
        return dict(self.__dict__)

    def _check_pid(self, allow_reset: bool = False) -> None:
        """Writers must stay in their process (a forked copy would interleave bytes); reads use
        pread and need no check, unlike mxnet which forbids them in another process."""
        if self.pid != current_process().pid:
            if allow_reset:
                self.reset()
            else:
                raise RuntimeError("Forbidden operation in multiple processes")

    def close(self) -> None:
        if not self.is_open:
            return
        if self.writable:
            self._out.close()
        else:
            self._file.close()
        self.is_open = False
        self.pid = None

    def reset(self) -> None:
        """Reopen: readers go back to the first record; writers truncate the file (as mxnet)."""
        self.close()
        self.open()

    def write(self, buf: bytes) -> None:
        assert self.writable
        self._check_pid(allow_reset=False)
        data = encode_record(buf)
        self._out.write(data)
        self._pos += len(data)

    def read(self) -> bytes | None:
        """The next record, or None at the end of the file."""
        assert not self.writable
        if self._pos >= self._file.size:
            return None
        buf, self._pos = self._file.read_record(self._pos)
        return buf


class MXIndexedRecordIO(MXRecordIO):
    """Random-access RecordIO with an .idx file, mxnet's interface.

    Reading differs from mxnet only in representation: for int keys ``keys`` is an int64 numpy
    array (file order) and ``idx`` a read-only mapping over numpy arrays (an MS1M-size index in a
    fraction of mxnet's memory and time).
    """

    def __init__(self, idx_path: str | os.PathLike, uri: str | os.PathLike, flag: str,
                 key_type: type = int):
        self.idx_path = str(idx_path)
        self.idx: Mapping | dict = {}
        self.keys: np.ndarray | list = []
        self.key_type = key_type
        self.fidx = None
        super().__init__(uri, flag)

    def open(self) -> None:
        super().open()
        if self.writable:
            self.idx, self.keys = {}, []
            try:
                self.fidx = open(self.idx_path, "w")
            except OSError as e:
                raise RecordIOError(f"{self.idx_path}: cannot create index file: "
                                    f"{e.strerror}") from e
        else:
            self._index = _Index(self.idx_path, self.key_type)
            self._index.check_against(self._file)
            self.keys, self.idx = self._index.keys, _OffsetMap(self._index)

    def close(self) -> None:
        if not self.is_open:
            return
        super().close()
        if self.fidx is not None:
            self.fidx.close()
            self.fidx = None

    def seek(self, idx: Any) -> None:
        assert not self.writable
        self._pos = self.idx[idx]

    def tell(self) -> int:
        assert self.writable
        return self._pos

    def read_idx(self, idx: Any) -> bytes:
        self.seek(idx)
        return self.read()

    def write_idx(self, idx: Any, buf: bytes) -> None:
        key = self.key_type(idx)
        pos = self.tell()
        self.write(buf)
        self.fidx.write("%s\t%d\n" % (str(key), pos))
        self.idx[key] = pos
        self.keys.append(key)


def pack(header: IRHeader | tuple, s: bytes) -> bytes:
    """Header + payload as mxnet: a scalar label sets flag 0; an array label sets flag = its
    length and is stored as float32 after the header (header label field 0)."""
    header = IRHeader(*header)
    if isinstance(header.label, numbers.Number):
        header = header._replace(flag=0)
    else:
        label = np.asarray(header.label, dtype=np.float32)
        header = header._replace(flag=label.size, label=0)
        s = label.tobytes() + s
    return _IR.pack(*header) + s


def unpack(s: bytes) -> tuple[IRHeader, bytes]:
    """Inverse of ``pack``: (header with a float32 label array when flag > 0, payload)."""
    header = IRHeader(*_IR.unpack(s[:_IR_SIZE]))
    s = s[_IR_SIZE:]
    if header.flag > 0:
        header = header._replace(label=np.frombuffer(s, np.float32, header.flag))
        s = s[header.flag * 4:]
    return header, s


def unpack_img(s: bytes, iscolor: int = -1) -> tuple[IRHeader, np.ndarray | None]:
    """Header and cv2-decoded image (BGR, as mxnet; None if cv2 cannot decode it)."""
    header, s = unpack(s)
    return header, cv2.imdecode(np.frombuffer(s, dtype=np.uint8), iscolor)


def pack_img(header: IRHeader | tuple, img: np.ndarray, quality: int = 95, img_fmt: str = ".jpg"
             ) -> bytes:
    """Encode a BGR image with cv2 (JPEG quality / PNG compression = ``quality``) and ``pack``
    it."""
    params = None
    if img_fmt.upper() in (".JPG", ".JPEG"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif img_fmt.upper() == ".PNG":
        params = [cv2.IMWRITE_PNG_COMPRESSION, quality]
    ret, buf = cv2.imencode(img_fmt, img, params)
    if not ret:  # mxnet asserts; an assert vanishes under python -O
        raise ValueError(f"OpenCV cannot encode a {img.shape} {img.dtype} image as {img_fmt}")
    return pack(header, buf.tobytes())

