"""``fse demo``: the whole pipeline on synthetic faces, with and without FSErasing, and a report."""
from __future__ import annotations

import argparse
from dataclasses import replace

from fse_plugin.cli.grammar import command

HELP = ("the whole pipeline on synthetic faces: synth, parser, mask cache, training with and without FSErasing, "
        "evaluation, occlusion, FS-CAM, report")


def register(sub: argparse._SubParsersAction) -> None:
    command(sub, "demo", HELP, add_args, run)


def add_args(p: argparse.ArgumentParser) -> None:
    from fse_plugin.demo import FULL
    p.add_argument("--out", default="fse_demo", help="output folder (default ./fse_demo)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: the whole pipeline in about a minute")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--p", type=float, default=0.5, help="FSErasing probability of the erasing model")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    for name, value in vars(FULL).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None,
                       help=f"override the size {name} (full default {value})")


def run(args: argparse.Namespace) -> int:
    from fse_plugin.common import resolve_device
    from fse_plugin.demo import FULL, QUICK, run_demo
    base = QUICK if args.quick else FULL
    sizes = replace(base, **{k: getattr(args, k) for k in vars(base) if getattr(args, k) is not None})
    run_demo(args.out, sizes, seed=args.seed, p=args.p, device=str(resolve_device(args.device)),
             progress=not args.quiet)
    return 0
