import os
from pathlib import Path

import pytest
import torch
from badinput import no_loading  # noqa: F401 - the bad-input tests' fixture, for every test module

# One intra-op thread: the tests' tensor ops are small, and on 2 shared cores two OpenMP threads
# spend more time in barrier waits than they gain (10x slower under load).
torch.set_num_threads(1)


def _find_shared(name: str, env: str) -> Path:
    """$``env``, else the nearest ``shared/<name>`` beside the repo or one of its parents (the
    checkout may sit deeper than ``<work>/main`` in CI); the path returned may not exist."""
    if os.environ.get(env):
        return Path(os.environ[env])
    repo = Path(__file__).resolve().parents[1]
    for parent in repo.parents:
        if (parent / "shared" / name).is_dir():
            return parent / "shared" / name
    return repo.parent / "shared" / name


FIXTURES = _find_shared("fixtures", "FSE_FIXTURES")
# upstream 7fadd420, unmodified (MIT)
ARCFACE_TORCH = _find_shared("arcface_torch", "ARCFACE_TORCH_DIR")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def synth_rec(tmp_path_factory) -> Path:
    """An insightface-layout rec of synthetic faces (12 identities x 6 images) with gt_masks.npz."""
    from fse_plugin import synth
    return Path(synth.write_rec(tmp_path_factory.mktemp("synth_rec"), n_identities=12,
                                images_per_identity=6, seed=0))


@pytest.fixture(scope="session")
def synth_cache(synth_rec, tmp_path_factory) -> Path:
    """Mask cache of ``synth_rec``'s ground-truth masks (read-only: tests share it)."""
    import numpy as np

    from fse_plugin import maskcache
    gt = np.load(synth_rec / "gt_masks.npz")
    return maskcache.build_from_labels(synth_rec, gt["keys"], gt["masks"],
                                       out=tmp_path_factory.mktemp("synth_cache"), progress=False)


@pytest.fixture(scope="session")
def synth_bin(tmp_path_factory) -> Path:
    """A synthetic verification pack (.bin, 40 pairs of held-out identities) with its .masks.npy."""
    from fse_plugin import synth
    return Path(synth.write_pairs_bin(tmp_path_factory.mktemp("synth_bin") / "synth.bin",
                                      n_pairs=40, seed=1))


@pytest.fixture(scope="session")
def mxnet_python() -> str:
    """An interpreter that imports mxnet 1.9.1: $FSE_MXNET_PYTHON, else this one if it can; the
    tests that compare with real mxnet are skipped, saying how to run them, without one."""
    import subprocess
    import sys
    for py in (os.environ.get("FSE_MXNET_PYTHON"), sys.executable):
        if py and subprocess.run([py, "-c", "import mxnet.recordio"],
                                 capture_output=True).returncode == 0:
            return py
    pytest.skip("no mxnet (set FSE_MXNET_PYTHON to an interpreter that has mxnet 1.9.1)")


@pytest.fixture(scope="session")
def arcface_torch_dir() -> Path:
    """Pristine arcface_torch checkout: $ARCFACE_TORCH_DIR, else ``shared/arcface_torch`` beside the
    repo (tests copy it before patching); the tests that need it are skipped, saying why, without
    one."""
    if not (ARCFACE_TORCH / "train_v2.py").is_file():
        pytest.skip(f"no arcface_torch checkout at {ARCFACE_TORCH} (set ARCFACE_TORCH_DIR to "
                    f"recognition/arcface_torch of insightface 7fadd420)")
    return ARCFACE_TORCH


def pytest_terminal_summary(terminalreporter) -> None:
    """Say it at the end of every run, also with -q, when the arcface_torch tests could not run."""
    if not (ARCFACE_TORCH / "train_v2.py").is_file():
        terminalreporter.write_line(f"arcface_torch tests skipped: no checkout at {ARCFACE_TORCH} "
                                    f"(set ARCFACE_TORCH_DIR)", yellow=True)
