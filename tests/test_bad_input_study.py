"""`fse synth`, `fse demo` and `fse study` refuse bad input in one line naming the flag, before
loading or writing anything (the error contract of tests/badinput.py)."""
import pickle

import numpy as np
import pytest
import torch

from badinput import assert_user_error, run_fse

NO_CUDA = not torch.cuda.is_available()

CASES = [
    ("synth no identities", ["synth", "--ids", "0"], ["--ids"]),
    ("synth negative faces per id", ["synth", "--per-id", "-1"], ["--per-id"]),
    ("synth float identities", ["synth", "--ids", "2.5"], ["--ids"]),
    ("synth pack too small for 10 folds", ["synth", "--pairs", "5"], ["--pairs", "10"]),
    ("synth IJB of one identity", ["synth", "--ijb", "1"], ["--ijb"]),
    ("synth negative seed", ["synth", "--seed", "-1"], ["--seed"]),
    ("synth no workers", ["synth", "--num-workers", "0"], ["--num-workers"]),
    ("synth out is a file", ["synth", "--out", "{file}"], ["--out"]),
    ("demo probability above 1", ["demo", "--p", "1.5"], ["--p"]),
    ("demo device this machine lacks", ["demo", "--device", "cuda:99"], ["--device"]),
    ("demo unknown device", ["demo", "--device", "tpu"], ["--device"]),
    ("demo no identities", ["demo", "--ids", "0"], ["--ids"]),
    ("demo pack too small", ["demo", "--pairs", "4"], ["--pairs"]),
    ("demo negative threads", ["demo", "--threads", "-1"], ["--threads"]),
    ("demo negative safety stop", ["demo", "--recognizer-seconds", "-1"], ["--recognizer-seconds"]),
    ("demo out is a file", ["demo", "--out", "{file}"], ["--out"]),
    ("study no seeds", ["study", "--seeds", "0"], ["--seeds"]),
    ("study float steps", ["study", "--steps", "2.5"], ["--steps"]),
    ("study no width", ["study", "--width", "0"], ["--width"]),
    ("study pack too small", ["study", "--pairs", "9"], ["--pairs"]),
    ("study without off", ["study", "--variants", "fse"], ["'off'"]),
    ("study variant key out of range", ["study", "--variants", "off", "fse:p=2"], ["config.fse.p"]),
    ("study unknown variant", ["study", "--variants", "off", "cutout"], ["cutout"]),
    ("study variant twice", ["study", "--variants", "off", "fse", "fse"], ["'fse' given twice"]),
    ("study unknown probe", ["study", "--probes", "scarf"], ["--probes", "scarf"]),
    ("study probe twice", ["study", "--probes", "hat,hat"], ["--probes"]),
    ("study unknown masks", ["study", "--masks", "mine"], ["--masks"]),
    ("study device this machine lacks", ["study", "--device", "cuda:99"], ["--device"]),
    ("study no GPUs per run", ["study", "--nproc-per-node", "0"], ["--nproc-per-node"]),
    ("study rec that is not one", ["study", "--rec", "{dir}"], ["--rec", "train.idx"]),
    ("study rec without its mask cache", ["study", "--rec", "{rec}"], ["fse_masks"]),
    ("study mask cache without rec", ["study", "--mask-cache", "{dir}"], ["--mask-cache", "--rec"]),
    ("study masks with own rec",
     ["study", "--rec", "{rec}", "--mask-cache", "{dir}", "--masks", "gt"], ["--masks"]),
    ("study pack that is an npz", ["study", "--pack", "{npz}"], ["--pack"]),
    ("study pack without masks", ["study", "--pack", "{pack}"], ["--pack", "masks.npy"]),
    ("study parser that is no checkpoint", ["study", "--pack", "{pack}", "--parser", "{file}"],
     ["--parser"]),
    ("study parser without pack", ["study", "--parser", "{ckpt}"], ["--parser", "--pack"]),
    ("study out is a file", ["study", "--out", "{file}"], ["--out"]),
    ("study synthetic size with own rec", ["study", "--rec", "{rec}", "--ids", "50"],
     ["--ids", "--rec"]),
    ("study pack size with own pack", ["study", "--pack", "{pack}", "--pairs", "500"],
     ["--pairs", "--pack"]),
    ("study parser epochs without a parser", ["study", "--masks", "gt", "--parser-epochs", "3"],
     ["--parser-epochs", "--masks gt"]),
    ("study arcface trainer without CUDA", ["study", "--trainer", "arcface"],
     ["--trainer arcface", "CUDA"]),
]


@pytest.fixture
def files(tmp_path):
    """Paths the cases name: a text file, an empty folder, a rec without a mask cache, an npz, a
    pack."""
    (tmp_path / "notes.txt").write_text("not what was asked for\n")
    (tmp_path / "empty").mkdir()
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "train.idx").write_text("1\t0\n")
    np.savez(tmp_path / "arrays.npz", a=np.zeros(1))
    with open(tmp_path / "val.bin", "wb") as f:
        pickle.dump(([b""] * 20, [True, False] * 5), f, protocol=4)
    torch.save({}, tmp_path / "parser.pt")
    return {"file": tmp_path / "notes.txt", "dir": tmp_path / "empty", "rec": rec,
            "npz": tmp_path / "arrays.npz",
            "pack": tmp_path / "val.bin", "ckpt": tmp_path / "parser.pt", "out": tmp_path / "out"}


@pytest.mark.parametrize("argv,names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_in_one_line_before_any_work(argv, names, files, no_loading, monkeypatch, tmp_path):
    if "--trainer" in argv and not NO_CUDA:
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)  # the default output folders would land here
    argv = [a.format(**files) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(files["out"])]
    assert_user_error(run_fse(argv), *names)
    assert not files["out"].exists()
