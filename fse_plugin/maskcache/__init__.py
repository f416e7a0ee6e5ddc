"""Mask cache: the parser's 25-class masks of every image in a RecordIO dataset, on disk, random access.

The public FSErasing code kept all masks in one in-memory tensor, which for MS1MV3 or WebFace42M
does not fit in a training host's memory. Here each mask is stored losslessly in a few hundred bytes,
in files that every DataLoader worker memory-maps, so the masks need disk but no RAM of their own
(sizes and speeds: README.md, "The mask cache format", and benchmarks/README.md, "## maskcache").
Every mask a reader returns has passed a crc32; damage anywhere raises an error naming the file
and the command that rebuilds it, never a wrong mask.

Modules, one concern each: ``codec`` (rle8+zlib), ``chunk`` (chunk files), ``spec`` (what defines a
cache, ``CacheSpec``), ``manifest`` (the directory, ``Manifest``), ``rebuild`` (default paths and
rebuild commands), ``source`` (the rec's fingerprint), ``reader`` (``MaskCache``), ``build``
(``CacheWriter``: the steps every build shares; ``build_from_labels``), and the parser build:
``decoding`` (decode processes), ``inference`` (the parser on CPU/CUDA), ``encoding`` (encode
processes, chunk assembly), ``pipeline`` (``precompute`` with ``BuildSettings``: one rank's loop,
torchrun). Importing this package loads only the reader side; ``precompute``, ``BuildSettings``,
``build_from_labels`` and ``labels_from_npz`` load their modules on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from fse_plugin.maskcache.chunk import CHUNK_DIR
from fse_plugin.maskcache.codec import CODEC, decode_mask, encode_masks
from fse_plugin.maskcache.errors import CacheError, CacheMismatchError, DamagedEntryError, UnknownKeyError
from fse_plugin.maskcache.manifest import BUILD_INFO, BUILD_SPEC, KEYS_FILE, MANIFEST, Manifest
from fse_plugin.maskcache.reader import ClassFrequencies, MaskCache, RunsBatch, Verification
from fse_plugin.maskcache.rebuild import DEFAULT_DIRNAME, default_cache_path, rebuild_command
from fse_plugin.maskcache.source import FINGERPRINT_SAMPLES, sha256_file, source_fingerprint
from fse_plugin.maskcache.spec import DEFAULT_CHUNK_SIZE, FORMAT_NAME, FORMAT_VERSION, CacheSpec, Fingerprint

__all__ = ["MaskCache", "ClassFrequencies", "RunsBatch", "Verification", "Manifest", "CacheSpec", "Fingerprint",
           "CacheError", "CacheMismatchError", "DamagedEntryError", "UnknownKeyError", "default_cache_path",
           "rebuild_command",
           "build_from_labels", "labels_from_npz", "precompute", "BuildSettings", "sha256_file",
           "source_fingerprint", "encode_masks", "decode_mask", "DEFAULT_CHUNK_SIZE", "DEFAULT_DIRNAME", "CODEC",
           "FORMAT_NAME", "FORMAT_VERSION", "FINGERPRINT_SAMPLES", "MANIFEST", "KEYS_FILE", "CHUNK_DIR", "BUILD_SPEC",
           "BUILD_INFO"]

_LAZY = {"build_from_labels": "fse_plugin.maskcache.build", "labels_from_npz": "fse_plugin.maskcache.build",
         "precompute": "fse_plugin.maskcache.pipeline", "BuildSettings": "fse_plugin.maskcache.pipeline"}


def __getattr__(name: str) -> Any:
    """The build functions, imported on first use (they pull in process pools, DataLoader, tqdm, the parser)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
