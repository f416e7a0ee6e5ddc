"""The rules for plain values a user gives (flags, config keys, API arguments): one home for each.

Every check returns the checked value or raises ``FSEError`` naming ``name`` (a flag such as
``--batch-size``, a key such as ``config.fse.p`` or a parameter) and saying what to do. A value that
cannot mean what was typed is refused, never reinterpreted: ``True`` is not the count 1, ``2.0`` is
not the count 2, ``"3"`` is not a number.
"""
from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from fse_plugin.common.errors import FSEError

__all__ = ["is_integer", "count", "number", "probability", "open_fraction", "choice", "name_list",
           "existing_file", "existing_dir", "output_dir", "FILE_KINDS"]


def is_integer(value: Any) -> bool:
    """An integer (Python or numpy), never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def count(value: Any, name: str, minimum: int = 1) -> int:
    """A whole number >= ``minimum`` (sizes >= 1, limits >= 0)."""
    if not is_integer(value):
        raise FSEError(f"{name}: expected a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise FSEError(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def _bound_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return " and ".join(parts)


def number(value: Any, name: str, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real number within the bounds (each inclusive unless marked open)."""
    bounds = _bound_text(lo, hi, lo_open, hi_open)
    wanted = f"a finite number{' ' + bounds if bounds else ''}"
    if not _is_real(value) or not math.isfinite(value):
        raise FSEError(f"{name}: expected {wanted}, got {value!r}")
    low = lo is not None and (value <= lo if lo_open else value < lo)
    high = hi is not None and (value >= hi if hi_open else value > hi)
    if low or high:
        raise FSEError(f"{name}: must be {bounds}, got {value!r}")
    return float(value)


def probability(value: Any, name: str) -> float:
    """A probability in [0, 1]."""
    return number(value, name, 0.0, 1.0)


def open_fraction(value: Any, name: str) -> float:
    """A number strictly between 0 and 1 (a false accept rate)."""
    return number(value, name, 0.0, 1.0, lo_open=True, hi_open=True)


def choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """One of ``choices`` (compared exactly: ``1`` does not stand for ``True`` or ``"1"``)."""
    options = list(choices)
    if not any(type(value) is type(c) and value == c for c in options):
        raise FSEError(f"{name}: {value!r} is not one of {', '.join(map(str, options))}")
    return value


def name_list(value: str | Sequence[str], name: str, allowed: Iterable[str], unique: bool = True
              ) -> list[str]:
    """Names from a comma-separated string or a sequence of strings, each one of ``allowed``."""
    options = list(allowed)
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise FSEError(f"{name}: expected names separated by commas, got {value!r}")
    if not items or any(not item for item in items):
        raise FSEError(f"{name}: empty name in {value!r}; use names from {', '.join(options)}")
    unknown = [item for item in items if item not in options]
    if unknown:
        raise FSEError(f"{name}: unknown name{'s' if len(unknown) > 1 else ''} "
                       f"{', '.join(unknown)}; use names from {', '.join(options)}")
    repeated = sorted({item for item in items if items.count(item) > 1})
    if unique and repeated:
        raise FSEError(f"{name}: {', '.join(repeated)} given more than once")
    return items


# The first bytes of each kind of file a flag may name (checked before anything is read whole).
FILE_KINDS: dict[str, tuple[str, tuple[bytes, ...]]] = {
    "npy": ("a NumPy .npy array", (b"\x93NUMPY",)),
    "npz": ("a NumPy .npz archive", (b"PK\x03\x04", b"PK\x05\x06")),
    "image": ("a JPEG, PNG or BMP image", (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM")),
    "checkpoint": ("a torch checkpoint (torch.save zip or pickle)", (b"PK\x03\x04", b"\x80")),
    "pickle": ("a pickle file", (b"\x80",)),
    "json": ("a JSON file", (b"{", b"[")),
    "text": ("a text file", ()),
}


def _head(path: Path, size: int = 16) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def _matches(path: Path, kind: str) -> bool:
    head = _head(path)
    if kind == "json":
        head = head.lstrip()
    if kind == "text":
        return b"\x00" not in head
    return head.startswith(FILE_KINDS[kind][1])


def existing_file(path: str | os.PathLike, name: str, kind: str | None = None) -> Path:
    """An existing, readable file; with ``kind`` (a key of ``FILE_KINDS``) its first bytes must
    match."""
    p = Path(path)
    if not p.exists():
        raise FSEError(f"{name}: {p} does not exist")
    if p.is_dir():
        raise FSEError(f"{name}: {p} is a directory; expected a file")
    if not os.access(p, os.R_OK):
        raise FSEError(f"{name}: {p} is not readable (check its permissions)")
    if kind is not None:
        if kind not in FILE_KINDS:
            raise KeyError(f"unknown file kind {kind!r}")
        if not _matches(p, kind):
            raise FSEError(f"{name}: {p} is not {FILE_KINDS[kind][0]}")
    return p


def existing_dir(path: str | os.PathLike, name: str) -> Path:
    """An existing directory."""
    p = Path(path)
    if not p.exists():
        raise FSEError(f"{name}: {p} does not exist")
    if not p.is_dir():
        raise FSEError(f"{name}: {p} is a file; expected a directory")
    return p


def output_dir(path: str | os.PathLike, name: str) -> Path:
    """A directory that exists and is writable, or can be created (nothing is created here)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise FSEError(f"{name}: {p} is a file; expected a directory to write into")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise FSEError(f"{name}: cannot create {p}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise FSEError(f"{name}: cannot write into {probe} (check its permissions)")
    return p
