"""The reference FS-CAM target for arcface_torch checkpoints: identity logits of the classifier
head.

FS-CAM as published scores the softmax probability of a classifier's argmax class. An arcface_torch
backbone outputs embeddings; its training head (PartialFC + CombinedMarginLoss) holds one centre
per training identity and scores an embedding by the cosine to each L2-normalised centre, scaled by
``s`` (64 in every arcface_torch config); the angular margin is added to the true class only while
training, so without a label the logits are ``s * cos``. ``IdentityLogits`` rebuilds exactly that
from the checkpoint's head, so ``ClassTarget`` and the pixel CAMs see logits. The scale matters only
through the softmax: 64 gives the model's own (margin-free) training posterior.

``choose_target`` picks the target of ``fse cam`` for the checkpoints at hand and says in words
which one ran: the identity logits when every model has a head, else the embedding targets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from fse_plugin.cam.targets import TARGETS
from fse_plugin.common import FSEError

__all__ = ["ARCFACE_SCALE", "IdentityLogits", "TargetChoice", "choose_target", "explained_model"]

ARCFACE_SCALE = 64.0
"""``s`` of arcface_torch's CombinedMarginLoss (margin_list (1.0, 0.5, 0.0), s=64 in its
configs)."""


class IdentityLogits(nn.Module):
    """``backbone`` followed by a normalised linear head: ``scale * cos(embedding, head rows)``.

    ``head``: the classifier weight ``[num_classes, embedding_size]`` (rows are normalised here).
    ``backbone`` stays reachable as ``.backbone`` (pixel CAMs hook its layers).
    """

    def __init__(self, backbone: nn.Module, head: torch.Tensor,
                 scale: float = ARCFACE_SCALE) -> None:
        super().__init__()
        if head.ndim != 2:
            raise FSEError("classifier head must be [num_classes, embedding_size], got "
                           f"{tuple(head.shape)}")
        self.backbone = backbone
        self.register_buffer("head", F.normalize(head.detach().float(), dim=1))
        self.scale = float(scale)

    @property
    def num_classes(self) -> int:
        return len(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.backbone(x).flatten(1)
        if emb.shape[1] != self.head.shape[1]:
            raise FSEError(f"backbone embeds into {emb.shape[1]} features, the classifier head "
                           f"expects {self.head.shape[1]}")
        return self.scale * F.linear(F.normalize(emb, dim=1), self.head.to(emb.dtype))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, scale={self.scale:g}"


@dataclass(frozen=True)
class TargetChoice:
    """The target kind that runs (a key of ``targets.TARGETS``) and, in words, what it scores."""

    kind: str
    description: str


def choose_target(requested: str | None, default: str, heads: Mapping[str, int | None],
                  weights: Mapping[str, str | None], scale: float = ARCFACE_SCALE,
                  scripted: bool = False) -> TargetChoice:
    """Which target ``fse cam`` runs for models whose heads have ``heads[name]`` classes (None: no
    head).

    ``requested`` None picks 'class' (the reference) when every model has a head, else ``default``
    ('pair' for packs, 'identity' for recs). 'class' without a head is refused (an embedding has no
    classes), except for TorchScript models (``scripted``), whose outputs are then taken as logits.
    """
    headless = [name for name, n in heads.items() if n is None]
    kind = requested or ("class" if not headless else default)
    if kind not in TARGETS:
        raise FSEError(f"unknown target {kind!r}; known: {', '.join(TARGETS)}")
    if kind != "class":
        why = (f" (no classifier head in {_source(weights[headless[0]])})"
               if requested is None and headless else "")
        return TargetChoice(kind, TARGETS[kind] + why)
    if headless and not scripted:
        raise FSEError(f"--target class needs a classifier head, and {_source(weights[headless[0]])} has none "
                       "(arcface_torch's model.pt holds the backbone only): pass a checkpoint with the head, or "
                       f"choose --target {default}")
    if headless:
        return TargetChoice(kind, "softmax of the scripted model's outputs taken as class logits, "
                                  "argmax class of each clean image")
    sizes = sorted(set(heads.values()))
    classes = " / ".join(f"{n:,}" for n in sizes)
    return TargetChoice(kind, f"identity logits of the checkpoint's classifier head ({classes} classes; "
                              f"cosine x {scale:g}, softmax), argmax class of each clean image")


def explained_model(backbone: nn.Module, head: torch.Tensor | None, kind: str,
                    scale: float = ARCFACE_SCALE) -> nn.Module:
    """The model a target kind explains: backbone + identity logits for 'class' with a head, else
    the backbone."""
    return (IdentityLogits(backbone, head, scale).eval() if kind == "class" and head is not None
            else backbone)


def _source(weights: str | None) -> str:
    return str(weights) if weights else "the randomly initialised model"
