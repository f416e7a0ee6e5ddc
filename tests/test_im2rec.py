"""Dataset preparation without mxnet: im2rec's lists and records against mxnet 1.9.1's (fixtures,
and real mxnet where FSE_MXNET_PYTHON has it), worker processes, skipped images, interruption and
resume, the seeded shuffle against upstream's scripts/shuffle_rec.py, and the prepared rec in the
rest of the workflow."""
import hashlib
import json
import logging
import os
import queue
import runpy
import shutil
import signal
import struct
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from badinput import run_fse

from fse_plugin import maskcache, mxcompat, recordio
from fse_plugin.cli.rec import im2rec_argv
from fse_plugin.common.errors import FSEError
from fse_plugin.im2rec import PackSettings, encoding, pack_lists, packing, shuffle_rec, shuffled_dir
from fse_plugin.im2rec.workers import ordered_map

REPO = Path(__file__).resolve().parents[1]
IM2REC_LISTS = ["train.lst", "split_0_test.lst", "split_0_train.lst", "split_0_val.lst",
                "split_1_test.lst", "split_1_train.lst", "split_1_val.lst"]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def im2rec_dir(fixtures_dir) -> Path:
    return fixtures_dir / "mxnet" / "im2rec"


def im2rec(*argv) -> None:
    """``python -m fse_plugin.im2rec ARGV`` in this process (progress bar off)."""
    r = run_fse([*im2rec_argv([str(a) for a in argv]), "--quiet"])
    assert r.rc == 0, r.err


def records(rec: Path) -> dict[int, bytes]:
    with recordio.open_rec(rec) as r:
        return {int(k): r.read(int(k)) for k in r.keys}


# ------------------------------------------------------------------------------- mxnet's files
def test_lists_are_mxnets(im2rec_dir, tmp_path):
    expected = json.loads((im2rec_dir / "expected.json").read_text())
    im2rec("--list", "--recursive", tmp_path / "train", im2rec_dir / "images")
    im2rec("--list", "--recursive", "--chunks", 2, "--train-ratio", 0.75, "--test-ratio", 0.125,
           tmp_path / "split", im2rec_dir / "images")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(IM2REC_LISTS)
    for name in IM2REC_LISTS:
        assert (tmp_path / name).read_bytes() == (im2rec_dir / name).read_bytes(), name
        assert sha((tmp_path / name).read_bytes()) == expected["sha256"][name]


@pytest.mark.parametrize("prefix, flags", [("pt", ["--pass-through"]),
                                           ("train", ["--quality", 95])])
def test_records_are_mxnets(im2rec_dir, tmp_path, prefix, flags):
    """Pass-through is the file's bytes; re-encoded JPEGs are mxnet's (its OpenCV 4.8.1 /
    libjpeg-turbo 2.1.3 and ours give the same bytes: the same cv2 calls on the same pixels)."""
    expected = json.loads((im2rec_dir / "expected.json").read_text())
    shutil.copy(im2rec_dir / f"{prefix}.lst", tmp_path)
    im2rec(*flags, tmp_path / prefix, im2rec_dir / "images")
    for ext in ("rec", "idx"):
        data = (tmp_path / f"{prefix}.{ext}").read_bytes()
        assert sha(data) == expected["sha256"][f"{prefix}.{ext}"], (
            f"{prefix}.{ext} (OpenCV {cv2.__version__})")
    got = records(tmp_path / f"{prefix}.rec")
    for e in expected["records"][prefix]:
        header, payload = recordio.unpack(got[e["key"]])
        assert (header.flag, header.label, header.id) == (e["flag"], e["label"], e["id"])
        assert sha(payload) == e["payload_sha256"]


def test_worker_processes_write_the_same_bytes(im2rec_dir, tmp_path):
    shutil.copy(im2rec_dir / "train.lst", tmp_path)
    im2rec("--num-thread", 2, "--resize", 40, tmp_path / "train", im2rec_dir / "images")
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(im2rec_dir / "train.lst", one)
    im2rec("--resize", 40, one / "train", im2rec_dir / "images")
    assert (tmp_path / "train.rec").read_bytes() == (one / "train.rec").read_bytes()
    assert (tmp_path / "train.idx").read_bytes() == (one / "train.idx").read_bytes()
    assert {recordio.unpack_img(r)[1].shape
            for r in records(one / "train.rec").values()} == {(40, 40, 3)}


def _double_after_ctrl_c(x: int) -> int:
    os.kill(os.getpid(), signal.SIGINT)  # a worker that did not ignore Ctrl-C would die here
    return 2 * x


def test_workers_keep_order_and_leave_ctrl_c_to_the_parent():
    import multiprocessing
    got = [r for _, r in ordered_map(_double_after_ctrl_c, range(20), workers=2, window=3)]
    assert got == [2 * x for x in range(20)]
    results = ordered_map(_double_after_ctrl_c, range(1000), workers=2)
    assert next(results) == (0, 0)
    results.close()  # what a KeyboardInterrupt in the consuming loop does: the pool stops
    assert multiprocessing.active_children() == []


# -------------------------------------------------------------------- skipped, interrupted, resumed
def _folder(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / f"id{i % 3}").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / f"id{i % 3}" / f"{i:03d}.jpg"),
                    rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    return root


def test_unreadable_images_are_skipped_named_and_counted(tmp_path, caplog):
    root = _folder(tmp_path / "images", 9)
    (root / "id1" / "bad.jpg").write_bytes(b"not a jpeg")
    lst = tmp_path / "t.lst"
    lst.write_text("".join(f"{i}\t{i % 3:f}\tid{i % 3}/{i:03d}.jpg\n" for i in range(9))
                   + "9\t1.000000\tid1/bad.jpg\n\n10\t2.000000\tid2/gone.jpg\n")
    log = logging.getLogger("fse_plugin")
    # the CLI's configuration (an earlier test) stops propagation at fse_plugin
    log.addHandler(caplog.handler)
    try:
        [r] = pack_lists(tmp_path / "t", root, progress=False)
    finally:
        log.removeHandler(caplog.handler)
    assert (r.images, r.skipped) == (9, 2)
    warned = [rec.getMessage() for rec in caplog.records]
    assert any("id1/bad.jpg" in w and "cannot decode" in w for w in warned), warned
    assert any("id2/gone.jpg" in w and "No such file" in w for w in warned), warned
    assert sorted(records(r.rec)) == list(range(9))
    [r] = pack_lists(tmp_path / "t", root, PackSettings(pass_through=True), progress=False)
    assert (r.images, r.skipped) == (10, 1)  # pass-through packs any bytes, as mxnet does


def _interrupt_at(monkeypatch, image: int) -> None:
    """Ctrl-C while encoding the ``image``-th image (from 1) of the run."""
    encode, seen = encoding.ItemEncoder.encode, []

    def interrupted(self, item):
        seen.append(item)
        if len(seen) == image:
            raise KeyboardInterrupt
        return encode(self, item)
    monkeypatch.setattr(encoding.ItemEncoder, "encode", interrupted)


def test_interrupted_pack_is_refused_by_readers_and_resumes_to_the_same_bytes(tmp_path,
                                                                              monkeypatch):
    root = _folder(tmp_path / "images", 30)
    assert run_fse(["rec", "list", tmp_path / "t", root, "--recursive", "--quiet"]).rc == 0
    clean = tmp_path / "clean"
    clean.mkdir()
    shutil.copy(tmp_path / "t.lst", clean)
    pack_lists(clean / "t", root, progress=False)

    monkeypatch.setattr(packing, "BATCH", 4)
    with monkeypatch.context() as m:
        _interrupt_at(m, 23)
        r = run_fse(["rec", "pack", tmp_path / "t", root, "--quiet"])
    assert (r.rc, r.err.strip().splitlines()[-1]) == (130, "fse rec pack: interrupted")
    assert not (tmp_path / "t.rec").exists() and not (tmp_path / "t.idx").exists()
    with pytest.raises(recordio.RecordIOError, match="t.rec: record file not found"):
        recordio.open_rec(tmp_path / "t.rec")
    # 5 whole batches
    assert json.loads((tmp_path / "t.part.json").read_text())["progress"]["lines"] == 20

    with pytest.raises(FSEError, match=r"t.rec.part: left by an interrupted run; pass --resume"):
        pack_lists(tmp_path / "t", root, progress=False)
    with pytest.raises(FSEError, match=r"quality"):
        pack_lists(tmp_path / "t", root, PackSettings(quality=90), resume=True, progress=False)
    # bytes past the journal's point: cut back on resume
    with open(tmp_path / "t.rec.part", "ab") as f:
        f.write(b"\0garbage")
    [done] = pack_lists(tmp_path / "t", root, resume=True, progress=False)
    assert (done.resumed_lines, done.resumed_images, done.images) == (20, 20, 30)
    assert (tmp_path / "t.rec").read_bytes() == (clean / "t.rec").read_bytes()
    assert (tmp_path / "t.idx").read_bytes() == (clean / "t.idx").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "images", "t.idx", "t.lst",
                                                          "t.rec"]


def test_a_crash_between_the_renames_is_finished_by_resume(tmp_path, monkeypatch):
    root = _folder(tmp_path / "images", 6)
    assert run_fse(["rec", "list", tmp_path / "t", root, "--recursive", "--quiet"]).rc == 0
    replace = os.replace

    def crash_on_idx(src, dst):
        if str(dst).endswith(".idx"):
            raise KeyboardInterrupt
        replace(src, dst)
    with monkeypatch.context() as m:
        m.setattr(os, "replace", crash_on_idx)
        with pytest.raises(KeyboardInterrupt):
            pack_lists(tmp_path / "t", root, progress=False)
    assert (tmp_path / "t.rec").exists() and not (tmp_path / "t.idx").exists()
    with pytest.raises(recordio.RecordIOError, match="t.idx"):
        recordio.open_rec(tmp_path / "t.rec")
    [done] = pack_lists(tmp_path / "t", root, resume=True, progress=False)
    assert done.images == 6 and len(recordio.open_rec(tmp_path / "t.rec")) == 6


# ------------------------------------------------------------------------------- shuffle
def test_shuffle_is_upstreams_script_seeded(arcface_torch_dir, synth_rec, tmp_path, monkeypatch):
    ours, theirs = tmp_path / "a" / "ms1m", tmp_path / "b" / "ms1m"
    for d in (ours, theirs):
        shutil.copytree(synth_rec, d)
    result = shuffle_rec(ours, seed=5, progress=False)
    assert (result.out == shuffled_dir(ours) == tmp_path / "a" / "shuffled_ms1m"
            and result.records == 72)

    monkeypatch.setitem(sys.modules, "mxnet", mxcompat)  # upstream's script, run on mxcompat
    script = runpy.run_path(str(arcface_torch_dir / "scripts" / "shuffle_rec.py"))
    q = queue.Queue()
    np.random.seed(5)
    script["read_worker"](Namespace(input=str(theirs)), q)
    script["write_worker"](Namespace(input=str(theirs) + "/"), q)
    for name in ("train.rec", "train.idx"):
        assert ((result.out / name).read_bytes()
                == (tmp_path / "b" / "shuffled_ms1m" / name).read_bytes())
    assert (result.out / "property").read_bytes() == (synth_rec / "property").read_bytes()
    index = recordio.image_index(result.out)
    assert index.layout == "im2rec" and index.keys.tolist() == list(range(72))
    original = recordio.image_index(synth_rec)
    assert sorted(index.labels.tolist()) == sorted(original.labels.tolist())
    assert index.labels.tolist() != original.labels.tolist()


# ------------------------------------------------------------------------- the rest of the workflow
@pytest.fixture(scope="module")
def im2rec_rec(im2rec_dir, tmp_path_factory) -> Path:
    """The fixture's image folder as a user prepares it: list, pack (train.rec/.idx in a dataset
    folder)."""
    d = tmp_path_factory.mktemp("prepared")
    im2rec("--list", "--recursive", d / "train", im2rec_dir / "images")
    im2rec("--num-thread", 2, "--quality", 100, d / "train", im2rec_dir / "images")
    return d


def test_prepared_rec_builds_a_mask_cache_and_feeds_fsemxfacedataset(im2rec_rec, tmp_path):
    from fse_plugin.dataset import FSEMXFaceDataset
    from fse_plugin.parsing import UNetRes18, save_parser
    torch.manual_seed(0)
    parser = save_parser(UNetRes18(feature_scale=16), tmp_path / "tiny.pt")
    masks = tmp_path / "fse_masks"  # not in the shared im2rec_rec
    r = run_fse(["cache", "build", "--rec", im2rec_rec, "--parser", parser, "--out", masks,
                 "--device", "cpu", "--num-workers", 0, "--encode-workers", 0, "--batch-size", 16,
                 "--quiet"])
    assert r.rc == 0, r.err
    cache = maskcache.MaskCache(masks)
    index = recordio.image_index(im2rec_rec)
    assert (index.layout == "im2rec" and np.array_equal(np.sort(cache.keys), np.sort(index.keys))
            and len(cache) == 32)
    listed = {int(f[0]): int(float(f[1]))
              for f in (line.split("\t")
                        for line in (im2rec_rec / "train.lst").read_text().splitlines())}
    ds = FSEMXFaceDataset(im2rec_rec, 0, fse=dict(masks=str(masks), p=1.0))
    assert len(ds) == 32
    for i in range(0, 32, 5):
        img, label = ds[i]
        assert img.shape == (3, 112, 112) and int(label) == listed[int(index.keys[i])]


def test_prepared_rec_trains_through_the_patched_get_dataloader(arcface_torch_dir, im2rec_rec,
                                                                synth_bin, tmp_path):
    """train_v2.py's own get_dataloader call reads the im2rec rec: upstream's MXFaceDataset without
    config.fse (the same pixels and labels as FSEMXFaceDataset with erasing off), FSEMXFaceDataset
    with it."""
    from test_patch import DRIVER  # the patched tree's loaders, as test_patch drives them
    target = tmp_path / "arcface_torch"
    shutil.copytree(arcface_torch_dir, target)
    assert run_fse(["patch-arcface", target]).rc == 0
    rec = tmp_path / "rec"
    shutil.copytree(im2rec_rec, rec)
    index = recordio.image_index(rec)
    maskcache.build_from_labels(rec, index.keys, np.zeros((len(index.keys), 112, 112), np.uint8),
                                progress=False)
    base = (f"from easydict import EasyDict as edict\nconfig = edict()\nconfig.rec = {str(rec)!r}\n"
            "config.batch_size = 4\nconfig.num_workers = 0\n")
    (target / "configs" / "vanilla_test.py").write_text(base)
    (target / "configs" / "fse_test.py").write_text(base + "config.fse = dict(p=0.5)\n")
    (target / "configs" / "bad_test.py").write_text(base + "config.fse = dict(p=1.5)\n")
    run = subprocess.run([sys.executable, "-c", DRIVER, str(synth_bin)], cwd=target,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.split("RESULT ", 1)[1])
    assert out["vanilla"] == ["MXFaceDataset", [4, 3, 112, 112], "torch.float32", "torch.int64"]
    assert out["fse"][:4] == ["FSEMXFaceDataset", [4, 3, 112, 112], "torch.float32", "torch.int64"]
    assert out["vanilla_equals_fse_off"] is True and "config.fse.p" in out["bad"]


# ---------------------------------------------------------------------------- real mxnet (optional)
def _image(rng: np.random.Generator, h: int, w: int, c: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) * 7 % 256],
                    -1)[..., :c]
    return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


def _awkward_folder(root: Path) -> Path:
    """Root files, an upper-case suffix, a non-image, an empty folder, a symlinked folder, nested
    folders, odd sizes, grayscale, alpha, a non-ASCII name, an undecodable .jpg and an EXIF-rotated
    JPEG."""
    rng = np.random.default_rng(0)
    files = {"a.jpg": (30, 30, 3), "B.JPG": (20, 20, 3), "m/x.png": (40, 60, 3),
             "m/y.jpeg": (61, 35, 3), "m/sub/deeper.jpg": (33, 33, 3),
             "z_dir/tall.png": (70, 30, 3), "z_dir/gray.png": (25, 31, 1),
             "z_dir/alpha.png": (24, 24, 4), "z_dir/\u00fcn\u00ef.jpg": (28, 28, 3)}
    for rel, (h, w, c) in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), _image(rng, h, w, c).squeeze())
    (root / "notes.txt").write_text("x")
    (root / "empty").mkdir()
    (root / "z_dir" / "bad.jpg").write_bytes(b"not a jpeg")
    os.symlink("m", root / "link")
    jpg = cv2.imencode(".jpg", _image(rng, 20, 36))[1].tobytes()
    exif = (b"Exif\0\0II*\0" + struct.pack("<IH", 8, 1) + struct.pack("<HHII", 0x0112, 3, 1, 6)
            + bytes(4))
    (root / "m" / "rotated.jpg").write_bytes(jpg[:2] + b"\xff\xe1"
                                             + struct.pack(">H", len(exif) + 2) + exif + jpg[2:])
    return root


LIST_FLAGS = [["--recursive"], [], ["--recursive", "--no-shuffle", "--exts", ".png", ".jpeg"],
              ["--recursive", "--chunks", "3", "--train-ratio", "0.5", "--test-ratio", "0.2"]]
PACK_FLAGS = [[], ["--resize", "24", "--center-crop", "--quality", "80"],
              ["--encoding", ".png", "--color", "0"], ["--pass-through"], ["--color", "-1"]]


def test_same_files_as_real_mxnet(mxnet_python, tmp_path):
    """Set FSE_MXNET_PYTHON to an interpreter with mxnet 1.9.1 to run this (mxnet packs with 2
    processes: its single-process path stops at the first unreadable image)."""
    root = _awkward_folder(tmp_path / "root")

    def mxnet(workdir: Path, *argv: str) -> None:
        workdir.mkdir(exist_ok=True)
        subprocess.run([mxnet_python, "-m", "mxnet.tools.im2rec", *argv[:-1], str(workdir / "l"),
                        str(root), *argv[-1]], check=True, capture_output=True)

    for i, flags in enumerate(LIST_FLAGS):
        exts = flags[flags.index("--exts"):] if "--exts" in flags else []
        flags = flags[:len(flags) - len(exts)]
        mxnet(tmp_path / f"mx{i}", "--list", *flags, exts)
        im2rec("--list", *flags, tmp_path / f"us{i}" / "l", root, *exts)
        names = sorted(p.name for p in (tmp_path / f"mx{i}").iterdir())
        assert names == sorted(p.name for p in (tmp_path / f"us{i}").iterdir()), flags
        for name in names:
            assert ((tmp_path / f"us{i}" / name).read_bytes()
                    == (tmp_path / f"mx{i}" / name).read_bytes()), (flags, name)
    lst = (tmp_path / "mx0" / "l.lst").read_text()
    for i, flags in enumerate(PACK_FLAGS):
        for side in ("mxp", "usp"):
            (tmp_path / f"{side}{i}").mkdir()
            (tmp_path / f"{side}{i}" / "l.lst").write_text(lst)
        mxnet(tmp_path / f"mxp{i}", "--num-thread", "2", *flags, [])
        im2rec(*flags, tmp_path / f"usp{i}" / "l", root)
        for ext in ("rec", "idx"):
            ours, theirs = tmp_path / f"usp{i}" / f"l.{ext}", tmp_path / f"mxp{i}" / f"l.{ext}"
            assert ours.read_bytes() == theirs.read_bytes(), (flags, ext)
