"""What identifies the rec a cache was built from: its image keys and a fingerprint of its bytes.

The fingerprint is cheap even for 42M records (record headers, one .idx hash and 64 sampled
records), and a moved rec still matches while a regenerated or different one does not.
"""
from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fse_plugin import recordio
from fse_plugin.maskcache.errors import CacheError
from fse_plugin.maskcache.spec import Fingerprint

__all__ = ["FINGERPRINT_SAMPLES", "Source", "scan_source", "source_fingerprint", "sha256_file",
           "rec_location", "probe_size"]

FINGERPRINT_SAMPLES = 64
"""Records whose bytes the source fingerprint hashes (evenly spaced over the image keys)."""


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


class Source(NamedTuple):
    reader: recordio.RecordReader
    keys: np.ndarray  # image keys, ascending
    fingerprint: Fingerprint


def _sample_hash(reader: recordio.RecordReader, sample: np.ndarray) -> str:
    h = hashlib.sha256()
    for k in sample.tolist():
        try:
            rec = reader.read(k)
        except recordio.RecordIOError as e:  # a damaged record still fingerprints, by its error
            rec = f"unreadable: {e}".encode()
        h.update(struct.pack("<qQ", k, len(rec)))
        h.update(rec)
    return h.hexdigest()


def scan_source(rec_dir: str | os.PathLike) -> Source:
    """Image keys (ascending) and fingerprint of a rec; the caller closes ``reader``."""
    reader = recordio.open_rec(rec_dir)
    try:
        index = recordio.image_index(reader)
        keys = np.unique(index.keys)
        if len(keys) != len(index.keys):
            raise CacheError(f"{reader.idx_path}: image keys are not unique; "
                             f"a mask cache needs one mask per key")
        if not len(keys):
            raise CacheError(f"{reader.rec_path}: no image records")
        pick = np.unique(np.linspace(0, len(keys) - 1,
                                     min(FINGERPRINT_SAMPLES, len(keys))).round().astype(np.int64))
        sample = keys[pick]
        fp = Fingerprint(len(reader), len(keys), index.layout,
                         hashlib.sha256(keys.astype("<i8").tobytes()).hexdigest(),
                         sha256_file(reader.idx_path), os.path.getsize(reader.rec_path),
                         sample.tolist(), _sample_hash(reader, sample))
    except BaseException:
        reader.close()
        raise
    return Source(reader, keys, fp)


def source_fingerprint(rec_dir: str | os.PathLike) -> Fingerprint:
    """What identifies a rec for a cache: counts, sha256 of keys and .idx,
    sha256 of sampled record bytes."""
    src = scan_source(rec_dir)
    src.reader.close()
    return src.fingerprint


def rec_location(reader: recordio.RecordReader) -> str:
    """The canonical path a manifest records and ``--rec`` takes:
    the dataset dir for ``train.rec``, else the .rec file itself."""
    rec = Path(reader.rec_path).resolve()
    return str(rec.parent if rec.name == "train.rec" else rec)


def probe_size(reader: recordio.RecordReader, keys: np.ndarray) -> tuple[int, int]:
    """(height, width) of the first decodable image: the size of every mask of the cache."""
    for k in keys.tolist():
        try:
            return reader.read_image(k).shape[:2]
        except (ValueError, struct.error):
            continue
    raise CacheError(f"{reader.rec_path}: no image record decodes")
