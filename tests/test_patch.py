"""The arcface_torch patches, `fse patch-arcface`, the configs, mxcompat, the compat patch's
VAL@FAR, and the patched arcface_torch end to end (a config with the one added line, its own
get_config and get_dataloader). train_v2.py itself runs in test_train_v2.py."""
import filecmp
import ast
import itertools
import json
import re
import runpy
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import interpolate
from scipy.interpolate import interp1d
from sklearn.model_selection import KFold

from fse_plugin import cli, maskcache, mxcompat, recordio
from fse_plugin.dataset import validate_fse_config
from fse_plugin.evaluation import far_threshold, val_at_far
from fse_plugin.patching import PATCH_DIRS, PatchError, apply_patches, find_arcface_dir, patch_files

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"ms1mv3_r50_fse": "ms1mv3_r50", "ms1mv3_r50_onegpu_fse": "ms1mv3_r50_onegpu",
           "wf4m_r50_fse": "wf4m_r50"}
DATASET_PATCH = PATCH_DIRS[0] / "0001-fse-dataset.patch"
COMPAT_PATCH = PATCH_DIRS[0] / "0003-upstream-compat.patch"
EVAL_PATCH = PATCH_DIRS[0] / "0004-fse-eval-ijbc.patch"
PATCHED_FILES = ("dataset.py", "train_v2.py", "eval/verification.py", "lr_scheduler.py",
                 "eval_ijbc.py")


def _hunks(patch: Path) -> list[list[str]]:
    hunks = []
    for row in patch.read_text().splitlines():
        if row.startswith("@@"):
            hunks.append([])
        elif hunks and row[:1] in "+- " and not row.startswith(("+++", "---")):
            hunks[-1].append(row)
    return hunks


def test_dataset_patch_is_small_and_commented():
    assert DATASET_PATCH in patch_files()
    assert [p.name for p in patch_files()] == sorted(p.name for p in patch_files())
    hunks = _hunks(DATASET_PATCH)
    changed = sum(row[0] in "+-" for h in hunks for row in h)
    assert changed < 40, changed
    for h in hunks:  # every hunk says why, in a comment naming FSE
        assert any(row.startswith("+") and "# FSE" in row for row in h), h
    files = re.findall(r"^\+\+\+ b/(\S+)", DATASET_PATCH.read_text(), flags=re.M)
    assert files == ["dataset.py", "eval/verification.py", "train_v2.py"]


def test_compat_patch_is_small_and_commented():
    assert COMPAT_PATCH in patch_files()
    hunks = _hunks(COMPAT_PATCH)
    assert sum(row[0] in "+-" for h in hunks for row in h) <= 27
    for h in hunks:
        assert any(row.startswith("+") and "# FSE compat" in row for row in h), h
    assert re.findall(r"^\+\+\+ b/(\S+)", COMPAT_PATCH.read_text(),
                      flags=re.M) == ["eval/verification.py", "eval_ijbc.py", "lr_scheduler.py"]


def test_eval_ijbc_patch_adds_lines_only_and_says_why():
    hunks = _hunks(EVAL_PATCH)
    assert not any(row.startswith("-") for h in hunks for row in h)  # upstream's lines all stay
    assert sum(row[0] == "+" for h in hunks for row in h) <= 10
    for h in hunks:
        assert any(row.startswith("+") and "# FSE" in row for row in h), h


def _fake_arcface(root: Path) -> Path:
    root.mkdir(parents=True)
    for name in ("train_v2.py", "dataset.py"):
        (root / name).write_text("print('not upstream')\n")
    return root


def test_patch_failure_is_clear_and_changes_nothing(tmp_path, capsys):
    fake = _fake_arcface(tmp_path / "recognition" / "arcface_torch")
    assert find_arcface_dir(tmp_path) == fake.resolve()  # insightface root is accepted too
    with pytest.raises(PatchError,
                       match=r"0001-fse-dataset.patch does not apply .*Nothing was changed"):
        apply_patches(tmp_path)
    assert (fake / "dataset.py").read_text() == "print('not upstream')\n"
    assert cli.main(["patch-arcface", str(tmp_path / "nowhere")]) == 2
    assert "not an arcface_torch dir" in capsys.readouterr().err


def test_mxcompat_matches_the_mxnet_calls_upstream_makes(synth_rec):
    with recordio.open_rec(synth_rec) as r:
        payload = recordio.unpack(r.read(1))[1]
    img = mxcompat.image.imdecode(payload)
    assert img.shape == (112, 112, 3) and np.array_equal(img.asnumpy(),
                                                         recordio.decode_image(payload))
    assert mxcompat.image.imdecode(payload, flag=0).shape == (112, 112, 1)
    assert mxcompat.image.resize_short(img, 56).shape == (56, 56, 3)
    assert mxcompat.image.resize_short(np.zeros((20, 10, 3), np.uint8), 5).shape == (10, 5, 3)
    chw = mxcompat.nd.transpose(img, axes=(2, 0, 1))
    flipped = mxcompat.ndarray.flip(data=chw, axis=2).asnumpy()
    assert flipped.flags.c_contiguous and type(flipped) is np.ndarray
    assert np.array_equal(torch.from_numpy(flipped).numpy(), img.transpose(2, 0, 1)[:, :, ::-1])
    with pytest.raises(ValueError, match="cannot decode"):
        mxcompat.image.imdecode(b"junk")
    assert mxcompat.recordio is recordio


# ------------------------------------------------------------------- with an arcface_torch checkout

@pytest.mark.parametrize("ours, upstream", CONFIGS.items())
def test_configs_are_upstream_plus_one_line(arcface_torch_dir, tmp_path, ours, upstream):
    mine = runpy.run_path(str(REPO / "configs" / f"{ours}.py"))["config"]
    theirs = runpy.run_path(str(arcface_torch_dir / "configs" / f"{upstream}.py"))["config"]
    fse = mine.pop("fse")
    assert mine == theirs
    assert set(fse) == {"masks", "p"} and fse.masks == f"{theirs.rec}/fse_masks"
    (tmp_path / "fse_masks").mkdir()
    assert validate_fse_config({**fse, "masks": str(tmp_path / "fse_masks")})["p"] == 0.5
    ours_lines = (REPO / "configs" / f"{ours}.py").read_text().splitlines()
    assert sum(line.startswith("config.fse") for line in ours_lines) == 1


def _pristine(tree: Path, arcface_torch_dir: Path) -> bool:
    return all(filecmp.cmp(tree / name, arcface_torch_dir / name, shallow=False)
               for name in PATCHED_FILES)


def test_patch_apply_skip_revert_from_a_repo_root(arcface_torch_dir, tmp_path, capsys):
    root = tmp_path / "insightface"
    target = root / "recognition" / "arcface_torch"
    shutil.copytree(arcface_torch_dir, target)
    # an enclosing repo must not confuse git apply
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    assert [r.status for r in apply_patches(root, check=True)] == ["would apply"] * 4
    assert _pristine(target, arcface_torch_dir)
    assert cli.main(["patch-arcface", str(root)]) == 0
    assert ("0003-upstream-compat.patch: applied (eval/verification.py, eval_ijbc.py, "
            "lr_scheduler.py)"
            in capsys.readouterr().out)
    assert "fse=cfg.get(\"fse\")" in (target / "train_v2.py").read_text()
    assert "if verbose else {}" in (target / "lr_scheduler.py").read_text()
    assert {r.status for r in apply_patches(target)} == {"already applied"}
    assert cli.main(["patch-arcface", str(target), "--reverse", "--check"]) == 0
    assert (capsys.readouterr().out.count(": would revert") == 4
            and not _pristine(target, arcface_torch_dir))
    assert cli.main(["patch-arcface", str(root), "--reverse"]) == 0
    assert capsys.readouterr().out.count(": reverted") == 4 and _pristine(target, arcface_torch_dir)
    assert {r.status for r in apply_patches(root, reverse=True)} == {"not applied"}


def _git_apply(patch: Path, where: Path) -> None:
    subprocess.run(["git", "apply", str(patch)], cwd=where, check=True, capture_output=True,
                   env={"GIT_CEILING_DIRECTORIES": str(where.parent),
                        "PATH": "/usr/bin:/bin:/usr/local/bin"})


def test_patches_apply_to_pristine_upstream_in_any_order(arcface_torch_dir, tmp_path):
    for n, order in enumerate(itertools.permutations(patch_files())):
        tree = tmp_path / f"order{n}"
        for name in PATCHED_FILES:  # git apply reads only the files a patch touches
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(arcface_torch_dir / name, tree / name)
        for patch in order:
            _git_apply(patch, tree)
        texts = [(tree / name).read_text() for name in PATCHED_FILES]
        if n == 0:
            first = texts
            for name, text in zip(PATCHED_FILES, texts):
                compile(text, name, "exec")
        assert texts == first, [p.name for p in order]  # the same tree whatever the order


def test_patch_names_the_failing_hunk(arcface_torch_dir, tmp_path):
    target = tmp_path / "arcface_torch"
    shutil.copytree(arcface_torch_dir, target)
    src = (target / "dataset.py").read_text().replace("    num_workers = 2,\n",
                                                      "    num_workers = 4,\n")
    (target / "dataset.py").write_text(src)
    with pytest.raises(PatchError,
                       match=r"dataset\.py: hunk 2 \(@@ -24,6 \+27,7 @@\) does not match"):
        apply_patches(target)
    assert filecmp.cmp(target / "train_v2.py", arcface_torch_dir / "train_v2.py", shallow=False)


DRIVER = textwrap.dedent('''
    import ast, importlib.util, json, sys
    import torch
    from torch.utils.data import DataLoader
    sys.path.insert(0, ".")
    import dataset
    from eval import verification
    from utils.utils_config import get_config

    class CPULoader(DataLoader):  # DataLoaderX copies batches to CUDA on a side stream
        def __init__(self, local_rank, **kwargs):
            super().__init__(**kwargs)

    dataset.DataLoaderX = CPULoader
    call = next(n for n in ast.walk(ast.parse(open("train_v2.py").read()))
                if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "get_dataloader")
    train_v2_call = compile(ast.Expression(call), "train_v2.py", "eval")  # train_v2.py's own call

    def loader(name):
        cfg = get_config(f"configs/{name}.py")
        names = {"get_dataloader": dataset.get_dataloader, "cfg": cfg, "local_rank": 0}
        return eval(train_v2_call, names)

    out = {"mxnet": importlib.util.find_spec("mxnet") is not None}
    # vanilla first: get_config updates configs.base's dict in place, so keys of an earlier config
    # would stay (upstream loads one config per process)
    vanilla = loader("vanilla_test")
    img, label = next(iter(vanilla))
    out["vanilla"] = [type(vanilla.dataset).__name__, list(img.shape), str(img.dtype),
                      str(label.dtype)]
    fse = loader("fse_test")
    img, label = next(iter(fse))
    out["fse"] = [type(fse.dataset).__name__, list(img.shape), str(img.dtype), str(label.dtype),
                  float(img.min()), float(img.max()), fse.dataset.config.p]
    from fse_plugin.dataset import FSEMXFaceDataset
    plain = FSEMXFaceDataset(vanilla.dataset.root_dir, 0)
    same = []
    for i in range(0, len(plain), 7):
        torch.manual_seed(i); a = vanilla.dataset[i]
        torch.manual_seed(i); b = plain[i]
        same.append(torch.equal(a[0], b[0]) and int(a[1]) == int(b[1]))
    out["vanilla_equals_fse_off"] = all(same)
    try:
        loader("bad_test")
    except ValueError as e:
        out["bad"] = str(e)
    data, issame = verification.load_bin(sys.argv[1], (112, 112))
    out["bin"] = [list(data[0].shape), len(issame), bool(torch.equal(data[1], data[0].flip(3)))]
    print("RESULT " + json.dumps(out))
''')


def test_patched_arcface_reads_a_batch_with_the_one_config_line(arcface_torch_dir, synth_rec,
                                                                synth_bin, tmp_path):
    target = tmp_path / "arcface_torch"
    shutil.copytree(arcface_torch_dir, target)
    assert cli.main(["patch-arcface", str(target)]) == 0
    rec = tmp_path / "ms1m-retinaface-t1"
    shutil.copytree(synth_rec, rec)
    gt = np.load(rec / "gt_masks.npz")
    maskcache.build_from_labels(rec, gt["keys"], gt["masks"], progress=False)  # <rec>/fse_masks
    text = (REPO / "configs" / "ms1mv3_r50_onegpu_fse.py").read_text()
    text = text.replace("/train_tmp/ms1m-retinaface-t1",
                        str(rec)).replace("config.batch_size = 128", "config.batch_size = 8")
    assert text.count(str(rec)) == 2
    (target / "configs" / "fse_test.py").write_text(text)
    vanilla = "\n".join(line for line in text.splitlines() if not line.startswith("config.fse"))
    (target / "configs" / "vanilla_test.py").write_text(vanilla + "\n")
    (target / "configs" / "bad_test.py").write_text(text.replace("p=0.5", "p=1.5"))
    run = subprocess.run([sys.executable, "-c", DRIVER, str(synth_bin)], cwd=target,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.split("RESULT ", 1)[1])
    assert out["mxnet"] is False  # the point: upstream code running without mxnet
    name, shape, dtype, ldtype, lo, hi, p = out["fse"]
    assert (name, shape, dtype, ldtype, p) == ("FSEMXFaceDataset", [8, 3, 112, 112],
                                               "torch.float32", "torch.int64", 0.5)
    assert lo < -1 or hi > 1  # N(0, 1) fills reach outside [-1, 1]: erasing happened
    assert out["vanilla"] == ["MXFaceDataset", [8, 3, 112, 112], "torch.float32", "torch.int64"]
    assert out["vanilla_equals_fse_off"]
    assert out["bad"].startswith("config.fse.p:")
    assert out["bin"] == [[80, 3, 112, 112], 40, True]


# ------------------------------------------------------------------- the compat patch's VAL@FAR

def _val_functions(path: Path) -> SimpleNamespace:
    """calculate_val and what it calls, compiled from ``path`` alone: upstream's module imports
    mxnet at the top, and nothing of mxnet is needed here."""
    wanted = {"LFold", "calculate_val", "calculate_val_far"}
    body = [node for node in ast.parse(path.read_text()).body
            if getattr(node, "name", None) in wanted]
    scope = {"np": np, "interpolate": interpolate, "KFold": KFold}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), scope)
    return SimpleNamespace(**{name: scope[name] for name in wanted})


@pytest.fixture(scope="module")
def verification_modules(arcface_torch_dir,
                         tmp_path_factory) -> tuple[SimpleNamespace, SimpleNamespace]:
    """(upstream eval/verification.py's VAL@FAR, the same with all patches applied)."""
    tree = tmp_path_factory.mktemp("compat") / "arcface_torch"
    shutil.copytree(arcface_torch_dir, tree)
    apply_patches(tree)
    return tuple(_val_functions(root / "eval" / "verification.py")
                 for root in (arcface_torch_dir, tree))


def _pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit embeddings of n pairs (genuine pairs closer) and issame alternating True/False."""
    rng = np.random.default_rng(seed)
    e1 = rng.normal(size=(n, 16))
    issame = np.arange(n) % 2 == 0
    e2 = np.where(issame[:, None], e1 + rng.normal(scale=0.8, size=(n, 16)),
                  rng.normal(size=(n, 16)))
    norm = lambda e: e / np.linalg.norm(e, axis=1, keepdims=True)  # noqa: E731
    return norm(e1), norm(e2), issame


def test_patched_val_at_far_is_upstreams_where_scipy_accepts_the_far_values(verification_modules):
    upstream, patched = verification_modules
    e1, e2, issame = _pairs(400, 0)
    impostor = np.sort(np.sum((e1 - e2) ** 2, 1)[~issame])
    # one impostor more per threshold
    thresholds = np.r_[0.0, (impostor[:-1] + impostor[1:]) / 2, 4.0]
    for far_target in (1e-3, 0.01, 0.1, 0.37):
        # scipy's slinear
        want = upstream.calculate_val(thresholds, e1, e2, issame, far_target, nrof_folds=1)
        assert patched.calculate_val(thresholds, e1, e2, issame, far_target, nrof_folds=1) == want
        far = np.arange(len(thresholds)) / len(impostor)  # that training FAR: distinct values
        # the fallback agrees
        assert far_threshold(far, thresholds, far_target) == pytest.approx(
            float(interp1d(far, thresholds, kind="slinear")(far_target)), abs=1e-12)


def test_patched_val_at_far_survives_repeated_far_values(verification_modules):
    upstream, patched = verification_modules
    e1, e2, issame = _pairs(600, 1)
    thresholds = np.arange(0, 4, 0.001)  # upstream's evaluate(): FAR values repeat
    with pytest.raises(ValueError, match="duplicates"):  # insightface #2152
        upstream.calculate_val(thresholds, e1, e2, issame, 1e-3, nrof_folds=10)
    got = patched.calculate_val(thresholds, e1, e2, issame, 0.01, nrof_folds=10)
    want = val_at_far(np.sum((e1 - e2) ** 2, 1), issame, 0.01, thresholds, 10)
    assert got == pytest.approx(want, abs=1e-12) and 0 < got[0] < 1
