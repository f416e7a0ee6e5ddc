"""Packages that re-export their modules' public names on first use.

Importing a package, or one light name of it (a constant the command line lists, ``FSEError``), then
does not import its heavy modules: ``fse --help`` and ``fse rec`` start without torch.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Mapping, Sequence

__all__ = ["lazy_exports"]


class _LazyPackage(types.ModuleType):
    """A package whose re-exported names load their module when first read (PEP 562's
    ``__getattr__``, as a module class so that ``__setattr__`` can keep a function that is spelled
    like its module)."""

    def __getattr__(self, name: str) -> Any:
        home = self.__dict__["_lazy_homes"].get(name)
        if home is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home, self.__name__), name)
        super().__setattr__(name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        # Loading a module binds it on its package; where a re-exported name is also its module's
        # name (``cam.explain``), the name keeps meaning what the module exports, as an eager
        # ``__init__`` has it.
        if not (isinstance(value, types.ModuleType)
                and self.__dict__["_lazy_homes"].get(name) == f".{name}"):
            super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted({*self.__dict__, *self.__dict__["_lazy_homes"]})


def lazy_exports(package: str, homes: Mapping[str, Sequence[str]]) -> None:
    """Make ``package`` (its ``__init__`` passes ``__name__``) re-export ``homes``, module -> the
    public names it gives (``".reader"``: a module of the package; ``"fse_plugin.labels"``: any
    other), loading a module when one of its names is first read; ``__all__`` lists them all."""
    module = sys.modules[package]
    module._lazy_homes = {name: home for home, names in homes.items() for name in names}
    module.__all__ = list(module._lazy_homes)
    module.__class__ = _LazyPackage
