"""``fse synth``: a synthetic dataset with exact face-parsing masks (rec, .bin, FaceSynthetics,
IJB)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from fse_plugin.cli.grammar import command, renamed
from fse_plugin.cli.types import count_type, output_dir_type
from fse_plugin.common import FSEError

HELP = ("write a synthetic demo dataset with exact face-parsing masks (rec, .bin, FaceSynthetics, "
        "IJB)")


def register(sub: argparse._SubParsersAction) -> None:
    command(sub, "synth", HELP, add_args, run)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=output_dir_type(), default=Path("fse_demo/synth"),
                   help="output folder")
    p.add_argument("--ids", type=count_type(), default=20,
                   help="training identities in rec/train.rec")
    p.add_argument("--per-id", type=count_type(), default=10,
                   help="aligned images per training identity")
    p.add_argument("--pairs", type=count_type(minimum=0), default=200,
                   help="pairs in rec/synth_val.bin, of held-out identities (0: no pack; else at "
                        "least 10, the 10-fold protocol)")
    p.add_argument("--facesynthetics", type=count_type(minimum=0), default=32,
                   help="512x512 frames in facesynthetics/ (0: none)")
    p.add_argument("--ijb", type=count_type(minimum=0), default=8,
                   help="identities in the IJB-C-style set IJBC/ (0: none; else at least 2)")
    p.add_argument("--seed", type=count_type(minimum=0), default=0, help="seed of every image")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    renamed(p, "--workers", p.add_argument("--num-workers", type=count_type(), default=None,
                                           help="render processes (default: by size, up to all "
                                                "cores)"))


def _check(args: argparse.Namespace) -> None:
    if 0 < args.pairs < 10:
        raise FSEError(f"--pairs {args.pairs}: a pack needs at least 10 pairs (the 10-fold "
                       f"protocol), or 0 for none")
    if args.ijb == 1:
        raise FSEError("--ijb 1: an IJB set needs at least 2 identities (impostor pairs), or 0 for "
                       "none")


def run(args: argparse.Namespace) -> int:
    from fse_plugin import synth
    _check(args)
    out, workers, progress = Path(args.out), args.num_workers, not args.quiet
    t0 = time.perf_counter()
    done = []
    rec = synth.write_rec(out / "rec", args.ids, args.per_id, args.seed, workers=workers,
                          progress=progress)
    done.append(("train.rec/.idx/property + gt_masks.npz", rec,
                 f"{args.ids * args.per_id} aligned 112x112 faces"
                 f" of {args.ids} identit{'y' if args.ids == 1 else 'ies'}"))
    if args.pairs:
        pack = synth.write_pairs_bin(rec / "synth_val.bin", args.pairs, args.seed, workers=workers,
                                     progress=progress)
        done.append(("verification pack + .masks.npy", pack,
                     f"{args.pairs} pairs of held-out identities"
                     " (config.val_targets = ['synth_val'])"))
    if args.facesynthetics:
        fs = synth.write_facesynthetics(out / "facesynthetics", args.facesynthetics, args.seed,
                                        workers=workers, progress=progress)
        frames = f"{args.facesynthetics} frame{'s' if args.facesynthetics > 1 else ''}"
        done.append(("FaceSynthetics layout + labels_25", fs, f"{frames} 512x512 (parser data)"))
    if args.ijb:
        ijb = synth.write_ijb(out / "IJBC", "IJBC", synth.IJBLayout(identities=args.ijb),
                              seed=args.seed, workers=workers, progress=progress)
        done.append(("IJB-C-style meta/ + loose_crop/", ijb,
                     f"{args.ijb} held-out identities (fse eval ijb --ijb-set IJBC)"))
    print(f"synthetic data written in {time.perf_counter() - t0:.1f} s under {out.resolve()}")
    for what, path, note in done:
        print(f"  {what:40s} {Path(path).resolve()}  ({note})")
    return 0
