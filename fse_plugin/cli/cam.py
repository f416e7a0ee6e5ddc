"""``fse cam``: FS-CAM and pixel CAMs per face region for one model or two: overlays, charts,
CSV/JSON, report.

Every flag is checked while the command line is parsed, and the flags that only mean something
together (the data and its masks, the target and the data, the two models' names) before any model
or face is loaded: a mistake is one line naming the flag, exit status 2. Only --target-layer waits
for the model (its layers name it), and is checked before any face is read.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, NamedTuple

from fse_plugin.cam.names import (HOOKED_METHODS, METHODS, PAIR_TARGETS, REC_TARGETS,
                                  check_model_name)
from fse_plugin.cli import types
from fse_plugin.cli.grammar import command, fill_value, pack_flag, precision_flag, renamed
from fse_plugin.common import FSEError, checks
from fse_plugin.fseconfig import check_fill

HELP = "FS-CAM and pixel CAMs per face region: overlays, charts, CSV/JSON, report"

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    command(sub, "cam", HELP, add_args, run)


def _methods(text: str) -> list[str]:
    return types.names_type(METHODS)(text.lower())


def _fill(text: str) -> str | float:
    """An ablation fill: a constant in normalised space or an FSErasing fill name
    (``fseconfig.check_fill``)."""
    try:
        return check_fill(fill_value(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _rec_path(text: str) -> Path:
    """A rec directory (train.rec/.idx) or a .rec file."""
    return types.dir_type()(text) if Path(text).is_dir() else types.file_type()(text)


def _model_name(text: str) -> str:
    """A model's label: it names files (overlay_<name>.png)."""
    try:
        return check_model_name(text, "value")
    except FSEError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("value: ")) from None


def _data_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    pack_flag(src, "verification pack (.bin); masks from --masks, --parser or <pack>.masks.npy",
              type=types.file_type())
    src.add_argument("--rec", type=_rec_path, help="rec dir (train.rec/.idx) or .rec file; masks "
                                                   "from its mask cache or --parser")
    p.add_argument("--masks", type=types.file_type("npy"),
                   help="masks .npy [2P,H,W] of the whole --pack")
    p.add_argument("--mask-cache", type=types.dir_type(),
                   help="mask cache of --rec (default: <rec_dir>/fse_masks)")
    p.add_argument("--parser", type=types.file_type("checkpoint"),
                   help="parser checkpoint: predict the masks instead")
    p.add_argument("--pairs", choices=("same", "diff", "all"), default=None,
                   help="which pairs of --pack (default: same)")
    p.add_argument("--limit", type=types.count_type(1), default=None,
                   help="at most N pairs (--pack; default: all) or images (--rec; default: 256)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--network", default="tiny",
                   help="tiny | torchscript | arcface_torch name (r50, r100, ...)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", type=types.file_type("checkpoint"),
                   help="checkpoint: model.pt (backbone only) or one with the classifier head (see "
                        "fse_plugin.backbone.load_recognizer); plain, module.-prefixed, {'state_dict'|'model': ...}; "
                        "the scripted file for torchscript")
    w.add_argument("--random-weights", action="store_true",
                   help="explain a randomly initialised model instead of --weights (a test and "
                        "debugging aid)")
    renamed(p, "--model2", p.add_argument("--weights2", type=types.file_type("checkpoint"),
                                          help="second model to compare (e.g. FSErasing-trained)"))
    p.add_argument("--network2", help="network of the second model (default: --network)")
    p.add_argument("--name", type=_model_name, default="baseline", help="label of the first model")
    p.add_argument("--name2", type=_model_name, default="fse", help="label of the second model")
    p.add_argument("--arcface-dir", type=types.dir_type(),
                   help="arcface_torch checkout (default: $ARCFACE_TORCH_DIR)")
    renamed(p, "--num-features", p.add_argument("--embedding-size", type=types.count_type(1),
                                                default=512, help="embedding size of the networks"))


def _method_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", type=_methods, default="fscam,ablation",
                   help="comma list of fscam, ablation, gradcam, gradcam++, scorecam, xgradcam, "
                        "layercam, eigencam, hirescam, eigengradcam, rise, groupcam")
    p.add_argument("--target", choices=("class", "pair", "identity", "self"), default=None,
                   help="score explained: class (the reference: softmax of the argmax identity logit of the "
                        "checkpoint's classifier head; default when every checkpoint has one), else pair (other image "
                        "of the pair; default for --pack), identity (centroid of the identity's other images; default "
                        "for --rec), self (own clean embedding; zero gradient, so not for gradient CAMs)")
    p.add_argument("--logit-scale", type=types.number_type(lo=0, lo_open=True), default=64.0,
                   help="s of the identity logits s * cos(embedding, head row) (arcface_torch's "
                        "margin loss s)")
    p.add_argument("--fill", type=_fill, default=0.0,
                   help="ablation fill: a number (normalised space), random, random_1, "
                        "region_mean, image_mean")
    p.add_argument("--target-layer",
                   help="layer for pixel CAMs, dotted name (default: layer4 / layers[-1])")
    p.add_argument("--rise-n", type=types.count_type(1), default=8000, help="RISE masks")
    p.add_argument("--rise-s", type=types.count_type(1), default=7, help="RISE grid size")
    p.add_argument("--rise-p1", type=types.number_type(0, 1, lo_open=True), default=0.1,
                   help="RISE keep probability, in (0, 1]")
    renamed(p, "--groups", p.add_argument("--groupcam-groups", type=types.count_type(1), default=32,
                                          help="Group-CAM channel groups"))


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=types.count_type(1), default=260,
                   help="forward batch (FS-CAM: ~batch/26 images at once)")
    steps = p.add_argument("--images-per-step", type=types.count_type(1), default=32,
                           help="images per step of each method (progress granularity, memory)")
    renamed(p, "--chunk-size", steps)
    renamed(p, "--chunk", steps)
    p.add_argument("--device", type=types.device_type(), default="auto",
                   help="auto, cpu, cuda, cuda:N")
    precision_flag(p, amp_meant="bf16")
    p.add_argument("--ci", choices=("bootstrap", "t"), default="bootstrap",
                   help="95%% interval: image bootstrap or t")
    p.add_argument("--grid", type=types.count_type(1), default=8,
                   help="images in the overlay grids")
    p.add_argument("--report", choices=("md", "html"), default="md", help="report page format")
    p.add_argument("--seed", type=types.count_type(0), default=0,
                   help="random fills, RISE masks, bootstrap")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars or messages, warnings only")
    p.add_argument("--out", type=types.output_dir_type(), required=True, help="output folder")


def add_args(p: argparse.ArgumentParser) -> None:
    for group in (_data_args, _model_args, _method_args, _run_args):
        group(p)


def _check_flags(args: argparse.Namespace) -> None:
    """The rules between flags (each flag alone was checked while parsing)."""
    if args.weights is None and not args.random_weights:
        raise FSEError("no --weights: pass the checkpoint to explain (or --random-weights to "
                       "explain an untrained model on purpose, for tests and debugging)")
    source = "pack" if args.pack else "rec"
    for flag, value, only in (("--masks", args.masks, "pack"), ("--pairs", args.pairs, "pack"),
                              ("--mask-cache", args.mask_cache, "rec")):
        if value is not None and source != only:
            raise FSEError(f"{flag} goes with --{only}, not --{source}")
    hooked = [m for m in args.methods if m in HOOKED_METHODS]
    if hooked and "torchscript" in {args.network, args.network2}:
        raise FSEError(f"--methods {', '.join(hooked)} hook layers of the network, which a TorchScript model does "
                       "not expose: use fscam, ablation or rise with --network torchscript, or load the backbone "
                       "with --network NAME")
    if args.target is not None:
        checks.choice(args.target, f"--target (with --{source})",
                      PAIR_TARGETS if args.pack else REC_TARGETS)
    if args.weights2 is None:
        if args.network2 is not None:
            raise FSEError("--network2 without --weights2: give the second model's checkpoint")
    elif args.name == args.name2:
        raise FSEError(f"--name and --name2 are both {args.name!r}: the two models need different "
                       "names")


def _check_sources(args: argparse.Namespace) -> None:
    """Where the masks and the networks come from, before any model or face is loaded."""
    from fse_plugin.backbone import arcface_torch_dir
    from fse_plugin.cam.sources import pack_masks_file, rec_masks
    if args.pack:
        pack_masks_file(args.pack, args.masks, args.parser)
    else:
        rec_masks(args.rec, args.mask_cache, args.parser)
    for network in {args.network, args.network2 or args.network} - {"tiny", "torchscript"}:
        if arcface_torch_dir(args.arcface_dir) is None:
            raise FSEError(f"--network {network} is built by arcface_torch: pass --arcface-dir "
                           "(or set ARCFACE_TORCH_DIR)")


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
    return [Loaded(name, None if weights is None else str(weights), network,
                   *load(weights, network)) for name, weights, network in specs]


def _settings(args: argparse.Namespace, kind: str, meta: dict[str, str]) -> Any:
    from fse_plugin import cam
    from fse_plugin.common import resolve_device
    options = {"rise": {"n_masks": args.rise_n, "s": args.rise_s, "p1": args.rise_p1,
                        "seed": args.seed, "precision": args.precision},
               "groupcam": {"groups": args.groupcam_groups}}
    return cam.ExplainSettings(
        methods=tuple(args.methods), target=kind, device=str(resolve_device(args.device)),
        batch_size=args.batch_size,
        images_per_step=args.images_per_step, grid=args.grid, precision=args.precision,
        fill=args.fill,
        seed=args.seed, target_layer=args.target_layer, options=options, ci=args.ci,
        report=args.report, meta=meta,
        progress=not args.quiet)


def _check_layer(models: list[Any], settings: Any) -> None:
    """A --target-layer every pixel method's model has (checked before any face is loaded)."""
    from fse_plugin import cam
    if settings.target_layer is not None and any(m in cam.PIXEL_METHODS for m in settings.methods):
        try:
            for model in models:
                cam.resolve_layer(model, settings.target_layer)
        except FSEError as e:
            raise FSEError(f"--target-layer: {e}") from None


def run(args: argparse.Namespace) -> int:
    from fse_plugin import cam
    _check_flags(args)
    _check_sources(args)
    loaded = _load_models(args)
    choice = cam.choose_target(args.target, "pair" if args.pack else "identity",
                               {m.name: None if m.head is None else len(m.head) for m in loaded},
                               {m.name: m.weights for m in loaded}, args.logit_scale,
                               scripted=all(m.network == "torchscript" for m in loaded))
    log.info("FS-CAM target: %s", choice.description)
    models = {m.name: cam.explained_model(m.backbone, m.head, choice.kind, args.logit_scale)
              for m in loaded}
    meta = {"target_description": choice.description,
            **{f"weights {m.name}": m.weights or "random (--random-weights)" for m in loaded}}
    settings = _settings(args, choice.kind, meta)
    _check_layer(list(models.values()), settings)
    if args.pack:
        result = cam.explain_bin(models, args.pack, args.out, settings, masks=args.masks,
                                 parser=args.parser, pairs=args.pairs or "same", limit=args.limit)
    else:
        result = cam.explain_rec(models, args.rec, args.out, settings, limit=args.limit or 256,
                                 mask_cache=args.mask_cache, parser=args.parser)
    log.info("report: %s", result.report)
    return 0
