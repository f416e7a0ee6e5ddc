"""What a study measures on each trained model: verification accuracy on clean pairs, with parsing
regions erased in the probe, and with rendered occluders drawn on the probe.

All use the pack's 10-fold protocol (``evaluation.fold_accuracy``) on the same pairs; only the
second image of each pair (the probe) changes. Erased regions come from the pack's masks, erased as
the occlusion benchmark erases them (``evaluation.RegionErasing``, seeded per image; a probe without
the region keeps its clean embedding): the groups eyes+brows, upper_face and lower_face, and with
``single_regions`` each of the 25 classes alone (their mean accuracy). Occluders
(``fse_plugin.occluders``) are drawn once per pair with a seeded generator, so every model sees the
same occluded probes.

A model's result is its squared distance per pair and probe (``probe_distances``), kept so that the
study can resample the pairs (its own noise); ``scores`` turns distances into metrics:
``clean``, ``erased:<group>``, ``erased:regions_mean``, ``occluder:<kind>`` (accuracy in %, higher
is better) and ``drop:<probe>`` = clean - that probe (points lost, lower is better).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
from torch import nn

from fse_plugin.common import FSEError
from fse_plugin.evaluation.regions import DEFAULT_GROUPS
from fse_plugin.occluders import OCCLUDERS, check_kind, occlude
from fse_plugin.study.presets import PROBES

if TYPE_CHECKING:
    from fse_plugin.evaluation import EmbedSettings

__all__ = ["PROBES", "ProbeSet", "build_probes", "check_probes", "probe_distances", "scores",
           "higher_is_better", "describe"]

_SINGLE = "region:"
"""Distance keys of the single erased regions (averaged into ``erased:regions_mean``)."""
CPU_BATCH, GPU_BATCH = 16, 128
"""Images per embedding batch: on a CPU small batches cost less per image (their activations stay in
cache; benchmarks/README.md), on a GPU large ones."""


@dataclass
class ProbeSet:
    """The pack, its masks, the occluded probe images per kind and the erased regions, shared by all
    runs."""
    images: np.ndarray
    issame: np.ndarray
    masks: np.ndarray
    groups: list[tuple[str, list[int]]]
    singles: list[tuple[str, list[int]]] = field(default_factory=list)
    occluded: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int = 0


def _probe(probe: str, name: str) -> str:
    if probe in DEFAULT_GROUPS:
        return probe
    try:
        return check_kind(probe, name)
    except FSEError:
        raise FSEError(f"{name}: unknown probe {probe!r}; choose from "
                       f"{', '.join(PROBES)}") from None


def check_probes(probes: Sequence[str], name: str = "--probes") -> list[str]:
    """The probe names, each an occluder kind (earlier spellings accepted, with a note) or an erased
    group."""
    chosen = [_probe(p, name) for p in probes]
    repeated = sorted({p for p in chosen if chosen.count(p) > 1})
    if repeated:
        raise FSEError(f"{name}: {', '.join(repeated)} given more than once")
    return chosen


def occluded_probes(images: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """The probe images (odd rows) with an occluder of ``kind`` drawn on each; pair ``i`` draws from
    a generator seeded by (seed, kind, i), so the set does not depend on which kinds are asked
    for."""
    code = OCCLUDERS.index(kind)
    return np.stack([occlude(img, kind, np.random.default_rng([seed, code, i]))
                     for i, img in enumerate(images[1::2])])


def build_probes(images: np.ndarray, issame: np.ndarray, masks: np.ndarray,
                 probes: Sequence[str] = PROBES, single_regions: bool = False,
                 seed: int = 0) -> ProbeSet:
    """Draw the occluded probes of a pack (images, issame, masks) and list the erased groups of
    ``probes``, and with ``single_regions`` each class alone."""
    from fse_plugin.evaluation import occlusion_regions, parse_groups
    chosen = check_probes(probes)
    groups = [(g, ids) for g, ids in parse_groups(None).items() if g in chosen]
    singles = occlusion_regions(None, "") if single_regions else []
    occluded = {k: occluded_probes(images, k, seed) for k in OCCLUDERS if k in chosen}
    return ProbeSet(images, np.asarray(issame), masks, groups, singles, occluded, seed)


def _erased_probe_embeddings(model: nn.Module, probes: ProbeSet, ids: list[int], clean: np.ndarray,
                             run: EmbedSettings) -> np.ndarray | None:
    """The fused probe embeddings with ``ids`` erased (clean where the probe lacks them); None if no
    probe has them."""
    from fse_plugin.evaluation import RegionErasing, embed, fuse_views
    from fse_plugin.evaluation.embed import FaceImages
    positions = np.flatnonzero(np.isin(probes.masks[1::2], ids).any((1, 2)))
    if not len(positions):
        return None
    erased = FaceImages(probes.images, probes.masks, RegionErasing(ids, "random", probes.seed),
                        keys=2 * positions + 1)
    out = clean[1::2].copy()
    out[positions] = fuse_views(embed(model, erased, run))
    return out


def probe_distances(model: nn.Module, probes: ProbeSet, device: str = "cpu",
                    batch_size: int | None = None) -> dict[str, np.ndarray]:
    """Squared distance of every pair of the pack for one model: ``clean``, ``occluder:<kind>``,
    ``erased:<group>`` and ``region:<class>`` (each image embedded with its flip; ``batch_size`` by
    default ``CPU_BATCH`` or ``GPU_BATCH``)."""
    from fse_plugin.evaluation import EmbedSettings, embed, fuse_views
    from fse_plugin.evaluation.verification import squared_distances
    batch_size = batch_size or (CPU_BATCH if str(device).startswith("cpu") else GPU_BATCH)
    run = EmbedSettings(batch_size, device, progress=False)
    emb = fuse_views(embed(model, probes.images, run))
    dist = {"clean": squared_distances(emb[0::2], emb[1::2])}
    for kind, images in probes.occluded.items():
        dist[f"occluder:{kind}"] = squared_distances(emb[0::2],
                                                     fuse_views(embed(model, images, run)))
    for prefix, regions in (("erased:", probes.groups), (_SINGLE, probes.singles)):
        for region, ids in regions:
            erased = _erased_probe_embeddings(model, probes, ids, emb, run)
            if erased is not None:
                dist[prefix + region] = squared_distances(emb[0::2], erased)
    return dist


def accuracy(dist: np.ndarray, issame: np.ndarray) -> float:
    """10-fold verification accuracy (%) of the pairs' squared distances."""
    from fse_plugin.evaluation.verification import fold_accuracy
    return float(np.mean(fold_accuracy(dist, issame)[0])) * 100


def scores(distances: dict[str, np.ndarray], issame: np.ndarray) -> dict[str, float]:
    """Every metric of one model from its distances (see the module docstring for the names)."""
    acc = {k: accuracy(d, issame) for k, d in distances.items() if not k.startswith(_SINGLE)}
    singles = [accuracy(d, issame) for k, d in distances.items() if k.startswith(_SINGLE)]
    if singles:
        acc["erased:regions_mean"] = float(np.mean(singles))
    return {**acc, **{f"drop:{k}": acc["clean"] - v for k, v in acc.items() if k != "clean"}}


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
