"""What a study measures on each trained model: verification accuracy on clean pairs, with parsing
regions erased in the probe, and with rendered occluders drawn on the probe.

All three use the pack's 10-fold protocol (``evaluation.evaluate_embeddings``) on the same pairs;
only the second image of each pair (the probe) changes. Erased regions come from the pack's masks
(``evaluation.occlusion_pack``: the groups eyes+brows, upper_face and lower_face, and with
``single_regions`` the mean over the 25 single classes). Occluders (``fse_plugin.occluders``) are drawn
once per pair with a seeded generator, so every model sees the same occluded probes.

Metric names: ``clean``, ``erased:<group>``, ``erased:regions_mean``, ``occluder:<kind>`` (accuracy
in %, higher is better) and ``drop:<probe>`` = clean - that probe (points lost, lower is better).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import nn

from fse_plugin.occluders import OCCLUDERS, occlude

__all__ = ["ProbeSet", "build_probes", "score_model", "add_drops", "higher_is_better", "describe"]


@dataclass
class ProbeSet:
    """The pack, its masks, the occluded probe images per kind and the erased regions, shared by all runs."""
    images: np.ndarray
    issame: np.ndarray
    masks: np.ndarray
    regions: list[tuple[str, list[int]]]
    occluded: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int = 0


def occluded_probes(images: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """The probe images (odd rows) with an occluder of ``kind`` drawn on each; pair ``i`` draws from a
    generator seeded by (seed, kind, i), so the set does not depend on which kinds are asked for."""
    code = OCCLUDERS.index(kind)
    return np.stack([occlude(img, kind, np.random.default_rng([seed, code, i]))
                     for i, img in enumerate(images[1::2])])


def build_probes(pack: str | Path, occluders: Sequence[str] = OCCLUDERS, single_regions: bool = False,
                 seed: int = 0) -> ProbeSet:
    """Load the pack and its ``.masks.npy`` and draw the occluded probes; the erased regions are the
    default groups, and with ``single_regions`` also each class alone (absent ones are skipped)."""
    from fse_plugin import evaluation
    from fse_plugin.common import load_masks, masks_path_for
    images, issame = evaluation.load_bin(pack)
    masks = load_masks(masks_path_for(pack), len(images), images.shape[1:3], mmap=False)
    groups = list(evaluation.parse_groups(None).items())
    chosen = evaluation.occlusion_regions(None, "") + groups if single_regions else groups
    return ProbeSet(images, np.asarray(issame), masks, chosen, {k: occluded_probes(images, k, seed) for k in occluders},
                    seed)


def score_model(model: nn.Module, probes: ProbeSet, device: str = "cpu", batch_size: int = 64) -> dict[str, float]:
    """Accuracy (%) of one model on every probe of the set (see the module docstring for the names)."""
    from fse_plugin.evaluation import EmbedSettings, OcclusionSettings, embed, evaluate_embeddings, occlusion_pack
    run = EmbedSettings(batch_size, device, progress=False)
    views = embed(model, probes.images, run)
    scores = {"clean": evaluate_embeddings(views, probes.issame).accuracy * 100}
    for kind, probe_images in probes.occluded.items():
        occluded = views.copy()
        occluded[:, 1::2] = embed(model, probe_images, run)
        scores[f"occluder:{kind}"] = evaluate_embeddings(occluded, probes.issame).accuracy * 100
    if probes.regions:
        settings = OcclusionSettings(probes.regions, seed=probes.seed, embed=run)
        report = occlusion_pack({"m": model}, probes.images, probes.issame, probes.masks, settings,
                                clean_views={"m": views})
        singles = [r.score["m"] for r in report.rows if len(r.classes) == 1]
        scores.update({f"erased:{r.region}": r.score["m"] for r in report.rows if len(r.classes) > 1})
        if singles:
            scores["erased:regions_mean"] = float(np.mean(singles))
    return scores


def add_drops(scores: dict[str, float]) -> dict[str, float]:
    """``scores`` plus ``drop:<probe>`` = clean - probe for every probe but clean."""
    return {**scores, **{f"drop:{k}": scores["clean"] - v for k, v in scores.items() if k != "clean"}}


def higher_is_better(metric: str) -> bool:
    return not metric.startswith("drop:")


def describe(metric: str) -> str:
    """Words for a metric name, for report sentences."""
    if metric == "clean":
        return "clean accuracy"
    drop = metric.startswith("drop:")
    kind, _, what = metric.removeprefix("drop:").partition(":")
    if what == "regions_mean":
        probe = "one region erased in the probe (mean over the regions)"
    else:
        probe = f"{what} erased in the probe" if kind == "erased" else f"{what} drawn on the probe"
    return f"accuracy lost with {probe}" if drop else f"accuracy with {probe}"
