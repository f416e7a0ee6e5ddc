"""``fse parser train|eval``: train the face parser on a FaceSynthetics-layout folder,
score it per class."""
from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path

from fse_plugin.cli.grammar import command, group, precision_flag, renamed
from fse_plugin.cli.types import (count_type, device_type, dir_type, file_type, number_type,
                                  output_dir_type)
from fse_plugin.common import FSEError, checks
from fse_plugin.common.text import plural

HELP = "train the face parser (CPU, CUDA, torchrun DDP) or score it per class"


def register(sub: argparse._SubParsersAction) -> None:
    actions = group(sub, "parser", HELP)
    command(actions, "train", "train the face parser on a FaceSynthetics-format folder "
            "(CPU, CUDA, torchrun DDP)", add_train_args, run_train, prog="fse parser train",
            old_names=("train-parser",), old_sub=sub)
    command(actions, "eval", "per-class F1 and IoU of a parser on the held-out split of a "
            "FaceSynthetics folder", add_eval_args, run_eval, prog="fse parser eval",
            old_names=("eval-parser",), old_sub=sub)


def _resume_type(text: str) -> str | Path:
    """``--resume`` alone means OUT/last.pt ('auto', checked when OUT is known);
    else a checkpoint file."""
    return text if text == "auto" else file_type("checkpoint")(text)


def add_train_args(p: argparse.ArgumentParser) -> None:
    from fse_plugin.parsing.widths import DEFAULT_FEATURE_SCALE, FEATURE_SCALES
    p.add_argument("--data", required=True, type=dir_type(),
                   help="FaceSynthetics-layout folder "
                        "(images, _ldmks.txt, labels_25/, anno_list.csv)")
    p.add_argument("--out", required=True, type=output_dir_type(),
                   help="output folder: last.pt, best.pt, tb/ (tensorboard), "
                        "cache/ (aligned faces)")
    p.add_argument("--epochs", type=count_type(1), default=None,
                   help="step budget in epochs "
                        "(default: 30; with --time-budget alone: none, a timed run)")
    p.add_argument("--steps", type=count_type(1), default=None,
                   help="step budget in optimizer steps (overrides --epochs); the learning rate "
                        "reaches 0 at the end (default: none)")
    p.add_argument("--batch-size", type=count_type(1), default=32, help="per rank")
    p.add_argument("--lr", type=number_type(lo=0, lo_open=True), default=5e-3,
                   help="AdamW peak learning rate (warm-up, then cosine to 0)")
    p.add_argument("--class-weight-power", type=number_type(lo=0), default=0.5,
                   help="cross-entropy class weights (pixels/class pixels)**POWER; 0 = unweighted")
    p.add_argument("--weight-decay", type=number_type(lo=0), default=1e-4,
                   help="AdamW weight decay")
    p.add_argument("--feature-scale", type=int, choices=FEATURE_SCALES,
                   default=DEFAULT_FEATURE_SCALE, help="channel divisor: 1 = the published size")
    p.add_argument("--val-fraction", type=number_type(0, 1, hi_open=True), default=0.1,
                   help="held-out fraction (deterministic by --seed)")
    p.add_argument("--seed", type=count_type(0), default=0,
                   help="split, weights and augmentation seed")
    renamed(p, "--workers", p.add_argument("--num-workers", type=count_type(0), default=2,
                                           help="DataLoader workers (and alignment processes)"))
    p.add_argument("--device", type=device_type(), default="auto",
                   help="auto, cpu, cuda (under torchrun: cuda:LOCAL_RANK)")
    precision_flag(p, amp_meant="bf16", default="auto")
    p.add_argument("--time-budget", type=number_type(lo=0, lo_open=True), default=None,
                   metavar="SECONDS",
                   help="safety stop after this much training time; without --epochs/--steps a "
                        "timed run whose learning rate anneals to 0 exactly then (not repeatable) "
                        "(default: none)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   type=_resume_type,
                   help="continue from CKPT (without CKPT: OUT/last.pt): epoch, optimizer, split, "
                        "elapsed time (default: start afresh)")
    p.add_argument("--cache-dir", default=None, type=output_dir_type(),
                   help="where aligned faces are cached (default: OUT/cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, only warnings")


def run_train(args: argparse.Namespace) -> int:
    from fse_plugin import parsing
    timed = args.epochs is None and args.steps is None and args.time_budget is not None
    settings = parsing.TrainSettings(
        epochs=None if timed else 30 if args.epochs is None else args.epochs, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        feature_scale=args.feature_scale, val_fraction=args.val_fraction, seed=args.seed,
        workers=args.num_workers, device=args.device, precision=args.precision,
        time_budget=args.time_budget, class_weight_power=args.class_weight_power,
        resume=args.resume, cache_dir=args.cache_dir, progress=not args.quiet)
    result = parsing.train_parser(args.data, args.out, settings)
    if int(os.environ.get("RANK", "0")) == 0:
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in asdict(result).items()))
    return 0


def csv_type(text: str) -> Path:
    """argparse type of an output file: not a directory,
    in a directory that exists or can be made."""
    path = Path(text)
    try:
        if path.is_dir():
            raise FSEError(f"{path} is a directory; expected a file name")
        checks.output_dir(path.parent, "csv")
    except FSEError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("csv: ")) from None
    return path


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=dir_type(), help="FaceSynthetics-layout folder")
    p.add_argument("--parser", required=True, type=file_type("checkpoint"),
                   help="parser checkpoint (ours, or the published state_dict)")
    p.add_argument("--split", choices=("val", "train", "all"), default="val",
                   help="which frames: the held-out split (seed/fraction from the checkpoint), "
                        "the rest, or all")
    p.add_argument("--val-fraction", type=number_type(0, 1, hi_open=True), default=None,
                   help="held-out fraction (default: the checkpoint's)")
    p.add_argument("--seed", type=count_type(0), default=None,
                   help="split seed (default: the checkpoint's)")
    p.add_argument("--csv", type=csv_type, default=None,
                   help="per-class CSV (default: eval_<split>.csv beside the checkpoint)")
    p.add_argument("--batch-size", type=count_type(1), default=64, help="faces per forward pass")
    p.add_argument("--device", type=device_type(), default="auto", help="auto, cpu, cuda, cuda:N")
    precision_flag(p, amp_meant="bf16")
    p.add_argument("--cache-dir", default=None, type=output_dir_type(),
                   help="aligned-face cache (default: cache/ beside the checkpoint)")
    renamed(p, "--workers", p.add_argument("--num-workers", type=count_type(0), default=0,
                                           help="alignment processes when the cache is built"))


def run_eval(args: argparse.Namespace) -> int:
    from fse_plugin import parsing
    settings = parsing.EvalSettings(split=args.split, val_fraction=args.val_fraction,
                                    seed=args.seed, batch_size=args.batch_size, device=args.device,
                                    precision=args.precision, cache_dir=args.cache_dir,
                                    workers=args.num_workers)
    found = parsing.evaluate_checkpoint(args.data, args.parser, settings)
    print(f"{args.parser}: {args.split} split, {plural(found.n, 'face')} (val fraction "
          f"{found.val_fraction}, seed {found.seed})")
    print(found.metrics.table())
    csv_path = args.csv or Path(args.parser).parent / f"eval_{args.split}.csv"
    print(f"per-class CSV: {found.metrics.write_csv(csv_path)}")
    return 0
