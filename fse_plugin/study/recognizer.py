"""The demo's and the study's recognition training: ``iresnet_tiny`` + an ArcFace margin head + SGD,
counted in steps.

A compact loop over the plugin's dataset (``FSEMXFaceDataset``, with FSErasing when ``fse`` is given
and any ``transform`` applied last on the normalised tensor), for CPU minutes on synthetic faces.
Real training is arcface_torch's ``train_v2.py`` with the one config line (``study.arcface`` runs it).
The budget is a number of steps and the learning rate follows a warm-up + cosine over them, so a
run repeats bit for bit with the same seed and thread count. ``max_seconds`` is only a safety stop:
a run it ends is reported (``stopped_by_time``) as not repeatable.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fse_plugin.common import warmup_cosine

__all__ = ["ArcMarginHead", "BuiltinTrainer", "train_recognizer"]


class ArcMarginHead(nn.Module):
    """ArcFace's additive angular margin over L2-normalised class centres (no Partial FC: the demo
    has hundreds of identities, not millions)."""

    def __init__(self, embedding_size: int, num_classes: int, s: float = 32.0, m: float = 0.3) -> None:
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


def train_recognizer(rec_dir: str | os.PathLike, out: str | os.PathLike, fse: dict | None, steps: int, *,
                     seed: int = 0, batch_size: int = 64, lr: float = 0.1, num_workers: int = 1,
                     device: str = "cpu", transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     max_seconds: float = 0.0, progress: bool = True, desc: str = "train") -> dict[str, Any]:
    """Train ``iresnet_tiny`` on the rec for ``steps`` steps (erasing when ``fse`` is given) and save the
    backbone state_dict to ``out`` (arcface_torch's ``model.pt`` convention).

    The seed fixes the initialisation, the data order and the per-worker draws of flips and
    augmentation, so runs of two variants with one seed are paired. ``max_seconds`` > 0 stops the
    run early if it takes longer (a safety stop on a busy machine; the result is then flagged).
    """
    if steps <= 0:
        raise ValueError(f"train_recognizer: steps must be > 0, got {steps}")
    from fse_plugin.backbone import iresnet_tiny
    from fse_plugin.dataset import FSEMXFaceDataset

    torch.manual_seed(seed)
    dataset = FSEMXFaceDataset(rec_dir, 0, fse=fse, transform=transform)
    backbone = iresnet_tiny().to(device)
    head = ArcMarginHead(512, int(dataset.labels.max()) + 1).to(device)
    opt = torch.optim.SGD([{"params": backbone.parameters()}, {"params": head.parameters()}], lr=lr,
                          momentum=0.9, weight_decay=5e-4)
    start, step, epoch, losses, stopped = time.perf_counter(), 0, 0, [], False
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress, leave=False)
    loader = _loader(dataset, batch_size, num_workers, seed)
    while step < steps and not stopped:
        for img, label in loader:
            if step >= steps:
                break
            if max_seconds > 0 and time.perf_counter() - start > max_seconds:
                stopped = True
                break
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(step / steps, step, lr, min(50, steps // 4))
            loss = head(backbone(img.to(device)), label.to(device))
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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(backbone.state_dict(), out)
    return {"steps": step, "steps_asked": steps, "epochs": epoch, "samples": step * batch_size,
            "seconds": time.perf_counter() - start, "stopped_by_time": stopped,
            "final_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
            "missing_masks": dataset.missing_masks, "weights": str(out)}


class BuiltinTrainer:
    """One study run per (variant, seed) with :func:`train_recognizer` on the study's rec and cache."""
    name = "builtin"

    def __init__(self, rec_dir: str | os.PathLike, masks: str | os.PathLike, steps: int, batch_size: int = 64,
                 device: str = "cpu", num_workers: int = 1, progress: bool = True) -> None:
        self.rec_dir, self.masks, self.steps, self.batch_size = Path(rec_dir), str(masks), int(steps), int(batch_size)
        self.device, self.num_workers, self.progress = device, num_workers, progress

    def __call__(self, variant: Any, seed: int, run_dir: Path) -> dict[str, Any]:
        return train_recognizer(self.rec_dir, Path(run_dir) / "model.pt", variant.fse_config(self.masks), self.steps,
                                seed=seed, batch_size=self.batch_size, num_workers=self.num_workers,
                                device=self.device, transform=variant.transform(), progress=self.progress,
                                desc=f"{variant.name} seed {seed}")

    def load(self, weights: str | os.PathLike) -> nn.Module:
        from fse_plugin.backbone import load_backbone
        return load_backbone(weights, network="tiny")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(network=tiny, steps={self.steps}, batch_size={self.batch_size}, "
                f"device={self.device})")
