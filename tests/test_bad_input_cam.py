"""``fse cam`` refuses every bad flag, file and combination in one line naming it (exit status 2),
before any model or face is loaded and before anything is written."""
import numpy as np
import pytest
import torch

from badinput import assert_user_error, run_fse

GOOD = ["--pack", "{pack}", "--weights", "{weights}", "--out", "{out}"]
REC = ["--rec", "{rec}", "--weights", "{weights}", "--out", "{out}"]

CASES = [
    ("unknown method", GOOD + ["--methods", "fscm"], ["--methods", "fscm"]),
    ("method twice", GOOD + ["--methods", "fscam,ablation,fscam"], ["--methods", "fscam"]),
    ("empty method", GOOD + ["--methods", "fscam,"], ["--methods"]),
    ("batch size 0", GOOD + ["--batch-size", "0"], ["--batch-size"]),
    ("batch size negative", GOOD + ["--batch-size", "-3"], ["--batch-size", "-3"]),
    ("batch size float", GOOD + ["--batch-size", "2.5"], ["--batch-size", "2.5"]),
    ("unknown fill", GOOD + ["--fill", "blue"], ["--fill", "blue"]),
    ("grid 0", GOOD + ["--grid", "0"], ["--grid"]),
    ("npz where npy is meant", GOOD + ["--masks", "{npz}"], ["--masks", "npy"]),
    ("negative limit", GOOD + ["--limit", "-2"], ["--limit"]),
    ("limit 0", GOOD + ["--limit", "0"], ["--limit"]),
    ("unknown device", GOOD + ["--device", "tpu"], ["--device", "tpu"]),
    ("device beyond this machine", GOOD + ["--device", "cuda:99"], ["--device", "cuda:99"]),
    ("RISE masks 0", GOOD + ["--rise-n", "0"], ["--rise-n"]),
    ("RISE grid negative", GOOD + ["--rise-s", "-1"], ["--rise-s"]),
    ("RISE keep probability 0", GOOD + ["--rise-p1", "0"], ["--rise-p1"]),
    ("RISE keep probability over 1", GOOD + ["--rise-p1", "1.5"], ["--rise-p1"]),
    ("Group-CAM groups 0", GOOD + ["--groupcam-groups", "0"], ["--groupcam-groups"]),
    ("old --groups given regions", GOOD + ["--groups", "eyes:nose"], ["--groups", "eyes:nose"]),
    ("classes (an occlusion flag)", GOOD + ["--classes", "noze"], ["--classes"]),
    ("logit scale 0", GOOD + ["--logit-scale", "0"], ["--logit-scale"]),
    ("logit scale negative", GOOD + ["--logit-scale", "-64"], ["--logit-scale"]),
    ("images per step 0", GOOD + ["--images-per-step", "0"], ["--images-per-step"]),
    ("old --chunk-size 0", GOOD + ["--chunk-size", "0"], ["--chunk-size"]),
    ("unknown precision", GOOD + ["--precision", "fp8"], ["--precision", "fp8"]),
    ("negative seed", GOOD + ["--seed", "-1"], ["--seed"]),
    ("embedding size 0", GOOD + ["--embedding-size", "0"], ["--embedding-size"]),
    ("weights not a checkpoint", ["--pack", "{pack}", "--weights", "{text}", "--out", "{out}"],
     ["--weights"]),
    ("weights missing", ["--pack", "{pack}", "--weights", "{missing}", "--out", "{out}"],
     ["--weights", "missing"]),
    ("second weights not a checkpoint", GOOD + ["--weights2", "{text}"], ["--weights2"]),
    ("parser not a checkpoint", GOOD + ["--parser", "{text}"], ["--parser"]),
    ("pack missing", ["--pack", "{missing}", "--weights", "{weights}", "--out", "{out}"],
     ["--pack"]),
    ("rec missing", ["--rec", "{missing}", "--weights", "{weights}", "--out", "{out}"], ["--rec"]),
    ("mask cache not a directory", REC + ["--mask-cache", "{text}"], ["--mask-cache"]),
    ("out is a file", ["--pack", "{pack}", "--weights", "{weights}", "--out", "{text}"], ["--out"]),
    ("no weights", ["--pack", "{pack}", "--out", "{out}"], ["--weights"]),
    ("masks with a rec", REC + ["--masks", "{npy}"], ["--masks", "--rec"]),
    ("pairs with a rec", REC + ["--pairs", "all"], ["--pairs", "--rec"]),
    ("mask cache with a pack", GOOD + ["--mask-cache", "{cache}"], ["--mask-cache", "--pack"]),
    ("masks and parser", GOOD + ["--masks", "{npy}", "--parser", "{weights}"],
     ["--masks", "--parser"]),
    ("mask cache and parser", REC + ["--mask-cache", "{cache}", "--parser", "{weights}"],
     ["--mask-cache", "--parser"]),
    ("pack without masks", ["--pack", "{bare_pack}", "--weights", "{weights}", "--out", "{out}"],
     ["--masks"]),
    ("rec without mask cache", ["--rec", "{bare_rec}", "--weights", "{weights}", "--out", "{out}"],
     ["fse_masks"]),
    ("identity target for pairs", GOOD + ["--target", "identity"], ["--target", "identity"]),
    ("pair target for a rec", REC + ["--target", "pair"], ["--target", "pair"]),
    ("two models one name", GOOD + ["--weights2", "{weights}", "--name2", "baseline"],
     ["--name", "baseline"]),
    ("name with a slash", GOOD + ["--name", "a/b"], ["--name"]),
    ("second network without second weights", GOOD + ["--network2", "tiny"], ["--network2"]),
    ("layer hooks on TorchScript",
     GOOD + ["--network", "torchscript", "--methods", "fscam,gradcam"], ["--methods", "gradcam"]),
    ("arcface network without a tree", GOOD + ["--network", "r50"], ["--arcface-dir"]),
]


@pytest.fixture(scope="module")
def files(synth_bin, synth_rec, synth_cache, tmp_path_factory):
    d = tmp_path_factory.mktemp("cam_bad_input")
    torch.save({"w": torch.zeros(1)}, d / "w.pt")
    np.savez(d / "m.npz", masks=np.zeros((2, 4, 4), np.uint8))
    (d / "notes.txt").write_text("not a checkpoint\n")
    (d / "bare.bin").write_bytes(synth_bin.read_bytes())  # a pack with no masks beside it
    bare_rec = d / "bare_rec"
    bare_rec.mkdir()
    for name in ("train.rec", "train.idx"):
        (bare_rec / name).write_bytes((synth_rec / name).read_bytes())
    return {"pack": synth_bin, "npy": synth_bin.with_name("synth.masks.npy"), "rec": synth_rec,
            "cache": synth_cache, "weights": d / "w.pt", "npz": d / "m.npz",
            "text": d / "notes.txt", "missing": d / "missing.pt", "bare_pack": d / "bare.bin",
            "bare_rec": bare_rec}


@pytest.mark.parametrize("argv,names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_in_one_line(argv, names, files, no_loading, tmp_path, monkeypatch):
    monkeypatch.delenv("ARCFACE_TORCH_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # not inside an arcface_torch tree
    out = tmp_path / "out"
    result = run_fse(["cam", *(a.format(out=out, **files) for a in argv)])
    assert_user_error(result, *names)
    assert not out.exists()


def test_cuda_refused_without_cuda(files, no_loading, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_fse(["cam", *(a.format(out=tmp_path / "o", **files) for a in GOOD), "--device",
                      "cuda"])
    assert_user_error(result, "--device", "CUDA")


def test_unknown_layer_refused_before_faces_are_read(files, tmp_path, monkeypatch):
    """The layer needs the model to be checked, but no face is decoded before it is refused."""
    import cv2
    from fse_plugin.backbone import iresnet_tiny
    torch.save(iresnet_tiny().state_dict(), tmp_path / "tiny.pt")

    def refuse(*args, **kwargs):
        raise AssertionError("a face was decoded before the bad --target-layer was refused")
    monkeypatch.setattr(cv2, "imdecode", refuse)
    result = run_fse(["cam", "--pack", files["pack"], "--weights", tmp_path / "tiny.pt",
                      "--methods", "gradcam", "--target-layer", "layers.9", "--out", tmp_path / "o",
                      "--quiet"])
    assert_user_error(result, "--target-layer", "layers.9")
    assert not (tmp_path / "o").exists()
