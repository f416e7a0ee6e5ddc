"""``fse parser train|eval``: train the face parser on a FaceSynthetics-layout folder, score it per class."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from fse_plugin.cli.grammar import command, group, renamed

HELP = "train the face parser (CPU, CUDA, torchrun DDP) or score it per class"


def register(sub: argparse._SubParsersAction) -> None:
    actions = group(sub, "parser", HELP)
    command(actions, "train", "train the face parser on a FaceSynthetics-format folder (CPU, CUDA, torchrun DDP)",
            add_train_args, run_train, prog="fse parser train", old_names=("train-parser",), old_sub=sub)
    command(actions, "eval", "per-class F1 and IoU of a parser on the held-out split of a FaceSynthetics folder",
            add_eval_args, run_eval, prog="fse parser eval", old_names=("eval-parser",), old_sub=sub)


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="FaceSynthetics-layout folder (images, _ldmks.txt, labels_25/, anno_list.csv)")
    p.add_argument("--out", required=True,
                   help="output folder: last.pt, best.pt, tb/ (tensorboard), cache/ (aligned faces)")
    p.add_argument("--epochs", type=int, default=None,
                   help="step budget in epochs (default 30; with --time-budget alone: none, a timed run)")
    p.add_argument("--steps", type=int, default=None,
                   help="step budget in optimizer steps (overrides --epochs); the learning rate reaches 0 at the end")
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--lr", type=float, default=5e-3, help="AdamW peak learning rate (warm-up, then cosine to 0)")
    p.add_argument("--class-weight-power", type=float, default=0.5,
                   help="cross-entropy class weights (pixels/class pixels)**POWER; 0 = unweighted")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--feature-scale", type=int, default=None,
                   help="channel divisor: 1 = published size (default: parsing.DEFAULT_FEATURE_SCALE)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out fraction (deterministic by --seed)")
    p.add_argument("--seed", type=int, default=0)
    renamed(p, "--workers", p.add_argument("--num-workers", type=int, default=2,
                                           help="DataLoader workers (and alignment processes)"))
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast on CUDA (default on; --no-amp for float32)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="safety stop after this much training time; without --epochs/--steps a timed run whose "
                        "learning rate anneals to 0 exactly then (not repeatable)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="continue from CKPT (default OUT/last.pt): epoch, optimizer, split, elapsed time")
    p.add_argument("--cache-dir", default=None, help="where aligned faces are cached (default OUT/cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_train(args: argparse.Namespace) -> int:
    from fse_plugin import parsing
    timed = args.epochs is None and args.steps is None and args.time_budget is not None
    epochs = None if timed else 30 if args.epochs is None else args.epochs
    summary = parsing.train_parser(
        args.data, args.out, epochs=epochs, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay,
        feature_scale=args.feature_scale or parsing.DEFAULT_FEATURE_SCALE, val_fraction=args.val_fraction,
        seed=args.seed, workers=args.num_workers, device=args.device, amp=args.amp, time_budget=args.time_budget,
        class_weight_power=args.class_weight_power,
        resume=args.resume, cache_dir=args.cache_dir, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    return 0


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="FaceSynthetics-layout folder")
    p.add_argument("--parser", required=True, help="parser checkpoint (ours, or the published state_dict)")
    p.add_argument("--split", choices=("val", "train", "all"), default="val",
                   help="which frames: the held-out split (seed/fraction from the checkpoint), the rest, or all")
    p.add_argument("--val-fraction", type=float, default=None, help="override the checkpoint's held-out fraction")
    p.add_argument("--seed", type=int, default=None, help="override the checkpoint's split seed")
    p.add_argument("--csv", default=None, help="per-class CSV (default: eval_<split>.csv beside the checkpoint)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False, help="bf16 autocast (CUDA)")
    p.add_argument("--cache-dir", default=None, help="aligned-face cache (default: cache/ beside the checkpoint)")
    renamed(p, "--workers", p.add_argument("--num-workers", type=int, default=0,
                                           help="alignment processes when the cache is built"))


def run_eval(args: argparse.Namespace) -> int:
    from fse_plugin import parsing
    metrics, info = parsing.evaluate_checkpoint(
        args.data, args.parser, split=args.split, val_fraction=args.val_fraction, seed=args.seed,
        batch_size=args.batch_size, device=args.device, amp=args.amp, cache_dir=args.cache_dir,
        workers=args.num_workers)
    print(f"{args.parser}: {args.split} split, {info['n']} faces (val fraction {info['val_fraction']}, "
          f"seed {info['seed']})")
    print(metrics.table())
    csv_path = args.csv or Path(args.parser).parent / f"eval_{args.split}.csv"
    print(f"per-class CSV: {metrics.write_csv(csv_path)}")
    return 0
