"""What a CAM explains: a score per image, read from the model's output.

The reference FS-CAM explains classifiers: the softmax probability of the argmax class
(``ClassTarget``). arcface_torch backbones output embeddings, so the score can also be the cosine
similarity to a reference embedding (``EmbeddingTarget``): the other image of a verification pair
(``pair_target``), the image's own clean embedding (``self_target``) or the centroid of its
identity's other images (``identity_target``). One target object serves FS-CAM, ablation and RISE
(``score`` over batches of variants) and the pytorch-grad-cam methods (``target[i]`` is a callable
on one image's output, the form the library takes as ``targets=[...]``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fse_plugin.cam.inputs import batched_forward
from fse_plugin.common import FSEError

__all__ = ["TARGETS", "Target", "ClassTarget", "EmbeddingTarget", "pair_target", "self_target",
           "identity_target", "check_target", "resolve_target", "target_factory"]

TARGETS: dict[str, str] = {
    "class": "softmax probability of the argmax class of the clean image (classifier outputs)",
    "pair": "cosine to the clean embedding of the other image of each pair",
    "identity": "cosine to the centroid of the identity's other loaded images",
    "self": "cosine to the image's own clean embedding",
}
"""The target kinds by name, as ``fse cam --target`` and the reports spell them."""


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
        """Fix what depends on the clean output (the argmax class); the clean outputs are one per
        image."""
        return self

    def take(self, idx: slice | Sequence[int] | torch.Tensor) -> "Target":
        """The targets of a subset of images (a target with one entry serves any subset)."""
        if len(self) == 1:
            return self
        return self._take(torch.arange(len(self))[idx] if isinstance(idx, slice)
                          else torch.as_tensor(idx).long())

    def __getitem__(self, i: int) -> "Target":
        return self.take([int(i)]) if len(self) != 1 else self

    def entry(self, index: torch.Tensor) -> torch.Tensor:
        """Own entry index per row: broadcast a single entry, else ``index`` itself."""
        return torch.zeros_like(index) if len(self) == 1 else index

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if len(self) != 1:
            raise FSEError(f"{self!r} holds {len(self)} entries; a pytorch-grad-cam target scores "
                           "one image: use target[i]")
        rows = output if output.ndim > 1 else output[None]
        s = self.score(rows, torch.zeros(len(rows), dtype=torch.long, device=rows.device))
        return s if output.ndim > 1 else s[0]


class ClassTarget(Target):
    """Softmax probability (or raw logit) of a class: the reference FS-CAM score for classifiers.

    ``ids=None`` means the argmax of the clean output, as the reference; else one id for all
    images or one per image.
    """

    def __init__(self, ids: int | Sequence[int] | torch.Tensor | None = None,
                 softmax: bool = True) -> None:
        self.ids = None if ids is None else torch.as_tensor(ids, dtype=torch.long).reshape(-1).cpu()
        if self.ids is not None and bool((self.ids < 0).any()):
            raise FSEError(f"class ids must be >= 0, got {int(self.ids.min())}")
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
            raise FSEError("ClassTarget(None) must be resolved on the clean outputs first "
                           "(target.resolve)")
        ids = self.ids.to(outputs.device)[self.entry(index)]
        if int(ids.max()) >= outputs.shape[1]:
            raise FSEError(f"class id {int(ids.max())} outside the model's {outputs.shape[1]} "
                           "outputs")
        s = outputs.float().softmax(1) if self.softmax else outputs.float()
        return s.gather(1, ids[:, None])[:, 0]

    def __repr__(self) -> str:
        ids = ("argmax" if self.ids is None
               else (int(self.ids[0]) if len(self.ids) == 1 else f"{len(self.ids)} ids"))
        return f"ClassTarget({ids}, softmax={self.softmax})"


class EmbeddingTarget(Target):
    """Cosine similarity of the embedding to a reference embedding (one for all, or one per
    image)."""

    def __init__(self, ref_embeddings: torch.Tensor | np.ndarray) -> None:
        ref = torch.as_tensor(ref_embeddings).float()
        if ref.ndim == 1:
            ref = ref[None]
        if ref.ndim != 2:
            raise FSEError(f"reference embeddings must be [D] or [N,D], got {tuple(ref.shape)}")
        self.ref = F.normalize(ref, dim=1)

    def __len__(self) -> int:
        return len(self.ref)

    def _take(self, idx: torch.Tensor) -> "EmbeddingTarget":
        return EmbeddingTarget(self.ref[idx.to(self.ref.device)])

    def score(self, outputs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        out = outputs.float().flatten(1)
        if out.shape[1] != self.ref.shape[1]:
            raise FSEError(f"model output has {out.shape[1]} features, reference embeddings "
                           f"{self.ref.shape[1]}")
        ref = self.ref.to(out.device)[self.entry(index).to(out.device)]
        return (F.normalize(out, dim=1) * ref).sum(1)

    def __repr__(self) -> str:
        return f"EmbeddingTarget({len(self.ref)} x {self.ref.shape[1]})"


def pair_target(model: nn.Module, images1: torch.Tensor, images2: torch.Tensor,
                batch_size: int = 256, precision: str = "fp32") -> EmbeddingTarget:
    """Targets for ``cat([images1, images2])``: each image scored against its partner's clean
    embedding."""
    emb = batched_forward(model, torch.cat([torch.as_tensor(images1), torch.as_tensor(images2)]),
                          batch_size, precision)
    p = len(images1)
    return EmbeddingTarget(torch.cat([emb[p:], emb[:p]]).cpu())


def self_target(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                precision: str = "fp32") -> EmbeddingTarget:
    """Each image scored against its own clean embedding (what of the face makes it itself)."""
    return EmbeddingTarget(batched_forward(model, images, batch_size, precision).cpu())


def identity_target(model: nn.Module, images: torch.Tensor, labels: Sequence[int],
                    batch_size: int = 256, precision: str = "fp32") -> EmbeddingTarget:
    """Each image scored against the centroid of the OTHER images of its identity (its own clean
    embedding when it is the only one), so the score measures identity, not self-similarity."""
    emb = F.normalize(batched_forward(model, images, batch_size, precision).cpu(), dim=1)
    labels_t = torch.as_tensor(np.asarray(labels)).long()
    if len(labels_t) != len(emb):
        raise FSEError(f"{len(labels_t)} labels for {len(emb)} images")
    _, inv = torch.unique(labels_t, return_inverse=True)
    sums = torch.zeros(int(inv.max()) + 1, emb.shape[1]).index_add_(0, inv, emb)
    counts = torch.bincount(inv).float()
    others = sums[inv] - emb
    alone = counts[inv] < 2
    others[alone] = emb[alone]
    return EmbeddingTarget(others)


def check_target(target: Target, n: int) -> None:
    """A target fits ``n`` images when it has one entry, one per image, or none yet (argmax)."""
    if len(target) not in (0, 1, n):
        raise FSEError(f"{target!r} has {len(target)} entries for {n} images (need 1 or {n})")


def resolve_target(model: nn.Module, x: torch.Tensor, target: Target | None,
                   batch_size: int = 256) -> Target:
    """Target with the argmax filled in (one clean forward when a ClassTarget needs it)."""
    target = ClassTarget() if target is None else target
    check_target(target, len(x))
    if isinstance(target, ClassTarget) and target.ids is None:
        return target.resolve(batched_forward(model, x, batch_size).cpu())
    return target


def target_factory(kind: str, allowed: Sequence[str], labels: Sequence[int] | None = None,
                   batch_size: int = 256,
                   precision: str = "fp32") -> Callable[[nn.Module, torch.Tensor], Target]:
    """``make_target(model, images)`` for a target kind (``TARGETS``) among those a source allows.

    'pair' takes the images as all first sides, then all second sides; 'identity' needs ``labels``.
    """
    if kind not in allowed:
        raise FSEError(f"target must be one of {', '.join(map(repr, allowed))} here, got {kind!r}")

    def make_target(model: nn.Module, x: torch.Tensor) -> Target:
        if kind == "pair":
            p = len(x) // 2
            return pair_target(model, x[:p], x[p:], batch_size, precision)
        if kind == "identity":
            return identity_target(model, x, labels, batch_size, precision)
        if kind == "self":
            return self_target(model, x, batch_size, precision)
        return ClassTarget()

    return make_target
