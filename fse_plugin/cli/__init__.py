"""The ``fse`` command line: ``main`` parses and runs; one module per command, each a thin layer
that turns flags into plain arguments of the library's functions.

This module stays light on purpose: ``main`` imports the commands inside its own Ctrl-C handling,
so an interrupt during start-up is one line and exit status 130 too. The command modules import
nothing heavy at the top, and a command's flags are built only when that command is parsed, so
``fse --help`` and ``fse rec`` start without torch (``tests/test_startup.py``).
"""
from __future__ import annotations

import sys
from typing import Sequence

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fse`` with ``argv`` (default: the command line); returns the exit status."""
    try:
        from fse_plugin.cli import app
    except KeyboardInterrupt:
        print("fse: interrupted", file=sys.stderr)
        return 130
    return app.main(argv)


def build_parser():
    """The whole ``fse`` argument parser (for tests and documentation tools)."""
    from fse_plugin.cli import app
    return app.build_parser()
