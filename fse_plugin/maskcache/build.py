"""The steps every cache build shares: prepare the directory (resume, repair, refuse), write chunks,
merge keys.npy + manifest.json, report; and ``build_from_labels`` (a cache of given masks).

A build writes each chunk atomically as soon as it is complete, then ``keys.npy``,
``build_info.json`` and, last, ``manifest.json`` (the commit: a cache is complete exactly when it
has one). ``build_spec.json`` marks an unfinished build; rerunning the same command resumes it, and
on a complete cache checks every byte and recomputes only damaged or missing chunks. Temporary files
left by a kill are removed by the next run.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fse_plugin import __version__
from fse_plugin.labels import NUM_CLASSES
from fse_plugin.maskcache.chunk import (CHUNK_DIR, ChunkFile, Entries, atomic_write, chunk_bytes, chunk_ok,
                                        chunk_path, remove_temporaries)
from fse_plugin.maskcache.codec import encode_batch
from fse_plugin.maskcache.errors import CacheError, CacheMismatchError, without_hint
from fse_plugin.maskcache.manifest import (BUILD_INFO, BUILD_SPEC, DEFAULT_CHUNK_SIZE, KEYS_FILE, MANIFEST,
                                           chunk_expect, chunk_rows, default_cache_path, make_spec, manifest_bytes,
                                           n_chunks, read_manifest, rebuild_command, spec_id, spec_of)
from fse_plugin.maskcache.reader import MaskCache
from fse_plugin.maskcache.source import Source, probe_size, rec_location, scan_source

__all__ = ["build_from_labels", "check_counts", "prepare", "todo", "write_chunk", "wait_for_chunks", "finalize",
           "report", "versions"]

_OUR_FILES = (MANIFEST, KEYS_FILE, BUILD_SPEC, BUILD_INFO)
_MINIMUM = {"batch_size": 1, "chunk_size": 1, "num_workers": 0, "encode_workers": 0}


def check_counts(**counts: Any) -> None:
    """Refuse a batch size, chunk size or worker count out of range (None means: the default)."""
    for name, value in counts.items():
        lo = _MINIMUM[name]
        if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo):
            raise CacheError(f"--{name.replace('_', '-')} must be an integer >= {lo}, got {value!r}")


# ------------------------------------------------------------------------------------------- prepare

def _remove_build(out: Path) -> None:
    """Delete the files a build writes (and only those: ``out`` may hold other things)."""
    for name in _OUR_FILES:
        (out / name).unlink(missing_ok=True)
    for p in (out / CHUNK_DIR).glob("*.fsmc*"):
        p.unlink()


def _spec_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    return ", ".join(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)) or "nothing"


def _first_problem(out: Path) -> str | None:
    """What is wrong with the complete cache at ``out`` (every byte checked), or None if it is sound."""
    try:
        with MaskCache(out) as cache:
            cache.check(data=True)
    except CacheError as e:
        return without_hint(e).rstrip(".")
    return None


def _check_manifest(out: Path, spec: dict, sid: str) -> bool:
    """True if ``out`` holds a sound cache of ``spec``; CacheMismatchError if it holds one of another spec."""
    if not (out / MANIFEST).is_file():
        return False
    try:
        m = read_manifest(out)
    except CacheError as e:  # unreadable, damaged or of an old format: usable by nobody, so replaced
        print(f"{out}: replacing what cannot be used ({without_hint(e)})", file=sys.stderr)
        return False
    if m["spec_id"] != sid:
        raise CacheMismatchError(
            f"{out} already holds a mask cache for another rec, parser or setting (differs in: "
            f"{_spec_diff(spec_of(m), spec)}). Add --overwrite to replace it, or choose another --out.")
    problem = _first_problem(out)
    if problem is None:
        return True
    print(f"{problem}; recomputing what is damaged or missing", file=sys.stderr)
    return False


def _check_unfinished(out: Path, spec: dict) -> None:
    """Refuse to mix into an unfinished build of another spec that has already written chunks."""
    try:
        old = json.loads((out / BUILD_SPEC).read_bytes()).get("spec")
    except (OSError, ValueError, AttributeError):
        return  # none, or unreadable: the chunks carry their spec_id, so nothing of another build is kept
    if old != spec and any((out / CHUNK_DIR).glob("*.fsmc")):
        what = _spec_diff(old, spec) if isinstance(old, dict) else "unreadable build_spec.json"
        raise CacheMismatchError(
            f"{out} holds an unfinished build for another rec, parser or setting (differs in: {what}). "
            f"Add --overwrite to discard it, or choose another --out.")


def prepare(out: Path, spec: dict, overwrite: bool, command: str) -> bool:
    """Make ``out`` ready for this build (rank 0 only); True if it already holds this very cache, sound.

    ``command`` (the same build, which resumes or repairs) is what error messages tell the user to rerun.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / CHUNK_DIR).mkdir(exist_ok=True)
    remove_temporaries(out, _OUR_FILES)
    remove_temporaries(out / CHUNK_DIR, ["*.fsmc"])
    if overwrite:
        _remove_build(out)
    if _check_manifest(out, spec, spec_id(spec).hex()):
        (out / BUILD_SPEC).unlink(missing_ok=True)  # left by a kill just after the manifest was written
        return True
    _check_unfinished(out, spec)
    atomic_write(out / BUILD_SPEC, json.dumps({"spec": spec, "command": command}, indent=1, sort_keys=True).encode())
    (out / MANIFEST).unlink(missing_ok=True)
    return False


def todo(out: Path, spec: dict, rank: int, world: int) -> list[int]:
    """Chunks this rank must compute: every ``world``-th one that is not already there, sound."""
    sid = spec_id(spec)
    return [c for c in range(rank, n_chunks(spec["count"], spec["chunk_size"]), world)
            if not chunk_ok(chunk_path(out, c), chunk_expect(spec, sid, c))]


# --------------------------------------------------------------------------------------------- write

def write_chunk(out: Path, spec: dict, index: int, entries: Entries, errors: Sequence[tuple[int, str]],
                pixels: np.ndarray, images: np.ndarray) -> None:
    """One chunk file, atomically; ``errors`` are (key, reason) of the rows with an empty entry."""
    start, stop = chunk_rows(index, spec["count"], spec["chunk_size"])
    if len(entries.lengths) != stop - start:
        raise AssertionError(f"chunk {index}: {len(entries.lengths)} entries for rows {start}..{stop - 1}")
    meta = {"errors": [[int(k), r] for k, r in sorted(errors)], "class_pixels": pixels.tolist(),
            "class_images": images.tolist()}
    data = chunk_bytes(spec_id(spec), index, start, spec["height"], spec["width"], entries, meta)
    atomic_write(chunk_path(out, index), data)


def wait_for_chunks(out: Path, spec: dict, poll: float = 2.0) -> None:
    """Rank 0: wait until the other ranks' chunk files exist (they appear atomically)."""
    sid = spec_id(spec)
    n = n_chunks(spec["count"], spec["chunk_size"])
    waiting, told = set(range(n)), False
    while waiting:
        waiting = {c for c in waiting if not chunk_path(out, c).is_file()}
        if waiting:
            if not told:
                print(f"rank 0: waiting for {len(waiting)} chunks from the other ranks", file=sys.stderr)
                told = True
            time.sleep(poll)
    bad = [c for c in range(n) if not chunk_ok(chunk_path(out, c), chunk_expect(spec, sid, c))]
    if bad:
        raise CacheError(f"{out}: chunks {bad[:10]} are damaged or from another build; rerun to recompute them")


def _collect_chunks(out: Path, spec: dict) -> tuple[list[dict], list[dict], np.ndarray, np.ndarray]:
    """Manifest entries, undecodable keys and class counts of all chunks."""
    sid = spec_id(spec)
    chunks, missing = [], []
    pixels = np.zeros(NUM_CLASSES, np.int64)
    images = np.zeros(NUM_CLASSES, np.int64)
    for c in range(n_chunks(spec["count"], spec["chunk_size"])):
        expect = chunk_expect(spec, sid, c)
        ch = ChunkFile(chunk_path(out, c), expect)
        try:
            cm = ch.meta()
            chunks.append({"file": str(chunk_path(Path(), c)), "row_start": expect["row_start"], "rows": ch.rows,
                           "bytes": len(ch.mm), "crc32": ch.crc32})
        finally:
            ch.close()
        missing += [{"key": k, "reason": r} for k, r in cm["errors"]]
        pixels += np.asarray(cm["class_pixels"], np.int64)
        images += np.asarray(cm["class_images"], np.int64)
    return chunks, missing, pixels, images


def finalize(out: Path, spec: dict, keys: np.ndarray, rec_path: str, producer_path: str | None,
             created: dict, meta: Mapping[str, Any], info: Mapping[str, Any]) -> dict:
    """Rank 0: write keys.npy, build_info.json and (last: the commit) manifest.json; deterministic bytes."""
    chunks, missing, pixels, images = _collect_chunks(out, spec)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(keys, dtype="<i8"), allow_pickle=False)
    atomic_write(out / KEYS_FILE, buf.getvalue())
    manifest = {**spec, "spec_id": spec_id(spec).hex(), "rec_path": rec_path,
                "parser": {**spec["parser"], "path": producer_path},
                "keys": {"file": KEYS_FILE, "sha256": spec["source"]["keys_sha256"],
                         "file_sha256": hashlib.sha256(buf.getbuffer()).hexdigest(), "first": int(keys[0]),
                         "last": int(keys[-1]), "contiguous": bool(keys[-1] - keys[0] == len(keys) - 1)},
                "chunks": chunks, "data_bytes": sum(c["bytes"] for c in chunks),
                "missing": missing, "n_missing": len(missing),
                "class_pixels": pixels.tolist(), "class_images": images.tolist(),
                "created": created, "meta": dict(meta)}
    n = manifest["count"]
    atomic_write(out / BUILD_INFO, json.dumps({**info, "bytes_per_mask": round(manifest["data_bytes"] / n, 1)},
                                              indent=1, sort_keys=True).encode())
    atomic_write(out / MANIFEST, manifest_bytes(manifest))
    (out / BUILD_SPEC).unlink(missing_ok=True)
    return manifest


def build_info(seconds: float, computed: int, world: int, compute_seconds: float = 0.0) -> dict:
    """What build_info.json records: when, where, how fast (the one file allowed to differ between builds)."""
    rate = computed / compute_seconds if computed and compute_seconds > 0 else None
    return {"finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": socket.gethostname(),
            "world_size": world, "seconds": round(seconds, 3), "compute_seconds_rank0": round(compute_seconds, 3),
            "masks_computed_rank0": computed, "masks_per_s_rank0": round(rate, 1) if rate else None}


def report(out: Path, manifest: Mapping[str, Any], info: Mapping[str, Any]) -> None:
    """Print the result, undecodable images included."""
    n, miss = manifest["count"], manifest["n_missing"]
    rate = info.get("masks_per_s_rank0")
    print(f"mask cache {out}: {n} masks ({manifest['height']}x{manifest['width']}) in {len(manifest['chunks'])} "
          f"chunks, {manifest['data_bytes'] / n:.0f} bytes/mask" + (f", {rate:.0f} masks/s on rank 0" if rate else "")
          + f"; undecodable images: {miss}", file=sys.stderr)
    for d in manifest["missing"][:5]:
        print(f"  key {d['key']}: {d['reason']}", file=sys.stderr)
    if miss > 5:
        print(f"  ... {miss - 5} more in {out / MANIFEST} ('missing')", file=sys.stderr)


def versions(**extra: str) -> dict:
    return {"fse_plugin": __version__, "numpy": np.__version__, "zlib": zlib.ZLIB_RUNTIME_VERSION, **extra}


# --------------------------------------------------------------------------------------- from labels

def _labels_order(src: Source, keys: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The permutation that puts ``keys``/``masks`` in the rec's key order; CacheError unless they match it."""
    if masks.ndim != 3 or masks.dtype != np.uint8 or len(masks) != len(keys):
        raise CacheError(f"need keys [N] and uint8 masks [N,H,W]; got keys {keys.shape}, masks {masks.dtype} "
                         f"{masks.shape}")
    order = np.argsort(keys, kind="stable")
    if not np.array_equal(keys[order], src.keys):
        lost, extra = np.setdiff1d(src.keys, keys), np.setdiff1d(keys, src.keys)
        dup = len(keys) - len(np.unique(keys))
        raise CacheError(f"labels do not match the image records of {src.reader.rec_path}: {len(lost)} image keys "
                         f"without a mask (e.g. {lost[:5].tolist()}), {len(extra)} masks for keys that are not "
                         f"images (e.g. {extra[:5].tolist()}), {dup} duplicate keys")
    size = probe_size(src.reader, src.keys)
    if tuple(masks.shape[1:]) != tuple(size):
        raise CacheError(f"masks are {masks.shape[1]}x{masks.shape[2]} but the images of {src.reader.rec_path} "
                         f"are {size[0]}x{size[1]}")
    return order


def _labels_sha256(keys: np.ndarray, masks: np.ndarray, order: np.ndarray) -> str:
    h = hashlib.sha256(keys.astype("<i8").tobytes())
    for s in range(0, len(order), 4096):
        h.update(np.ascontiguousarray(masks[order[s:s + 4096]]).tobytes())
    return h.hexdigest()


def build_from_labels(rec_dir: str | os.PathLike, keys: np.ndarray, masks: np.ndarray,
                      out: str | os.PathLike | None = None, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                      overwrite: bool = False, progress: bool = True, **meta: Any) -> Path:
    """Cache of given masks (e.g. synth ``gt_masks.npz``), no parser: one mask for every image key of the rec.

    ``keys``/``masks`` may be in any order; they must cover exactly the rec's image keys at its image
    size. ``meta`` (JSON values) is stored in the manifest; ``labels_path`` there names the source for
    rebuild commands. Single process (it only encodes), resumable and self-repairing like ``precompute``.
    """
    from tqdm import tqdm
    check_counts(chunk_size=chunk_size)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CacheError("a cache from labels is built by one process (it only encodes): run it without torchrun")
    t0 = time.perf_counter()
    out = Path(out) if out is not None else default_cache_path(rec_dir)
    lp = meta.get("labels_path")
    if lp is not None:
        meta["labels_path"] = lp = str(Path(lp).resolve())
    src = scan_source(rec_dir)
    try:
        keys = np.asarray(keys).astype(np.int64, casting="same_kind")
        masks = np.asarray(masks)
        order = _labels_order(src, keys, masks)
        spec = make_spec(src.fingerprint, {"kind": "labels", "sha256": _labels_sha256(src.keys, masks, order)},
                         masks.shape[1], masks.shape[2], len(keys), chunk_size, None)
        rec_abs = rec_location(src.reader)
        if prepare(out, spec, overwrite, rebuild_command(out, rec_abs, labels=lp, from_labels=True)):
            print(f"mask cache {out} is complete, every byte checked", file=sys.stderr)
        else:
            for c in tqdm(todo(out, spec, 0, 1), desc="encode", unit="chunk", disable=not progress):
                s, e = chunk_rows(c, spec["count"], chunk_size)
                batch = np.ascontiguousarray(masks[order[s:e]])
                blobs, pixels, images = encode_batch(batch, np.ones(len(batch), bool))
                write_chunk(out, spec, c, Entries.of(blobs), [], pixels, images)
            info = build_info(time.perf_counter() - t0, 0, 1)
            report(out, finalize(out, spec, src.keys, rec_abs, lp, versions(), meta, info), info)
    finally:
        src.reader.close()
    return out
