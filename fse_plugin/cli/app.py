"""``fse`` (also ``python -m fse_plugin``): parse the command line, run the command, report errors.

Exit statuses: 0 done; 2 an error the user can fix (``FSEError``: a bad file, flag or config key; a
missing file), one line on stderr, ``fse <command>: error: <what, where, what to do>``, as bad
flags are reported; 1 a bug, one line; 130 Ctrl-C, one line (``fse <command>: interrupted``), also
when the interrupt reached a part of the run that swallowed it. ``--debug`` (or ``FSE_DEBUG=1``)
shows the traceback instead. Each warning (category and text) is shown once per run. The library
speaks through ``logging`` (loggers under ``fse_plugin``); here they print to stderr.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator, Sequence

from fse_plugin.cli import cache, cam, demo, evaluate, parsing, patch, rec, study, synth
from fse_plugin.cli.grammar import Parser
from fse_plugin.common import FSEError

__all__ = ["build_parser", "main"]

COMMANDS = (synth, rec, parsing, cache, evaluate, cam, demo, study, patch)
"""Command modules in ``fse --help`` order; each has ``register(subparsers)``."""

_USER_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                   NotADirectoryError)


def build_parser(complete: bool = True) -> Parser:
    """The ``fse`` grammar. ``complete=False`` (what ``main`` runs) leaves each command's flags to
    be added when that command is parsed, so a command imports what its own flags need, and
    ``fse --help`` no command's."""
    ap = Parser(prog="fse", description="FSErasing and FS-CAM for insightface arcface_torch.")
    ap.add_argument("--debug", action="store_true", help="show full tracebacks (also FSE_DEBUG=1)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return ap.complete() if complete else ap


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


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record is emitted (tests swap
    it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


@contextmanager
def _logging_to_stderr(quiet: bool) -> Iterator[None]:
    """While a command runs, the ``fse_plugin`` loggers print their messages as they are, to stderr
    (warnings only with --quiet); afterwards the logger is as it was (``main`` may run
    in-process)."""
    log = logging.getLogger("fse_plugin")
    saved = log.level, log.propagate
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


@contextmanager
def _interrupts_counted() -> Iterator[list[int]]:
    """Count SIGINTs while the command runs (each still raises KeyboardInterrupt), so an interrupt
    that some library swallowed, or that made a child process fail, is still reported as one."""
    seen: list[int] = []

    def handler(signum, frame) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted(prog: str) -> int:
    print(f"{prog}: interrupted", file=sys.stderr)
    return 130


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser(complete=False)
    args = ap.parse_args(argv)
    if not hasattr(args, "run"):
        ap.print_help()
        return 2
    debug = args.debug or os.environ.get("FSE_DEBUG", "") not in ("", "0")
    quiet = bool(getattr(args, "quiet", False))
    with _interrupts_counted() as interrupts, _logging_to_stderr(quiet):
        try:
            with _each_warning_once():
                status = int(args.run(args) or 0)
            return _interrupted(args.prog) if interrupts else status
        except KeyboardInterrupt:
            return _interrupted(args.prog)
        except (FSEError, *_USER_OS_ERRORS) as e:
            if interrupts:
                return _interrupted(args.prog)
            if debug:
                raise
            print(f"{args.prog}: error: {_message(e)}", file=sys.stderr)
            return 2
        except Exception as e:  # a bug: say so in one line, keep the traceback for --debug
            if interrupts:
                return _interrupted(args.prog)
            if debug:
                raise
            print(f"{args.prog}: internal error: {type(e).__name__}: {e} "
                  "(run again with --debug for the traceback)", file=sys.stderr)
            return 1
