"""`fse` command line (also `python -m fse_plugin`). Each subcommand is a thin layer over a module."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

_COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int | None]]] = []


def command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None]):
    """Register ``fn(args)`` as ``fse NAME``; ``add_args`` declares its flags."""
    def deco(fn):
        _COMMANDS.append((name, help, add_args, fn))
        return fn
    return deco


# === section: synth ===
def _synth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="fse_demo/synth", help="output folder (default: ./fse_demo/synth)")
    p.add_argument("--ids", type=int, default=20, help="training identities in rec/train.rec")
    p.add_argument("--per-id", type=int, default=10, help="aligned images per training identity")
    p.add_argument("--pairs", type=int, default=200, help="pairs in rec/synth_val.bin (held-out identities; 0 = none)")
    p.add_argument("--facesynthetics", type=int, default=32, help="512x512 frames in facesynthetics/ (0 = none)")
    p.add_argument("--ijb", type=int, default=8, help="identities in the IJB-C-style set IJBC/ (0 = none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="render processes (default: by size, up to all cores)")


@command("synth", "write a synthetic demo dataset with exact face-parsing masks (rec, .bin, FaceSynthetics, IJB)",
         _synth_args)
def _synth(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from fse_plugin import synth
    out = Path(args.out)
    t0 = time.perf_counter()
    done = []
    rec = synth.write_rec(out / "rec", args.ids, args.per_id, args.seed, workers=args.workers, progress=True)
    done.append(("train.rec/.idx/property + gt_masks.npz", rec, f"{args.ids * args.per_id} aligned 112x112 faces"
                 f" of {args.ids} identities"))
    if args.pairs:
        pack = synth.write_pairs_bin(rec / "synth_val.bin", args.pairs, args.seed, workers=args.workers, progress=True)
        done.append(("verification pack + .masks.npy", pack, f"{args.pairs} pairs of held-out identities"
                     " (config.val_targets = ['synth_val'])"))
    if args.facesynthetics:
        fs = synth.write_facesynthetics(out / "facesynthetics", args.facesynthetics, args.seed, workers=args.workers,
                                        progress=True)
        done.append(("FaceSynthetics layout + labels_25", fs, f"{args.facesynthetics} frames 512x512 (parser data)"))
    if args.ijb:
        ijb = synth.write_ijb(out / "IJBC", "IJBC", n_identities=args.ijb, seed=args.seed, workers=args.workers,
                              progress=True)
        done.append(("IJB-C-style meta/ + loose_crop/", ijb, f"{args.ijb} held-out identities (eval_ijbc --target IJBC)"))
    print(f"synthetic data written in {time.perf_counter() - t0:.1f} s under {out.resolve()}")
    for what, path, note in done:
        print(f"  {what:40s} {Path(path).resolve()}  ({note})")
    return 0
# === end: synth ===

# === section: parser ===
def _train_parser_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="FaceSynthetics-layout folder (images, _ldmks.txt, labels_25/, anno_list.csv)")
    p.add_argument("--out", required=True, help="output folder: last.pt, best.pt, tb/ (tensorboard), cache/ (aligned faces)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--lr", type=float, default=5e-3, help="AdamW peak learning rate (warm-up, then cosine to 0)")
    p.add_argument("--class-weight-power", type=float, default=0.5,
                   help="cross-entropy class weights (pixels/class pixels)**POWER; 0 = unweighted")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--feature-scale", type=int, default=None, help="channel divisor: 1 = published size (default: parser.DEFAULT_FEATURE_SCALE)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out fraction (deterministic by --seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (and alignment processes)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="disable bf16 autocast on CUDA")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop after this much training time; the learning rate anneals to 0 exactly then")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="continue from CKPT (default OUT/last.pt): epoch, optimizer, split, elapsed time")
    p.add_argument("--cache-dir", default=None, help="where aligned faces are cached (default OUT/cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


@command("train-parser", "train the face parser on a FaceSynthetics-format folder (CPU, CUDA, torchrun DDP)", _train_parser_args)
def _train_parser(args: argparse.Namespace) -> int:
    import os
    from fse_plugin import parser
    summary = parser.train_parser(
        args.data, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        feature_scale=args.feature_scale or parser.DEFAULT_FEATURE_SCALE, val_fraction=args.val_fraction,
        seed=args.seed, workers=args.workers, device=args.device, amp=args.amp, time_budget=args.time_budget,
        class_weight_power=args.class_weight_power,
        resume=args.resume, cache_dir=args.cache_dir, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    return 0


def _eval_parser_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="FaceSynthetics-layout folder")
    p.add_argument("--parser", required=True, help="parser checkpoint (ours, or the published state_dict)")
    p.add_argument("--split", choices=("val", "train", "all"), default="val",
                   help="which frames: the held-out split (seed/fraction from the checkpoint), the rest, or all")
    p.add_argument("--val-fraction", type=float, default=None, help="override the checkpoint's held-out fraction")
    p.add_argument("--seed", type=int, default=None, help="override the checkpoint's split seed")
    p.add_argument("--csv", default=None, help="per-class CSV (default: eval_<split>.csv beside the checkpoint)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--cache-dir", default=None, help="aligned-face cache (default: cache/ beside the checkpoint)")
    p.add_argument("--workers", type=int, default=0, help="alignment processes when the cache is built")


@command("eval-parser", "per-class F1 and IoU of a parser on the held-out split of a FaceSynthetics folder", _eval_parser_args)
def _eval_parser(args: argparse.Namespace) -> int:
    from pathlib import Path
    from fse_plugin import parser
    metrics, info = parser.evaluate_checkpoint(
        args.data, args.parser, split=args.split, val_fraction=args.val_fraction, seed=args.seed,
        batch_size=args.batch_size, device=args.device, amp=args.amp, cache_dir=args.cache_dir, workers=args.workers)
    print(f"{args.parser}: {args.split} split, {info['n']} faces (val fraction {info['val_fraction']}, seed {info['seed']})")
    print(metrics.table())
    csv_path = args.csv or Path(args.parser).parent / f"eval_{args.split}.csv"
    print(f"per-class CSV: {metrics.write_csv(csv_path)}")
    return 0
# === end: parser ===

# === section: maskcache ===
def _precompute_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rec", required=True, help="dataset dir with train.rec/train.idx (or a .rec file)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--parser", help="parser checkpoint: its masks of every image record are cached")
    src.add_argument("--from-labels", metavar="NPZ", help="cache given masks instead (arrays keys, masks; e.g. synth gt_masks.npz)")
    p.add_argument("--out", default=None, help="cache directory (default: REC/fse_masks)")
    p.add_argument("--batch-size", type=int, default=256, help="parser batch (per rank)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers decoding JPEGs")
    p.add_argument("--encode-workers", type=int, default=1, help="processes run-length/zlib encoding masks (0: in the main process)")
    p.add_argument("--chunk-size", type=int, default=None, help="masks per chunk file (default 16384): the unit of resume and of sharding")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on for CUDA)")
    p.add_argument("--gpu-decode", action="store_true", help="decode JPEGs on the GPU (torchvision nvJPEG, batched)")
    p.add_argument("--overwrite", action="store_true", help="replace a cache or unfinished build for another rec/parser/setting at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@command("precompute", "run the parser over every image of a rec and write its mask cache (resumable; torchrun for several GPUs)",
         _precompute_args)
def _precompute(args: argparse.Namespace) -> int:
    import sys

    import numpy as np

    from fse_plugin import maskcache
    chunk = args.chunk_size or maskcache.DEFAULT_CHUNK_SIZE
    try:
        if args.from_labels:
            with np.load(args.from_labels, allow_pickle=False) as z:
                if "keys" not in z or "masks" not in z:
                    raise maskcache.CacheError(f"{args.from_labels}: needs arrays 'keys' and 'masks', has {list(z.keys())}")
                keys, masks = z["keys"], z["masks"]
            maskcache.build_from_labels(args.rec, keys, masks, args.out, chunk_size=chunk, overwrite=args.overwrite,
                                        progress=not args.quiet, labels_path=args.from_labels)
        else:
            maskcache.precompute(args.rec, args.parser, args.out, batch_size=args.batch_size, device=args.device,
                                 num_workers=args.workers, chunk_size=chunk, encode_workers=args.encode_workers,
                                 amp=args.amp, gpu_decode=args.gpu_decode, overwrite=args.overwrite,
                                 progress=not args.quiet)
    except (maskcache.CacheError, ValueError) as e:
        print(f"fse precompute: {e}", file=sys.stderr)
        return 1
    return 0


def _cache_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="cache_command", metavar="{info,verify}", required=True)
    info = sub.add_parser("info", help="size, bytes per mask, class frequencies of a mask cache")
    info.add_argument("path", help="cache directory (or a rec dir holding fse_masks/)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    verify = sub.add_parser("verify", help="check every chunk and entry, and that the cache belongs to --rec")
    verify.add_argument("path", help="cache directory (or a rec dir holding fse_masks/)")
    verify.add_argument("--rec", required=True, help="the dataset the cache must belong to")
    verify.add_argument("--parser", default=None, help="also require that this checkpoint made the masks")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")


@command("cache", "inspect (info) or check (verify) a mask cache", _cache_args)
def _cache(args: argparse.Namespace) -> int:
    import json
    import sys

    from fse_plugin import maskcache
    from fse_plugin.labels import CLASSES
    try:
        cache = maskcache.MaskCache(args.path)
        if args.cache_command == "verify":
            report = cache.verify(args.rec, args.parser, progress=not args.quiet)
            print(f"OK: {report['masks']} masks in {report['chunks']} chunks decode and match their checksums and "
                  f"counts; the cache belongs to {args.rec}" + (f" and {args.parser}" if args.parser else "")
                  + f" ({report['missing']} images without a mask)")
            return 0
    except maskcache.CacheError as e:
        print(f"fse cache {args.cache_command}: {e}", file=sys.stderr)
        return 1
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
# === end: maskcache ===

# === section: dataset ===
def _patch_args(p):
    p.add_argument("dir", help="arcface_torch dir, or the insightface repo root")
    p.add_argument("--check", action="store_true", help="only report what would be done")
    p.add_argument("--reverse", action="store_true", help="remove the patches again")


@command("patch-arcface", "apply the plugin's patches to an arcface_torch checkout (config.fse hook)", _patch_args)
def _patch_arcface(args):
    from fse_plugin.patching import PatchError, apply_patches
    try:
        results = apply_patches(args.dir, reverse=args.reverse, check=args.check)
    except PatchError as e:
        print(f"fse patch-arcface: {e}", file=sys.stderr)
        return 1
    for r in results:
        print(f"{r.patch.name}: {r.status} ({', '.join(r.files)})")
    return 0
# === end: dataset ===

# === section: cam ===
def _cam_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bin", help="verification pack (.bin); masks from --masks, --parser or <pack>.masks.npy")
    src.add_argument("--rec", help="rec dir (train.rec/.idx) or .rec file; masks from its mask cache or --parser")
    p.add_argument("--masks", help="masks .npy [2P,H,W] for --bin")
    p.add_argument("--mask-cache", help="mask cache for --rec (default <rec_dir>/fse_masks)")
    p.add_argument("--parser", help="parser checkpoint: predict the masks instead")
    p.add_argument("--network", default="tiny", help="tiny | torchscript | arcface_torch name (r50, r100, ...)")
    p.add_argument("--weights", help="model.pt state_dict (or the scripted file for torchscript)")
    p.add_argument("--weights2", "--model2", dest="weights2", help="second model to compare (e.g. FSErasing-trained)")
    p.add_argument("--network2", help="network of the second model (default --network)")
    p.add_argument("--name", default="baseline", help="label of the first model")
    p.add_argument("--name2", default="fse", help="label of the second model")
    p.add_argument("--arcface-dir", help="arcface_torch checkout (default $ARCFACE_TORCH_DIR)")
    p.add_argument("--num-features", type=int, default=512)
    p.add_argument("--methods", default="fscam,ablation",
                   help="comma list of fscam, ablation, gradcam, gradcam++, scorecam, xgradcam, layercam, eigencam, "
                        "hirescam, eigengradcam, rise, groupcam")
    p.add_argument("--target", choices=("pair", "self", "identity", "class"), default=None,
                   help="score explained: pair (other image of the pair; default for --bin), identity (centroid of the "
                        "identity's other images; default for --rec), self (own clean embedding; zero gradient, so not "
                        "for gradient CAMs), class (softmax of the argmax class: classifiers)")
    p.add_argument("--pairs", choices=("same", "diff", "all"), default="same", help="which pairs of the pack")
    p.add_argument("--limit", type=int, default=None, help="at most N pairs (--bin) or images (--rec, default 256)")
    p.add_argument("--fill", default="0", help="ablation fill: a number, random, random_1, region_mean, image_mean")
    p.add_argument("--target-layer", help="layer for pixel CAMs, dotted name (default layer4 / layers[-1])")
    p.add_argument("--rise-n", type=int, default=8000, help="RISE masks")
    p.add_argument("--rise-s", type=int, default=7, help="RISE grid size")
    p.add_argument("--rise-p1", type=float, default=0.1, help="RISE keep probability")
    p.add_argument("--groups", type=int, default=32, help="Group-CAM channel groups")
    p.add_argument("--batch-size", type=int, default=260, help="forward batch (FS-CAM: ~batch/26 images at once)")
    p.add_argument("--chunk", type=int, default=32, help="images per step (progress granularity, memory)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--amp", action="store_true", help="bf16 autocast for fscam/ablation/rise")
    p.add_argument("--ci", choices=("bootstrap", "t"), default="bootstrap", help="95%% interval: image bootstrap or t")
    p.add_argument("--grid", type=int, default=8, help="images in the overlay grids")
    p.add_argument("--report", choices=("md", "html"), default="md")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="output folder")


@command("cam", "FS-CAM and pixel CAMs per face region: overlays, charts, CSV/JSON, report", _cam_args)
def _cam(args: argparse.Namespace) -> int:
    from fse_plugin import cam
    from fse_plugin.backbone import load_backbone
    model = load_backbone(args.weights, args.network, args.num_features, args.arcface_dir)
    model2 = None if args.weights2 is None else load_backbone(args.weights2, args.network2 or args.network,
                                                              args.num_features, args.arcface_dir)
    try:
        fill = float(args.fill)
    except ValueError:
        fill = args.fill
    kw = dict(methods=cam.parse_methods(args.methods), model2=model2, names=(args.name, args.name2),
              device=args.device, batch_size=args.batch_size, chunk=args.chunk, grid=args.grid, ci=args.ci,
              seed=args.seed, report=args.report, target_layer=args.target_layer, fill=fill, amp=args.amp,
              progress=not args.quiet,
              options={"rise": {"n_masks": args.rise_n, "s": args.rise_s, "p1": args.rise_p1, "seed": args.seed,
                                "amp": args.amp},
                       "groupcam": {"groups": args.groups}})
    if args.bin:
        res = cam.explain_bin(model, args.bin, args.out, masks=args.masks, parser=args.parser, pairs=args.pairs,
                              limit=args.limit, target=args.target or "pair", **kw)
    else:
        res = cam.explain_rec(model, args.rec, args.out, limit=args.limit or 256, mask_cache=args.mask_cache,
                              parser=args.parser, target=args.target or "identity", **kw)
    print(f"report: {res['report']}")
    return 0
# === end: cam ===

# === section: evaluation ===
_EVAL_HELP = {
    "verification": "LFW-style .bin packs: 10-fold Accuracy-Flip, XNorm, VAL@FAR=1e-3 (arcface_torch protocol)",
    "ijb": "IJB-B/C 1:1 verification: TAR@FAR 1e-6..1e-1, ROC plot, scores (eval_ijbc.py protocol)",
    "occlusion": "semantic-occlusion benchmark: score drop per face region erased in the probes, 1 or 2 models",
}


def _eval_model_args(p, second=False):
    s = "2" if second else ""
    g = p.add_argument_group("second model (--network2 defaults to --network)" if second else "model")
    if not second:
        g.add_argument("--config", help="arcface_torch config file: network, embedding_size, output/model.pt, rec, "
                                        "val_targets; its dict `fse_eval` sets defaults of these flags (dest names)")
        g.add_argument("--arcface-dir", help="arcface_torch checkout for r50, r100, ... (default $ARCFACE_TORCH_DIR)")
    g.add_argument(f"--network{s}", help="tiny (built-in), torchscript, or an arcface_torch name (r50, r100, vit_t ...)")
    g.add_argument(f"--weights{s}", help="model.pt state_dict as arcface_torch saves it, or a TorchScript file")
    g.add_argument(f"--embedding-size{s}", type=int, help="embedding size (checked; default: config or 512)")
    g.add_argument(f"--name{s}", help="label in tables and charts")


def _eval_common_args(p, batch_size, masks_for):
    g = p.add_argument_group("run")
    g.add_argument("--out", default="eval_results", help="output dir (JSON, tables, plots)")
    g.add_argument("--batch-size", type=int, default=batch_size)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    g.add_argument("--fp16", action="store_true", help="float16 autocast (CUDA only)")
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (decode, align, erase)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group(f"masks ({masks_for})")
    g.add_argument("--masks", help=".npy uint8 [N,112,112]; packs: default <pack minus .bin>.masks.npy; "
                                   "IJB: one per row of the 5pts file")
    g.add_argument("--mask-cache", help="mask cache dir: its i-th mask (key order) is pack image i or IJB meta row i")
    g.add_argument("--parser", help="parser checkpoint: predict the masks (saved under --out for reuse)")
    g = p.add_argument_group("FS-CAM")
    g.add_argument("--fscam", metavar="OUT_DIR", help="also explain pairs with FS-CAM (fse_plugin.cam) into OUT_DIR")
    g.add_argument("--fscam-methods", default="fscam", help="comma list of cam methods: fscam, ablation, gradcam ...")
    g.add_argument("--fscam-pairs", default="same", choices=("same", "diff", "all"))
    g.add_argument("--fscam-limit", type=int, default=64, help="explain the first N such pairs")


def _eval_verification_args(p):
    g = p.add_argument_group("packs")
    g.add_argument("--pack", action="append", default=[], help=".bin verification pack (repeatable)")
    g.add_argument("--data-dir", help="dir of <target>.bin packs (default: config rec)")
    g.add_argument("--targets", help="comma list of pack names in --data-dir (default: config val_targets, "
                                     "else lfw,cfp_fp,agedb_30,calfw,cplfw)")
    g.add_argument("--folds", type=int, default=10)
    g.add_argument("--image-size", type=int, nargs=2, default=(112, 112), metavar=("H", "W"))
    _eval_model_args(p)
    _eval_common_args(p, 64, "for --fscam")


def _eval_ijb_args(p):
    g = p.add_argument_group("IJB")
    g.add_argument("--root", required=True, help="IJB-B/C root holding meta/ and loose_crop/")
    g.add_argument("--target", default="IJBC", choices=("IJBC", "IJBB"))
    g.add_argument("--fars", default="1e-06,1e-05,0.0001,0.001,0.01,0.1", help="comma list of FAR points")
    _eval_model_args(p)
    _eval_common_args(p, 128, "for --fscam")


def _eval_occlusion_args(p):
    g = p.add_argument_group("benchmark")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--pack", help=".bin verification pack (probe = second image of each pair)")
    src.add_argument("--ijb-root", help="IJB-B/C root (probe = images of the second template of each pair)")
    g.add_argument("--target", default="IJBC", choices=("IJBC", "IJBB"))
    g.add_argument("--classes", help="comma list of classes erased one at a time (default: all 25)")
    g.add_argument("--groups", help='"name=cls,cls;name2=cls,..." erased together (default: eyes+brows, upper_face, '
                                    'lower_face of fse_plugin.evaluation.DEFAULT_GROUPS; "none": no group)')
    g.add_argument("--fill", default="random", help="random, random_1, random_mix, region_mean, image_mean or a "
                                                    "number in the normalised [-1, 1] space")
    g.add_argument("--seed", type=int, default=0, help="seed of the random fills (per image)")
    g.add_argument("--far", type=float, default=1e-4, help="IJB: FAR of the reported TAR")
    g.add_argument("--folds", type=int, default=10)
    _eval_model_args(p)
    _eval_model_args(p, second=True)
    _eval_common_args(p, 64, "one source required")


def _eval_args(p):
    sub = p.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    for name, add in (("verification", _eval_verification_args), ("ijb", _eval_ijb_args),
                      ("occlusion", _eval_occlusion_args)):
        q = sub.add_parser(name, help=_EVAL_HELP[name], description=_EVAL_HELP[name])
        add(q)
        q.set_defaults(_eval_parser=q)


@command("eval", "evaluate: verification packs, IJB-B/C 1:1, semantic-occlusion benchmark (+ FS-CAM)", _eval_args)
def _eval(args):
    from fse_plugin.evaluation import run_eval
    return run_eval(args)
# === end: evaluation ===

# === section: demo ===
def _demo_args(p: argparse.ArgumentParser) -> None:
    from fse_plugin.demo import FULL
    p.add_argument("--out", default="fse_demo", help="output folder (default ./fse_demo)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: the whole pipeline in about a minute")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--p", type=float, default=0.5, help="FSErasing probability of the erasing model")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    for name, value in vars(FULL).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None,
                       help=f"override the size {name} (full default {value})")


@command("demo", "the whole pipeline on synthetic faces: synth, parser, mask cache, training with and "
         "without FSErasing, evaluation, occlusion, FS-CAM, report", _demo_args)
def _demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from fse_plugin.demo import FULL, QUICK, run_demo
    base = QUICK if args.quick else FULL
    sizes = replace(base, **{k: getattr(args, k) for k in vars(base) if getattr(args, k) is not None})
    run_demo(args.out, sizes, seed=args.seed, p=args.p, device=args.device, progress=not args.quiet)
    return 0
# === end: demo ===


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fse", description="FSErasing and FS-CAM for insightface arcface_torch.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_, add_args, fn in _COMMANDS:
        p = sub.add_parser(name, help=help_, description=help_)
        add_args(p)
        p.set_defaults(_run=fn)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not hasattr(args, "_run"):
        ap.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
