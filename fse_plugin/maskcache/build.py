"""The steps every cache build shares (``CacheWriter``: prepare the directory, write chunks, commit
keys.npy and manifest.json) and ``build_from_labels`` (a cache of given masks).

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
import logging
import os
import socket
import time
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fse_plugin import __version__
from fse_plugin.labels import NUM_CLASSES
from fse_plugin.common import checks
from fse_plugin.common.files import atomic_write
from fse_plugin.common.text import plural
from fse_plugin.maskcache.chunk import (CHUNK_DIR, ChunkFile, ChunkMeta, Entries, chunk_bytes,
                                        chunk_ok, chunk_path, remove_temporaries)
from fse_plugin.maskcache.codec import encode_batch
from fse_plugin.maskcache.errors import CacheError, CacheMismatchError, without_hint
from fse_plugin.maskcache.manifest import (BUILD_INFO, BUILD_SPEC, KEYS_FILE, MANIFEST, ChunkEntry,
                                           KeysEntry, Manifest, MissingImage, read_manifest)
from fse_plugin.maskcache.reader import MaskCache
from fse_plugin.maskcache.rebuild import default_cache_path, rebuild_command
from fse_plugin.maskcache.source import Source, probe_size, rec_location, scan_source
from fse_plugin.maskcache.spec import DEFAULT_CHUNK_SIZE, CacheSpec, Producer

__all__ = ["BuildInfo", "CacheWriter", "build_from_labels", "labels_from_npz", "library_versions",
           "log_summary"]

log = logging.getLogger(__name__)

_OUR_FILES = (MANIFEST, KEYS_FILE, BUILD_SPEC, BUILD_INFO)


@dataclass(frozen=True)
class BuildInfo:
    """What build_info.json records: when, where, how fast
    (the one file allowed to differ between builds)."""
    finished_utc: str
    host: str
    world_size: int
    seconds: float
    compute_seconds_rank0: float
    masks_computed_rank0: int
    masks_per_s_rank0: float | None
    bytes_per_mask: float | None = None

    @classmethod
    def measure(cls, seconds: float, computed: int, world: int,
                compute_seconds: float = 0.0) -> "BuildInfo":
        rate = computed / compute_seconds if computed and compute_seconds > 0 else None
        return cls(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), socket.gethostname(), world,
                   round(seconds, 3), round(compute_seconds, 3), computed,
                   round(rate, 1) if rate else None)


def library_versions(**extra: str) -> dict:
    """The versions a manifest's ``created`` records (the libraries whose output its bytes are)."""
    return {"fse_plugin": __version__, "numpy": np.__version__, "zlib": zlib.ZLIB_RUNTIME_VERSION,
            **extra}


def _spec_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    return ", ".join(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)) or "nothing"


def _first_problem(out: Path) -> str | None:
    """What is wrong with the complete cache at ``out`` (every byte checked),
    or None if it is sound."""
    try:
        with MaskCache(out) as cache:
            cache.check(data=True)
    except CacheError as e:
        return without_hint(e).rstrip(".")
    return None


class CacheWriter:
    """One build of ``spec`` into the directory ``out``:
    the steps every rank and every kind of build share.

    ``prepare`` (rank 0) readies the directory and says whether it already holds this very cache;
    each rank then writes its ``pending_chunks`` with ``write_chunk``; rank 0 ``wait_for_chunks`` of
    the others and ``commit``s keys.npy, build_info.json and manifest.json.
    """

    def __init__(self, out: Path, spec: CacheSpec):
        self.out, self.spec = Path(out), spec

    def _remove_build(self) -> None:
        """Delete the files a build writes (and only those: ``out`` may hold other things)."""
        for name in _OUR_FILES:
            (self.out / name).unlink(missing_ok=True)
        for p in (self.out / CHUNK_DIR).glob("*.fsmc*"):
            p.unlink()

    def _holds_this_cache(self) -> bool:
        """True if ``out`` holds a sound cache of the spec;
        CacheMismatchError if it holds one of another spec."""
        if not (self.out / MANIFEST).is_file():
            return False
        try:
            m = read_manifest(self.out)
        except CacheError as e:
            # unreadable, damaged or of an old format: usable by nobody, so replaced
            log.warning("%s: replacing what cannot be used (%s)", self.out, without_hint(e))
            return False
        if m.spec.spec_id != self.spec.spec_id:
            raise CacheMismatchError(
                f"{self.out} already holds a mask cache for another rec, parser or setting "
                f"(differs in: {_spec_diff(m.spec.to_json(), self.spec.to_json())}). "
                f"Add --overwrite to replace it, or choose another --out.")
        problem = _first_problem(self.out)
        if problem is None:
            return True
        log.warning("%s; recomputing what is damaged or missing", problem)
        return False

    def _check_unfinished(self) -> None:
        """Refuse to mix into an unfinished build of another spec that has already written
        chunks."""
        try:
            old = json.loads((self.out / BUILD_SPEC).read_bytes()).get("spec")
        except (OSError, ValueError, AttributeError):
            # none, or unreadable: the chunks carry their spec_id,
            # so nothing of another build is kept
            return
        spec = self.spec.to_json()
        if old != spec and any((self.out / CHUNK_DIR).glob("*.fsmc")):
            what = _spec_diff(old, spec) if isinstance(old, dict) else "unreadable build_spec.json"
            raise CacheMismatchError(
                f"{self.out} holds an unfinished build for another rec, parser or setting "
                f"(differs in: {what}). Add --overwrite to discard it, or choose another --out.")

    def prepare(self, overwrite: bool, command: str) -> bool:
        """Make ``out`` ready for this build (rank 0 only);
        True if it already holds this very cache, sound.

        ``command`` (the same build, which resumes or repairs) is what error messages tell the user
        to rerun.
        """
        out = self.out
        out.mkdir(parents=True, exist_ok=True)
        (out / CHUNK_DIR).mkdir(exist_ok=True)
        remove_temporaries(out, _OUR_FILES)
        remove_temporaries(out / CHUNK_DIR, ["*.fsmc"])
        if overwrite:
            self._remove_build()
        if self._holds_this_cache():
            # left by a kill just after the manifest was written
            (out / BUILD_SPEC).unlink(missing_ok=True)
            return True
        self._check_unfinished()
        atomic_write(out / BUILD_SPEC, json.dumps({"spec": self.spec.to_json(), "command": command},
                                                  indent=1, sort_keys=True).encode())
        (out / MANIFEST).unlink(missing_ok=True)
        return False

    def _sound(self, index: int) -> bool:
        return chunk_ok(chunk_path(self.out, index), self.spec.chunk_expect(index))

    def pending_chunks(self, rank: int = 0, world: int = 1) -> list[int]:
        """Chunks this rank must compute: every ``world``-th one that is not already there,
        sound."""
        return [c for c in range(rank, self.spec.n_chunks, world) if not self._sound(c)]

    def write_chunk(self, index: int, entries: Entries, errors: Sequence[tuple[int, str]],
                    pixels: np.ndarray, images: np.ndarray) -> None:
        """One chunk file, atomically; ``errors`` are (key, reason) of the rows with an empty
        entry."""
        start, stop = self.spec.chunk_rows(index)
        # a bug of the caller: never write a chunk of the wrong size
        if len(entries.lengths) != stop - start:
            raise RuntimeError(f"chunk {index}: {len(entries.lengths)} entries for rows "
                               f"{start}..{stop - 1}")
        meta = ChunkMeta([[int(k), r] for k, r in sorted(errors)], pixels.tolist(), images.tolist())
        data = chunk_bytes(self.spec.spec_id, index, start, self.spec.height, self.spec.width,
                           entries, meta)
        atomic_write(chunk_path(self.out, index), data)

    def wait_for_chunks(self, poll: float = 2.0) -> None:
        """Rank 0: wait until the other ranks' chunk files exist (they appear atomically)."""
        waiting, told = set(range(self.spec.n_chunks)), False
        while waiting:
            waiting = {c for c in waiting if not chunk_path(self.out, c).is_file()}
            if waiting:
                if not told:
                    log.info("rank 0: waiting for %s from the other ranks",
                             plural(len(waiting), "chunk"))
                    told = True
                time.sleep(poll)
        bad = [c for c in range(self.spec.n_chunks) if not self._sound(c)]
        if bad:
            raise CacheError(f"{self.out}: chunks {bad[:10]} are damaged or from another build; "
                             f"rerun to recompute them")

    def _collect_chunks(self) -> tuple[list[ChunkEntry], list[MissingImage],
                                       np.ndarray, np.ndarray]:
        """Manifest entries, undecodable images and class counts of all chunks."""
        chunks, missing = [], []
        pixels = np.zeros(NUM_CLASSES, np.int64)
        images = np.zeros(NUM_CLASSES, np.int64)
        for c in range(self.spec.n_chunks):
            expect = self.spec.chunk_expect(c)
            ch = ChunkFile(chunk_path(self.out, c), expect)
            try:
                cm = ch.meta()
                chunks.append(ChunkEntry(str(chunk_path(Path(), c)), expect.row_start, ch.rows,
                                         len(ch.mm), ch.crc32))
            finally:
                ch.close()
            missing += [MissingImage(k, r) for k, r in cm.errors]
            pixels += np.asarray(cm.class_pixels, np.int64)
            images += np.asarray(cm.class_images, np.int64)
        return chunks, missing, pixels, images

    def commit(self, keys: np.ndarray, rec_path: str, producer_path: str | None, created: dict,
               meta: Mapping[str, Any], info: BuildInfo) -> Manifest:
        """Rank 0: write keys.npy, build_info.json and (last: the commit) manifest.json;
        deterministic bytes."""
        chunks, missing, pixels, images = self._collect_chunks()
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(keys, dtype="<i8"), allow_pickle=False)
        atomic_write(self.out / KEYS_FILE, buf.getvalue())
        first, last = int(keys[0]), int(keys[-1])
        entry = KeysEntry(KEYS_FILE, self.spec.source.keys_sha256,
                          hashlib.sha256(buf.getbuffer()).hexdigest(), first, last,
                          bool(last - first == len(keys) - 1))
        manifest = Manifest(self.spec, rec_path, producer_path, entry, chunks, missing,
                            pixels.tolist(), images.tolist(), created, dict(meta))
        info = replace(info, bytes_per_mask=round(manifest.data_bytes / self.spec.count, 1))
        atomic_write(self.out / BUILD_INFO,
                     json.dumps(asdict(info), indent=1, sort_keys=True).encode())
        atomic_write(self.out / MANIFEST, manifest.to_bytes())
        (self.out / BUILD_SPEC).unlink(missing_ok=True)
        return manifest

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.out)!r}, {plural(self.spec.count, 'mask')})"


def log_summary(out: Path, manifest: Manifest, info: BuildInfo) -> None:
    """Say what was built, undecodable images included."""
    spec, miss = manifest.spec, len(manifest.missing)
    rate = info.masks_per_s_rank0
    log.info("mask cache %s: %s (%dx%d) in %s, %.0f bytes/mask%s; undecodable images: %d", out,
             plural(spec.count, "mask"), spec.height, spec.width,
             plural(len(manifest.chunks), "chunk"), manifest.data_bytes / spec.count,
             f", {rate:.0f} masks/s on rank 0" if rate else "", miss)
    for d in manifest.missing[:5]:
        log.info("  key %d: %s", d.key, d.reason)
    if miss > 5:
        log.info("  ... %d more in %s ('missing')", miss - 5, out / MANIFEST)


# -------------------------------------------------------------------------------------- from labels

def labels_from_npz(path: str | os.PathLike,
                    name: str = "--from-labels") -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``keys`` and ``masks`` of a labels file (e.g. synth ``gt_masks.npz``),
    read without pickles."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "keys" not in z or "masks" not in z:
                raise CacheError(f"{name} {path}: needs arrays 'keys' and 'masks', "
                                 f"has {list(z.keys())}")
            return z["keys"], z["masks"]
    except (ValueError, OSError, EOFError) as e:
        if isinstance(e, CacheError):
            raise
        raise CacheError(f"{name} {path}: not a readable .npz of arrays 'keys' and 'masks' "
                         f"({e})") from None


def _check_labels(keys: np.ndarray, masks: np.ndarray, where: str) -> None:
    """Refuse labels a cache cannot hold, before anything is written: shapes, dtypes, class ids."""
    if keys.ndim != 1 or keys.dtype.kind not in "iu" or masks.ndim != 3 or masks.dtype != np.uint8 \
            or len(masks) != len(keys):
        raise CacheError(f"{where}: need integer keys [N] and uint8 masks [N,H,W]; "
                         f"got keys {keys.dtype} {keys.shape}, masks {masks.dtype} {masks.shape}")
    peaks = masks.reshape(len(masks), -1).max(axis=1) if masks.size else np.zeros(0, np.uint8)
    bad = np.flatnonzero(peaks >= NUM_CLASSES)
    if bad.size:
        raise CacheError(f"{where}: mask {int(bad[0])} (key {int(keys[bad[0]])}) "
                         f"holds class {int(peaks[bad[0]])}; class ids are 0..{NUM_CLASSES - 1} "
                         f"({plural(bad.size, 'mask')} out of range)")


def _labels_order(src: Source, keys: np.ndarray, masks: np.ndarray, where: str) -> np.ndarray:
    """The permutation that puts ``keys``/``masks`` in the rec's key order;
    CacheError unless they match it."""
    order = np.argsort(keys, kind="stable")
    if not np.array_equal(keys[order], src.keys):
        lost, extra = np.setdiff1d(src.keys, keys), np.setdiff1d(keys, src.keys)
        dup = len(keys) - len(np.unique(keys))
        raise CacheError(f"{where}: labels do not match the image records of "
                         f"{src.reader.rec_path}: {plural(len(lost), 'image key')} without a mask "
                         f"(e.g. {lost[:5].tolist()}), {plural(len(extra), 'mask')} for keys that "
                         f"are not images (e.g. {extra[:5].tolist()}), "
                         f"{plural(dup, 'duplicate key')}")
    size = probe_size(src.reader, src.keys)
    if tuple(masks.shape[1:]) != tuple(size):
        raise CacheError(f"{where}: masks are {masks.shape[1]}x{masks.shape[2]} but the images of "
                         f"{src.reader.rec_path} are {size[0]}x{size[1]}")
    return order


def _labels_sha256(keys: np.ndarray, masks: np.ndarray, order: np.ndarray) -> str:
    h = hashlib.sha256(keys.astype("<i8").tobytes())
    for s in range(0, len(order), 4096):
        h.update(np.ascontiguousarray(masks[order[s:s + 4096]]).tobytes())
    return h.hexdigest()


def _encode_chunks(writer: CacheWriter, masks: np.ndarray, order: np.ndarray,
                   progress: bool) -> None:
    from tqdm import tqdm
    for c in tqdm(writer.pending_chunks(), desc="encode", unit="chunk", disable=not progress):
        s, e = writer.spec.chunk_rows(c)
        batch = np.ascontiguousarray(masks[order[s:e]])
        blobs, pixels, images = encode_batch(batch, np.ones(len(batch), bool))
        writer.write_chunk(c, Entries.of(blobs), [], pixels, images)


def build_from_labels(rec_dir: str | os.PathLike, keys: np.ndarray, masks: np.ndarray,
                      out: str | os.PathLike | None = None, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                      overwrite: bool = False, progress: bool = True, **meta: Any) -> Path:
    """Cache of given masks (e.g. synth ``gt_masks.npz``), no parser:
    one mask for every image key of the rec.

    ``keys``/``masks`` may be in any order; they must cover exactly the rec's image keys at its
    image size, with class ids 0..24 (checked before anything is written). ``meta`` (JSON values) is
    stored in the manifest; ``labels_path`` there names the source for rebuild commands and errors.
    Single process (it only encodes), resumable and self-repairing like ``precompute``.
    """
    checks.count(chunk_size, "chunk_size")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CacheError("a cache from labels is built by one process (it only encodes): "
                         "run it without torchrun")
    t0 = time.perf_counter()
    out = Path(out) if out is not None else default_cache_path(rec_dir)
    lp = meta.get("labels_path")
    if lp is not None:
        meta["labels_path"] = lp = str(Path(lp).resolve())
    where = lp or "labels"
    keys, masks = np.asarray(keys), np.asarray(masks)
    _check_labels(keys, masks, where)
    src = scan_source(rec_dir)
    try:
        keys = keys.astype(np.int64)
        order = _labels_order(src, keys, masks, where)
        spec = CacheSpec(masks.shape[1], masks.shape[2], len(keys), chunk_size, src.fingerprint,
                         Producer("labels", _labels_sha256(src.keys, masks, order)))
        rec_abs = rec_location(src.reader)
        writer = CacheWriter(out, spec)
        command = rebuild_command(out, rec_abs, labels=lp, from_labels=True,
                                  flags=spec.build_flags())
        if writer.prepare(overwrite, command):
            log.info("mask cache %s is complete, every byte checked", out)
        else:
            _encode_chunks(writer, masks, order, progress)
            info = BuildInfo.measure(time.perf_counter() - t0, 0, 1)
            manifest = writer.commit(src.keys, rec_abs, lp, library_versions(), meta, info)
            log_summary(out, manifest, info)
    finally:
        src.reader.close()
    return out
