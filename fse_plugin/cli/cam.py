"""``fse cam``: FS-CAM and pixel CAMs per face region for one model or two: overlays, charts, CSV/JSON, report."""
from __future__ import annotations

import argparse
from typing import Any, NamedTuple

from fse_plugin.cli.grammar import command, fill_value, renamed

HELP = "FS-CAM and pixel CAMs per face region: overlays, charts, CSV/JSON, report"


def register(sub: argparse._SubParsersAction) -> None:
    command(sub, "cam", HELP, add_args, run)


def add_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    renamed(src, "--bin", src.add_argument("--pack", help="verification pack (.bin); masks from --masks, --parser or "
                                                          "<pack>.masks.npy"))
    src.add_argument("--rec", help="rec dir (train.rec/.idx) or .rec file; masks from its mask cache or --parser")
    p.add_argument("--masks", help="masks .npy [2P,H,W] for --pack")
    p.add_argument("--mask-cache", help="mask cache for --rec (default <rec_dir>/fse_masks)")
    p.add_argument("--parser", help="parser checkpoint: predict the masks instead")
    p.add_argument("--network", default="tiny", help="tiny | torchscript | arcface_torch name (r50, r100, ...)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", help="checkpoint: model.pt (backbone only) or one with the classifier head (see "
                                     "fse_plugin.backbone.load_recognizer); plain, module.-prefixed, "
                                     "{'state_dict'|'model': ...}; the scripted file for torchscript")
    w.add_argument("--random-weights", action="store_true",
                   help="explain a randomly initialised model instead of --weights (a test and debugging aid)")
    renamed(p, "--model2", p.add_argument("--weights2", help="second model to compare (e.g. FSErasing-trained)"))
    p.add_argument("--network2", help="network of the second model (default --network)")
    p.add_argument("--name", default="baseline", help="label of the first model")
    p.add_argument("--name2", default="fse", help="label of the second model")
    p.add_argument("--arcface-dir", help="arcface_torch checkout (default $ARCFACE_TORCH_DIR)")
    renamed(p, "--num-features", p.add_argument("--embedding-size", type=int, default=512))
    p.add_argument("--methods", default="fscam,ablation",
                   help="comma list of fscam, ablation, gradcam, gradcam++, scorecam, xgradcam, layercam, eigencam, "
                        "hirescam, eigengradcam, rise, groupcam")
    p.add_argument("--target", choices=("class", "pair", "identity", "self"), default=None,
                   help="score explained: class (the reference: softmax of the argmax identity logit of the "
                        "checkpoint's classifier head; default when every checkpoint has one), else pair (other image "
                        "of the pair; default for --pack), identity (centroid of the identity's other images; default "
                        "for --rec), self (own clean embedding; zero gradient, so not for gradient CAMs)")
    p.add_argument("--logit-scale", type=float, default=64.0,
                   help="s of the identity logits s * cos(embedding, head row) (arcface_torch's margin loss s)")
    p.add_argument("--pairs", choices=("same", "diff", "all"), default="same", help="which pairs of the pack")
    p.add_argument("--limit", type=int, default=None, help="at most N pairs (--pack) or images (--rec, default 256)")
    p.add_argument("--fill", default="0", help="ablation fill: a number, random, random_1, region_mean, image_mean")
    p.add_argument("--target-layer", help="layer for pixel CAMs, dotted name (default layer4 / layers[-1])")
    p.add_argument("--rise-n", type=int, default=8000, help="RISE masks")
    p.add_argument("--rise-s", type=int, default=7, help="RISE grid size")
    p.add_argument("--rise-p1", type=float, default=0.1, help="RISE keep probability")
    renamed(p, "--groups", p.add_argument("--groupcam-groups", type=int, default=32, help="Group-CAM channel groups"))
    p.add_argument("--batch-size", type=int, default=260, help="forward batch (FS-CAM: ~batch/26 images at once)")
    renamed(p, "--chunk", p.add_argument("--chunk-size", type=int, default=32,
                                         help="images per step (progress granularity, memory)"))
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="bf16 autocast for fscam/ablation/rise")
    p.add_argument("--ci", choices=("bootstrap", "t"), default="bootstrap", help="95%% interval: image bootstrap or t")
    p.add_argument("--grid", type=int, default=8, help="images in the overlay grids")
    p.add_argument("--report", choices=("md", "html"), default="md")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="output folder")


class Loaded(NamedTuple):
    name: str
    weights: str | None
    network: str
    backbone: Any
    head: Any


def _load_models(args: argparse.Namespace) -> list[Loaded]:
    """The first model and, with --weights2, the second: backbone and classifier head (or None)."""
    from fse_plugin.backbone import build_network, load_recognizer

    def load(weights: str | None, network: str) -> tuple[Any, Any]:
        if weights is None:  # --random-weights, asked for explicitly
            return build_network(network, args.embedding_size, args.arcface_dir).eval(), None
        return load_recognizer(weights, network, args.embedding_size, args.arcface_dir)

    specs = [(args.name, args.weights, args.network)]
    if args.weights2 is not None:
        specs.append((args.name2, args.weights2, args.network2 or args.network))
    return [Loaded(name, weights, network, *load(weights, network)) for name, weights, network in specs]


def run(args: argparse.Namespace) -> int:
    from fse_plugin import cam
    from fse_plugin.common import FSEError, resolve_device
    if args.weights is None and not args.random_weights:
        raise FSEError("no --weights: pass the checkpoint to explain (or --random-weights to explain an untrained "
                       "model on purpose, for tests and debugging)")
    device = str(resolve_device(args.device))
    loaded = _load_models(args)
    choice = cam.choose_target(args.target, "pair" if args.pack else "identity",
                               {m.name: None if m.head is None else len(m.head) for m in loaded},
                               {m.name: m.weights for m in loaded}, args.logit_scale,
                               scripted=all(m.network == "torchscript" for m in loaded))
    print(f"FS-CAM target: {choice.description}")
    models = [cam.explained_model(m.backbone, m.head, choice.kind, args.logit_scale) for m in loaded]
    meta = {"target_description": choice.description,
            **{f"weights {m.name}": m.weights or "random (--random-weights)" for m in loaded}}
    kw = dict(methods=cam.parse_methods(args.methods), model2=models[1] if len(models) > 1 else None,
              names=(args.name, args.name2), device=device, batch_size=args.batch_size, chunk=args.chunk_size,
              grid=args.grid, ci=args.ci, seed=args.seed, report=args.report, target_layer=args.target_layer,
              fill=fill_value(args.fill), amp=args.amp, progress=not args.quiet, target=choice.kind, meta=meta,
              options={"rise": {"n_masks": args.rise_n, "s": args.rise_s, "p1": args.rise_p1, "seed": args.seed,
                                "amp": args.amp},
                       "groupcam": {"groups": args.groupcam_groups}})
    if args.pack:
        res = cam.explain_bin(models[0], args.pack, args.out, masks=args.masks, parser=args.parser, pairs=args.pairs,
                              limit=args.limit, **kw)
    else:
        res = cam.explain_rec(models[0], args.rec, args.out, limit=args.limit or 256, mask_cache=args.mask_cache,
                              parser=args.parser, **kw)
    print(f"report: {res['report']}")
    return 0
