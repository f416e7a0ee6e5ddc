"""Backbones: checkpoints as releases come (wrappers, prefixes, classifier heads), the errors they
get, and finding the user's arcface_torch tree (flag, environment, config location, working
directory)."""
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from fse_plugin.backbone import (CheckpointError, arcface_torch_dir, build_network, iresnet_tiny,
                                 load_backbone, load_recognizer)
from fse_plugin.common import FSEError
from fake_arcface import fake_tree

@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("ARCFACE_TORCH_DIR", raising=False)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return iresnet_tiny(num_features=64).eval()


def same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


# --------------------------------------------------------------------------- checkpoint layouts

HEAD = torch.randn(10, 64, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("layout, head", [
    (lambda sd: sd, None),
    (lambda sd: {f"module.{k}": v for k, v in sd.items()}, None),
    (lambda sd: {f"_orig_mod.module.{k}": v for k, v in sd.items()}, None),
    (lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, None),
    (lambda sd: {"model": sd, "optimizer": {"lr": 0.1}}, None),
    (lambda sd: {"backbone": sd, "head": {"weight": HEAD}}, HEAD),
    (lambda sd: {"state_dict_backbone": sd, "state_dict_softmax_fc": {"weight": HEAD},
                 "state_optimizer": {"state": {}}, "state_lr_scheduler": {"last_epoch": 1}}, HEAD),  # arcface_torch
    (lambda sd: {**{f"backbone.{k}": v for k, v in sd.items()}, "head.weight": HEAD}, HEAD),
    (lambda sd: {**{f"module.{k}": v for k, v in sd.items()}, "classifier.weight": HEAD,
                 "classifier.bias": HEAD[:, 0]}, HEAD),
    (lambda sd: {"state_dict": sd, "margin": {"kernel": HEAD.t().contiguous()}}, HEAD),  # AdaFace-style [D, C]
    (lambda sd: {**sd, "weight": HEAD}, HEAD),
])
def test_checkpoint_layouts(tiny, tmp_path, layout, head):
    path = tmp_path / "ckpt.pt"
    torch.save(layout(tiny.state_dict()), path)
    model, got = load_recognizer(path, "tiny", 64)
    assert not model.training and same_outputs(model, tiny)
    assert (got is None) if head is None else torch.equal(got, head)
    assert same_outputs(load_backbone(path, "tiny", 64), tiny)


def expect_error(tmp_path, obj, match, size=64):
    path = tmp_path / "bad.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=match) as info:
        load_recognizer(path, "tiny", size)
    assert str(path) in str(info.value)


def test_checkpoint_errors_name_the_file_and_keys(tiny, tmp_path):
    sd = tiny.state_dict()
    expect_error(tmp_path, {k: v for k, v in sd.items() if not k.startswith("stem.0")},
                 r"1 missing keys \(stem.0.weight\)")
    expect_error(tmp_path, {**sd, "layers.9.conv.weight": torch.zeros(3)},
                 r"1 unexpected keys \(layers.9.conv.weight\)")
    expect_error(tmp_path, sd, r"keys of another shape \(fc.bias \[64\] vs \[128\], fc.weight "
                               r"\[64, 3136\] vs \[128, 3136\]", size=128)
    expect_error(tmp_path, {**sd, "head.weight": HEAD, "fc2.weight": HEAD, "margin.weight": HEAD},
                 "several classifier heads")
    expect_error(tmp_path, {**sd, "head.weight": torch.zeros(10, 32)}, r"head.weight is \[10, 32\]")
    expect_error(tmp_path, {"optimizer": {"lr": 1.0}}, "no state_dict in it")
    expect_error(tmp_path, [1, 2], "holds a list, not a state_dict")


def test_unreadable_checkpoints(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt: not a readable checkpoint"):
        load_recognizer(garbage)
    # objects weights_only refuses to build (a plain pickle could run code)
    code = tmp_path / "code.pt"
    code.write_bytes(pickle.dumps({"weights": shutil.rmtree}))
    with pytest.raises(CheckpointError, match="code.pt: not a readable checkpoint.*weights_only"):
        load_recognizer(code)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_recognizer(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="no weights given; a randomly initialised network"):
        load_recognizer(None, "tiny")
    # random only when asked for by name
    assert isinstance(load_backbone(None, "tiny"), torch.nn.Module)


def test_torchscript_has_no_head(tmp_path, tiny):
    path = tmp_path / "scripted.pt"
    with pytest.warns(FutureWarning):
        torch.jit.trace(tiny, torch.zeros(1, 3, 112, 112)).save(str(path))
    model, head = load_recognizer(path, "torchscript")
    assert head is None and same_outputs(model, tiny)
    with pytest.raises(CheckpointError, match="not a TorchScript file"):
        load_recognizer(Path(__file__), "torchscript")


# --------------------------------------------------------------------------- arcface_torch networks

def test_r34_as_releases_come(arcface_torch_dir, tmp_path, no_env):
    """arcface_torch's r34 with DDP's module. prefix and a classifier head, built from the user's
    tree."""
    torch.manual_seed(0)
    ref = build_network("r34", 512, arcface_torch_dir).eval()
    head = torch.randn(7, 512)
    path = tmp_path / "r34_release.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()},
                "fc.weight": head}, path)
    model, got = load_recognizer(path, "r34", 512, arcface_torch_dir)
    assert torch.equal(got, head) and same_outputs(model, ref)
    with pytest.raises(CheckpointError, match="r34_release.pt: the weights do not fit"):
        load_recognizer(path, "r18", 512, arcface_torch_dir)


def test_tree_search_order(tmp_path, monkeypatch, no_env):
    explicit, env, cfg_tree, cwd_tree = (fake_tree(tmp_path / n)
                                         for n in ("explicit", "env", "cfg", "cwd"))
    config = cfg_tree / "configs" / "ms1mv3_r50.py"
    config.write_text("config = dict(network='fake')\n")
    monkeypatch.chdir(cwd_tree / "configs")  # a subdirectory of the tree counts
    assert arcface_torch_dir() == cwd_tree.resolve()
    assert arcface_torch_dir(config_path=config) == cfg_tree.resolve()
    monkeypatch.setenv("ARCFACE_TORCH_DIR", str(env))
    assert arcface_torch_dir(config_path=config) == env
    assert arcface_torch_dir(explicit, config) == explicit
    with pytest.raises(FSEError, match=r"--arcface-dir .*nowhere is not an arcface_torch tree"):
        arcface_torch_dir(tmp_path / "nowhere")
    monkeypatch.setenv("ARCFACE_TORCH_DIR", str(tmp_path))
    with pytest.raises(FSEError, match="ARCFACE_TORCH_DIR="):
        arcface_torch_dir()


def test_missing_tree_says_what_to_pass(tmp_path, monkeypatch, no_env):
    monkeypatch.chdir(tmp_path)
    assert arcface_torch_dir() is None
    with pytest.raises(FSEError, match=r"network 'r34' .* pass --arcface-dir "
                                       r"/path/to/insightface/recognition/arcface_torch"):
        build_network("r34")
    with pytest.raises(FSEError, match=r"network 'r999' is not known to .*get_model"):
        build_network("r999", arcface_dir=fake_tree(tmp_path / "t"))


def test_two_trees_in_one_process(tmp_path, no_env):
    """Each tree's backbones package is imported under a name of its own: no stale ``backbones``
    module."""
    a, b = fake_tree(tmp_path / "a", "net_a"), fake_tree(tmp_path / "b", "net_b")
    assert build_network("net_a", 8, a).fc.out_features == 8
    assert build_network("net_b", 16, b).fc.out_features == 16
    with pytest.raises(FSEError, match="net_a' is not known"):
        build_network("net_a", 8, b)
