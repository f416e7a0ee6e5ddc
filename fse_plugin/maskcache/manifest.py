"""The cache directory and its ``manifest.json``: what defines a cache, how to rebuild it, and reading it back.

Directory (``<rec_dir>/fse_masks`` by default)::

    manifest.json    written last, so its presence means the cache is complete; see ``read_manifest``
    keys.npy         int64 image keys, ascending; row i of the cache is the mask of keys[i]
    chunks/*.fsmc    the masks (chunk.py)
    build_spec.json  only while a build is unfinished: what it builds and the command that resumes it
    build_info.json  time, host, world size and speed of the build: the one file that differs between
                     two builds of the same cache (everything else is byte-identical, by construction)

The manifest holds the *spec* (format, codec, mask size, chunk size, count, label set, the source
fingerprint, the parser checkpoint's or labels' sha256, inference settings; its hash ``spec_id`` is
stamped on every chunk), canonical paths of the rec and parser (for rebuild commands), the keys'
first/last/sha256, per-chunk rows/bytes/crc32, undecodable keys with their reasons, class counts,
and a sha256 of all of that (``checksum``): an edited or damaged manifest is refused, not trusted.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any, Mapping

from fse_plugin.labels import CLASSES, LABEL_SET
from fse_plugin.maskcache.chunk import CHUNK_DIR, chunk_path, json_bytes
from fse_plugin.maskcache.codec import CODEC
from fse_plugin.maskcache.errors import CacheError

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "DEFAULT_DIRNAME", "DEFAULT_CHUNK_SIZE", "MANIFEST", "KEYS_FILE",
           "BUILD_SPEC", "BUILD_INFO", "CHUNK_DIR", "default_cache_path", "make_spec", "spec_id", "n_chunks",
           "chunk_rows", "chunk_expect", "rebuild_command", "rebuild_hint", "manifest_bytes", "read_manifest",
           "spec_of"]

FORMAT_NAME = "fse-maskcache"
FORMAT_VERSION = 2
"""2: per-entry crc32, table crc32, manifest checksum. Version-1 caches are refused with the rebuild command."""
DEFAULT_DIRNAME = "fse_masks"
DEFAULT_CHUNK_SIZE = 16384
"""Masks per chunk file: ~9 MB each; at most this much work is lost when a build is killed."""

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 28
"""A WebFace42M manifest is a few MB (even with 100k undecodable images listed): larger is not read."""
KEYS_FILE = "keys.npy"
BUILD_SPEC = "build_spec.json"
BUILD_INFO = "build_info.json"
SPEC_FIELDS = ("format", "format_version", "codec", "labels", "height", "width", "count", "chunk_size", "source",
               "parser", "inference")


def default_cache_path(rec_dir: str | os.PathLike) -> Path:
    """``<rec_dir>/fse_masks`` (beside train.rec; for a .rec file path, beside that file)."""
    p = Path(rec_dir)
    return (p.parent if p.suffix == ".rec" and not p.is_dir() else p) / DEFAULT_DIRNAME


def make_spec(fingerprint: dict, producer: dict, height: int, width: int, count: int, chunk_size: int,
              inference: dict | None) -> dict:
    """Everything that determines the bytes of a cache; its hash (spec_id) is stamped on every chunk."""
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "codec": CODEC,
            "labels": {"name": LABEL_SET, "classes": list(CLASSES)}, "height": int(height), "width": int(width),
            "count": int(count), "chunk_size": int(chunk_size), "source": fingerprint, "parser": producer,
            "inference": inference}


def spec_id(spec: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(json_bytes(spec)).digest()[:8]


def spec_of(manifest: Mapping[str, Any]) -> dict:
    """The spec a manifest was written for (its parser entry without the path)."""
    spec = {k: manifest.get(k) for k in SPEC_FIELDS}
    if isinstance(spec["parser"], dict):
        spec["parser"] = {k: v for k, v in spec["parser"].items() if k != "path"}
    return spec


def n_chunks(count: int, chunk_size: int) -> int:
    return -(-count // chunk_size)


def chunk_rows(index: int, count: int, chunk_size: int) -> tuple[int, int]:
    return index * chunk_size, min(count, (index + 1) * chunk_size)


def chunk_expect(spec: Mapping[str, Any], sid: bytes, index: int) -> dict:
    """What chunk ``index`` of a build of ``spec`` must say about itself."""
    start, stop = chunk_rows(index, spec["count"], spec["chunk_size"])
    return {"spec_id": sid, "index": index, "row_start": start, "rows": stop - start,
            "height": spec["height"], "width": spec["width"]}


# ------------------------------------------------------------------------------------------ rebuild

def _abs(path: str | os.PathLike | None, placeholder: str) -> str:
    return shlex.quote(os.path.abspath(path)) if path else placeholder


def rebuild_command(cache: str | os.PathLike, rec: str | os.PathLike | None = None,
                    parser: str | os.PathLike | None = None, labels: str | os.PathLike | None = None,
                    overwrite: bool = False, from_labels: bool = False) -> str:
    """The ``fse cache build`` command line for ``cache``, absolute paths, placeholders where a path is unknown.

    Without ``overwrite`` it builds, resumes or repairs ``cache`` (damaged chunks are recomputed);
    ``overwrite`` is only for replacing a cache that is valid for nothing any more. ``from_labels``:
    a cache of given masks whose file is unknown (``--from-labels NPZ``).
    """
    src = (f"--from-labels {_abs(labels, 'NPZ')}" if labels or from_labels
           else f"--parser {_abs(parser, 'CKPT')}")
    return (f"fse cache build --rec {_abs(rec, 'REC_DIR')} {src} --out {_abs(cache, 'OUT')}"
            + (" --overwrite" if overwrite else ""))


def recorded_sources(cache: Path, manifest: Mapping[str, Any] | None) -> dict:
    """``rebuild_command`` arguments from what a manifest recorded: rec, parser or labels (absolute paths
    that exist here only: a relative one was typed in another working directory, a damaged one names
    nothing) and whether it is a labels cache."""
    m = manifest if isinstance(manifest, Mapping) else {}
    prod = m.get("parser") if isinstance(m.get("parser"), Mapping) else {}
    keep = lambda p: p if isinstance(p, str) and os.path.isabs(p) and os.path.exists(p) else None  # noqa: E731
    rec = keep(m.get("rec_path"))
    if rec is None and cache.name == DEFAULT_DIRNAME:
        rec = str(cache.parent)
    if prod.get("kind") == "labels":
        return {"rec": rec, "labels": keep(prod.get("path")), "from_labels": True}
    return {"rec": rec, "parser": keep(prod.get("path"))}


def rebuild_hint(cache: Path, manifest: Mapping[str, Any] | None) -> str:
    return f"Rebuild it with: {rebuild_command(cache, **recorded_sources(cache, manifest))}"


# ------------------------------------------------------------------------------------------ manifest

def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The manifest file: readable JSON with the sha256 of its canonical form as ``checksum``."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    body["checksum"] = "sha256:" + hashlib.sha256(json_bytes(body)).hexdigest()
    return json.dumps(body, indent=1, sort_keys=True).encode()


def _salvage(raw: bytes) -> dict:
    """What a rebuild command needs, from a manifest that no longer parses (a damaged byte elsewhere)."""
    text = raw.decode("utf-8", "replace")
    values = {}
    for key in ("rec_path", "path", "kind"):
        found = re.search(rf'"{key}": ("(?:[^"\\]|\\.)*")', text)
        try:
            values[key] = json.loads(found.group(1)) if found else None
        except ValueError:  # the damage is in this very string
            values[key] = None
    return {"rec_path": values["rec_path"], "parser": {"kind": values["kind"], "path": values["path"]}}


def _load_json(mpath: Path) -> dict:
    if mpath.stat().st_size > MAX_MANIFEST_BYTES:
        raise CacheError(f"{mpath}: {mpath.stat().st_size} bytes, too large to be a manifest (damaged or not one). "
                         f"{rebuild_hint(mpath.parent, None)}")
    raw = mpath.read_bytes()
    try:
        m = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise CacheError(f"{mpath}: corrupt manifest ({e}). {rebuild_hint(mpath.parent, _salvage(raw))}") from None
    if not isinstance(m, dict):
        raise CacheError(f"{mpath}: corrupt manifest (not a JSON object). {rebuild_hint(mpath.parent, None)}")
    return m


def _missing_manifest(path: Path) -> CacheError:
    mpath, spec_path = path / MANIFEST, path / BUILD_SPEC
    if spec_path.is_file():
        try:
            cmd = json.loads(spec_path.read_bytes())["command"]
        except (ValueError, KeyError, TypeError):
            cmd = "the same fse cache build command"
        return CacheError(f"{mpath} missing: {path} is an unfinished build (killed or still running). "
                          f"Resume it with: {cmd}")
    return CacheError(f"{mpath} missing: {path} is not a mask cache. {rebuild_hint(path, None)}")


_FIELDS = (("height", int), ("width", int), ("count", int), ("chunk_size", int), ("chunks", list), ("spec_id", str),
           ("keys", dict), ("labels", dict), ("source", dict), ("parser", dict), ("missing", list),
           ("class_pixels", list), ("class_images", list))


def _check_fields(m: dict, mpath: Path, hint: str) -> None:
    for key, typ in _FIELDS:
        if key not in m or not isinstance(m[key], typ) or isinstance(m[key], bool) and typ is int:
            raise CacheError(f"{mpath}: field {key!r} missing or of the wrong type. {hint}")
    if m["labels"].get("classes") != list(CLASSES):
        raise CacheError(f"{mpath}: label set {m['labels'].get('name')!r} differs from this plugin's 25 classes. "
                         f"{hint}")
    if m["count"] < 1 or m["chunk_size"] < 1 or len(m["chunks"]) != n_chunks(m["count"], m["chunk_size"]):
        raise CacheError(f"{mpath}: {len(m['chunks'])} chunks listed for {m['count']} masks of chunk size "
                         f"{m['chunk_size']} (corrupt manifest). {hint}")
    k = m["keys"]
    ints = all(isinstance(k.get(f), int) and not isinstance(k.get(f), bool) for f in ("first", "last"))
    if not ints or not isinstance(k.get("contiguous"), bool) or not isinstance(k.get("file_sha256"), str):
        raise CacheError(f"{mpath}: field 'keys' lacks first/last/contiguous/file_sha256 (corrupt manifest). {hint}")
    if k["first"] > k["last"] or k["contiguous"] != (k["last"] - k["first"] == m["count"] - 1):
        raise CacheError(f"{mpath}: keys {k['first']}..{k['last']} (contiguous {k['contiguous']}) cannot be "
                         f"{m['count']} ascending keys (corrupt manifest). {hint}")
    for i, c in enumerate(m["chunks"]):
        start, stop = chunk_rows(i, m["count"], m["chunk_size"])
        ok = isinstance(c, dict) and c.get("file") == str(chunk_path(Path(), i)) and c.get("row_start") == start
        if not (ok and c.get("rows") == stop - start and isinstance(c.get("bytes"), int)
                and isinstance(c.get("crc32"), int)):
            raise CacheError(f"{mpath}: chunk entry {i} is not rows {start}..{stop - 1} in {chunk_path(Path(), i)} "
                             f"with bytes and crc32 (corrupt manifest). {hint}")


def read_manifest(path: Path) -> dict:
    """The manifest of the cache at ``path``, checked: checksum, format, fields, and their consistency."""
    mpath = path / MANIFEST
    if not path.is_dir():
        raise CacheError(f"{path}: no mask cache here (not a directory). {rebuild_hint(path, None)}")
    if not mpath.is_file():
        raise _missing_manifest(path)
    m = _load_json(mpath)
    hint = rebuild_hint(path, m)
    if m.get("format") != FORMAT_NAME:
        raise CacheError(f"{mpath}: not a {FORMAT_NAME} manifest (format {m.get('format')!r}). {hint}")
    if m.get("format_version") != FORMAT_VERSION or m.get("codec") != CODEC:
        raise CacheError(f"{mpath}: a format-{m.get('format_version')!r} ({m.get('codec')!r}) mask cache; this "
                         f"fse_plugin reads format {FORMAT_VERSION} ({CODEC}, per-entry checksums). {hint}")
    body = {k: v for k, v in m.items() if k != "checksum"}
    if m.get("checksum") != "sha256:" + hashlib.sha256(json_bytes(body)).hexdigest():
        raise CacheError(f"{mpath}: checksum mismatch: the manifest was edited or is damaged. {hint}")
    _check_fields(m, mpath, hint)
    if spec_id(spec_of(m)).hex() != m["spec_id"]:
        raise CacheError(f"{mpath}: spec_id does not match the fields it hashes (corrupt manifest). {hint}")
    return m
