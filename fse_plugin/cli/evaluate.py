"""``fse eval verification|ijb|occlusion`` (and ``eval/*.py``): flags -> ``fse_plugin.evaluation`` calls.

``--config configs/NAME.py`` reads an arcface_torch config for the model and data; its
``config.fse_eval`` (``evaluation.fse_eval``: fscam, occlusion, parser, masks, and defaults of any
flag by its dest name, each checked by the flag's own rule) asks for FS-CAM and the occlusion
benchmark; flags on the command line win. Every flag, file and config entry is checked before a
model or a pack is loaded; ``--fscam`` explains pairs with ``fse_plugin.cam`` after the protocol
ran.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from fse_plugin import evaluation
from fse_plugin.cam.names import METHODS
from fse_plugin.cli.grammar import command, fill_value, group, pack_flag, precision_flag, renamed
from fse_plugin.cli.types import (count_type, device_type, dir_type, file_type, names_type,
                                  open_fraction_type, output_dir_type)
from fse_plugin.common import FSEError, checks, masks_path_for
from fse_plugin.common.files import atomic_write
from fse_plugin.evaluation import (IJB_FARS, PACK_NAMES, config_file, config_weights, format_table,
                                   load_bin, load_config, occlusion_fill, occlusion_regions,
                                   pack_pairs, parse_groups, write_occlusion_report)
from fse_plugin.evaluation.fse_eval import FSCAM_PAIRS, FSEEvalConfig
from fse_plugin.evaluation.outputs import atomic_npy
from fse_plugin.fseconfig import FILLS

if TYPE_CHECKING:
    from torch import nn

HELP = "evaluate: verification packs, IJB-B/C 1:1, semantic-occlusion benchmark (+ FS-CAM)"
log = logging.getLogger(__name__)
PROTOCOLS = {
    "verification": "LFW-style .bin packs: 10-fold Accuracy-Flip, XNorm, VAL@FAR=1e-3 "
                    "(arcface_torch protocol)",
    "ijb": "IJB-B/C 1:1 verification: TAR@FAR 1e-6..1e-1, ROC plot, scores (eval_ijbc.py protocol)",
    "occlusion": "semantic-occlusion benchmark: score drop per face region erased in the probes, 1 "
                 "or 2 models",
}


def register(sub: argparse._SubParsersAction) -> None:
    actions = group(sub, "eval", HELP)
    for name, add, run in (("verification", add_verification_args, run_verification),
                           ("ijb", add_ijb_args, run_ijb),
                           ("occlusion", add_occlusion_args, run_occlusion)):
        command(actions, name, PROTOCOLS[name], add, run, prog=f"fse eval {name}")


def _model_args(p: argparse.ArgumentParser, second: bool = False) -> None:
    s = "2" if second else ""
    g = p.add_argument_group("second model (network and embedding size default to the first's)"
                             if second else "model")
    if not second:
        g.add_argument("--config", type=file_type("text"),
                       help="arcface_torch config file: network, embedding_size, output/model.pt, rec, val_targets; "
                            "its config.fse_eval asks for FS-CAM, occlusion and masks (README section 7)")
        g.add_argument("--arcface-dir", type=dir_type(),
                       help="arcface_torch tree for r18, r34, r50, r100 ... (default: $ARCFACE_TORCH_DIR, the tree "
                            "holding --config, or the working directory)")
    g.add_argument(f"--network{s}", help="tiny (built-in), torchscript, or an arcface_torch name "
                                         "(r18, r34, r50, r100, vit_t ...)")
    g.add_argument(f"--weights{s}", type=file_type("checkpoint"),
                   help="checkpoint: arcface_torch's model.pt, a state_dict wrapped in "
                        "state_dict/model/backbone, module. prefixes; or a TorchScript file")
    g.add_argument(f"--embedding-size{s}", type=count_type(),
                   help="embedding size (checked; default: config or 512)")
    g.add_argument(f"--name{s}", help="label in tables and charts")


def _common_args(p: argparse.ArgumentParser, batch_size: int, masks_for: str) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", default="eval_results", type=output_dir_type(),
                   help="output dir (JSON, tables, plots)")
    g.add_argument("--batch-size", type=count_type(), default=batch_size,
                   help="images per forward; on a CPU, small batches (8) cost less per image "
                        "(benchmarks/README.md)")
    g.add_argument("--device", default="auto", type=device_type(),
                   help="auto, cpu, cuda, cuda:1 ...")
    precision_flag(g, amp_meant="fp16", old_switches=("--amp", "--fp16"))
    g.add_argument("--num-workers", type=count_type(0), default=0,
                   help="DataLoader workers (decode, align, erase)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group(f"masks ({masks_for})")
    g.add_argument("--masks", type=file_type("npy"),
                   help=".npy uint8 [N,112,112]; packs: default <pack minus .bin>.masks.npy; IJB: "
                        "one per row of the 5pts file")
    g.add_argument("--mask-cache", type=dir_type(), help="mask cache dir: its i-th mask (key "
                                                         "order) is pack image i or IJB meta row i")
    g.add_argument("--parser", type=file_type("checkpoint"),
                   help="parser checkpoint: predict the masks (saved under --out for reuse)")
    g = p.add_argument_group("FS-CAM")
    g.add_argument("--fscam", metavar="OUT_DIR",
                   help="also explain pairs with FS-CAM (fse_plugin.cam) into OUT_DIR")
    g.add_argument("--fscam-methods", default="fscam", type=names_type(METHODS),
                   help=f"comma list of cam methods: {', '.join(METHODS)}")
    g.add_argument("--fscam-pairs", default="same", choices=FSCAM_PAIRS)
    g.add_argument("--fscam-limit", type=count_type(), default=64,
                   help="explain the first N such pairs")


def _ijb_set_arg(g: argparse._ArgumentGroup) -> None:
    renamed(g, "--target", g.add_argument("--ijb-set", default="IJBC", choices=("IJBC", "IJBB"),
                                          help="which IJB benchmark (its meta/ file prefix)"))


def _fars(text: str) -> list[float]:
    """A comma list of FAR points, each in (0, 1)."""
    parts = [t.strip() for t in text.split(",")]
    return [open_fraction_type()(t) for t in parts]


def _fill(text: str) -> str | float:
    """A fill mode name or a number in the normalised [-1, 1] space."""
    try:
        return occlusion_fill(fill_value(text), "fill")
    except FSEError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("fill: ")) from None


def _classes(text: str) -> str:
    try:
        occlusion_regions(text, "none")
    except (ValueError, KeyError) as e:
        raise argparse.ArgumentTypeError(e.args[0] if e.args else str(e)) from None
    return text


def _groups(text: str) -> str:
    try:
        parse_groups(text)
    except (ValueError, KeyError) as e:
        raise argparse.ArgumentTypeError(e.args[0] if e.args else str(e)) from None
    return text


def add_verification_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("packs")
    pack_flag(g, ".bin verification pack (repeatable)", action="append", default=[],
              type=file_type())
    g.add_argument("--data-dir", type=dir_type(),
                   help="dir of <target>.bin packs (default: config rec)")
    g.add_argument("--targets", help="comma list of pack names in --data-dir (default: config "
                                     "val_targets, else lfw,cfp_fp,agedb_30,calfw,cplfw)")
    g.add_argument("--folds", type=count_type(2), default=10, help="cross-validation folds (>= 2)")
    g.add_argument("--image-size", type=count_type(), nargs=2, default=(112, 112),
                   metavar=("H", "W"))
    _model_args(p)
    _common_args(p, 64, "for --fscam")


def add_ijb_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("IJB")
    g.add_argument("--root", required=True, type=dir_type(),
                   help="IJB-B/C root holding meta/ and loose_crop/")
    _ijb_set_arg(g)
    far = g.add_argument("--far", type=_fars, default=list(IJB_FARS),
                         help="comma list of FAR points, each in (0, 1)")
    renamed(g, "--fars", far)
    _model_args(p)
    _common_args(p, 128, "for --fscam")


def add_occlusion_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("benchmark")
    src = g.add_mutually_exclusive_group(required=True)
    pack_flag(src, ".bin verification pack (probe = second image of each pair)", type=file_type())
    src.add_argument("--ijb-root", type=dir_type(),
                     help="IJB-B/C root (probe = images of the second template of each pair)")
    _ijb_set_arg(g)
    g.add_argument("--classes", type=_classes,
                   help="comma list of classes erased one at a time (default: all 25)")
    g.add_argument("--groups", type=_groups,
                   help='"name=cls,cls;name2=cls,..." erased together (default: eyes+brows, upper_face, lower_face of '
                        'fse_plugin.evaluation.DEFAULT_GROUPS; "none": no group)')
    g.add_argument("--fill", default="random", type=_fill,
                   help=f"{', '.join(FILLS)} or a number in the normalised [-1, 1] space")
    g.add_argument("--seed", type=count_type(0), default=0,
                   help="seed of the random fills (per image)")
    g.add_argument("--far", type=open_fraction_type(), default=1e-4,
                   help="IJB: FAR of the reported TAR, in (0, 1)")
    g.add_argument("--folds", type=count_type(2), default=10, help="cross-validation folds (>= 2)")
    _model_args(p)
    _model_args(p, second=True)
    _common_args(p, 64, "one source required")


_INTERNAL = ("config", "run", "prog", "cli_parser", "debug")
"""Namespace entries that are not flags a config may set."""


def _flag_value(args: argparse.Namespace, dest: str, value: Any) -> Any:
    """A ``config.fse_eval`` flag default checked by the flag's own rule, as if typed on the command
    line."""
    action = next(a for a in args.cli_parser._actions if a.dest == dest)
    key = f"config.fse_eval.{dest}"
    if action.nargs == 0:
        return checks.choice(value, key, (True, False))
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    try:
        value = action.type(text) if action.type else text
    except argparse.ArgumentTypeError as e:
        raise FSEError(f"{key}: {e}") from None
    return checks.choice(value, key, action.choices) if action.choices else value


def _apply_config(args: argparse.Namespace) -> tuple[dict[str, Any] | None, FSEEvalConfig]:
    """Load --config; its ``fse_eval`` fills flags left at their defaults (the command line
    wins)."""
    if not args.config:
        return None, FSEEvalConfig()
    cfg = load_config(args.config)
    known = sorted(k for k in vars(args) if k not in _INTERNAL)
    settings = FSEEvalConfig.from_config(cfg, lambda value: config_file(cfg, value), flags=known)

    def default(dest: str, value: Any) -> None:
        if value is not None and getattr(args, dest) == args.cli_parser.get_default(dest):
            setattr(args, dest, value)

    for dest, value in settings.flags.items():
        default(dest, _flag_value(args, dest, value))
    for dest in ("parser", "masks", "mask_cache"):
        default(dest, getattr(settings, dest))
    if settings.fscam is not None:
        default("fscam", settings.fscam.out or str(Path(args.out) / "fscam"))
        default("fscam_methods", list(settings.fscam.methods))
        default("fscam_pairs", settings.fscam.pairs)
        default("fscam_limit", settings.fscam.limit)
    return cfg, settings


def _model_spec(args: argparse.Namespace, cfg: Mapping[str, Any] | None,
                suffix: str = "") -> dict[str, Any]:
    """network / weights / embedding size / label of model ``suffix`` ('' or '2') from flags, else
    config."""
    cfg = cfg or {}
    network = (getattr(args, f"network{suffix}") or (args.network if suffix else None)
               or cfg.get("network") or "tiny")
    weights = getattr(args, f"weights{suffix}")
    if weights is None and not suffix and cfg:
        found = config_weights(cfg)
        weights = str(found) if found else None
    size = (getattr(args, f"embedding_size{suffix}") or args.embedding_size
            or cfg.get("embedding_size"))
    if size is not None:
        checks.count(size, "config.embedding_size" if cfg.get("embedding_size") == size
                     else "--embedding-size")
    weights = None if weights is None else str(weights)
    label = ((Path(weights).parent.name if Path(weights).stem == "model" else Path(weights).stem)
             if weights else network)
    name = getattr(args, f"name{suffix}") or label
    return {"network": network, "weights": weights, "embedding_size": size, "name": name}


def _model_specs(args: argparse.Namespace, cfg: Mapping[str, Any] | None,
                 second: bool = False) -> list[dict]:
    """The models to load, checked (weights given) before any is loaded."""
    specs = [_model_spec(args, cfg)]
    if second and (args.weights2 or args.network2):
        specs.append(_model_spec(args, cfg, "2"))
        if specs[1]["name"] == specs[0]["name"]:
            specs[0]["name"], specs[1]["name"] = f"{specs[0]['name']}-1", f"{specs[1]['name']}-2"
    for s in specs:
        if s["weights"] is None:
            raise FSEError(f"model {s['name']!r}: no weights - pass --weights{'2' if s is not specs[0] else ''} "
                           "(or a config whose output/model.pt exists); a randomly initialised network says nothing")
    return specs


def _load_models(args: argparse.Namespace, specs: list[dict]) -> dict[str, nn.Module]:
    from fse_plugin.backbone import load_backbone
    return {s["name"]: load_backbone(s["weights"], s["network"], s["embedding_size"] or 512,
                                     args.arcface_dir, config_path=args.config) for s in specs}


def _mask_source(args: argparse.Namespace, pack: str | None = None) -> str:
    """Which masks FS-CAM or occlusion will read (checked before anything is computed)."""
    given = [flag for flag, value in (("--masks", args.masks), ("--mask-cache", args.mask_cache),
                                      ("--parser", args.parser)) if value]
    if len(given) > 1:
        raise FSEError(f"{' and '.join(given)} both give masks; pass one")
    if given:
        return given[0]
    if pack is not None and masks_path_for(pack).is_file():
        return "beside"
    where = (f"{pack}: no masks: put {masks_path_for(pack).name} beside the pack or pass" if pack
             else "masks needed:")
    raise FSEError(f"{where} --masks, --mask-cache or --parser")


def _pack_masks(args: argparse.Namespace, pack: str, images: np.ndarray, out: Path) -> Any:
    source = _mask_source(args, pack)
    if source == "--masks":
        return evaluation.open_masks(args.masks, len(images), images.shape[1:3])
    if source == "--mask-cache":
        return evaluation.CacheMasks(args.mask_cache, len(images))
    if source == "--parser":
        from fse_plugin.common import resolve_device
        from fse_plugin.parsing import masks_from_checkpoint
        masks = masks_from_checkpoint(args.parser, images, str(resolve_device(args.device)),
                                      args.batch_size)
        atomic_npy(out / masks_path_for(pack).name, masks)
        return masks
    return evaluation.open_masks(masks_path_for(pack), len(images), images.shape[1:3])


def _ijb_masks(args: argparse.Namespace, meta: evaluation.IJBMeta, rows: np.ndarray,
               out: Path) -> Any:
    source = _mask_source(args)
    if source == "--masks":
        return evaluation.open_masks(args.masks, len(meta.names))
    if source == "--mask-cache":
        return evaluation.CacheMasks(args.mask_cache, len(meta.names))
    return evaluation.predict_ijb_masks(args.parser, meta, rows,
                                        out / f"{meta.target.lower()}_masks.npy", args.batch_size,
                                        args.device, not args.quiet)


def _check_ijb_masks(args: argparse.Namespace, meta: evaluation.IJBMeta) -> None:
    """A mask file or cache fits the meta rows (checked before the IJB run, not after it)."""
    if _mask_source(args) != "--parser":
        _ijb_masks(args, meta, np.empty(0, np.int64), Path(args.out))


def _write_json(path: Path, doc: Any) -> Path:
    atomic_write(path, json.dumps(doc, indent=2).encode())
    return path


def _packs(args: argparse.Namespace, cfg: Mapping[str, Any] | None) -> list[str]:
    """The packs to evaluate: --pack, or --targets (default: the config's val_targets) in --data-dir
    (default: the config's rec), each checked (found, a readable pack, at least --folds pairs)."""
    if args.pack and args.data_dir:
        raise FSEError("--pack and --data-dir both name packs: pass one (a pack given twice is "
                       "evaluated twice)")
    if args.pack and args.targets:
        raise FSEError("--targets names packs in --data-dir, not --pack: pass --data-dir DIR "
                       "--targets ... or --pack")
    packs = [str(p) for p in args.pack]
    if not packs:
        data_dir = args.data_dir or (cfg and cfg.get("rec") and config_file(cfg, cfg["rec"]))
        if not data_dir:
            raise FSEError("no verification pack: pass --pack PATH, or --data-dir DIR "
                           "(or a --config with rec)")
        named = args.targets is not None
        targets = (checks.name_list(args.targets, "--targets", _any_name(args.targets)) if named
                   else list((cfg or {}).get("val_targets") or PACK_NAMES))
        for t in targets:
            path = Path(data_dir) / f"{t}.bin"
            if path.is_file():
                packs.append(str(path))
            elif named:
                raise FSEError(f"--targets: {t}: {path} not found")
            else:
                log.info("verification: %s not found, skipped", path)
        if not packs:
            raise FSEError(f"--data-dir: {data_dir} holds none of {', '.join(f'{t}.bin' for t in targets)}; pass "
                           "--targets NAME,... or --pack PATH")
    for pack in packs:
        n = pack_pairs(pack)
        if n < args.folds:
            raise FSEError(f"{pack}: {n} pair{'s' if n != 1 else ''}, fewer than --folds "
                           f"{args.folds}")
    return packs


def _any_name(text: str) -> list[str]:
    """Every name of a comma list: pack names are free, only empty and repeated ones are refused."""
    return [t.strip() for t in text.split(",") if t.strip()]


def run_verification(args: argparse.Namespace) -> int:
    cfg, settings = _apply_config(args)
    if settings.occlusion is not None:
        log.info("config.fse_eval.occlusion: run `fse eval occlusion --config ...` for the "
                 "benchmark on packs")
    packs = _packs(args, cfg)
    if args.fscam:
        for pack in packs:
            _mask_source(args, pack)
    specs = _model_specs(args, cfg)
    embedding = _embed_settings(args, specs[0]["embedding_size"])
    (name, model), = _load_models(args, specs).items()
    out = Path(args.out)
    results = []
    for pack in packs:
        images, issame = load_bin(pack, tuple(args.image_size))
        result = evaluation.evaluate_pack(model, (images, issame), embedding, args.folds,
                                          Path(pack).stem)
        log.info("%s", result)
        results.append(result)
        if args.fscam:
            _fscam_pack(args, {name: model}, images, issame, _pack_masks(args, pack, images, out),
                        Path(args.fscam) / Path(pack).stem, pack)
    rows = [[r.name, r.n_pairs, f"{r.accuracy * 100:.3f}", f"{r.accuracy_std * 100:.3f}",
             f"{r.xnorm:.4f}", f"{r.val * 100:.3f}"] for r in results]
    print(format_table(rows,
                       ["pack", "pairs", "Accuracy-Flip %", "std", "XNorm", "VAL@FAR=1e-3 %"]))
    path = _write_json(out / "verification.json",
                       {"model": specs[0], "results": [asdict(r) for r in results]})
    log.info("results: %s", path)
    return 0


def _embed_settings(args: argparse.Namespace,
                    embedding_size: int | None = None) -> evaluation.EmbedSettings:
    """How the models run: --batch-size, --device, --precision (fp16 needs CUDA), --num-workers,
    --quiet."""
    from fse_plugin.common import resolve_device
    from fse_plugin.evaluation.embed import check_precision
    check_precision(args.precision, resolve_device(args.device), "--precision")
    return evaluation.EmbedSettings(args.batch_size, args.device, args.precision, args.num_workers,
                                    embedding_size, not args.quiet)


def _fscam_settings(args: argparse.Namespace, **meta: str) -> Any:
    """``cam.ExplainSettings`` of --fscam-methods on --device (``meta``: report entries); logs the
    target."""
    from fse_plugin.cam import TARGETS, ExplainSettings
    from fse_plugin.common import resolve_device
    log.info("FS-CAM target: %s", TARGETS["pair"])
    return ExplainSettings(methods=args.fscam_methods, device=str(resolve_device(args.device)),
                           meta=meta, progress=not args.quiet)


def _fscam_pack(args: argparse.Namespace, models: dict, images: np.ndarray, issame: np.ndarray,
                masks: Any, out: str | Path, pack: str) -> None:
    from fse_plugin.cam import fscam_pack
    report = fscam_pack(models, images, issame, masks, out, _fscam_settings(args, pack=pack),
                        args.fscam_pairs, args.fscam_limit)
    log.info("FS-CAM report: %s", report)


def run_ijb(args: argparse.Namespace) -> int:
    cfg, settings = _apply_config(args)
    specs = _model_specs(args, cfg)
    embedding = _embed_settings(args, specs[0]["embedding_size"])
    meta = evaluation.read_ijb_meta(args.root, args.ijb_set)
    occlusion = settings.occlusion
    if args.fscam or occlusion is not None:
        _check_ijb_masks(args, meta)
    models = _load_models(args, specs)
    (name, model), = models.items()
    out = Path(args.out)
    result = evaluation.evaluate_ijb(model, meta, embedding, out_dir=out, name=name, fars=args.far)
    print(result)
    path = _write_json(out / f"{meta.target.lower()}_results.json",
                       {"model": specs[0], **asdict(result)})
    log.info("results: %s\nscores: %s\nROC: %s", path, result.scores_path, result.roc_path)
    if not (args.fscam or occlusion is not None):
        return 0
    from fse_plugin.cam import ijb_fscam_rows
    rows = [meta.probe_rows()] if occlusion is not None else []
    rows += list(ijb_fscam_rows(meta, args.fscam_pairs, args.fscam_limit)) if args.fscam else []
    masks = _ijb_masks(args, meta, np.unique(np.concatenate(rows)), out)
    if occlusion is not None:
        run = evaluation.OcclusionSettings(list(occlusion.regions), occlusion.fill, occlusion.seed,
                                           embedding)
        _occlusion_outputs(evaluation.occlusion_ijb(models, meta, masks, run, occlusion.far), out)
    if args.fscam:
        _fscam_ijb(args, models, meta, masks)
    return 0


def _occlusion_outputs(report: Any, out: Path) -> None:
    print(report.table())
    paths = write_occlusion_report(report, out, f"occlusion_{report.benchmark.lower()}")
    log.info("%s", "\n".join(f"{k}: {v}" for k, v in paths.items()))


def _fscam_ijb(args: argparse.Namespace, models: dict, meta: evaluation.IJBMeta,
               masks: Any) -> None:
    from fse_plugin.cam import fscam_ijb
    report = fscam_ijb(models, meta, masks, args.fscam, _fscam_settings(args), args.fscam_pairs,
                       args.fscam_limit)
    log.info("FS-CAM report: %s", report)


def _occlusion_defaults(args: argparse.Namespace, settings: FSEEvalConfig) -> None:
    """``config.fse_eval.occlusion``'s options where the flags kept their defaults."""
    o = settings.occlusion
    if o is None:
        return
    for dest, value in (("classes", o.classes), ("groups", o.groups), ("fill", o.fill),
                        ("seed", o.seed), ("far", o.far)):
        if value is not None and getattr(args, dest) == args.cli_parser.get_default(dest):
            setattr(args, dest, value)


def run_occlusion(args: argparse.Namespace) -> int:
    cfg, settings = _apply_config(args)
    _occlusion_defaults(args, settings)
    specs = _model_specs(args, cfg, second=True)
    run = evaluation.OcclusionSettings(occlusion_regions(args.classes, args.groups), args.fill,
                                       args.seed, _embed_settings(args),
                                       {s["name"]: s["embedding_size"] for s in specs})
    out = Path(args.out)
    if args.pack:
        _mask_source(args, args.pack)
        n = pack_pairs(args.pack)
        if n < args.folds:
            raise FSEError(f"{args.pack}: {n} pair{'s' if n != 1 else ''}, fewer than --folds "
                           f"{args.folds}")
        models = _load_models(args, specs)
        images, issame = load_bin(args.pack)
        masks = _pack_masks(args, args.pack, images, out)
        report = evaluation.occlusion_pack(models, images, issame, masks, run, args.folds,
                                           Path(args.pack).stem)
    else:
        meta = evaluation.read_ijb_meta(args.ijb_root, args.ijb_set)
        _check_ijb_masks(args, meta)
        models = _load_models(args, specs)
        from fse_plugin.cam import ijb_fscam_rows
        fscam_rows = (np.concatenate(ijb_fscam_rows(meta, args.fscam_pairs, args.fscam_limit))
                      if args.fscam else [])
        masks = _ijb_masks(args, meta, np.union1d(meta.probe_rows(), fscam_rows).astype(np.int64),
                           out)
        report = evaluation.occlusion_ijb(models, meta, masks, run, args.far)
    _occlusion_outputs(report, out)
    if args.fscam:
        if args.pack:
            _fscam_pack(args, models, images, issame, masks, args.fscam, args.pack)
        else:
            _fscam_ijb(args, models, meta, masks)
    return 0
