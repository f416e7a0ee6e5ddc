"""The ``.lst`` image list of mxnet's im2rec: ``index<TAB>label[<TAB>label...]<TAB>path`` per line.

im2rec skips a line it cannot parse with a message and packs the rest; here the whole list is
checked before any image is read, so a typo is one error naming the line, not a rec silently missing
images. An index becomes a record key and header id, so it must fit the .idx's int64 and be unique.
"""
from __future__ import annotations

import math
import os
from array import array
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np

from fse_plugin.common.errors import FSEError

__all__ = ["ListItem", "ListSummary", "format_line", "parse_line", "check_list", "read_lines"]

_MAX_INDEX = 2**63 - 1  # .idx keys are read as int64


class ListItem(NamedTuple):
    """One parsed line: the record key (and header id), its float labels, the image path under the
    root."""
    index: int
    labels: tuple[float, ...]
    path: str


@dataclass(frozen=True)
class ListSummary:
    """What a checked list holds: lines (blank ones included, the unit of progress and resume) and
    images."""
    path: str
    lines: int
    images: int


def format_line(index: int, label: float, path: str) -> str:
    """A line as im2rec's ``write_list`` writes it (``%d``, ``%f``, ``%s``)."""
    return f"{index:d}\t{label:f}\t{path}\n"


def parse_line(line: str, where: str) -> ListItem | None:
    """The item of one line (fields split and stripped as im2rec does); None for a blank line.

    ``where`` ("FILE: line N") starts every error message.
    """
    fields = [f.strip() for f in line.strip().split("\t")]
    if len(fields) < 3:
        if fields == [""]:
            return None
        raise FSEError(f"{where}: expected 'index<TAB>label<TAB>path' (tab-separated), "
                       f"got {line.strip()[:80]!r}")
    try:
        index = int(fields[0])
    except ValueError:
        raise FSEError(f"{where}: index {fields[0][:40]!r} is not an integer") from None
    if not 0 <= index <= _MAX_INDEX:
        raise FSEError(f"{where}: index {index} is outside 0..2^63-1 (it becomes the record key)")
    try:
        labels = tuple(map(float, fields[1:-1]))
    except ValueError:
        bad = next(t for t in fields[1:-1] if not _is_float(t))
        raise FSEError(f"{where}: label {bad[:40]!r} is not a number") from None
    if not all(map(math.isfinite, labels)):
        bad = next(t for t, v in zip(fields[1:-1], labels) if not math.isfinite(v))
        raise FSEError(f"{where}: label {bad!r} is not a finite number")
    return ListItem(index, labels, fields[-1])


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_lines(path: str | os.PathLike, skip: int = 0) -> Iterator[tuple[int, str]]:
    """(line number from 1, text) of every line after the first ``skip`` (a resumed run's done
    lines)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for number, line in enumerate(f, 1):
            if number > skip:
                yield number, line


def check_list(path: str | os.PathLike) -> ListSummary:
    """Parse every line of a list (one pass; 16 bytes per image kept for the duplicate check).

    FSEError naming the file and line for a malformed line, a duplicate index, or a list without
    images.
    """
    path = str(path)
    keys, numbers, lines = array("q"), array("q"), 0
    try:
        for lines, line in read_lines(path):
            item = parse_line(line, f"{path}: line {lines}")
            if item is not None:
                keys.append(item.index)
                numbers.append(lines)
    except OSError as e:
        raise FSEError(f"{path}: cannot read the image list: {e.strerror}") from None
    if not keys:
        raise FSEError(f"{path}: the image list holds no images")
    _refuse_duplicates(path, np.frombuffer(keys, np.int64), np.frombuffer(numbers, np.int64))
    return ListSummary(path, lines, len(keys))


def _refuse_duplicates(path: str, keys: np.ndarray, numbers: np.ndarray) -> None:
    order = np.argsort(keys, kind="stable")
    same = np.flatnonzero(keys[order[1:]] == keys[order[:-1]])
    if len(same):
        first, second = order[same[0]], order[same[0] + 1]
        raise FSEError(f"{path}: line {numbers[second]}: index {keys[first]} is already on line "
                       f"{numbers[first]} (record keys must be unique)")
