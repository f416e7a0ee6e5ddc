"""The cache directory and its ``manifest.json``: what a complete cache holds,
written and read back checked.

Directory (``<rec_dir>/fse_masks`` by default)::

    manifest.json    written last, so its presence means the cache is complete; see
                     ``read_manifest``
    keys.npy         int64 image keys, ascending; row i of the cache is the mask of keys[i]
    chunks/*.fsmc    the masks (chunk.py)
    build_spec.json  only while a build is unfinished: what it builds and the command that
                     resumes it
    build_info.json  time, host, world size and speed of the build: the one file that differs
                     between two builds of the same cache (everything else is byte-identical, by
                     construction)

The manifest holds the spec (``spec.CacheSpec``: its hash ``spec_id`` is stamped on every chunk),
canonical paths of the rec and parser (for rebuild commands), the keys' first/last/sha256, per-chunk
rows/bytes/crc32, undecodable keys with their reasons, class counts, and a sha256 of all of that
(``checksum``): an edited or damaged manifest is refused, not trusted.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fse_plugin.common.checks import is_integer
from fse_plugin.common.text import plural
from fse_plugin.labels import CLASSES, NUM_CLASSES
from fse_plugin.maskcache.chunk import CHUNK_DIR, chunk_path
from fse_plugin.maskcache.codec import CODEC
from fse_plugin.maskcache.errors import CacheError
from fse_plugin.maskcache.rebuild import Recorded, rebuild_hint
from fse_plugin.maskcache.spec import FORMAT_NAME, FORMAT_VERSION, CacheSpec, JsonRecord, json_bytes

__all__ = ["MANIFEST", "KEYS_FILE", "BUILD_SPEC", "BUILD_INFO", "CHUNK_DIR", "ChunkEntry",
           "KeysEntry", "MissingImage", "Manifest", "manifest_bytes", "read_manifest"]

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 28
"""Larger is not read: a manifest lists one entry per chunk and per undecodable image,
nothing per mask."""
KEYS_FILE = "keys.npy"
BUILD_SPEC = "build_spec.json"
BUILD_INFO = "build_info.json"


@dataclass(frozen=True)
class ChunkEntry(JsonRecord):
    """One chunk file as the manifest records it."""
    file: str
    row_start: int
    rows: int
    bytes: int
    crc32: int


@dataclass(frozen=True)
class KeysEntry(JsonRecord):
    """keys.npy as the manifest records it: ``sha256`` of the keys (as the fingerprint has it),
    ``file_sha256`` of the file, first and last key, and whether the keys are consecutive (a row is
    then key - first)."""
    file: str
    sha256: str
    file_sha256: str
    first: int
    last: int
    contiguous: bool


@dataclass(frozen=True)
class MissingImage(JsonRecord):
    """An image the build could not decode: its row holds no mask."""
    key: int
    reason: str


@dataclass(frozen=True)
class Manifest:
    """A complete cache: its spec, where it came from, its files,
    the undecodable images and class counts.

    ``created`` holds the library versions that wrote it and ``meta`` what the builder added
    (JSON values, e.g. ``labels_path``).
    """
    spec: CacheSpec
    rec_path: str | None
    parser_path: str | None
    keys: KeysEntry
    chunks: list[ChunkEntry]
    missing: list[MissingImage]
    class_pixels: list[int]
    class_images: list[int]
    created: dict
    meta: dict

    @property
    def data_bytes(self) -> int:
        return sum(c.bytes for c in self.chunks)

    @property
    def recorded(self) -> Recorded:
        """What a rebuild command needs from this manifest."""
        return Recorded(self.rec_path, self.spec.producer.kind, self.parser_path,
                        self.spec.build_flags())

    def to_json(self) -> dict[str, Any]:
        """The manifest's JSON object (without its checksum, which ``manifest_bytes`` adds)."""
        return {**self.spec.to_json(), "spec_id": self.spec.spec_id.hex(),
                "rec_path": self.rec_path,
                "parser": {**self.spec.producer.to_json(), "path": self.parser_path},
                "keys": self.keys.to_json(),
                "chunks": [c.to_json() for c in self.chunks], "data_bytes": self.data_bytes,
                "missing": [d.to_json() for d in self.missing], "n_missing": len(self.missing),
                "class_pixels": list(self.class_pixels), "class_images": list(self.class_images),
                "created": self.created, "meta": self.meta}

    def to_bytes(self) -> bytes:
        return manifest_bytes(self.to_json())


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The manifest file of a JSON object: readable JSON with the sha256 of its canonical form as
    ``checksum``."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    body["checksum"] = "sha256:" + hashlib.sha256(json_bytes(body)).hexdigest()
    return json.dumps(body, indent=1, sort_keys=True).encode()


# ------------------------------------------------------------------------------------------ reading

def _salvage(raw: bytes) -> Recorded:
    """What a rebuild command needs, from a manifest that no longer parses
    (a damaged byte elsewhere)."""
    text = raw.decode("utf-8", "replace")
    values = {}
    for key in ("rec_path", "path", "kind"):
        found = re.search(rf'"{key}": ("(?:[^"\\]|\\.)*")', text)
        try:
            values[key] = json.loads(found.group(1)) if found else None
        except ValueError:  # the damage is in this very string
            values[key] = None
    return Recorded(values["rec_path"], values["kind"], values["path"])


def _recorded(m: Mapping[str, Any]) -> Recorded:
    """What a rebuild command needs, from a manifest that parses but may be invalid."""
    prod = m.get("parser") if isinstance(m.get("parser"), Mapping) else {}
    return Recorded(m.get("rec_path"), prod.get("kind"), prod.get("path"))


def _load_json(mpath: Path) -> dict:
    if mpath.stat().st_size > MAX_MANIFEST_BYTES:
        raise CacheError(f"{mpath}: {mpath.stat().st_size} bytes, too large to be a manifest "
                         f"(damaged or not one). {rebuild_hint(mpath.parent, None)}")
    raw = mpath.read_bytes()
    try:
        m = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise CacheError(f"{mpath}: corrupt manifest ({e}). "
                         f"{rebuild_hint(mpath.parent, _salvage(raw))}") from None
    if not isinstance(m, dict):
        raise CacheError(f"{mpath}: corrupt manifest (not a JSON object). "
                         f"{rebuild_hint(mpath.parent, None)}")
    return m


def _missing_manifest(path: Path) -> CacheError:
    mpath, spec_path = path / MANIFEST, path / BUILD_SPEC
    if spec_path.is_file():
        try:
            cmd = json.loads(spec_path.read_bytes())["command"]
        except (ValueError, KeyError, TypeError):
            cmd = "the same fse cache build command"
        return CacheError(f"{mpath} missing: {path} is an unfinished build "
                          f"(killed or still running). Resume it with: {cmd}")
    return CacheError(f"{mpath} missing: {path} is not a mask cache. {rebuild_hint(path, None)}")


_FIELDS = (("height", int), ("width", int), ("count", int), ("chunk_size", int), ("chunks", list),
           ("spec_id", str), ("keys", dict), ("labels", dict), ("source", dict), ("parser", dict),
           ("missing", list), ("class_pixels", list), ("class_images", list), ("created", dict),
           ("meta", dict))


def _check_fields(m: dict, mpath: Path, hint: str) -> None:
    for key, typ in _FIELDS:
        if key not in m or not isinstance(m[key], typ) or isinstance(m[key], bool) and typ is int:
            raise CacheError(f"{mpath}: field {key!r} missing or of the wrong type. {hint}")
    if m["labels"].get("classes") != list(CLASSES):
        raise CacheError(f"{mpath}: label set {m['labels'].get('name')!r} differs from this "
                         f"plugin's 25 classes. {hint}")
    if (m["count"] < 1 or m["chunk_size"] < 1
            or len(m["chunks"]) != -(-m["count"] // m["chunk_size"])):
        raise CacheError(f"{mpath}: {plural(len(m['chunks']), 'chunk')} listed for "
                         f"{plural(m['count'], 'mask')} of chunk size {m['chunk_size']} "
                         f"(corrupt manifest). {hint}")
    k = m["keys"]
    ints = all(is_integer(k.get(f)) for f in ("first", "last"))
    if (not ints or not isinstance(k.get("contiguous"), bool)
            or not isinstance(k.get("file_sha256"), str)):
        raise CacheError(f"{mpath}: field 'keys' lacks first/last/contiguous/file_sha256 "
                         f"(corrupt manifest). {hint}")
    if k["first"] > k["last"] or k["contiguous"] != (k["last"] - k["first"] == m["count"] - 1):
        raise CacheError(f"{mpath}: keys {k['first']}..{k['last']} (contiguous {k['contiguous']}) "
                         f"cannot be {m['count']} ascending keys (corrupt manifest). {hint}")
    for i, c in enumerate(m["chunks"]):
        start, stop = i * m["chunk_size"], min(m["count"], (i + 1) * m["chunk_size"])
        ok = (isinstance(c, dict) and c.get("file") == str(chunk_path(Path(), i))
              and c.get("row_start") == start)
        if not (ok and c.get("rows") == stop - start and is_integer(c.get("bytes"))
                and is_integer(c.get("crc32"))):
            raise CacheError(f"{mpath}: chunk entry {i} is not rows {start}..{stop - 1} in "
                             f"{chunk_path(Path(), i)} with bytes and crc32 (corrupt manifest). "
                             f"{hint}")
    if not all(isinstance(d, dict) and is_integer(d.get("key")) and isinstance(d.get("reason"), str)
               for d in m["missing"]):
        raise CacheError(f"{mpath}: field 'missing' is not a list of key and reason "
                         f"(corrupt manifest). {hint}")
    if not all(len(m[f]) == NUM_CLASSES and all(map(is_integer, m[f]))
               for f in ("class_pixels", "class_images")):
        raise CacheError(f"{mpath}: class counts are not {NUM_CLASSES} integers each "
                         f"(corrupt manifest). {hint}")


def _parse(m: dict, mpath: Path, hint: str) -> Manifest:
    """The Manifest of a checked JSON object (its fields' types checked by ``_check_fields``)."""
    try:
        spec = CacheSpec.from_json(m)
        keys = KeysEntry.from_json(m["keys"])
    except (KeyError, TypeError, AttributeError):
        raise CacheError(f"{mpath}: fields source, parser, inference or keys incomplete "
                         f"(corrupt manifest). {hint}") from None
    if spec.spec_id.hex() != m["spec_id"]:
        raise CacheError(f"{mpath}: spec_id does not match the fields it hashes "
                         f"(corrupt manifest). {hint}")
    return Manifest(spec, m.get("rec_path"), m["parser"].get("path"), keys,
                    [ChunkEntry.from_json(c) for c in m["chunks"]],
                    [MissingImage.from_json(d) for d in m["missing"]],
                    m["class_pixels"], m["class_images"], m["created"], m["meta"])


def read_manifest(path: Path) -> Manifest:
    """The manifest of the cache at ``path``, checked: checksum, format, fields,
    and their consistency."""
    mpath = path / MANIFEST
    if not path.is_dir():
        raise CacheError(f"{path}: no mask cache here (not a directory). "
                         f"{rebuild_hint(path, None)}")
    if not mpath.is_file():
        raise _missing_manifest(path)
    m = _load_json(mpath)
    hint = rebuild_hint(path, _recorded(m))
    if m.get("format") != FORMAT_NAME:
        raise CacheError(f"{mpath}: not a {FORMAT_NAME} manifest (format {m.get('format')!r}). "
                         f"{hint}")
    if m.get("format_version") != FORMAT_VERSION or m.get("codec") != CODEC:
        raise CacheError(f"{mpath}: a format-{m.get('format_version')!r} ({m.get('codec')!r}) "
                         f"mask cache; this fse_plugin reads format {FORMAT_VERSION} "
                         f"({CODEC}, per-entry checksums). {hint}")
    body = {k: v for k, v in m.items() if k != "checksum"}
    if m.get("checksum") != "sha256:" + hashlib.sha256(json_bytes(body)).hexdigest():
        raise CacheError(f"{mpath}: checksum mismatch: the manifest was edited or is damaged. "
                         f"{hint}")
    _check_fields(m, mpath, hint)
    return _parse(m, mpath, hint)

