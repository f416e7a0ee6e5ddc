"""Image payloads: their size from the PNG/JPEG header, and decoding to RGB like
``mx.image.imdecode``."""
from __future__ import annotations

import struct

import cv2
import numpy as np

__all__ = ["MAX_IMAGE_PIXELS", "image_size", "decode_image"]

MAX_IMAGE_PIXELS = 1 << 25
"""Largest image ``decode_image`` decodes (33.5M pixels, 100 MB as RGB): a header claiming more is
refused before any allocation (OpenCV would allocate up to 2^30 pixels for a 100-byte file)."""

# start-of-frame markers (not DHT, JPG, DAC)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_SIZE = struct.Struct(">II")  # IHDR width, height at byte 16
_JPEG_SEGMENT = struct.Struct(">BBH")  # 0xFF, marker, segment length
_JPEG_FRAME = struct.Struct(">HH")  # frame height, width after the sample precision byte


def image_size(buf: bytes | memoryview) -> tuple[int, int] | None:
    """(height, width) from a PNG or JPEG header without decoding; None for other formats or no
    header. Runs on every record a DataLoader worker decodes: a few struct reads, no copies."""
    if len(buf) >= 24 and buf[:8] == _PNG_SIGNATURE:
        width, height = _PNG_SIZE.unpack_from(buf, 16)
        return height, width
    if buf[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(buf):
        ff, marker, length = _JPEG_SEGMENT.unpack_from(buf, i)
        # not a marker, or start of scan: no frame header before it
        if ff != 0xFF or marker == 0xDA:
            return None
        if marker in _JPEG_SOF:
            return _JPEG_FRAME.unpack_from(buf, i + 5)
        i += 2 + length
    return None


def decode_image(buf: bytes | memoryview, out: np.ndarray | None = None) -> np.ndarray:
    """Encoded image bytes (a record's payload) -> RGB uint8 HxWx3, like ``mx.image.imdecode``.

    ``out``: write the pixels there (e.g. a row of a batch array) instead of into a new array;
    ValueError if the image has another size, or if its header claims more than
    ``MAX_IMAGE_PIXELS``.
    """
    size = image_size(buf)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ValueError(f"image header claims {size[1]}x{size[0]} pixels "
                         f"(more than {MAX_IMAGE_PIXELS}): refused before decoding")
    img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR) if len(buf) else None
    if img is None:
        raise ValueError(f"cannot decode image ({len(buf)} bytes)")
    if out is not None and out.shape != img.shape:
        raise ValueError(f"image is {img.shape[0]}x{img.shape[1]}, "
                         f"expected {out.shape[0]}x{out.shape[1]}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=out)

