"""Inputs of the golden-output test (tests/test_erasing_golden.py): faces, masks, selections and a
small rec with its mask cache, all made here from numpy seeds (nothing from synth), so the recorded
hashes depend only on the erasing code, cv2's JPEG codec and the rec/cache formats.

``erasing_golden.json`` holds hashes of the outputs recorded from main before the erasing engine was
rewritten (issue 23); the test asserts the same seeds still give the same bytes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import torch

GOLDEN = Path(__file__).with_name("erasing_golden.json")
SIZE = 112
FILLS = ("random", "random_1", "random_mix", "random_mix_sample", "region_mean", "image_mean", 0.25)


def digest(*arrays) -> str:
    """sha256 of the arrays' dtypes, shapes and bytes (tensors or numpy), in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:24]


def label_maps(n: int, seed: int, odd: bool = True) -> np.ndarray:
    """uint8 [n, 112, 112] maps of Voronoi cells with random class ids (sided ones included);
    ``odd``: a patch of 255 (no class) in map 0 and many one-pixel runs of left_eye (12) in map
    1."""
    rng = np.random.default_rng(seed)
    yx = np.stack(np.mgrid[:SIZE, :SIZE], -1).reshape(-1, 1, 2)
    maps = np.empty((n, SIZE, SIZE), np.uint8)
    for b in range(n):
        points = rng.integers(0, SIZE, (40, 2))
        ids = rng.integers(0, 25, 40)
        maps[b] = ids[((yx - points) ** 2).sum(-1).argmin(1)].reshape(SIZE, SIZE)
    if odd:
        maps[0, 5:9, 100:112] = 255
    if odd and n > 1:
        maps[1, ::2, ::3] = 12
    return maps


def faces(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """(normalised float32 images [n,3,112,112] in [-1, 1], uint8 masks [n,112,112])."""
    rng = np.random.default_rng(seed + 100)
    imgs = torch.from_numpy(rng.uniform(-1, 1, (n, 3, SIZE, SIZE)).astype(np.float32))
    return imgs, label_maps(n, seed)


def selections(n: int, seed: int) -> np.ndarray:
    """[n, 30] bool selections: none, one class, several, ids 25..29 (never in a map)."""
    rng = np.random.default_rng(seed)
    sel = rng.random((n, 30)) < rng.choice([0.0, 0.04, 0.15, 0.5], (n, 1))
    sel[0] = False
    sel[1, 12] = True
    return sel


def mask_runs(mask: np.ndarray, cut: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Runs of equal pixels of ``mask`` in row-major order, lengths split at ``cut`` (the cache's
    uint8 form: runs cross image rows, equal neighbouring runs occur)."""
    flat = np.asarray(mask).reshape(-1)
    start = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    lengths = np.diff(start, append=flat.size)
    pieces = (lengths + cut - 1) // cut
    values = np.repeat(flat[start], pieces)
    split = np.full(values.size, cut, np.int64)
    split[np.cumsum(pieces) - 1] = lengths - cut * (pieces - 1)
    return values, split.astype(np.uint8 if cut <= 255 else np.int64)


def write_rec(out: Path, n: int = 24, seed: int = 3) -> tuple[Path, np.ndarray, np.ndarray]:
    """An im2rec-layout rec of ``n`` smooth random 112x112 JPEG faces (keys 0..n-1, labels key // 3)
    and their masks. Returns (rec dir, keys, masks)."""
    from fse_plugin.recordio import IRHeader, MXIndexedRecordIO, pack_img
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    masks = label_maps(n, seed, odd=False)
    rec = MXIndexedRecordIO(str(out / "train.idx"), str(out / "train.rec"), "w")
    for key in range(n):
        small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
        img = cv2.resize(small, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        rec.write_idx(key, pack_img(IRHeader(0, float(key // 3), key, 0), img, quality=95))
    rec.close()
    return out, np.arange(n, dtype=np.int64), masks


DATASET_CASES = {
    **{f"p=1.0 fill={f!r} flip={flip}": dict(p=1.0, fill=f, flip=flip) for f in FILLS
       for flip in (0.0, 0.5, 1.0)},
    "p=0.5": dict(p=0.5),
    "p=0.5 n_erase=(1, 25) random_mix": dict(p=0.5, n_erase=(1, 25), fill="random_mix"),
    "n_erase=(0, 3)": dict(n_erase=(0, 3)),
    "n_erase=(1, 4) random_1": dict(n_erase=(1, 4), fill="random_1"),
    "n_erase=2 present_only": dict(n_erase=2, present_only=True),
    "n_erase=(1, 3) present_only random_mix": dict(n_erase=(1, 3), present_only=True,
                                                   fill="random_mix"),
    "present_only": dict(present_only=True),
    "fixed region_mean": dict(n_erase=["left_eye", "right_cheek"], fill="region_mean"),
    "classes n_erase=2 random_1": dict(classes=["left_eye", "right_eye", "hair"], n_erase=2,
                                       fill="random_1"),
    "classes=1..24 n_erase=(1, 3) present_only image_mean": dict(classes=list(range(1, 25)),
                                                                 n_erase=(1, 3), present_only=True,
                                                                 fill="image_mean"),
}
DATASET_BATCHES = ((0, list(range(0, 24, 2))), (1, [5]), (2, [7, 7, 20, 3, 11, 11]))

DRAW_CASES = {
    "default": dict(),
    "n_erase=2 present_only": dict(n_erase=2, present_only=True),
    "n_erase=(0, 4) present_only": dict(n_erase=(0, 4), present_only=True),
    "present_only": dict(present_only=True),
    "n_erase=(1, 3)": dict(n_erase=(1, 3)),
    "classes 1..24 n_erase=(0, 3) p=0.8": dict(n_erase=(0, 3), classes=list(range(1, 25)), p=0.8),
    "fixed": dict(n_erase=["nose", "left_eye"]),
    "classes n_erase=1": dict(classes=["nose", "mouth", "hair"]),
}


def record(path: Path = GOLDEN) -> None:
    """Write ``erasing_golden.json`` with the API of main before issue 23 (run once, on main)."""
    import tempfile

    from fse_plugin import maskcache
    from fse_plugin.dataset import FSEMXFaceDataset
    from fse_plugin.erasing import FSErasing, MaskRuns, erase, erase_batch, erase_batch_

    torch.set_num_threads(1)
    out: dict[str, str] = {}
    imgs, masks = faces()
    runs = MaskRuns([mask_runs(m) for m in masks], SIZE, SIZE)
    for fill in FILLS:
        for seed in range(4):
            sel = selections(len(masks), seed)
            mirrored = np.random.default_rng(seed).random(len(masks)) < 0.5
            g = torch.Generator().manual_seed(seed)
            out[f"cpu list mirrored {fill!r} {seed}"] = digest(erase_batch_(imgs.clone(),
                                                                            list(masks), sel, fill,
                                                                            g, mirrored=mirrored))
            g = torch.Generator().manual_seed(seed)
            out[f"cpu runs mirrored {fill!r} {seed}"] = digest(erase_batch_(imgs.clone(), runs, sel,
                                                                            fill, g,
                                                                            mirrored=mirrored))
            g = torch.Generator().manual_seed(seed)
            out[f"cpu tensor {fill!r} {seed}"] = digest(erase_batch_(imgs.clone(),
                                                                     torch.from_numpy(masks),
                                                                     torch.from_numpy(sel),
                                                                     fill, g))
            g = torch.Generator().manual_seed(seed)
            out[f"torch {fill!r} {seed}"] = digest(erase_batch(imgs, torch.from_numpy(masks),
                                                               torch.from_numpy(sel), fill, g))
        g = torch.Generator().manual_seed(7)
        out[f"single {fill!r}"] = digest(*[erase(imgs[b], torch.from_numpy(masks[b]),
                                                 [0, 12, 21][:b % 3 + 1], fill, g)
                                           for b in range(len(imgs))])
    for name, kw in DRAW_CASES.items():
        t = FSErasing(**kw)
        for form, m in (("tensor", torch.from_numpy(masks)), ("list", list(masks)), ("runs", runs)):
            g = torch.Generator().manual_seed(16)
            out[f"draw {name} {form}"] = digest(t.select_batch(m, g, mirrored=[True, False] * 4))
        g = torch.Generator().manual_seed(17)
        out[f"draw {name} tensor unmirrored"] = digest(t.select_batch(torch.from_numpy(masks), g))
        g = torch.Generator().manual_seed(18)
        out[f"call batch {name}"] = digest(t.batch(imgs, torch.from_numpy(masks), g))
        g = torch.Generator().manual_seed(19)
        out[f"call single {name}"] = digest(*[t(imgs[b], torch.from_numpy(masks[b]), g)
                                              for b in range(len(imgs))])
    with tempfile.TemporaryDirectory() as tmp:
        rec, keys, rec_masks = write_rec(Path(tmp) / "rec")
        cache = maskcache.build_from_labels(rec, keys, rec_masks, out=Path(tmp) / "cache",
                                            progress=False)
        for name, fse in {"off": None, **DATASET_CASES}.items():
            ds = FSEMXFaceDataset(rec, 0,
                                  fse=None if fse is None else dict(masks=str(cache), **fse))
            for seed, indices in DATASET_BATCHES:
                torch.manual_seed(seed)
                batch = ds.__getitems__(indices)
                out[f"dataset {name} {seed}"] = digest(*[x for s in batch for x in s],
                                                       torch.rand(1))
            torch.manual_seed(5)
            out[f"dataset {name} items"] = digest(*[x for i in (0, 3, 3) for x in ds[i]],
                                                  torch.rand(1))
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    record()
