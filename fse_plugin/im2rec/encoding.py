"""One list line -> one record, as mxnet 1.9.1's im2rec ``image_encode`` makes it (run in worker
processes).

The header is ``IRHeader(0, label, index, 0)``; with ``pack_label`` and several labels on the line,
the label vector. ``pass_through`` packs the file's bytes as they are (no check that they are an
image, as mxnet). Otherwise the image is read with ``cv2.imread(path, color)``, centre-cropped to a
square, its shorter edge resized to ``resize`` (``cv2.resize``'s default bilinear, mxnet's integer
rounding) and encoded with ``recordio.pack_img`` at ``quality``: the calls im2rec makes, so the
bytes are mxnet's wherever the same OpenCV (and its libjpeg / libpng) encodes them. (The file is
decoded from its bytes with ``cv2.imdecode``, which runs the same decoder and EXIF rotation as
``cv2.imread``.)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from fse_plugin.common import checks
from fse_plugin.common.errors import FSEError
from fse_plugin.im2rec.lstfile import ListItem, parse_line
from fse_plugin.recordio import IRHeader, encode_record, pack, pack_img

__all__ = ["PackSettings", "Encoded", "EncodedBatch", "ItemEncoder"]

_QUALITY = {".jpg": (1, 100, 95), ".png": (0, 9, 9)}  # encoding: lowest, highest, default


@dataclass(frozen=True)
class PackSettings:
    """im2rec's record options, checked on construction. ``quality=None`` is the encoding's default
    (JPEG 95, PNG compression 9, which is what mxnet's default 95 becomes inside OpenCV)."""
    pass_through: bool = False
    resize: int = 0
    center_crop: bool = False
    quality: int | None = None
    color: int = 1
    encoding: str = ".jpg"
    pack_label: bool = False

    def __post_init__(self) -> None:
        checks.count(self.resize, "--resize", minimum=0)
        checks.choice(self.color, "--color", (-1, 0, 1))
        checks.choice(self.encoding, "--encoding", tuple(_QUALITY))
        lo, hi, _ = _QUALITY[self.encoding]
        if self.quality is not None:
            checks.count(self.quality, "--quality", minimum=0)
            if not lo <= self.quality <= hi:
                what = "JPEG quality" if self.encoding == ".jpg" else "PNG compression level"
                raise FSEError(f"--quality: the {what} is {lo}..{hi}, got {self.quality}")
        if self.pass_through:
            flags = (("--resize", self.resize, 0), ("--center-crop", self.center_crop, False),
                     ("--quality", self.quality, None), ("--color", self.color, 1),
                     ("--encoding", self.encoding, ".jpg"))
            given = [flag for flag, value, default in flags if value != default]
            if given:
                raise FSEError(f"{', '.join(given)}: no effect with --pass-through, which packs "
                               "the files as they are; drop one or the other")

    @property
    def jpeg_or_png_quality(self) -> int:
        return _QUALITY[self.encoding][2] if self.quality is None else self.quality


class Encoded(NamedTuple):
    """A line's outcome: its record as .rec ``chunks`` under ``key``, or why the image was
    skipped."""
    key: int
    path: str
    chunks: bytes | None
    reason: str = ""


class EncodedBatch(NamedTuple):
    """A batch's records as .rec chunks back to back (the writer only appends them), and what was
    skipped."""
    chunks: bytes
    keys: list[int]
    sizes: list[int]  # bytes of each record's chunks
    skipped: list[tuple[str, str]]  # (image path, why)


class ItemEncoder:
    """Turns a batch of ``(line number, text)`` into an ``EncodedBatch`` (blank lines give nothing).

    Picklable and small: worker processes receive it with every batch.
    """

    def __init__(self, lst: str, root: str, settings: PackSettings):
        self.lst, self.root, self.settings = lst, root, settings

    def __repr__(self) -> str:
        return f"ItemEncoder({self.lst!r}, root={self.root!r}, {self.settings})"

    def __call__(self, lines: list[tuple[int, str]]) -> EncodedBatch:
        pieces, keys, sizes, skipped = [], [], [], []
        for number, text in lines:
            item = parse_line(text, f"{self.lst}: line {number}")
            if item is None:
                continue
            r = self.encode(item)
            if r.chunks is None:
                skipped.append((r.path, r.reason))
                continue
            pieces.append(r.chunks)
            keys.append(r.key)
            sizes.append(len(r.chunks))
        return EncodedBatch(b"".join(pieces), keys, sizes, skipped)

    def header(self, item: ListItem) -> IRHeader:
        if len(item.labels) > 1 and self.settings.pack_label:
            return IRHeader(0, list(item.labels), item.index, 0)
        return IRHeader(0, item.labels[0], item.index, 0)

    def encode(self, item: ListItem) -> Encoded:
        path = os.path.join(self.root, item.path)
        try:
            return Encoded(item.index, path, encode_record(self._record(path, self.header(item))))
        except (OSError, cv2.error, ValueError) as e:
            # ValueError: undecodable, or a record of 2^29 bytes or more
            reason = (e.strerror if isinstance(e, OSError) and e.strerror
                      else str(e).strip().splitlines()[-1])
            return Encoded(item.index, path, None, reason)

    def _record(self, path: str, header: IRHeader) -> bytes:
        """im2rec's record of one image; the file is read whole first, so a missing or unreadable
        file is an OSError with its reason (``cv2.imread`` would print its own warning and return
        None)."""
        s = self.settings
        with open(path, "rb") as f:
            data = f.read()
        if s.pass_through:
            return pack(header, data)
        # imread's decoder and EXIF rotation
        img = cv2.imdecode(np.frombuffer(data, np.uint8), s.color)
        if img is None:
            raise ValueError("OpenCV cannot decode it as an image")
        if s.center_crop:
            img = _center_crop(img)
        if s.resize:
            img = cv2.resize(img, _short_edge_size(img.shape, s.resize))
        return pack_img(header, img, s.jpeg_or_png_quality, s.encoding)


def _center_crop(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if h > w:
        margin = (h - w) // 2
        return img[margin:margin + w, :]
    margin = (w - h) // 2
    return img[:, margin:margin + h]


def _short_edge_size(shape: tuple[int, ...], size: int) -> tuple[int, int]:
    """cv2's (width, height) with the shorter edge ``size`` (mxnet's integer arithmetic)."""
    h, w = shape[:2]
    return (size, h * size // w) if h > w else (w * size // h, size)
