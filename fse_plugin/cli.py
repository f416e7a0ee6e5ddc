"""`fse` command line (also `python -m fse_plugin`). Each subcommand is a thin layer over a module."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

_COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int | None]]] = []


def command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None]):
    """Register ``fn(args)`` as ``fse NAME``; ``add_args`` declares its flags."""
    def deco(fn):
        _COMMANDS.append((name, help, add_args, fn))
        return fn
    return deco


# === section: synth ===
# === end: synth ===

# === section: parser ===
# === end: parser ===

# === section: maskcache ===
# === end: maskcache ===

# === section: dataset ===
# === end: dataset ===

# === section: cam ===
# === end: cam ===

# === section: evaluation ===
# === end: evaluation ===

# === section: demo ===
# === end: demo ===


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fse", description="FSErasing and FS-CAM for insightface arcface_torch.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_, add_args, fn in _COMMANDS:
        p = sub.add_parser(name, help=help_, description=help_)
        add_args(p)
        p.set_defaults(_run=fn)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not hasattr(args, "_run"):
        ap.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
