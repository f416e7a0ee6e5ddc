"""Start-up: ``fse --help``, each command's help and refusals, and dataset preparation (``fse rec``,
``python -m fse_plugin.im2rec``) import none of torch, torchvision, scikit-learn, scipy,
matplotlib."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from fse_plugin.cli import app

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "sklearn", "scipy", "matplotlib")
NOT_YET = {("study",): "its flags read fse_plugin.study's presets, which import torch",
           ("demo",): "its flags read fse_plugin.demo's presets, which import torch"}
"""Commands whose flags still import torch, and why."""
REFUSED = [["--bogus"], ["nosuch"], ["rec", "list", "p", "r", "--chunks", "0"], ["rec", "shuffle"],
           ["rec", "pack", "p", "r", "--quality", "x"], ["parser", "train", "--batch-size", "0"],
           ["parser", "eval"],
           # refused when run
           ["cache", "build", "--rec", "r", "--from-labels", "l.npz", "--batch-size", "8"],
           ["cache", "info", "nowhere"], ["eval", "verification", "--batch-size", "0"],
           ["eval", "ijb", "--far", "2"],
           ["eval", "occlusion", "--classes", "nosuch"], ["eval", "occlusion", "--fill", "blue"],
           ["cam", "--methods", "nosuch"], ["cam", "--name", "a/b"], ["cam", "--fill", "blue"],
           ["patch-arcface"], ["train-parser", "--batch-size", "0"]]
"""Command lines refused with exit status 2 (the files they name are made by the test)."""

_DRIVER = """
import json, sys
from fse_plugin.cli import main
heavy = {heavy!r}
runs = []
for argv in json.loads(sys.argv[1]):
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    runs.append([argv, rc, [m for m in heavy if m in sys.modules]])
print(json.dumps(runs))
""".format(heavy=HEAVY)


def _python(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})


def _heavy(importtime: str) -> set[str]:
    """The heavy libraries in ``python -X importtime``'s report."""
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in importtime.splitlines()
            if line.startswith("import time:") and "|" in line} & set(HEAVY)


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every runnable command's words, found without building any command's flags."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path
        return
    for name, p in subs[0].choices.items():
        yield from _leaves(p, (*path, name))


def _runs(argvs: list[list[str]], cwd: Path) -> list:
    """Run ``fse argv`` for each in turn in one fresh process: [argv, exit status, heavy modules
    loaded so far]."""
    out = _python("-c", _DRIVER, json.dumps(argvs), cwd=cwd)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_fse_help_imports_no_heavy_library():
    out = _python("-X", "importtime", "-m", "fse_plugin", "--help")
    assert out.returncode == 0 and "rec" in out.stdout and "cam" in out.stdout
    assert not _heavy(out.stderr)


def test_each_command_help_and_refusal_imports_no_heavy_library(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "train.rec").write_bytes(b"")
    np.savez(tmp_path / "l.npz", keys=np.arange(1), masks=np.zeros((1, 4, 4), np.uint8))
    leaves = [w for w in _leaves(app.build_parser(complete=False)) if w not in NOT_YET]
    helps = [[*words, "--help"] for words in leaves]
    refused = [argv for argv in REFUSED if not any(tuple(argv[:len(w)]) == w for w in NOT_YET)]
    runs = _runs(helps + refused, tmp_path)
    assert len(helps) > 12 and [rc for _, rc, _ in runs] == [0] * len(helps) + [2] * len(refused)
    loaded = [(" ".join(argv), heavy) for argv, _, heavy in runs if heavy]
    assert not loaded, f"the first of these imported a heavy library: {loaded}"


def test_im2rec_imports_no_heavy_library(tmp_path):
    """mxnet's two im2rec commands, list and pack, as ``python -m fse_plugin.im2rec`` (what a rec's
    owner types)."""
    for label in range(2):
        (tmp_path / "faces" / f"id{label}").mkdir(parents=True)
        for i in range(2):
            face = np.full((8, 8, 3), 40 * i + label, np.uint8)
            cv2.imwrite(str(tmp_path / "faces" / f"id{label}" / f"{i}.png"), face)
    for flags in (["--list", "--recursive"], ["--num-thread", "1"]):
        out = _python("-X", "importtime", "-m", "fse_plugin.im2rec", *flags, "train", "faces",
                      cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        assert not _heavy(out.stderr)
    assert (tmp_path / "train.rec").stat().st_size > 0 and (tmp_path / "train.idx").is_file()
