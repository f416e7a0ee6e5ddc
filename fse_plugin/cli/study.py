"""``fse study``: K seeds x variants (off, FSErasing, RandomErasing ...) with intervals, paired
tests and the study's own sensitivity."""
from __future__ import annotations

import argparse

from fse_plugin.cli.grammar import command, size_flags, sizes_from
from fse_plugin.cli.types import count_type, device_type, file_type
from fse_plugin.common import FSEError
from fse_plugin.study.presets import (DEFAULT, DEFAULT_PROBES, DEFAULT_VARIANTS, MASKS, OUT, PROBES,
                                      QUICK, TRAINERS)

HELP = ("evidence with intervals: train K seeds x variants (off, fse p=0.5, torchvision "
        "RandomErasing) on one synthetic set or your own rec, evaluate clean / erased regions / "
        "rendered occluders, report means, 95 percent intervals, paired tests and the smallest "
        "effect the study can detect")


def register(sub: argparse._SubParsersAction) -> None:
    command(sub, "study", HELP, add_args, run)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=str(OUT), help="output folder")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (3 seeds, 8 steps per run): a smoke test of a couple of "
                        "minutes")
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), metavar="VARIANT",
                   help="off, fse[:key=value,...] (config.fse keys; fse alone is p=0.5), "
                        "random_erasing[:key=value,...] (torchvision RandomErasing arguments); "
                        "must include off")
    p.add_argument("--probes", default=",".join(DEFAULT_PROBES) or "none", metavar="NAMES",
                   help="what each model is scored on besides the clean pairs: occluders drawn on "
                        "the probe (sunglasses, surgical_mask, hat, hand) and groups erased in it "
                        "(eyes+brows, upper_face, lower_face), comma-separated; 'all' for every "
                        "one, 'none' for clean pairs only")
    p.add_argument("--regions", action="store_true",
                   help="also erase each of the 25 single regions (mean accuracy; 25 more "
                        "evaluations per run)")
    p.add_argument("--masks", choices=MASKS, default=None,
                   help="masks of the synthetic rec: from a parser trained here (the default, as a "
                        "user has them) or the synthetic ground truth (isolates the augmentation "
                        "from parser errors)")
    p.add_argument("--device", type=device_type(), default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=count_type(minimum=0), default=0,
                   help="torch CPU threads (0: torch's choice; 1 is often faster on a busy "
                        "machine); results repeat bit for bit for the same thread count")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("sizes (counted budgets; the defaults take about 25 minutes on 2 "
                             "quiet CPU cores)")
    size_flags(g, DEFAULT)
    d = p.add_argument_group("your own data (instead of synthetic faces)")
    d.add_argument("--rec", help="train on this insightface rec folder (train.rec, train.idx) "
                                 "instead of a synthetic one; its masks come from --mask-cache")
    d.add_argument("--mask-cache", help="mask cache of --rec (default: <rec>/fse_masks, built with "
                                        "fse cache build)")
    d.add_argument("--pack",
                   help="score on this verification .bin instead of a synthetic pack; its masks: "
                        "<stem>.masks.npy beside it, or predicted with --parser")
    d.add_argument("--parser", type=file_type("checkpoint"),
                   help="parser checkpoint that predicts the masks of --pack")
    a = p.add_argument_group("trainer")
    a.add_argument("--trainer", choices=TRAINERS, default="builtin",
                   help="builtin: the plugin's small ArcFace loop (CPU minutes); arcface: upstream "
                        "train_v2.py under torchrun in a patched copy of --arcface-dir (CUDA only; "
                        "off and fse variants only)")
    a.add_argument("--arcface-dir",
                   help="arcface_torch checkout for --trainer arcface (default $ARCFACE_TORCH_DIR)")
    a.add_argument("--network", default="r18",
                   help="arcface_torch network for --trainer arcface (r18, r50, ...)")
    a.add_argument("--nproc-per-node", type=count_type(), default=1,
                   help="GPUs per run for --trainer arcface")


def _refuse_unused(args: argparse.Namespace) -> None:
    """A size typed for data the study will not make cannot mean what was typed."""
    unused = []
    if args.rec:
        unused.append(("--rec", ("ids", "per_id", "fs_images", "parser_epochs")))
    if args.pack:
        unused.append(("--pack", ("pairs",)))
    if args.masks == "gt":
        unused.append(("--masks gt", ("fs_images", "parser_epochs")))
    for flag, sizes in unused:
        typed = [f"--{s.replace('_', '-')}" for s in sizes if getattr(args, s) is not None]
        if typed:
            raise FSEError(f"{typed[0]} sizes synthetic data that the study does not make with "
                           f"{flag}: leave it out")


def settings_from(args: argparse.Namespace):
    """The study's settings from the command line (checked whole by ``run_study`` before any
    work)."""
    _refuse_unused(args)
    sizes = sizes_from(args, QUICK if args.quick else DEFAULT)
    from fse_plugin.study import ArcfaceSettings, OwnData, StudySettings
    named = {"none": (), "all": PROBES}
    probes = named.get(args.probes.strip(), tuple(x.strip() for x in args.probes.split(",")))
    return StudySettings(
        out=args.out, sizes=sizes, variants=tuple(args.variants),
        probes=probes, regions=args.regions, masks=args.masks, trainer=args.trainer,
        arcface=ArcfaceSettings(args.arcface_dir, args.network, args.nproc_per_node),
        device=args.device, data=OwnData(args.rec, args.mask_cache, args.pack, args.parser))


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    from dataclasses import replace

    import torch

    from fse_plugin.common import resolve_device
    from fse_plugin.study import run_study
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    report = run_study(replace(settings, device=str(resolve_device(settings.device))),
                       progress=not args.quiet)
    print(f"study report: {report}")
    return 0
