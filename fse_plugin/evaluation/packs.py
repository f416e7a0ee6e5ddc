"""Verification packs (``lfw.bin``, ``cfp_fp.bin`` ...): a pickle of (2P encoded images, P bools),
pair i being images 2i and 2i+1. Read with the bounded, restricted unpickler (a pack is untrusted
input) and decoded with OpenCV as mxnet's ``imdecode`` does (mxnet does not import with
numpy >= 1.24)."""
from __future__ import annotations

import os
from typing import Any, Sequence

import cv2
import numpy as np

from fse_plugin.common import checks
from fse_plugin.evaluation.errors import PackError
from fse_plugin.evaluation.safepickle import load_pack_pickle
from fse_plugin.recordio import decode_image

__all__ = ["load_bin", "pack_pairs", "select_pairs"]


def _as_bytes(item: Any, path: str, index: int) -> bytes:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, str):  # py2 str read with latin1
        return item.encode("latin1")
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    raise PackError(f"{path}: image {index} is a {type(item).__name__}"
                    f"{f' {item.dtype} {item.shape}' if isinstance(item, np.ndarray) else ''}, "
                    "expected encoded image bytes or a 1-D uint8 array")


def _issame(issame: Any, path: str) -> np.ndarray:
    if isinstance(issame, np.ndarray):
        if issame.dtype != np.bool_ or issame.ndim != 1:
            raise PackError(f"{path}: issame must be a 1-D bool array, got {issame.dtype} "
                            f"{issame.shape}")
        issame = issame.tolist()
    if not isinstance(issame, (list, tuple)):
        raise PackError(f"{path}: issame must be a list of bools, got {type(issame).__name__}")
    for i, v in enumerate(issame):
        if not isinstance(v, (bool, np.bool_)):
            raise PackError(f"{path}: issame[{i}] is {v!r}, expected a bool")
    return np.asarray(issame, dtype=bool)


def _read_pack(path: str) -> tuple[list[bytes], np.ndarray]:
    """The raw content of a pack: (2P encoded images, P bools)."""
    with open(path, "rb") as f:
        data = f.read()
    obj = load_pack_pickle(data, path)
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise PackError(f"{path}: expected a pair (images, issame), got {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, (list, tuple)):
        raise PackError(f"{path}: images must be a list, got {type(bins).__name__}")
    issame = _issame(issame, path)
    if not len(issame):
        raise PackError(f"{path}: holds no pairs")
    if len(bins) != 2 * len(issame):
        raise PackError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected "
                        f"{2 * len(issame)})")
    if sum(len(b) if hasattr(b, "__len__") else 0 for b in bins) > len(data):
        raise PackError(f"{path}: its images hold more bytes than the file: images repeat by "
                        "reference, which a pack never does (a memory bomb?)")
    return [_as_bytes(b, path, i) for i, b in enumerate(bins)], issame


def _pack_file(path: str | os.PathLike) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise PackError(f"path: expected the path of a .bin pack, got {path!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise PackError(f"{path}: a directory; a verification pack is a .bin file (a folder of "
                        "packs is --data-dir)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"verification pack not found: {path}")
    return path


def pack_pairs(path: str | os.PathLike) -> int:
    """The number of pairs of a pack, checked as ``load_bin`` checks it but without decoding an
    image."""
    path = _pack_file(path)
    return len(_read_pack(path)[1])


def load_bin(path: str | os.PathLike,
             image_size: tuple[int, int] = (112, 112)) -> tuple[np.ndarray, np.ndarray]:
    """A verification pack as (images uint8 [2P,H,W,3] RGB, issame bool [P]); pair i is images 2i,
    2i+1.

    Images of another size are resized bicubically (mxnet's resize_short default) to ``image_size``.
    """
    path = _pack_file(path)
    if isinstance(image_size, (str, bytes)) or not isinstance(image_size, Sequence) or len(image_size) != 2:
        raise PackError(f"image_size: expected (height, width), got {image_size!r}")
    h, w = (checks.count(side, f"image_size[{i}]") for i, side in enumerate(image_size))
    bins, issame = _read_pack(path)
    images = np.empty((len(bins), h, w, 3), dtype=np.uint8)
    for i, buf in enumerate(bins):
        try:
            img = decode_image(buf)
        except ValueError as e:
            raise PackError(f"{path}: image {i} (pair {i // 2}): {e}") from None
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
        images[i] = img
    return images, issame


def select_pairs(issame: np.ndarray, which: str = "same", limit: int | None = None) -> np.ndarray:
    """Indices of pairs to explain: genuine ('same'), impostor ('diff') or 'all', the first
    ``limit``."""
    issame = np.asarray(issame, dtype=bool)
    checks.choice(which, "pairs", ("same", "diff", "all"))
    if limit is not None:
        checks.count(limit, "limit", minimum=0)
    idx = (np.arange(len(issame)) if which == "all"
           else np.flatnonzero(issame if which == "same" else ~issame))
    return idx[:limit] if limit is not None else idx
