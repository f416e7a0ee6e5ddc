"""Upstream's own eval_ijbc.py, patched by `fse patch-arcface`, run as a user runs it
(tests/arcface_harness.py redirects its CUDA calls on a CPU-only machine): its TAR@FAR table and
score file equal `fse eval ijb`'s on the same model and set (IJB-C and IJB-B naming); `--config`
with config.fse_eval adds FS-CAM and the occlusion benchmark; a bad fse_eval entry is one line and
exit status 2 before any embedding is computed."""
import json
import logging
import re
import runpy
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fse_plugin import synth
from fse_plugin.backbone import build_network
from fse_plugin.cli import main as cli_main
from fse_plugin.patching import apply_patches

pytest.importorskip("pandas",
                    reason="eval_ijbc.py needs the arcface extra: pip install -e '.[arcface]'")
pytest.importorskip("prettytable",
                    reason="eval_ijbc.py needs the arcface extra: pip install -e '.[arcface]'")

HARNESS = Path(__file__).with_name("arcface_harness.py")
NETWORK = "mbf"  # upstream's cheapest backbone: the script builds it with get_model(args.network)


@pytest.fixture(scope="module")
def tree(arcface_torch_dir, tmp_path_factory) -> Path:
    """A patched copy of upstream with a MobileFaceNet model.pt where its config's training run
    writes it."""
    target = tmp_path_factory.mktemp("ijbc") / "arcface_torch"
    shutil.copytree(arcface_torch_dir, target)
    apply_patches(target)
    torch.manual_seed(0)
    weights = target / "work_dirs" / "fse_mbf" / "model.pt"
    weights.parent.mkdir(parents=True)
    torch.save(build_network(NETWORK, 512, target).eval().state_dict(), weights)
    (target / "configs" / "fse_mbf.py").write_text(
        f"from easydict import EasyDict as edict\nconfig = edict()\nconfig.network = {NETWORK!r}\n"
        "config.output = 'work_dirs/fse_mbf'\n")
    return target


@pytest.fixture(scope="module")
def ijb_sets(tmp_path_factory) -> dict[str, Path]:
    """An IJB-C and an IJB-B-named synthetic set (5 identities x 2 templates x 2 media: 20 images
    each)."""
    root = tmp_path_factory.mktemp("ijb_sets")
    return {t: synth.write_ijb(root / t, t, n_identities=5, templates_per_identity=2,
                               media_per_template=2, images_per_media=1,
                               seed=3 if t == "IJBC" else 4, workers=1) for t in ("IJBC", "IJBB")}


def eval_ijbc(tree: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HARNESS), str(tree), "eval_ijbc.py",
                           *map(str, argv)], capture_output=True, text=True, timeout=600)


def table_numbers(text: str) -> list[str]:
    """The TAR cells of the last TAR@FAR table printed (upstream's PrettyTable or fse's)."""
    rows = [line for line in text.splitlines() if re.match(r"^\|\s*\S+-IJB[BC]\s*\|", line)]
    return rows[-1].strip("|").split("|")[1:]


@pytest.mark.parametrize("target", ["IJBC", "IJBB"])
def test_upstream_script_equals_fse_eval_ijb(tree, ijb_sets, tmp_path, target):
    weights = tree / "work_dirs" / "fse_mbf" / "model.pt"
    run = eval_ijbc(tree, "--model-prefix", weights, "--image-path", ijb_sets[target], "--network",
                    NETWORK, "--target", target, "--result-dir", tmp_path / "upstream",
                    "--batch-size", 8)
    assert run.returncode == 0, run.stderr[-3000:]
    t = target.lower()
    upstream = tmp_path / "upstream" / "insightface"
    # nothing of the plugin's
    assert sorted(p.name for p in upstream.iterdir()) == [f"{t}.npy", f"{t}.pdf"]
    assert "FS-CAM" not in run.stdout
    ours = tmp_path / "fse"
    assert cli_main([str(a) for a in ("eval", "ijb", "--root", ijb_sets[target], "--ijb-set", target, "--network",
                                      NETWORK, "--weights", weights, "--arcface-dir", tree, "--out", ours, "--quiet",
                                      "--device", "cpu")]) == 0
    doc = json.loads((ours / f"{t}_results.json").read_text())
    assert [c.strip() for c in table_numbers(run.stdout)] == [f"{v * 100:.2f}" for v in doc["tar"]]
    np.testing.assert_allclose(np.load(upstream / f"{t}.npy"), np.load(ours / f"{t}.npy"), rtol=0,
                               atol=1e-6)


def test_config_fse_eval_adds_fscam_and_occlusion(tree, tmp_path):
    """Network and weights from the config; FS-CAM and occlusion into the result folder, naming
    their regions."""
    # 6 images: FS-CAM and occlusion cost forwards
    ijbc = synth.write_ijb(tmp_path / "IJBC", "IJBC", n_identities=3, templates_per_identity=2,
                           media_per_template=1, images_per_media=1, seed=5, workers=1)
    (tree / "configs" / "fse_mbf_eval.py").write_text(
        (tree / "configs" / "fse_mbf.py").read_text() + "config.fse_eval = dict(fscam=dict(limit=1), occlusion=dict("
        f"classes='nose,mouth', groups='none', far=0.1), masks={str(ijbc / 'gt_masks.npy')!r})\n")
    run = eval_ijbc(tree, "--config", "configs/fse_mbf_eval.py", "--image-path", ijbc,
                    "--result-dir", tmp_path, "--batch-size", 8)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "insightface"
    assert "FS-CAM target: cosine to the clean embedding of the other image of each pair" in run.stdout
    occlusion = json.loads((out / "occlusion_ijbc.json").read_text())
    # skipped: absent in every probe
    regions = [r["region"] for r in occlusion["rows"]] + occlusion["skipped"]
    assert sorted(regions) == ["mouth", "nose"] and occlusion["metric"] == "TAR@FAR=0.1 (%)"
    tar_01 = float(table_numbers(run.stdout)[-1])  # the clean side is upstream's own features
    assert occlusion["clean"]["insightface"] == pytest.approx(tar_01, abs=0.005)
    regions = json.loads((out / "fscam" / "region_scores.json").read_text())
    assert "nose" in json.dumps(regions) and (out / "fscam" / "report.md").is_file()
    assert (out / "ijbc.npy").is_file() and (out / "ijbc.pdf").is_file()


@pytest.mark.parametrize("entry, names", [
    ("dict(ocllusion=True)", ["config.fse_eval.ocllusion"]),
    ("dict(occlusion=dict(far=2.0), masks=MASKS)", ["config.fse_eval.occlusion.far"]),
    ("dict(occlusion=dict(classes='noze'), masks=MASKS)",
     ["config.fse_eval.occlusion.classes", "noze"]),
    ("dict(fscam=dict(methods='fscm'), masks=MASKS)", ["config.fse_eval.fscam.methods", "fscm"]),
    ("dict(fscam=True, parser='missing.pt')", ["config.fse_eval.parser", "missing.pt"]),
    ("dict(occlusion=True, masks='missing.npy')", ["config.fse_eval.masks", "missing.npy"]),
    ("dict(occlusion=True)", ["config.fse_eval", "parser="]),
    ("dict(occlusion=True, masks=MASKS[:-4] + '_wrong.npy')", ["_wrong.npy", "expected"]),
])
def test_bad_fse_eval_is_one_line_before_any_embedding(tree, ijb_sets, tmp_path, monkeypatch,
                                                       capsys, no_loading, entry, names):
    masks = ijb_sets["IJBC"] / "gt_masks.npy"
    np.save(str(masks)[:-4] + "_wrong.npy", np.zeros((3, 112, 112), np.uint8))
    config = tree / "configs" / "fse_bad.py"
    config.write_text((tree / "configs" / "fse_mbf.py").read_text() + f"MASKS = {str(masks)!r}\n"
                      f"config.fse_eval = {entry}\n")
    monkeypatch.chdir(tree)
    # the script's hook logs to stdout: restored after the test
    plugin_log = logging.getLogger("fse_plugin")
    monkeypatch.setattr(plugin_log, "handlers", list(plugin_log.handlers))
    monkeypatch.setattr(plugin_log, "level", plugin_log.level)
    monkeypatch.setattr(sys, "path", [str(tree), *sys.path])
    monkeypatch.setattr(sys, "argv", ["eval_ijbc.py", "--config", "configs/fse_bad.py",
                                      "--image-path", str(ijb_sets["IJBC"])])
    with warnings.catch_warnings(), pytest.raises(SystemExit) as done:
        # the script ignores all warnings
        runpy.run_path("eval_ijbc.py", run_name="__main__")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert done.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("eval_ijbc.py: error: ") and all(n in lines[0] for n in names), lines[0]
