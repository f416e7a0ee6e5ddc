"""FSEMXFaceDataset in DataLoader workers started every way (fork, forkserver, spawn): what a worker
receives does not grow with the rec, and upstream's own ``get_dataloader`` (patched arcface_torch)
trains on it with the same batches under each start method, the workers' log lines reaching the
training log."""
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import numpy as np
import torch

from erasing_golden import write_rec
from fse_plugin import cli, maskcache
from fse_plugin.dataset import FSEMXFaceDataset

HARNESS_DIR = Path(__file__).parent
REPO = HARNESS_DIR.parent


def _rec_with_cache(out: Path, n: int) -> tuple[Path, Path]:
    rec, keys, masks = write_rec(out, n=n)
    return rec, maskcache.build_from_labels(rec, keys, masks, progress=False)


def test_what_a_worker_receives_does_not_grow_with_the_rec(tmp_path):
    sizes = {}
    for n in (24, 600):
        rec, cache = _rec_with_cache(tmp_path / f"rec{n}", n)
        ds = FSEMXFaceDataset(rec, 0, fse=dict(masks=str(cache), p=0.5))
        # by value (plain pickle): the table's 24 bytes per record
        assert len(pickle.dumps(ds)) > 24 * n
        # what spawn and forkserver send: shared-memory handles
        handed = bytes(ForkingPickler.dumps(ds))
        sizes[n] = len(handed), len(handed) - len(bytes(ForkingPickler.dumps(ds.masks)))
        worker = pickle.loads(handed)  # maps the same memory
        assert np.array_equal(worker.keys, ds.keys) and np.array_equal(worker.labels, ds.labels)
        for seed in (0, 1):
            torch.manual_seed(seed)
            a = ds.__getitems__([3, 1, n - 1])
            torch.manual_seed(seed)
            b = worker.__getitems__([3, 1, n - 1])
            assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert sizes[600][0] - sizes[24][0] < 600 - 24, sizes  # under a byte per record (it was 34)
    # all but the cache's manifest (one entry per chunk file)
    assert abs(sizes[600][1] - sizes[24][1]) < 64, sizes


def _damage_one_entry(cache: Path, masks: np.ndarray, i: int) -> None:
    blob = maskcache.encode_masks(masks[i:i + 1])[0]
    chunk = next((cache / "chunks").iterdir())
    data = chunk.read_bytes()
    assert data.count(blob) == 1
    chunk.write_bytes(data.replace(blob, b"\xff" * len(blob)))


TRAIN = textwrap.dedent("""
    import hashlib, json, logging, multiprocessing, os, sys
    sys.path[:0] = [os.getcwd(), sys.argv[4]]
    import torch
    from arcface_harness import cpu_stand_ins
    if not torch.cuda.is_available():
        cpu_stand_ins()
    from dataset import get_dataloader  # upstream's, patched

    def main(rec, masks, log):
        root = logging.getLogger()  # as arcface_torch's init_logging
        root.setLevel(logging.INFO)
        handler = logging.FileHandler(log)
        handler.setFormatter(logging.Formatter("Training: %(asctime)s-%(message)s"))
        root.addHandler(handler)
        out = {}
        for method in ("fork", "forkserver", "spawn"):
            multiprocessing.set_start_method(method, force=True)
            torch.manual_seed(0)
            loader = get_dataloader(rec, 0, 8, seed=2048, num_workers=2,
                                    fse=dict(masks=masks, p=1.0))
            model = torch.nn.Linear(3 * 112 * 112, 12)
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            digests, losses = [], []
            for img, label in loader:
                loss = torch.nn.functional.cross_entropy(model(img.flatten(1)), label)
                opt.zero_grad()
                loss.backward()
                opt.step()
                digests.append(hashlib.sha256(img.numpy().tobytes()
                                              + label.numpy().tobytes()).hexdigest())
                losses.append(loss.item())
            root.info("done %s", method)
            out[method] = dict(digests=digests, losses=losses, damaged=loader.dataset.damaged_masks)
        print(json.dumps(out))

    if __name__ == "__main__":
        main(*sys.argv[1:4])
""")


def test_upstream_get_dataloader_trains_under_every_start_method(arcface_torch_dir, synth_rec,
                                                                 synth_cache, tmp_path):
    tree = tmp_path / "arcface_torch"
    shutil.copytree(arcface_torch_dir, tree)
    assert cli.main(["patch-arcface", str(tree)]) == 0
    cache = Path(shutil.copytree(synth_cache, tmp_path / "fse_masks"))
    gt = np.load(synth_rec / "gt_masks.npz")
    _damage_one_entry(cache, gt["masks"], 10)
    (tree / "train_fse.py").write_text(TRAIN)
    log = tmp_path / "training.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    run = subprocess.run([sys.executable, "train_fse.py", str(synth_rec), str(cache), str(log),
                          str(HARNESS_DIR)], cwd=tree, capture_output=True, text=True, timeout=600,
                         env={**env, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr[-4000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    fork = out["fork"]
    assert len(fork["digests"]) == 9 and all(np.isfinite(fork["losses"])) and fork["damaged"] == 1
    assert out["forkserver"] == fork and out["spawn"] == fork  # the same batches, losses and counts
    lines = log.read_text().splitlines()
    # the settings line, each run
    assert sum("FSEMXFaceDataset(root_dir=" in line for line in lines) == 3
    damaged = [i for i, line in enumerate(lines) if "damaged mask" in line]
    done = [i for i, line in enumerate(lines) if "-done " in line]
    # from a worker, in every run
    assert len(damaged) == 3 and all(d < e for d, e in zip(damaged, done))
