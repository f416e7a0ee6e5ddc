"""``fse synth``: a synthetic dataset with exact face-parsing masks (rec, .bin, FaceSynthetics, IJB)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from fse_plugin.cli.grammar import command, renamed

HELP = "write a synthetic demo dataset with exact face-parsing masks (rec, .bin, FaceSynthetics, IJB)"


def register(sub: argparse._SubParsersAction) -> None:
    command(sub, "synth", HELP, add_args, run)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="fse_demo/synth", help="output folder (default: ./fse_demo/synth)")
    p.add_argument("--ids", type=int, default=20, help="training identities in rec/train.rec")
    p.add_argument("--per-id", type=int, default=10, help="aligned images per training identity")
    p.add_argument("--pairs", type=int, default=200, help="pairs in rec/synth_val.bin (held-out identities; 0 = none)")
    p.add_argument("--facesynthetics", type=int, default=32, help="512x512 frames in facesynthetics/ (0 = none)")
    p.add_argument("--ijb", type=int, default=8, help="identities in the IJB-C-style set IJBC/ (0 = none)")
    p.add_argument("--seed", type=int, default=0)
    renamed(p, "--workers", p.add_argument("--num-workers", type=int, default=None,
                                           help="render processes (default: by size, up to all cores)"))


def run(args: argparse.Namespace) -> int:
    from fse_plugin import synth
    out, workers = Path(args.out), args.num_workers
    t0 = time.perf_counter()
    done = []
    rec = synth.write_rec(out / "rec", args.ids, args.per_id, args.seed, workers=workers, progress=True)
    done.append(("train.rec/.idx/property + gt_masks.npz", rec, f"{args.ids * args.per_id} aligned 112x112 faces"
                 f" of {args.ids} identities"))
    if args.pairs:
        pack = synth.write_pairs_bin(rec / "synth_val.bin", args.pairs, args.seed, workers=workers, progress=True)
        done.append(("verification pack + .masks.npy", pack, f"{args.pairs} pairs of held-out identities"
                     " (config.val_targets = ['synth_val'])"))
    if args.facesynthetics:
        fs = synth.write_facesynthetics(out / "facesynthetics", args.facesynthetics, args.seed, workers=workers,
                                        progress=True)
        done.append(("FaceSynthetics layout + labels_25", fs, f"{args.facesynthetics} frames 512x512 (parser data)"))
    if args.ijb:
        ijb = synth.write_ijb(out / "IJBC", "IJBC", n_identities=args.ijb, seed=args.seed, workers=workers,
                              progress=True)
        done.append(("IJB-C-style meta/ + loose_crop/", ijb,
                     f"{args.ijb} held-out identities (fse eval ijb --ijb-set IJBC)"))
    print(f"synthetic data written in {time.perf_counter() - t0:.1f} s under {out.resolve()}")
    for what, path, note in done:
        print(f"  {what:40s} {Path(path).resolve()}  ({note})")
    return 0
