"""``fse study``: K seeds x variants (off, FSErasing, RandomErasing ...) with intervals and paired tests."""
from __future__ import annotations

import argparse

from fse_plugin.cli.grammar import command, size_flags, sizes_from

HELP = ("evidence with intervals: train K seeds x variants (off, fse p=0.5, torchvision RandomErasing) on one "
        "synthetic set, evaluate clean / erased regions / rendered occluders, report means, 95 percent intervals "
        "and paired tests")


def register(sub: argparse._SubParsersAction) -> None:
    command(sub, "study", HELP, add_args, run)


def add_args(p: argparse.ArgumentParser) -> None:
    from fse_plugin.study import DEFAULT, DEFAULT_VARIANTS
    p.add_argument("--out", default="fse_study", help="output folder (default ./fse_study)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (3 seeds, 8 steps per run): a smoke test of a few minutes")
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), metavar="VARIANT",
                   help="off, fse[:key=value,...] (config.fse keys; fse alone is p=0.5), "
                        "random_erasing[:key=value,...] (torchvision RandomErasing arguments); must include off "
                        f"(default: {' '.join(DEFAULT_VARIANTS)})")
    p.add_argument("--masks", choices=("parser", "gt"), default="parser",
                   help="masks of the training rec: from a parser trained here (default, as a user has them) or the "
                        "synthetic ground truth (isolates the augmentation from parser errors)")
    p.add_argument("--regions", action="store_true",
                   help="also erase each of the 25 single regions (mean accuracy; 25 more evaluations per run)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default: torch's choice; 1 is often faster on a busy machine); results "
                        "repeat bit for bit for the same thread count")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("sizes (counted budgets; defaults sized for ~20 minutes on 2 quiet CPU cores)")
    size_flags(g, DEFAULT)
    a = p.add_argument_group("trainer")
    a.add_argument("--trainer", choices=("builtin", "arcface"), default="builtin",
                   help="builtin: the plugin's small ArcFace loop (CPU minutes); arcface: upstream train_v2.py under "
                        "torchrun in a patched copy of --arcface-dir (CUDA only; off and fse variants only)")
    a.add_argument("--arcface-dir", help="arcface_torch checkout for --trainer arcface (default $ARCFACE_TORCH_DIR)")
    a.add_argument("--network", default="r18", help="arcface_torch network for --trainer arcface (r18, r50, ...)")
    a.add_argument("--nproc-per-node", type=int, default=1, help="GPUs per run for --trainer arcface (torchrun)")


def run(args: argparse.Namespace) -> int:
    import torch

    from fse_plugin.common import resolve_device
    from fse_plugin.study import DEFAULT, QUICK, run_study
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    arcface = {"arcface_dir": args.arcface_dir, "network": args.network, "nproc_per_node": args.nproc_per_node}
    sizes = sizes_from(args, QUICK if args.quick else DEFAULT)
    run_study(args.out, sizes, args.variants, masks=args.masks, device=str(resolve_device(args.device)),
              trainer=args.trainer, arcface=arcface if args.trainer == "arcface" else None, regions=args.regions,
              progress=not args.quiet)
    return 0
