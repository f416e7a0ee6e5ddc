"""explain: faces + masks -> every method's region values, statistics, pictures and a report, for
one model or two side by side; front doors for verification pairs, ``.bin`` packs and recs.

``explain`` runs in steps: per model, the target, then per method its steps of images
(``explain_model``); then the comparison of two models; then the files (``report.write_outputs``).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fse_plugin.cam.inputs import as_images, as_input, as_masks, picture_images
from fse_plugin.cam.methods import run_method
from fse_plugin.cam.names import (GRADIENT_METHODS, PAIR_TARGETS, PIXEL_METHODS, REC_TARGETS,
                                  check_model_name)
from fse_plugin.cam.pixel import make_pixel_cam
from fse_plugin.cam.report import clear_results, write_outputs
from fse_plugin.cam.results import Explanation, MethodResult, MethodStats, RegionValues
from fse_plugin.cam.settings import ExplainSettings
from fse_plugin.cam.sources import load_pack, load_rec
from fse_plugin.cam.targets import TARGETS, Target, check_target, target_factory
from fse_plugin.common import FSEError

__all__ = ["explain", "explain_model", "explain_pairs", "explain_bin", "explain_rec"]

log = logging.getLogger(__name__)

Models = nn.Module | Mapping[str, nn.Module]
"""One model (named 'model') or several by name (two are compared: second minus first)."""


def _method_over_steps(method: str, model: nn.Module, data: torch.Tensor, masks: torch.Tensor,
                       target: Target, cam: Any, st: ExplainSettings,
                       desc: str) -> tuple[RegionValues, np.ndarray]:
    """One method over all images, ``st.images_per_step`` at a time: (values [N,25], first
    ``st.grid`` maps)."""
    parts, kept = [], []
    step = st.images_per_step
    for s in tqdm(range(0, len(data), step), desc=desc, unit="step", disable=not st.progress):
        xb = as_input(data[s:s + step]).float().contiguous()
        values, maps = run_method(method, model, xb, masks[s:s + step],
                                  target.take(slice(s, s + len(xb))), st, cam)
        parts.append(values)
        if s < st.grid:
            kept.append(maps[:st.grid - s])
    return RegionValues.concat(parts), np.concatenate(kept)[:st.grid]


def explain_model(model: nn.Module, data: torch.Tensor, masks: torch.Tensor, target: Target,
                  st: ExplainSettings, name: str = "model") -> dict[str, MethodResult]:
    """Every method of ``st`` on one model; a pixel method's CAM object is made once and its hooks
    removed after."""
    results = {}
    for method in st.methods:
        cam = make_pixel_cam(method, model, st.target_layer, **st.options.get(method, {})) \
            if method in PIXEL_METHODS else None
        t0 = time.perf_counter()
        try:
            values, maps = _method_over_steps(method, model, data, masks, target, cam, st,
                                              f"{name}:{method}")
        finally:
            if cam is not None:
                cam.__exit__(None, None, None)  # removes the library's hooks from the model
        ms = 1000 * (time.perf_counter() - t0) / len(data)
        results[method] = MethodResult(values, MethodStats.of(values, st.ci, st.seed), maps, ms)
    return results


def _compare(results: Mapping[str, Mapping[str, MethodResult]],
             st: ExplainSettings) -> dict[str, MethodStats]:
    """Second model minus first, per method (``{}`` unless exactly two models)."""
    if len(results) != 2:
        return {}
    a, b = results.values()
    return {method: MethodStats.difference(a[method].values, b[method].values, st.ci, st.seed)
            for method in a}


def explain(models: Models, images: np.ndarray, masks: np.ndarray, out_dir: str | os.PathLike,
            make_target: Callable[[nn.Module, torch.Tensor], Target],
            settings: ExplainSettings | None = None,
            row_labels: Sequence[str] | None = None) -> Explanation:
    """Explain ``images`` (uint8 [N,H,W,3]) with ``masks`` [N,H,W] under each model and method of
    ``settings``.

    ``make_target(model, images)`` builds the target of every image for a model (images as given:
    uint8 NHWC or normalised float NCHW; normalised step by step, so a whole pack fits in memory).
    Writes to ``out_dir``: overlay_<model>.png, importance_<model>.png, compare.png (two models),
    region_scores.csv (per image), region_stats.csv, region_scores.json, report.md|html (last).
    """
    models = _named(models)
    data = as_images(images)
    if not len(data):
        raise FSEError("nothing to explain: no images")
    m = as_masks(masks, (len(data), *as_input(data[:1]).shape[2:]))
    labels = (list(row_labels) if row_labels is not None
              else [f"image {i}" for i in range(len(data))])
    if len(labels) != len(data):
        raise FSEError(f"{len(labels)} row labels for {len(data)} images")
    st = settings or ExplainSettings()
    st = replace(st, grid=min(st.grid, len(data)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clear_results(out)
    results = {}
    for name, model in models.items():
        model = model.to(st.device).eval()
        target = make_target(model, data)
        check_target(target, len(data))
        results[name] = explain_model(model, data, m, target, st, name)
    comparison = _compare(results, st)
    files = write_outputs(out, picture_images(data[:st.grid]), m[:st.grid].numpy(), labels, results,
                          comparison, st)
    return Explanation(results, comparison, files)


# -------------------------------------------------------------------------------------- front doors

def _named(models: Models) -> dict[str, nn.Module]:
    named = {"model": models} if isinstance(models, nn.Module) else dict(models)
    if not named:
        raise FSEError("no model to explain")
    for name in named:
        check_model_name(name)
    return named


def _target_settings(st: ExplainSettings | None, default: str,
                     meta: Mapping[str, Any]) -> ExplainSettings:
    """Settings with the target kind (``default`` unless chosen) and the report's meta: the target,
    in words, then ``meta`` (the data), then the caller's (a caller's ``target_description``
    wins)."""
    st = st or ExplainSettings()
    kind = st.target or default
    grads = [m for m in st.methods if m in GRADIENT_METHODS]
    if kind == "self" and grads:
        # the cosine to the image's own embedding is maximal there: gradient 0
        log.warning("target 'self' has zero gradient at the clean image: %s maps are noise; use "
                    "'pair' or 'identity' for gradient CAMs", ", ".join(grads))
    return replace(st, target=kind,
                   meta={"target": kind, "target_description": TARGETS[kind], **meta, **st.meta})


def explain_pairs(models: Models, images1: np.ndarray, images2: np.ndarray, masks1: np.ndarray,
                  masks2: np.ndarray, out_dir: str | os.PathLike,
                  settings: ExplainSettings | None = None,
                  row_labels: Sequence[str] | None = None) -> Explanation:
    """Explain verification pairs (the eval scripts' "FS-CAM option").

    ``images1/images2``: uint8 [P,H,W,3] (as ``evaluation.load_bin`` gives them, split into the two
    sides) or normalised float [P,3,H,W]; ``masks1/masks2``: [P,H,W] label maps. Each image is
    explained against the clean embedding of the other image of its pair (target 'pair', the
    default), or its own ('self'), or the argmax class of a classifier ('class': pass the model with
    its head, ``classifier.IdentityLogits``). A second model (e.g. the FSErasing-trained one) is
    explained on the same images and compared. Images are ordered all first sides, then all second
    sides (``row_labels`` default: ``pair i a``, ..., ``pair i b``).
    """
    if not (len(images1) == len(images2) == len(masks1) == len(masks2)):
        raise FSEError(f"pair sides differ in length: {len(images1)}, {len(images2)} images, "
                       f"{len(masks1)}, {len(masks2)} masks")
    st = _target_settings(settings, PAIR_TARGETS[0], {})
    make_target = target_factory(st.target, PAIR_TARGETS, batch_size=st.batch_size,
                                 precision=st.precision)
    images = np.concatenate([picture_images(images1), picture_images(images2)])
    masks = np.concatenate([np.asarray(masks1), np.asarray(masks2)])
    labels = row_labels or [f"pair {i} {side}" for side in "ab" for i in range(len(images1))]
    return explain(models, images, masks, out_dir, make_target, st, labels)


def explain_bin(models: Models, bin_path: str | os.PathLike, out_dir: str | os.PathLike,
                settings: ExplainSettings | None = None, masks: str | os.PathLike | None = None,
                parser: str | os.PathLike | None = None, pairs: str = "same",
                limit: int | None = None) -> Explanation:
    """``explain_pairs`` on (the first ``limit`` ``pairs`` of) a .bin pack; masks as in
    ``sources.load_pack``."""
    st = settings or ExplainSettings()
    pack = load_pack(bin_path, masks, parser, pairs, limit, st.device)
    st = replace(st, meta={"pack": str(bin_path), "masks": pack.masks_source,
                           "pairs": f"{len(pack.pairs)} {pairs}", **st.meta})
    labels = [f"pair {i} {side}" for side in "ab" for i in pack.pairs]
    return explain_pairs(models, pack.images[0::2], pack.images[1::2], pack.masks[0::2],
                         pack.masks[1::2], out_dir, st, labels)


def explain_rec(models: Models, rec: str | os.PathLike, out_dir: str | os.PathLike,
                settings: ExplainSettings | None = None, limit: int | None = 256,
                mask_cache: str | os.PathLike | None = None,
                parser: str | os.PathLike | None = None) -> Explanation:
    """Explain training images of a rec: each image against its identity centroid (target
    'identity', the default: the mean embedding of the other loaded images of the same label), its
    own embedding ('self'), or a classifier's argmax ('class': the model with its head,
    ``classifier.IdentityLogits``)."""
    st = settings or ExplainSettings()
    faces = load_rec(rec, limit, mask_cache, parser, st.device)
    st = _target_settings(st, REC_TARGETS[0], {"rec": str(rec), "masks": faces.masks_source})
    make_target = target_factory(st.target, REC_TARGETS, faces.labels, st.batch_size, st.precision)
    labels = [f"key {k} id {lab}" for k, lab in zip(faces.keys, faces.labels)]
    return explain(models, faces.images, faces.masks, out_dir, make_target, st, labels)
