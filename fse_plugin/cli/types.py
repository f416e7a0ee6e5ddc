"""argparse ``type=`` functions over ``fse_plugin.common.checks``: a bad flag value is refused while
the command line is parsed, before anything is loaded, as one line naming the flag.

argparse calls a type with the flag's text and, on ``ArgumentTypeError``, reports
``argument --flag: <message>``; each factory here turns the text into a value (a whole number, a
number, names, a path) and applies the rule of ``checks`` to it.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Iterable

from fse_plugin.common import checks
from fse_plugin.common.errors import FSEError

__all__ = ["count_type", "number_type", "probability_type", "open_fraction_type", "names_type",
           "file_type", "dir_type", "output_dir_type", "device_type"]

# argparse prefixes the flag itself: "argument --batch-size: value: ..." reads badly, so strip it
_FLAG = "value"


def _typed(convert: Callable[[str], Any], label: str) -> Callable[[str], Any]:
    """A type function: ``convert`` the text; an FSEError becomes argparse's error for the flag."""
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except FSEError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"{_FLAG}: ")) from None
    parse.__name__ = label  # argparse names the type in "invalid <name> value" messages
    return parse


def _whole(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise FSEError(f"{_FLAG}: expected a whole number, got {text!r}") from None


def _real(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FSEError(f"{_FLAG}: expected a number, got {text!r}") from None


def count_type(minimum: int = 1) -> Callable[[str], int]:
    """A whole number >= ``minimum``."""
    return _typed(lambda text: checks.count(_whole(text), _FLAG, minimum), "count")


def number_type(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                hi_open: bool = False) -> Callable[[str], float]:
    """A finite number within the bounds."""
    return _typed(lambda text: checks.number(_real(text), _FLAG, lo, hi, lo_open, hi_open),
                  "number")


def probability_type() -> Callable[[str], float]:
    """A probability in [0, 1]."""
    return _typed(lambda text: checks.probability(_real(text), _FLAG), "probability")


def open_fraction_type() -> Callable[[str], float]:
    """A number strictly between 0 and 1 (a false accept rate)."""
    return _typed(lambda text: checks.open_fraction(_real(text), _FLAG), "fraction")


def names_type(allowed: Iterable[str], unique: bool = True) -> Callable[[str], list[str]]:
    """Comma-separated names, each one of ``allowed``."""
    options = list(allowed)
    return _typed(lambda text: checks.name_list(text, _FLAG, options, unique), "names")


def file_type(kind: str | None = None) -> Callable[[str], Path]:
    """An existing file; with ``kind`` (see ``checks.FILE_KINDS``) of that kind."""
    return _typed(lambda text: checks.existing_file(text, _FLAG, kind), "file")


def dir_type() -> Callable[[str], Path]:
    """An existing directory."""
    return _typed(lambda text: checks.existing_dir(text, _FLAG), "directory")


def output_dir_type() -> Callable[[str], Path]:
    """A directory that is writable or can be created."""
    return _typed(lambda text: checks.output_dir(text, _FLAG), "directory")


def device_type() -> Callable[[str], str]:
    """A device this machine has: auto, cpu, cuda, cuda:N (kept as text; ``resolve_device`` makes
    it). auto and cpu, which every machine has (the defaults), are taken without importing torch."""
    def device(text: str) -> str:
        if text not in ("auto", "cpu"):
            from fse_plugin.common.runtime import resolve_device
            resolve_device(text, _FLAG)
        return text
    return _typed(device, "device")
