"""Mask cache: the parser's 25-class masks of every image in a RecordIO dataset, on disk,
random access.

The public FSErasing code kept all masks in one in-memory tensor, which for MS1MV3 or WebFace42M
does not fit in a training host's memory. Here each mask is stored losslessly in a few hundred
bytes, in files that every DataLoader worker memory-maps, so the masks need disk but no RAM of their
own (sizes and speeds: README.md, "The mask cache format", and benchmarks/README.md,
"## maskcache"). Every mask a reader returns has passed a crc32; damage anywhere raises an error
naming the file and the command that rebuilds it, never a wrong mask.

Modules, one concern each: ``codec`` (rle8+zlib), ``chunk`` (chunk files), ``spec`` (what defines a
cache, ``CacheSpec``), ``manifest`` (the directory, ``Manifest``), ``rebuild`` (default paths and
rebuild commands), ``source`` (the rec's fingerprint), ``reader`` (``MaskCache``), ``build``
(``CacheWriter``: the steps every build shares; ``build_from_labels``), and the parser build:
``decoding`` (decode processes), ``inference`` (the parser on CPU/CUDA), ``encoding`` (encode
processes, chunk assembly), ``settings`` (``BuildSettings``), ``pipeline`` (``precompute``: one
rank's loop, torchrun). Each name loads its module on first use: reading a cache loads only the
reader side.
"""
from fse_plugin.common.lazy import lazy_exports

lazy_exports(__name__, {
    ".reader": ["MaskCache", "ClassFrequencies", "RunsBatch", "Verification"],
    ".manifest": ["Manifest", "MANIFEST", "KEYS_FILE", "BUILD_SPEC", "BUILD_INFO"],
    ".spec": ["CacheSpec", "Fingerprint", "DEFAULT_CHUNK_SIZE", "FORMAT_NAME", "FORMAT_VERSION"],
    ".errors": ["CacheError", "CacheMismatchError", "DamagedEntryError", "UnknownKeyError"],
    ".rebuild": ["default_cache_path", "rebuild_command", "DEFAULT_DIRNAME"],
    ".build": ["build_from_labels", "labels_from_npz"],
    ".pipeline": ["precompute"],
    ".settings": ["BuildSettings"],
    ".source": ["sha256_file", "source_fingerprint", "FINGERPRINT_SAMPLES"],
    ".codec": ["encode_masks", "decode_mask", "CODEC"],
    ".chunk": ["CHUNK_DIR"],
})
