"""Parser training on a FaceSynthetics-layout folder (CPU, CUDA, torchrun DDP), budgeted in steps.

A run aligns the folder once (``facesynthetics.prepare_dataset``), holds out a seeded split, and trains
a :class:`UNetRes18` with class-weighted cross-entropy and AdamW under a warm-up + cosine schedule
over its step budget (``epochs`` or ``steps``), validating and checkpointing after every epoch
(``last.pt``; ``best.pt`` by val mIoU). With a step budget the weights are the same, bit for bit, on
every run with the same data, seed, device and thread count; ``time_budget`` then only stops a run
early (a safety stop). Without a step budget (``epochs=None``) the run is timed: the learning rate
anneals to zero as ``time_budget`` runs out, and how far it gets depends on the machine.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from fse_plugin.common import FSEError, autocast, dist_env, resolve_device, to_input, warmup_cosine
from fse_plugin.labels import IGNORE_INDEX, NUM_CLASSES
from fse_plugin.parsing.augment import ParserAugment
from fse_plugin.parsing.checkpoint import ParserCheckpointError, save_parser
from fse_plugin.parsing.facesynthetics import AlignedSet, prepare_dataset, split_indices
from fse_plugin.parsing.metrics import evaluate_parser
from fse_plugin.parsing.model import DEFAULT_FEATURE_SCALE, UNetRes18

__all__ = ["ParsingDataset", "class_weights", "train_parser"]


class ParsingDataset(torch.utils.data.Dataset):
    """(uint8 HxWx3 face, int64 HxW labels) of the selected indices of an :class:`AlignedSet`."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, indices: np.ndarray,
                 augment: ParserAugment | None = None, seed: int = 0) -> None:
        self.images, self.masks, self.indices = images, masks, np.asarray(indices, dtype=np.int64)
        self.augment, self.seed, self.epoch = augment, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(self.indices[i])
        img, mask = np.array(self.images[j]), np.array(self.masks[j])
        if self.augment is not None:
            img, mask = self.augment(img, mask, np.random.default_rng((self.seed, self.epoch, j)))
        return torch.from_numpy(img), torch.from_numpy(mask.astype(np.int64))


def class_weights(masks: np.ndarray, n_classes: int = NUM_CLASSES, power: float = 0.5) -> torch.Tensor:
    """Cross-entropy weights ``(pixels / class pixels) ** power``, mean 1 over the classes present.

    Why: eyes, brows and lips cover ~0.3% of an aligned face each; plain cross-entropy learns them
    hundreds of steps after skin and hair, while mean F1 counts every class equally. With power 0.5, a
    feature_scale-8 parser overfitting one batch for 150 steps reached mean F1 0.73 instead of 0.37
    (power 1 starves the background). ``power=0`` gives plain cross-entropy.
    """
    counts = np.zeros(n_classes, np.int64)
    for s in range(0, len(masks), 256):
        chunk = np.asarray(masks[s:s + 256]).ravel()
        counts += np.bincount(chunk[chunk < n_classes], minlength=n_classes)[:n_classes]
    present = counts > 0
    w = np.ones(n_classes)
    if present.any():
        w[present] = (counts.sum() / counts[present]) ** power
        w[present] /= w[present].mean()
    return torch.tensor(w, dtype=torch.float32)


class _Budget:
    """How long a run trains and how far along its schedule it is.

    ``steps`` optimizer steps (from ``steps``, or ``epochs`` x batches per epoch) set the schedule;
    ``time_budget`` seconds stop the run early when they run out first. Without steps the run is
    timed and its schedule is the time spent.
    """

    def __init__(self, steps: int | None, epochs: int | None, time_budget: float | None) -> None:
        if steps is None and time_budget is None:
            raise FSEError("train_parser: give epochs, steps or a time budget")
        self.steps, self.epochs, self.time_budget = steps, epochs, time_budget

    @classmethod
    def of(cls, epochs: int | None, steps: int | None, time_budget: float | None, per_epoch: int) -> "_Budget":
        for name, v in (("epochs", epochs), ("steps", steps), ("time_budget", time_budget)):
            if v is not None and v < 0:
                raise FSEError(f"train_parser: {name} must be >= 0, got {v}")
        if steps is not None:
            return cls(max(1, steps), math.ceil(steps / per_epoch), time_budget)
        if epochs is not None:
            return cls(max(1, epochs * per_epoch), epochs, time_budget)
        return cls(None, None, time_budget)

    def progress(self, step: int, elapsed: float) -> float:
        """Fraction of the schedule spent: steps, or seconds in a timed run."""
        return step / self.steps if self.steps is not None else elapsed / self.time_budget

    def steps_done(self, step: int) -> bool:
        return self.steps is not None and step >= self.steps

    def epochs_done(self, epoch: int) -> bool:
        return self.epochs is not None and epoch >= self.epochs

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps}, epochs={self.epochs}, time_budget={self.time_budget})"


class _Clock:
    """Training seconds so far (earlier runs of a resumed one included), agreed by every rank."""

    def __init__(self, world: int, dev: torch.device, elapsed0: float, time_budget: float | None) -> None:
        self.world, self.dev, self.elapsed0, self.time_budget = world, dev, elapsed0, time_budget
        self.t_start, self.cpu_start, self.val_cost = time.perf_counter(), time.process_time(), 0.0

    def rank_max(self, value: float) -> float:
        """The same number on every rank: ranks must agree on when the budget ends, or collectives hang."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.dev)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t.item())

    def local(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.t_start

    def elapsed(self) -> float:
        """The ranks' agreed time; without a time budget nothing depends on it, so no collective (and no
        CUDA sync) runs every step."""
        return self.local() if self.time_budget is None else self.rank_max(self.local())

    def cpu(self) -> float:
        """This process's CPU seconds: how much of the wall-clock a shared machine really gave."""
        return time.process_time() - self.cpu_start

    def left(self, now: float) -> bool:
        """Time for one more validation + checkpoint (x1.5: noisy machines)?"""
        return self.time_budget is None or now + 1.5 * self.val_cost < self.time_budget


def _resume_state(out: Path, resume: str | os.PathLike | None) -> dict[str, Any] | None:
    """The training checkpoint to continue from (``'auto'``: ``out/last.pt``), or None."""
    if resume is None:
        return None
    path = out / "last.pt" if str(resume) == "auto" else Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume: checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "optimizer" not in state or "epoch" not in state:
        raise ParserCheckpointError(f"{path}: not a training checkpoint (no optimizer/epoch); cannot resume")
    return state


def _aligned_on_every_rank(data: str | os.PathLike, cache_dir: Path, out: Path, rank: int, world: int, workers: int,
                           progress: bool) -> AlignedSet:
    """Rank 0 aligns the folder (once, cached); the others memory-map its cache."""
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        aligned = prepare_dataset(data, cache_dir, workers=workers, progress=progress)
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        aligned = prepare_dataset(data, cache_dir, progress=False)
    return aligned


def _model_and_optimizer(feature_scale: int, seed: int, lr: float, weight_decay: float, state: dict | None,
                         dev: torch.device, world: int) -> tuple[UNetRes18, nn.Module, torch.optim.Optimizer]:
    """Seeded model (or the resumed one) on ``dev``, its DDP wrapper under torchrun, and AdamW."""
    torch.manual_seed(seed)
    model = UNetRes18(feature_scale=feature_scale)
    if state is not None:
        model.load_state_dict(state["model"])
    model = model.to(dev, memory_format=_train_format(dev))
    net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None) if world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    return model, net, opt


def _train_format(dev: torch.device) -> torch.memory_format:
    # channels_last: cuDNN's fast layout. Not for CPU training: ~8% at best there, and torch 2.14's
    # CPU backward crashes (SIGSEGV) in channels_last at feature_scale 16
    return torch.channels_last if dev.type == "cuda" else torch.contiguous_format


def _train_loader(dataset: ParsingDataset, batch_size: int, rank: int, world: int, workers: int, seed: int,
                  dev: torch.device, data: str | os.PathLike) -> DataLoader:
    """Shuffled batches of this rank's shard (a DistributedSampler, also with one rank: same order either way)."""
    drop_last = len(dataset) >= 2 * batch_size * world
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        pin_memory=dev.type == "cuda", drop_last=drop_last, persistent_workers=False)
    if len(loader) == 0:
        raise FSEError(f"{data}: {len(dataset)} training faces give no batch of {batch_size} on {world} rank(s)")
    return loader


class _Run:
    """One training run's moving parts and progress; :meth:`train_epoch` and :meth:`end_epoch` are its steps."""

    def __init__(self, model: UNetRes18, net: nn.Module, opt: torch.optim.Optimizer,
                 loader: DataLoader, loss_fn: nn.Module, budget: _Budget, clock: _Clock, *,
                 rank: int, world: int, dev: torch.device, amp: bool, lr: float, warmup_steps: int, log_every: int,
                 progress: bool, out: Path, meta: dict[str, Any], state: dict[str, Any] | None) -> None:
        self.model, self.net, self.opt, self.loader, self.loss_fn = model, net, opt, loader, loss_fn
        self.budget, self.clock, self.rank, self.world, self.dev, self.amp = budget, clock, rank, world, dev, amp
        self.lr, self.warmup_steps, self.log_every, self.progress = lr, warmup_steps, log_every, progress
        self.out, self.meta = out, meta
        state = state or {}
        self.epoch, self.step = int(state.get("epoch", 0)), int(state.get("step", 0))
        self.best = float(state.get("best_val_miou", -1.0))
        self.best_mf1 = float(state.get("best_val_mf1", math.nan))
        self.last_val = {k: float(state[k]) for k in ("val_miou", "val_mf1") if k in state}
        self.last_loss = math.nan
        self.writer = None
        if rank == 0:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(out / "tb"))

    def train_epoch(self) -> bool:
        """One pass over the loader; True when the step or time budget ran out during it."""
        self.loader.sampler.set_epoch(self.epoch)
        self.loader.dataset.set_epoch(self.epoch)
        self.net.train()
        total = f"/{self.budget.epochs}" if self.budget.epochs is not None else ""
        bar = tqdm(self.loader, desc=f"epoch {self.epoch + 1}{total}", disable=self.rank != 0 or not self.progress,
                   leave=False)
        stopped = False
        for images, masks in bar:
            now = self.clock.elapsed()
            if not self.clock.left(now):
                stopped = True
                break
            cur_lr = warmup_cosine(self.budget.progress(self.step, now), self.step, self.lr, self.warmup_steps)
            loss = self._step(images, masks, cur_lr)
            if self.step % self.log_every == 0 or self.step == 1:
                self._log(loss, cur_lr)
                bar.set_postfix(loss=f"{self.last_loss:.4f}", lr=f"{cur_lr:.2e}")
            if self.budget.steps_done(self.step):
                stopped = True
                break
        bar.close()
        self.epoch += 1
        return stopped

    def _step(self, images: torch.Tensor, masks: torch.Tensor, lr: float) -> torch.Tensor:
        for g in self.opt.param_groups:
            g["lr"] = lr
        channels_last = _train_format(self.dev) == torch.channels_last
        x = to_input(images.to(self.dev, non_blocking=True), channels_last=channels_last)
        y = masks.to(self.dev, non_blocking=True)
        with autocast(self.dev, self.amp):
            loss = self.loss_fn(self.net(x).float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        return loss

    def _log(self, loss: torch.Tensor, lr: float) -> None:
        lv = loss.detach()
        if self.world > 1:  # the mean over ranks, not rank 0's shard alone
            torch.distributed.all_reduce(lv)
            lv = lv / self.world
        self.last_loss = float(lv)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", self.last_loss, self.step)
            self.writer.add_scalar("train/lr", lr, self.step)

    def end_epoch(self, aligned: AlignedSet, val_idx: np.ndarray) -> None:
        """Validate and checkpoint on rank 0 (every rank waits), and time it for the budget."""
        t_val = time.perf_counter()
        if self.rank == 0:
            self._validate(aligned, val_idx)
            self._save(len(val_idx) > 0)
            scores = "  ".join(f"{k} {v:.4f}" for k, v in self.last_val.items())  # one line per epoch, bars or not
            total = f"/{self.budget.epochs}" if self.budget.epochs is not None else ""
            print(f"epoch {self.epoch}{total} step {self.step} loss {self.last_loss:.4f} {scores}"
                  f"  elapsed {self.clock.local():.0f}s (cpu {self.clock.cpu():.0f}s this run)", flush=True)
        if self.world > 1:
            torch.distributed.barrier()
        self.clock.val_cost = self.clock.rank_max(time.perf_counter() - t_val)
        self.model.to(memory_format=_train_format(self.dev)).train()  # predict_masks switched it to channels_last

    def _validate(self, aligned: AlignedSet, val_idx: np.ndarray) -> None:
        if not len(val_idx):
            return
        m = evaluate_parser(self.model, aligned.images[val_idx], aligned.masks[val_idx], batch_size=64,
                            device=self.dev, amp=self.amp)
        self.last_val = {"val_miou": m.mean_iou, "val_mf1": m.mean_f1}
        self.writer.add_scalar("val/mIoU", m.mean_iou, self.step)
        self.writer.add_scalar("val/mF1", m.mean_f1, self.step)

    def _save(self, held_out: bool) -> None:
        score = self.last_val.get("val_miou", -1.0)
        is_best = score > self.best or not held_out  # without a held-out split the newest is "best"
        if is_best:
            self.best, self.best_mf1 = max(self.best, score), self.last_val.get("val_mf1", math.nan)
        ckpt_meta = {**self.meta, **self.last_val, "epoch": self.epoch, "step": self.step, "best_val_miou": self.best,
                     "best_val_mf1": self.best_mf1}
        if is_best:
            save_parser(self.model, self.out / "best.pt", **ckpt_meta)
        save_parser(self.model, self.out / "last.pt", optimizer=self.opt.state_dict(), elapsed=self.clock.local(),
                    **ckpt_meta)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def train_parser(data: str | os.PathLike, out: str | os.PathLike, *, epochs: int | None = 30, batch_size: int = 32,
                 lr: float = 5e-3, weight_decay: float = 1e-4, feature_scale: int = DEFAULT_FEATURE_SCALE,
                 val_fraction: float = 0.1, seed: int = 0, workers: int = 2, device: str = "auto",
                 amp: bool = True, time_budget: float | None = None, class_weight_power: float = 0.5,
                 augment: ParserAugment | None = None, resume: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, warmup_steps: int = 50, log_every: int = 10,
                 progress: bool = True, steps: int | None = None) -> dict[str, Any]:
    """Train a parser on a FaceSynthetics-layout folder; writes ``last.pt`` each epoch and ``best.pt`` (val mIoU).

    Budget (see the module docstring): ``steps`` optimizer steps if given, else ``epochs`` epochs; the
    learning rate warms up over ``warmup_steps`` and anneals to zero at the end of that budget.
    ``time_budget`` (seconds of training incl. validation, excluding the one-off alignment) stops the
    run early if it runs out first; with ``epochs=None`` and no ``steps`` the run is timed instead.
    The loss is cross-entropy weighted by :func:`class_weights` (``class_weight_power``); ``augment``
    defaults to ``ParserAugment()``. ``resume`` (a path, or ``'auto'`` for ``out/last.pt``) continues
    from the saved epoch with the saved optimizer, split and elapsed time. Under torchrun each rank
    trains on a DistributedSampler shard; rank 0 validates and writes.

    Returns a summary: ``epochs``, ``steps``, ``elapsed`` and ``cpu_seconds`` (this process; on a
    shared machine it shows how much of the wall-clock the run really got), ``val_mf1``/``val_miou``
    (the last validation; NaN without a held-out split), ``best_val_miou``/``best_val_mf1``
    (``best.pt``'s), the paths ``last``, ``best``, ``cache`` and the split sizes ``n_train``, ``n_val``.
    """
    out = Path(out)
    rank, world, dev = dist_env(resolve_device(device))
    amp = bool(amp) and dev.type == "cuda"
    state = _resume_state(out, resume)
    if state is not None:
        feature_scale, seed = int(state["feature_scale"]), int(state["seed"])
        val_fraction = float(state["val_fraction"])

    cache_dir = Path(cache_dir) if cache_dir is not None else out / "cache"
    aligned = _aligned_on_every_rank(data, cache_dir, out, rank, world, workers, progress)
    train_idx, val_idx = split_indices(len(aligned.frame_ids), val_fraction, seed)
    model, net, opt = _model_and_optimizer(feature_scale, seed, lr, weight_decay, state, dev, world)
    dataset = ParsingDataset(aligned.images, aligned.masks, train_idx, augment or ParserAugment(), seed)
    loader = _train_loader(dataset, batch_size, rank, world, workers, seed, dev, data)
    budget = _Budget.of(epochs, steps, time_budget, len(loader))
    weight = class_weights(aligned.masks[train_idx[::max(1, len(train_idx) // 4096)]], power=class_weight_power)
    loss_fn = nn.CrossEntropyLoss(weight=weight.to(dev), ignore_index=IGNORE_INDEX)
    meta = {"seed": seed, "val_fraction": val_fraction, "time_budget": time_budget, "lr": lr,
            "class_weights": weight.tolist(), "batch_size": batch_size, "world_size": world,
            "data": str(Path(data).resolve()), "budget_steps": budget.steps}
    clock = _Clock(world, dev, float(state["elapsed"]) if state else 0.0, time_budget)
    run = _Run(model, net, opt, loader, loss_fn, budget, clock, rank=rank, world=world, dev=dev, amp=amp, lr=lr,
               warmup_steps=warmup_steps, log_every=log_every, progress=progress, out=out, meta=meta, state=state)

    stop = budget.epochs_done(run.epoch) or budget.steps_done(run.step) or not clock.left(clock.elapsed0)
    while not stop:
        stop = run.train_epoch() or budget.epochs_done(run.epoch)
        run.end_epoch(aligned, val_idx)
        stop = stop or not clock.left(clock.elapsed())
    run.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return {"epochs": run.epoch, "steps": run.step, "elapsed": clock.local(), "cpu_seconds": clock.cpu(),
            "val_mf1": run.last_val.get("val_mf1", math.nan), "val_miou": run.last_val.get("val_miou", math.nan),
            "best_val_miou": run.best, "best_val_mf1": run.best_mf1, "last": str(out / "last.pt"),
            "best": str(out / "best.pt"), "cache": str(aligned.path), "n_train": len(train_idx), "n_val": len(val_idx)}
