"""``fse demo``: the whole pipeline on synthetic faces, with and without FSErasing, and a report."""
from __future__ import annotations

import argparse

from fse_plugin.cli.grammar import command, size_flags, sizes_from
from fse_plugin.cli.types import count_type, device_type, probability_type
from fse_plugin.demo.sizes import FULL, QUICK

HELP = ("the whole pipeline on synthetic faces: synth, parser, mask cache, training with and "
        "without FSErasing, evaluation, occlusion, FS-CAM, report")


def register(sub: argparse._SubParsersAction) -> None:
    command(sub, "demo", HELP, add_args, run)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="fse_demo", help="output folder")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes: the whole pipeline in a minute or two")
    p.add_argument("--seed", type=count_type(minimum=0), default=0,
                   help="seed of the data, parser and recognizers")
    p.add_argument("--p", type=probability_type(), default=0.5,
                   help="FSErasing probability of the erasing model")
    p.add_argument("--device", type=device_type(), default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=count_type(minimum=0), default=0,
                   help="torch CPU threads (default: torch's choice; 1 is often faster on a busy "
                        "machine); scores repeat bit for bit for the same seed and thread count")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("sizes (budgets are counted; the seconds are optional safety stops, 0 "
                             "= none, and a run they stop is marked not repeatable)")
    size_flags(g, FULL, "full default")


def run(args: argparse.Namespace) -> int:
    sizes = sizes_from(args, QUICK if args.quick else FULL)
    import torch

    from fse_plugin.common import resolve_device
    from fse_plugin.demo import run_demo
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    report = run_demo(args.out, sizes, seed=args.seed, p=args.p,
                      device=str(resolve_device(args.device)), progress=not args.quiet)
    print(f"demo report: {report}")
    return 0
