"""``fse rec list|pack|shuffle``: an image folder -> im2rec lists -> .rec/.idx, and a shuffled copy
for DALI.

``list`` and ``pack`` take mxnet 1.9.1 im2rec's flags and write its files;
``python -m fse_plugin.im2rec`` takes im2rec's own command line (``--list`` chooses the action) and
runs these. ``shuffle`` is arcface_torch's ``scripts/shuffle_rec.py``, seeded.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from fse_plugin.cli.grammar import command, group
from fse_plugin.cli.types import count_type, probability_type

__all__ = ["register", "im2rec_argv"]

HELP = ("prepare a dataset: image lists and .rec/.idx from an image folder (mxnet's im2rec), "
        "shuffled recs")


def register(sub: argparse._SubParsersAction) -> None:
    actions = group(sub, "rec", HELP)
    command(actions, "list", "write im2rec's image list(s) PREFIX.lst of the images under ROOT "
            "(one label per sub-folder with --recursive)", add_list_args, run_list,
            prog="fse rec list")
    command(actions, "pack", "pack every PREFIX*.lst into a .rec/.idx pair "
            "(im2rec's records, byte for byte)", add_pack_args, run_pack, prog="fse rec pack")
    command(actions, "shuffle", "write shuffled_NAME/train.rec/.idx (+ property) of the dataset "
            "folder NAME in a seeded random order (arcface_torch's scripts/shuffle_rec.py, "
            "for DALI)", add_shuffle_args, run_shuffle, prog="fse rec shuffle")


_LIST_FLAGS = {"--recursive": 0, "--exts": "+", "--chunks": 1, "--train-ratio": 1,
               "--test-ratio": 1, "--no-shuffle": 0}
_PACK_FLAGS = {"--pass-through": 0, "--resize": 1, "--center-crop": 0, "--quality": 1,
               "--color": 1, "--encoding": 1, "--pack-label": 0, "--num-thread": 1,
               "--num-workers": 1, "--resume": 0}


class _OtherAction(argparse.Action):
    """A flag of the other action (im2rec takes both kinds in one command line): refused, saying
    why."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string} is a flag of '{self.const}'; here it would mean nothing")


def _refuse(p: argparse.ArgumentParser, flags: dict, action: str) -> None:
    for flag, nargs in flags.items():
        p.add_argument(flag, nargs=nargs or None, action=_OtherAction, const=action,
                       dest=f"other{flag}", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _positionals(p: argparse.ArgumentParser) -> None:
    p.add_argument("prefix", metavar="PREFIX",
                   help="path and name of the lists and recs, e.g. /data/train "
                        "(-> train.lst, train.rec, train.idx)")
    p.add_argument("root", metavar="ROOT",
                   help="the image folder (paths in the lists are relative to it)")


def add_list_args(p: argparse.ArgumentParser) -> None:
    from fse_plugin.im2rec import DEFAULT_EXTS
    _positionals(p)
    p.add_argument("--recursive", action="store_true",
                   help="walk sub-folders, one label per folder that holds images "
                        "(else: ROOT's files, label 0)")
    p.add_argument("--exts", nargs="+", default=list(DEFAULT_EXTS), metavar="EXT",
                   help="file suffixes to list, lower case with the dot")
    p.add_argument("--chunks", type=count_type(1), default=1,
                   help="split the list into this many chunks")
    p.add_argument("--train-ratio", type=probability_type(), default=1.0,
                   help="share of each chunk in PREFIX_train.lst "
                        "(below 1: also _val.lst with the rest)")
    p.add_argument("--test-ratio", type=probability_type(), default=0.0,
                   help="share of each chunk in _test.lst")
    p.add_argument("--no-shuffle", dest="shuffle", action="store_false",
                   help="keep the walk order "
                        "(default: mxnet's shuffle, Python's random seeded with 100)")
    p.add_argument("--quiet", action="store_true", help="warnings only")
    _refuse(p, _PACK_FLAGS, "fse rec pack (im2rec without --list)")


def run_list(args: argparse.Namespace) -> int:
    from fse_plugin.im2rec import ListSettings, make_lists
    settings = ListSettings(args.recursive, tuple(args.exts), args.chunks, args.train_ratio,
                            args.test_ratio, args.shuffle)
    for written in make_lists(args.prefix, args.root, settings):
        print(f"{written.path}: {written.images} image{'s' * (written.images != 1)}")
    return 0


def add_pack_args(p: argparse.ArgumentParser) -> None:
    _positionals(p)
    p.add_argument("--pass-through", action="store_true",
                   help="pack the image files as they are (no re-encoding)")
    p.add_argument("--resize", type=count_type(0), default=0,
                   help="resize the shorter edge to this (0: keep)")
    p.add_argument("--center-crop", action="store_true", help="crop the centre square first")
    p.add_argument("--quality", type=count_type(0), default=None,
                   help="JPEG quality 1..100 (default 95) or PNG compression 0..9 (default 9)")
    p.add_argument("--color", type=int, choices=(-1, 0, 1), default=1,
                   help="cv2 read mode: 1 colour, 0 grayscale, -1 as stored (alpha kept)")
    p.add_argument("--encoding", choices=(".jpg", ".png"), default=".jpg",
                   help="format of the re-encoded images")
    p.add_argument("--pack-label", action="store_true",
                   help="store all labels of a list line (a label vector), not only the first")
    p.add_argument("--num-workers", type=count_type(1), default=1,
                   help="encoding processes (records stay in list order whatever the count)")
    # im2rec's spelling (python -m fse_plugin.im2rec), not deprecated
    p.add_argument("--num-thread", dest="num_workers", type=count_type(1),
                   default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true",
                   help="go on with the .part files an interrupted run left "
                        "(same list, root and flags)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    _refuse(p, _LIST_FLAGS, "fse rec list (im2rec --list)")


def run_pack(args: argparse.Namespace) -> int:
    from fse_plugin.im2rec import PackSettings, pack_lists
    settings = PackSettings(args.pass_through, args.resize, args.center_crop, args.quality,
                            args.color, args.encoding, args.pack_label)
    for r in pack_lists(args.prefix, args.root, settings, workers=args.num_workers,
                        resume=args.resume, progress=not args.quiet):
        skipped = (f", {r.skipped} unreadable image{'s' * (r.skipped != 1)} skipped (named above)"
                   if r.skipped else "")
        resumed = f", resumed after line {r.resumed_lines}" if r.resumed_lines else ""
        print(f"{r.rec}: {r.images} record{'s' * (r.images != 1)}{skipped}{resumed}, "
              f"{r.seconds:.1f} s"
              f" ({(r.images - r.resumed_images) / max(r.seconds, 1e-9):.0f} images/s)")
    return 0


def add_shuffle_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT", help="dataset folder with train.rec/train.idx")
    p.add_argument("--seed", type=count_type(0), default=0, help="seed of the order")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_shuffle(args: argparse.Namespace) -> int:
    from fse_plugin.im2rec import shuffle_rec
    r = shuffle_rec(args.input, args.seed, progress=not args.quiet)
    print(f"{r.out}: train.rec/train.idx, {r.records} records in a random order "
          f"(seed {args.seed}), {r.seconds:.1f} s")
    return 0


def im2rec_argv(argv: Sequence[str]) -> list[str]:
    """mxnet im2rec's command line as ``fse rec``'s: ``--list`` picks ``list``, else ``pack``."""
    argv = list(argv)
    if "--list" in argv:
        return ["rec", "list", *[a for a in argv if a != "--list"]]
    return ["rec", "pack", *argv]
