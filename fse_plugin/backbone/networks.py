"""Which network a name means: ``tiny`` is built in; any other name (r18, r34, r50, r100, mbf,
vit_t ...) is built by ``backbones.get_model`` of the user's arcface_torch tree, the same code that
trained it.

The tree is looked for, in order: the explicit path (``--arcface-dir``), ``$ARCFACE_TORCH_DIR``, the
tree holding the ``--config`` file (``<tree>/configs/NAME.py``), then the working directory or one
of its parents - so commands run inside the arcface_torch checkout, or given one of its configs,
need no flag.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from torch import nn

from fse_plugin.backbone.tiny import iresnet_tiny
from fse_plugin.common import FSEError

__all__ = ["arcface_torch_dir", "build_network"]

_MODULES: dict[Path, ModuleType] = {}
"""The ``backbones`` package of each tree imported so far, under a name of its own (two trees never
mix)."""


def _is_tree(path: Path) -> bool:
    return (path / "backbones" / "__init__.py").is_file()


def _checked(path: str | os.PathLike, origin: str) -> Path:
    path = Path(path).expanduser()
    if not _is_tree(path):
        raise FSEError(f"{origin} {path} is not an arcface_torch tree (no backbones/__init__.py): "
                       "give the recognition/arcface_torch directory of an insightface checkout")
    return path


def arcface_torch_dir(explicit: str | os.PathLike | None = None,
                      config_path: str | os.PathLike | None = None) -> Path | None:
    """The user's arcface_torch tree, or None: ``explicit``, else ``$ARCFACE_TORCH_DIR``, else the
    tree of ``config_path`` (``<tree>/configs/NAME.py``), else the working directory or a parent of
    it."""
    if explicit:
        return _checked(explicit, "--arcface-dir")
    if os.environ.get("ARCFACE_TORCH_DIR"):
        return _checked(os.environ["ARCFACE_TORCH_DIR"], "ARCFACE_TORCH_DIR=")
    if config_path is not None:
        tree = Path(config_path).resolve().parent.parent
        if _is_tree(tree):
            return tree
    cwd = Path.cwd().resolve()
    return next((p for p in (cwd, *cwd.parents) if _is_tree(p)), None)


def _backbones(tree: Path) -> ModuleType:
    tree = tree.resolve()
    if tree not in _MODULES:
        name = f"_fse_arcface_backbones_{len(_MODULES)}"
        init = tree / "backbones" / "__init__.py"
        spec = importlib.util.spec_from_file_location(name, init,
                                                      submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # the package's relative imports (.iresnet) resolve through it
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        _MODULES[tree] = module
    return _MODULES[tree]


def build_network(network: str = "tiny", embedding_size: int = 512,
                  arcface_dir: str | os.PathLike | None = None,
                  config_path: str | os.PathLike | None = None) -> nn.Module:
    """A freshly initialised (random) network, for weights to be loaded into, or for cost
    measurements."""
    if network == "tiny":
        return iresnet_tiny(num_features=embedding_size)
    tree = arcface_torch_dir(arcface_dir, config_path)
    if tree is None:
        raise FSEError(f"network {network!r} is built by arcface_torch's backbones.get_model and no arcface_torch "
                       "tree was found: pass --arcface-dir /path/to/insightface/recognition/arcface_torch (or set "
                       "ARCFACE_TORCH_DIR, run from inside that directory, or give --config <tree>/configs/NAME.py); "
                       "--network tiny and --network torchscript need none")
    try:
        return _backbones(tree).get_model(network, dropout=0.0, fp16=False,
                                          num_features=embedding_size)
    except ValueError:
        # upstream's get_model raises a bare ValueError() for a name it does not know
        raise FSEError(f"network {network!r} is not known to {tree}/backbones/__init__.py "
                       "get_model (r18, r34, r50, r100, r200, mbf, vit_t ...)") from None
