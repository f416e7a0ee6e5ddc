"""Dataset benchmark: FSEMXFaceDataset with erasing on vs off (and vs arcface_torch's MXFaceDataset
pipeline), and what each DataLoader worker costs at WebFace42M scale under every start method.

    python benchmarks/dataset.py [--rec DIR] [--samples 3072] [--batch-size 128] [--repeats 5]
                                 [--runs 3] [--stages]
    python benchmarks/dataset.py --scale 1000000 [--workers 2]

Speed (default). One process, one thread (what a DataLoader worker gets), the same rec, the same
run. A worker's job per batch is timed as torch's fetcher does it: the dataset's ``__getitems__``
(or ``__getitem__`` per index where it has none), then ``default_collate``. ``--samples`` random
records are cut into batches; for each batch the variants take turns, ``--repeats`` times, and each
variant's best time per batch counts (interleaved at batch granularity, so a burst of load on a
shared machine hits all variants alike). Process CPU time. ``--runs`` repeats the whole measurement
and prints the spread of the ratios. Variants:

* ``fse p=1.0``: FSErasing as the reference (every sample erased, one random region, N(0,1) fill);
* ``fse p=0.5``: the config line of configs/README.md;
* ``off``: the same dataset with ``fse=None`` (decode, flip, normalise);
* ``fse p=0.0``: diagnostic, erasing on but never drawn (the per-batch cost of being on: one draw
  for the batch where ``off`` draws per sample);
* ``fse p=1.0, masks in RAM``: diagnostic, every mask's run stream inflated up front (splits the
  mask cache's crc32 + inflate from erasing's cost);
* ``upstream``: MXFaceDataset's pipeline reproduced: MXIndexedRecordIO.read_idx + unpack,
  ``mx.image.imdecode`` (mxnet when importable, else cv2 decode to RGB), torchvision
  ToPILImage -> RandomHorizontalFlip -> ToTensor -> Normalize(0.5, 0.5).

A single ``dataset[i]`` (one sample, what a user trying the dataset calls) is timed for off, p=0.5
and p=1.0 the same way. ``--stages`` adds the erased path's stages at p=1.0, each timed alone on the
same batches right after their images were decoded (caches as the dataset leaves them, so each stage
pays its own misses: their sum is more than the path costs): reading the masks (``get_runs_batch``,
and ``get_runs`` per key as before), ``MaskRuns``, drawing the classes (``get_params``), finding the
pixels, the reference's N(0,1) draw, and the whole erase (find, fill, write). The dataset itself
does all but the write before decoding and writes each image right after decoding it, so its write
costs less than the stage's, which writes into images decoded a batch ago.

With ``--mxnet-python PY`` (an interpreter that imports mxnet, e.g. a venv with numpy 1.23.5 and no
torch), ``upstream (mxnet)`` adds mxnet's own read_idx + unpack + imdecode().asnumpy(), timed in a
child process under PY, to the torchvision transform timed here on the same images (dataset only).

Without ``--rec``, a synthetic rec (fse_plugin.synth, 112x112 JPEG q95 as insightface) and a mask
cache of its exact masks are written to a temporary dir. With ``--rec``, ``<rec>/fse_masks`` (or
``--masks``) must exist.

Scale (``--scale N``). A rec of N records (each a 1x1 PNG: the index, not the pixels, is what grows)
and its mask cache are written to a temporary dir, and a small one of 1,000 records beside it. For
each start method (fork, forkserver, spawn) a DataLoader with ``--workers`` workers reads 8 batches
with erasing on: the bytes a worker receives (the dataset pickled as multiprocessing pickles it),
and each worker's memory from /proc (RSS; USS, the pages only it holds; PSS), the largest over the
batches. It uses only the dataset's constructor, so it also measures older versions of the package.
"""
from __future__ import annotations

import argparse
import numbers
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, default_collate  # noqa: E402
from torchvision import transforms  # noqa: E402

from fse_plugin import recordio  # noqa: E402
from fse_plugin.dataset import FSEMXFaceDataset  # noqa: E402
from fse_plugin.erasing import MaskRuns  # noqa: E402
from fse_plugin.maskcache import RunsBatch  # noqa: E402
from fse_plugin.maskcache.codec import join_runs  # noqa: E402

try:
    import mxnet as mx
    MX = "mxnet"
except ImportError:
    import fse_plugin.mxcompat as mx  # fse_plugin.recordio + cv2 decode, RGB like mx.image.imdecode
    MX = "fse_plugin.mxcompat (mxnet not importable)"

ON_OFF = ("fse p=1.0", "fse p=0.5", "fse p=1.0, masks in RAM", "fse p=0.0")


class UpstreamPipeline(torch.utils.data.Dataset):
    """arcface_torch MXFaceDataset's per-sample work, for timing (keys from fse_plugin's
    image_index)."""

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


def _mxnet_upstream(python: str, rec: Path, keys: list[int], repeats: int,
                    transform) -> tuple[float, str]:
    """samples/s of mxnet read + decode (child under ``python``) plus the torchvision transform
    (here)."""
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
    rec = synth.write_rec(tmp / "rec", n_identities=identities, images_per_identity=per_identity,
                          seed=0)
    gt = np.load(rec / "gt_masks.npz")
    maskcache.build_from_labels(rec, gt["keys"], gt["masks"], progress=False)
    return rec


def _fetch(ds, indices: list[int]) -> tuple[float, float]:
    """CPU seconds of one worker batch (torch's _MapDatasetFetcher): the dataset's ``__getitems__``
    if it has one, else ``__getitem__`` per index; then default_collate. Returns (dataset,
    collate)."""
    t0 = time.process_time()
    getitems = getattr(ds, "__getitems__", None)
    samples = getitems(indices) if getitems else [ds[i] for i in indices]
    t1 = time.process_time()
    default_collate(samples)
    return t1 - t0, time.process_time() - t1


class InMemoryMasks:
    """Diagnostic: every mask's run stream inflated up front, to split the cache's crc32 + inflate
    from erasing's cost (``get_runs_batch`` as the cache's, less those)."""

    def __init__(self, cache, keys):
        self.height, self.width = cache.height, cache.width
        self.streams = {int(k): b"".join(a.tobytes() for a in cache.get_runs(int(k))) for k in keys}

    def get_runs_batch(self, keys):
        values, lengths, counts, _ = join_runs([self.streams[k] for k in keys.tolist()])
        return RunsBatch(values, lengths, counts, list(range(len(counts))), [], {}, self.height,
                         self.width)


def _variants(rec: Path, masks: str) -> dict:
    variants = {
        "fse p=1.0": FSEMXFaceDataset(rec, 0, fse=dict(masks=masks, p=1.0)),
        "fse p=0.5": FSEMXFaceDataset(rec, 0, fse=dict(masks=masks, p=0.5)),
        "off": FSEMXFaceDataset(rec, 0),
    }
    variants["fse p=0.0"] = FSEMXFaceDataset(rec, 0, fse=dict(masks=masks, p=0.0))
    variants["fse p=1.0, masks in RAM"] = FSEMXFaceDataset(rec, 0, fse=dict(masks=masks, p=1.0))
    variants["fse p=1.0, masks in RAM"].masks = InMemoryMasks(variants["fse p=1.0"].masks,
                                                              variants["off"].keys)
    variants["upstream"] = UpstreamPipeline(str(rec), variants["off"].keys)
    return variants


def _stages(ds: FSEMXFaceDataset, off: FSEMXFaceDataset, batches: list[list[int]],
            repeats: int) -> dict[str, float]:
    """CPU us per sample of the erased path's stages at p=1.0 (half the images flipped), each timed
    alone on the same batches right after the batch's images were decoded (``off``), so the caches
    are as the dataset leaves them; best of ``repeats`` per batch."""
    from fse_plugin.erasing.engines import erase_numpy
    from fse_plugin.maskruns import erased_pixels
    cache, H, W = ds.masks, ds.masks.height, ds.masks.width
    rng = np.random.default_rng(1)
    best: dict[str, list[float]] = {}

    def timed(name: str, i: int, fn):
        t = time.process_time()
        out = fn()
        row = best.setdefault(name, [float("inf")] * len(batches))
        row[i] = min(row[i], time.process_time() - t)
        return out

    for _ in range(repeats):
        for i, batch in enumerate(batches):
            keys = ds.keys[batch]
            samples = [s.numpy() for s, _ in off.__getitems__(batch)]
            timed("read: MaskCache.get_runs per key", i,
                  lambda: [cache.get_runs(k) for k in keys.tolist()])
            masks = timed("read: MaskCache.get_runs_batch", i, lambda: cache.get_runs_batch(keys))
            runs = timed("runs: MaskRuns.joined", i,
                         lambda: MaskRuns.joined(masks.values, masks.lengths,
                                                 np.array(masks.counts), H, W))
            flip = rng.random(len(keys)) < 0.5
            selected = timed("choose: FSErasing.get_params", i,
                             lambda: ds.erasing.get_params(runs, mirrored=flip).numpy())
            rows = np.flatnonzero(selected.any(1)).tolist()
            pix, _, _ = timed("find: erased_pixels", i,
                              lambda: erased_pixels(runs, selected, rows, flip, False))
            timed("fill: torch.randn of the reference", i,
                  lambda: torch.randn((3, len(pix))).numpy())
            timed("erase: find + fill + write", i,
                  lambda: erase_numpy(samples, runs, selected, ds.erasing.fill, None, flip))
    n = sum(len(b) for b in batches)
    us = {name: 1e6 * sum(v) / n for name, v in best.items()}
    us["write (erase - find - fill)"] = (us["erase: find + fill + write"]
                                         - us["find: erased_pixels"]
                                         - us["fill: torch.randn of the reference"])
    return us


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


def _single(variants: dict, indices: list[int], repeats: int) -> dict[str, float]:
    """CPU seconds per ``dataset[i]`` of off / p=0.5 / p=1.0, best of ``repeats`` per chunk of 64,
    interleaved."""
    names = ("off", "fse p=0.5", "fse p=1.0")
    chunks = [indices[s:s + 64] for s in range(0, len(indices), 64)]
    best = {name: [float("inf")] * len(chunks) for name in names}
    for r in range(repeats):
        for c, chunk in enumerate(chunks):
            for name in names[r % 3:] + names[:r % 3]:
                ds, t = variants[name], time.process_time()
                for i in chunk:
                    ds[i]
                best[name][c] = min(best[name][c], time.process_time() - t)
    return {name: sum(v) / len(indices) for name, v in best.items()}


def _report(dataset: dict[str, float], worker: dict[str, float], single: dict[str, float],
            n: int) -> dict:
    print(f"  {'variant':26s} {'worker (fetch + collate)':>26s} {'dataset only':>22s}")
    for name in dataset:
        w = f"{n / worker[name]:8.0f}/s {1e6 * worker[name] / n:6.0f} us" if name in worker else ""
        print(f"  {name:26s} {w:>26s} {n / dataset[name]:8.0f}/s {1e6 * dataset[name] / n:6.0f} us")
    print("  single dataset[i]: "
          + ", ".join(f"{name} {1e6 * t:.0f} us" for name, t in single.items()))
    ratios = {}
    for mode, t in (("worker", worker), ("dataset only", dataset)):
        on_off = {k: t["off"] / t[k] for k in ON_OFF}
        vs_up = {k: t["upstream"] / t[k] for k in ("off", "fse p=1.0", "fse p=0.5")}
        print(f"[{mode}] erasing on / off (goals: p=1.0 >= 0.9, p=0.5 >= 0.95): "
              f"p=1.0 {on_off['fse p=1.0']:.2f}, "
              f"p=0.5 {on_off['fse p=0.5']:.2f} "
              f"(p=1.0, masks in RAM: {on_off['fse p=1.0, masks in RAM']:.2f}; "
              f"p=0.0: {on_off['fse p=0.0']:.2f}); "
              f"FSEMXFaceDataset / upstream: off {vs_up['off']:.2f}, "
              f"p=1.0 {vs_up['fse p=1.0']:.2f}, "
              f"p=0.5 {vs_up['fse p=0.5']:.2f}")
        ratios[mode] = on_off
    if "upstream (mxnet)" in dataset:
        mx_t = dataset["upstream (mxnet)"]
        print(f"[dataset only] FSEMXFaceDataset / upstream with mxnet: "
              f"off {mx_t / dataset['off']:.2f}, "
              f"p=1.0 {mx_t / dataset['fse p=1.0']:.2f}, p=0.5 {mx_t / dataset['fse p=0.5']:.2f}")
    print(f"[single dataset[i]] off / on: p=0.5 {single['off'] / single['fse p=0.5']:.2f}, "
          f"p=1.0 {single['off'] / single['fse p=1.0']:.2f}")
    ratios["single"] = {k: single["off"] / single[k] for k in ("fse p=0.5", "fse p=1.0")}
    return ratios


def _spread(runs: list[dict]) -> None:
    print(f"spread over {len(runs)} runs (min / median / max of off-time / on-time):")
    for mode in ("worker", "dataset only", "single"):
        for name in ("fse p=1.0", "fse p=0.5"):
            v = [r[mode][name] for r in runs]
            print(f"  {mode:13s} {name}: {min(v):.2f} / {statistics.median(v):.2f} / {max(v):.2f}  "
                  f"({', '.join(f'{x:.2f}' for x in v)})")


def speed(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(args.rec) if args.rec else _synth(Path(tmp), args.identities, args.per_identity)
        variants = _variants(rec, args.masks or str(rec / "fse_masks"))
        n = len(variants["off"])
        print(f"rec: {rec} ({n} images), {args.samples} samples in batches of "
              f"{args.batch_size}, best of "
              f"{args.repeats} per batch, 1 thread, CPU time; upstream decode via {MX}; python "
              f"{sys.version.split()[0]}, torch {torch.__version__}")
        runs = []
        for run in range(args.runs):
            order = np.random.default_rng(run).integers(0, n, args.samples).tolist()
            batches = [order[s:s + args.batch_size] for s in range(0, len(order), args.batch_size)]
            torch.manual_seed(0)
            _measure(variants, batches[:2], 1)  # warm the page cache and code paths
            dataset, worker = _measure(variants, batches, args.repeats)
            single = _single(variants, order[:512], args.repeats)
            if args.mxnet_python and run == 0:
                keys = [int(variants["off"].keys[i]) for i in order]
                rate, version = _mxnet_upstream(args.mxnet_python, rec, keys, args.repeats,
                                                variants["upstream"].transform)
                dataset["upstream (mxnet)"] = len(order) / rate
                print(f"mxnet {version} via {args.mxnet_python}")
            print(f"run {run + 1} of {args.runs} (load average {os.getloadavg()[0]:.1f}):")
            runs.append(_report(dataset, worker, single, len(order)))
            if args.stages:
                for name, us in _stages(variants["fse p=1.0"], variants["off"], batches,
                                        args.repeats).items():
                    print(f"  stage {name:36s} {us:6.1f} us/sample")
        _spread(runs)


# ---------------------------------------------------------------------------------------- scale
def _tiny_rec(out: Path, n: int) -> Path:
    """A rec of ``n`` records (1x1 PNG each, labels key // 10) and its mask cache (class 0
    everywhere)."""
    import cv2

    from fse_plugin import maskcache
    out.mkdir(parents=True)
    png = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes()
    rec = recordio.MXIndexedRecordIO(str(out / "train.idx"), str(out / "train.rec"), "w")
    for key in range(n):
        rec.write_idx(key, recordio.pack(recordio.IRHeader(0, float(key // 10), key, 0), png))
    rec.close()
    maskcache.build_from_labels(out, np.arange(n), np.zeros((n, 1, 1), np.uint8), progress=False)
    return out


def _memory() -> dict[str, float]:
    """This process's RSS, PSS and USS in MiB (from /proc)."""
    fields = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return {"rss": fields["Rss"], "pss": fields["Pss"],
            "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}


def _collate_with_memory(samples):
    """default_collate, plus the worker's id and memory (collate runs in the worker)."""
    info = torch.utils.data.get_worker_info()
    return default_collate(samples), (info.id, _memory())


def _scale_one(rec: Path, method: str, workers: int, batches: int = 8) -> dict:
    from multiprocessing import get_context
    from multiprocessing.reduction import ForkingPickler
    ds = FSEMXFaceDataset(rec, 0, fse=dict(p=1.0))
    handed = len(bytes(ForkingPickler.dumps(ds)))
    loader = DataLoader(ds, batch_size=128, num_workers=workers,
                        multiprocessing_context=get_context(method),
                        collate_fn=_collate_with_memory, sampler=torch.utils.data.RandomSampler(ds))
    peak: dict[int, dict[str, float]] = {}
    t = time.perf_counter()
    for i, (_, (wid, mem)) in enumerate(loader):
        peak[wid] = {k: max(v, peak.get(wid, {}).get(k, 0.0)) for k, v in mem.items()}
        if i + 1 == batches:
            break
    return {"records": len(ds), "handed": handed, "seconds": time.perf_counter() - t,
            "workers": peak,
            "main": _memory()}


def scale(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        recs = {n: _tiny_rec(Path(tmp) / f"rec{n}", n) for n in (1000, args.scale)}
        print(f"wrote recs of {', '.join(map(str, recs))} records and their caches in "
              f"{time.perf_counter() - t:.0f} s; "
              f"python {sys.version.split()[0]}, torch {torch.__version__}, fse_plugin from "
              f"{Path(sys.modules['fse_plugin'].__file__).parent}")
        print(f"  {'start method':12s} {'records':>9s} {'worker receives':>16s} "
              f"{'per worker: RSS / PSS / USS (MiB, max over 8 batches)':>56s}")
        for method in ("fork", "forkserver", "spawn"):
            for n, rec in recs.items():
                r = _scale_one(rec, method, args.workers)
                mem = "; ".join(f"{m['rss']:6.0f} / {m['pss']:5.0f} / {m['uss']:5.0f}"
                                for _, m in sorted(r["workers"].items()))
                print(f"  {method:12s} {r['records']:9d} {r['handed']:>10,d} bytes   {mem}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rec", help="rec dir (train.rec/train.idx); default: a synthetic one")
    ap.add_argument("--masks", help="mask cache (default <rec>/fse_masks)")
    ap.add_argument("--identities", type=int, default=100)
    ap.add_argument("--per-identity", type=int, default=20)
    ap.add_argument("--samples", type=int, default=3072, help="samples per variant and round")
    ap.add_argument("--batch-size", type=int, default=128,
                    help="per-GPU batch (arcface_torch's configs: 128)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3,
                    help="whole measurements, for the spread of the ratios")
    ap.add_argument("--mxnet-python",
                    help="interpreter with mxnet for the 'upstream (mxnet)' figure")
    ap.add_argument("--stages", action="store_true",
                    help="also time the erased path's stages alone")
    ap.add_argument("--scale", type=int,
                    help="instead: workers' memory for a rec of this many records")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of --scale")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import cv2
    cv2.setNumThreads(1)
    scale(args) if args.scale else speed(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
