"""Parser training on a FaceSynthetics-layout folder (CPU, CUDA, torchrun DDP), budgeted in steps.

A run aligns the folder once (``facesynthetics.prepare_dataset``), holds out a seeded split, and
trains a :class:`UNetRes18` with class-weighted cross-entropy and AdamW under a warm-up + cosine
schedule over its step budget (``epochs`` or ``steps``), validating and checkpointing after every
epoch (``last.pt``; ``best.pt`` by val mIoU). With a step budget the weights are the same, bit for
bit, on every run with the same data, seed, device and thread count; ``time_budget`` then only stops
a run early (a safety stop). Without a step budget (``epochs=None``) the run is timed: the learning
rate anneals to zero as ``time_budget`` runs out, and how far it gets depends on the machine.
Checkpoints are written whole or not at all: an interrupted run resumes from the last epoch's
``last.pt``.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from fse_plugin.common import FSEError, checks, dist_env, resolve_device, to_input, warmup_cosine
from fse_plugin.common.interrupts import sigint_deferred
from fse_plugin.common.precision import PRECISIONS
from fse_plugin.common.runtime import mixed_precision, resolve_precision
from fse_plugin.common.text import plural
from fse_plugin.labels import IGNORE_INDEX
from fse_plugin.parsing.augment import ParserAugment
from fse_plugin.parsing.budget import Budget, Clock
from fse_plugin.parsing.checkpoint import ParserCheckpointError, read_checkpoint, save_parser
from fse_plugin.parsing.facesynthetics import (AlignedSet, label_dir, prepare_dataset,
                                               read_anno_list, split_indices)
from fse_plugin.parsing.metrics import evaluate_parser
from fse_plugin.parsing.training_data import ParsingDataset, class_weights
from fse_plugin.parsing.model import UNetRes18
from fse_plugin.parsing.widths import DEFAULT_FEATURE_SCALE, FEATURE_SCALES

__all__ = ["TrainSettings", "TrainingResult", "train_parser"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """How ``train_parser`` trains; every value checked when the settings are made.

    Budget: ``steps`` optimizer steps if given, else ``epochs`` epochs (None with ``time_budget``: a
    timed run); ``time_budget`` seconds of training incl. validation (not the one-off alignment)
    stop a run early. The learning rate ``lr`` warms up over ``warmup_steps`` and anneals to zero at
    the end of the budget; AdamW's ``weight_decay``; cross-entropy weighted by :func:`class_weights`
    with ``class_weight_power``. ``feature_scale`` divides the parser's widths; ``val_fraction`` of
    the frames is held out, split by ``seed`` (which also seeds the weights and the augmentation).
    ``workers``: DataLoader workers and alignment processes. ``precision``: fp32, or autocast to
    fp16 (with loss scaling) / bf16. ``augment`` defaults to ``ParserAugment()``. ``resume`` (a
    path, or 'auto' for ``out/last.pt``) continues from the saved epoch with the saved optimizer,
    split and elapsed time. ``cache_dir``: where aligned faces are cached (default ``out/cache``).
    Loss and learning rate go to tensorboard every ``log_every`` steps.
    """
    epochs: int | None = 30
    steps: int | None = None
    batch_size: int = 32
    lr: float = 5e-3
    weight_decay: float = 1e-4
    feature_scale: int = DEFAULT_FEATURE_SCALE
    val_fraction: float = 0.1
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    precision: str = "auto"
    time_budget: float | None = None
    class_weight_power: float = 0.5
    augment: ParserAugment | None = None
    resume: str | os.PathLike | None = None
    cache_dir: str | os.PathLike | None = None
    warmup_steps: int = 50
    log_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "steps"):
            if getattr(self, name) is not None:
                checks.count(getattr(self, name), name)
        if self.time_budget is not None:
            checks.number(self.time_budget, "time_budget", lo=0.0, lo_open=True)
        if self.epochs is None and self.steps is None and self.time_budget is None:
            raise FSEError("train_parser: give epochs, steps or a time budget")
        for name in ("batch_size", "log_every"):
            checks.count(getattr(self, name), name)
        for name in ("seed", "workers", "warmup_steps"):
            checks.count(getattr(self, name), name, minimum=0)
        checks.number(self.lr, "lr", lo=0.0, lo_open=True)
        checks.number(self.weight_decay, "weight_decay", lo=0.0)
        checks.number(self.class_weight_power, "class_weight_power", lo=0.0)
        checks.number(self.val_fraction, "val_fraction", 0.0, 1.0, hi_open=True)
        checks.choice(self.feature_scale, "feature_scale", FEATURE_SCALES)
        checks.choice(self.precision, "precision", ("auto", *PRECISIONS))


@dataclass(frozen=True)
class TrainingResult:
    """What a training run did: ``epochs`` and ``steps`` reached, ``elapsed`` training seconds and
    this process's ``cpu_seconds`` (on a shared machine, how much of the wall-clock the run really
    got), the last validation's ``val_mf1``/``val_miou`` (NaN without a held-out split),
    ``best.pt``'s ``best_val_miou``/``best_val_mf1``, the paths ``last``, ``best`` and ``cache``
    (aligned faces), and the split sizes ``n_train``, ``n_val``."""
    epochs: int
    steps: int
    elapsed: float
    cpu_seconds: float
    val_mf1: float
    val_miou: float
    best_val_miou: float
    best_val_mf1: float
    last: str
    best: str
    cache: str
    n_train: int
    n_val: int


class _Placement(NamedTuple):
    """Where this process trains: its rank of ``world`` (1 without torchrun) and its device."""
    rank: int
    world: int
    device: torch.device


class _Parts(NamedTuple):
    """What a run trains with."""
    model: UNetRes18
    net: nn.Module  # the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # loss scaling for fp16; a pass-through otherwise
    loader: DataLoader
    loss_fn: nn.Module


def _resume_state(out: Path, resume: str | os.PathLike | None) -> dict[str, Any] | None:
    """The training checkpoint to continue from (``'auto'``: ``out/last.pt``), or None."""
    if resume is None:
        return None
    path = out / "last.pt" if str(resume) == "auto" else Path(resume)
    if not path.is_file():
        raise FSEError(f"resume: no checkpoint at {path} to continue from "
                       f"(leave out --resume, or name one)")
    state = read_checkpoint(path)
    if not isinstance(state, dict) or not {"optimizer", "epoch", "model"} <= set(state):
        raise ParserCheckpointError(f"{path}: not a training checkpoint (no optimizer/epoch); "
                                    f"cannot resume")
    return state


def _aligned_on_every_rank(data: str | os.PathLike, cache_dir: Path, out: Path, where: _Placement,
                           settings: TrainSettings) -> AlignedSet:
    """Rank 0 aligns the folder (once, cached); the others memory-map its cache."""
    if where.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        aligned = prepare_dataset(data, cache_dir, workers=settings.workers,
                                  progress=settings.progress)
    if where.world > 1:
        torch.distributed.barrier()
    if where.rank != 0:
        aligned = prepare_dataset(data, cache_dir, progress=False)
    return aligned


def _model_and_optimizer(settings: TrainSettings, state: dict | None,
                         where: _Placement) -> tuple[UNetRes18, nn.Module, torch.optim.Optimizer]:
    """Seeded model (or the resumed one) on the device, its DDP wrapper under torchrun,
    and AdamW."""
    dev = where.device
    torch.manual_seed(settings.seed)
    model = UNetRes18(feature_scale=settings.feature_scale)
    if state is not None:
        model.load_state_dict(state["model"])
    model = model.to(dev, memory_format=_train_format(dev))
    net = model
    if where.world > 1:
        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    return model, net, opt


def _train_format(dev: torch.device) -> torch.memory_format:
    # channels_last: cuDNN's fast layout. Not for CPU training: little gain there, and torch 2.14's
    # CPU backward crashes (SIGSEGV) in channels_last at feature_scale 16
    return torch.channels_last if dev.type == "cuda" else torch.contiguous_format


def _train_loader(dataset: ParsingDataset, settings: TrainSettings, where: _Placement,
                  data: str | os.PathLike) -> DataLoader:
    """Shuffled batches of this rank's shard (a DistributedSampler, also with one rank: same order
    either way)."""
    batch, world = settings.batch_size, where.world
    drop_last = len(dataset) >= 2 * batch * world
    sampler = DistributedSampler(dataset, num_replicas=world, rank=where.rank, shuffle=True,
                                 seed=settings.seed, drop_last=drop_last)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=settings.workers,
                        pin_memory=where.device.type == "cuda", drop_last=drop_last,
                        persistent_workers=False)
    if len(loader) == 0:
        raise FSEError(f"{data}: {plural(len(dataset), 'training face')} give no batch of {batch} "
                       f"on {plural(world, 'rank')}; lower --batch-size")
    return loader


class _Run:
    """One training run's moving parts and progress; :meth:`train_epoch` and :meth:`end_epoch` are
    its steps."""

    def __init__(self, settings: TrainSettings, where: _Placement, parts: _Parts, budget: Budget,
                 clock: Clock, out: Path, meta: dict[str, Any],
                 state: dict[str, Any] | None) -> None:
        self.settings, self.where, self.parts = settings, where, parts
        self.budget, self.clock = budget, clock
        self.out, self.meta = out, meta
        state = state or {}
        self.epoch, self.step = int(state.get("epoch", 0)), int(state.get("step", 0))
        self.best = float(state.get("best_val_miou", -1.0))
        self.best_mf1 = float(state.get("best_val_mf1", math.nan))
        self.last_val = {k: float(state[k]) for k in ("val_miou", "val_mf1") if k in state}
        self.last_loss = math.nan
        self.writer = None
        if where.rank == 0:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(out / "tb"))

    def _batches(self) -> tqdm:
        """This epoch's batches; DataLoader workers are born deaf to Ctrl-C
        (the main process stops them)."""
        loader = self.parts.loader
        loader.sampler.set_epoch(self.epoch)
        loader.dataset.set_epoch(self.epoch)
        with sigint_deferred():
            batches = iter(loader)
        total = f"/{self.budget.epochs}" if self.budget.epochs is not None else ""
        return tqdm(batches, total=len(loader), desc=f"epoch {self.epoch + 1}{total}", leave=False,
                    disable=self.where.rank != 0 or not self.settings.progress)

    def train_epoch(self) -> bool:
        """One pass over the loader; True when the step or time budget ran out during it."""
        self.parts.net.train()
        bar = self._batches()
        stopped = False
        for images, masks in bar:
            now = self.clock.elapsed()
            if not self.clock.left(now):
                stopped = True
                break
            cur_lr = warmup_cosine(self.budget.progress(self.step, now), self.step,
                                   self.settings.lr, self.settings.warmup_steps)
            loss = self._step(images, masks, cur_lr)
            if self.step % self.settings.log_every == 0 or self.step == 1:
                self._log(loss, cur_lr)
                bar.set_postfix(loss=f"{self.last_loss:.4f}", lr=f"{cur_lr:.2e}")
            if self.budget.steps_done(self.step):
                stopped = True
                break
        bar.close()
        self.epoch += 1
        return stopped

    def _step(self, images: torch.Tensor, masks: torch.Tensor, lr: float) -> torch.Tensor:
        parts, dev = self.parts, self.where.device
        for g in parts.opt.param_groups:
            g["lr"] = lr
        channels_last = _train_format(dev) == torch.channels_last
        x = to_input(images.to(dev, non_blocking=True), channels_last=channels_last)
        y = masks.to(dev, non_blocking=True)
        with mixed_precision(dev, self.settings.precision):
            loss = parts.loss_fn(parts.net(x).float(), y)
        parts.opt.zero_grad(set_to_none=True)
        parts.scaler.scale(loss).backward()
        parts.scaler.step(parts.opt)
        parts.scaler.update()
        self.step += 1
        return loss

    def _log(self, loss: torch.Tensor, lr: float) -> None:
        lv = loss.detach()
        if self.where.world > 1:  # the mean over ranks, not rank 0's shard alone
            torch.distributed.all_reduce(lv)
            lv = lv / self.where.world
        self.last_loss = float(lv)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", self.last_loss, self.step)
            self.writer.add_scalar("train/lr", lr, self.step)

    def end_epoch(self, aligned: AlignedSet, val_idx: np.ndarray) -> None:
        """Validate and checkpoint on rank 0 (every rank waits), and time it for the budget."""
        t_val = time.perf_counter()
        if self.where.rank == 0:
            self._validate(aligned, val_idx)
            self._save(len(val_idx) > 0)
            # one line per epoch, bars or not
            scores = "  ".join(f"{k} {v:.4f}" for k, v in self.last_val.items())
            total = f"/{self.budget.epochs}" if self.budget.epochs is not None else ""
            log.info("epoch %d%s step %d loss %.4f %s  elapsed %.0fs (cpu %.0fs this run)",
                     self.epoch, total, self.step, self.last_loss, scores, self.clock.local(),
                     self.clock.cpu())
        if self.where.world > 1:
            torch.distributed.barrier()
        self.clock.val_cost = self.clock.rank_max(time.perf_counter() - t_val)
        # predict_masks switched the model to channels_last
        self.parts.model.to(memory_format=_train_format(self.where.device)).train()

    def _validate(self, aligned: AlignedSet, val_idx: np.ndarray) -> None:
        if not len(val_idx):
            return
        m = evaluate_parser(self.parts.model, aligned.images[val_idx], aligned.masks[val_idx],
                            batch_size=64, device=self.where.device,
                            precision=self.settings.precision)
        self.last_val = {"val_miou": m.mean_iou, "val_mf1": m.mean_f1}
        self.writer.add_scalar("val/mIoU", m.mean_iou, self.step)
        self.writer.add_scalar("val/mF1", m.mean_f1, self.step)

    def _save(self, held_out: bool) -> None:
        score = self.last_val.get("val_miou", -1.0)
        is_best = score > self.best or not held_out  # without a held-out split the newest is "best"
        if is_best:
            self.best, self.best_mf1 = max(self.best, score), self.last_val.get("val_mf1", math.nan)
        ckpt_meta = {**self.meta, **self.last_val, "epoch": self.epoch, "step": self.step,
                     "best_val_miou": self.best, "best_val_mf1": self.best_mf1}
        if is_best:
            save_parser(self.parts.model, self.out / "best.pt", **ckpt_meta)
        save_parser(self.parts.model, self.out / "last.pt", optimizer=self.parts.opt.state_dict(),
                    elapsed=self.clock.local(), **ckpt_meta)

    def result(self, aligned: AlignedSet, n_train: int, n_val: int) -> TrainingResult:
        return TrainingResult(self.epoch, self.step, self.clock.local(), self.clock.cpu(),
                              self.last_val.get("val_mf1", math.nan),
                              self.last_val.get("val_miou", math.nan), self.best, self.best_mf1,
                              str(self.out / "last.pt"), str(self.out / "best.pt"),
                              str(aligned.path), n_train, n_val)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(epoch={self.epoch}, step={self.step}, {self.budget!r}, "
                f"{self.where})")


def train_parser(data: str | os.PathLike, out: str | os.PathLike,
                 settings: TrainSettings = TrainSettings()) -> TrainingResult:
    """Train a parser on a FaceSynthetics-layout folder;
    writes ``last.pt`` each epoch and ``best.pt`` (val mIoU).

    See :class:`TrainSettings` for the budget, schedule, loss and resume. The folder's layout is
    checked before anything is loaded. Under torchrun each rank trains on a DistributedSampler
    shard; rank 0 validates and writes.
    """
    out, s = Path(out), settings
    # a FaceSynthetics folder with 25-class labels, or a clear error
    read_anno_list(data), label_dir(data)
    where = _Placement(*dist_env(resolve_device(s.device, "device")))
    s = replace(s, precision=resolve_precision(s.precision, where.device))
    state = _resume_state(out, s.resume)
    if state is not None:
        s = replace(s, feature_scale=int(state["feature_scale"]), seed=int(state["seed"]),
                    val_fraction=float(state["val_fraction"]))
    cache_dir = Path(s.cache_dir) if s.cache_dir is not None else out / "cache"
    aligned = _aligned_on_every_rank(data, cache_dir, out, where, s)
    train_idx, val_idx = split_indices(len(aligned.frame_ids), s.val_fraction, s.seed)
    run = _start(s, where, aligned, train_idx, out, state, data)
    try:
        budget, clock = run.budget, run.clock
        stop = (budget.epochs_done(run.epoch) or budget.steps_done(run.step)
                or not clock.left(clock.elapsed0))
        while not stop:
            stop = run.train_epoch() or budget.epochs_done(run.epoch)
            run.end_epoch(aligned, val_idx)
            stop = stop or not clock.left(clock.elapsed())
    finally:
        run.close()
    if where.world > 1:
        torch.distributed.destroy_process_group()
    return run.result(aligned, len(train_idx), len(val_idx))


def _start(s: TrainSettings, where: _Placement, aligned: AlignedSet, train_idx: np.ndarray,
           out: Path, state: dict[str, Any] | None, data: str | os.PathLike) -> _Run:
    """Model, optimizer, loader, loss, budget and clock of a run
    (the resumed one's, from ``state``)."""
    model, net, opt = _model_and_optimizer(s, state, where)
    dataset = ParsingDataset(aligned.images, aligned.masks, train_idx, s.augment or ParserAugment(),
                             s.seed)
    loader = _train_loader(dataset, s, where, data)
    budget = Budget.of(s.epochs, s.steps, s.time_budget, len(loader))
    weight = class_weights(aligned.masks[train_idx[::max(1, len(train_idx) // 4096)]],
                           power=s.class_weight_power)
    loss_fn = nn.CrossEntropyLoss(weight=weight.to(where.device), ignore_index=IGNORE_INDEX)
    scaler = torch.amp.GradScaler(where.device.type, enabled=s.precision == "fp16")
    meta = {"seed": s.seed, "val_fraction": s.val_fraction, "time_budget": s.time_budget,
            "lr": s.lr, "class_weights": weight.tolist(), "batch_size": s.batch_size,
            "world_size": where.world, "data": str(Path(data).resolve()),
            "budget_steps": budget.steps}
    clock = Clock(where.world, where.device, float(state["elapsed"]) if state else 0.0,
                  s.time_budget)
    return _Run(s, where, _Parts(model, net, opt, scaler, loader, loss_fn), budget, clock, out,
                meta, state)
