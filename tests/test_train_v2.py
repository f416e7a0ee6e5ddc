"""Upstream arcface_torch's own ``train_v2.py``, patched by ``fse patch-arcface``, trains a few
steps and verifies: with and without ``config.fse``, with ``config.fse_cam``, on a synthetic rec and
val pack. On CPU through tests/arcface_harness.py (CPU stand-ins for its CUDA calls); with CUDA the
harness changes nothing (nccl, the GPU). ``FSE_TRAIN_NPROC=N`` launches it with torchrun on N
processes (N GPUs with CUDA; gloo processes without)."""
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fse_plugin import cli, maskcache, synth

HARNESS = Path(__file__).with_name("arcface_harness.py")
REPO = HARNESS.parents[1]

# r18 (what `fse eval verification --network r18` rebuilds; ~0.2 s per face forward on a loaded CPU,
# so the sizes are minimal): 24 faces / batch 8 = 3 steps, verification (and FS-CAM) at step 3, loss
# logged at steps 2 and 3 (CallBackLogging logs from its second call on). 20 pairs: 10 folds of one
# genuine and one impostor pair (upstream divides by zero on a fold without either).
CONFIG = textwrap.dedent("""
    from easydict import EasyDict as edict
    config = edict()
    config.margin_list = (1.0, 0.5, 0.0)
    config.network = "r18"
    config.output = {output!r}
    config.embedding_size = 128
    config.sample_rate = 1.0
    config.fp16 = False
    config.batch_size = {batch_size}
    config.lr = 0.1
    config.verbose = 3
    config.frequent = 1
    config.num_workers = 2
    config.rec = {rec!r}
    config.num_classes = 8
    config.num_image = 24
    config.num_epoch = 1
    config.warmup_epoch = 0
    config.val_targets = ["synth_val"]
""")


@pytest.fixture(scope="module")
def patched(arcface_torch_dir, tmp_path_factory) -> Path:
    tree = tmp_path_factory.mktemp("insightface") / "arcface_torch"
    shutil.copytree(arcface_torch_dir, tree)
    assert cli.main(["patch-arcface", str(tree)]) == 0
    return tree


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Path:
    """8 identities x 3 faces, their mask cache at <rec>/fse_masks, a val pack <rec>/synth_val.bin
    (+ masks)."""
    rec = synth.write_rec(tmp_path_factory.mktemp("rec"), n_identities=8, images_per_identity=3,
                          seed=3)
    gt = np.load(rec / "gt_masks.npz")
    maskcache.build_from_labels(rec, gt["keys"], gt["masks"], progress=False)
    synth.write_pairs_bin(rec / "synth_val.bin", n_pairs=20, seed=4)
    return rec


def scalars(tensorboard_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def train(tree: Path, rec: Path, name: str, out: Path, extra: str = "") -> tuple[str, dict]:
    """Run ``train_v2.py configs/NAME`` (the harness); returns (training.log, tensorboard
    scalars)."""
    nproc = int(os.environ.get("FSE_TRAIN_NPROC", "1"))
    (tree / "configs" / f"{name}.py").write_text(  # 8 per step in all
        CONFIG.format(output=str(out), rec=str(rec), batch_size=8 // nproc) + extra)
    launch = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                  "--standalone", f"--nproc_per_node={nproc}"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    run = subprocess.run([*launch, str(HARNESS), str(tree), f"configs/{name}"], capture_output=True,
                         text=True, timeout=600, env={**env, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return (out / "training.log").read_text(), scalars(out / "tensorboard")


def check_trained(tb: dict, out: Path) -> None:
    """Losses finite at the logged steps, model.pt written."""
    losses = [v for _, v in tb["loss"]]
    assert ([s for s, _ in tb["loss"]] == [2, 3]
            and all(math.isfinite(v) for v in losses)), tb["loss"]
    assert (out / "model.pt").is_file()


def evaluate(tree: Path, rec: Path, out: Path) -> dict:
    """`fse eval verification` on the model.pt train_v2 wrote (upstream's batch size 10)."""
    assert cli.main(["eval", "verification", "--network", "r18", "--embedding-size", "128",
                     "--weights", str(out / "model.pt"), "--arcface-dir", str(tree), "--pack",
                     str(rec / "synth_val.bin"), "--batch-size", "10", "--out", str(out / "eval"),
                     "--quiet"]) == 0
    (result,) = json.loads((out / "eval" / "verification.json").read_text())["results"]
    return result


def test_train_v2_with_config_fse_and_fse_cam(patched, rec, tmp_path):
    out = tmp_path / "fse"
    extra = ("config.fse = dict(p=0.5)\n"
             "config.fse_cam = dict(targets=['synth_val'], every=1, pairs=1)\n")
    log, tb = train(patched, rec, "tiny_fse", out, extra)
    # the FSE dataset fed it
    assert f"FSEMXFaceDataset(root_dir={str(rec)!r}" in log and "FSErasing(p=0.5" in log
    check_trained(tb, out)
    # the in-training verification ran (patched VAL@FAR)
    assert "[synth_val][3]Accuracy-Flip:" in log
    (step, accuracy), = tb["synth_val"]
    assert step == 3 and 0 <= accuracy <= 1
    cam = [tag for tag in tb if tag.startswith("fse_cam_synth_val/")]
    assert len(cam) > 5 and all(tb[tag][0][0] == 3 for tag in cam), sorted(tb)
    # the same model and protocol: the number logged in training
    result = evaluate(patched, rec, out)
    assert result["n_pairs"] == 20 and result["accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_train_v2_without_config_fse(patched, rec, tmp_path):
    """Upstream's own MXFaceDataset (through fse_plugin.mxcompat). No val target: verification does
    not depend on config.fse and is covered above; r18 forwards are most of this module's time."""
    out = tmp_path / "vanilla"
    log, tb = train(patched, rec, "tiny_vanilla", out, "config.val_targets = []\n")
    assert "FSEMXFaceDataset" not in log and "loss" in tb
    check_trained(tb, out)
    assert not [tag for tag in tb if tag.startswith(("fse_cam", "synth_val"))]
