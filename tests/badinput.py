"""Harness of the bad-input tests (``tests/test_bad_input_*.py``): run ``fse`` in-process and check
the error contract: exit status 2, exactly one line on stderr naming the flag, file or key, and
nothing loaded before the refusal (the ``no_loading`` fixture)."""
from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Callable, Sequence

import pytest

from fse_plugin.cli import main


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_fse(argv: Sequence[str], entry: Callable[[list[str]], int] = main) -> Result:
    """``fse *argv`` in this process (or another command's ``entry`` with the same contract, e.g. a
    benchmark script's ``main``); argparse's exits become the status."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = entry([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
    return Result(rc, out.getvalue(), err.getvalue())


def assert_user_error(result: Result, *names: str) -> None:
    """Exit status 2 and one line on stderr that names each of ``names``."""
    assert result.rc == 2, f"exit status {result.rc}, stderr:\n{result.err}"
    assert len(result.lines) == 1, f"expected one line on stderr, got:\n{result.err}"
    for name in names:
        assert name in result.lines[0], f"{name!r} not named in: {result.lines[0]}"
    assert "internal error" not in result.lines[0]


def _refuse(what: str):
    def loader(*args, **kwargs):
        raise AssertionError(f"{what} called before the bad input was refused")
    return loader


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a model or an image is loaded (the refusal must come first)."""
    import cv2
    import torch
    monkeypatch.setattr(torch, "load", _refuse("torch.load"))
    monkeypatch.setattr(cv2, "imdecode", _refuse("cv2.imdecode"))
