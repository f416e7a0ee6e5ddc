"""The demo's and the study's recognition training: ``iresnet_tiny`` + an ArcFace margin head + SGD,
counted in steps (``RecognizerSettings``).

A compact loop over the plugin's dataset (``FSEMXFaceDataset``, with FSErasing when ``fse`` is given
and any ``transform`` applied last on the normalised tensor), for CPU minutes on synthetic faces.
Real training is arcface_torch's ``train_v2.py`` with the one config line (``study.arcface`` runs
it). The budget is a number of steps and the learning rate follows a warm-up + cosine over them, so
a run repeats bit for bit with the same seed and thread count.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fse_plugin.common import checks, warmup_cosine

__all__ = ["ArcMarginHead", "RecognizerSettings", "train_recognizer", "load_recognizer_weights"]


class ArcMarginHead(nn.Module):
    """ArcFace's additive angular margin over L2-normalised class centres (no Partial FC: the demo
    has hundreds of identities, not millions)."""

    def __init__(self, embedding_size: int, num_classes: int, s: float = 32.0,
                 m: float = 0.3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size).normal_(0, 0.01))
        self.s, self.m = s, m

    def forward(self, emb: torch.Tensor, labels_: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1 + 1e-6, 1 - 1e-6)
        target = torch.cos(torch.acos(cos.gather(1, labels_[:, None])) + self.m)
        logits = cos.scatter(1, labels_[:, None], target)
        return F.cross_entropy(self.s * logits, labels_)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(classes={self.weight.shape[0]}, s={self.s}, m={self.m})"


def _seed_worker(seed: int) -> Callable[[int], None]:
    """arcface_torch's worker seeding (num_workers * rank + worker_id + seed), rank 0."""
    def init(worker_id: int) -> None:
        np.random.seed(worker_id + seed)
        torch.manual_seed(worker_id + seed)
    return init


def _loader(dataset: torch.utils.data.Dataset, batch_size: int, num_workers: int, seed: int):
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed), persistent_workers=num_workers > 0,
        worker_init_fn=_seed_worker(seed))


@dataclass(frozen=True)
class RecognizerSettings:
    """How one recognizer trains: ``steps`` of ``batch_size`` (the counted budget), the seed that
    fixes its initialisation, data order and augmentation draws, and the network's ``width``
    (channels of the first of ``iresnet_tiny``'s four stages; each stage doubles it).
    ``max_seconds`` > 0 is a safety stop only: a run it ends is reported (``stopped_by_time``) as
    not repeatable."""
    steps: int
    batch_size: int = 64
    seed: int = 0
    lr: float = 0.1
    width: int = 8
    num_workers: int = 1
    device: str = "cpu"
    max_seconds: float = 0.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "width"):
            checks.count(getattr(self, name), name)
        checks.count(self.num_workers, "num_workers", minimum=0)
        checks.number(self.lr, "lr", lo=0, lo_open=True)
        checks.number(self.max_seconds, "max_seconds", lo=0)


def _network(width: int) -> nn.Module:
    from fse_plugin.backbone import iresnet_tiny
    return iresnet_tiny(widths=tuple(width * 2 ** i for i in range(4)))


def load_recognizer_weights(weights: str | os.PathLike, width: int = 8) -> nn.Module:
    """The ``iresnet_tiny`` of ``width`` that :func:`train_recognizer` saved to ``weights``."""
    model = _network(width)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model


def _save(state: dict, out: Path) -> None:
    """torch.save through a temporary name: an interrupted run leaves no half-written
    ``model.pt``."""
    from fse_plugin.common.files import atomic_output
    with atomic_output(out) as tmp:
        torch.save(state, tmp)


def train_recognizer(rec_dir: str | os.PathLike, out: str | os.PathLike,
                     settings: RecognizerSettings, *, fse: dict | None = None,
                     transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     progress: bool = True, desc: str = "train") -> dict[str, Any]:
    """Train ``iresnet_tiny`` on the rec for ``settings.steps`` steps (erasing when ``fse`` is
    given, then ``transform`` on the normalised tensor) and save the backbone state_dict to ``out``
    (arcface_torch's ``model.pt`` convention).

    The seed fixes the initialisation, the data order and the per-worker draws of flips and
    augmentation, so runs of two variants with one seed are paired.
    """
    from fse_plugin.dataset import FSEMXFaceDataset
    s = settings
    torch.manual_seed(s.seed)
    dataset = FSEMXFaceDataset(rec_dir, 0, fse=fse, transform=transform)
    backbone = _network(s.width).to(s.device)
    head = ArcMarginHead(512, int(dataset.labels.max()) + 1).to(s.device)
    opt = torch.optim.SGD([{"params": backbone.parameters()}, {"params": head.parameters()}],
                          lr=s.lr, momentum=0.9, weight_decay=5e-4)
    start, step, epoch, losses, stopped = time.perf_counter(), 0, 0, [], False
    bar = tqdm(total=s.steps, desc=desc, unit="step", disable=not progress, leave=False)
    loader = _loader(dataset, s.batch_size, s.num_workers, s.seed)
    while step < s.steps and not stopped:
        for img, label in loader:
            if step >= s.steps:
                break
            if s.max_seconds > 0 and time.perf_counter() - start > s.max_seconds:
                stopped = True
                break
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(step / s.steps, step, s.lr, min(50, s.steps // 4))
            loss = head(backbone(img.to(s.device)), label.to(s.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(backbone.parameters(), 5.0)
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", epoch=epoch)
        epoch += 1
    bar.close()
    _save(backbone.state_dict(), Path(out))
    return {"steps": step, "steps_asked": s.steps, "epochs": epoch, "samples": step * s.batch_size,
            "seconds": time.perf_counter() - start, "stopped_by_time": stopped,
            "final_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
            "missing_masks": dataset.missing_masks, "weights": str(out)}
