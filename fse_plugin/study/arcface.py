"""Study runs with the real trainer: upstream arcface_torch ``train_v2.py``, patched, one config per
run.

The user's arcface_torch tree is copied into the study folder and patched there
(``fse_plugin.patching.apply_patches``; the user's checkout is left alone). Each (variant, seed)
gets ``configs/study_<variant>_s<seed>.py``: upstream's ``configs/base.py`` values overridden with
the study's rec, network, batch size, seed and epochs, and for an FSErasing variant the one config
line ``config.fse = dict(masks=..., p=...)``. It is run as
``torchrun --nproc_per_node=N train_v2.py configs/<name>`` in the copied tree, and the ``model.pt``
it writes is evaluated like a built-in run.

Limits: train_v2.py counts epochs, so the study's step budget becomes the smallest number of
epochs that holds it (``num_epoch``; the steps actually run are recorded). It needs CUDA and nccl:
on a machine without CUDA this trainer refuses to start, unless a ``launch`` function (a test
harness that runs train_v2.py on CPU) is given. ``random_erasing`` variants are refused: the
patched ``get_dataloader`` builds ``FSEMXFaceDataset`` from ``config.fse`` only and has no
transform hook, so only ``off`` and ``fse:...`` variants run here. cuDNN is not put in
deterministic mode by train_v2.py, so GPU runs are not bit-for-bit repeatable.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from fse_plugin.common import FSEError, checks

__all__ = ["ArcfaceSettings", "ArcfaceTrainer", "ArcfaceTrainerError"]

Launch = Callable[[list[str], Path, dict[str, str]], None]


class ArcfaceTrainerError(FSEError):
    """The arcface_torch trainer cannot run this study (no CUDA, no tree, a failed run)."""


@dataclass(frozen=True)
class ArcfaceSettings:
    """How ``--trainer arcface`` runs upstream ``train_v2.py``: the arcface_torch tree (default
    ``$ARCFACE_TORCH_DIR``), its network, GPUs per run, learning rate, fp16 and loader workers.
    ``launch(cmd, cwd, env)`` replaces torchrun (a test harness that runs train_v2.py on a CPU)."""
    arcface_dir: str | os.PathLike | None = None
    network: str = "r18"
    nproc_per_node: int = 1
    lr: float = 0.1
    fp16: bool = True
    num_workers: int = 2
    launch: Launch | None = None

    def tree(self) -> Path:
        """The user's arcface_torch checkout (refused when there is none)."""
        from fse_plugin.backbone import arcface_torch_dir
        source = arcface_torch_dir(self.arcface_dir)
        if source is None:
            raise ArcfaceTrainerError("--trainer arcface needs an arcface_torch checkout: pass "
                                      "--arcface-dir or set ARCFACE_TORCH_DIR")
        return source

    def check(self) -> None:
        """Refuse what cannot run: no CUDA (without a ``launch`` harness), more GPUs than there are,
        no tree."""
        import torch
        checks.count(self.nproc_per_node, "--nproc-per-node")
        checks.count(self.num_workers, "num_workers", minimum=0)
        checks.number(self.lr, "lr", lo=0, lo_open=True)
        if self.launch is None and not torch.cuda.is_available():
            raise ArcfaceTrainerError("--trainer arcface runs upstream train_v2.py, which needs "
                                      "CUDA and nccl; this machine has no CUDA device: use "
                                      "--trainer builtin")
        if self.launch is None and self.nproc_per_node > torch.cuda.device_count():
            raise ArcfaceTrainerError(f"--nproc-per-node {self.nproc_per_node}: this machine has "
                                      f"{torch.cuda.device_count()} CUDA device(s)")
        self.tree()


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=env)
    if done.returncode != 0:
        raise ArcfaceTrainerError(f"{' '.join(cmd)} failed in {cwd} with exit status "
                                  f"{done.returncode}; its log is in the run's output folder")


class ArcfaceTrainer:
    """Train study runs with upstream ``train_v2.py`` on ``rec_dir`` (FSErasing from the cache
    ``masks``), ``steps`` of ``batch_size`` per GPU each (see the module docstring)."""
    name = "arcface"

    def __init__(self, settings: ArcfaceSettings, study_dir: str | os.PathLike,
                 rec_dir: str | os.PathLike, masks: str | os.PathLike, steps: int,
                 batch_size: int) -> None:
        from fse_plugin.recordio import image_index
        settings.check()
        self.settings, self.source, self.tree = (settings, settings.tree(),
                                                 Path(study_dir) / "arcface_torch")
        self.rec_dir, self.masks = Path(rec_dir).resolve(), str(Path(masks).resolve())
        self.steps, self.batch_size = (checks.count(steps, "--steps"),
                                       checks.count(batch_size, "--batch-size"))
        self.launch = settings.launch or _run
        index = image_index(self.rec_dir)
        self.num_image, self.num_classes = len(index.keys), int(index.labels.max()) + 1
        self.steps_per_epoch = self.num_image // (self.batch_size * settings.nproc_per_node)
        if self.steps_per_epoch < 1:
            raise ArcfaceTrainerError(f"{self.rec_dir}: {self.num_image} images give no step of "
                                      f"{self.batch_size} x {settings.nproc_per_node}")
        self.epochs = max(1, math.ceil(self.steps / self.steps_per_epoch))

    def prepare(self) -> Path:
        """Copy the arcface_torch tree into the study folder (once) and apply the plugin's
        patches."""
        from fse_plugin.patching import apply_patches
        if not self.tree.is_dir():
            shutil.copytree(self.source, self.tree,
                            ignore=shutil.ignore_patterns(".git", "work_dirs", "__pycache__"))
        apply_patches(self.tree)
        return self.tree

    def config_text(self, variant: Any, seed: int, output: Path) -> str:
        """The run's config module: base.py's values overridden, plus the one line for FSErasing."""
        s = self.settings
        lines = ["from easydict import EasyDict as edict", "", "config = edict()",
                 f"config.network = {s.network!r}", f"config.output = {str(output)!r}",
                 f"config.rec = {str(self.rec_dir)!r}", f"config.num_classes = {self.num_classes}",
                 f"config.num_image = {self.num_image}", f"config.num_epoch = {self.epochs}",
                 "config.warmup_epoch = 0", f"config.batch_size = {self.batch_size}",
                 f"config.lr = {s.lr}",
                 f"config.fp16 = {s.fp16}", f"config.seed = {int(seed)}",
                 f"config.num_workers = {s.num_workers}",
                 "config.val_targets = []", "config.verbose = 10 ** 9", "config.dali = False"]
        fse = variant.fse_config(self.masks)
        if fse is not None:
            lines.append(f"config.fse = dict({', '.join(f'{k}={v!r}' for k, v in fse.items())})")
        return "\n".join(lines) + "\n"

    def command(self, config_name: str) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run",
                f"--nproc_per_node={self.settings.nproc_per_node}",
                "train_v2.py", f"configs/{config_name}"]

    def __call__(self, variant: Any, seed: int, run_dir: Path) -> dict[str, Any]:
        if variant.random_erasing is not None:
            raise ArcfaceTrainerError(f"variant {variant.name!r}: --trainer arcface runs only "
                                      f"'off' and 'fse:...'")
        if not self.tree.is_dir():
            self.prepare()
        run_dir = Path(run_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        weights = run_dir / "model.pt"
        weights.unlink(missing_ok=True)  # only a model.pt this run writes counts
        name = f"study_{variant.slug}_s{seed}"
        (self.tree / "configs" / f"{name}.py").write_text(self.config_text(variant, seed, run_dir))
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                           os.environ.get("PYTHONPATH")]))}
        self.launch(self.command(name), self.tree, env)
        if not weights.is_file():
            raise ArcfaceTrainerError(f"train_v2.py finished without writing {weights}")
        return {"steps": self.epochs * self.steps_per_epoch, "steps_asked": self.steps,
                "epochs": self.epochs,
                "samples": (self.epochs * self.steps_per_epoch * self.batch_size
                            * self.settings.nproc_per_node),
                "stopped_by_time": False, "config": f"configs/{name}.py", "weights": str(weights)}

    def load(self, weights: str | os.PathLike) -> nn.Module:
        from fse_plugin.backbone import load_backbone
        return load_backbone(weights, network=self.settings.network, arcface_dir=self.tree)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(network={self.settings.network}, epochs={self.epochs} x "
                f"{self.steps_per_epoch} steps, batch_size={self.batch_size} x "
                f"{self.settings.nproc_per_node}, tree={self.tree})")
