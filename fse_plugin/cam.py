"""FS-CAM: region-level explanations of face recognition models, for embedding models too.

FS-CAM (REFERENCE.md section 4) asks, for each of the 25 face-parsing regions, how much of the
model's score survives when only that region is kept (everything else 0 in normalised space). The
reference explains classification heads; arcface_torch users have backbones that output embeddings,
so the score here is a *target*: the softmax probability of a class (``ClassTarget``, the reference)
or the cosine similarity of the embedding to a reference embedding (``EmbeddingTarget``: the other
image of a verification pair, the image's own clean embedding, or an identity centroid).

The same target objects drive the complementary region ablation (erase region k, measure the drop),
the pixel CAMs of pytorch-grad-cam (they are callables on one image's model output, as the library
wants), and RISE and Group-CAM, written here because the library lacks them. Every pixel map is
aggregated per region (mean, share of mass); dataset-level statistics give each region's mean
importance with a 95% interval, for one model or two side by side.

Entry points: ``fs_cam``, ``region_ablation``, ``pixel_cam``, ``aggregate_per_region``,
``region_stats``, ``explain`` / ``explain_pairs`` / ``explain_bin`` / ``explain_rec`` (files + report)
and ``FSCAMCallback`` (arcface_torch training hook, see patches/0002-fse-cam.patch).
"""
from __future__ import annotations

import csv
import html
import json
import logging
import math
import os
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fse_plugin import evaluation as ev
from fse_plugin.common import autocast, load_masks, masks_path_for, model_device, resolve_device, to_input, to_uint8
from fse_plugin.parsing import masks_from_checkpoint
from fse_plugin.labels import CLASSES, NUM_CLASSES, colorize

IGNORE = 255
"""Mask value of pixels without a class (belongs to no region, painted 0 in FS-CAM maps)."""

PIXEL_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "scorecam", "xgradcam", "layercam", "eigencam",
                                  "hirescam", "eigengradcam", "rise", "groupcam")
GRADIENT_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigengradcam",
                                      "groupcam")
REGION_METHODS: tuple[str, ...] = ("fscam", "ablation")
METHODS: tuple[str, ...] = REGION_METHODS + PIXEL_METHODS

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------

def as_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Model input: uint8 RGB ``[N,H,W,3]`` is normalised as arcface_torch does; float ``[N,3,H,W]``
    is taken as already normalised to [-1, 1]."""
    t = torch.as_tensor(images)
    if t.dtype == torch.uint8 and t.ndim == 4 and t.shape[3] == 3:
        return to_input(t)
    if not t.is_floating_point() or t.ndim != 4 or t.shape[1] != 3:
        raise ValueError(f"images must be uint8 [N,H,W,3] or normalised float [N,3,H,W], got {t.dtype} "
                         f"{tuple(t.shape)}")
    return t


def _images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Images as a tensor, not yet normalised (uint8 faces are normalised chunk by chunk)."""
    return images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))


def as_masks(masks: np.ndarray | torch.Tensor, shape: Sequence[int] | None = None, where: str = "masks") -> torch.Tensor:
    """Label maps ``[N,H,W]`` as int64, checked: values 0..24 or 255 (ignore), shape ``shape`` if given."""
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    if m.ndim != 3 or m.is_floating_point() or m.is_complex():
        raise ValueError(f"{where}: expected integer label maps [N,H,W], got {m.dtype} {tuple(m.shape)}")
    if shape is not None and tuple(m.shape) != tuple(shape):
        raise ValueError(f"{where}: shape {tuple(m.shape)} does not match the images {tuple(shape)}")
    m = m.long()
    bad = ((m >= NUM_CLASSES) & (m != IGNORE)) | (m < 0)
    if bool(bad.any()):
        i = int(bad.flatten(1).any(1).nonzero()[0, 0])
        raise ValueError(f"{where}: mask {i} holds label {int(m[i][bad[i]][0])}, expected 0..{NUM_CLASSES - 1} "
                         f"or {IGNORE}")
    return m


@torch.no_grad()
def batched_forward(model: nn.Module, x: torch.Tensor | np.ndarray, batch_size: int = 256,
                    amp: bool = False) -> torch.Tensor:
    """``model(x)`` in batches on the model's device; float32 outputs stay on that device.
    ``x`` as ``as_input`` takes it; uint8 faces are normalised batch by batch (no float copy of all)."""
    dev = model_device(model)
    x = _images(x)
    outs = []
    for i in range(0, len(x), batch_size):
        with autocast(dev, amp):
            out = model(as_input(x[i:i + batch_size]).to(dev, non_blocking=True))
        outs.append(out.float())
    return torch.cat(outs)


# ----------------------------------------------------------------------------------------------
# targets
# ----------------------------------------------------------------------------------------------

class Target:
    """A score per explained image, read from the model output.

    Holds one entry (used for every image) or one per image. ``score(outputs, index)`` scores row m
    of a batch of outputs against the entry of image ``index[m]`` (FS-CAM, ablation, RISE);
    ``target[i]`` is the target of image i alone, a callable on that image's output ``[D]`` or on
    rows ``[B, D]`` of variants of it: the form pytorch-grad-cam takes as ``targets=[...]``.
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def _take(self, idx: torch.Tensor) -> "Target":
        raise NotImplementedError

    def score(self, outputs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def resolve(self, clean_outputs: torch.Tensor) -> "Target":
        """Fix what depends on the clean output (the argmax class); the clean outputs are one per image."""
        return self

    def take(self, idx: slice | Sequence[int] | torch.Tensor) -> "Target":
        """The targets of a subset of images (a target with one entry serves any subset)."""
        if len(self) == 1:
            return self
        return self._take(torch.arange(len(self))[idx] if isinstance(idx, slice) else torch.as_tensor(idx).long())

    def __getitem__(self, i: int) -> "Target":
        return self.take([int(i)]) if len(self) != 1 else self

    def entry(self, index: torch.Tensor) -> torch.Tensor:
        """Own entry index per row: broadcast a single entry, else ``index`` itself."""
        return torch.zeros_like(index) if len(self) == 1 else index

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if len(self) != 1:
            raise ValueError(f"{self!r} holds {len(self)} entries; a pytorch-grad-cam target scores one image: "
                             "use target[i]")
        rows = output if output.ndim > 1 else output[None]
        s = self.score(rows, torch.zeros(len(rows), dtype=torch.long, device=rows.device))
        return s if output.ndim > 1 else s[0]


class ClassTarget(Target):
    """Softmax probability (or raw logit) of a class: the reference FS-CAM score for classifiers.

    ``ids=None`` means the argmax of the clean output, as the reference; else one id for all
    images or one per image.
    """

    def __init__(self, ids: int | Sequence[int] | torch.Tensor | None = None, softmax: bool = True) -> None:
        self.ids = None if ids is None else torch.as_tensor(ids, dtype=torch.long).reshape(-1).cpu()
        self.softmax = softmax

    def __len__(self) -> int:
        return 0 if self.ids is None else len(self.ids)

    def _take(self, idx: torch.Tensor) -> "ClassTarget":
        return ClassTarget(self.ids[idx], self.softmax)

    def take(self, idx: slice | Sequence[int] | torch.Tensor) -> "ClassTarget":
        return self if self.ids is None else super().take(idx)

    def resolve(self, clean_outputs: torch.Tensor) -> "ClassTarget":
        if self.ids is not None:
            return self
        return ClassTarget(clean_outputs.argmax(1), self.softmax)

    def score(self, outputs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if self.ids is None:
            raise ValueError("ClassTarget(None) must be resolved on the clean outputs first (target.resolve)")
        ids = self.ids.to(outputs.device)[self.entry(index)]
        if int(ids.max()) >= outputs.shape[1]:
            raise ValueError(f"class id {int(ids.max())} outside the model's {outputs.shape[1]} outputs")
        s = outputs.float().softmax(1) if self.softmax else outputs.float()
        return s.gather(1, ids[:, None])[:, 0]

    def __repr__(self) -> str:
        ids = "argmax" if self.ids is None else (int(self.ids[0]) if len(self.ids) == 1 else f"{len(self.ids)} ids")
        return f"ClassTarget({ids}, softmax={self.softmax})"


class EmbeddingTarget(Target):
    """Cosine similarity of the embedding to a reference embedding (one for all, or one per image).

    For verification: the reference is the other image of the pair (``pair_target``), the image's
    own clean embedding (``self_target``) or its identity's centroid (``identity_target``).
    """

    def __init__(self, ref_embeddings: torch.Tensor | np.ndarray) -> None:
        ref = torch.as_tensor(ref_embeddings).float()
        if ref.ndim == 1:
            ref = ref[None]
        if ref.ndim != 2:
            raise ValueError(f"reference embeddings must be [D] or [N,D], got {tuple(ref.shape)}")
        self.ref = F.normalize(ref, dim=1)

    def __len__(self) -> int:
        return len(self.ref)

    def _take(self, idx: torch.Tensor) -> "EmbeddingTarget":
        return EmbeddingTarget(self.ref[idx.to(self.ref.device)])

    def score(self, outputs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        out = outputs.float().flatten(1)
        if out.shape[1] != self.ref.shape[1]:
            raise ValueError(f"model output has {out.shape[1]} features, reference embeddings {self.ref.shape[1]}")
        ref = self.ref.to(out.device)[self.entry(index).to(out.device)]
        return (F.normalize(out, dim=1) * ref).sum(1)

    def __repr__(self) -> str:
        return f"EmbeddingTarget({len(self.ref)} x {self.ref.shape[1]})"


def pair_target(model: nn.Module, images1: torch.Tensor, images2: torch.Tensor, batch_size: int = 256,
                amp: bool = False) -> EmbeddingTarget:
    """Targets for ``cat([images1, images2])``: each image scored against its partner's clean embedding."""
    emb = batched_forward(model, torch.cat([torch.as_tensor(images1), torch.as_tensor(images2)]), batch_size, amp)
    p = len(images1)
    return EmbeddingTarget(torch.cat([emb[p:], emb[:p]]).cpu())


def self_target(model: nn.Module, images: torch.Tensor, batch_size: int = 256, amp: bool = False) -> EmbeddingTarget:
    """Each image scored against its own clean embedding (what of the face makes it itself)."""
    return EmbeddingTarget(batched_forward(model, images, batch_size, amp).cpu())


def identity_target(model: nn.Module, images: torch.Tensor, labels: Sequence[int], batch_size: int = 256,
                    amp: bool = False) -> EmbeddingTarget:
    """Each image scored against the centroid of the OTHER images of its identity (its own clean
    embedding when it is the only one), so the score measures identity, not self-similarity."""
    emb = F.normalize(batched_forward(model, images, batch_size, amp).cpu(), dim=1)
    labels_t = torch.as_tensor(np.asarray(labels)).long()
    if len(labels_t) != len(emb):
        raise ValueError(f"{len(labels_t)} labels for {len(emb)} images")
    _, inv = torch.unique(labels_t, return_inverse=True)
    sums = torch.zeros(int(inv.max()) + 1, emb.shape[1]).index_add_(0, inv, emb)
    counts = torch.bincount(inv).float()
    others = sums[inv] - emb
    alone = counts[inv] < 2
    others[alone] = emb[alone]
    return EmbeddingTarget(others)


def _check_target(target: Target, n: int) -> None:
    if len(target) not in (0, 1, n):
        raise ValueError(f"{target!r} has {len(target)} entries for {n} images (need 1 or {n})")


# ----------------------------------------------------------------------------------------------
# FS-CAM and region ablation
# ----------------------------------------------------------------------------------------------

def normalise_scores(scores: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Per-image min-max over the present regions (NaN = absent stays NaN); a flat row becomes 0."""
    s = torch.as_tensor(scores).float()
    lo = torch.where(s.isnan(), torch.inf, s).amin(1, keepdim=True)
    hi = torch.where(s.isnan(), -torch.inf, s).amax(1, keepdim=True)
    rng = hi - lo
    out = (s - lo) / torch.where(rng > 0, rng, torch.ones_like(rng))
    return torch.where((rng > 0) | s.isnan(), out, torch.zeros_like(out))


def paint(values: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Region values ``[N,25]`` -> piecewise-constant maps ``[N,H,W]`` (ignore pixels 0)."""
    table = torch.cat([values.float().nan_to_num(0.0), torch.zeros(len(values), 1)], 1)
    idx = torch.where(masks == IGNORE, NUM_CLASSES, masks).long()
    return table.gather(1, idx.flatten(1).cpu()).view(idx.shape)


def _region_variants(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(image index, class id) of every region present in each image of the chunk."""
    present = (m[:, None] == torch.arange(NUM_CLASSES, device=m.device)[None, :, None, None]).flatten(2).any(2)
    return present.nonzero(as_tuple=True)


@torch.no_grad()
def _score_regions(model: nn.Module, images: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray,
                   target: Target | None, batch_size: int, amp: bool,
                   variant: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loop shared by FS-CAM and ablation: per chunk of ~batch_size/26 images, the clean images and
    ``variant(images, masks, class)`` of every present region go through the model in one batch.
    Returns (clean scores [N], region scores [N,25] with NaN where absent, masks)."""
    x = _images(images)
    m = as_masks(masks, (len(x), *as_input(x[:1]).shape[2:]))
    target = ClassTarget() if target is None else target
    _check_target(target, len(x))
    dev = model_device(model)
    clean = torch.empty(len(x))
    scores = torch.full((len(x), NUM_CLASSES), float("nan"))
    per_chunk = max(1, batch_size // (NUM_CLASSES + 1))
    for s in range(0, len(x), per_chunk):
        xb, mb = as_input(x[s:s + per_chunk]).to(dev).float(), m[s:s + per_chunk].to(dev)
        n = len(xb)
        img, cls = _region_variants(mb)
        out = batched_forward(model, torch.cat([xb, variant(xb[img], mb[img], cls)]), batch_size, amp)
        t = target.take(slice(s, s + n)).resolve(out[:n])
        clean[s:s + n] = t.score(out[:n], torch.arange(n, device=dev)).cpu()
        scores[s + img.cpu(), cls.cpu()] = t.score(out[n:], img).cpu()
    return clean, scores, m


def fs_cam(model: nn.Module, images: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray,
           target: Target | None = None, batch_size: int = 260, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """FS-CAM of each image: ``(scores [N,25] float32, NaN where the class is absent; maps [N,H,W])``.

    Per image, the original and one copy per present region (only that region kept, the rest 0 in
    normalised space) go through the model in the same batch (chunks of ~batch_size/26 images), so
    it costs 1 + (present regions) forwards per image. ``s_k`` is the target's score of the copy
    keeping region k (target defaults to the reference: softmax probability of the argmax class);
    the map is ``sum_k mask_k * s_k``, min-max normalised per image, constant within each region.
    Absent classes cost nothing: their score would be that of an all-zero image in every region.
    """
    _, scores, m = _score_regions(model, images, masks, target, batch_size, amp,
                                  lambda xi, mi, cls: xi * (mi == cls[:, None, None])[:, None])
    return scores, paint(normalise_scores(scores), m)


def region_ablation(model: nn.Module, images: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray,
                    target: Target | None = None, fill: str | float = 0.0, batch_size: int = 260,
                    seed: int = 0, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Complement of FS-CAM: ``(drops [N,25], NaN where absent; maps [N,H,W])``.

    ``drop_k = s(x) - s(x with region k erased)``; the erasure is FSErasing's (``erasing.erase_batch``,
    the batched ``erase``) with ``fill`` (0.0 = the FS-CAM background; 'random', 'region_mean', ...),
    random fills drawn from a generator seeded with ``seed``. The map is the per-image min-max of
    the drops. Costs 1 + (present regions) forwards per image, like FS-CAM.
    """
    from fse_plugin.erasing import check_fill, erase_batch
    fill = check_fill(fill)
    gen = torch.Generator().manual_seed(seed)
    clean, scores, m = _score_regions(
        model, images, masks, target, batch_size, amp,
        lambda xi, mi, cls: erase_batch(xi, mi, F.one_hot(cls, NUM_CLASSES).bool(), fill=fill, generator=gen))
    drops = clean[:, None] - scores
    return drops, paint(normalise_scores(drops), m)


# ----------------------------------------------------------------------------------------------
# pixel CAMs: pytorch-grad-cam, plus RISE and Group-CAM written here (the library lacks them)
# ----------------------------------------------------------------------------------------------

def default_target_layer(model: nn.Module) -> nn.Module:
    """Last spatial stage of an iresnet-style backbone: ``layer4`` (arcface_torch iresnet, torchvision
    resnets), else ``layers[-1]`` (fse iresnet_tiny, arcface_torch mobilefacenet), else the last Conv2d."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError("pixel CAMs hook layers and need an eager nn.Module, not TorchScript "
                         "(use fscam, ablation or rise, or load the backbone with --network NAME)")
    if isinstance(getattr(model, "layer4", None), nn.Module):
        return model.layer4
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.Sequential) and len(layers):
        return layers[-1]
    convs = [mod for mod in model.modules() if isinstance(mod, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d: pass target_layer (a module or dotted name)")
    return convs[-1]


def resolve_layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    """A target layer given as a module, a dotted name (``layers.3``, ``layer4.2``) or None (default)."""
    if layer is None:
        return default_target_layer(model)
    if isinstance(layer, nn.Module):
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][-8:]
        raise ValueError(f"target layer {layer!r} not found in {type(model).__name__} (last modules: "
                         f"{', '.join(names)})") from None


class RISE:
    """RISE (Petsiuk et al., BMVC 2018): saliency = E[score(x * M) * M] / p1 over random masks M.

    Written by hand because pytorch-grad-cam has no RISE. Masks: an s x s grid of Bernoulli(p1)
    cells, bilinearly upsampled to (s+1) cells of ceil(H/s) pixels, randomly shifted by up to one
    cell and cropped to H x W; masked inputs are ``x * M`` in normalised space (0 = grey), as in
    the paper. Only the small grids and shifts are stored (seeded), masks are built per batch,
    so N=8000 costs no memory; every image sees the same masks.
    Called like a pytorch-grad-cam CAM: ``rise(input_tensor, targets) -> [B,H,W]`` in [0, 1].
    """

    def __init__(self, model: nn.Module, n_masks: int = 8000, s: int = 7, p1: float = 0.1, batch_size: int = 256,
                 seed: int = 0, amp: bool = False) -> None:
        if n_masks < 1 or s < 1 or not 0 < p1 <= 1:
            raise ValueError(f"RISE needs n_masks >= 1, s >= 1, 0 < p1 <= 1 (got {n_masks}, {s}, {p1})")
        self.model, self.n_masks, self.s, self.p1 = model, n_masks, s, p1
        self.batch_size, self.amp = batch_size, amp
        g = torch.Generator().manual_seed(seed)
        self.grids = (torch.rand(n_masks, 1, s, s, generator=g) < p1).float()
        self.shifts = torch.rand(n_masks, 2, generator=g)

    def masks(self, i: int, j: int, size: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Masks i..j-1 at ``size``, ``[j-i,1,H,W]``."""
        h, w = size
        ch, cw = math.ceil(h / self.s), math.ceil(w / self.s)
        up = F.interpolate(self.grids[i:j].to(device), size=((self.s + 1) * ch, (self.s + 1) * cw),
                           mode="bilinear", align_corners=False)
        dy = (self.shifts[i:j, 0] * ch).long().tolist()
        dx = (self.shifts[i:j, 1] * cw).long().tolist()
        return torch.stack([up[k, :, y:y + h, x:x + w] for k, (y, x) in enumerate(zip(dy, dx))])

    @torch.no_grad()
    def __call__(self, input_tensor: torch.Tensor, targets: Sequence[Callable] | Target | None = None) -> np.ndarray:
        from pytorch_grad_cam.utils.image import scale_cam_image
        dev = model_device(self.model)
        x = input_tensor.to(dev)
        if targets is None:
            targets = ClassTarget().resolve(batched_forward(self.model, x, self.batch_size, self.amp))
        sal = torch.zeros(len(x), *x.shape[2:], device=dev)
        for i in range(0, self.n_masks, self.batch_size):
            mk = self.masks(i, min(i + self.batch_size, self.n_masks), tuple(x.shape[2:]), dev)
            for b in range(len(x)):
                out = batched_forward(self.model, x[b:b + 1] * mk, self.batch_size, self.amp)
                score = targets[b](out).float()
                sal[b] += (score[:, None, None] * mk[:, 0]).sum(0)
        sal /= self.n_masks * self.p1
        return scale_cam_image(sal.cpu().numpy())

    def __enter__(self) -> "RISE":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def __repr__(self) -> str:
        return f"RISE(n_masks={self.n_masks}, s={self.s}, p1={self.p1})"


def _group_cam_class():
    """Group-CAM as a pytorch-grad-cam BaseCAM (built lazily: the library imports cv2, scipy, ttach)."""
    from pytorch_grad_cam.base_cam import BaseCAM
    from torchvision.transforms.functional import gaussian_blur

    class GroupCAM(BaseCAM):
        """Group-CAM (Zhang et al. 2021), by hand because pytorch-grad-cam lacks it.

        Gradient-weighted feature maps of the target layer are split into ``groups`` channel groups
        and summed per group (ReLU); values under the ``percentile``-th percentile are zeroed (the
        paper's denoising), each group map is upsampled and min-max normalised to a mask M_g; the
        score of ``x * M_g + blur(x) * (1 - M_g)`` minus that of the blurred baseline (Gaussian,
        k=51, sigma=50) weighs M_g; saliency = ReLU(sum_g w_g M_g). The library's hooks, target
        handling and final scaling are reused through BaseCAM.
        """

        def __init__(self, model: nn.Module, target_layers: list[nn.Module], groups: int = 32,
                     blur_kernel: int = 51, blur_sigma: float = 50.0, percentile: float = 70.0,
                     batch_size: int = 64) -> None:
            super().__init__(model, target_layers)
            self.groups, self.blur_kernel, self.blur_sigma = groups, blur_kernel, blur_sigma
            self.percentile, self.batch_size = percentile, batch_size

        def blur(self, x: torch.Tensor) -> torch.Tensor:
            k = min(self.blur_kernel, 2 * min(x.shape[-2:]) - 1)  # reflect padding must fit the image
            k -= 1 - k % 2
            return gaussian_blur(x, [k, k], [self.blur_sigma, self.blur_sigma])

        def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth=False):
            acts = torch.from_numpy(np.asarray(activations)).float()
            alpha = torch.from_numpy(np.asarray(grads)).float().mean((2, 3), keepdim=True)
            weighted = alpha * acts
            groups = min(self.groups, acts.shape[1])
            gmaps = torch.stack([c.sum(1) for c in weighted.tensor_split(groups, 1)], 1).relu()  # [B,G,h,w]
            thr = torch.quantile(gmaps.flatten(2), self.percentile / 100.0, dim=2)[..., None, None]
            gmaps = torch.where(gmaps > thr, gmaps, torch.zeros_like(gmaps))
            x = input_tensor.detach()
            up = F.interpolate(gmaps, size=x.shape[-2:], mode="bilinear", align_corners=False)
            lo, hi = up.flatten(2).amin(2)[..., None, None], up.flatten(2).amax(2)[..., None, None]
            valid = (hi > lo)[..., 0, 0]
            masks = (up - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
            sal = torch.zeros(len(x), *x.shape[-2:])
            with torch.no_grad():
                base = self.blur(x)
                for b in range(len(x)):
                    mk = masks[b][valid[b]].to(x.device)[:, None]
                    if not len(mk):
                        continue
                    blended = x[b:b + 1] * mk + base[b:b + 1] * (1 - mk)
                    out = batched_forward(self.model, torch.cat([base[b:b + 1], blended]), self.batch_size)
                    self.activations_and_grads.activations.clear()  # the hooks also saw these forwards
                    s = targets[b](out).float().cpu()
                    sal[b] = ((s[1:] - s[0])[:, None, None] * mk[:, 0].cpu()).sum(0)
            return sal.relu().numpy()

    return GroupCAM


def make_pixel_cam(method: str, model: nn.Module, target_layer: nn.Module | str | None = None, **options: Any):
    """A CAM object for ``method`` (``cam(input_tensor, targets) -> [B,H,W]``, min-max scaled).

    Library methods take ``batch_size`` (ScoreCAM's inner batch); ``rise`` takes n_masks, s, p1,
    batch_size, seed, amp; ``groupcam`` takes groups, blur_kernel, blur_sigma, percentile, batch_size.
    """
    import pytorch_grad_cam as pgc
    library = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "scorecam": pgc.ScoreCAM,
               "xgradcam": pgc.XGradCAM, "layercam": pgc.LayerCAM, "eigencam": pgc.EigenCAM,
               "hirescam": pgc.HiResCAM, "eigengradcam": pgc.EigenGradCAM}
    if method == "rise":
        return RISE(model, **options)
    if method == "groupcam":
        return _group_cam_class()(model, [resolve_layer(model, target_layer)], **options)
    if method not in library:
        raise ValueError(f"unknown pixel CAM {method!r}; known: {', '.join(PIXEL_METHODS)}")
    batch = options.pop("batch_size", None)
    if options:
        raise ValueError(f"{method} takes no options {sorted(options)}")
    cam = library[method](model, [resolve_layer(model, target_layer)])
    if batch is not None:
        cam.batch_size = batch
    return cam


def resolve_target(model: nn.Module, x: torch.Tensor, target: Target | None, batch_size: int = 256) -> Target:
    """Target with the argmax filled in (one clean forward when a ClassTarget needs it)."""
    target = ClassTarget() if target is None else target
    _check_target(target, len(x))
    if isinstance(target, ClassTarget) and target.ids is None:
        return target.resolve(batched_forward(model, x, batch_size).cpu())
    return target


def run_pixel_cam(cam, x: torch.Tensor, target: Target, batch_size: int = 16) -> np.ndarray:
    """Run a CAM object over images in batches with per-image targets -> ``[N,H,W]`` float32."""
    maps = []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].float().contiguous()
        t = target.take(slice(s, s + len(xb)))
        maps.append(np.asarray(cam(input_tensor=xb, targets=[t[i] for i in range(len(xb))]), dtype=np.float32))
    return np.concatenate(maps) if maps else np.zeros((0, *x.shape[2:]), np.float32)


def pixel_cam(model: nn.Module, images: torch.Tensor | np.ndarray, target: Target | None = None,
              method: str = "gradcam", target_layer: nn.Module | str | None = None, batch_size: int = 16,
              **options: Any) -> np.ndarray:
    """Pixel saliency ``[N,H,W]`` in [0, 1] of ``method`` with our targets (default: reference argmax)."""
    x = as_input(images)
    target = resolve_target(model, x, target)
    cam = make_pixel_cam(method, model, target_layer, **options)
    with cam:
        return run_pixel_cam(cam, x, target, batch_size)


def aggregate_per_region(maps: np.ndarray | torch.Tensor, masks: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Pixel maps per region: ``(mean [N,25], share of the map's mass [N,25])``, NaN where absent."""
    mp = torch.as_tensor(np.asarray(maps, dtype=np.float64) if not isinstance(maps, torch.Tensor) else maps).double()
    m = as_masks(masks, tuple(mp.shape))
    n = len(mp)
    idx = (torch.where(m == IGNORE, NUM_CLASSES, m) + (NUM_CLASSES + 1) * torch.arange(n)[:, None, None]).flatten()
    sums = torch.bincount(idx, weights=mp.flatten(), minlength=n * (NUM_CLASSES + 1)).view(n, -1)[:, :NUM_CLASSES]
    counts = torch.bincount(idx, minlength=n * (NUM_CLASSES + 1)).view(n, -1)[:, :NUM_CLASSES].double()
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    mean = torch.where(counts > 0, sums / counts.clamp(min=1), nan)
    total = mp.flatten(1).sum(1, keepdim=True)
    share = torch.where(counts > 0, sums / total.clamp(min=1e-12), nan)
    return mean.float().numpy(), share.float().numpy()


# ----------------------------------------------------------------------------------------------
# dataset-level statistics
# ----------------------------------------------------------------------------------------------

def region_mean(values: np.ndarray) -> np.ndarray:
    """Mean per region over the images where it is present (NaN where never present)."""
    v = np.asarray(values, dtype=np.float64)
    n = (~np.isnan(v)).sum(0)
    return np.where(n > 0, np.nansum(v, 0) / np.maximum(n, 1), np.nan)


def region_stats(values: np.ndarray | torch.Tensor, ci: str = "bootstrap", level: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Per-region mean and ``level`` interval over images of ``values [N,25]`` (NaN = region absent).

    ``ci='bootstrap'``: percentile interval of the image-level bootstrap (images resampled with
    replacement, ``n_boot`` times, seeded; the regions of one image stay together);
    ``ci='t'``: Student-t interval mean +- t * sd / sqrt(n). Regions seen in < 2 images get NaN bounds.
    Returns ``mean, lo, hi`` (float64 [25]) and ``n`` (images where the region is present).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != NUM_CLASSES:
        raise ValueError(f"values must be [N,{NUM_CLASSES}], got {v.shape}")
    present = ~np.isnan(v)
    n = present.sum(0)
    filled = np.where(present, v, 0.0)
    mean = region_mean(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo, hi = np.full(NUM_CLASSES, np.nan), np.full(NUM_CLASSES, np.nan)
        ok = n >= 2
        if ci == "t":
            from scipy import stats
            sd = np.sqrt(np.where(present, (v - mean) ** 2, 0.0).sum(0) / np.maximum(n - 1, 1))
            half = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1))
            lo[ok], hi[ok] = (mean - half)[ok], (mean + half)[ok]
        elif ci == "bootstrap":
            rng = np.random.default_rng(seed)
            boots = []
            for b in range(0, n_boot, 250):  # multinomial weights, 250 resamples at a time: bounded memory
                w = rng.multinomial(len(v), np.full(len(v), 1.0 / len(v)), size=min(250, n_boot - b)).astype(np.float64)
                boots.append((w @ filled) / (w @ present))
            boots = np.concatenate(boots)
            q = np.nanpercentile(boots[:, ok], [50 * (1 - level), 50 * (1 + level)], axis=0) if ok.any() else None
            if q is not None:
                lo[ok], hi[ok] = q
        else:
            raise ValueError(f"ci must be 'bootstrap' or 't', got {ci!r}")
    return {"mean": mean, "lo": lo, "hi": hi, "n": n}


def compare_stats(a: np.ndarray, b: np.ndarray, **kwargs: Any) -> dict[str, np.ndarray]:
    """Paired difference b - a per region (same images, same masks: baseline vs FSErasing-trained)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare region tables of shapes {a.shape} and {b.shape}")
    return region_stats(b - a, **kwargs)


# ----------------------------------------------------------------------------------------------
# pictures
# ----------------------------------------------------------------------------------------------

def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """uint8 RGB picture of ``cam`` (values in [0, 1]) blended over ``image``."""
    from matplotlib import colormaps
    heat = colormaps[cmap](np.clip(np.nan_to_num(cam), 0, 1))[..., :3]
    return (255 * ((1 - alpha) * image.astype(np.float32) / 255 + alpha * heat)).clip(0, 255).astype(np.uint8)


def overlay_strip(images: np.ndarray, masks: np.ndarray, maps: Sequence[np.ndarray]) -> np.ndarray:
    """Rows of [image | colorized mask | overlay per map], one uint8 HWC picture (tensorboard)."""
    rows = [np.concatenate([images[i], colorize(np.where(masks[i] == IGNORE, 0, masks[i]))]
                           + [overlay(images[i], mp[i]) for mp in maps], 1) for i in range(len(images))]
    return np.concatenate(rows, 0)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot as plt
    return plt


def _save_figure(fig, path: str | os.PathLike, title: str) -> Path:
    if title:  # wrapped to the figure's width (a one-panel chart is narrower than its title)
        chars = max(20, int(fig.get_figwidth() * 72 / (0.6 * 9)))
        fig.suptitle(textwrap.fill(title, chars), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return Path(path)


def plot_overlay_grid(images: np.ndarray, masks: np.ndarray, maps: Mapping[str, np.ndarray], path: str | os.PathLike,
                      row_labels: Sequence[str] | None = None, title: str = "") -> Path:
    """PNG grid: one row per image, columns image, mask, then each method's map over the image."""
    plt = _pyplot()
    cols = ["image", "mask", *maps]
    n = len(images)
    fig, axes = plt.subplots(n, len(cols), figsize=(1.6 * len(cols), 1.7 * n + 0.4), squeeze=False)
    for i in range(n):
        pics = [images[i], colorize(np.where(masks[i] == IGNORE, 0, masks[i]))]
        pics += [overlay(images[i], mp[i]) for mp in maps.values()]
        for j, pic in enumerate(pics):
            ax = axes[i, j]
            ax.imshow(pic)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=8)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=7)
    return _save_figure(fig, path, title)


def plot_region_bars(stats: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], path: str | os.PathLike,
                     title: str = "", xlabel: str = "importance") -> Path:
    """Per-region bar chart with 95% intervals: ``stats[method][series]`` -> one panel per method,
    one bar colour per series (one model, or two models side by side)."""
    plt = _pyplot()
    methods = list(stats)
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 7.0), squeeze=False, sharey=True)
    y = np.arange(NUM_CLASSES)
    for ax, method in zip(axes[0], methods):
        series = stats[method]
        h = 0.8 / max(1, len(series))
        for j, (name, st) in enumerate(series.items()):
            mean = np.asarray(st["mean"], np.float64)
            err = np.abs(np.stack([mean - st["lo"], st["hi"] - mean]))
            ax.barh(y + (j - (len(series) - 1) / 2) * h, np.nan_to_num(mean), height=h, label=name,
                    xerr=np.nan_to_num(err), capsize=1.5, error_kw={"elinewidth": 0.7})
        ax.set_title(method, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.axvline(0, color="k", lw=0.5)
        if len(series) > 1:
            ax.legend(fontsize=7)
    axes[0, 0].set_yticks(y)
    axes[0, 0].set_yticklabels(CLASSES, fontsize=7)
    axes[0, 0].invert_yaxis()
    return _save_figure(fig, path, title)


# ----------------------------------------------------------------------------------------------
# explain: images + masks -> tables, statistics, pictures, report
# ----------------------------------------------------------------------------------------------

def run_method(method: str, model: nn.Module, x: torch.Tensor, masks: torch.Tensor, target: Target,
               batch_size: int = 260, amp: bool = False, fill: str | float = 0.0, seed: int = 0,
               cam: Any = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One method on a chunk: (tables {kind: [n,25]}, maps [n,H,W]). ``importance`` is the kind the
    charts use: normalised region score (fscam), normalised drop (ablation), region mean (pixel)."""
    if method == "fscam":
        scores, maps = fs_cam(model, x, masks, target, batch_size, amp)
        return {"importance": normalise_scores(scores).numpy(), "score": scores.numpy()}, maps.numpy()
    if method == "ablation":
        drops, maps = region_ablation(model, x, masks, target, fill, batch_size, seed, amp)
        return {"importance": normalise_scores(drops).numpy(), "drop": drops.numpy()}, maps.numpy()
    if cam is None:
        raise ValueError(f"pixel method {method!r} needs a CAM object (make_pixel_cam)")
    x = as_input(x)
    maps = run_pixel_cam(cam, x, resolve_target(model, x, target), batch_size=max(1, min(len(x), 16)))
    mean, share = aggregate_per_region(maps, masks)
    return {"importance": mean, "share": share}, maps


def parse_methods(methods: str | Sequence[str]) -> list[str]:
    items = [m.strip().lower() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    bad = [m for m in items if m not in METHODS]
    if bad or not items:
        raise ValueError(f"unknown CAM methods {bad or methods!r}; known: {', '.join(METHODS)}")
    return list(dict.fromkeys(items))


def _nan_to_none(a: np.ndarray) -> list:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in np.asarray(a, np.float64).ravel()]


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
    "comparison": {method: {kind: stats}} (second model minus first), "files": {name: Path}, "report": Path}``.
    """
    from tqdm import tqdm
    methods = parse_methods(methods)
    options = {k: dict(v) for k, v in (options or {}).items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = _images(images)
    if not len(data):
        raise ValueError("nothing to explain: no images")
    size = tuple(as_input(data[:1]).shape[2:])
    m = as_masks(masks, (len(data), *size))
    grid = min(grid, len(data))
    tables: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    grid_maps: dict[str, dict[str, np.ndarray]] = {}
    timing: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        model = model.to(device).eval()
        target = make_target(model, data)
        _check_target(target, len(data))
        tables[name], grid_maps[name], timing[name] = {}, {}, {}
        for method in methods:
            cam_obj = make_pixel_cam(method, model, target_layer, **options.get(method, {})) \
                if method in PIXEL_METHODS else None
            parts: dict[str, list[np.ndarray]] = {}
            maps_keep = []
            t0 = time.perf_counter()
            bar = tqdm(range(0, len(data), chunk), desc=f"{name}:{method}", unit="chunk", disable=not progress)
            for s in bar:
                xb, mb = as_input(data[s:s + chunk]).float().contiguous(), m[s:s + chunk]
                tb, maps = run_method(method, model, xb, mb, target.take(slice(s, s + len(xb))), batch_size, amp,
                                      fill, seed, cam_obj)
                for kind, v in tb.items():
                    parts.setdefault(kind, []).append(v)
                if s < grid:
                    maps_keep.append(maps[:grid - s])
            if cam_obj is not None:
                cam_obj.__exit__(None, None, None)  # removes the library's hooks from the model
            timing[name][method] = 1000 * (time.perf_counter() - t0) / len(data)
            tables[name][method] = {k: np.concatenate(v) for k, v in parts.items()}
            grid_maps[name][method] = np.concatenate(maps_keep)[:grid]

    stats = {name: {method: {kind: region_stats(v, ci=ci, seed=seed) for kind, v in kinds.items()}
                    for method, kinds in per.items()} for name, per in tables.items()}
    names = list(models)
    comparison = {}
    if len(names) == 2:
        comparison = {method: {kind: compare_stats(tables[names[0]][method][kind], tables[names[1]][method][kind],
                                                   ci=ci, seed=seed) for kind in tables[names[0]][method]}
                      for method in methods}

    files: dict[str, Path] = {}
    labels = list(row_labels) if row_labels is not None else [f"image {i}" for i in range(len(data))]
    img_grid, mask_grid = _to_uint8(data[:grid]), m[:grid].numpy()
    for name in names:
        files[f"overlay_{name}"] = plot_overlay_grid(img_grid, mask_grid, grid_maps[name], out / f"overlay_{name}.png",
                                                     labels[:grid], title=name)
        files[f"importance_{name}"] = plot_region_bars(
            {method: {name: stats[name][method]["importance"]} for method in methods},
            out / f"importance_{name}.png", title=f"{name}: per-region importance, mean and 95% interval ({ci})")
    if comparison:
        files["compare"] = plot_region_bars(
            {method: {n: stats[n][method]["importance"] for n in names} for method in methods}, out / "compare.png",
            title=f"{names[0]} vs {names[1]}: per-region importance, mean and 95% interval ({ci})")
    files["region_scores_csv"] = _write_scores_csv(out / "region_scores.csv", tables, labels)
    files["region_stats_csv"] = _write_stats_csv(out / "region_stats.csv", stats, comparison, names)
    doc = {"meta": {**(meta or {}), "n_images": len(data), "methods": methods, "models": names, "ci": ci,
                    "ms_per_image": timing, "classes": list(CLASSES)},
           "stats": {name: {method: {kind: {k: _nan_to_none(v) for k, v in st.items()} for kind, st in kinds.items()}
                            for method, kinds in per.items()} for name, per in stats.items()},
           "comparison": {method: {kind: {k: _nan_to_none(v) for k, v in st.items()} for kind, st in kinds.items()}
                          for method, kinds in comparison.items()},
           "images": labels,
           "tables": {name: {method: {kind: [_nan_to_none(r) for r in v] for kind, v in kinds.items()}
                             for method, kinds in per.items()} for name, per in tables.items()}}
    files["region_scores_json"] = out / "region_scores.json"
    files["region_scores_json"].write_text(json.dumps(doc, indent=1))
    rep = write_report(out, stats, comparison, files, names, methods, ci, meta={**(meta or {}), "images": len(data)},
                       timing=timing, fmt=report)
    files["report"] = rep
    return {"tables": tables, "stats": stats, "comparison": comparison, "files": files, "report": rep,
            "ms_per_image": timing}


def _write_scores_csv(path: Path, tables, labels: Sequence[str]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "method", "kind", "image", "label", *CLASSES])
        for name, per in tables.items():
            for method, kinds in per.items():
                for kind, v in kinds.items():
                    for i, row in enumerate(v):
                        w.writerow([name, method, kind, i, labels[i], *["" if np.isnan(a) else f"{a:.6g}" for a in row]])
    return path


def _write_stats_csv(path: Path, stats, comparison, names: Sequence[str]) -> Path:
    rows = [(name, method, kind, st) for name, per in stats.items() for method, kinds in per.items()
            for kind, st in kinds.items()]
    if comparison:
        rows += [(f"{names[1]}-{names[0]}", method, kind, st) for method, kinds in comparison.items()
                 for kind, st in kinds.items()]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "method", "kind", "region", "class_id", "n", "mean", "lo95", "hi95"])
        for name, method, kind, st in rows:
            for k in range(NUM_CLASSES):
                w.writerow([name, method, kind, CLASSES[k], k, int(st["n"][k])]
                           + ["" if np.isnan(st[c][k]) else f"{st[c][k]:.6g}" for c in ("mean", "lo", "hi")])
    return path


def _fmt_ci(st: Mapping[str, np.ndarray], k: int) -> str:
    if np.isnan(st["mean"][k]):
        return "-"
    if np.isnan(st["lo"][k]):
        return f"{st['mean'][k]:.3f}"
    return f"{st['mean'][k]:.3f} [{st['lo'][k]:.3f}, {st['hi'][k]:.3f}]"


def write_report(out: Path, stats, comparison, files: Mapping[str, Path], names: Sequence[str],
                 methods: Sequence[str], ci: str, meta: Mapping[str, Any], timing: Mapping[str, Mapping[str, float]],
                 fmt: str = "md") -> Path:
    """One page (Markdown or HTML) with the settings, region tables (top regions first) and pictures."""
    if fmt not in ("md", "html"):
        raise ValueError(f"report format must be 'md' or 'html', got {fmt!r}")
    blocks: list[tuple] = [("h1", "FS-CAM region importance")]
    blocks.append(("p", "; ".join(f"{k}: {v}" for k, v in meta.items())))
    blocks.append(("p", f"Importance per region: normalised region score (fscam), normalised score drop "
                        f"(ablation), mean of the map over the region (pixel methods). Mean over images where the "
                        f"region is present, 95% interval ({'image bootstrap, percentile' if ci == 'bootstrap' else 'Student t'})."))
    for name in names:
        blocks.append(("h2", f"Model {name}"))
        blocks.append(("p", "ms per image: " + ", ".join(f"{m} {t:.1f}" for m, t in timing[name].items())))
        blocks.append(("img", files[f"overlay_{name}"].name, f"{name} overlays"))
        blocks.append(("img", files[f"importance_{name}"].name, f"{name} importance"))
        order = np.argsort(-np.nan_to_num(stats[name][methods[0]]["importance"]["mean"], nan=-np.inf), kind="stable")
        rows = [[CLASSES[k], str(int(stats[name][methods[0]]["importance"]["n"][k]))]
                + [_fmt_ci(stats[name][mt]["importance"], k) for mt in methods] for k in order]
        blocks.append(("table", ["region", "n", *methods], rows))
    if comparison:
        blocks.append(("h2", f"{names[1]} vs {names[0]}"))
        blocks.append(("img", files["compare"].name, "comparison"))
        rows = [[CLASSES[k]] + [_fmt_ci(comparison[mt]["importance"], k) for mt in methods] for k in range(NUM_CLASSES)]
        blocks.append(("p", f"Paired difference of importance, {names[1]} minus {names[0]} (same images and masks)."))
        blocks.append(("table", ["region", *methods], rows))
    blocks.append(("p", "Files: " + ", ".join(p.name for k, p in files.items())))
    path = out / f"report.{fmt}"
    path.write_text(_render(blocks, fmt))
    return path


def _render(blocks: Sequence[tuple], fmt: str) -> str:
    lines = []
    if fmt == "html":
        lines.append("<!doctype html><html><head><meta charset='utf-8'><title>FS-CAM report</title></head><body>")
    for b in blocks:
        kind = b[0]
        if fmt == "md":
            if kind == "h1":
                lines += [f"# {b[1]}", ""]
            elif kind == "h2":
                lines += [f"## {b[1]}", ""]
            elif kind == "p":
                lines += [b[1], ""]
            elif kind == "img":
                lines += [f"![{b[2]}]({b[1]})", ""]
            elif kind == "table":
                lines += ["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
                lines += ["| " + " | ".join(r) + " |" for r in b[2]] + [""]
        else:
            e = html.escape
            if kind in ("h1", "h2", "p"):
                lines.append(f"<{kind}>{e(b[1])}</{kind}>")
            elif kind == "img":
                lines.append(f"<p><img src='{e(b[1])}' alt='{e(b[2])}' style='max-width:100%'></p>")
            elif kind == "table":
                lines.append("<table border='1' cellspacing='0' cellpadding='3'><tr>"
                             + "".join(f"<th>{e(h)}</th>" for h in b[1]) + "</tr>")
                lines += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2]]
                lines.append("</table>")
    if fmt == "html":
        lines.append("</body></html>")
    return "\n".join(lines) + "\n"


def explain_pairs(model: nn.Module, images1: np.ndarray, images2: np.ndarray, masks1: np.ndarray,
                  masks2: np.ndarray, out_dir: str | os.PathLike, methods: Sequence[str] = ("fscam",),
                  model2: nn.Module | None = None, device: str = "cpu", batch_size: int = 260,
                  names: tuple[str, str] = ("model", "model2"), target: str = "pair", **kwargs: Any) -> dict[str, Any]:
    """Explain verification pairs (the eval scripts' "FS-CAM option").

    ``images1/images2``: uint8 [P,H,W,3] (as ``evaluation.load_bin`` gives them, split into the two
    sides) or normalised float [P,3,H,W]; ``masks1/masks2``: [P,H,W] label maps. Each image is
    explained against the clean embedding of the other image of its pair (``target='pair'``), or
    its own (``'self'``), or the argmax class of a classifier (``'class'``). ``model2`` (e.g. the
    FSErasing-trained model) is explained on the same images and compared. Other keyword
    arguments go to ``explain`` (grid, ci, seed, report, target_layer, options, fill, amp, chunk,
    progress, meta). Images are ordered all first sides, then all second sides.
    Returns ``explain``'s dict (tables, stats, comparison, files, report, ms_per_image).
    """
    if not (len(images1) == len(images2) == len(masks1) == len(masks2)):
        raise ValueError(f"pair sides differ in length: {len(images1)}, {len(images2)} images, "
                         f"{len(masks1)}, {len(masks2)} masks")
    p = len(images1)
    images = np.concatenate([_to_uint8(images1), _to_uint8(images2)])
    masks = np.concatenate([np.asarray(masks1), np.asarray(masks2)])

    def make_target(mdl: nn.Module, x: torch.Tensor) -> Target:
        if target == "pair":
            return pair_target(mdl, x[:p], x[p:], batch_size, kwargs.get("amp", False))
        if target == "self":
            return self_target(mdl, x, batch_size, kwargs.get("amp", False))
        if target == "class":
            return ClassTarget()
        raise ValueError(f"pair target must be 'pair', 'self' or 'class', got {target!r}")

    _warn_self_gradients(target, methods)
    models = _models(model, model2, names)
    kwargs.setdefault("row_labels", [f"pair {i} {side}" for side in "ab" for i in range(p)])
    kwargs.setdefault("meta", {})
    kwargs["meta"] = {"target": target, **kwargs["meta"]}
    return explain(models, images, masks, out_dir, make_target, methods, device=device, batch_size=batch_size,
                   **kwargs)


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


def _to_uint8(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 NHWC for pictures; normalised float NCHW inputs are mapped back."""
    t = torch.as_tensor(images)
    return t.numpy() if t.dtype == torch.uint8 else to_uint8(as_input(t))


# ----------------------------------------------------------------------------------------------
# data: a .bin pack with masks, or a rec with its mask cache
# ----------------------------------------------------------------------------------------------

def load_pack(bin_path: str | os.PathLike, masks: str | os.PathLike | None = None,
              parser: str | os.PathLike | None = None, pairs: str = "all", limit: int | None = None,
              device: str = "cpu", batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, np.ndarray]:
    """Selected pairs of a verification pack with masks:
    ``(images uint8 [2n,H,W,3] in pack order a,b,a,b..., issame [n], masks [2n,H,W], source, pair indices [n])``.

    Masks come from ``masks`` (.npy of the whole pack), else ``parser`` (predicted for the selected
    images only), else ``<pack minus .bin>.masks.npy``. Pairs: see ``select_pairs``.
    """
    images, issame = ev.load_bin(str(bin_path))
    sel = ev.select_pairs(issame, pairs, limit)
    if not len(sel):
        raise ValueError(f"{bin_path}: no {pairs!r} pairs to explain")
    keep = np.stack([2 * sel, 2 * sel + 1], 1).ravel()
    stem_masks = masks_path_for(bin_path)
    if masks is None and parser is None and not stem_masks.is_file():
        raise FileNotFoundError(f"{bin_path}: no masks: pass a masks .npy, a parser checkpoint, or put "
                                f"{stem_masks.name} beside the pack")
    if parser is not None and masks is None:
        source, m = f"parser {parser}", masks_from_checkpoint(parser, images[keep], device, batch_size)
    else:
        source = str(masks if masks is not None else stem_masks)
        m = np.asarray(load_masks(source, len(images), images.shape[1:3])[keep])
        as_masks(m, where=source)
    return images[keep], np.asarray(issame)[sel], m, source, sel


def explain_bin(model: nn.Module, bin_path: str | os.PathLike, out_dir: str | os.PathLike,
                masks: str | os.PathLike | None = None, parser: str | os.PathLike | None = None,
                pairs: str = "same", limit: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """``explain_pairs`` on (the first ``limit`` ``pairs`` of) a .bin pack; masks as in ``load_pack``."""
    images, _, m, source, sel = load_pack(bin_path, masks, parser, pairs, limit, kwargs.get("device", "cpu"))
    kwargs["meta"] = {"pack": str(bin_path), "masks": source, "pairs": f"{len(sel)} {pairs}", **kwargs.get("meta", {})}
    kwargs.setdefault("row_labels", [f"pair {i} {side}" for side in "ab" for i in sel])
    return explain_pairs(model, images[0::2], images[1::2], m[0::2], m[1::2], out_dir, **kwargs)


def load_rec(rec: str | os.PathLike, limit: int | None = None, mask_cache: str | os.PathLike | None = None,
             parser: str | os.PathLike | None = None, device: str = "cpu",
             batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """The first ``limit`` images of a rec with masks: ``(images, masks, labels, keys, source)``.

    Masks come from ``parser`` if given, else the mask cache (``mask_cache`` or the default
    ``<rec_dir>/fse_masks``, checked against the rec); records the cache has no mask for are skipped.
    """
    from fse_plugin.recordio import decode_image, image_index, open_rec, unpack
    cache, source = None, f"parser {parser}"
    images, masks, labels, keys = [], [], [], []
    with open_rec(rec) as reader:
        if parser is None:
            from fse_plugin.maskcache import MaskCache, default_cache_path
            rec_dir = Path(reader.rec_path).parent
            path = mask_cache or default_cache_path(rec_dir)
            cache, source = MaskCache(path), f"mask cache {path}"
            cache.check_source(rec_dir)
        idx = image_index(reader)
        for key, label in zip(idx.keys.tolist(), idx.labels.tolist()):
            if limit is not None and len(images) >= limit:
                break
            mask = cache.get(key) if cache is not None else None
            if cache is not None and mask is None:
                continue  # no mask for this record (e.g. undecodable when the cache was built)
            img = decode_image(unpack(reader.read(key))[1])
            if images and img.shape != images[0].shape:
                raise ValueError(f"{reader.rec_path}: record {key} has image shape {img.shape}, earlier ones "
                                 f"{images[0].shape}")
            if mask is not None and mask.shape != img.shape[:2]:
                raise ValueError(f"{source}: record {key} mask {mask.shape} does not fit image {img.shape[:2]}")
            images.append(img)
            masks.append(mask)
            labels.append(label)
            keys.append(key)
    if not images:
        raise ValueError(f"{rec}: no images with masks to explain")
    images_np = np.stack(images)
    masks_np = masks_from_checkpoint(parser, images_np, device, batch_size) if parser is not None else np.stack(masks)
    return images_np, masks_np, np.asarray(labels), np.asarray(keys), source


def explain_rec(model: nn.Module, rec: str | os.PathLike, out_dir: str | os.PathLike, limit: int | None = 256,
                mask_cache: str | os.PathLike | None = None, parser: str | os.PathLike | None = None,
                model2: nn.Module | None = None, names: tuple[str, str] = ("model", "model2"),
                target: str = "identity", methods: Sequence[str] = ("fscam",), device: str = "cpu",
                batch_size: int = 260, **kwargs: Any) -> dict[str, Any]:
    """Explain training images of a rec: each image against its identity centroid (``'identity'``,
    the mean embedding of the other loaded images of the same label), its own embedding (``'self'``),
    or a classifier's argmax (``'class'``)."""
    images, masks, labels, keys, source = load_rec(rec, limit, mask_cache, parser, device)
    amp = kwargs.get("amp", False)

    def make_target(mdl: nn.Module, x: torch.Tensor) -> Target:
        if target == "identity":
            return identity_target(mdl, x, labels, batch_size, amp)
        if target == "self":
            return self_target(mdl, x, batch_size, amp)
        if target == "class":
            return ClassTarget()
        raise ValueError(f"rec target must be 'identity', 'self' or 'class', got {target!r}")

    _warn_self_gradients(target, methods)
    models = _models(model, model2, names)
    kwargs.setdefault("row_labels", [f"key {k} id {lab}" for k, lab in zip(keys, labels)])
    kwargs["meta"] = {"rec": str(rec), "masks": source, "target": target, **kwargs.get("meta", {})}
    return explain(models, images, masks, out_dir, make_target, methods, device=device, batch_size=batch_size,
                   **kwargs)


# ----------------------------------------------------------------------------------------------
# evaluation glue: FS-CAM of the pairs of a pack or an IJB set (``fse eval ... --fscam``)
# ----------------------------------------------------------------------------------------------

def fscam_pairs(models: Mapping[str, nn.Module], images1: np.ndarray, images2: np.ndarray, masks1: np.ndarray,
                masks2: np.ndarray, out_dir: str | os.PathLike, methods: str | Sequence[str] = ("fscam",),
                device: str | torch.device = "cpu", meta: Mapping[str, Any] | None = None,
                progress: bool = True) -> Path:
    """FS-CAM (and any other ``cam`` method) of verification pairs for one or two models side by side,
    through ``cam.explain_pairs``; returns the report path."""
    names = list(models)
    result = explain_pairs(models[names[0]], images1, images2, masks1, masks2, out_dir, parse_methods(methods),
                           model2=models[names[1]] if len(names) > 1 else None, device=str(resolve_device(device)),
                           names=(names[0], names[1] if len(names) > 1 else "model2"), meta=dict(meta or {}),
                           progress=progress)
    return Path(result["report"])


def fscam_pack(models: Mapping[str, nn.Module], images: np.ndarray, issame: np.ndarray, masks: Any,
               out_dir: str | os.PathLike, methods: str | Sequence[str] = ("fscam",), pairs: str = "same",
               limit: int | None = 64, device: str | torch.device = "cpu", meta: Mapping[str, Any] | None = None,
               progress: bool = True) -> Path:
    """FS-CAM of the first ``limit`` ``pairs`` ('same', 'diff', 'all') of a pack."""
    sel = ev.select_pairs(issame, pairs, limit)
    if not len(sel):
        raise ValueError(f"no {pairs!r} pairs to explain")
    return fscam_pairs(models, images[2 * sel], images[2 * sel + 1], ev.stack_masks(masks, 2 * sel),
                       ev.stack_masks(masks, 2 * sel + 1), out_dir, methods, device,
                       {"pairs": f"{len(sel)} {pairs}", **(meta or {})}, progress)


def ijb_fscam_rows(meta: "ev.IJBMeta", pairs: str = "same", limit: int | None = 64) -> tuple[np.ndarray, np.ndarray]:
    """Meta rows of the images FS-CAM explains for IJB: each selected template pair is represented by the
    first image (in meta order) of each of its two templates."""
    sel = ev.select_pairs(meta.labels == 1, pairs, limit)
    unique, first = np.unique(meta.templates, return_index=True)
    return first[np.searchsorted(unique, meta.p1[sel])], first[np.searchsorted(unique, meta.p2[sel])]


def fscam_ijb(models: Mapping[str, nn.Module], meta: "ev.IJBMeta", masks: Any, out_dir: str | os.PathLike,
              methods: str | Sequence[str] = ("fscam",), pairs: str = "same", limit: int | None = 64,
              device: str | torch.device = "cpu", progress: bool = True) -> Path:
    rows1, rows2 = ijb_fscam_rows(meta, pairs, limit)
    if not len(rows1):
        raise ValueError(f"{meta.files['template_pair_label']}: no {pairs!r} pairs to explain")
    faces = ev.IJBFaces(meta)
    images = lambda rows: np.stack([faces.image(r) for r in rows])  # noqa: E731
    return fscam_pairs(models, images(rows1), images(rows2), ev.stack_masks(masks, rows1), ev.stack_masks(masks, rows2),
                       out_dir, methods, device, {"benchmark": meta.target, "pairs": f"{len(rows1)} {pairs}"}, progress)


# ----------------------------------------------------------------------------------------------
# training hook (arcface_torch): config.fse_cam = dict(...)
# ----------------------------------------------------------------------------------------------

class FSCAMCallback:
    """Wraps arcface_torch's CallBackVerification: after it runs, rank 0 also logs per-region FS-CAM
    importance of a few genuine pairs of each val pack to tensorboard (a scalar per region and an
    overlay image), at most once per ``every`` steps.

    Enabled by ``config.fse_cam = dict(...)`` once patches/0002-fse-cam.patch is applied. Keys:
    ``targets`` (pack names under cfg.rec; default cfg.val_targets), ``every`` (steps; default
    cfg.verbose), ``pairs`` (genuine pairs per pack, bounds the time: ~(1 + regions) x 2 x pairs
    forwards), ``masks`` (a .npy path, or {name: path}; default <rec>/<name>.masks.npy), ``parser``
    (checkpoint to predict masks once at start when no mask file exists), ``images`` (overlay rows),
    ``batch_size``, ``amp`` (bf16).
    """

    DEFAULTS = {"targets": None, "every": None, "pairs": 32, "masks": None, "parser": None, "images": 4,
                "batch_size": 260, "amp": False}

    def __init__(self, cfg: Mapping[str, Any], summary_writer: Any, verification: Callable | None = None,
                 rank: int | None = None) -> None:
        opts = dict(cfg.get("fse_cam") or {})
        unknown = sorted(set(opts) - set(self.DEFAULTS))
        if unknown:
            raise ValueError(f"config.fse_cam: unknown keys {unknown}; known: {sorted(self.DEFAULTS)}")
        self.opts = {**self.DEFAULTS, **opts}
        self.opts["targets"] = list(self.opts["targets"] or cfg.get("val_targets") or [])
        self.every = int(self.opts["every"] or cfg.get("verbose") or 2000)
        if self.every < 1:
            raise ValueError(f"config.fse_cam.every must be >= 1, got {self.every}")
        self.writer, self.verification = summary_writer, verification
        if rank is None:
            dist = torch.distributed
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.rank = rank
        self.next_step = self.every
        self.packs: list[tuple[str, np.ndarray, np.ndarray]] = []  # (name, images [2n], masks [2n]): a-sides then b-sides
        if self.rank == 0:
            for name in self.opts["targets"]:
                self._load(cfg, name)

    def _load(self, cfg: Mapping[str, Any], name: str) -> None:
        path = Path(cfg.get("rec", ".")) / f"{name}.bin"
        if not path.is_file():
            log.warning("fse_cam: %s not found, no FS-CAM for %s", path, name)
            return
        masks = self.opts["masks"]
        if isinstance(masks, Mapping):
            masks = masks.get(name)
        parser = None if masks else self.opts["parser"]
        if not (masks or parser or masks_path_for(path).is_file()):
            log.warning("fse_cam: no masks for %s (no %s, no masks/parser in config.fse_cam)", path,
                        masks_path_for(path).name)
            return
        device = "cuda" if torch.cuda.is_available() else "cpu"  # train_v2 has set this rank's device
        images, _, m, source, sel = load_pack(path, masks, parser, "same", int(self.opts["pairs"]), device)
        order = np.concatenate([np.arange(0, len(images), 2), np.arange(1, len(images), 2)])  # a-sides, b-sides
        self.packs.append((name, images[order], m[order]))
        log.info("fse_cam: %s: %d genuine pairs, masks from %s", name, len(sel), source)

    def __call__(self, num_update: int, backbone: nn.Module) -> None:
        if self.verification is not None:
            self.verification(num_update, backbone)
        if self.rank == 0 and num_update >= self.next_step:
            self.next_step = (num_update // self.every + 1) * self.every
            self.log(num_update, backbone)

    def log(self, step: int, backbone: nn.Module) -> dict[str, np.ndarray]:
        """Compute and write now; returns the mean importance per region of each pack."""
        model = getattr(backbone, "module", backbone)
        training = model.training
        model.eval()
        results = {}
        try:
            for name, images, masks in self.packs:
                t0 = time.perf_counter()
                p = len(images) // 2
                x = as_input(images).float()
                target = pair_target(model, x[:p], x[p:], self.opts["batch_size"], self.opts["amp"])
                scores, maps = fs_cam(model, x, masks, target, self.opts["batch_size"], self.opts["amp"])
                mean = region_mean(normalise_scores(scores).numpy())
                results[name] = mean
                if self.writer is not None:
                    for k in np.flatnonzero(~np.isnan(mean)):
                        self.writer.add_scalar(f"fse_cam_{name}/{CLASSES[k]}", float(mean[k]), step)
                    n = min(int(self.opts["images"]), len(x))
                    if n:
                        self.writer.add_image(f"fse_cam_{name}/overlay", overlay_strip(images[:n], masks[:n],
                                                                                      [maps[:n].numpy()]),
                                              step, dataformats="HWC")
                    self.writer.add_scalar(f"fse_cam_{name}/seconds", time.perf_counter() - t0, step)
                top = np.argsort(-np.nan_to_num(mean, nan=-1.0))[:3]
                log.info("[%s][%d] FS-CAM top regions: %s (%.1f s)", name, step,
                         ", ".join(f"{CLASSES[k]} {mean[k]:.3f}" for k in top), time.perf_counter() - t0)
        finally:
            model.train(training)
        return results
