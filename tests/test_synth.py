"""Synthetic faces: determinism, class coverage, left/right, mask/landmark consistency, and the
writers."""
import csv
import hashlib
import io
import pickle
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from fse_plugin import synth
from fse_plugin.align import ARCFACE_TEMPLATE, align_mask, estimate_norm, five_points_from_68
from fse_plugin.common import FSEError
from fse_plugin.labels import (CLASSES, FS19_CLASSES, L25_TO_FS19, MIRROR_PAIRS, SIDE, SKIN_IDS,
                               class_id, class_ids)


def _frontal(look: synth.Look) -> synth.Look:
    return replace(look, yaw=0.0, pitch=0.0, roll=0.0, jitter=(0.0, 0.0, 0.0, 0.0))


@pytest.fixture(scope="module")
def sample():
    """120 aligned renders of 40 identities: (identity index, Render)."""
    out = []
    for i in range(40):
        for j in range(3):
            out.append((i, synth.render_image(5, synth.TRAIN, i, j, 112, "aligned")))
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _safe_load(path: Path):
    """A .bin holds only lists, bytes and bools: refuse any global (never plain-unpickle a file)."""
    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            raise pickle.UnpicklingError(f"{path}: global {module}.{name} not allowed")
    return Restricted(io.BytesIO(path.read_bytes())).load()


# -------------------------------------------------------------------------------------- determinism
def test_identities_deterministic_and_streams_disjoint():
    a, b = synth.make_identities(4, seed=3), synth.make_identities(4, seed=3)
    assert ([x.face_w for x in a] == [x.face_w for x in b]
            and [x.skin for x in a] == [x.skin for x in b])
    assert synth.make_identities(2, seed=3, start=2)[0].face_w == a[2].face_w
    assert a[0].face_w != synth.make_identities(1, seed=4)[0].face_w
    held = synth.make_identities(4, seed=3, stream=synth.HELDOUT)
    assert all(h.face_w != t.face_w for h in held for t in a)
    assert [x.label for x in a] == [0, 1, 2, 3]


def test_render_deterministic():
    idn = synth.make_identities(1, seed=0)[0]
    im1, m1 = synth.render_aligned(idn, np.random.default_rng(7))
    im2, m2 = synth.render_aligned(idn, np.random.default_rng(7))
    im3, m3 = synth.render_aligned(idn, np.random.default_rng(8))
    assert (im1.shape == (112, 112, 3) and im1.dtype == np.uint8 and m1.shape == (112, 112)
            and m1.dtype == np.uint8)
    assert im1.tobytes() == im2.tobytes() and m1.tobytes() == m2.tobytes()
    assert im1.tobytes() != im3.tobytes() and m1.tobytes() != m3.tobytes()


def test_write_rec_bytes_deterministic_across_workers(tmp_path):
    a = synth.write_rec(tmp_path / "a", 3, 2, seed=11, workers=1)
    b = synth.write_rec(tmp_path / "b", 3, 2, seed=11, workers=2)
    c = synth.write_rec(tmp_path / "c", 3, 2, seed=12, workers=1)
    for name in ("train.rec", "train.idx", "property"):
        assert _sha(a / name) == _sha(b / name), name
    assert _sha(a / "train.rec") != _sha(c / "train.rec")
    ma, mb = np.load(a / "gt_masks.npz"), np.load(b / "gt_masks.npz")
    assert np.array_equal(ma["masks"], mb["masks"]) and np.array_equal(ma["keys"], mb["keys"])


# ------------------------------------------------------------------------------------------ content
def test_all_classes_occur_with_plausible_sizes(sample):
    frac = np.array([np.bincount(r.mask.ravel(), minlength=25) / r.mask.size for _, r in sample])
    assert frac.shape[1] == len(CLASSES)  # no id outside 0..24
    present = frac > 0
    missing = [CLASSES[c] for c in range(25) if not present[:, c].any()]
    assert not missing, f"classes never rendered: {missing}"
    median = {CLASSES[c]: np.median(frac[present[:, c], c]) for c in range(25)}
    # (low, high) bounds of the median area fraction where present, from aligned 112x112 faces
    bounds = {"background": (0.1, 0.6), "nose": (0.01, 0.05), "hair": (0.05, 0.5),
              "headwear": (0.03, 0.3), "glasses": (0.005, 0.08), "neck": (0.002, 0.06),
              "clothing": (0.001, 0.1),
              "mouth": (0.002, 0.03)}
    for n in ("right_eye", "left_eye", "right_brow", "left_brow", "right_ear", "left_ear",
              "upper_lip", "lower_lip"):
        bounds[n] = (0.001, 0.02)
    for c in SKIN_IDS:
        bounds[CLASSES[c]] = (0.005, 0.2)
    for name, (lo, hi) in bounds.items():
        assert lo <= median[name] <= hi, (f"{name}: median area {median[name]:.4f} outside "
                                          f"[{lo}, {hi}]")
    # the face skin always dominates the small parts, and always-present parts are present
    for name in ("right_cheek", "left_cheek", "nose", "upper_lip", "lower_lip", "middle_forehead"):
        assert present[:, class_id(name)].all(), name
    skin = frac[:, list(SKIN_IDS)].sum(1)
    assert (skin > 0.15).all() and (skin < 0.8).all()


def _mean_x(mask: np.ndarray, cid: int) -> float:
    return float(np.nonzero(mask == cid)[1].mean())


def test_left_right_follow_the_authors_labels():
    """As in the authors' labels_25 maps: skin parts on the subject's sides, eyes, brows, ears on
    the image's."""
    ids = synth.make_identities(12, seed=21)
    for k, idn in enumerate(ids):
        look = _frontal(synth.sample_look(idn, np.random.default_rng(k)))
        look = replace(look, hair_style="short", headwear=None, glasses=None, eye_open=1.0)
        r = synth.render(idn, look, 112)
        for right, left in MIRROR_PAIRS:
            if (r.mask == right).sum() < 3 or (r.mask == left).sum() < 3:
                continue
            image_left, image_right = (right, left) if SIDE[right] == "subject" else (left, right)
            assert _mean_x(r.mask, image_left) < 56 < _mean_x(r.mask, image_right), (CLASSES[right],
                                                                                     CLASSES[left])
        for name in ("eye", "brow", "ear"):  # wholly on their image side
            left = np.nonzero(r.mask == class_id("left_" + name))[1]
            right = np.nonzero(r.mask == class_id("right_" + name))[1]
            assert len(left) and len(right) and left.max() < 56 < right.min(), name
        # landmarks: iBUG 36..41 and pupil row 68 are on the image-left, inside the left_eye class
        assert r.landmarks[36:42, 0].max() < 56 < r.landmarks[42:48, 0].min()
        assert (r.landmarks[68, 0] < 56 < r.landmarks[69, 0]
                and r.landmarks[0, 0] < r.landmarks[16, 0])


def test_side_means_in_aligned_faces(sample):
    """Mean x over the posed, aligned sample: where the authors' maps put each sided class (midline
    56)."""
    xs = {name: np.mean([_mean_x(r.mask, class_id(name))
                         for _, r in sample if (r.mask == class_id(name)).sum() > 3])
          for name in ("right_cheek", "left_cheek", "right_eye", "left_eye", "right_brow",
                       "left_brow", "right_ear", "left_ear")}
    assert xs["right_cheek"] < 56 < xs["left_cheek"]
    assert xs["left_eye"] < 56 < xs["right_eye"] and xs["left_brow"] < 56 < xs["right_brow"]
    # at the image edges, as the authors' ~6 and ~98
    assert xs["left_ear"] < 20 and xs["right_ear"] > 92


def test_posed_faces_keep_sides(sample):
    for _, r in sample:
        for image_left, image_right in ((12, 11), (14, 13), (1, 2)):
            a, b = np.nonzero(r.mask == image_left)[1], np.nonzero(r.mask == image_right)[1]
            if len(a) > 3 and len(b) > 3:
                assert a.mean() < b.mean()


def test_mask_and_landmarks_agree(sample):
    hits = total = 0
    for i, r in sample:
        lm = r.landmarks
        assert lm.shape == (70, 2) and lm.dtype == np.float32
        def label(p):
            return r.mask[int(round(float(p[1]))), int(round(float(p[0])))]
        assert label(lm[30]) == class_id("nose")  # nose tip
        for corner in (48, 54):  # mouth corners touch the lips
            x, y = np.round(lm[corner]).astype(int)
            assert np.isin(r.mask[y - 2:y + 3, x - 2:x + 3],
                           class_ids(["upper_lip", "lower_lip", "mouth"])).any()
        # image-left, -right
        for pupil, eye in ((68, class_id("left_eye")), (69, class_id("right_eye"))):
            if (r.mask == eye).sum() > 5:  # open eye, not behind sunglasses
                total += 1
                hits += label(lm[pupil]) == eye
        # aligned frame: the face's own 5 points sit near the ArcFace template
        assert np.abs(five_points_from_68(lm) - ARCFACE_TEMPLATE).max() < 14
    assert total > 100 and hits / total > 0.95


def test_identity_spread_over_regions(sample):
    """Nearest-neighbour identification from region colours works on disjoint region groups."""
    def feats(r, classes):
        skin = np.isin(r.mask, list(SKIN_IDS))
        ref = r.image[skin].mean(0) + 1
        out = []
        for c in classes:
            sel = r.mask == c
            out += list(r.image[sel].mean(0) / ref) if sel.sum() > 3 else [np.nan] * 3
            out.append(sel.mean() * 50)
        return out

    y = np.array([i for i, _ in sample])
    for group in (["right_eye", "left_eye", "right_brow", "left_brow"],
                  ["upper_lip", "lower_lip", "nose"]):
        f = np.array([feats(r, class_ids(group)) for _, r in sample], np.float64)
        f = np.nan_to_num((f - np.nanmean(f, 0)) / (np.nanstd(f, 0) + 1e-6))
        d = ((f[:, None] - f[None]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        acc = (y[d.argmin(1)] == y).mean()
        assert acc > 0.3, f"{group}: identification {acc:.2f} (chance {1 / 40:.3f})"


# ------------------------------------------------------------------------------------------ writers
def test_rec_layout_labels_and_gt_masks(synth_rec):
    from fse_plugin.recordio import IRHeader, RecordReader, decode_image, image_index, unpack
    idx = image_index(synth_rec)
    assert idx.layout == "insightface"
    assert (np.array_equal(idx.keys, np.arange(1, 73))
            and np.array_equal(idx.labels, np.repeat(np.arange(12), 6)))
    assert (synth_rec / "property").read_text().strip() == "12,112,112"
    gt = np.load(synth_rec / "gt_masks.npz")
    assert gt["keys"].dtype == np.int64 and np.array_equal(gt["keys"], idx.keys)
    assert gt["masks"].shape == (72, 112, 112) and gt["masks"].dtype == np.uint8
    with RecordReader(synth_rec / "train.rec") as r:
        h0, _ = unpack(r.read(0))
        assert list(h0.label) == [73, 85] and h0.id2 == 1
        h, _ = unpack(r.read(73 + 4))
        assert list(h.label) == [1 + 4 * 6, 1 + 5 * 6]
        for k in (1, 20, 72):  # masks sit at their record's key; images decode to the rendered face
            ident, image = divmod(k - 1, 6)
            ref = synth.render_image(0, synth.TRAIN, ident, image, 112, "aligned")
            row = int(np.nonzero(gt["keys"] == k)[0][0])
            assert np.array_equal(gt["masks"][row], ref.mask)
            hdr, payload = unpack(r.read(k))
            assert isinstance(hdr, IRHeader) and hdr.label == ident and hdr.id == k
            img = decode_image(payload).astype(int)
            other = synth.render_image(0, synth.TRAIN, ident, (image + 1) % 6, 112, "aligned").image
            assert (img.shape == (112, 112, 3)
                    and np.abs(img - ref.image).mean() < 8 < np.abs(img - other).mean())


def test_pairs_bin_structure_and_masks(synth_bin):
    bins, issame = _safe_load(synth_bin)
    assert (isinstance(bins, list) and isinstance(issame, list) and len(bins) == 80
            and len(issame) == 40)
    assert all(isinstance(b, bytes) for b in bins) and all(isinstance(s, bool) for s in issame)
    assert sum(issame) == 20 and issame[:4] == [True, False, True, False]
    masks = np.load(synth_bin.with_name("synth.masks.npy"))
    assert masks.shape == (80, 112, 112) and masks.dtype == np.uint8
    plan = synth.pair_plan(40, seed=1)
    assert [same for _, _, same in plan] == issame and all((a == b) == same for a, b, same in plan)
    for k in (0, 1, 37):  # held-out identities: the pack images are HELDOUT-stream renders
        ident = plan[k // 2][k % 2]
        ref = synth.render_image(1, synth.HELDOUT, ident, k, 112, "aligned")
        img = cv2.imdecode(np.frombuffer(bins[k], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        assert np.array_equal(masks[k], ref.mask) and np.abs(img.astype(int) - ref.image).mean() < 8


def test_facesynthetics_folder_and_alignment_round_trip(tmp_path):
    out = synth.write_facesynthetics(tmp_path / "fs", 6, seed=2, missing_25=0.4)
    rows = list(csv.DictReader(open(out / "anno_list.csv")))
    assert [int(r["frame_id"]) for r in rows] == list(range(6))
    for r in rows:
        i, with_25 = int(r["frame_id"]), int(r["with_25"])
        img = cv2.imread(str(out / f"{i:06d}.png"))
        seg = cv2.imread(str(out / f"{i:06d}_seg.png"), cv2.IMREAD_UNCHANGED)
        ldmks = np.loadtxt(out / f"{i:06d}_ldmks.txt")
        assert (img.shape == (512, 512, 3) and seg.shape == (512, 512) and seg.max() <= 18
                and ldmks.shape == (70, 2))
        lab = out / "labels_25" / f"{i:06d}_seg.png"
        assert lab.exists() == bool(with_25)
        if not with_25:
            continue
        m25 = cv2.imread(str(lab), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(L25_TO_FS19[m25], seg)
        # the 19-class RIGHT_EYE/_BROW/_EAR lie on the image-right, as the 25-class ids they share
        fs19 = align_mask(seg, five_points_from_68(ldmks))
        for name in ("RIGHT_EYE", "RIGHT_BROW", "RIGHT_EAR"):
            right, left = (FS19_CLASSES.index(name),
                           FS19_CLASSES.index(name.replace("RIGHT", "LEFT")))
            if (fs19 == right).sum() > 3 and (fs19 == left).sum() > 3:
                assert _mean_x(fs19, left) < 56 < _mean_x(fs19, right), name
        # aligning the 512 frame by its own landmarks gives the aligned render of the same look
        idn, look = synth.image_spec(2, synth.PARSER, i, 0)
        ref = synth.render(idn, replace(look, jitter=(0.0, 0.0, 0.0, 0.0)), 112, "aligned")
        got = align_mask(m25, five_points_from_68(ldmks))
        assert (got == ref.mask).mean() > 0.93
        ious = [((got == c) & (ref.mask == c)).sum() / ((got == c) | (ref.mask == c)).sum()
                for c in np.unique(ref.mask) if (ref.mask == c).sum() > 60]
        assert np.mean(ious) > 0.8 and min(ious) > 0.5
    assert {int(r["with_25"]) for r in rows} == {0, 1}


def test_ijb_layout_parses_like_upstream(tmp_path):
    out = synth.write_ijb(tmp_path / "ijb", "IJBB", synth.IJBLayout(3, 2, 2, 2), seed=4)
    meta = out / "meta"
    tid_mid = [line.split() for line in (meta / "ijbb_face_tid_mid.txt").read_text().splitlines()]
    pts = [line.split() for line in (meta / "ijbb_name_5pts_score.txt").read_text().splitlines()]
    pairs = np.loadtxt(meta / "ijbb_template_pair_label.txt", dtype=np.int64)
    assert len(tid_mid) == len(pts) == 3 * 2 * 2 * 2
    assert [r[0] for r in tid_mid] == [r[0] for r in pts]  # same row order, as eval_ijbc.py assumes
    tids = np.array([int(r[1]) for r in tid_mid])
    mids = np.array([int(r[2]) for r in tid_mid])
    assert sorted(set(tids)) == list(range(1, 7)) and len(set(mids)) == 12
    for t in set(tids):
        assert len(set(mids[tids == t])) == 2
    owner = {t: (t - 1) // 2 for t in range(1, 7)}
    assert pairs.shape == (15, 3) and all(lab == (owner[a] == owner[b]) for a, b, lab in pairs)
    assert pairs[:, 2].sum() == 3
    for row in pts[:6]:
        img = cv2.imread(str(out / "loose_crop" / row[0]))
        p5 = np.array(row[1:11], np.float32).reshape(5, 2)
        score = float(row[11])
        assert img is not None and 0 < score <= 1
        assert ((p5 >= 0).all() and (p5[:, 0] < img.shape[1]).all()
                and (p5[:, 1] < img.shape[0]).all())
        assert p5[0, 0] < p5[1, 0] and p5[3, 0] < p5[4, 0]  # image-left eye / mouth corner first
        m = estimate_norm(p5)
        assert 0.2 < np.sqrt(abs(np.linalg.det(m[:, :2]))) < 2.0  # a loose crop, not an aligned one
    masks = np.load(out / "gt_masks.npy")
    assert masks.shape == (24, 112, 112) and masks.dtype == np.uint8
    assert np.isin([11, 12, 10, 18, 19], masks).all() and (masks > 0).mean() > 0.4  # aligned faces
    with pytest.raises(FSEError, match="IJBC"):
        synth.write_ijb(tmp_path / "bad", "LFW")


def test_bad_arguments():
    idn = synth.make_identities(1, 0)[0]
    with pytest.raises(FSEError, match="frame"):
        synth.render(idn, synth.sample_look(idn, np.random.default_rng(0)), 112, "tight")
    with pytest.raises(FSEError, match="n_identities"):
        synth.write_rec("/nonexistent/never", 0, 1, 0)
    with pytest.raises(FSEError, match="n_identities"):
        synth.pair_plan(4, 0, n_identities=1)
    with pytest.raises(FSEError, match="identities"):
        synth.IJBLayout(identities=1)
    with pytest.raises(FSEError, match="n_identities"):
        synth.write_rec("/nonexistent/never", True, 1, 0)  # a bool is not a count


def _interrupt_after(monkeypatch, name, n):
    """Make the writers' render job ``name`` raise KeyboardInterrupt on its ``n``-th call (as Ctrl-C
    would)."""
    from fse_plugin.synth import writers
    job, calls = getattr(writers, name), []

    def interrupted(args):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return job(args)
    monkeypatch.setattr(writers, name, interrupted)


def _no_temporaries(root):
    return not [p for p in root.rglob("*") if ".tmp-" in p.name]


def test_an_interrupted_rec_is_never_taken_for_a_whole_one(tmp_path, monkeypatch):
    """Ctrl-C while writing a rec: no train.idx (what every reader opens first), no temporary file
    left; a whole rec already in the folder stays whole and readable."""
    from fse_plugin import recordio
    out = tmp_path / "rec"
    _interrupt_after(monkeypatch, "_rec_job", 5)
    with pytest.raises(KeyboardInterrupt):
        synth.write_rec(out, 3, 4, seed=0, workers=1)
    assert (not (out / "train.idx").exists() and not (out / "train.rec").exists()
            and _no_temporaries(tmp_path))
    monkeypatch.undo()
    synth.write_rec(out, 2, 2, seed=0, workers=1)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "gt_masks.npz"}
    _interrupt_after(monkeypatch, "_rec_job", 3)
    with pytest.raises(KeyboardInterrupt):
        synth.write_rec(out, 3, 4, seed=1, workers=1)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "gt_masks.npz"} == before
    assert len(recordio.image_index(out).keys) == 4 and _no_temporaries(tmp_path)


def test_interrupted_packs_and_folders_are_recognised_as_incomplete(tmp_path, monkeypatch):
    from fse_plugin.parsing import read_anno_list
    for name, write, marker in (
            ("_pair_job", lambda: synth.write_pairs_bin(tmp_path / "val.bin", 10, 0, workers=1),
             tmp_path / "val.bin"),
            ("_fs_job",
             lambda: synth.write_facesynthetics(tmp_path / "fs", 4, 0, size=128, workers=1),
             tmp_path / "fs" / "anno_list.csv"),
            ("_ijb_job", lambda: synth.write_ijb(tmp_path / "ijb", "IJBC",
                                                 synth.IJBLayout(2, 1, 1, 2), workers=1),
             tmp_path / "ijb" / "meta" / "ijbc_template_pair_label.txt")):
        _interrupt_after(monkeypatch, name, 2)
        with pytest.raises(KeyboardInterrupt):
            write()
        assert not marker.exists(), marker
        monkeypatch.undo()
    assert not (tmp_path / "val.masks.npy").exists() and _no_temporaries(tmp_path)
    with pytest.raises(FileNotFoundError, match="anno_list.csv"):
        read_anno_list(tmp_path / "fs")


def test_cli_synth_interrupted_is_one_line_and_no_rec(tmp_path, monkeypatch):
    from badinput import run_fse
    _interrupt_after(monkeypatch, "_rec_job", 3)
    result = run_fse(["synth", "--out", tmp_path / "s", "--ids", "2", "--per-id", "3",
                      "--num-workers", "1", "--quiet"])
    assert result.rc == 130 and result.lines == ["fse synth: interrupted"]
    assert not (tmp_path / "s" / "rec" / "train.idx").exists() and _no_temporaries(tmp_path)


def test_cli_synth_writes_demo(tmp_path, capsys):
    from fse_plugin.cli import main
    out = tmp_path / "demo"
    assert main(["synth", "--out", str(out), "--ids", "2", "--per-id", "2", "--pairs", "10",
                 "--facesynthetics", "2", "--ijb", "2"]) == 0
    printed = capsys.readouterr().out
    for path in (out / "rec" / "train.rec", out / "rec" / "gt_masks.npz",
                 out / "rec" / "synth_val.bin",
                 out / "rec" / "synth_val.masks.npy", out / "facesynthetics" / "anno_list.csv",
                 out / "IJBC" / "meta" / "ijbc_template_pair_label.txt"):
        assert path.exists(), path
    assert (str((out / "rec").resolve()) in printed
            and str((out / "facesynthetics").resolve()) in printed)
