"""Result files of the evaluation written whole or not at all (``common.files.atomic_output``):
arrays and figures, whose writers (``np.save``, ``savefig``) would otherwise leave half a file
behind an interrupted run."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fse_plugin.common.files import atomic_output

__all__ = ["atomic_npy", "atomic_figure"]


def atomic_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save`` to ``path`` through a temporary file (through a handle: ``np.save`` would add
    ``.npy``)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
    return Path(path)


def atomic_figure(fig: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """``fig.savefig`` to ``path`` through a temporary file, in the format its suffix names."""
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), **kwargs)
    return path
