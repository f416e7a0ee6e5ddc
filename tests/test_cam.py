"""FS-CAM, ablation and pixel CAMs on PLANTED models whose output depends on one known region
only."""
import csv
import json
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from easydict import EasyDict
from torch import nn

from fse_plugin import cam
from fse_plugin.common import FSEError
from fse_plugin.labels import NUM_CLASSES

H = W = 64
PLANTED = 10  # nose
REPO = Path(__file__).resolve().parents[1]


def layout() -> torch.Tensor:
    """A fixed face-like 64x64 label map: hair on top, eyes, nose (planted), mouth, neck,
    background."""
    m = torch.zeros(H, W, dtype=torch.long)
    m[8:56, 8:56] = 1
    m[8:24, 8:56] = 21
    m[24:40, 8:24] = 11
    m[24:40, 40:56] = 12
    m[24:44, 26:38] = PLANTED
    m[46:56, 20:44] = 17
    m[56:, :] = 20
    m[0:2, 0:2] = cam.IGNORE
    return m


class Planted(nn.Module):
    """Embedding (or logits) from conv features of ``x * region``: pixels outside the region cannot
    matter, yet the model has conv layers and gradients for the pixel CAMs."""

    def __init__(self, region: torch.Tensor, dim: int = 32, n_classes: int | None = None) -> None:
        super().__init__()
        self.register_buffer("region", region.float()[None, None])
        self.layers = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.ReLU(),
                                                  nn.Conv2d(8, 16, 4, 4, bias=False), nn.ReLU()))
        self.fc = nn.Linear(16 * (H // 4) * (W // 4), dim, bias=False)
        self.head = nn.Linear(dim, n_classes, bias=False) if n_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.fc(self.layers(x * self.region).flatten(1))
        return self.head(e) if self.head is not None else e


@pytest.fixture(scope="module")
def planted():
    torch.manual_seed(0)
    lay = layout()
    masks = lay[None].repeat(4, 1, 1)
    x = torch.randn(4, 3, H, W).clamp(-1, 1)
    x2 = (x + 0.2 * torch.randn_like(x)).clamp(-1, 1)  # the other image of each genuine pair
    model = Planted(lay == PLANTED).eval()
    clf = Planted(lay == PLANTED, n_classes=10).eval()
    return model, clf, x, x2, masks


def top(values) -> np.ndarray:
    return np.nanargmax(np.asarray(values, dtype=np.float64), 1)


# ------------------------------------------------------------------------------- FS-CAM

@pytest.mark.parametrize("kind", ["pair", "self", "class"])
def test_fscam_puts_planted_region_first(planted, kind):
    model, clf, x, x2, masks = planted
    if kind == "class":
        net, target = clf, None
    else:
        net = model
        target = (cam.pair_target(model, x, x2).take(slice(0, 4)) if kind == "pair"
                  else cam.self_target(model, x))
    scores, maps = cam.fs_cam(net, x, masks, target)
    assert (top(scores) == PLANTED).all()
    present = set(torch.unique(masks[0]).tolist()) - {cam.IGNORE}
    assert {k for k in range(NUM_CLASSES) if not torch.isnan(scores[0, k])} == present
    for k in present:  # piecewise constant: one value per region, the normalised score
        vals = maps[0][masks[0] == k]
        assert torch.allclose(vals, vals[0].expand_as(vals))
        assert vals[0] == pytest.approx(float(cam.normalise_scores(scores)[0, k]), abs=1e-6)
    assert maps.min() >= 0 and maps.max() == pytest.approx(1.0)
    assert (maps[:, masks[0] == cam.IGNORE] == 0).all()


def test_fscam_matches_reference_definition(planted):
    """Naive per-image, per-class loop of the reference FS-CAM definition on a classifier."""
    _, clf, x, _, masks = planted
    scores, _ = cam.fs_cam(clf, x, masks, batch_size=30)
    with torch.no_grad():
        for i in range(len(x)):
            t = int(clf(x[i:i + 1]).argmax())
            for k in range(NUM_CLASSES):
                keep = masks[i] == k
                if not keep.any():
                    assert torch.isnan(scores[i, k])
                    continue
                s = torch.softmax(clf((x[i] * keep)[None]), 1)[0, t]
                assert float(scores[i, k]) == pytest.approx(float(s), abs=1e-6)


def test_fscam_independent_of_batching(planted):
    model, _, x, x2, masks = planted
    target = cam.pair_target(model, x, x2).take(slice(0, 4))
    a, ma = cam.fs_cam(model, x, masks, target, batch_size=26)
    b, mb = cam.fs_cam(model, x, masks, target, batch_size=520)
    c = torch.cat([cam.fs_cam(model, x[i:i + 1], masks[i:i + 1], target[i])[0] for i in range(4)])
    for other in (b, c):
        assert torch.allclose(a.nan_to_num(-9), other.nan_to_num(-9), atol=1e-5)
    assert torch.allclose(ma, mb, atol=1e-5)


def test_fscam_uint8_input_and_bad_masks(planted):
    model, _, x, _, masks = planted
    imgs = ((x.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    scores, _ = cam.fs_cam(model, imgs, masks.numpy(), cam.self_target(model, imgs))
    assert (top(scores) == PLANTED).all()
    bad = masks.clone()
    bad[2, 5, 5] = 30
    with pytest.raises(ValueError, match="mask 2 holds label 30"):
        cam.fs_cam(model, x, bad)
    with pytest.raises(ValueError, match="does not match"):
        cam.fs_cam(model, x, masks[:, :32])
    with pytest.raises(ValueError, match="3 entries for 4 images"):
        cam.fs_cam(model, x, masks, cam.EmbeddingTarget(torch.randn(3, 32)))


# ------------------------------------------------------------------------------- ablation

def test_ablation_puts_planted_region_first(planted):
    model, _, x, x2, masks = planted
    target = cam.pair_target(model, x, x2).take(slice(0, 4))
    drops, maps = cam.region_ablation(model, x, masks, target, fill=0.0)
    assert (top(drops) == PLANTED).all()
    others = drops.clone()
    others[:, PLANTED] = float("nan")
    # erasing a region the model ignores changes nothing
    assert np.nanmax(np.abs(others.numpy())) < 1e-5
    assert (maps[masks == PLANTED] == 1).all()
    r1, _ = cam.region_ablation(model, x, masks, target, fill="random", seed=3)
    r2, _ = cam.region_ablation(model, x, masks, target, fill="random", seed=3)
    assert (top(r1) == PLANTED).all() and torch.equal(r1.nan_to_num(0), r2.nan_to_num(0))
    with pytest.raises(ValueError, match="fill"):
        cam.region_ablation(model, x, masks, target, fill="blue")


# ------------------------------------------------------------------------------- pixel CAMs

@pytest.mark.parametrize("method", cam.PIXEL_METHODS)
def test_pixel_methods_put_planted_region_first(planted, method):
    model, _, x, x2, masks = planted
    n = 2 if method == "rise" else 4
    target = cam.pair_target(model, x, x2).take(slice(0, 4))
    opts = {"n_masks": 400, "batch_size": 200} if method == "rise" else {}
    maps = cam.pixel_cam(model, x[:n], target.take(slice(0, n)), method=method, **opts)
    assert maps.shape == (n, H, W) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    mean, share = cam.aggregate_per_region(maps, masks[:n])
    assert (top(mean) == PLANTED).all()
    if method != "rise":  # RISE maps are diffuse: share of mass follows area there (see report)
        assert (top(share) == PLANTED).all()


@pytest.mark.parametrize("method,cls", [("gradcam", "GradCAM"), ("gradcam++", "GradCAMPlusPlus"),
                                        ("layercam", "LayerCAM"), ("scorecam", "ScoreCAM")])
def test_pixel_cam_agrees_with_library(planted, method, cls):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import (ClassifierOutputSoftmaxTarget,
                                                      ClassifierOutputTarget)
    model, clf, x, x2, _ = planted
    layer = clf.layers[-1]
    ids = clf(x).argmax(1).tolist()
    with getattr(pytorch_grad_cam, cls)(clf, [layer]) as direct:
        want_soft = direct(input_tensor=x, targets=[ClassifierOutputSoftmaxTarget(c) for c in ids])
        want_raw = direct(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in ids])
    np.testing.assert_allclose(cam.pixel_cam(clf, x, None, method, target_layer="layers.0"),
                               want_soft, atol=1e-5)
    np.testing.assert_allclose(cam.pixel_cam(clf, x, cam.ClassTarget(ids, softmax=False), method),
                               want_raw, atol=1e-5)
    ref = model(x2).detach()
    with getattr(pytorch_grad_cam, cls)(model, [model.layers[-1]]) as direct:
        want = direct(input_tensor=x,
                      targets=[lambda o, r=r: F.cosine_similarity(o, r, dim=-1) for r in ref])
    np.testing.assert_allclose(cam.pixel_cam(model, x, cam.EmbeddingTarget(ref), method), want,
                               atol=1e-5)


def test_default_target_layer():
    from fse_plugin.backbone import iresnet_tiny
    tiny = iresnet_tiny()
    assert cam.default_target_layer(tiny) is tiny.layers[-1]

    class WithLayer4(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer4 = nn.Conv2d(3, 3, 1)
    m = WithLayer4()
    assert cam.default_target_layer(m) is m.layer4
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.Flatten())
    assert cam.default_target_layer(plain) is plain[2]
    assert cam.resolve_layer(plain, "0") is plain[0]
    with pytest.raises(ValueError, match="target layer 'nope' not found"):
        cam.resolve_layer(plain, "nope")
    with pytest.raises(ValueError, match="TorchScript"):
        cam.default_target_layer(torch.jit.script(plain))
    with pytest.raises(ValueError, match="unknown pixel CAM"):
        cam.make_pixel_cam("gradcam+++", plain)


# ------------------------------------------------------------------------------- targets

def test_target_maths():
    torch.manual_seed(1)
    out, ref = torch.randn(5, 8), torch.randn(5, 8)
    t = cam.EmbeddingTarget(ref)
    idx = torch.tensor([4, 0, 2, 2, 1])
    assert torch.allclose(t.score(out, idx), F.cosine_similarity(out, ref[idx], dim=1), atol=1e-6)
    assert torch.allclose(t[3](out[0]), F.cosine_similarity(out[0], ref[3], dim=0), atol=1e-6)
    assert t[3](out).shape == (5,)
    # an all-zero embedding has no similarity
    assert float(t.score(torch.zeros(1, 8), torch.tensor([0]))) == 0.0
    with pytest.raises(ValueError, match="use target\\[i\\]"):
        t(out[0])

    logits = torch.randn(3, 6)
    c = cam.ClassTarget()
    with pytest.raises(ValueError, match="resolved"):
        c.score(logits, torch.arange(3))
    r = c.resolve(logits)
    assert torch.equal(r.ids, logits.argmax(1))
    assert torch.allclose(r.score(logits, torch.arange(3)), logits.softmax(1).max(1).values)
    raw = cam.ClassTarget(2, softmax=False)
    assert torch.allclose(raw.score(logits, torch.arange(3)), logits[:, 2]) and raw[1] is raw

    class Emb(nn.Module):
        def forward(self, x):
            return x.flatten(1)
    a, b = torch.randn(3, 3, 2, 2), torch.randn(3, 3, 2, 2)
    p = cam.pair_target(Emb(), a, b)
    both = torch.cat([a, b]).flatten(1)
    assert torch.allclose(p.score(both, torch.arange(6)),
                          F.cosine_similarity(both, torch.cat([b, a]).flatten(1), dim=1), atol=1e-6)
    labels = [7, 7, 7, 9, 5, 5]
    imgs = torch.randn(6, 3, 2, 2)
    e = F.normalize(imgs.flatten(1), dim=1)
    it = cam.identity_target(Emb(), imgs, labels)
    want = torch.stack([e[1] + e[2], e[0] + e[2], e[0] + e[1], e[3], e[5], e[4]])
    assert torch.allclose(it.ref, F.normalize(want, dim=1), atol=1e-6)


# ------------------------------------------------------------------------------- aggregation, stats

def test_aggregate_per_region():
    masks = np.zeros((2, 2, 3), np.uint8)
    masks[0] = [[1, 1, 10], [10, 10, 255]]
    masks[1] = [[0, 0, 0], [0, 0, 0]]
    maps = np.array([[[0.2, 0.4, 1.0], [0.5, 0.0, 0.9]], [[0.0] * 3, [0.0] * 3]], np.float32)
    mean, share = cam.aggregate_per_region(maps, masks)
    assert mean[0, 1] == pytest.approx(0.3) and mean[0, 10] == pytest.approx(0.5)
    assert share[0, 1] == pytest.approx(0.6 / 3.0) and share[0, 10] == pytest.approx(1.5 / 3.0)
    assert np.isnan(mean[0, 0]) and np.isnan(share[0, 2]) and mean[1, 0] == 0 and share[1, 0] == 0


@pytest.mark.parametrize("ci", ["bootstrap", "t"])
def test_region_stats_intervals(ci):
    rng = np.random.default_rng(0)
    v = np.full((400, NUM_CLASSES), np.nan)
    v[:, 10] = rng.normal(0.8, 0.1, 400)
    v[:200, 1] = rng.normal(0.3, 0.2, 200)
    v[0, 21] = 0.5
    st = cam.region_stats(v, ci=ci, seed=0)
    assert st.n[10] == 400 and st.n[1] == 200 and st.n[21] == 1 and st.n[0] == 0
    for k, mu in ((10, 0.8), (1, 0.3)):
        assert st.lo[k] < st.mean[k] < st.hi[k] and st.lo[k] < mu < st.hi[k]
    width = st.hi - st.lo
    assert width[10] == pytest.approx(2 * 1.96 * 0.1 / 20, rel=0.25)
    assert width[1] > width[10]
    assert st.mean[21] == 0.5 and np.isnan(st.lo[21]) and np.isnan(st.mean[0])
    again = cam.region_stats(v, ci=ci, seed=0)
    np.testing.assert_array_equal(np.nan_to_num(again.lo), np.nan_to_num(st.lo))
    diff = cam.compare_stats(v, v + 0.1, ci=ci)
    assert diff.mean[10] == pytest.approx(0.1) and diff.lo[10] == pytest.approx(0.1)
    with pytest.raises(FSEError, match="ci: 'normal' is not one of bootstrap, t"):
        cam.region_stats(v, ci="normal")


# ------------------------------------------------------------------------------- files, CLI, hook

def _save_tiny(path: Path, seed: int) -> Path:
    from fse_plugin.backbone import iresnet_tiny
    torch.manual_seed(seed)
    torch.save(iresnet_tiny().state_dict(), path)
    return path


def test_explain_pairs_writes_tables_and_report(planted, tmp_path):
    model, _, x, x2, masks = planted
    other = Planted(layout() == 21).eval()
    st = cam.ExplainSettings(methods=("fscam", "gradcam"), images_per_step=3, grid=3,
                             progress=False, report="html")
    res = cam.explain_pairs({"nose": model, "hair": other}, x, x2, masks, masks, tmp_path, st)
    assert list(res.results) == ["nose", "hair"] and list(res.results["hair"]) == ["fscam", "gradcam"]
    fscam = res.results["nose"]["fscam"]
    assert fscam.values.importance.shape == fscam.values.measure.shape == (8, NUM_CLASSES)
    assert fscam.values.measure_kind == "score" and fscam.maps.shape == (3, H, W) and fscam.ms_per_image > 0
    assert res.results["nose"]["gradcam"].values.measure_kind == "share"
    assert np.nanargmax(fscam.stats.importance.mean) == PLANTED
    assert np.nanargmax(res.results["hair"]["gradcam"].stats.importance.mean) == 21
    cmp = res.comparison["fscam"].importance
    assert cmp.mean[21] > 0 > cmp.mean[PLANTED]
    for f in res.files.values():
        assert f.is_file() and f.stat().st_size > 0
    assert "<img src='compare.png'" in res.report.read_text()
    # the typed result, as the file lays it out
    doc = json.loads(res.files["region_scores_json"].read_text())
    assert list(doc["stats"]["nose"]["fscam"]) == ["importance", "score"]
    assert doc["stats"]["hair"]["gradcam"]["share"]["n"] == [float(n) for n in
                                                             res.results["hair"]["gradcam"].stats.measure.n]
    assert list(doc["comparison"]["gradcam"]) == ["importance", "share"]
    assert len(doc["tables"]["nose"]["fscam"]["importance"]) == 8 and doc["meta"]["models"] == ["nose", "hair"]


@pytest.mark.parametrize("field,value,said", [
    ("methods", "fscam,gradcam,fscam", "ExplainSettings.methods: fscam given more than once"),
    ("methods", ["fscm"], "ExplainSettings.methods: unknown name fscm"),
    ("batch_size", 0, "ExplainSettings.batch_size: must be >= 1, got 0"),
    ("images_per_step", 2.0, "ExplainSettings.images_per_step: expected a whole number"),
    ("grid", True, "ExplainSettings.grid: expected a whole number"),
    ("seed", -1, "ExplainSettings.seed: must be >= 0"),
    ("precision", "amp", "ExplainSettings.precision: 'amp' is not one of fp32, fp16, bf16"),
    ("ci", "normal", "ExplainSettings.ci: 'normal' is not one of bootstrap, t"),
    ("report", "pdf", "ExplainSettings.report: 'pdf' is not one of md, html"),
    ("target", "centroid",
     "ExplainSettings.target: 'centroid' is not one of class, pair, identity, self"),
    ("options", {"rsie": {"n_masks": 4}}, "ExplainSettings.options: unknown name rsie"),
])
def test_settings_refuse_what_cannot_run(field, value, said):
    with pytest.raises(FSEError) as e:
        cam.ExplainSettings(**{field: value})
    assert str(e.value).startswith(said)


def test_settings_normalise_what_they_accept():
    st = cam.ExplainSettings(methods="FSCAM, gradcam", fill="random", options={"rise": {"s": 3}})
    assert st.methods == ("fscam", "gradcam") and st.fill == "random" and st.options == {"rise": {"s": 3}}
    assert cam.ExplainSettings(fill=1).fill == 1.0
    with pytest.raises(ValueError, match="fill"):
        cam.ExplainSettings(fill="blue")


def test_front_doors_refuse_before_running(planted, tmp_path):
    model, _, x, x2, masks = planted
    with pytest.raises(FSEError,
                       match="target must be one of 'pair', 'self', 'class' here, got 'identity'"):
        cam.explain_pairs(model, x, x2, masks, masks, tmp_path,
                          cam.ExplainSettings(target="identity"))
    with pytest.raises(FSEError, match="pair sides differ in length"):
        cam.explain_pairs(model, x, x2[:3], masks, masks, tmp_path)
    with pytest.raises(FSEError, match="'a/b' cannot name files"):
        cam.explain_pairs({"a/b": model}, x, x2, masks, masks, tmp_path)
    with pytest.raises(FSEError, match="3 row labels for 8 images"):
        cam.explain_pairs(model, x, x2, masks, masks, tmp_path, row_labels=["a", "b", "c"])
    assert not list(tmp_path.iterdir())


def test_interrupted_run_leaves_no_result(planted, tmp_path, monkeypatch):
    """An earlier run's tables and page are gone once a run starts; a table interrupted while it is
    written is absent, not half there."""
    import importlib
    # the module; the package's ``explain`` is the function
    explain = importlib.import_module("fse_plugin.cam.explain")
    report = importlib.import_module("fse_plugin.cam.report")
    model, _, x, x2, masks = planted
    st = cam.ExplainSettings(grid=2, progress=False)
    cam.explain_pairs(model, x, x2, masks, masks, tmp_path, st)
    assert {"report.md", "region_scores.json", "region_scores.csv"} <= {p.name for p in tmp_path.iterdir()}

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(explain, "run_method", interrupt)
        with pytest.raises(KeyboardInterrupt):
            cam.explain_pairs(model, x, x2, masks, masks, tmp_path, st)
    assert not {p.name for p in tmp_path.iterdir()} & set(report.RESULT_FILES)

    class BrokenWriter:
        def __init__(self, f):
            self.rows = 0

        def writerow(self, row):
            self.rows += 1
            if self.rows > 3:
                raise KeyboardInterrupt
    monkeypatch.setattr(report.csv, "writer", BrokenWriter)
    with pytest.raises(KeyboardInterrupt):
        cam.explain_pairs(model, x, x2, masks, masks, tmp_path, st)
    names = {p.name for p in tmp_path.iterdir()}
    assert not names & set(report.RESULT_FILES) and not [n for n in names if ".tmp-" in n]


def test_cli_end_to_end(synth_bin, tmp_path):
    from fse_plugin.cli import main
    w1, w2 = _save_tiny(tmp_path / "a.pt", 0), _save_tiny(tmp_path / "b.pt", 1)
    out = tmp_path / "out"
    rc = main(["cam", "--pack", str(synth_bin), "--weights", str(w1), "--weights2", str(w2),
               "--methods", "fscam,ablation,gradcam", "--limit", "2", "--grid", "2", "--out",
               str(out), "--quiet"])
    assert rc == 0
    for name in ("overlay_baseline.png", "overlay_fse.png", "importance_baseline.png",
                 "importance_fse.png", "compare.png", "region_scores.csv", "region_stats.csv",
                 "region_scores.json", "report.md"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(out / "region_scores.csv")))
    assert len(rows) == 2 * 3 * 2 * 4  # models x methods x kinds x images (2 genuine pairs)
    stats = list(csv.DictReader(open(out / "region_stats.csv")))
    assert {r["model"] for r in stats} == {"baseline", "fse", "fse-baseline"}
    doc = json.loads((out / "region_scores.json").read_text())
    assert doc["meta"]["n_images"] == 4 and doc["meta"]["target"] == "pair"
    assert len(doc["stats"]["fse"]["ablation"]["drop"]["mean"]) == NUM_CLASSES
    report = (out / "report.md").read_text()
    assert "![baseline overlays](overlay_baseline.png)" in report and "fse vs baseline" in report


def test_explain_rec_with_mask_cache(synth_rec, synth_cache, tmp_path):
    gt = np.load(synth_rec / "gt_masks.npz")
    from fse_plugin.backbone import iresnet_tiny
    torch.manual_seed(0)
    res = cam.explain_rec(iresnet_tiny().eval(), synth_rec, tmp_path / "rec",
                          cam.ExplainSettings(grid=2, progress=False), limit=8,
                          mask_cache=synth_cache)
    scores = res.results["model"]["fscam"].values.measure
    assert scores.shape == (8, NUM_CLASSES)
    presence = ~np.isnan(scores)
    want = np.stack([np.bincount(m.ravel(), minlength=256)[:NUM_CLASSES] > 0
                     for m in gt["masks"][:8]])
    assert (presence == want).all()


class FakeWriter:
    def __init__(self):
        self.scalars, self.images = [], []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_image(self, tag, img, step, dataformats="CHW"):
        self.images.append((tag, img, step, dataformats))


@pytest.fixture
def training_log(arcface_torch_dir, tmp_path, monkeypatch):
    """arcface_torch's own ``init_logging`` (rank 0) into tmp_path/training.log, undone afterwards.
    The ``fse_plugin`` logger is as in a training process, unconfigured (an in-process ``fse`` run
    sets its level and stops it propagating)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_upstream_utils_logging",
                                                  arcface_torch_dir / "utils" / "utils_logging.py")
    upstream = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(upstream)
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    ours = logging.getLogger("fse_plugin")
    monkeypatch.setattr(ours, "propagate", True)
    ours_level = ours.level
    ours.setLevel(logging.NOTSET)
    upstream.init_logging(0, str(tmp_path))
    yield tmp_path / "training.log"
    ours.setLevel(ours_level)
    for handler in set(root.handlers) - set(before):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def test_training_hook_logs_fscam(synth_bin, tmp_path, training_log):
    from fse_plugin.backbone import iresnet_tiny
    rec = tmp_path / "rec"
    rec.mkdir()
    shutil.copy(synth_bin, rec / "lfw.bin")
    shutil.copy(synth_bin.with_name("synth.masks.npy"), rec / "lfw.masks.npy")
    cfg = EasyDict(rec=str(rec), val_targets=["lfw", "cfp_fp"], verbose=2,
                   fse_cam=dict(targets=["lfw", "cfp_fp"], every=4, pairs=2, images=2))
    calls = []
    writer = FakeWriter()
    cb = cam.FSCAMCallback(cfg, writer, lambda step, bb: calls.append(step), rank=0)
    assert [p[0] for p in cb.packs] == ["lfw"]
    torch.manual_seed(0)
    backbone = iresnet_tiny().train()
    for step in (2, 4, 6, 8, 9):
        cb(step, backbone)
    assert calls == [2, 4, 6, 8, 9] and backbone.training
    steps = sorted({s for _, _, s in writer.scalars})
    assert steps == [4, 8]
    tags = {t for t, _, s in writer.scalars if s == 4}
    assert "fse_cam_lfw/seconds" in tags and "fse_cam_lfw/nose" in tags
    assert all(0 <= v <= 1 for t, v, _ in writer.scalars if not t.endswith("seconds"))
    tag, img, step, fmt = writer.images[0]
    assert tag == "fse_cam_lfw/overlay" and fmt == "HWC" and img.dtype == np.uint8 and img.shape == (224, 336, 3)
    # the hook's messages, in upstream's format and file
    log_lines = training_log.read_text().splitlines()
    for said in ("cfp_fp.bin not found, no FS-CAM for cfp_fp",
                 "fse_cam: lfw: 2 genuine pairs, masks from", "[lfw][4] FS-CAM top regions:",
                 "[lfw][8] FS-CAM top regions:"):
        assert any(line.startswith("Training: ") and said in line for line in log_lines), said

    other = cam.FSCAMCallback(cfg, writer, None, rank=1)
    other(8, backbone)
    assert other.packs == [] and len(writer.images) == 2


@pytest.mark.parametrize("entry,said", [
    ({"pair": 3}, "config.fse_cam: unknown keys ['pair']"),
    ({"every": 0}, "config.fse_cam.every: must be >= 1, got 0"),
    ({"pairs": 2.5}, "config.fse_cam.pairs: expected a whole number"),
    ({"images": -1}, "config.fse_cam.images: must be >= 0"),
    ({"batch_size": True}, "config.fse_cam.batch_size: expected a whole number"),
    ({"precision": "fp8"}, "config.fse_cam.precision: 'fp8' is not one of fp32, fp16, bf16"),
    ({"targets": ["lfw", "lfw"]}, "config.fse_cam.targets: lfw given more than once"),
    ({"targets": 3}, "config.fse_cam.targets: expected a list of pack names"),
    ({"amp": True, "precision": "bf16"}, "config.fse_cam: give precision only"),
    ({"amp": 1}, "config.fse_cam.amp: 1 is not one of True, False"),
])
def test_training_hook_refuses_bad_config(entry, said):
    with pytest.raises(FSEError) as e:
        cam.FSCAMCallback(EasyDict(rec=".", val_targets=["lfw"], verbose=2, fse_cam=entry), None,
                          rank=1)
    assert str(e.value).startswith(said)


def test_training_hook_amp_is_deprecated_bf16():
    cfg = EasyDict(rec=".", val_targets=["lfw"], verbose=2, fse_cam={"amp": True})
    with pytest.warns(DeprecationWarning, match="config.fse_cam.amp is deprecated"):
        cb = cam.FSCAMCallback(cfg, None, rank=1)
    assert cb.options.precision == "bf16" and cb.options.targets == ("lfw",) and cb.every == 2


def _apply(patch: Path, where: Path) -> None:
    subprocess.run(["git", "apply", str(patch)], cwd=where, check=True, capture_output=True,
                   env={"GIT_CEILING_DIRECTORIES": str(where.parent),
                        "PATH": "/usr/bin:/bin:/usr/local/bin"})


def test_patch_applies_with_dataset_patch_in_either_order(arcface_torch_dir, tmp_path):
    ours = REPO / "patches" / "0002-fse-cam.patch"
    others = sorted(p for p in {*(REPO / "patches").glob("*.patch"), *(REPO / "fse_plugin" / "patches").glob("*.patch")}
                    if p.name != ours.name)
    for order in ([ours, *others], [*others, ours]):
        tree = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
        shutil.copytree(arcface_torch_dir, tree)
        for p in order:
            _apply(p, tree)
        src = (tree / "train_v2.py").read_text()
        compile(src, "train_v2.py", "exec")
        assert "callback_verification = FSCAMCallback(cfg, summary_writer, callback_verification)" in src
        assert src.index("FSCAMCallback(cfg") > src.index("callback_logging = CallBackLogging(")
