"""Writing result files so that an interrupted run never leaves one that looks complete.

A result is written under a temporary name beside its final path and renamed onto it only when it is
whole (``os.replace`` is atomic on one file system): a reader, or the next run, sees the old file or
the new one, never half of one. A run killed with SIGKILL leaves at most the temporary file, whose
name says what it is (``<name>.tmp-<pid>``).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["TMP_MARK", "atomic_output", "atomic_write", "temporary_name"]

TMP_MARK = ".tmp-"
"""What every temporary name holds between the final name and the writer's process id."""


def temporary_name(path: str | os.PathLike) -> Path:
    """The temporary path this process writes ``path`` through."""
    path = Path(path)
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception, rename it
    onto ``path`` (a file, or a directory that does not exist yet); otherwise remove it. The parent
    directory is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _remove(child)
        path.rmdir()
    else:
        path.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, flushed to disk before the rename."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
