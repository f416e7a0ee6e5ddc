"""``fse cache build|info|verify``: precompute a rec's mask cache, inspect it, check it."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fse_plugin.cli.grammar import command, group, precision_flag, renamed
from fse_plugin.cli.types import count_type, device_type, dir_type, file_type, output_dir_type
from fse_plugin.common import FSEError, checks
from fse_plugin.common.text import plural
from fse_plugin.maskcache.settings import BuildSettings
from fse_plugin.maskcache.spec import DEFAULT_CHUNK_SIZE

HELP = "build (precompute), inspect (info) or check (verify) the mask cache of a rec"
_PARSER_ONLY = ("batch_size", "device", "precision", "num_workers", "encode_workers")
"""Settings of a parser build: a cache --from-labels runs no parser,
so any but their defaults are refused there."""


def register(sub: argparse._SubParsersAction) -> None:
    actions = group(sub, "cache", HELP)
    command(actions, "build", "run the parser over every image of a rec and write its mask cache "
            "(resumable; torchrun for several GPUs)", add_build_args, run_build,
            prog="fse cache build", old_names=("precompute",), old_sub=sub)
    command(actions, "info", "size, bytes per mask, class frequencies of a mask cache",
            add_info_args, run_info, prog="fse cache info")
    command(actions, "verify", "check every chunk and entry, and that the cache belongs to --rec",
            add_verify_args, run_verify, prog="fse cache verify")


def rec_type(text: str) -> Path:
    """argparse type of ``--rec``: a dataset dir holding train.rec
    (and its .idx), or a .rec file."""
    path = Path(text)
    try:
        checks.existing_file(path / "train.rec" if path.is_dir() else path, "rec")
    except FSEError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("rec: ")) from None
    return path


def add_build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rec", required=True, type=rec_type,
                   help="dataset dir with train.rec/train.idx (or a .rec file)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--parser", type=file_type("checkpoint"),
                     help="parser checkpoint: its masks of every image record are cached")
    src.add_argument("--from-labels", metavar="NPZ", type=file_type("npz"),
                     help="cache given masks instead (arrays keys, masks; e.g. synth gt_masks.npz)")
    p.add_argument("--out", default=None, type=output_dir_type(),
                   help="cache directory (default: REC/fse_masks)")
    p.add_argument("--batch-size", type=count_type(1), default=BuildSettings.batch_size,
                   help="parser batch, per rank")
    p.add_argument("--device", type=device_type(), default=BuildSettings.device,
                   help="auto, cpu, cuda (under torchrun: cuda:LOCAL_RANK)")
    renamed(p, "--workers", p.add_argument("--num-workers", type=count_type(0), default=None,
                                           help="processes decoding images "
                                                "(default: up to 6, by CPU count)"))
    p.add_argument("--encode-workers", type=count_type(0), default=None,
                   help="processes run-length/zlib encoding masks (0: in the main process; "
                        "default: up to 4, by CPU count)")
    p.add_argument("--chunk-size", type=count_type(1), default=DEFAULT_CHUNK_SIZE,
                   help="masks per chunk file: the unit of resume, repair and sharding")
    precision = precision_flag(p, amp_meant="bf16", default=BuildSettings.precision)
    precision.help += "; bf16 is much faster on GPUs that have it"
    # removed: see run_build
    p.add_argument("--gpu-decode", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--overwrite", action="store_true",
                   help="replace a cache or unfinished build for another rec/parser/setting "
                        "at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar, only warnings")


def _parser_flags(args: argparse.Namespace) -> dict:
    """The parser build's settings that differ from BuildSettings' defaults."""
    return {name: getattr(args, name) for name in _PARSER_ONLY
            if getattr(args, name) != getattr(BuildSettings, name)}


def run_build(args: argparse.Namespace) -> int:
    from fse_plugin import maskcache
    if args.gpu_decode:  # batched nvJPEG decoding fed the parser slower than CPU workers
        print(f"{args.prog}: --gpu-decode is deprecated and ignored (CPU decoding is faster)",
              file=sys.stderr)
    if args.from_labels is None:
        settings = maskcache.BuildSettings(**_parser_flags(args), chunk_size=args.chunk_size,
                                           overwrite=args.overwrite, progress=not args.quiet)
        maskcache.precompute(args.rec, args.parser, args.out, settings)
        return 0
    given = list(_parser_flags(args))
    if given:
        raise FSEError(f"--{given[0].replace('_', '-')} is a setting of the parser; "
                       f"a cache --from-labels runs none: leave it out")
    keys, masks = maskcache.labels_from_npz(args.from_labels)
    maskcache.build_from_labels(args.rec, keys, masks, args.out, chunk_size=args.chunk_size,
                                overwrite=args.overwrite, progress=not args.quiet,
                                labels_path=str(Path(args.from_labels).resolve()))
    return 0


def add_info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=dir_type(),
                   help="cache directory (or a rec dir holding fse_masks/)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_info(args: argparse.Namespace) -> int:
    from fse_plugin import maskcache
    from fse_plugin.labels import CLASSES
    cache = maskcache.MaskCache(args.path)
    m, freq = cache.manifest, cache.class_frequencies()
    spec, source, producer = m.spec, m.spec.source, m.spec.producer
    extra = sum(f.stat().st_size for f in cache.path.iterdir() if f.is_file())
    summary = {"path": str(cache.path), "masks": len(cache), "height": cache.height,
               "width": cache.width, "chunks": len(m.chunks), "bytes": m.data_bytes + extra,
               "bytes_per_mask": cache.bytes_per_mask, "missing": len(m.missing), "rec": m.rec_path,
               "parser": m.to_json()["parser"],
               "class_pixel_fraction": dict(zip(CLASSES, freq.pixels.round(6).tolist())),
               "class_image_fraction": dict(zip(CLASSES, freq.images.round(6).tolist()))}
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    raw = cache.height * cache.width
    print(f"mask cache {cache.path}\n  {plural(len(cache), 'mask')} {cache.height}x{cache.width} "
          f"({maskcache.CODEC}, format {maskcache.FORMAT_VERSION}) "
          f"in {plural(len(m.chunks), 'chunk')} of {spec.chunk_size}\n"
          f"  size {summary['bytes'] / 1e6:.2f} MB, {cache.bytes_per_mask:.0f} bytes/mask "
          f"(raw {raw}: {raw / cache.bytes_per_mask:.1f}x smaller)\n"
          f"  source {m.rec_path} ({plural(source.records, 'record')}, {source.layout} layout)\n"
          f"  masks from {producer.kind} {m.parser_path} (sha256 {producer.sha256[:16]}..)\n"
          f"  images without a mask: {len(m.missing)}")
    print(f"  class frequencies over {plural(freq.masks, 'mask')}:\n"
          f"  {'id':>3} {'class':<18} {'pixels %':>9} {'images %':>9}")
    for i, name in enumerate(CLASSES):
        print(f"  {i:>3} {name:<18} {100 * freq.pixels[i]:>9.2f} {100 * freq.images[i]:>9.1f}")
    return 0


def add_verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=dir_type(),
                   help="cache directory (or a rec dir holding fse_masks/)")
    p.add_argument("--rec", required=True, type=rec_type,
                   help="the dataset the cache must belong to")
    p.add_argument("--parser", default=None, type=file_type("checkpoint"),
                   help="also require that this checkpoint made the masks (default: any parser)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_verify(args: argparse.Namespace) -> int:
    from fse_plugin import maskcache
    found = maskcache.MaskCache(args.path).verify(args.rec, args.parser, progress=not args.quiet)
    print(f"OK: {plural(found.masks, 'mask')} in {plural(found.chunks, 'chunk')} decode and match "
          f"their checksums and counts; the cache belongs to {args.rec}"
          + (f" and {args.parser}" if args.parser else "")
          + f" ({plural(found.missing, 'image')} without a mask)")
    return 0
