"""``fse`` (also ``python -m fse_plugin``): parse the command line, run the command, report errors.

An error the user can fix (``FSEError``: a bad file, flag or config key; a missing file) is one
line on stderr, ``fse <command>: error: <what, where, what to do>``, exit status 2, as argparse
reports bad flags. Anything else is a bug: one line and exit status 1. ``--debug`` (or
``FSE_DEBUG=1``) shows the traceback instead. Each warning (category and text) is shown once per run.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator, Sequence

from fse_plugin.cli import cache, cam, demo, evaluate, parsing, patch, study, synth
from fse_plugin.common import FSEError

__all__ = ["build_parser", "main"]

COMMANDS = (synth, parsing, cache, evaluate, cam, demo, study, patch)
"""Command modules in ``fse --help`` order; each has ``register(subparsers)``."""

_USER_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fse", description="FSErasing and FS-CAM for insightface arcface_torch.")
    ap.add_argument("--debug", action="store_true", help="show full tracebacks (also FSE_DEBUG=1)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return ap


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    return str(e)


@contextmanager
def _each_warning_once() -> Iterator[None]:
    """Show each warning (category and text) once: an upstream backbone's deprecation warning would
    otherwise repeat at every embedding pass (``warnings``' own 'once' forgets whenever a library
    changes the filters, which torch does)."""
    show, seen = warnings.showwarning, set()

    def once(message, category, filename, lineno, file=None, line=None) -> None:
        if (category, str(message)) not in seen:
            seen.add((category, str(message)))
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = once
    try:
        yield
    finally:
        warnings.showwarning = show


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not hasattr(args, "run"):
        ap.print_help()
        return 2
    debug = args.debug or os.environ.get("FSE_DEBUG", "") not in ("", "0")
    try:
        with _each_warning_once():
            return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"{args.prog}: interrupted", file=sys.stderr)
        return 130
    except (FSEError, *_USER_OS_ERRORS) as e:
        if debug:
            raise
        print(f"{args.prog}: error: {_message(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: say so in one line, keep the traceback for --debug
        if debug:
            raise
        print(f"{args.prog}: internal error: {type(e).__name__}: {e} (run again with --debug for the traceback)",
              file=sys.stderr)
        return 1
