"""Dataset benchmark: FSEMXFaceDataset with erasing on vs off, and vs arcface_torch's MXFaceDataset pipeline.

    python benchmarks/dataset.py [--rec DIR] [--samples 3072] [--batch-size 128] [--repeats 5]

One process, one thread (what a DataLoader worker gets), the same rec, the same run. A worker's
job per batch is timed as torch's fetcher does it: the dataset's ``__getitems__`` (or
``__getitem__`` per index where it has none), then ``default_collate``. ``--samples`` random
records are cut into batches; for each batch the variants take turns, ``--repeats`` times, and
each variant's best time per batch counts (interleaved at batch granularity, so a burst of load on
a shared machine hits all variants alike). Process CPU time. Variants:

* ``fse p=1.0``: FSErasing as the reference (every sample erased, one random region, N(0,1) fill);
* ``fse p=0.5``: the config line of configs/README.md;
* ``off``: the same dataset with ``fse=None`` (decode, flip, normalise);
* ``fse p=1.0, masks in RAM``: diagnostic, every mask's runs decoded up front (splits the mask
  cache's inflate from erasing's cost);
* ``fse p=1.0 / p=0.5, whole masks``: the erased path before masks were read as runs (each mask
  expanded as ``MaskCache.get`` does, erased through the whole-mask form of ``select_batch`` /
  ``erase_batch_``), for before/after in the same run;
* ``upstream``: MXFaceDataset's pipeline reproduced: MXIndexedRecordIO.read_idx + unpack,
  ``mx.image.imdecode`` (mxnet when importable, else cv2 decode to RGB), torchvision
  ToPILImage -> RandomHorizontalFlip -> ToTensor -> Normalize(0.5, 0.5).

``--stages`` adds per-stage costs of the erased path, timed alone on the same batches (best of
``--repeats`` per batch): reading the masks (``get`` vs ``get_runs``) and choosing + erasing
(whole masks, mirrored, vs ``MaskRuns``).

With ``--mxnet-python PY`` (an interpreter that imports mxnet, e.g. a venv with numpy 1.23.5 and no
torch), ``upstream (mxnet)`` adds mxnet's own read_idx + unpack + imdecode().asnumpy(), timed in a child
process under PY, to the torchvision transform timed here on the same images (dataset only).

Without ``--rec``, a synthetic rec (fse_plugin.synth, 112x112 JPEG q95 as insightface) and a mask
cache of its exact masks are written to a temporary dir. With ``--rec``, ``<rec>/fse_masks`` (or
``--masks``) must exist.
"""
from __future__ import annotations

import argparse
import numbers
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import default_collate  # noqa: E402
from torchvision import transforms  # noqa: E402

from fse_plugin import recordio  # noqa: E402
from fse_plugin.dataset import FSEMXFaceDataset  # noqa: E402
from fse_plugin.erasing import MaskRuns, erase_batch_  # noqa: E402
from fse_plugin.maskcache.codec import expand_runs  # noqa: E402

try:
    import mxnet as mx
    MX = "mxnet"
except ImportError:
    import fse_plugin.mxcompat as mx  # fse_plugin.recordio + cv2 decode, RGB like mx.image.imdecode
    MX = "fse_plugin.mxcompat (mxnet not importable)"


class UpstreamPipeline(torch.utils.data.Dataset):
    """arcface_torch MXFaceDataset's per-sample work, for timing (keys from fse_plugin's image_index)."""

    def __init__(self, root_dir: str, keys: np.ndarray):
        self.transform = transforms.Compose([
            transforms.ToPILImage(), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
            transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])])
        self.imgrec = mx.recordio.MXIndexedRecordIO(os.path.join(root_dir, "train.idx"),
                                                    os.path.join(root_dir, "train.rec"), "r")
        self.keys = keys

    def __getitem__(self, index: int):
        header, img = mx.recordio.unpack(self.imgrec.read_idx(int(self.keys[index])))
        label = header.label if isinstance(header.label, numbers.Number) else header.label[0]
        sample = self.transform(mx.image.imdecode(img).asnumpy())
        return sample, torch.tensor(label, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.keys)


MXNET_CHILD = """
import json, sys, time
import mxnet as mx
import numpy as np
rec = mx.recordio.MXIndexedRecordIO(sys.argv[1] + "/train.idx", sys.argv[1] + "/train.rec", "r")
order = json.loads(sys.argv[2])
best = 0.0
for _ in range(int(sys.argv[3])):
    t = time.process_time()
    for k in order:
        header, img = mx.recordio.unpack(rec.read_idx(k))
        sample = mx.image.imdecode(img).asnumpy()
    best = max(best, len(order) / (time.process_time() - t))
print(json.dumps({"rate": best, "version": mx.__version__}))
"""


def _mxnet_upstream(python: str, rec: Path, keys: list[int], repeats: int, transform) -> tuple[float, str]:
    """samples/s of mxnet read + decode (child under ``python``) plus the torchvision transform (here)."""
    import json
    import subprocess
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": "1"}
    run = subprocess.run([python, "-c", MXNET_CHILD, str(rec), json.dumps(keys), str(repeats)],
                         capture_output=True, text=True, env=env, check=True)
    child = json.loads(run.stdout.strip().splitlines()[-1])
    with recordio.open_rec(rec) as r:
        images = [r.read_image(k) for k in keys]
    best = 0.0
    for _ in range(repeats):
        t = time.process_time()
        for img in images:
            transform(img)
        best = max(best, len(images) / (time.process_time() - t))
    return 1 / (1 / child["rate"] + 1 / best), child["version"]


def _synth(tmp: Path, identities: int, per_identity: int) -> Path:
    from fse_plugin import maskcache, synth
    rec = synth.write_rec(tmp / "rec", n_identities=identities, images_per_identity=per_identity, seed=0)
    gt = np.load(rec / "gt_masks.npz")
    maskcache.build_from_labels(rec, gt["keys"], gt["masks"], progress=False)
    return rec


def _fetch(ds, indices: list[int]) -> tuple[float, float]:
    """CPU seconds of one worker batch (torch's _MapDatasetFetcher): the dataset's ``__getitems__`` if it
    has one, else ``__getitem__`` per index; then default_collate. Returns (dataset, collate)."""
    t0 = time.process_time()
    getitems = getattr(ds, "__getitems__", None)
    samples = getitems(indices) if getitems else [ds[i] for i in indices]
    t1 = time.process_time()
    default_collate(samples)
    return t1 - t0, time.process_time() - t1


class InMemoryMasks:
    """Diagnostic: every mask's runs decoded up front, to split the cache's inflate from erasing's cost."""

    def __init__(self, cache, keys):
        self.height, self.width = cache.height, cache.width
        self.runs = {int(k): tuple(np.copy(a) for a in cache.get_runs(int(k))) for k in keys}

    def get_runs(self, key: int):
        return self.runs[key]


class WholeMasks(FSEMXFaceDataset):
    """The erased path before masks were read as runs: each mask expanded (what ``MaskCache.get`` does after
    inflating) and erased through the whole-mask form of select_batch / erase_batch_ (mirrored)."""

    def _erase(self, samples, masks, flip, keys):
        rows = [b for b, m in masks.items() if m is not None]
        if rows:
            whole = [expand_runs(*masks[b], self.masks.height, self.masks.width) for b in rows]
            selected = self.erasing.select_batch(whole, mirrored=flip[rows]).numpy()
            erase_batch_([samples[b] for b in rows], whole, selected, self.erasing.fill, mirrored=flip[rows])


def _variants(rec: Path, masks: str) -> dict:
    variants = {
        "fse p=1.0": FSEMXFaceDataset(rec, 0, fse=dict(masks=masks, p=1.0)),
        "fse p=0.5": FSEMXFaceDataset(rec, 0, fse=dict(masks=masks, p=0.5)),
        "off": FSEMXFaceDataset(rec, 0),
        "fse p=1.0, whole masks": WholeMasks(rec, 0, fse=dict(masks=masks, p=1.0)),
        "fse p=0.5, whole masks": WholeMasks(rec, 0, fse=dict(masks=masks, p=0.5)),
    }
    variants["fse p=1.0, masks in RAM"] = FSEMXFaceDataset(rec, 0, fse=dict(masks=masks, p=1.0))
    variants["fse p=1.0, masks in RAM"].masks = InMemoryMasks(variants["fse p=1.0"].masks, variants["off"].keys)
    variants["upstream"] = UpstreamPipeline(str(rec), variants["off"].keys)
    return variants


def _stages(ds: FSEMXFaceDataset, batches: list[list[int]], repeats: int) -> dict[str, float]:
    """CPU us per sample of the erased path's stages, each timed alone (best of ``repeats`` per batch)."""
    cache, H, W = ds.masks, ds.masks.height, ds.masks.width
    rng = np.random.default_rng(1)
    best: dict[str, list[float]] = {}

    def timed(name: str, i: int, fn, *args) -> None:
        t = time.process_time()
        fn(*args)
        row = best.setdefault(name, [float("inf")] * len(batches))
        row[i] = min(row[i], time.process_time() - t)

    for _ in range(repeats):
        for i, batch in enumerate(batches):
            keys = [int(ds.keys[j]) for j in batch]
            timed("read: MaskCache.get (whole masks)", i, lambda: [cache.get(k) for k in keys])
            timed("read: MaskCache.get_runs", i, lambda: [cache.get_runs(k) for k in keys])
            runs = [cache.get_runs(k) for k in keys]
            whole = [expand_runs(*r, H, W) for r in runs]
            flip = rng.random(len(keys)) < 0.5
            samples = [torch.randn(3, H, W) for _ in keys]

            def erase_whole():
                selected = ds.erasing.select_batch(whole, mirrored=flip).numpy()
                erase_batch_(samples, whole, selected, ds.erasing.fill, mirrored=flip)

            def erase_runs():
                mr = MaskRuns(runs, H, W)
                selected = ds.erasing.select_batch(mr, mirrored=flip).numpy()
                erase_batch_(samples, mr, selected, ds.erasing.fill, mirrored=flip)
            timed("choose + erase: whole masks", i, erase_whole)
            timed("choose + erase: MaskRuns", i, erase_runs)
    n = sum(len(b) for b in batches)
    return {name: 1e6 * sum(v) / n for name, v in best.items()}


def _report(dataset: dict[str, float], worker: dict[str, float], n: int) -> None:
    print(f"  {'variant':26s} {'worker (fetch + collate)':>26s} {'dataset only':>22s}")
    for name in dataset:
        w = f"{n / worker[name]:8.0f}/s {1e6 * worker[name] / n:6.0f} us" if name in worker else ""
        print(f"  {name:26s} {w:>26s} {n / dataset[name]:8.0f}/s {1e6 * dataset[name] / n:6.0f} us")
    for mode, t in (("worker", worker), ("dataset only", dataset)):
        on_off = {k: t["off"] / t[k] for k in ("fse p=1.0", "fse p=0.5", "fse p=1.0, masks in RAM",
                                                "fse p=1.0, whole masks", "fse p=0.5, whole masks")}
        vs_up = {k: t["upstream"] / t[k] for k in ("off", "fse p=1.0", "fse p=0.5")}
        print(f"[{mode}] erasing on / off (goal >= 0.9): p=1.0 {on_off['fse p=1.0']:.2f}, "
              f"p=0.5 {on_off['fse p=0.5']:.2f}"
              f" (p=1.0, masks in RAM: {on_off['fse p=1.0, masks in RAM']:.2f}; whole masks, before: "
              f"p=1.0 {on_off['fse p=1.0, whole masks']:.2f}, p=0.5 {on_off['fse p=0.5, whole masks']:.2f}); "
              f"FSEMXFaceDataset / upstream "
              f"(goal >= 2): off {vs_up['off']:.2f}, p=1.0 {vs_up['fse p=1.0']:.2f}, p=0.5 {vs_up['fse p=0.5']:.2f}")
    if "upstream (mxnet)" in dataset:
        mx_t = dataset["upstream (mxnet)"]
        print(f"[dataset only] FSEMXFaceDataset / upstream with mxnet: off {mx_t / dataset['off']:.2f}, "
              f"p=1.0 {mx_t / dataset['fse p=1.0']:.2f}, p=0.5 {mx_t / dataset['fse p=0.5']:.2f}")


def _measure(variants: dict, batches: list[list[int]], repeats: int) -> tuple[dict, dict]:
    """Per variant, the sum over batches of its best (dataset, collate) time per batch."""
    best = {name: [(float("inf"), float("inf"))] * len(batches) for name in variants}
    for r in range(repeats):
        for i, batch in enumerate(batches):
            names = list(variants)
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
                d, c = _fetch(variants[name], batch)
                b = best[name][i]
                best[name][i] = (min(b[0], d), min(b[1], c))
    dataset = {name: sum(d for d, _ in v) for name, v in best.items()}
    worker = {name: sum(d + c for d, c in v) for name, v in best.items()}
    return dataset, worker


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rec", help="rec dir (train.rec/train.idx); default: a synthetic one")
    ap.add_argument("--masks", help="mask cache (default <rec>/fse_masks)")
    ap.add_argument("--identities", type=int, default=100)
    ap.add_argument("--per-identity", type=int, default=20)
    ap.add_argument("--samples", type=int, default=3072, help="samples per variant and round")
    ap.add_argument("--batch-size", type=int, default=128, help="per-GPU batch (arcface_torch's configs: 128)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mxnet-python", help="interpreter with mxnet for the 'upstream (mxnet)' figure")
    ap.add_argument("--stages", action="store_true", help="also time the erased path's stages alone")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import cv2
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(args.rec) if args.rec else _synth(Path(tmp), args.identities, args.per_identity)
        variants = _variants(rec, args.masks or str(rec / "fse_masks"))
        n = len(variants["off"])
        order = np.random.default_rng(0).integers(0, n, args.samples).tolist()
        batches = [order[s:s + args.batch_size] for s in range(0, len(order), args.batch_size)]
        torch.manual_seed(0)
        _measure(variants, batches[:2], 1)  # warm the page cache and code paths
        dataset, worker = _measure(variants, batches, args.repeats)
        if args.mxnet_python:
            keys = [int(variants["off"].keys[i]) for i in order]
            rate, version = _mxnet_upstream(args.mxnet_python, rec, keys, args.repeats, variants["upstream"].transform)
            dataset["upstream (mxnet)"] = len(order) / rate
            print(f"mxnet {version} via {args.mxnet_python}")
        print(f"rec: {rec} ({n} images), {args.samples} samples in batches of {args.batch_size}, best of "
              f"{args.repeats} per batch, 1 thread, CPU time; upstream decode via {MX}; python "
              f"{sys.version.split()[0]}, torch {torch.__version__}")
        _report(dataset, worker, len(order))
        if args.stages:
            for name, us in _stages(variants["fse p=1.0"], batches, args.repeats).items():
                print(f"  stage {name:36s} {us:6.1f} us/sample")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
