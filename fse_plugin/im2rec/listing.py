"""``im2rec --list``: the image lists mxnet 1.9.1's ``tools/im2rec.py`` writes, line for line.

Its order, reproduced here: a top-down walk (symlinks followed, sub-folders and files sorted by
name), files kept when their lower-cased suffix is one of ``exts``; with ``recursive`` each folder
holding an image gets the next label in walk order, else only the root's files are listed, all
label 0. The list is shuffled by Python's ``random`` seeded with 100 (unless ``shuffle`` is off),
cut into ``chunks`` of ceil(N / chunks) images, and each chunk split into test, train and val parts
at int(chunk_size * ratio), as mxnet does (the last chunk may be shorter).

The image table keeps all file names as one UTF-8 byte string with an offset and a folder per image,
not a tuple of Python objects per image as mxnet does: a WebFace42M-size folder fits in memory
easily.
"""
from __future__ import annotations

import logging
import os
import random
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from fse_plugin.common import checks
from fse_plugin.common.errors import FSEError
from fse_plugin.common.files import atomic_output
from fse_plugin.im2rec.lstfile import format_line

__all__ = ["DEFAULT_EXTS", "ListSettings", "ImageTable", "ListFile", "list_images", "make_lists"]

log = logging.getLogger(__name__)

DEFAULT_EXTS = (".jpeg", ".jpg", ".png")
_SHUFFLE_SEED = 100  # mxnet's random.seed(100)


@dataclass(frozen=True)
class ListSettings:
    """im2rec's list options (``--recursive``, ``--exts``, ``--chunks``, ``--train-ratio``,
    ``--test-ratio``, ``--no-shuffle``), checked on construction."""
    recursive: bool = False
    exts: tuple[str, ...] = DEFAULT_EXTS
    chunks: int = 1
    train_ratio: float = 1.0
    test_ratio: float = 0.0
    shuffle: bool = True

    def __post_init__(self) -> None:
        checks.count(self.chunks, "--chunks")
        checks.probability(self.train_ratio, "--train-ratio")
        checks.probability(self.test_ratio, "--test-ratio")
        if self.train_ratio + self.test_ratio > 1.0:
            raise FSEError(f"--train-ratio {self.train_ratio:g} + --test-ratio {self.test_ratio:g} "
                           "is over 1; "
                           "the rest goes to the val list, so make them sum to 1 or less")
        if not self.exts:
            raise FSEError("--exts: give at least one file suffix, e.g. .jpg")
        for ext in self.exts:
            if not ext.startswith(".") or ext != ext.lower() or len(ext) < 2:
                raise FSEError(f"--exts: {ext!r} never matches: suffixes are compared lower-cased "
                               f"with their dot (use {'.' + ext.lstrip('.').lower()!r})")


@dataclass
class ImageTable:
    """Images in walk order: the index of image i is i, its label that of its folder."""
    # relative folder path with a trailing '/', or ''
    folders: list[str] = field(default_factory=list)
    labels: array = field(default_factory=lambda: array("q"))  # label of each folder
    folder_of: array = field(default_factory=lambda: array("i"))  # folder of each image
    ends: array = field(default_factory=lambda: array("q"))  # end of each image's name in names
    # file names, UTF-8 (surrogateescape), back to back
    names: bytearray = field(default_factory=bytearray)

    def __len__(self) -> int:
        return len(self.ends)

    def add_folder(self, rel: str, label: int, files: list[str]) -> None:
        self.folders.append("" if rel == "." else rel + "/")
        self.labels.append(label)
        for name in files:
            self.names += name.encode("utf-8", "surrogateescape")
            self.ends.append(len(self.names))
            self.folder_of.append(len(self.folders) - 1)

    def line(self, i: int) -> str:
        """Image i's list line, as im2rec writes it."""
        start = self.ends[i - 1] if i else 0
        name = self.names[start:self.ends[i]].decode("utf-8", "surrogateescape")
        folder = self.folder_of[i]
        return format_line(i, self.labels[folder], self.folders[folder] + name)


@dataclass(frozen=True)
class ListFile:
    """A list written: its path and how many images it holds."""
    path: Path
    images: int


def _scan(path: str, exts: tuple[str, ...]) -> tuple[list[str], list[str]] | None:
    """(sub-folders, image files) of a folder, sorted; entries classified as os.walk does, files
    kept as ``os.path.isfile`` would (symlinks followed) without a stat per regular file. None if
    unreadable."""
    dirs, files = [], []
    try:
        with os.scandir(path) as it:
            for entry in it:
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    dirs.append(entry.name)
                elif os.path.splitext(entry.name)[1].lower() in exts and _is_file(entry):
                    files.append(entry.name)
    except OSError as e:
        log.warning("%s: skipped, cannot list it (%s)", path, e.strerror)
        return None
    return sorted(dirs), sorted(files)


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def list_images(root: str | os.PathLike, recursive: bool, exts: tuple[str, ...] = DEFAULT_EXTS
                ) -> ImageTable:
    """The images under ``root`` in im2rec's order, with its labels (see the module docstring)."""
    root = os.path.abspath(checks.existing_dir(root, "ROOT"))
    table = ImageTable()
    stack = [root]
    while stack:
        path = stack.pop()
        scanned = _scan(path, exts)
        if scanned is None:
            continue
        dirs, images = scanned
        if images:
            table.add_folder(os.path.relpath(path, root), len(table.folders), images)
        if recursive:
            stack.extend(os.path.join(path, d) for d in reversed(dirs))
        else:
            break
    return table


def _write(path: str, table: ImageTable, order: array) -> ListFile:
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.writelines(table.line(i) for i in order)
    return ListFile(Path(path), len(order))


def _parts(prefix: str, chunk: int, n_chunks: int, chunk_size: int, settings: ListSettings
           ) -> list[tuple[str, slice]]:
    """(file name, slice of the chunk) of each list a chunk gives, in the order mxnet writes
    them."""
    name = prefix + (f"_{chunk}" if n_chunks > 1 else "")
    if settings.train_ratio == 1.0:
        return [(name + ".lst", slice(None))]
    sep, sep_test = int(chunk_size * settings.train_ratio), int(chunk_size * settings.test_ratio)
    parts = []
    if settings.test_ratio:
        parts.append((name + "_test.lst", slice(None, sep_test)))
    if settings.train_ratio + settings.test_ratio < 1.0:
        parts.append((name + "_val.lst", slice(sep_test + sep, None)))
    parts.append((name + "_train.lst", slice(sep_test, sep_test + sep)))
    return parts


def make_lists(prefix: str | os.PathLike, root: str | os.PathLike,
               settings: ListSettings = ListSettings()) -> list[ListFile]:
    """Write im2rec's lists of the images under ``root`` to
    ``<prefix>[_<chunk>][_train|_val|_test].lst``.

    FSEError if ``root`` holds no image, or if there are fewer images than ``chunks``.
    """
    prefix = os.path.abspath(prefix)
    checks.output_dir(os.path.dirname(prefix), "PREFIX")
    table = list_images(root, settings.recursive, settings.exts)
    n = len(table)
    if not n:
        where = (f"under {root}" if settings.recursive
                 else f"directly in {root} (--recursive lists its sub-folders)")
        raise FSEError(f"ROOT: no image with suffix {', '.join(settings.exts)} {where}")
    if settings.chunks > n:
        raise FSEError(f"--chunks {settings.chunks} is more than the {n} images under {root}")
    log.info("%d images in %d labelled folders under %s", n, len(table.folders), root)
    order = array("i", range(n))
    if settings.shuffle:
        # the same permutation as mxnet's shuffle of its list
        random.Random(_SHUFFLE_SEED).shuffle(order)
    chunk_size = (n + settings.chunks - 1) // settings.chunks
    written = []
    for c in range(settings.chunks):
        chunk = order[c * chunk_size:(c + 1) * chunk_size]
        for name, part in _parts(prefix, c, settings.chunks, chunk_size, settings):
            written.append(_write(name, table, chunk[part]))
    return written
