"""FaceSynthetics-layout parser data: read the frames with 25-class labels, align them once,
cache them.

Layout (microsoft/FaceSynthetics plus the FSErasing labels): ``{id:06d}.png`` and
``{id:06d}_ldmks.txt`` (70 rows ``x y``: 68 iBUG points and two pupils), flat or under ``images/``;
the 25-class maps in ``labels_25/{id:06d}_seg.png`` (the authors' README also spells the folder
``labels25``: both are read); ``anno_list.csv`` (``frame_id,with_25``) lists which frames have them.
Each frame is aligned to ArcFace 112x112 by its own landmarks: the image bilinear, the label map
nearest-neighbour.
"""
from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing as mp
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

from fse_plugin.align import align_image, align_mask, five_points_from_68
from fse_plugin.common import FSEError
from fse_plugin.common.files import temporary_name
from fse_plugin.common.interrupts import child_ignores_sigint, sigint_deferred
from fse_plugin.labels import IGNORE_INDEX, LABEL_SET, NUM_CLASSES
from fse_plugin.parsing.checkpoint import FORMAT

__all__ = ["AlignedSet", "label_dir", "load_frame", "prepare_dataset", "read_anno_list",
           "split_indices"]


def label_dir(root: str | os.PathLike, n_classes: int = 25) -> Path:
    """The folder of ``n_classes``-class label maps under ``root``: ``labels_25`` or ``labels25``
    (``labels_9`` / ``labels9``), whichever exists; raises naming both when neither does."""
    root = Path(root)
    names = (f"labels_{n_classes}", f"labels{n_classes}")
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise FSEError(f"{root}: no {names[0]}/ or {names[1]}/ folder of {n_classes}-class label maps")


def read_anno_list(data_dir: str | os.PathLike) -> np.ndarray:
    """Sorted frame ids with 25-class labels (``with_25 == 1``) from ``anno_list.csv``."""
    path = Path(data_dir) / "anno_list.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a FaceSynthetics folder with 25-class labels "
                                f"needs anno_list.csv")
    ids = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in reader.fieldnames or []]
        if "frame_id" not in cols or "with_25" not in cols:
            raise FSEError(f"{path}: header must have columns frame_id,with_25, got {cols}")
        reader.fieldnames = cols
        for row_no, row in enumerate(reader, start=2):
            try:
                fid, w25 = int(row["frame_id"]), int(row["with_25"])
            except (TypeError, ValueError):
                raise FSEError(f"{path}: row {row_no}: frame_id/with_25 must be integers, "
                               f"got {row}") from None
            if w25 not in (0, 1) or fid < 0:
                raise FSEError(f"{path}: row {row_no}: bad values frame_id={fid} with_25={w25}")
            if w25:
                ids.append(fid)
    if not ids:
        raise FSEError(f"{path}: no frame has with_25 == 1")
    return np.unique(np.asarray(ids, dtype=np.int64))


def _frame_paths(root: Path, labels: Path, fid: int) -> tuple[Path, Path, Path]:
    """Image, landmarks, 25-class label of a frame (images flat as released, or under
    ``images/``)."""
    stem = f"{fid:06d}"
    image = root / f"{stem}.png"
    if not image.is_file() and (root / "images" / f"{stem}.png").is_file():
        image = root / "images" / f"{stem}.png"
    ldmks = image.parent / f"{stem}_ldmks.txt"
    return image, ldmks, labels / f"{stem}_seg.png"


def _read_labels(label_path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A frame's 25-class map, checked: one uint8 channel of the image's size,
    ids 0..24 or ignore."""
    seg = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
    if seg is None:
        raise FSEError(f"{label_path}: missing or not a readable label image")
    if seg.ndim != 2 or seg.dtype != np.uint8 or seg.shape != shape:
        raise FSEError(f"{label_path}: expected a single-channel uint8 map of {shape}, "
                       f"got {seg.dtype} {seg.shape}")
    bad = np.unique(seg[(seg >= NUM_CLASSES) & (seg != IGNORE_INDEX)])
    if bad.size:
        raise FSEError(f"{label_path}: values {bad[:5].tolist()} are not 25-class ids (0..24) "
                       f"or {IGNORE_INDEX}")
    return seg


def load_frame(data_dir: str | os.PathLike, frame_id: int, size: int = 112,
               labels: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One FaceSynthetics frame aligned to ArcFace ``size``:
    (RGB uint8 HxWx3 bilinear, labels uint8 HxW nearest).

    ``labels`` is the label folder (default: :func:`label_dir` of ``data_dir``).
    """
    root = Path(data_dir)
    image_path, ldmk_path, label_path = _frame_paths(
        root, Path(labels) if labels else label_dir(root), int(frame_id))
    img = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if img is None:
        raise FSEError(f"{image_path}: missing or not a readable image")
    seg = _read_labels(label_path, img.shape[:2])
    try:
        ldmks = np.loadtxt(ldmk_path, dtype=np.float64, ndmin=2)
        p5 = five_points_from_68(ldmks)
    except (OSError, ValueError) as e:
        raise FSEError(f"{ldmk_path}: {e}") from None
    return align_image(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), p5, size), align_mask(seg, p5, size)


class AlignedSet(NamedTuple):
    images: np.ndarray  # uint8 [N,S,S,3] RGB, memory-mapped
    masks: np.ndarray  # uint8 [N,S,S]
    frame_ids: np.ndarray  # int64 [N], sorted
    path: Path


def _fingerprint(root: Path, labels: Path, ids: np.ndarray, size: int) -> str:
    """Hash of anno_list.csv and every frame's three file sizes and mtimes:
    any edit rebuilds the cache."""
    h = hashlib.sha1(f"{FORMAT}:{size}".encode())
    h.update((root / "anno_list.csv").read_bytes())
    for fid in ids:
        for p in _frame_paths(root, labels, int(fid)):
            h.update(f"{p.name}:{_size_mtime(p)};".encode())
    return h.hexdigest()[:16]


def _size_mtime(path: Path) -> str:
    """``size:mtime_ns`` of a file, ``-1:-1`` when it is missing:
    one stat per file (three per frame)."""
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):  # what Path.exists() reads as missing
        return "-1:-1"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _load_frame_job(job: tuple[str, int, int, str]) -> tuple[np.ndarray, np.ndarray]:
    root, fid, size, labels = job
    return load_frame(root, fid, size, labels)


def _write_cache(root: Path, labels: Path, ids: np.ndarray, size: int, cache: Path, workers: int,
                 progress: bool) -> None:
    """Align every frame straight into ``.npy`` memmaps in a temporary folder, renamed when
    complete: an interrupted run leaves no half cache (a killed one a temporary folder the next run
    removes), and the faces never need to fit in RAM at once."""
    tmp = temporary_name(cache)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        _align_into(tmp, root, labels, ids, size, workers, progress)
        if not cache.exists():  # else another process finished first
            os.replace(tmp, cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _align_into(tmp: Path, root: Path, labels: Path, ids: np.ndarray, size: int, workers: int,
                progress: bool) -> None:
    images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8,
                                       (len(ids), size, size, 3))
    masks = np.lib.format.open_memmap(tmp / "masks.npy", "w+", np.uint8, (len(ids), size, size))
    jobs = [(str(root), int(f), size, str(labels)) for f in ids]
    pool, results = None, map(_load_frame_job, jobs)
    if workers > 0:
        with sigint_deferred():  # the processes are born deaf to Ctrl-C; the parent stops them
            pool = mp.get_context("spawn").Pool(workers, initializer=child_ignores_sigint)
        results = pool.imap(_load_frame_job, jobs, chunksize=16)
    try:
        for i, (img, mask) in enumerate(tqdm(results, total=len(jobs), desc="align",
                                             disable=not progress)):
            images[i], masks[i] = img, mask
    finally:
        if pool is not None:
            pool.terminate()
    images.flush()
    masks.flush()
    del images, masks
    np.save(tmp / "frame_ids.npy", ids)
    (tmp / "meta.json").write_text(json.dumps({"source": str(root.resolve()), "size": size,
                                               "count": len(ids), "label_set": LABEL_SET,
                                               "format": FORMAT}))


def _remove_abandoned(cache: Path) -> None:
    """Delete the temporary folders of ``cache`` whose writer process is gone (a killed run)."""
    for tmp in cache.parent.glob(f"{cache.name}.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[1].lstrip("-")
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def prepare_dataset(data_dir: str | os.PathLike, cache_dir: str | os.PathLike, size: int = 112,
                    workers: int = 0, progress: bool = True) -> AlignedSet:
    """Align every ``with_25`` frame once and memory-map the result on later calls.

    The cache is a folder of ``.npy`` files (not one ``.npz``) so DataLoader workers share pages
    through mmap instead of each holding a copy of every face. Its name holds a fingerprint of the
    source files, so an edited folder gets a fresh cache;
    what killed runs left of theirs is removed.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"FaceSynthetics folder not found: {root}")
    ids = read_anno_list(root)
    labels = label_dir(root)
    cache = Path(cache_dir) / f"aligned{size}_{_fingerprint(root, labels, ids, size)}"
    if not (cache / "meta.json").is_file():
        _remove_abandoned(cache)
        _write_cache(root, labels, ids, size, cache, workers, progress)
    return AlignedSet(np.load(cache / "images.npy", mmap_mode="r"),
                      np.load(cache / "masks.npy", mmap_mode="r"),
                      np.load(cache / "frame_ids.npy"), cache)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, held-out) index arrays: a seeded permutation of the sorted frames."""
    if not 0.0 <= val_fraction < 1.0:
        raise FSEError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = 0 if val_fraction == 0 else min(n - 1, max(1, round(n * val_fraction)))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
