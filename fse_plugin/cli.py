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
# === end: synth ===

# === section: parser ===
def _train_parser_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="FaceSynthetics-layout folder (images, _ldmks.txt, labels_25/, anno_list.csv)")
    p.add_argument("--out", required=True, help="output folder: last.pt, best.pt, tb/ (tensorboard), cache/ (aligned faces)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate (warm-up, then cosine to 0)")
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
# === end: maskcache ===

# === section: dataset ===
def _patch_args(p):
    p.add_argument("dir", help="arcface_torch dir, or the insightface repo root")
    p.add_argument("--check", action="store_true", help="only report what would be done")
    p.add_argument("--reverse", action="store_true", help="remove the patches again")


@command("patch-arcface", "apply the plugin's patches to an arcface_torch checkout (config.fse hook)", _patch_args)
def _patch_arcface(args):
    from fse_plugin.patches import PatchError, apply_patches
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
    g.add_argument("--mask-cache", help="mask cache dir keyed by pack image index or IJB meta row")
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
