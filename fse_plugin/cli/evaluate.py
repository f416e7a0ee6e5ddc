"""``fse eval verification|ijb|occlusion`` (and ``eval/*.py``): flags -> ``fse_plugin.evaluation`` calls.

``--config configs/NAME.py`` reads an arcface_torch config for the model and data; its ``fse_eval``
dict sets defaults of the flags (by their dest names); flags on the command line win. ``--fscam``
explains pairs with ``fse_plugin.cam`` after the protocol ran.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from torch import nn

from fse_plugin.backbone import load_backbone
from fse_plugin.cli.grammar import command, fill_value, group, renamed
from fse_plugin.common import FSEError, masks_path_for, resolve_device
from fse_plugin.evaluation import (PACK_NAMES, CacheMasks, IJBMeta, OcclusionSettings, config_file, config_weights, evaluate_ijb,
                                   evaluate_pack, format_table, load_bin, load_config, occlusion_ijb, occlusion_pack,
                                   occlusion_regions, open_masks, predict_ijb_masks, read_ijb_meta,
                                   write_occlusion_report)
from fse_plugin.parsing import masks_from_checkpoint

HELP = "evaluate: verification packs, IJB-B/C 1:1, semantic-occlusion benchmark (+ FS-CAM)"
PROTOCOLS = {
    "verification": "LFW-style .bin packs: 10-fold Accuracy-Flip, XNorm, VAL@FAR=1e-3 (arcface_torch protocol)",
    "ijb": "IJB-B/C 1:1 verification: TAR@FAR 1e-6..1e-1, ROC plot, scores (eval_ijbc.py protocol)",
    "occlusion": "semantic-occlusion benchmark: score drop per face region erased in the probes, 1 or 2 models",
}


def register(sub: argparse._SubParsersAction) -> None:
    actions = group(sub, "eval", HELP)
    for name, add, run in (("verification", add_verification_args, run_verification), ("ijb", add_ijb_args, run_ijb),
                           ("occlusion", add_occlusion_args, run_occlusion)):
        command(actions, name, PROTOCOLS[name], add, run, prog=f"fse eval {name}")


def _model_args(p: argparse.ArgumentParser, second: bool = False) -> None:
    s = "2" if second else ""
    g = p.add_argument_group("second model (network and embedding size default to the first's)" if second else "model")
    if not second:
        g.add_argument("--config", help="arcface_torch config file: network, embedding_size, output/model.pt, rec, "
                                        "val_targets; its dict `fse_eval` sets defaults of these flags (dest names)")
        g.add_argument("--arcface-dir", help="arcface_torch tree for r18, r34, r50, r100 ... (default: "
                                             "$ARCFACE_TORCH_DIR, the tree holding --config, or the working directory)")
    g.add_argument(f"--network{s}", help="tiny (built-in), torchscript, or an arcface_torch name (r18, r34, r50, r100, "
                                         "vit_t ...)")
    g.add_argument(f"--weights{s}", help="checkpoint: arcface_torch's model.pt, a state_dict wrapped in state_dict/"
                                         "model/backbone, module. prefixes; or a TorchScript file")
    g.add_argument(f"--embedding-size{s}", type=int, help="embedding size (checked; default: config or 512)")
    g.add_argument(f"--name{s}", help="label in tables and charts")


def _common_args(p: argparse.ArgumentParser, batch_size: int, masks_for: str) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", default="eval_results", help="output dir (JSON, tables, plots)")
    g.add_argument("--batch-size", type=int, default=batch_size,
                   help="images per forward; on a CPU, small batches (8) cost less per image (benchmarks/README.md)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    renamed(g, "--fp16", g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                                        help="float16 autocast (CUDA only), as arcface_torch evaluates fp16 models"))
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


def _ijb_set_arg(g: argparse._ArgumentGroup) -> None:
    renamed(g, "--target", g.add_argument("--ijb-set", default="IJBC", choices=("IJBC", "IJBB"),
                                          help="which IJB benchmark (its meta/ file prefix)"))


def add_verification_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("packs")
    g.add_argument("--pack", action="append", default=[], help=".bin verification pack (repeatable)")
    g.add_argument("--data-dir", help="dir of <target>.bin packs (default: config rec)")
    g.add_argument("--targets", help="comma list of pack names in --data-dir (default: config val_targets, "
                                     "else lfw,cfp_fp,agedb_30,calfw,cplfw)")
    g.add_argument("--folds", type=int, default=10)
    g.add_argument("--image-size", type=int, nargs=2, default=(112, 112), metavar=("H", "W"))
    _model_args(p)
    _common_args(p, 64, "for --fscam")


def add_ijb_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("IJB")
    g.add_argument("--root", required=True, help="IJB-B/C root holding meta/ and loose_crop/")
    _ijb_set_arg(g)
    g.add_argument("--fars", default="1e-06,1e-05,0.0001,0.001,0.01,0.1", help="comma list of FAR points")
    _model_args(p)
    _common_args(p, 128, "for --fscam")


def add_occlusion_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("benchmark")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--pack", help=".bin verification pack (probe = second image of each pair)")
    src.add_argument("--ijb-root", help="IJB-B/C root (probe = images of the second template of each pair)")
    _ijb_set_arg(g)
    g.add_argument("--classes", help="comma list of classes erased one at a time (default: all 25)")
    g.add_argument("--groups", help='"name=cls,cls;name2=cls,..." erased together (default: eyes+brows, upper_face, '
                                    'lower_face of fse_plugin.evaluation.DEFAULT_GROUPS; "none": no group)')
    g.add_argument("--fill", default="random", help="random, random_1, random_mix, region_mean, image_mean or a "
                                                    "number in the normalised [-1, 1] space")
    g.add_argument("--seed", type=int, default=0, help="seed of the random fills (per image)")
    g.add_argument("--far", type=float, default=1e-4, help="IJB: FAR of the reported TAR")
    g.add_argument("--folds", type=int, default=10)
    _model_args(p)
    _model_args(p, second=True)
    _common_args(p, 64, "one source required")


_INTERNAL = ("config", "run", "prog", "cli_parser", "debug")
"""Namespace entries that are not flags a config may set."""


def _apply_config(args: argparse.Namespace) -> dict[str, Any] | None:
    """Load --config; its ``fse_eval`` dict fills flags left at their defaults (CLI wins)."""
    if not args.config:
        return None
    cfg = load_config(args.config)
    extra = dict(cfg.get("fse_eval") or {})
    known = sorted(k for k in vars(args) if k not in _INTERNAL)
    unknown = sorted(set(extra) - set(known))
    if unknown:
        raise FSEError(f"{args.config}: config.fse_eval has unknown keys {unknown}; known: {known}")
    for k, v in extra.items():
        if getattr(args, k) == args.cli_parser.get_default(k):
            setattr(args, k, v)
    return cfg


def _model_spec(args: argparse.Namespace, cfg: Mapping[str, Any] | None, suffix: str = "") -> dict[str, Any]:
    """network / weights / embedding size / label of model ``suffix`` ('' or '2') from flags, else config."""
    cfg = cfg or {}
    network = getattr(args, f"network{suffix}") or (args.network if suffix else None) or cfg.get("network") or "tiny"
    weights = getattr(args, f"weights{suffix}")
    if weights is None and not suffix and cfg:
        found = config_weights(cfg)
        weights = str(found) if found else None
    size = getattr(args, f"embedding_size{suffix}") or args.embedding_size or cfg.get("embedding_size")
    label = (Path(weights).parent.name if Path(weights).stem == "model" else Path(weights).stem) if weights else network
    name = getattr(args, f"name{suffix}") or label
    return {"network": network, "weights": weights, "embedding_size": size, "name": name}


def _models(args: argparse.Namespace, cfg: Mapping[str, Any] | None,
            second: bool = False) -> tuple[dict[str, nn.Module], list[dict]]:
    specs = [_model_spec(args, cfg)]
    if second and (args.weights2 or args.network2):
        specs.append(_model_spec(args, cfg, "2"))
        if specs[1]["name"] == specs[0]["name"]:
            specs[0]["name"], specs[1]["name"] = f"{specs[0]['name']}-1", f"{specs[1]['name']}-2"
    for s in specs:
        if s["weights"] is None:
            raise FSEError(f"model {s['name']!r}: no weights - pass --weights{'2' if s is not specs[0] else ''} "
                           "(or a config whose output/model.pt exists); a randomly initialised network says nothing")
    return {s["name"]: load_backbone(s["weights"], s["network"], s["embedding_size"] or 512, args.arcface_dir,
                                     config_path=args.config) for s in specs}, specs


def _pack_masks(args: argparse.Namespace, pack: str, images: np.ndarray, out: Path) -> Any:
    if args.masks:
        return open_masks(args.masks, len(images), images.shape[1:3])
    if args.mask_cache:
        return CacheMasks(args.mask_cache, len(images))
    if args.parser:
        masks = masks_from_checkpoint(args.parser, images, str(resolve_device(args.device)), args.batch_size)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / masks_path_for(pack).name, masks)
        return masks
    if masks_path_for(pack).is_file():
        return open_masks(masks_path_for(pack), len(images), images.shape[1:3])
    raise FSEError(f"{pack}: no masks: pass --masks, --mask-cache or --parser, or put "
                   f"{masks_path_for(pack).name} beside the pack")


def _ijb_masks(args: argparse.Namespace, meta: IJBMeta, rows: np.ndarray, out: Path) -> Any:
    if args.masks:
        return open_masks(args.masks, len(meta.names))
    if args.mask_cache:
        return CacheMasks(args.mask_cache, len(meta.names))
    if args.parser:
        return predict_ijb_masks(args.parser, meta, rows, out / f"{meta.target.lower()}_masks.npy", args.batch_size,
                                 args.device, not args.quiet)
    raise FSEError(f"{meta.root}: IJB masks need --masks, --mask-cache or --parser")


def _write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return path


def run_verification(args: argparse.Namespace) -> int:
    cfg = _apply_config(args)
    packs = list(args.pack)
    data_dir = args.data_dir or (cfg and cfg.get("rec") and config_file(cfg, cfg["rec"]))
    if args.targets and not data_dir:
        raise FSEError("--targets names packs in --data-dir (or the config's rec): give one")
    if data_dir and (args.targets or not packs):
        targets = args.targets.split(",") if args.targets else list((cfg or {}).get("val_targets") or PACK_NAMES)
        for t in targets:
            path = Path(data_dir) / f"{t.strip()}.bin"
            if path.is_file():
                packs.append(str(path))
            else:
                print(f"verification: {path} not found, skipped", file=sys.stderr)
    if not packs:
        raise FSEError("no verification pack: pass --pack PATH or --data-dir DIR (--targets lfw,cfp_fp,...)")
    models, specs = _models(args, cfg)
    (name, model), = models.items()
    out = Path(args.out)
    results = []
    for pack in packs:
        images, issame = load_bin(pack, tuple(args.image_size))
        result = evaluate_pack(model, (images, issame), args.batch_size, args.device, args.amp, args.folds,
                               specs[0]["embedding_size"], Path(pack).stem, not args.quiet)
        print(result)
        results.append(result)
        if args.fscam:
            masks = _pack_masks(args, pack, images, out)
            from fse_plugin.cam import fscam_pack
            report = fscam_pack(models, images, issame, masks, Path(args.fscam) / Path(pack).stem,
                                args.fscam_methods, args.fscam_pairs, args.fscam_limit, args.device, {"pack": pack},
                                not args.quiet)
            print(f"FS-CAM report: {report}")
    rows = [[r.name, r.n_pairs, f"{r.accuracy * 100:.3f}", f"{r.accuracy_std * 100:.3f}", f"{r.xnorm:.4f}",
             f"{r.val * 100:.3f}"] for r in results]
    print(format_table(rows, ["pack", "pairs", "Accuracy-Flip %", "std", "XNorm", "VAL@FAR=1e-3 %"]))
    path = _write_json(out / "verification.json", {"model": specs[0], "results": [asdict(r) for r in results]})
    print(f"results: {path}")
    return 0


def run_ijb(args: argparse.Namespace) -> int:
    cfg = _apply_config(args)
    models, specs = _models(args, cfg)
    (name, model), = models.items()
    meta = read_ijb_meta(args.root, args.ijb_set)
    out = Path(args.out)
    fars = [float(f) for f in str(args.fars).split(",") if f.strip()]
    result = evaluate_ijb(model, meta, meta.target, out, name, args.batch_size, args.device, args.amp,
                          args.num_workers, specs[0]["embedding_size"], fars, not args.quiet)
    print(result)
    path = _write_json(out / f"{meta.target.lower()}_results.json", {"model": specs[0], **asdict(result)})
    print(f"results: {path}\nscores: {result.scores_path}\nROC: {result.roc_path}")
    if args.fscam:
        from fse_plugin.cam import fscam_ijb, ijb_fscam_rows
        rows = np.concatenate(ijb_fscam_rows(meta, args.fscam_pairs, args.fscam_limit))
        masks = _ijb_masks(args, meta, rows, out)
        report = fscam_ijb(models, meta, masks, args.fscam, args.fscam_methods, args.fscam_pairs, args.fscam_limit,
                           args.device, not args.quiet)
        print(f"FS-CAM report: {report}")
    return 0


def run_occlusion(args: argparse.Namespace) -> int:
    cfg = _apply_config(args)
    models, specs = _models(args, cfg, second=True)
    regions = occlusion_regions(args.classes, args.groups)
    fill = fill_value(args.fill)
    out = Path(args.out)
    settings = OcclusionSettings(regions, fill, args.seed, args.batch_size, args.device, args.amp, args.num_workers,
                                 {s["name"]: s["embedding_size"] for s in specs}, not args.quiet)
    if args.pack:
        images, issame = load_bin(args.pack)
        masks = _pack_masks(args, args.pack, images, out)
        report = occlusion_pack(models, images, issame, masks, settings, args.folds, Path(args.pack).stem)
    else:
        meta = read_ijb_meta(args.ijb_root, args.ijb_set)
        probe_rows = meta.probe_rows()
        from fse_plugin.cam import ijb_fscam_rows
        fscam_rows = np.concatenate(ijb_fscam_rows(meta, args.fscam_pairs, args.fscam_limit)) if args.fscam else []
        masks = _ijb_masks(args, meta, np.union1d(probe_rows, fscam_rows).astype(np.int64), out)
        report = occlusion_ijb(models, meta, masks, settings, args.far)
    print(report.table())
    paths = write_occlusion_report(report, out, f"occlusion_{report.benchmark.lower()}")
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    if args.fscam:
        from fse_plugin.cam import fscam_ijb, fscam_pack
        if args.pack:
            path = fscam_pack(models, images, issame, masks, args.fscam, args.fscam_methods, args.fscam_pairs,
                              args.fscam_limit, args.device, {"pack": args.pack}, not args.quiet)
        else:
            path = fscam_ijb(models, meta, masks, args.fscam, args.fscam_methods, args.fscam_pairs, args.fscam_limit,
                             args.device, not args.quiet)
        print(f"FS-CAM report: {path}")
    return 0
