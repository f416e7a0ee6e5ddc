"""Parser: published layout, checkpoint loading, inference, augmentation, training, metrics, CLI."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score, jaccard_score

from fse_plugin import parsing as P
from fse_plugin.align import ARCFACE_TEMPLATE
from fse_plugin.cli import main as cli_main
from fse_plugin.common import FSEError, to_input
from fse_plugin.erasing import flip_pair
from fse_plugin.labels import MIRROR, NUM_CLASSES, PALETTE, class_id

SMALL = 16  # feature_scale for fast tests (widths 4..64)


# --------------------------------------------------------------------- a tiny FaceSynthetics folder

def _canonical_face(size: int = 112) -> np.ndarray:
    """A 25-class label map in ArcFace-aligned coordinates, sided as the authors' labels:
    right_cheek (1) on the image-left (the subject's right), right_eye and right_brow (11, 13) on
    the image-right (the image's right)."""
    m = np.zeros((size, size), np.uint8)
    cx = int(ARCFACE_TEMPLATE[2, 0])
    cv2.ellipse(m, (cx, 40), (40, 30), 0, 180, 360, class_id("hair"), -1)
    cv2.ellipse(m, (cx, 62), (36, 46), 0, 0, 360, 1, -1)
    m[:, cx:][m[:, cx:] == 1] = 2  # image-right half of the face is the subject's left cheek
    for (x, y), eye, brow in zip(ARCFACE_TEMPLATE[:2], ("left_eye", "right_eye"),
                                 ("left_brow", "right_brow")):
        cv2.ellipse(m, (int(x), int(y)), (8, 4), 0, 0, 360, class_id(eye), -1)
        cv2.rectangle(m, (int(x) - 9, int(y) - 12), (int(x) + 9, int(y) - 8), class_id(brow), -1)
    nx, ny = ARCFACE_TEMPLATE[2]
    cv2.fillPoly(m, [np.array([[nx, ny - 18], [nx - 7, ny + 2], [nx + 7, ny + 2]], np.int32)],
                 class_id("nose"))
    (lx, ly), (rx, _) = ARCFACE_TEMPLATE[3], ARCFACE_TEMPLATE[4]
    cv2.ellipse(m, (int((lx + rx) / 2), int(ly) - 2), (int((rx - lx) / 2), 3), 0, 0, 360,
                class_id("upper_lip"), -1)
    cv2.ellipse(m, (int((lx + rx) / 2), int(ly) + 3), (int((rx - lx) / 2), 3), 0, 0, 360,
                class_id("lower_lip"), -1)
    m[100:, 30:82] = class_id("neck")
    return m


def write_fake_facesynthetics(root: Path, n: int, seed: int = 0, side: int = 160,
                              skip: tuple[int, ...] = (), labels: str = "labels_25") -> Path:
    """FaceSynthetics layout: {id:06d}.png, _ldmks.txt (70 rows), labels_25/{id:06d}_seg.png,
    anno_list.csv."""
    rng = np.random.default_rng(seed)
    (root / labels).mkdir(parents=True, exist_ok=True)
    canon = _canonical_face()
    rows = []
    for fid in range(n):
        ang, s = np.deg2rad(rng.uniform(-15, 15)), rng.uniform(1.1, 1.3)
        a = np.array([[s * np.cos(ang), -s * np.sin(ang)], [s * np.sin(ang), s * np.cos(ang)]])
        t = np.array([side / 2, side / 2]) - a @ np.array([56, 60]) + rng.uniform(-8, 8, 2)
        fwd = np.hstack([a, t[:, None]])  # aligned -> image
        seg = cv2.warpAffine(canon, fwd, (side, side), flags=cv2.INTER_NEAREST)
        img = (PALETTE[seg].astype(np.float32) * rng.uniform(0.7, 1.1)
               + rng.normal(0, 12, (side, side, 3)))
        bgr = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(root / f"{fid:06d}.png"), bgr)
        cv2.imwrite(str(root / labels / f"{fid:06d}_seg.png"), seg)
        p5 = ARCFACE_TEMPLATE.astype(np.float64) @ a.T + t
        l68 = np.zeros((70, 2))
        l68[[36, 39]], l68[[42, 45]], l68[30], l68[48], l68[54] = p5[0], p5[1], p5[2], p5[3], p5[4]
        np.savetxt(root / f"{fid:06d}_ldmks.txt", l68, fmt="%.3f")
        rows.append((fid, 0 if fid in skip else 1))
    with open(root / "anno_list.csv", "w", newline="") as f:
        csv.writer(f).writerows([("frame_id", "with_25"), *rows])
    return root


@pytest.fixture(scope="session")
def fake_fs(tmp_path_factory) -> Path:
    return write_fake_facesynthetics(tmp_path_factory.mktemp("facesyn"), n=40, skip=(3,))


@pytest.fixture(scope="session")
def trained(fake_fs, tmp_path_factory) -> tuple[Path, dict]:
    """Four epochs of a feature_scale-16 parser on the fake folder
    (shared by the training/eval tests)."""
    out = tmp_path_factory.mktemp("train")
    torch.manual_seed(0)
    summary = P.train_parser(fake_fs, out, P.TrainSettings(epochs=4, batch_size=4, lr=1e-2,
                                                           feature_scale=SMALL, val_fraction=0.2,
                                                           workers=0, device="cpu", warmup_steps=1,
                                                           progress=False))
    return out, summary


# -------------------------------------------------------------------------------------------- model

def _published_layout(fs: int, n_classes: int = 25, cin: int = 3) -> dict[str, tuple[int, ...]]:
    """Key -> shape of gsisaoki/FSErasing's UNet_res18, derived by hand from its models/unet.py."""
    w = [c // fs for c in (64, 128, 256, 512, 1024)]
    keys: dict[str, tuple[int, ...]] = {}

    def bn(prefix, c):
        keys.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,),
                     f"{prefix}.running_mean": (c,), f"{prefix}.running_var": (c,),
                     f"{prefix}.num_batches_tracked": ()})

    keys["conv0.0.weight"] = (w[0], cin, 3, 3)
    bn("conv0.1", w[0])
    for i in range(1, 5):
        for b in range(2):
            p, cin_b = f"conv{i}.{b}", (w[i - 1] if b == 0 else w[i])
            keys[f"{p}.conv1.weight"] = (w[i], cin_b, 3, 3)
            bn(f"{p}.bn1", w[i])
            keys[f"{p}.conv2.weight"] = (w[i], w[i], 3, 3)
            bn(f"{p}.bn2", w[i])
            if b == 0:
                keys[f"{p}.downsample.0.weight"] = (w[i], w[i - 1], 1, 1)
                bn(f"{p}.downsample.1", w[i])
    for i in range(4, 0, -1):
        p = f"up_concat{i}"
        for j, c_in in ((1, w[i]), (2, w[i - 1])):
            keys[f"{p}.conv.conv{j}.0.weight"] = (w[i - 1], c_in, 3, 3)
            keys[f"{p}.conv.conv{j}.0.bias"] = (w[i - 1],)
            bn(f"{p}.conv.conv{j}.1", w[i - 1])
        keys[f"{p}.up.weight"] = (w[i], w[i - 1], 2, 2)
        keys[f"{p}.up.bias"] = (w[i - 1],)
    keys["final.weight"] = (n_classes, w[0], 1, 1)
    keys["final.bias"] = (n_classes,)
    return keys


def test_state_dict_matches_published_layout():
    with torch.device("meta"):
        model = P.UNetRes18(feature_scale=1)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = _published_layout(1)
    assert sorted(got) == sorted(expected) and len(got) == 192
    assert got == expected
    # issue 3: 56.8M at feature_scale 1
    assert sum(p.numel() for p in model.parameters()) == 56_779_481


@pytest.mark.parametrize("hw", [(112, 112), (100, 90)])
def test_forward_shapes(hw):
    model = P.UNetRes18(feature_scale=SMALL).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, *hw))
    assert y.shape == (2, NUM_CLASSES, *hw)
    with pytest.raises(ValueError, match="feature_scale"):
        P.UNetRes18(feature_scale=3)


# -------------------------------------------------------------------------------------- checkpoints

def _small_model(fs=SMALL, seed=0):
    torch.manual_seed(seed)
    m = P.UNetRes18(feature_scale=fs)
    with torch.no_grad():  # non-trivial BN statistics so a lost buffer shows
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module", "nested_module"])
@pytest.mark.parametrize("fs", [8, 16])
def test_load_parser_wrappers_infer_scale(tmp_path, wrap, fs):
    m = _small_model(fs)
    sd = m.state_dict()
    obj = {"plain": sd, "state_dict": {"state_dict": sd, "epoch": 3}, "model": {"model": sd},
           "module": {f"module.{k}": v for k, v in sd.items()},
           "nested_module": {"state_dict": {f"module.{k}": v for k, v in sd.items()}}}[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    loaded = P.load_parser(path)
    assert loaded.feature_scale == fs and not loaded.training
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))


def test_save_parser_roundtrip_and_meta(tmp_path):
    m = _small_model()
    path = P.save_parser(m, tmp_path / "p.pt", epoch=2, note="x")
    raw = torch.load(path, weights_only=True)
    assert raw["feature_scale"] == SMALL and raw["n_classes"] == 25 and raw["label_set"] == "fse25"
    assert raw["epoch"] == 2 and set(raw["model"]) == set(m.state_dict())
    assert P.load_parser(path).feature_scale == SMALL
    with pytest.raises(TypeError, match="meta\\['bad'\\]"):
        P.save_parser(m, tmp_path / "q.pt", bad=object())
    assert not (tmp_path / "q.pt").exists()


def test_load_parser_reports_all_problems_in_one_error(tmp_path):
    sd = _small_model().state_dict()
    sd.pop("up_concat2.up.bias")
    sd["extra.weight"] = torch.zeros(3)
    sd["conv1.0.conv2.weight"] = torch.zeros(1, 1, 3, 3)
    path = tmp_path / "broken.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(P.ParserCheckpointError) as e:
        P.load_parser(path)
    msg = str(e.value)
    assert str(path) in msg and "feature_scale=16" in msg
    assert "missing keys (1): up_concat2.up.bias" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "wrongly shaped (1): conv1.0.conv2.weight file [1, 1, 3, 3] model [8, 8, 3, 3]" in msg


def test_load_parser_refuses_unsafe_and_foreign_files(tmp_path):
    unsafe = tmp_path / "pickled_module.pt"
    torch.save(_small_model(), unsafe)  # a whole pickled nn.Module: not loadable with weights_only
    with pytest.raises(P.ParserCheckpointError, match="pickled_module.pt.*weights-only"):
        P.load_parser(unsafe)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(P.ParserCheckpointError, match="garbage.pt"):
        P.load_parser(garbage)
    other = tmp_path / "other_labels.pt"
    torch.save({"model": _small_model().state_dict(), "label_set": "celebamask19"}, other)
    with pytest.raises(P.ParserCheckpointError, match="other_labels.pt.*celebamask19"):
        P.load_parser(other)
    nosd = tmp_path / "nosd.pt"
    torch.save({"epoch": 1, "optim": {"lr": 0.1}}, nosd)
    with pytest.raises(P.ParserCheckpointError, match="nosd.pt.*no state_dict"):
        P.load_parser(nosd)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        P.load_parser(tmp_path / "missing.pt")


# ---------------------------------------------------------------------------------------- inference

def test_predict_masks_batches_agree():
    model = _small_model()
    imgs = np.random.default_rng(0).integers(0, 256, (7, 48, 48, 3), dtype=np.uint8)
    a = P.predict_masks(model, imgs, batch_size=3)
    b = P.predict_masks(model, torch.from_numpy(imgs), batch_size=64)
    assert a.shape == (7, 48, 48) and a.dtype == np.uint8 and a.max() < NUM_CLASSES
    np.testing.assert_array_equal(a, b)
    with torch.no_grad():
        ref = model(to_input(imgs)).argmax(1).numpy()
    np.testing.assert_array_equal(a, ref)
    # autocast path
    assert P.predict_masks(model, imgs, batch_size=4, precision="bf16").shape == (7, 48, 48)


# ------------------------------------------------------------------------------------- augmentation

def test_flip_keeps_anatomy():
    mask = _canonical_face()
    img = PALETTE[mask]
    fimg, fmask = flip_pair(img, mask)
    np.testing.assert_array_equal(fimg, img[:, ::-1])
    np.testing.assert_array_equal(fmask[:, ::-1], MIRROR[mask])  # pixels moved AND ids swapped
    def mean_x(m, name):
        return np.nonzero(m == class_id(name))[1].mean()
    # right_eye (named by the image's side) stays on the image-right, right_cheek (named by the
    # subject's) on the image-left
    for m in (mask, fmask):
        assert mean_x(m, "left_eye") < 56 < mean_x(m, "right_eye")
        assert mean_x(m, "right_cheek") < 56 < mean_x(m, "left_cheek")
    aug = P.ParserAugment(flip=1.0, p_affine=0.0, brightness=0, contrast=0, saturation=0, hue=0)
    _, amask = aug(img, mask, np.random.default_rng(0))
    np.testing.assert_array_equal(amask, fmask)


def test_augment_deterministic_labels_nearest():
    mask = _canonical_face()
    img = PALETTE[mask]
    aug = P.ParserAugment(p_affine=1.0)
    a = aug(img, mask, np.random.default_rng(5))
    b = aug(img, mask, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert (set(np.unique(a[1]))
            <= set(np.unique(mask)) | set(MIRROR[np.unique(mask)]) | {P.IGNORE_INDEX})
    assert a[0].dtype == np.uint8 and a[0].shape == img.shape
    assert "ParserAugment(flip=0.5" in repr(aug)


# --------------------------------------------------------------------------------------------- data

def test_read_anno_list_and_split(fake_fs, tmp_path):
    ids = P.read_anno_list(fake_fs)
    assert 3 not in ids and len(ids) == 39
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "anno_list.csv").write_text("frame_id,with_25\n0,1\nx,1\n")
    with pytest.raises(ValueError, match="anno_list.csv: row 3"):
        P.read_anno_list(bad)
    tr, va = P.split_indices(39, 0.2, seed=1)
    tr2, va2 = P.split_indices(39, 0.2, seed=1)
    assert (len(va) == 8 and np.array_equal(va, va2) and not set(tr) & set(va)
            and len(tr) + len(va) == 39)
    assert not np.array_equal(va, P.split_indices(39, 0.2, seed=2)[1])


def test_prepare_dataset_aligns_and_caches(fake_fs, tmp_path):
    a = P.prepare_dataset(fake_fs, tmp_path)
    assert a.images.shape == (39, 112, 112, 3) and a.masks.shape == (39, 112, 112)
    # the aligned label map is the canonical face up to border pixels of nearest-neighbour
    # resampling
    agree = (a.masks == _canonical_face()[None]).mean()
    assert agree > 0.97, agree
    stamp = (a.path / "images.npy").stat().st_mtime_ns
    b = P.prepare_dataset(fake_fs, tmp_path)
    assert b.path == a.path and (b.path / "images.npy").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("folder", ["labels_25", "labels25"])
def test_label_folder_either_spelling(tmp_path, folder):
    """The authors' README names the folder labels_25 and labels25 (labels_9 and labels9):
    both are read."""
    root = write_fake_facesynthetics(tmp_path / "fs", n=3, labels=folder)
    assert P.label_dir(root) == root / folder
    a = P.prepare_dataset(root, tmp_path / "cache", progress=False)
    assert a.masks.shape == (3, 112, 112) and (a.masks == _canonical_face()[None]).mean() > 0.97
    for nine in ("labels_9", "labels9"):
        (root / nine).mkdir()
        assert P.label_dir(root, 9) == root / nine
        (root / nine).rmdir()
    with pytest.raises(FSEError, match="labels_9/ or labels9/"):
        P.label_dir(root, 9)


def test_load_frame_errors_name_the_file(tmp_path):
    root = write_fake_facesynthetics(tmp_path / "fs", n=2)
    cv2.imwrite(str(root / "labels_25" / "000001_seg.png"), np.full((160, 160), 30, np.uint8))
    with pytest.raises(ValueError, match="000001_seg.png: values \\[30\\]"):
        P.load_frame(root, 1)
    (root / "000000_ldmks.txt").write_text("1 2\n3 4\n")
    with pytest.raises(ValueError, match="000000_ldmks.txt"):
        P.load_frame(root, 0)


# ----------------------------------------------------------------------------------------- training

def _train_loss(model, aligned, idx):
    x = to_input(np.asarray(aligned.images[idx]))
    y = torch.from_numpy(np.asarray(aligned.masks[idx]).astype(np.int64))
    with torch.no_grad():
        # train-mode BN (batch statistics): a few steps move the weights far more than the
        # running averages
        return float(torch.nn.functional.cross_entropy(model.train()(x), y,
                                                       ignore_index=P.IGNORE_INDEX))


def test_training_decreases_loss_and_resume_continues(fake_fs, trained):
    out, summary = trained
    assert summary.epochs == 4 and summary.n_val == 8 and summary.n_train == 31
    assert ((out / "last.pt").is_file() and (out / "best.pt").is_file()
            and any((out / "tb").iterdir()))
    aligned = P.prepare_dataset(fake_fs, out / "cache")
    idx = P.split_indices(39, 0.2, 0)[0]
    torch.manual_seed(0)
    init = _train_loss(P.UNetRes18(feature_scale=SMALL), aligned, idx)
    after = _train_loss(P.load_parser(out / "last.pt"), aligned, idx)
    assert after < 0.8 * init, (init, after)
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 4 and last["step"] == summary.steps and "optimizer" in last

    resumed = P.train_parser(fake_fs, out, P.TrainSettings(epochs=5, batch_size=4, lr=1e-2,
                                                           workers=0, device="cpu", resume="auto",
                                                           progress=False))
    assert resumed.epochs == 5 and resumed.steps == 5 * summary.steps // 4
    again = torch.load(out / "last.pt", weights_only=True)
    assert (again["epoch"] == 5 and again["feature_scale"] == SMALL
            and again["elapsed"] > last["elapsed"])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_step_budget_repeats_bit_for_bit(fake_fs, tmp_path):
    """A step budget is the whole schedule: the same seed gives the same weights, a generous time
    budget (a safety stop) changes nothing, and the summary carries the held-out scores the demo's
    floor reads."""
    kw = dict(batch_size=4, lr=1e-2, feature_scale=SMALL, val_fraction=0.2, workers=0, device="cpu",
              warmup_steps=2, progress=False, cache_dir=tmp_path / "cache")
    a = P.train_parser(fake_fs, tmp_path / "a", P.TrainSettings(steps=10, **kw))
    b = P.train_parser(fake_fs, tmp_path / "b", P.TrainSettings(steps=10, time_budget=3600.0, **kw))
    assert a.steps == b.steps == 10 and a.epochs == 2  # 31 faces: 7 batches of 4 per epoch
    wa, wb = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.val_mf1 == b.val_mf1 and 0 <= a.val_mf1 <= 1 and 0 <= a.val_miou <= 1
    assert a.best_val_miou >= a.val_miou and np.isfinite(a.best_val_mf1)
    # the same 2 epochs, cut at step 10
    c = P.train_parser(fake_fs, tmp_path / "c", P.TrainSettings(epochs=2, **kw))
    assert c.steps == 14 and not torch.equal(_weights(tmp_path / "c" / "last.pt")["final.bias"],
                                             wa["final.bias"])
    with pytest.raises(FSEError, match="epochs, steps or a time budget"):
        P.TrainSettings(epochs=None, **kw)


def test_interrupted_run_leaves_whole_files_and_resumes(fake_fs, tmp_path, monkeypatch):
    """Ctrl-C while aligning leaves no aligned cache (not even a temporary one); during the second
    epoch it leaves the first epoch's checkpoints whole, and --resume finishes the run."""
    from dataclasses import replace

    from fse_plugin.parsing import facesynthetics, train
    out = tmp_path / "out"
    settings = P.TrainSettings(epochs=2, batch_size=8, feature_scale=SMALL, workers=0, device="cpu",
                               progress=False, cache_dir=tmp_path / "cache")
    load, step = facesynthetics.load_frame, train._Run._step

    def load_until_5(root, fid, *args):
        if fid == 5:
            raise KeyboardInterrupt
        return load(root, fid, *args)
    monkeypatch.setattr(facesynthetics, "load_frame", load_until_5)
    with pytest.raises(KeyboardInterrupt):
        P.train_parser(fake_fs, out, settings)
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.setattr(facesynthetics, "load_frame", load)

    def step_in_epoch_0(self, *args):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return step(self, *args)
    monkeypatch.setattr(train._Run, "_step", step_in_epoch_0)
    with pytest.raises(KeyboardInterrupt):
        P.train_parser(fake_fs, out, settings)
    assert (torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
            and (out / "best.pt").is_file())
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    monkeypatch.setattr(train._Run, "_step", step)
    assert P.train_parser(fake_fs, out, replace(settings, resume="auto")).epochs == 2


def test_budget_schedule():
    from fse_plugin.parsing.budget import Budget
    steps = Budget.of(epochs=3, steps=None, time_budget=5.0, per_epoch=10)
    # time: a stop only
    assert (steps.steps, steps.epochs) == (30, 3) and steps.progress(15, elapsed=4.9) == 0.5
    # steps win over epochs
    assert Budget.of(epochs=3, steps=25, time_budget=None, per_epoch=10).epochs == 3
    timed = Budget.of(epochs=None, steps=None, time_budget=10.0, per_epoch=10)
    assert (timed.steps is None and timed.progress(3, elapsed=5.0) == 0.5
            and not timed.epochs_done(10 ** 6))
    assert "steps=30" in repr(steps)


def test_time_budget_stops_training(fake_fs, tmp_path):
    # timed
    s = P.train_parser(fake_fs, tmp_path, P.TrainSettings(epochs=None, batch_size=8,
                                                          feature_scale=SMALL, workers=0,
                                                          device="cpu", time_budget=1.0,
                                                          progress=False))
    assert (s.elapsed < 30
            and torch.load(tmp_path / "last.pt", weights_only=True)["budget_steps"] is None)
    with pytest.raises(FSEError, match="nothing.pt"):
        P.train_parser(fake_fs, tmp_path,
                       P.TrainSettings(resume=tmp_path / "nothing.pt", progress=False))


# ------------------------------------------------------------------------------------------ metrics

def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    gt = rng.choice([0, 1, 2, 5, 11, 12], size=(3, 20, 20))
    pred = np.where(rng.random(gt.shape) < 0.7, gt,
                    rng.choice([0, 1, 2, 5, 11, 12, 20], size=gt.shape))
    gt[0, :2] = P.IGNORE_INDEX  # ignored pixels count nowhere
    keep = gt != P.IGNORE_INDEX
    conf = P.confusion_matrix(pred, gt)
    np.testing.assert_array_equal(conf, sk_confusion(gt[keep], pred[keep],
                                                     labels=range(NUM_CLASSES)))
    m = P.ParserMetrics.from_confusion(conf)
    present = [0, 1, 2, 5, 11, 12]
    np.testing.assert_array_equal(np.nonzero(m.present)[0], present)
    np.testing.assert_allclose(m.f1[present],
                               f1_score(gt[keep], pred[keep], labels=present, average=None))
    np.testing.assert_allclose(m.iou[present],
                               jaccard_score(gt[keep], pred[keep], labels=present, average=None))
    assert m.mean_f1 == pytest.approx(f1_score(gt[keep], pred[keep], labels=present,
                                               average="macro"))
    assert m.mean_iou == pytest.approx(jaccard_score(gt[keep], pred[keep], labels=present,
                                                     average="macro"))
    assert m.f1[20] == 0 and np.isnan(m.f1[3])  # predicted-only class scores 0, unseen class is NaN


def test_metrics_hand_made_case():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 2]])
    m = P.ParserMetrics.from_confusion(P.confusion_matrix(pred, gt))
    # class 0: tp 3 fp 0 fn 1 -> F1 6/7, IoU 3/4; class 1: tp 3 fp 1 fn 1 -> F1 6/8, IoU 3/5
    assert m.f1[0] == pytest.approx(6 / 7) and m.iou[0] == pytest.approx(3 / 4)
    assert m.f1[1] == pytest.approx(6 / 8) and m.iou[1] == pytest.approx(3 / 5)
    assert m.mean_f1 == pytest.approx((6 / 7 + 6 / 8) / 2) and m.present.sum() == 2


def test_class_weights():
    masks = np.zeros((2, 10, 20), np.uint8)
    masks[:, :, :5] = 1  # 300 px of class 0, 100 px of class 1, nothing else
    masks[0, 0, 0] = P.IGNORE_INDEX  # ignored pixels are not counted
    w = P.class_weights(masks, power=0.5).numpy()
    raw = np.sqrt(399 / np.array([300, 99]))
    np.testing.assert_allclose(w[:2], raw / raw.mean(), rtol=1e-6)
    assert np.all(w[2:] == 1) and w[1] > w[0]
    np.testing.assert_array_equal(P.class_weights(masks, power=0).numpy(), np.ones(NUM_CLASSES))


def test_eval_parser_cli(fake_fs, trained, capsys):
    out, _ = trained
    csv_path = out / "eval.csv"
    assert cli_main(["parser", "eval", "--data", str(fake_fs), "--parser", str(out / "best.pt"),
                     "--csv", str(csv_path), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "val split, 8 faces" in printed and "mean over" in printed
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == NUM_CLASSES + 1 and rows[-1]["class"] == "mean_present"
    found = P.evaluate_checkpoint(fake_fs, out / "best.pt", P.EvalSettings(device="cpu"))
    assert float(rows[-1]["f1"]) == pytest.approx(found.metrics.mean_f1) and found.n == 8


def test_train_cli_step_budget(fake_fs, tmp_path, capsys):
    assert cli_main(["parser", "train", "--data", str(fake_fs), "--out", str(tmp_path),
                     "--steps", "3", "--batch-size", "4", "--feature-scale", str(SMALL),
                     "--num-workers", "0", "--device", "cpu", "--quiet"]) == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    assert "steps=3 " in summary and "val_mf1=" in summary and "best_val_mf1=" in summary
    assert torch.load(tmp_path / "last.pt", weights_only=True)["budget_steps"] == 3


@pytest.mark.parametrize("cmd", ["train", "eval"])
def test_cli_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["parser", cmd, "--help"])
    assert e.value.code == 0 and "--data" in capsys.readouterr().out
