"""explain: faces + masks -> every method's region tables, statistics, pictures and a report, for
one model or two side by side; front doors for verification pairs, ``.bin`` packs and recs.

``explain`` runs in steps: per model, the target, then per method the chunks (``explain_model``);
then the dataset statistics and comparison (``stats``); then the files (``write_outputs``).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fse_plugin.cam.data import load_pack, load_rec
from fse_plugin.cam.inputs import as_images, as_input, as_masks, picture_images
from fse_plugin.cam.methods import parse_methods, run_method
from fse_plugin.cam.pixel import GRADIENT_METHODS, PIXEL_METHODS, make_pixel_cam
from fse_plugin.cam.plots import plot_overlay_grid, plot_region_bars
from fse_plugin.cam.report import write_json, write_report, write_scores_csv, write_stats_csv
from fse_plugin.cam.stats import compare_models, dataset_stats
from fse_plugin.cam.targets import TARGETS, Target, check_target, target_factory
from fse_plugin.labels import CLASSES

__all__ = ["Settings", "ModelRun", "explain", "explain_model", "write_outputs", "explain_pairs", "explain_bin",
           "explain_rec"]

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """How the methods run: forward batch, images per chunk, overlay rows, bf16, ablation fill,
    seed, pixel-CAM layer and per-method options (``{method: {option: value}}``), progress bars."""

    batch_size: int = 260
    chunk: int = 32
    grid: int = 8
    amp: bool = False
    fill: str | float = 0.0
    seed: int = 0
    target_layer: nn.Module | str | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    progress: bool = True


@dataclass
class ModelRun:
    """One model's results: ``tables[method][kind]`` [N,25], the first ``grid`` maps per method, ms per image."""

    tables: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    grid_maps: dict[str, np.ndarray] = field(default_factory=dict)
    ms_per_image: dict[str, float] = field(default_factory=dict)


def _method_over_chunks(method: str, model: nn.Module, data: torch.Tensor, masks: torch.Tensor, target: Target,
                        cam: Any, st: Settings, desc: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One method over all images, ``st.chunk`` at a time: (tables {kind: [N,25]}, first ``st.grid`` maps)."""
    parts: dict[str, list[np.ndarray]] = {}
    kept = []
    for s in tqdm(range(0, len(data), st.chunk), desc=desc, unit="chunk", disable=not st.progress):
        xb = as_input(data[s:s + st.chunk]).float().contiguous()
        tb, maps = run_method(method, model, xb, masks[s:s + st.chunk], target.take(slice(s, s + len(xb))),
                              st.batch_size, st.amp, st.fill, st.seed, cam)
        for kind, v in tb.items():
            parts.setdefault(kind, []).append(v)
        if s < st.grid:
            kept.append(maps[:st.grid - s])
    return {k: np.concatenate(v) for k, v in parts.items()}, np.concatenate(kept)[:st.grid]


def explain_model(model: nn.Module, data: torch.Tensor, masks: torch.Tensor, target: Target, methods: Sequence[str],
                  st: Settings, name: str = "model") -> ModelRun:
    """Every method on one model; a pixel method's CAM object is made once and its hooks removed after."""
    run = ModelRun()
    for method in methods:
        cam = make_pixel_cam(method, model, st.target_layer, **st.options.get(method, {})) \
            if method in PIXEL_METHODS else None
        t0 = time.perf_counter()
        try:
            run.tables[method], run.grid_maps[method] = _method_over_chunks(method, model, data, masks, target, cam,
                                                                            st, f"{name}:{method}")
        finally:
            if cam is not None:
                cam.__exit__(None, None, None)  # removes the library's hooks from the model
        run.ms_per_image[method] = 1000 * (time.perf_counter() - t0) / len(data)
    return run


def _write_pictures(out: Path, data: torch.Tensor, masks: torch.Tensor, runs: Mapping[str, ModelRun],
                    stats: Mapping[str, Any], comparison: Mapping[str, Any], labels: Sequence[str],
                    methods: Sequence[str], ci: str, grid: int) -> dict[str, Path]:
    files: dict[str, Path] = {}
    names = list(runs)
    img_grid, mask_grid = picture_images(data[:grid]), masks[:grid].numpy()
    for name, run in runs.items():
        files[f"overlay_{name}"] = plot_overlay_grid(img_grid, mask_grid, run.grid_maps, out / f"overlay_{name}.png",
                                                     labels[:grid], title=name)
        files[f"importance_{name}"] = plot_region_bars(
            {method: {name: stats[name][method]["importance"]} for method in methods},
            out / f"importance_{name}.png", title=f"{name}: per-region importance, mean and 95% interval ({ci})")
    if comparison:
        files["compare"] = plot_region_bars(
            {method: {n: stats[n][method]["importance"] for n in names} for method in methods}, out / "compare.png",
            title=f"{names[0]} vs {names[1]}: per-region importance, mean and 95% interval ({ci})")
    return files


def write_outputs(out: Path, data: torch.Tensor, masks: torch.Tensor, runs: Mapping[str, ModelRun],
                  stats: Mapping[str, Any], comparison: Mapping[str, Any], labels: Sequence[str],
                  methods: Sequence[str], ci: str, grid: int, meta: Mapping[str, Any], fmt: str) -> dict[str, Path]:
    """Pictures, region_scores.csv, region_stats.csv, region_scores.json and the report; ``{name: path}``."""
    names = list(runs)
    tables = {name: run.tables for name, run in runs.items()}
    timing = {name: run.ms_per_image for name, run in runs.items()}
    files = _write_pictures(out, data, masks, runs, stats, comparison, labels, methods, ci, grid)
    files["region_scores_csv"] = write_scores_csv(out / "region_scores.csv", tables, labels)
    files["region_stats_csv"] = write_stats_csv(out / "region_stats.csv", stats, comparison, names)
    doc_meta = {**meta, "n_images": len(data), "methods": list(methods), "models": names, "ci": ci,
                "ms_per_image": timing, "classes": list(CLASSES)}
    files["region_scores_json"] = write_json(out / "region_scores.json", doc_meta, stats, comparison, labels, tables)
    files["report"] = write_report(out, stats, comparison, files, names, methods, ci, {**meta, "images": len(data)},
                                   timing, fmt)
    return files


def explain(models: Mapping[str, nn.Module], images: np.ndarray, masks: np.ndarray, out_dir: str | os.PathLike,
            make_target: Callable[[nn.Module, torch.Tensor], Target], methods: Sequence[str] = ("fscam",),
            device: str = "cpu", batch_size: int = 260, chunk: int = 32, grid: int = 8, ci: str = "bootstrap",
            seed: int = 0, report: str = "md", target_layer: nn.Module | str | None = None,
            options: Mapping[str, Mapping[str, Any]] | None = None, fill: str | float = 0.0, amp: bool = False,
            row_labels: Sequence[str] | None = None, meta: Mapping[str, Any] | None = None,
            progress: bool = True) -> dict[str, Any]:
    """Explain ``images`` (uint8 [N,H,W,3]) with ``masks`` [N,H,W] under each model and method.

    ``make_target(model, images)`` builds the target of every image for a model (images as given:
    uint8 NHWC or normalised float NCHW; normalised chunk by chunk, so a whole pack fits in memory).
    Writes to ``out_dir``: overlay_<model>.png, importance_<model>.png, compare.png (two models),
    region_scores.csv (per image), region_stats.csv, region_scores.json, report.md|html.
    Returns ``{"tables": {model: {method: {kind: [N,25]}}}, "stats": {model: {method: {kind: stats}}},
    "comparison": {method: {kind: stats}} (second model minus first), "files": {name: Path}, "report": Path,
    "ms_per_image": {model: {method: ms}}}``.
    """
    methods = parse_methods(methods)
    data = as_images(images)
    if not len(data):
        raise ValueError("nothing to explain: no images")
    m = as_masks(masks, (len(data), *as_input(data[:1]).shape[2:]))
    st = Settings(batch_size=batch_size, chunk=chunk, grid=min(grid, len(data)), amp=amp, fill=fill, seed=seed,
                  target_layer=target_layer, options={k: dict(v) for k, v in (options or {}).items()},
                  progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name, model in models.items():
        model = model.to(device).eval()
        target = make_target(model, data)
        check_target(target, len(data))
        runs[name] = explain_model(model, data, m, target, methods, st, name)
    tables = {name: run.tables for name, run in runs.items()}
    stats, comparison = dataset_stats(tables, ci, seed), compare_models(tables, list(models), ci, seed)
    labels = list(row_labels) if row_labels is not None else [f"image {i}" for i in range(len(data))]
    files = write_outputs(out, data, m, runs, stats, comparison, labels, methods, ci, st.grid, meta or {}, report)
    return {"tables": tables, "stats": stats, "comparison": comparison, "files": files, "report": files["report"],
            "ms_per_image": {name: run.ms_per_image for name, run in runs.items()}}


# ------------------------------------------------------------------------------------------ front doors

def _models(model: nn.Module, model2: nn.Module | None, names: Sequence[str]) -> dict[str, nn.Module]:
    if model2 is None:
        return {names[0]: model}
    if names[0] == names[1]:
        raise ValueError(f"the two models need different names, got {names[0]!r} twice")
    return {names[0]: model, names[1]: model2}


def _warn_self_gradients(target: str, methods: Sequence[str]) -> None:
    """Cosine to the image's own embedding is at its maximum on the clean image: its gradient is 0."""
    grads = [m for m in parse_methods(methods) if m in GRADIENT_METHODS]
    if target == "self" and grads:
        log.warning("target 'self' has zero gradient at the clean image: %s maps are noise; use 'pair' or "
                    "'identity' for gradient CAMs", ", ".join(grads))


def _target_meta(target: str, meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """The target kind and, in words, what it scores (a caller's ``target_description`` wins)."""
    return {"target": target, "target_description": TARGETS.get(target, target), **(meta or {})}


def explain_pairs(model: nn.Module, images1: np.ndarray, images2: np.ndarray, masks1: np.ndarray,
                  masks2: np.ndarray, out_dir: str | os.PathLike, methods: Sequence[str] = ("fscam",),
                  model2: nn.Module | None = None, device: str = "cpu", batch_size: int = 260,
                  names: tuple[str, str] = ("model", "model2"), target: str = "pair", **kwargs: Any) -> dict[str, Any]:
    """Explain verification pairs (the eval scripts' "FS-CAM option").

    ``images1/images2``: uint8 [P,H,W,3] (as ``evaluation.load_bin`` gives them, split into the two
    sides) or normalised float [P,3,H,W]; ``masks1/masks2``: [P,H,W] label maps. Each image is
    explained against the clean embedding of the other image of its pair (``target='pair'``), or
    its own (``'self'``), or the argmax class of a classifier (``'class'``: pass the model with its
    head, ``classifier.IdentityLogits``). ``model2`` (e.g. the FSErasing-trained model) is explained
    on the same images and compared. Other keyword arguments go to ``explain`` (grid, ci, seed,
    report, target_layer, options, fill, amp, chunk, progress, meta). Images are ordered all first
    sides, then all second sides. Returns ``explain``'s dict.
    """
    if not (len(images1) == len(images2) == len(masks1) == len(masks2)):
        raise ValueError(f"pair sides differ in length: {len(images1)}, {len(images2)} images, "
                         f"{len(masks1)}, {len(masks2)} masks")
    p = len(images1)
    make_target = target_factory(target, ("pair", "self", "class"), batch_size=batch_size,
                                 amp=kwargs.get("amp", False))
    _warn_self_gradients(target, methods)
    images = np.concatenate([picture_images(images1), picture_images(images2)])
    masks = np.concatenate([np.asarray(masks1), np.asarray(masks2)])
    kwargs.setdefault("row_labels", [f"pair {i} {side}" for side in "ab" for i in range(p)])
    kwargs["meta"] = _target_meta(target, kwargs.get("meta"))
    return explain(_models(model, model2, names), images, masks, out_dir, make_target, methods, device=device,
                   batch_size=batch_size, **kwargs)


def explain_bin(model: nn.Module, bin_path: str | os.PathLike, out_dir: str | os.PathLike,
                masks: str | os.PathLike | None = None, parser: str | os.PathLike | None = None,
                pairs: str = "same", limit: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """``explain_pairs`` on (the first ``limit`` ``pairs`` of) a .bin pack; masks as in ``data.load_pack``."""
    images, _, m, source, sel = load_pack(bin_path, masks, parser, pairs, limit, kwargs.get("device", "cpu"))
    kwargs["meta"] = {"pack": str(bin_path), "masks": source, "pairs": f"{len(sel)} {pairs}", **kwargs.get("meta", {})}
    kwargs.setdefault("row_labels", [f"pair {i} {side}" for side in "ab" for i in sel])
    return explain_pairs(model, images[0::2], images[1::2], m[0::2], m[1::2], out_dir, **kwargs)


def explain_rec(model: nn.Module, rec: str | os.PathLike, out_dir: str | os.PathLike, limit: int | None = 256,
                mask_cache: str | os.PathLike | None = None, parser: str | os.PathLike | None = None,
                model2: nn.Module | None = None, names: tuple[str, str] = ("model", "model2"),
                target: str = "identity", methods: Sequence[str] = ("fscam",), device: str = "cpu",
                batch_size: int = 260, **kwargs: Any) -> dict[str, Any]:
    """Explain training images of a rec: each image against its identity centroid (``'identity'``,
    the mean embedding of the other loaded images of the same label), its own embedding (``'self'``),
    or a classifier's argmax (``'class'``: the model with its head, ``classifier.IdentityLogits``)."""
    images, masks, labels, keys, source = load_rec(rec, limit, mask_cache, parser, device)
    make_target = target_factory(target, ("identity", "self", "class"), labels, batch_size, kwargs.get("amp", False))
    _warn_self_gradients(target, methods)
    kwargs.setdefault("row_labels", [f"key {k} id {lab}" for k, lab in zip(keys, labels)])
    kwargs["meta"] = _target_meta(target, {"rec": str(rec), "masks": source, **kwargs.get("meta", {})})
    return explain(_models(model, model2, names), images, masks, out_dir, make_target, methods, device=device,
                   batch_size=batch_size, **kwargs)
