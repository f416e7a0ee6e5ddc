"""Writers of synthetic data sets in the layouts the pipeline reads.

``write_rec`` (insightface train.rec/.idx/property + exact masks), ``write_pairs_bin`` (verification
pack), ``write_facesynthetics`` (parser training data with 25-class labels), ``write_ijb``
(IJB-B/C-style 1:1 set). Each image is seeded by its own key, so any number of worker processes
gives the same bytes.

An interrupted writer never leaves a result that readers take for whole: each data set has a file
its readers need first (``train.idx``, the ``.bin``, ``anno_list.csv``, the pair-label list),
written through a temporary name and renamed into place last, after an earlier copy of it is
removed.
"""
from __future__ import annotations

import csv
import multiprocessing
import os
import pickle
import signal
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from fse_plugin.align import align_mask, five_points_from_68
from fse_plugin.common import FSEError, checks, masks_path_for
from fse_plugin.common.files import atomic_output
from fse_plugin.labels import L25_TO_FS19, SKIN_IDS
from fse_plugin.recordio import IRHeader, MXIndexedRecordIO, pack, pack_img
from fse_plugin.synth.identity import HELDOUT, PARSER, TRAIN, identity_of, keyed_rng, sample_look
from fse_plugin.synth.rendering import render, render_image

__all__ = ["IJBLayout", "pair_plan", "write_facesynthetics", "write_ijb", "write_pairs_bin",
           "write_rec"]

_PAIR_STREAM = 101  # pair selection of write_pairs_bin
_IJB_STREAM = 102  # template/pair layout of write_ijb


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cv2 failed to encode a JPEG")
    return buf.tobytes()


def _default_workers(n_items: int) -> int:
    return max(1, min(os.cpu_count() or 1, n_items // 500))


def _worker_init() -> None:
    """A render process: one OpenCV thread, and Ctrl-C left to the parent (which stops the pool), so
    an interrupt is one line, not a traceback per worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)


def _pmap(fn: Callable, jobs: Sequence, workers: int | None, desc: str, progress: bool) -> Iterator:
    """Ordered map over jobs, in worker processes when there are enough jobs to pay for them."""
    workers = _default_workers(len(jobs)) if workers is None else max(1, int(workers))
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress, leave=False)
    try:
        if workers == 1:
            for job in jobs:
                yield fn(job)
                bar.update()
            return
        # Not plain fork: a caller that already ran cv2 or torch thread pools (a test session, a
        # demo) can leave their locks held in a forked child, which then hangs. The forkserver is a
        # clean single-threaded process that has imported this module once.
        if "forkserver" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload([__name__])
        else:
            ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_worker_init) as pool:
            for out in pool.imap(fn, jobs, chunksize=max(1, min(64, len(jobs) // (8 * workers)))):
                yield out
                bar.update()
    finally:
        bar.close()


def _rec_job(job: tuple[int, int, int, int, int, int]) -> tuple[bytes, np.ndarray]:
    seed, ident, image, key, size, quality = job
    r = render_image(seed, TRAIN, ident, image, size, "aligned")
    rec = pack_img(IRHeader(0, float(ident), key, 0), np.ascontiguousarray(r.image[..., ::-1]),
                   quality=quality)
    return rec, r.mask


def write_rec(out_dir: str | os.PathLike, n_identities: int, images_per_identity: int, seed: int, *,
              size: int = 112, quality: int = 95, workers: int | None = None,
              progress: bool = False) -> Path:
    """insightface-layout ``train.rec``/``train.idx``/``property`` of aligned faces plus
    ``gt_masks.npz``.

    Layout as insightface's rec_builder: images at keys 1..N (IRHeader(0, label, key, 0)), then one
    image-less record per identity with label [first_key, end_key), then record 0 with label
    [first identity key, end] and id2=1. Identity ``i`` (label ``i``) is identity ``i`` of the TRAIN
    stream. ``gt_masks.npz`` holds ``keys`` (int64, in ``recordio.image_index`` order) and ``masks``
    (uint8 [N, size, size], the exact aligned masks). Returns ``out_dir``.
    """
    checks.count(n_identities, "n_identities")
    checks.count(images_per_identity, "images_per_identity")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = n_identities * images_per_identity
    jobs = [(int(seed), i, j, 1 + i * images_per_identity + j, size, quality)
            for i in range(n_identities) for j in range(images_per_identity)]
    masks = np.empty((n, size, size), np.uint8)
    with ExitStack() as files:  # renamed in reverse order on success: train.idx last
        tmp = {name: files.enter_context(atomic_output(out / name))
               for name in ("train.idx", "train.rec", "property", "gt_masks.npz")}
        rec = MXIndexedRecordIO(str(tmp["train.idx"]), str(tmp["train.rec"]), "w")
        try:
            for k, (buf, mask) in enumerate(_pmap(_rec_job, jobs, workers, "train.rec", progress)):
                rec.write_idx(jobs[k][3], buf)
                masks[k] = mask
            for i in range(n_identities):
                first = 1 + i * images_per_identity
                rec.write_idx(n + 1 + i, pack(IRHeader(0, [first, first + images_per_identity],
                                                       n + 1 + i, 0), b""))
            rec.write_idx(0, pack(IRHeader(0, [n + 1, n + 1 + n_identities], 0, 1), b""))
        finally:
            rec.close()
        tmp["property"].write_text(f"{n_identities},{size},{size}\n")
        # images are keys 1..n in write order (image_index's order)
        with open(tmp["gt_masks.npz"], "wb") as f:
            np.savez_compressed(f, keys=np.arange(1, n + 1, dtype=np.int64), masks=masks)
        (out / "train.idx").unlink(missing_ok=True)  # an earlier rec here is not whole from now on
    return out


def _pair_job(job: tuple[int, int, int, int]) -> tuple[bytes, np.ndarray]:
    seed, ident, image, quality = job
    r = render_image(seed, HELDOUT, ident, image, 112, "aligned")
    return _jpeg(r.image, quality), r.mask


def pair_plan(n_pairs: int, seed: int,
              n_identities: int | None = None) -> list[tuple[int, int, bool]]:
    """(identity a, identity b, same) of each pair of ``write_pairs_bin``: pairs alternate same /
    different, so every contiguous fold of the 10-fold protocol holds both kinds."""
    n_ids = (max(2, n_pairs // 2) if n_identities is None
             else checks.count(n_identities, "n_identities", minimum=2))
    plan = []
    for p in range(n_pairs):
        rng = keyed_rng(seed, _PAIR_STREAM, p)
        a = int(rng.integers(n_ids))
        same = p % 2 == 0
        b = a if same else int((a + 1 + rng.integers(n_ids - 1)) % n_ids)
        plan.append((a, b, same))
    return plan


def write_pairs_bin(path: str | os.PathLike, n_pairs: int, seed: int, *,
                    n_identities: int | None = None, quality: int = 95, workers: int | None = None,
                    progress: bool = False) -> Path:
    """Verification pack (.bin as insightface: pickle of (2P JPEG bytes, P bools)) of held-out
    identities.

    Identities come from the HELDOUT stream, disjoint from every ``write_rec`` identity whatever the
    seeds (see the module docstring); pair ``p`` shows images ``2p`` and ``2p+1`` (``pair_plan``
    says whose). Also writes the masks where readers look for them (``common.masks_path_for``:
    ``x.bin`` -> ``x.masks.npy``): uint8 [2P, 112, 112] exact masks in image order.
    """
    checks.count(n_pairs, "n_pairs")
    path = Path(path)
    plan = pair_plan(n_pairs, seed, n_identities)
    jobs = []
    for p, (a, b, _) in enumerate(plan):
        jobs += [(int(seed), a, 2 * p, quality), (int(seed), b, 2 * p + 1, quality)]
    bins, masks = [], np.empty((2 * n_pairs, 112, 112), np.uint8)
    for k, (buf, mask) in enumerate(_pmap(_pair_job, jobs, workers, path.name, progress)):
        bins.append(buf)
        masks[k] = mask
    issame = [same for _, _, same in plan]
    with ExitStack() as files:  # the pack is renamed last
        pack_tmp, masks_tmp = (files.enter_context(atomic_output(p))
                               for p in (path, masks_path_for(path)))
        with open(pack_tmp, "wb") as f:
            pickle.dump((bins, issame), f, protocol=4)
        with open(masks_tmp, "wb") as f:
            np.save(f, masks)
        path.unlink(missing_ok=True)
    return path


def _fs_job(job: tuple[str, int, int, int, float]) -> int:
    out, seed, frame_id, size, missing_25 = job
    r = render_image(seed, PARSER, frame_id, 0, size, "loose")
    with_25 = int(keyed_rng(seed, PARSER, frame_id, 0, 25).random() >= missing_25)
    stem = os.path.join(out, f"{frame_id:06d}")
    cv2.imwrite(stem + ".png", np.ascontiguousarray(r.image[..., ::-1]))
    cv2.imwrite(stem + "_seg.png", L25_TO_FS19[r.mask])
    np.savetxt(stem + "_ldmks.txt", r.landmarks, fmt="%.4f")
    if with_25:
        cv2.imwrite(os.path.join(out, "labels_25", f"{frame_id:06d}_seg.png"), r.mask)
        cv2.imwrite(os.path.join(out, "labels_9", f"{frame_id:06d}_seg.png"),
                    np.where(r.mask <= max(SKIN_IDS), r.mask, 0).astype(np.uint8))
    return with_25


def write_facesynthetics(out_dir: str | os.PathLike, n_images: int, seed: int, *, size: int = 512,
                         missing_25: float = 0.12, workers: int | None = None,
                         progress: bool = False) -> Path:
    """FaceSynthetics-layout folder with the FSErasing 25-class labels.

    ``{id:06d}.png`` (size x size RGB), ``{id:06d}_seg.png`` (19 classes), ``{id:06d}_ldmks.txt``
    (70 rows ``x y``: 68 iBUG points, image-left pupil, image-right pupil),
    ``labels_25/{id:06d}_seg.png``, ``labels_9/`` (the nine skin sub-regions) and ``anno_list.csv``
    (frame_id,with_25). The 19-class map is the 25-class one with the skin parts merged, so its
    RIGHT_EYE, RIGHT_BROW and RIGHT_EAR lie on the image-right like the 25-class right_eye,
    right_brow, right_ear (``labels.SIDE``). About ``missing_25`` of the frames get with_25=0 and no
    25-class label, as frames where the released labels failed. Frame ``i`` is identity ``i`` of the
    PARSER stream (its image 0, see ``image_spec``). Returns ``out_dir``.
    """
    checks.count(n_images, "n_images")
    checks.probability(missing_25, "missing_25")
    out = Path(out_dir)
    (out / "labels_25").mkdir(parents=True, exist_ok=True)
    (out / "labels_9").mkdir(parents=True, exist_ok=True)
    # frames are rewritten in place: not whole until the list is back
    (out / "anno_list.csv").unlink(missing_ok=True)
    jobs = [(str(out), int(seed), i, size, missing_25) for i in range(n_images)]
    flags = list(_pmap(_fs_job, jobs, workers, "facesynthetics", progress))
    with atomic_output(out / "anno_list.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame_id", "with_25"])
        w.writerows(enumerate(flags))
    return out


def _ijb_job(job: tuple[str, int, int, int, int, int]) -> tuple[np.ndarray, float, np.ndarray]:
    out, seed, ident, media, frame, name = job
    idn = identity_of(seed, HELDOUT, ident)
    # one video / photo
    base = sample_look(idn, keyed_rng(seed, HELDOUT, ident, 10_000_000 + media))
    rng = keyed_rng(seed, HELDOUT, ident, 10_000_000 + media, frame)
    look = replace(base, yaw=float(np.clip(base.yaw + rng.normal(0, 4), -45, 45)),
                   pitch=base.pitch + float(rng.normal(0, 2)),
                   noise_seed=int(rng.integers(2 ** 31)),
                   loose=(base.loose[0] * 0.7, base.loose[1] + float(rng.normal(0, 3)),
                          base.loose[2] + float(rng.normal(0, 0.02)),
                          base.loose[3] + float(rng.normal(0, 0.02))))
    size = int(rng.integers(140, 260))
    r = render(idn, look, size, "loose")
    cv2.imwrite(os.path.join(out, "loose_crop", f"{name}.jpg"),
                np.ascontiguousarray(r.image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
    p5 = five_points_from_68(r.landmarks)
    return p5, float(rng.uniform(0.5, 1.0)), align_mask(r.mask, p5)


@dataclass(frozen=True)
class IJBLayout:
    """The shape of an IJB-style set: ``identities`` (>= 2) x ``templates_per_identity`` templates x
    ``media_per_template`` media (videos) x ``images_per_media`` frames; every genuine template pair
    is listed, plus ``impostor_pairs`` different-identity pairs (all of them if None)."""
    identities: int = 20
    templates_per_identity: int = 3
    media_per_template: int = 2
    images_per_media: int = 2
    impostor_pairs: int | None = None

    def __post_init__(self) -> None:
        checks.count(self.identities, "identities", minimum=2)
        for name in ("templates_per_identity", "media_per_template", "images_per_media"):
            checks.count(getattr(self, name), name)
        if self.impostor_pairs is not None:
            checks.count(self.impostor_pairs, "impostor_pairs", minimum=0)


def write_ijb(out_dir: str | os.PathLike, name: str = "IJBC", layout: IJBLayout | None = None, *,
              seed: int = 0, workers: int | None = None, progress: bool = False) -> Path:
    """IJB-B/C-style 1:1 set of held-out synthetic faces (``layout``, default ``IJBLayout()``),
    readable by upstream eval_ijbc.py.

    ``meta/{t}_face_tid_mid.txt`` (``name tid mid``), ``meta/{t}_name_5pts_score.txt`` (``name x1 y1
    .. x5 y5 faceness``, same row order), ``meta/{t}_template_pair_label.txt`` (``t1 t2 label``,
    written last) with ``t`` = name.lower(); ``loose_crop/<n>.jpg`` are larger, non-aligned faces of
    varying size whose 5 points are the true landmark positions. Media are videos (frames share one
    look, jittered). ``gt_masks.npy`` (uint8 [N, 112, 112], rows in 5pts-file order) holds each
    image's exact mask aligned with its 5 points (``align.align_mask``), i.e. the mask of the face
    the protocol embeds.
    """
    t = name.lower()
    if t not in ("ijbc", "ijbb"):
        raise FSEError(f"name must be 'IJBC' or 'IJBB', got {name!r}")
    layout = layout or IJBLayout()
    out = Path(out_dir)
    (out / "meta").mkdir(parents=True, exist_ok=True)
    (out / "loose_crop").mkdir(parents=True, exist_ok=True)
    pair_file = out / "meta" / f"{t}_template_pair_label.txt"
    # images are rewritten in place: not whole until the pair list is back
    pair_file.unlink(missing_ok=True)
    jobs, rows = [], []
    tid = mid = 0
    owner = {}
    for i in range(layout.identities):
        for _ in range(layout.templates_per_identity):
            tid += 1
            owner[tid] = i
            for _ in range(layout.media_per_template):
                mid += 1
                for f in range(layout.images_per_media):
                    jobs.append((str(out / ""), int(seed), i, mid, f, len(jobs) + 1))
                    rows.append((f"{len(jobs)}.jpg", tid, mid))
    results = list(_pmap(_ijb_job, jobs, workers, name, progress))
    _write_text(out / "meta" / f"{t}_face_tid_mid.txt", (f"{n} {a} {b}\n" for n, a, b in rows))
    _write_text(out / "meta" / f"{t}_name_5pts_score.txt",
                (n + " " + " ".join(f"{v:.3f}" for v in p5.reshape(-1)) + f" {score:.4f}\n"
                 for (n, _, _), (p5, score, _) in zip(rows, results)))
    with atomic_output(out / "gt_masks.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, np.stack([m for _, _, m in results]))
    tids = sorted(owner)
    genuine = [(a, b) for a in tids for b in tids if a < b and owner[a] == owner[b]]
    impostor = [(a, b) for a in tids for b in tids if a < b and owner[a] != owner[b]]
    rng = keyed_rng(seed, _IJB_STREAM, 0)
    if layout.impostor_pairs is not None and layout.impostor_pairs < len(impostor):
        impostor = [impostor[k] for k in sorted(rng.choice(len(impostor), layout.impostor_pairs,
                                                           replace=False))]
    pairs = [(a, b, 1) for a, b in genuine] + [(a, b, 0) for a, b in impostor]
    order = rng.permutation(len(pairs))
    _write_text(pair_file, ("%d %d %d\n" % pairs[k] for k in order))
    return out


def _write_text(path: Path, lines: Iterable[str]) -> None:
    with atomic_output(path) as tmp, open(tmp, "w") as f:
        f.writelines(lines)
