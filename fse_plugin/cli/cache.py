"""``fse cache build|info|verify``: precompute a rec's mask cache, inspect it, check it."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fse_plugin.cli.grammar import command, group, renamed

HELP = "build (precompute), inspect (info) or check (verify) the mask cache of a rec"


def register(sub: argparse._SubParsersAction) -> None:
    actions = group(sub, "cache", HELP)
    command(actions, "build", "run the parser over every image of a rec and write its mask cache (resumable; "
            "torchrun for several GPUs)", add_build_args, run_build, prog="fse cache build",
            old_names=("precompute",), old_sub=sub)
    command(actions, "info", "size, bytes per mask, class frequencies of a mask cache", add_info_args, run_info,
            prog="fse cache info")
    command(actions, "verify", "check every chunk and entry, and that the cache belongs to --rec", add_verify_args,
            run_verify, prog="fse cache verify")


def add_build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rec", required=True, help="dataset dir with train.rec/train.idx (or a .rec file)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--parser", help="parser checkpoint: its masks of every image record are cached")
    src.add_argument("--from-labels", metavar="NPZ",
                     help="cache given masks instead (arrays keys, masks; e.g. synth gt_masks.npz)")
    p.add_argument("--out", default=None, help="cache directory (default: REC/fse_masks)")
    p.add_argument("--batch-size", type=int, default=256, help="parser batch (per rank)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (under torchrun: cuda:LOCAL_RANK)")
    renamed(p, "--workers", p.add_argument("--num-workers", type=int, default=None,
                                           help="DataLoader workers decoding JPEGs (default: up to 4, by CPU count)"))
    p.add_argument("--encode-workers", type=int, default=None,
                   help="processes run-length/zlib encoding masks (0: in the main process; default: up to 4, "
                        "by CPU count)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="masks per chunk file (default 16384): the unit of resume, repair and sharding")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on for CUDA)")
    p.add_argument("--gpu-decode", action="store_true", help=argparse.SUPPRESS)  # removed: see run_build
    p.add_argument("--overwrite", action="store_true",
                   help="replace a cache or unfinished build for another rec/parser/setting at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_build(args: argparse.Namespace) -> int:
    import numpy as np

    from fse_plugin import maskcache
    from fse_plugin.maskcache.build import check_counts
    check_counts(batch_size=args.batch_size, chunk_size=args.chunk_size, num_workers=args.num_workers,
                 encode_workers=args.encode_workers)
    chunk = maskcache.DEFAULT_CHUNK_SIZE if args.chunk_size is None else args.chunk_size
    if args.gpu_decode:  # batched nvJPEG decoded 112x112 faces 4.6x slower than CPU workers on an H200 host
        print(f"{args.prog}: --gpu-decode is deprecated and ignored (CPU decoding is faster)", file=sys.stderr)
    if args.from_labels:
        with np.load(args.from_labels, allow_pickle=False) as z:
            if "keys" not in z or "masks" not in z:
                raise maskcache.CacheError(f"{args.from_labels}: needs arrays 'keys' and 'masks', has {list(z.keys())}")
            keys, masks = z["keys"], z["masks"]
        maskcache.build_from_labels(args.rec, keys, masks, args.out, chunk_size=chunk, overwrite=args.overwrite,
                                    progress=not args.quiet, labels_path=str(Path(args.from_labels).resolve()))
    else:
        maskcache.precompute(args.rec, args.parser, args.out, batch_size=args.batch_size, device=args.device,
                             num_workers=args.num_workers, chunk_size=chunk, encode_workers=args.encode_workers,
                             amp=args.amp, overwrite=args.overwrite, progress=not args.quiet)
    return 0


def add_info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="cache directory (or a rec dir holding fse_masks/)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_info(args: argparse.Namespace) -> int:
    from fse_plugin import maskcache
    from fse_plugin.labels import CLASSES
    cache = maskcache.MaskCache(args.path)
    m, freq = cache.manifest, cache.class_frequencies()
    extra = sum(f.stat().st_size for f in cache.path.iterdir() if f.is_file())
    summary = {"path": str(cache.path), "masks": len(cache), "height": cache.height, "width": cache.width,
               "chunks": len(m["chunks"]), "bytes": m["data_bytes"] + extra, "bytes_per_mask": cache.bytes_per_mask,
               "missing": len(m["missing"]), "rec": m.get("rec_path"), "parser": m["parser"],
               "class_pixel_fraction": dict(zip(CLASSES, freq.pixels.round(6).tolist())),
               "class_image_fraction": dict(zip(CLASSES, freq.images.round(6).tolist()))}
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    raw = cache.height * cache.width
    print(f"mask cache {cache.path}\n  {len(cache)} masks {cache.height}x{cache.width} ({m['codec']}, format "
          f"{m['format_version']}) in {len(m['chunks'])} chunks of {m['chunk_size']}\n"
          f"  size {summary['bytes'] / 1e6:.2f} MB, {cache.bytes_per_mask:.0f} bytes/mask "
          f"(raw {raw}: {raw / cache.bytes_per_mask:.1f}x smaller)\n"
          f"  source {m.get('rec_path')} ({m['source']['records']} records, {m['source']['layout']} layout)\n"
          f"  masks from {m['parser']['kind']} {m['parser'].get('path')} (sha256 {m['parser']['sha256'][:16]}..)\n"
          f"  images without a mask: {len(m['missing'])}")
    print(f"  class frequencies over {freq.masks} masks:\n  {'id':>3} {'class':<18} {'pixels %':>9} {'images %':>9}")
    for i, name in enumerate(CLASSES):
        print(f"  {i:>3} {name:<18} {100 * freq.pixels[i]:>9.2f} {100 * freq.images[i]:>9.1f}")
    return 0


def add_verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="cache directory (or a rec dir holding fse_masks/)")
    p.add_argument("--rec", required=True, help="the dataset the cache must belong to")
    p.add_argument("--parser", default=None, help="also require that this checkpoint made the masks")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_verify(args: argparse.Namespace) -> int:
    from fse_plugin import maskcache
    report = maskcache.MaskCache(args.path).verify(args.rec, args.parser, progress=not args.quiet)
    print(f"OK: {report['masks']} masks in {report['chunks']} chunks decode and match their checksums and "
          f"counts; the cache belongs to {args.rec}" + (f" and {args.parser}" if args.parser else "")
          + f" ({report['missing']} images without a mask)")
    return 0
