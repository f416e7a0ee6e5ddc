"""Study runs with the plugin's own training loop (``experiment.train_recognizer``): CPU minutes on
the study's rec and mask cache, bit for bit repeatable with the same seed and thread count."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from fse_plugin.experiment.recognizer import (RecognizerSettings, load_recognizer_weights,
                                              train_recognizer)

__all__ = ["BuiltinTrainer"]


class BuiltinTrainer:
    """One study run per (variant, seed): ``settings`` with that seed, the variant's ``config.fse``
    over the cache ``masks`` and its transform."""
    name = "builtin"

    def __init__(self, rec_dir: str | os.PathLike, masks: str | os.PathLike,
                 settings: RecognizerSettings, progress: bool = True) -> None:
        self.rec_dir, self.masks, self.settings, self.progress = (Path(rec_dir), str(masks),
                                                                  settings, progress)

    def __call__(self, variant: Any, seed: int, run_dir: Path) -> dict[str, Any]:
        return train_recognizer(self.rec_dir, Path(run_dir) / "model.pt",
                                replace(self.settings, seed=seed),
                                fse=variant.fse_config(self.masks), transform=variant.transform(),
                                progress=self.progress, desc=f"{variant.name} seed {seed}")

    def load(self, weights: str | os.PathLike) -> nn.Module:
        return load_recognizer_weights(weights, self.settings.width)

    def __repr__(self) -> str:
        s = self.settings
        return (f"{type(self).__name__}(network=tiny, width={s.width}, steps={s.steps}, "
                f"batch_size={s.batch_size}, device={s.device})")
