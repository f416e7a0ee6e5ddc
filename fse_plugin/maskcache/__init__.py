"""Mask cache: the parser's 25-class masks of every image in a RecordIO dataset, on disk, random access.

The public FSErasing code kept all masks in one in-memory tensor (65 GB for MS1MV3, 533 GB for
WebFace42M). Here a mask is stored losslessly in ~550 bytes and decoded in ~20 microseconds, in files
that every DataLoader worker memory-maps, so MS1MV3 needs ~3 GB of disk and no RAM of its own.
Every mask a reader returns has passed a crc32; damage anywhere raises an error naming the file
and the command that rebuilds it, never a wrong mask.

Modules, one concern each: ``codec`` (rle8+zlib), ``chunk`` (chunk files, atomic writes),
``manifest`` (the directory, spec, rebuild commands), ``source`` (the rec's fingerprint),
``reader`` (``MaskCache``), ``build`` (steps every build shares, ``build_from_labels``), and the
parser build: ``decoding`` (decode processes), ``inference`` (the parser on CPU/CUDA), ``encoding``
(encode processes, chunk assembly), ``pipeline`` (``precompute``: one rank's loop, torchrun).
Importing this package loads only the reader side; ``precompute`` and ``build_from_labels`` load
their modules on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from fse_plugin.maskcache.chunk import CHUNK_DIR
from fse_plugin.maskcache.codec import CODEC, decode_mask, encode_masks
from fse_plugin.maskcache.errors import CacheError, CacheMismatchError, DamagedEntryError, UnknownKeyError
from fse_plugin.maskcache.manifest import (BUILD_INFO, BUILD_SPEC, DEFAULT_CHUNK_SIZE, DEFAULT_DIRNAME, FORMAT_NAME,
                                           FORMAT_VERSION, KEYS_FILE, MANIFEST, default_cache_path, rebuild_command)
from fse_plugin.maskcache.reader import ClassFrequencies, MaskCache
from fse_plugin.maskcache.source import FINGERPRINT_SAMPLES, sha256_file, source_fingerprint

__all__ = ["MaskCache", "ClassFrequencies", "CacheError", "CacheMismatchError", "DamagedEntryError", "UnknownKeyError",
           "default_cache_path", "rebuild_command", "build_from_labels", "precompute", "sha256_file",
           "source_fingerprint", "encode_masks", "decode_mask", "DEFAULT_CHUNK_SIZE", "DEFAULT_DIRNAME", "CODEC",
           "FORMAT_NAME", "FORMAT_VERSION", "FINGERPRINT_SAMPLES", "MANIFEST", "KEYS_FILE", "CHUNK_DIR", "BUILD_SPEC",
           "BUILD_INFO"]

_LAZY = {"build_from_labels": "fse_plugin.maskcache.build", "precompute": "fse_plugin.maskcache.pipeline"}


def __getattr__(name: str) -> Any:
    """The build functions, imported on first use (they pull in process pools, DataLoader, tqdm, the parser)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
