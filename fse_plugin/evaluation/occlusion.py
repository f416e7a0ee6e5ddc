"""Semantic-occlusion benchmark: erase one face region (or a group of regions) in every probe image
and measure the drop of the verification score, for one or two models side by side.

The probe is the second image of each pack pair, or every image of the second template of each IJB
pair; the other side stays clean. Each clean image is embedded once per model. The erased probes of
all regions are built once (shared by the models) and embedded in batches, region after region, so
at most one region's embeddings are held; a probe without the region is not erased (its embedding is
the clean one, exactly). IJB probe images are read and aligned once for all regions.
Erasing happens in normalised [-1, 1] space, where FSErasing erases in training, seeded per image so
that every model, batch size and worker count sees the same erased probes.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fse_plugin import labels
from fse_plugin.common import FSEError, checks, to_input
from fse_plugin.erasing import check_fill, erase
from fse_plugin.evaluation.embed import (EmbedSettings, batch_loader, embed, embed_batch,
                                         fuse_views, given_settings)
from fse_plugin.evaluation.ijb import (IJBFaces, IJBMeta, ijb_image_features, image_features,
                                       pair_scores, tar_at_far, template_features)
from fse_plugin.evaluation.occlusion_report import OcclusionReport, OcclusionRow
from fse_plugin.evaluation.regions import occlusion_fill, occlusion_regions
from fse_plugin.evaluation.verification import fold_accuracy, squared_distances

__all__ = ["OcclusionSettings", "RegionErasing", "occlusion_ijb", "occlusion_pack"]

_IN_MEMORY = 2 << 30
"""Aligned IJB probe images up to this many bytes are held in memory; more go to a temporary
file."""


@dataclass(frozen=True)
class OcclusionSettings:
    """How the benchmark erases and embeds. ``regions``: (name, class ids) erased in turn (default:
    each of the 25 classes, then ``DEFAULT_GROUPS``); ``fill`` and ``seed`` as ``RegionErasing``;
    ``embed``: how every model runs (batch, device, precision, workers, progress; its
    ``embedding_size`` checked for every model); ``embedding_sizes``: the size a model must give, by
    model name, where it differs from ``embed.embedding_size``.

    ``OcclusionSettings(seed=1, embed=EmbedSettings(batch_size=8))``"""
    regions: Sequence[tuple[str, list[int]]] = field(default_factory=lambda: occlusion_regions())
    fill: Any = "random"
    seed: int = 0
    embed: EmbedSettings = field(default_factory=EmbedSettings)
    embedding_sizes: Mapping[str, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not self.regions:
            raise FSEError(f"{name}.regions: nothing to erase; name classes or groups")
        for i, region in enumerate(self.regions):
            try:
                _, ids = region
                labels.class_ids(ids)
            except (TypeError, ValueError, KeyError) as e:
                raise FSEError(f"{name}.regions[{i}]: expected (name, class ids) as occlusion_regions gives them; "
                               f"{e.args[0] if e.args else e}") from None
        occlusion_fill(self.fill, f"{name}.fill")
        checks.count(self.seed, f"{name}.seed", minimum=0)
        if not isinstance(self.embed, EmbedSettings):
            raise FSEError(f"{name}.embed: expected EmbedSettings(...), got {self.embed!r}")
        if not isinstance(self.embedding_sizes, Mapping):
            raise FSEError(f"{name}.embedding_sizes: expected a dict model name -> size, got "
                           f"{self.embedding_sizes!r}")
        for model, size in self.embedding_sizes.items():
            if size is not None:
                checks.count(size, f"{name}.embedding_sizes[{model!r}]")
        object.__setattr__(self, "embedding_sizes", dict(self.embedding_sizes))

    def embed_settings(self, model: str) -> EmbedSettings:
        """``embed`` with the embedding size model ``model`` must give."""
        return replace(self.embed,
                       embedding_size=self.embedding_sizes.get(model, self.embed.embedding_size))


class RegionErasing:
    """Erase fixed classes of a normalised image, seeded per image key so that every model, batch
    size and worker count sees the same erased probes (``erasing.erase`` does the pixels)."""

    def __init__(self, class_ids: Sequence[int], fill: Any = "random", seed: int = 0) -> None:
        self.class_ids = labels.class_ids(class_ids)
        self.fill = check_fill(fill)
        self.seed = int(seed)

    def __call__(self, img: torch.Tensor, mask: np.ndarray | None, key: int) -> torch.Tensor:
        if mask is None:
            raise FSEError(f"image {key}: no mask to erase {self!r} with")
        seed = int(np.random.SeedSequence([self.seed, int(key)]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        return erase(img, torch.from_numpy(np.array(mask, dtype=np.uint8)), self.class_ids,
                     self.fill, generator)

    def __repr__(self) -> str:
        names = ",".join(labels.class_name(c) for c in self.class_ids)
        return f"{type(self).__name__}(classes=[{names}], fill={self.fill!r}, seed={self.seed})"


@dataclass
class _Region:
    """A region to erase and the probe positions whose masks contain it."""
    name: str
    ids: list[int]
    positions: np.ndarray


def _plan(regions: Sequence[tuple[str, list[int]]], masks: Any,
          keys: np.ndarray) -> tuple[list[_Region], list[str]]:
    """(regions present in some probe, names of those absent from every probe)."""
    presence = np.zeros((len(keys), labels.NUM_CLASSES), dtype=bool)
    for i, k in enumerate(keys):
        mask = masks[int(k)]
        if mask is None:
            raise FSEError(f"image {k}: no mask in the mask source")
        presence[i] = np.bincount(np.asarray(mask).ravel(), minlength=256)[:labels.NUM_CLASSES] > 0
    present = [_Region(name, ids, np.flatnonzero(presence[:, ids].any(1))) for name, ids in regions]
    return ([r for r in present if len(r.positions)],
            [r.name for r in present if not len(r.positions)])


class ErasedProbes(Dataset):
    """Every (region, probe) item, region after region: the normalised probe with the region erased.

    ``images[p]`` is the uint8 probe at position p, ``keys[p]`` its image key (its mask
    ``masks[key]`` and the seed of its random fill)."""

    def __init__(self, images: Any, keys: np.ndarray, masks: Any, regions: Sequence[_Region],
                 fill: Any, seed: int) -> None:
        self.images, self.keys, self.masks = images, keys, masks
        self.erasers = [RegionErasing(r.ids, fill, seed) for r in regions]
        self.items = np.concatenate([np.stack([np.full(len(r.positions), i), r.positions], 1)
                                     for i, r in enumerate(regions)]).astype(np.int64)
        self.ends = np.cumsum([len(r.positions) for r in regions])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        r, p = self.items[index]
        key = int(self.keys[p])
        return (self.erasers[r](to_input(np.ascontiguousarray(self.images[p])),
                                self.masks[key], key), index)

    def batches(self, batch_size: int) -> list[range]:
        """Item ranges of at most ``batch_size``, none spanning two regions: a batch's images then
        cost what they cost alone (CPU convolutions get slower per image in larger batches), and
        each region completes on its own batch boundary."""
        starts = np.r_[0, self.ends[:-1]]
        return [range(s, min(s + batch_size, end))
                for start, end in zip(starts.tolist(), self.ends.tolist())
                for s in range(start, end, batch_size)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.erasers)} regions, {len(self)} erased probes)"


@torch.no_grad()
def _erased_views(models: Mapping[str, nn.Module], dataset: ErasedProbes,
                  settings: OcclusionSettings) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(region index, {model: float32 [2, n, D] views of the region's erased probes}), as each
    region completes. Each batch is erased once and embedded by every model."""
    s = settings.embed
    sizes = {m: settings.embed_settings(m).embedding_size for m in models}
    for model in models.values():
        model.to(s.device).eval()
    loader = DataLoader(dataset, batch_sampler=dataset.batches(s.batch_size),
                        num_workers=s.num_workers, pin_memory=s.device.type == "cuda")
    parts: dict[str, list[np.ndarray]] = {m: [] for m in models}
    for x, index in tqdm(loader, desc="occlusion", unit="batch", disable=not s.progress,
                         leave=False):
        x = x.to(s.device, non_blocking=True)
        for m, model in models.items():
            parts[m].append(embed_batch(model, x, True, s.precision, sizes[m]))
        region = int(dataset.items[int(index[0]), 0])
        if int(index[-1]) + 1 == dataset.ends[region]:
            yield region, {m: np.concatenate(v, 1) for m, v in parts.items()}
            parts = {m: [] for m in models}


def _occlusion_rows(models: Mapping[str, nn.Module], dataset: ErasedProbes,
                    regions: Sequence[_Region], clean: Mapping[str, float],
                    score: Callable[[str, _Region, np.ndarray], float],
                    settings: OcclusionSettings) -> list[OcclusionRow]:
    rows = []
    for r, views in _erased_views(models, dataset, settings):
        region = regions[r]
        scores = {m: score(m, region, views[m]) for m in models}
        rows.append(OcclusionRow(region.name, [labels.class_name(c) for c in region.ids],
                                 len(region.positions), scores,
                                 {m: clean[m] - scores[m] for m in models}))
    return rows


def occlusion_pack(models: Mapping[str, nn.Module], images: np.ndarray, issame: np.ndarray,
                   masks: Any, settings: OcclusionSettings | None = None, folds: int = 10,
                   name: str = "pack",
                   clean_views: Mapping[str, np.ndarray] | None = None) -> OcclusionReport:
    """Accuracy (``folds``-fold protocol, %) with each region erased in the probe (second) image of
    every pair.

    ``clean_views``: per model name, what ``embed`` (with flips, this batch size and device) already
    gave for ``images``, so they are not embedded again.
    """
    s = given_settings(settings, OcclusionSettings)
    checks.count(folds, "folds", minimum=2)
    keys = np.arange(1, len(images), 2)
    present, skipped = _plan(s.regions, masks, keys)
    clean_views = clean_views or {}
    emb = {m: fuse_views(clean_views[m] if m in clean_views
                         else embed(model, images, s.embed_settings(m), desc=f"{m} clean"))
           for m, model in models.items()}

    def accuracy(m: str, probes: np.ndarray) -> float:
        return float(np.mean(fold_accuracy(squared_distances(emb[m][0::2], probes), issame, folds)[0])) * 100

    def score(m: str, region: _Region, views: np.ndarray) -> float:
        probes = emb[m][1::2].copy()
        probes[region.positions] = fuse_views(views)
        return accuracy(m, probes)

    clean = {m: accuracy(m, emb[m][1::2]) for m in models}
    rows = []
    if present:
        dataset = ErasedProbes(images[1::2], keys, masks, present, s.fill, s.seed)
        rows = _occlusion_rows(models, dataset, present, clean, score, s)
    return OcclusionReport(name, "accuracy (%)", list(models), clean, rows, skipped, s.fill, s.seed,
                           len(keys))


class _Uint8Faces(Dataset):
    """The aligned uint8 images of an ``IJBFaces`` (no normalisation)."""

    def __init__(self, faces: IJBFaces) -> None:
        self.faces = faces

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.faces.image(int(self.faces.keys[index]))), index


def _aligned(meta: IJBMeta, rows: np.ndarray, settings: EmbedSettings) -> np.ndarray:
    """uint8 [len(rows), 112, 112, 3]: the aligned images of ``rows``, read once for every
    region."""
    shape = (len(rows), 112, 112, 3)
    out = (np.empty(shape, np.uint8) if np.prod(shape) <= _IN_MEMORY
           else np.memmap(tempfile.TemporaryFile(), np.uint8, "w+", shape=shape))
    faces = IJBFaces(meta, rows)
    loader = batch_loader(_Uint8Faces(faces), settings.batch_size, torch.device("cpu"),
                          settings.num_workers)
    for imgs, index in tqdm(loader, desc="align probes", unit="batch",
                            disable=not settings.progress, leave=False):
        out[index.numpy()] = imgs.numpy()
    return out


def occlusion_ijb(models: Mapping[str, nn.Module], meta: IJBMeta, masks: Any,
                  settings: OcclusionSettings | None = None, far: float = 1e-4,
                  clean_features: Mapping[str, np.ndarray] | None = None) -> OcclusionReport:
    """TAR@FAR (%) with each region erased in every image of the probe templates (the second
    template of each pair); reference templates stay clean, so a pair scores clean t1 against
    occluded t2.

    ``clean_features``: per model name, the image features (image + flip) x faceness already
    computed for every meta row (what eval_ijbc.py holds after its table), so they are not computed
    again.
    """
    s = given_settings(settings, OcclusionSettings)
    checks.open_fraction(far, "far")
    keys = meta.probe_rows()
    present, skipped = _plan(s.regions, masks, keys)
    clean_features = clean_features or {}
    feats = {m: clean_features[m] if m in clean_features
             else ijb_image_features(model, meta, s.embed_settings(m), f"{m} clean")
             for m, model in models.items()}
    references = {m: template_features(f, meta.templates, meta.medias) for m, f in feats.items()}

    def tar(m: str, probe_feats: np.ndarray) -> float:
        probes = template_features(probe_feats, meta.templates[keys], meta.medias[keys])
        return tar_at_far(meta.labels, pair_scores(*references[m], meta.p1, meta.p2, *probes), [far])[0][0] * 100

    def score(m: str, region: _Region, views: np.ndarray) -> float:
        probe_feats = feats[m][keys].copy()
        probe_feats[region.positions] = image_features(views, meta.faceness[keys[region.positions]])
        return tar(m, probe_feats)

    clean = {m: tar_at_far(meta.labels, pair_scores(*references[m], meta.p1, meta.p2), [far])[0][0] * 100
             for m in models}
    rows = []
    if present:
        images = _aligned(meta, keys, s.embed)
        dataset = ErasedProbes(images, keys, masks, present, s.fill, s.seed)
        rows = _occlusion_rows(models, dataset, present, clean, score, s)
    return OcclusionReport(meta.target, f"TAR@FAR={far:g} (%)", list(models), clean, rows, skipped,
                           s.fill, s.seed, len(keys))
