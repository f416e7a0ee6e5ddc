"""``fse patch-arcface``: apply (check, reverse) the plugin's patches to an arcface_torch
checkout."""
from __future__ import annotations

import argparse

from fse_plugin.cli.grammar import command

HELP = "apply the plugin's patches to an arcface_torch checkout (config.fse hook)"


def register(sub: argparse._SubParsersAction) -> None:
    command(sub, "patch-arcface", HELP, add_args, run)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="arcface_torch dir, or the insightface repo root")
    p.add_argument("--check", action="store_true", help="only report what would be done")
    p.add_argument("--reverse", action="store_true", help="remove the patches again")


def run(args: argparse.Namespace) -> int:
    from fse_plugin.patching import apply_patches
    for r in apply_patches(args.dir, reverse=args.reverse, check=args.check):
        print(f"{r.patch.name}: {r.status} ({', '.join(r.files)})")
    return 0
