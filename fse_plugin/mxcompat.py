"""The handful of mxnet calls that arcface_torch's ``dataset.py`` and ``eval/verification.py`` make,
served by fse_plugin.recordio and cv2.

mxnet 1.9.1 (its last release) imports only with numpy < 1.24, which blocks a modern stack.
``patches/0001-fse-dataset.patch`` makes those two files ``import fse_plugin.mxcompat as mx`` when
``import mxnet`` fails, so their code runs unchanged. Covered: ``mx.recordio`` (MXIndexedRecordIO,
unpack, ...), ``mx.image.imdecode``, ``mx.image.resize_short``, ``mx.nd.transpose``,
``mx.ndarray.flip`` and ``NDArray.asnumpy()``; nothing else of mxnet.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

import cv2
import numpy as np

from fse_plugin import recordio  # noqa: F401  (served as mx.recordio)


class NDArray(np.ndarray):
    """A numpy array with mxnet's ``asnumpy()`` (a contiguous copy, as mxnet returns)."""

    def asnumpy(self) -> np.ndarray:
        return np.array(self, copy=True, order="C").view(np.ndarray)


def imdecode(buf: bytes | np.ndarray, flag: int = 1, to_rgb: int = 1) -> NDArray:
    """Decode an encoded image like ``mx.image.imdecode``: HxWx3 RGB (flag 1) or HxWx1 (flag 0),
    uint8."""
    data = (np.frombuffer(buf, np.uint8) if isinstance(buf, (bytes, bytearray, memoryview))
            else np.asarray(buf))
    img = cv2.imdecode(data, cv2.IMREAD_COLOR if flag else cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"cannot decode image ({data.size} bytes)")
    if not flag:
        img = img[:, :, None]
    elif to_rgb:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img.view(NDArray)


def resize_short(src: np.ndarray, size: int, interp: int = 2) -> NDArray:
    """Resize so the shorter edge is ``size``, keeping the aspect ratio (mxnet's rounding, cv2
    interp codes)."""
    h, w = src.shape[:2]
    new_h, new_w = (size * h // w, size) if h > w else (size, size * w // h)
    out = cv2.resize(np.asarray(src), (new_w, new_h), interpolation=interp)
    return out.reshape(new_h, new_w, *src.shape[2:]).view(NDArray)


def transpose(data: np.ndarray, axes: Sequence[int]) -> NDArray:
    return np.transpose(data, axes).view(NDArray)


def flip(data: np.ndarray, axis: int) -> NDArray:
    return np.flip(data, axis).view(NDArray)


image = SimpleNamespace(imdecode=imdecode, resize_short=resize_short)
nd = ndarray = SimpleNamespace(transpose=transpose, flip=flip, NDArray=NDArray)
