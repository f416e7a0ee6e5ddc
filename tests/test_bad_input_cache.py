"""Bad input to ``fse cache build|info|verify`` and ``fse parser train|eval``: each refused in one
line naming the flag, file or key, exit status 2, before any model or image is loaded, and a refused
build writes nothing."""
from pathlib import Path

import numpy as np
import pytest
import torch

from badinput import assert_user_error, run_fse
from test_parser import write_fake_facesynthetics

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
BUILD = ["cache", "build", "--rec", "{rec}", "--out", "{out}"]
FROM_PARSER = [*BUILD, "--parser", "{ckpt}"]
FROM_LABELS = [*BUILD, "--from-labels", "{labels}"]
TRAIN = ["parser", "train", "--data", "{fs}", "--out", "{out}"]
EVAL = ["parser", "eval", "--data", "{fs}", "--parser", "{ckpt}"]

CASES = [  # (id, argv with {placeholders}, what the one line must name)
    ("build batch size 0", [*FROM_PARSER, "--batch-size", "0"], ["--batch-size"]),
    ("build batch size -3", [*FROM_PARSER, "--batch-size", "-3"], ["--batch-size", "-3"]),
    ("build batch size 2.5", [*FROM_PARSER, "--batch-size", "2.5"], ["--batch-size", "2.5"]),
    ("build chunk size 0", [*FROM_LABELS, "--chunk-size", "0"], ["--chunk-size"]),
    ("build decode workers -1", [*FROM_PARSER, "--num-workers", "-1"], ["--num-workers"]),
    ("build encode workers -2", [*FROM_PARSER, "--encode-workers", "-2"], ["--encode-workers"]),
    pytest.param("build cuda without CUDA", [*FROM_PARSER, "--device", "cuda"],
                 ["--device", "cuda"], marks=NO_CUDA),
    ("build unknown device", [*FROM_PARSER, "--device", "tpu"], ["--device", "tpu"]),
    ("build unknown precision", [*FROM_PARSER, "--precision", "fp8"], ["--precision", "fp8"]),
    ("build labels from an image", [*BUILD, "--from-labels", "{image}"],
     ["--from-labels", "face.jpg"]),
    ("build labels holding class 99", [*BUILD, "--from-labels", "{labels99}"],
     ["labels99.npz", "class 99"]),
    ("build labels without masks", [*BUILD, "--from-labels", "{nomasks}"],
     ["nomasks.npz", "'masks'"]),
    ("build labels with a parser flag", [*FROM_LABELS, "--batch-size", "8"],
     ["--batch-size", "--from-labels"]),
    ("build parser an image", [*BUILD, "--parser", "{image}"], ["--parser", "face.jpg"]),
    ("build parser an npz", [*BUILD, "--parser", "{labels}"],
     ["gt_masks.npz", "not a torch checkpoint"]),
    ("build parser missing", [*BUILD, "--parser", "{missing}/p.pt"], ["--parser", "p.pt"]),
    ("build rec missing", ["cache", "build", "--rec", "{missing}", "--parser", "{ckpt}"],
     ["--rec", "nowhere"]),
    ("build out a file",
     ["cache", "build", "--rec", "{rec}", "--parser", "{ckpt}", "--out", "{image}"],
     ["--out", "face.jpg"]),
    ("info missing", ["cache", "info", "{missing}"], ["nowhere"]),
    ("info not a cache", ["cache", "info", "{fs}"], ["manifest.json", "not a mask cache"]),
    ("verify parser an image",
     ["cache", "verify", "{cache}", "--rec", "{rec}", "--parser", "{image}"],
     ["--parser", "face.jpg"]),
    ("verify rec missing", ["cache", "verify", "{cache}", "--rec", "{missing}"],
     ["--rec", "nowhere"]),
    ("train batch size 0", [*TRAIN, "--batch-size", "0"], ["--batch-size"]),
    ("train epochs 0", [*TRAIN, "--epochs", "0"], ["--epochs"]),
    ("train steps 1.5", [*TRAIN, "--steps", "1.5"], ["--steps", "1.5"]),
    ("train lr 0", [*TRAIN, "--lr", "0"], ["--lr"]),
    ("train weight decay -1", [*TRAIN, "--weight-decay", "-1"], ["--weight-decay"]),
    ("train val fraction 1", [*TRAIN, "--val-fraction", "1"], ["--val-fraction"]),
    ("train feature scale 3", [*TRAIN, "--feature-scale", "3"], ["--feature-scale", "3"]),
    ("train time budget -5", [*TRAIN, "--time-budget", "-5"], ["--time-budget"]),
    ("train workers -1", [*TRAIN, "--num-workers", "-1"], ["--num-workers"]),
    ("train resume an image", [*TRAIN, "--resume", "{image}"], ["--resume", "face.jpg"]),
    ("train resume nothing to resume", [*TRAIN, "--resume"], ["last.pt", "resume"]),
    pytest.param("train cuda without CUDA", [*TRAIN, "--device", "cuda"], ["--device"],
                 marks=NO_CUDA),
    ("train data missing", ["parser", "train", "--data", "{missing}", "--out", "{out}"],
     ["--data", "nowhere"]),
    ("train data without anno_list.csv", ["parser", "train", "--data", "{rec}", "--out", "{out}"],
     ["anno_list.csv"]),
    ("eval parser missing", ["parser", "eval", "--data", "{fs}", "--parser", "{missing}"],
     ["--parser"]),
    ("eval unknown split", [*EVAL, "--split", "test"], ["--split", "test"]),
    ("eval csv a directory", [*EVAL, "--csv", "{fs}"], ["--csv"]),
    ("eval batch size 0", [*EVAL, "--batch-size", "0"], ["--batch-size"]),
    ("eval seed -1", [*EVAL, "--seed", "-1"], ["--seed"]),
]


@pytest.fixture(scope="module")
def paths(synth_rec, synth_cache, tmp_path_factory) -> dict:
    """The files the cases name: a rec and its cache, a parser checkpoint, labels
    (good and bad), an image, a FaceSynthetics folder, and places that do not exist."""
    d = tmp_path_factory.mktemp("bad_input_cache")
    from fse_plugin.parsing import UNetRes18, save_parser
    with np.load(synth_rec / "gt_masks.npz") as z:
        keys, masks = z["keys"], z["masks"].copy()
    masks[3, 10, 10] = 99
    np.savez(d / "labels99.npz", keys=keys, masks=masks)
    np.savez(d / "nomasks.npz", keys=keys)
    (d / "face.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))
    return {"rec": synth_rec, "cache": synth_cache,
            "ckpt": save_parser(UNetRes18(feature_scale=16), d / "p.pt"),
            "labels": synth_rec / "gt_masks.npz", "labels99": d / "labels99.npz",
            "nomasks": d / "nomasks.npz", "image": d / "face.jpg",
            "fs": write_fake_facesynthetics(d / "fs", n=3), "missing": d / "nowhere",
            "out": d / "out"}


def _argv(argv: list[str], paths: dict) -> list[str]:
    return [a.format(**{k: str(v) for k, v in paths.items()}) for a in argv]


def _params() -> list:
    """CASES as pytest params named by their id (a row may be a pytest.param carrying marks)."""
    rows = [(c.values, c.marks) if hasattr(c, "marks") else (c, ()) for c in CASES]
    return [pytest.param(argv, names, id=name, marks=marks) for (name, argv, names), marks in rows]


@pytest.mark.parametrize("argv,names", _params())
def test_refused_in_one_line(argv, names, paths, no_loading):
    assert_user_error(run_fse(_argv(argv, paths)), *names)
    assert not Path(paths["out"]).exists()  # a refused command leaves nothing behind


def test_deprecated_amp_means_bf16(paths):
    """``--amp`` of the cache and the parser meant bf16: it still does, with a note;
    ``--no-amp`` is fp32."""
    from fse_plugin.cli import build_parser
    ap = build_parser()
    for argv, default in ((FROM_PARSER, "auto"), (TRAIN, "auto"), (EVAL, "fp32")):
        assert ap.parse_args(_argv([*argv, "--amp"], paths)).precision == "bf16"
        assert ap.parse_args(_argv([*argv, "--no-amp"], paths)).precision == "fp32"
        # auto: bf16 on CUDA, fp32 on CPU, as in 0.2
        assert ap.parse_args(_argv(argv, paths)).precision == default
