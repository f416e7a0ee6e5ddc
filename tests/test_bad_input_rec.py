"""Bad input to ``fse rec list|pack|shuffle`` and ``python -m fse_plugin.im2rec``: one line naming
the flag, file or line, exit status 2, nothing decoded and nothing written."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from badinput import assert_user_error, run_fse

from fse_plugin.cli.rec import im2rec_argv
from fse_plugin.recordio import IRHeader, MXIndexedRecordIO, pack

LIST = ["rec", "list", "{out}/t"]
PACK = ["rec", "pack", "{w}/good/t", "{w}/images"]

CASES = [
    ("list: missing root", [*LIST, "{w}/nope"], ["ROOT", "nope"]),
    ("list: empty folder", [*LIST, "{w}/empty", "--recursive"], ["ROOT", "no image", "empty"]),
    ("list: root files only", [*LIST, "{w}/images"], ["ROOT", "--recursive"]),
    ("list: prefix under a file", ["rec", "list", "{w}/afile/t", "{w}/images"],
     ["PREFIX", "afile"]),
    ("list: --chunks 0", [*LIST, "{w}/images", "--chunks", "0"], ["--chunks"]),
    ("list: more chunks than images", [*LIST, "{w}/images", "--recursive", "--chunks", "9"],
     ["--chunks 9", "3"]),
    ("list: ratios over 1", [*LIST, "{w}/images", "--train-ratio", "0.8", "--test-ratio", "0.3"],
     ["--train-ratio", "--test-ratio"]),
    ("list: --train-ratio 1.5", [*LIST, "{w}/images", "--train-ratio", "1.5"], ["--train-ratio"]),
    ("list: --exts without dot", [*LIST, "{w}/images", "--exts", "jpg"], ["--exts", ".jpg"]),
    ("list: --exts upper case", [*LIST, "{w}/images", "--exts", ".JPG"], ["--exts", ".jpg"]),
    ("pack: missing root", ["rec", "pack", "{w}/good/t", "{w}/nope"], ["ROOT", "nope"]),
    ("pack: no list for the prefix", ["rec", "pack", "{w}/images/t", "{w}/images"],
     ["PREFIX", "t*.lst"]),
    ("pack: --quality 101", [*PACK, "--quality", "101"], ["--quality", "101"]),
    ("pack: --quality 10 for PNG", [*PACK, "--quality", "10", "--encoding", ".png"],
     ["--quality", "0..9"]),
    ("pack: --num-thread 0", [*PACK, "--num-thread", "0"], ["--num-thread"]),
    ("pack: --num-workers -2", [*PACK, "--num-workers", "-2"], ["--num-workers"]),
    ("pack: --num-thread 1.5", [*PACK, "--num-thread", "1.5"], ["--num-thread"]),
    ("pack: --resize -1", [*PACK, "--resize", "-1"], ["--resize"]),
    ("pack: unknown --encoding", [*PACK, "--encoding", ".bmp"], ["--encoding", ".bmp"]),
    ("pack: --color 2", [*PACK, "--color", "2"], ["--color"]),
    ("pack: --quality with --pass-through", [*PACK, "--pass-through", "--quality", "90"],
     ["--quality", "--pass-through"]),
    ("pack: malformed .lst line", ["rec", "pack", "{w}/malformed/t", "{w}/images"],
     ["t.lst", "line 3"]),
    ("pack: duplicate index", ["rec", "pack", "{w}/dup/t", "{w}/images"],
     ["t.lst", "line 3", "index 0"]),
    ("pack: label not finite", ["rec", "pack", "{w}/nan/t", "{w}/images"],
     ["t.lst", "line 2", "nan"]),
    ("pack: negative index", ["rec", "pack", "{w}/negative/t", "{w}/images"],
     ["t.lst", "line 1", "-4"]),
    ("pack: empty list", ["rec", "pack", "{w}/blank/t", "{w}/images"], ["t.lst", "no images"]),
    ("pack: .rec left incomplete by an interrupted run",
     ["rec", "pack", "{w}/leftover/t", "{w}/images"], ["t.rec.part", "--resume"]),
    ("pack: --resume without a journal",
     ["rec", "pack", "{w}/leftover/t", "{w}/images", "--resume"], ["t.rec.part", "journal"]),
    ("im2rec: a pack flag with --list",
     im2rec_argv(["--list", "--quality", "90", "{out}/t", "{w}/images"]),
     ["--quality", "fse rec pack"]),
    ("im2rec: a list flag without --list", im2rec_argv(["--recursive", "{w}/good/t", "{w}/images"]),
     ["--recursive", "fse rec list"]),
    ("shuffle: missing input", ["rec", "shuffle", "{w}/nope"], ["INPUT", "nope"]),
    ("shuffle: no train.rec", ["rec", "shuffle", "{w}/images"], ["train.rec", "not found"]),
    ("shuffle: incomplete train.rec", ["rec", "shuffle", "{w}/truncated"],
     ["train.rec", "truncated"]),
    ("shuffle: --seed -1", ["rec", "shuffle", "{w}/truncated", "--seed", "-1"], ["--seed"]),
]


def _lst(folder: Path, text: str) -> None:
    folder.mkdir()
    (folder / "t.lst").write_text(text)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("rec_bad_input")
    for i, name in enumerate(["a/0.jpg", "a/1.jpg", "b/2.jpg"]):
        (w / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(w / "images" / name), np.full((8, 8, 3), 40 * i, np.uint8))
    (w / "empty").mkdir()
    (w / "afile").write_text("x")
    good = "0\t0.000000\ta/0.jpg\n1\t0.000000\ta/1.jpg\n2\t1.000000\tb/2.jpg\n"
    _lst(w / "good", good)
    _lst(w / "malformed", "0\t0.000000\ta/0.jpg\n1\t0.000000\ta/1.jpg\n2 1.0 b/2.jpg\n")
    _lst(w / "dup", "0\t0.000000\ta/0.jpg\n\n0\t1.000000\tb/2.jpg\n")
    _lst(w / "nan", "0\t0.000000\ta/0.jpg\n1\tnan\ta/1.jpg\n")
    _lst(w / "negative", "-4\t0.000000\ta/0.jpg\n")
    _lst(w / "blank", "\n\n")
    _lst(w / "leftover", good)
    (w / "leftover" / "t.rec.part").write_bytes(b"\x0a\x23\xd7\xce")
    (w / "truncated").mkdir()
    with MXIndexedRecordIO(str(w / "truncated" / "train.idx"), str(w / "truncated" / "train.rec"),
                           "w") as rec:
        for k in range(3):
            rec.write_idx(k, pack(IRHeader(0, float(k), k, 0), bytes(100)))
    data = (w / "truncated" / "train.rec").read_bytes()
    (w / "truncated" / "train.rec").write_bytes(data[:-50])
    return w


@pytest.mark.parametrize("argv,names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_in_one_line(argv, names, workspace, tmp_path, no_loading):
    argv = [a.format(w=workspace, out=tmp_path) for a in argv]
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    assert_user_error(run_fse(argv), *names)
    # nothing written
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*")) == before
    assert list(tmp_path.iterdir()) == []
