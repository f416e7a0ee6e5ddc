"""arcface_torch configs (``configs/NAME.py``) as the evaluation reads them: the network, embedding
size, the ``model.pt`` a training run wrote, the packs of ``rec``/``val_targets``."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Mapping

from fse_plugin.common import FSEError, checks

__all__ = ["config_file", "config_weights", "load_config"]


def _exec_config(path: Path) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location(f"_fse_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise FSEError(f"{path}: not a Python config file")
    module = importlib.util.module_from_spec(spec)
    try:
        # the user's own config, as arcface_torch's get_config imports it
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise FSEError(f"{path}: line {e.lineno}: {e.msg}: fix the config's Python "
                       "syntax") from None
    except ImportError as e:
        raise FSEError(f"{path}: {e}: the config imports something this environment "
                       "lacks") from None
    if not hasattr(module, "config"):
        raise FSEError(f"{path}: defines no `config`")
    return dict(module.config)


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """An arcface_torch config: ``configs/base.py`` beside it first, then the job config over it,
    ``output`` defaulting to ``work_dirs/NAME`` - what ``utils_config.get_config`` does. ``_path``
    is the file read."""
    path = checks.existing_file(path, "--config")
    base = path.parent / "base.py"
    cfg = _exec_config(base) if base.is_file() and base.resolve() != path.resolve() else {}
    cfg.update(_exec_config(path))
    if cfg.get("output") is None:
        cfg["output"] = os.path.join("work_dirs", path.stem)
    cfg["_path"] = str(path)
    return cfg


def config_file(cfg: Mapping[str, Any], value: str | os.PathLike) -> Path:
    """A path named in a config: as given if it exists from here, else relative to the arcface_torch
    tree that holds the config (arcface_torch runs from there)."""
    p = Path(value)
    root = Path(cfg["_path"]).resolve().parent.parent
    return p if p.is_absolute() or p.exists() or not (root / p).exists() else root / p


def config_weights(cfg: Mapping[str, Any]) -> Path | None:
    """``<output>/model.pt`` of the config's training run, if it exists."""
    candidate = config_file(cfg, cfg["output"]) / "model.pt" if cfg.get("output") else None
    return candidate if candidate is not None and candidate.is_file() else None
