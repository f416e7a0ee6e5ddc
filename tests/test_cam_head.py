"""The reference FS-CAM target for checkpoints with a classifier head, which target ran, random
weights refused."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_cam import PLANTED, Planted, _save_tiny, layout, top

from fse_plugin import cam
from fse_plugin.common import FSEError


@pytest.fixture(scope="module")
def with_head():
    torch.manual_seed(0)
    lay = layout()
    backbone = Planted(lay == PLANTED).eval()
    head = torch.randn(10, 32)
    x = torch.randn(4, 3, *lay.shape).clamp(-1, 1)
    return backbone, head, x, lay[None].repeat(4, 1, 1)


def test_identity_logits_are_scaled_cosines(with_head):
    backbone, head, x, _ = with_head
    model = cam.IdentityLogits(backbone, head, scale=30.0)
    with torch.no_grad():
        want = 30.0 * F.cosine_similarity(backbone(x)[:, None], head[None], dim=2)
        assert torch.allclose(model(x), want, atol=1e-5)
    assert model.num_classes == 10 and "num_classes=10, scale=30" in repr(model)
    assert cam.default_target_layer(model) is backbone.layers[-1]  # pixel CAMs hook the backbone
    assert cam.resolve_layer(model, "layers.0") is backbone.layers[0]
    with pytest.raises(ValueError, match="expects 16"):
        cam.IdentityLogits(backbone, torch.randn(10, 16))(x)


@pytest.mark.parametrize("method", ["fscam", "ablation", "gradcam", "layercam"])
def test_class_target_on_the_head_puts_planted_region_first(with_head, method):
    backbone, head, x, masks = with_head
    model = cam.explained_model(backbone, head, "class")
    target = cam.ClassTarget()
    if method in cam.REGION_METHODS:
        values = cam.run_method(method, model, x, masks, target,
                                cam.ExplainSettings())[0].importance
    else:
        values = cam.aggregate_per_region(cam.pixel_cam(model, x, target, method), masks)[0]
    assert (top(values) == PLANTED).all()
    assert cam.explained_model(backbone, None, "class") is backbone
    assert cam.explained_model(backbone, head, "pair") is backbone


def test_choose_target_defaults_and_words():
    heads, weights = {"a": 93431, "b": 93431}, {"a": "a.pt", "b": "b.pt"}
    c = cam.choose_target(None, "identity", heads, weights)
    assert c.kind == "class" and "classifier head (93,431 classes; cosine x 64, softmax)" in c.description
    c = cam.choose_target(None, "pair", {"a": 93431, "b": None}, weights)
    assert c.kind == "pair" and c.description.endswith("(no classifier head in b.pt)")
    c = cam.choose_target(None, "pair", {"a": None}, {"a": None})
    assert "no classifier head in the randomly initialised model" in c.description
    assert cam.choose_target("self", "pair", heads, weights).description == cam.TARGETS["self"]
    with pytest.raises(FSEError, match="--target class needs a classifier head, and a.pt has none"):
        cam.choose_target("class", "identity", {"a": None}, weights)
    assert "scripted" in cam.choose_target("class", "pair", {"a": None}, weights, scripted=True).description


def _run(argv, capsys):
    from fse_plugin.cli import main
    rc = main(argv)
    return rc, capsys.readouterr()


def test_cli_uses_the_head_and_says_so(synth_bin, synth_rec, synth_cache, tmp_path, capsys,
                                       monkeypatch):
    from fse_plugin import backbone
    real = backbone.load_recognizer
    head = torch.randn(12, 512)
    monkeypatch.setattr(backbone, "load_recognizer", lambda *a, **k: (real(*a, **k)[0], head))
    weights = _save_tiny(tmp_path / "w.pt", 0)
    for source in (["--pack", str(synth_bin)],
                   ["--rec", str(synth_rec), "--mask-cache", str(synth_cache)]):
        out = tmp_path / source[0][2:]
        rc, io = _run(["cam", *source, "--weights", str(weights), "--limit", "2", "--grid", "2",
                       "--out", str(out)], capsys)
        assert rc == 0, io.err
        said = ("FS-CAM target: identity logits of the checkpoint's classifier head (12 classes; "
                "cosine x 64, softmax)")
        # logged (stderr) and reported
        assert said in io.err and said in (out / "report.md").read_text()
        meta = json.loads((out / "region_scores.json").read_text())["meta"]
        assert meta["target"] == "class" and "12 classes" in meta["target_description"]
        assert np.isfinite(json.loads((out / "region_scores.json").read_text())["stats"]["baseline"]["fscam"]
                           ["score"]["mean"][10])


def test_cli_without_head_says_which_target_ran(synth_bin, tmp_path, capsys):
    weights = _save_tiny(tmp_path / "w.pt", 0)
    rc, io = _run(["cam", "--pack", str(synth_bin), "--weights", str(weights), "--limit", "2",
                   "--out", str(tmp_path / "o")], capsys)
    assert rc == 0
    assert f"FS-CAM target: cosine to the clean embedding of the other image of each pair (no classifier head in " \
           f"{weights})" in io.err
    rc, io = _run(["cam", "--pack", str(synth_bin), "--weights", str(weights), "--target", "class",
                   "--out", str(tmp_path / "o2")], capsys)
    assert rc == 2 and "fse cam: error: --target class needs a classifier head" in io.err
    assert "Traceback" not in io.err


def test_cli_refuses_random_weights_unless_asked(synth_bin, tmp_path, capsys):
    rc, io = _run(["cam", "--pack", str(synth_bin), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "no --weights" in io.err and "--random-weights" in io.err
    assert not (tmp_path / "o").exists()
    rc, io = _run(["cam", "--pack", str(synth_bin), "--random-weights", "--limit", "1", "--grid",
                   "1", "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert rc == 0
    meta = json.loads((tmp_path / "o" / "region_scores.json").read_text())["meta"]
    assert meta["weights baseline"] == "random (--random-weights)"
