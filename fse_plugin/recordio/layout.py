"""Dataset layouts (insightface, im2rec, multilabel): image record keys and int labels from headers
only."""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from fse_plugin.recordio.chunks import _LEN_MASK, MAGIC, _error
from fse_plugin.recordio.mxnet_api import _IR_SIZE
from fse_plugin.recordio.reader import RecordReader, open_rec

__all__ = ["ImageIndex", "image_index"]

_SCAN_BLOCK = 1 << 16  # records per vectorised header gather in image_index
# chunk head + IRHeader + label[0]
_HEAD_DTYPE = np.dtype([("magic", "<u4"), ("lrec", "<u4"), ("flag", "<u4"), ("label", "<f4"),
                        ("id", "<u8"), ("id2", "<u8"), ("label0", "<f4")])


class ImageIndex(NamedTuple):
    keys: np.ndarray  # int64 image record keys
    labels: np.ndarray  # int64 identity labels, aligned with keys
    layout: str  # 'insightface' | 'im2rec' | 'multilabel'
    # int64 offsets of the records in the .rec, aligned with keys (RecordFile.read_record)
    offsets: np.ndarray


def _scan_headers(reader: RecordReader, keys: np.ndarray, offsets: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """flag, identity label (scalar label or label[0]) and has-payload of many records.

    Gathers the 36 header bytes of every record from a read-only memmap in blocks (millions of
    records in seconds instead of one Python read each); records split inside their header are
    read one by one.  Chunk magic, flag and length are validated like any read.
    """
    n = len(keys)
    flags, labels = np.zeros(n, np.int64), np.zeros(n, np.float32)
    has_payload = np.zeros(n, bool)
    size = reader._file.size
    if n == 0:
        return flags, labels, has_payload
    mm = np.memmap(reader.rec_path, np.uint8, "r")
    for s in range(0, n, _SCAN_BLOCK):
        off = offsets[s:s + _SCAN_BLOCK]
        idx = np.minimum(off[:, None] + np.arange(_HEAD_DTYPE.itemsize), size - 1)
        h = np.ascontiguousarray(mm[idx]).view(_HEAD_DTYPE)[:, 0]
        cflag, length = h["lrec"] >> 29, (h["lrec"] & _LEN_MASK).astype(np.int64)
        need = _IR_SIZE + 4 * h["flag"].astype(np.int64)  # header + label floats
        # exact, or a lower bound for split records
        total = np.where(cflag == 0, length, length + 4)
        bad = ((h["magic"] != MAGIC) | (cflag > 1) | (off + 8 + length > size)
               | ((cflag == 0) & (length < need)))
        # errors, or a header split by magic
        for j in np.flatnonzero(bad | ((cflag == 1) & (length < need))):
            k = int(keys[s + j])
            total[j] = len(reader._file.read_record(int(off[j]), k)[0])
            header = reader.read_header(k)
            h["flag"][j] = header.flag
            h["label"][j] = h["label0"][j] = header.label if header.flag == 0 else header.label[0]
        sl = slice(s, s + len(off))
        flags[sl] = h["flag"]
        labels[sl] = np.where(h["flag"] > 0, h["label0"], h["label"])
        has_payload[sl] = total > _IR_SIZE + 4 * h["flag"].astype(np.int64)
    del mm
    return flags, labels, has_payload


def image_index(reader_or_path: RecordReader | str | os.PathLike) -> ImageIndex:
    """Image record keys and int identity labels of a dataset, from record headers only.

    Layouts, told apart by record 0:

    * ``insightface`` (MS1M, WebFace, Glint): record 0 is a header with no image, flag 2 and label
      ``[first_identity_key, end]``; images are keys ``1 .. label[0]-1`` (after them come one
      image-less record per identity). This is the case MXFaceDataset handles.
    * ``multilabel`` (insightface mask-parameter recs): no header record, keys from 0, and every
      record carries a label vector (237 floats) of which ``label[0]`` is the identity.
      MXFaceDataset takes record 0's label[0] as the image count there and finds no images.
    * ``im2rec``: no header record; every record with image bytes is an image (scalar label, or
      ``label[0]`` of a vector label, as MXFaceDataset does).

    Records without image bytes are never returned as images. Labels must be integral floats;
    anything inconsistent raises RecordIOError rather than guessing.
    """
    reader = (reader_or_path if isinstance(reader_or_path, RecordReader)
              else open_rec(reader_or_path))
    try:
        layout = None
        if 0 in reader:
            flag0, _, payload0 = _scan_headers(reader, np.zeros(1, np.int64),
                                               np.array([reader.offset(0)]))
            if flag0[0] == 2 and not payload0[0]:
                first, end = (float(v) for v in reader.read_header(0).label)
                if not (first.is_integer() and end.is_integer() and 1 <= first <= end):
                    raise _error(reader.rec_path, 0, reader.offset(0),
                                 f"header record label [{first}, {end}]"
                                 " is not a valid [first_identity_key, end] range")
                keys = np.arange(1, int(first), dtype=np.int64)
                pos = reader._index.positions(keys)
                if (pos < 0).any():
                    raise _error(reader.rec_path, 0, reader.offset(0),
                                 f"header record says images are keys 1..{int(first) - 1} "
                                 f"but key {keys[pos < 0][0]} is not in {reader.idx_path}")
                offsets = reader.offsets[pos]
                layout = "insightface"
        if layout is None:
            keys, offsets = reader.keys, reader.offsets
        flags, labels, has_payload = _scan_headers(reader, keys, offsets)
        keys, offsets, flags, labels = (keys[has_payload], offsets[has_payload],
                                        flags[has_payload], labels[has_payload])
        if layout is None:
            layout = "multilabel" if len(flags) and (flags > 0).all() else "im2rec"
        bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.floor(labels)))
        if len(bad):
            j = int(bad[0])
            raise _error(reader.rec_path, int(keys[j]), int(offsets[j]),
                         f"label {labels[j]} is not an integer id")
        return ImageIndex(np.asarray(keys, np.int64), labels.astype(np.int64), layout,
                          np.asarray(offsets, np.int64))
    finally:
        if reader is not reader_or_path:
            reader.close()
