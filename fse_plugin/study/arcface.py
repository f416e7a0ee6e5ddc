"""Study runs with the real trainer: upstream arcface_torch ``train_v2.py``, patched, one config per run.

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
from pathlib import Path
from typing import Any, Callable

from torch import nn

from fse_plugin.common import FSEError

__all__ = ["ArcfaceTrainer", "ArcfaceTrainerError"]

Launch = Callable[[list[str], Path, dict[str, str]], None]


class ArcfaceTrainerError(FSEError):
    """The arcface_torch trainer cannot run this study (no CUDA, an unsupported variant, a failed run)."""


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=env)
    if done.returncode != 0:
        raise ArcfaceTrainerError(f"{' '.join(cmd)} failed in {cwd} with exit status {done.returncode}; "
                                  f"its log is in the run's output folder")


class ArcfaceTrainer:
    """Train study runs with upstream ``train_v2.py`` (see the module docstring)."""
    name = "arcface"

    def __init__(self, arcface_dir: str | os.PathLike, study_dir: str | os.PathLike, rec_dir: str | os.PathLike,
                 masks: str | os.PathLike, steps: int, network: str = "r18", batch_size: int = 128,
                 nproc_per_node: int = 1, lr: float = 0.1, fp16: bool = True, num_workers: int = 2,
                 launch: Launch | None = None) -> None:
        from fse_plugin.backbone import arcface_torch_dir
        from fse_plugin.recordio import image_index
        self.check([], launch)
        source = arcface_torch_dir(arcface_dir)
        if source is None:
            raise ArcfaceTrainerError("--trainer arcface needs an arcface_torch checkout: pass --arcface-dir or set "
                                      "ARCFACE_TORCH_DIR")
        self.source, self.tree = source, Path(study_dir) / "arcface_torch"
        self.rec_dir, self.masks, self.steps = Path(rec_dir).resolve(), str(Path(masks).resolve()), int(steps)
        self.network, self.batch_size, self.nproc = network, int(batch_size), int(nproc_per_node)
        self.lr, self.fp16, self.num_workers = lr, fp16, num_workers
        self.launch = launch or _run
        index = image_index(self.rec_dir)
        self.num_image, self.num_classes = len(index.keys), int(index.labels.max()) + 1
        self.steps_per_epoch = self.num_image // (self.batch_size * self.nproc)
        if self.steps_per_epoch < 1:
            raise ArcfaceTrainerError(f"{self.rec_dir}: {self.num_image} images give no step of "
                                      f"{self.batch_size} x {self.nproc}")
        self.epochs = max(1, math.ceil(self.steps / self.steps_per_epoch))

    @staticmethod
    def check(variants: Any, launch: Launch | None = None) -> None:
        """Refuse what this trainer cannot run: no CUDA (without a ``launch`` harness), rectangle erasing."""
        import torch
        if launch is None and not torch.cuda.is_available():
            raise ArcfaceTrainerError("--trainer arcface runs upstream train_v2.py, which needs CUDA and nccl; "
                                      "this machine has no CUDA device: use --trainer builtin")
        for variant in variants:
            if variant.random_erasing is not None:
                raise ArcfaceTrainerError(f"variant {variant.name!r}: the arcface_torch patch has no transform hook, "
                                          "so --trainer arcface runs only 'off' and 'fse:...' variants; use "
                                          "--trainer builtin for random_erasing")

    def prepare(self) -> Path:
        """Copy the arcface_torch tree into the study folder (once) and apply the plugin's patches."""
        from fse_plugin.patching import apply_patches
        if not self.tree.is_dir():
            shutil.copytree(self.source, self.tree, ignore=shutil.ignore_patterns(".git", "work_dirs", "__pycache__"))
        apply_patches(self.tree)
        return self.tree

    def config_text(self, variant: Any, seed: int, output: Path) -> str:
        """The run's config module: base.py's values overridden, plus the one line for FSErasing."""
        lines = ["from easydict import EasyDict as edict", "", "config = edict()",
                 f"config.network = {self.network!r}", f"config.output = {str(output)!r}",
                 f"config.rec = {str(self.rec_dir)!r}", f"config.num_classes = {self.num_classes}",
                 f"config.num_image = {self.num_image}", f"config.num_epoch = {self.epochs}",
                 "config.warmup_epoch = 0", f"config.batch_size = {self.batch_size}", f"config.lr = {self.lr}",
                 f"config.fp16 = {self.fp16}", f"config.seed = {int(seed)}", f"config.num_workers = {self.num_workers}",
                 "config.val_targets = []", "config.verbose = 10 ** 9", "config.dali = False"]
        fse = variant.fse_config(self.masks)
        if fse is not None:
            lines.append(f"config.fse = dict({', '.join(f'{k}={v!r}' for k, v in fse.items())})")
        return "\n".join(lines) + "\n"

    def command(self, config_name: str) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={self.nproc}", "train_v2.py",
                f"configs/{config_name}"]

    def __call__(self, variant: Any, seed: int, run_dir: Path) -> dict[str, Any]:
        self.check([variant], self.launch)
        if not self.tree.is_dir():
            self.prepare()
        run_dir = Path(run_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        name = f"study_{variant.slug}_s{seed}"
        (self.tree / "configs" / f"{name}.py").write_text(self.config_text(variant, seed, run_dir))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                         os.environ.get("PYTHONPATH")]))}
        self.launch(self.command(name), self.tree, env)
        weights = run_dir / "model.pt"
        if not weights.is_file():
            raise ArcfaceTrainerError(f"train_v2.py finished without writing {weights}")
        return {"steps": self.epochs * self.steps_per_epoch, "steps_asked": self.steps, "epochs": self.epochs,
                "samples": self.epochs * self.steps_per_epoch * self.batch_size * self.nproc, "stopped_by_time": False,
                "config": f"configs/{name}.py", "weights": str(weights)}

    def load(self, weights: str | os.PathLike) -> nn.Module:
        from fse_plugin.backbone import load_backbone
        return load_backbone(weights, network=self.network, arcface_dir=self.tree)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(network={self.network}, epochs={self.epochs} x {self.steps_per_epoch} steps, "
                f"batch_size={self.batch_size} x {self.nproc}, tree={self.tree})")
