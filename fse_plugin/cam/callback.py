"""The arcface_torch training hook: ``config.fse_cam = dict(...)`` (after
patches/0002-fse-cam.patch).

Its messages go to the ``fse_plugin.cam.callback`` logger, which propagates to the root logger
arcface_torch configures, so they land in ``training.log`` beside upstream's own lines.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from fse_plugin.cam.inputs import as_input
from fse_plugin.cam.plots import overlay_strip
from fse_plugin.cam.regions import fs_cam, normalise_scores
from fse_plugin.cam.sources import load_pack
from fse_plugin.cam.stats import region_mean
from fse_plugin.cam.targets import pair_target
from fse_plugin.common import PRECISIONS, FSEError, checks, masks_path_for, resolve_device
from fse_plugin.labels import CLASSES

__all__ = ["CallbackOptions", "FSCAMCallback"]

log = logging.getLogger(__name__)

_KEY = "config.fse_cam"


@dataclass(frozen=True)
class CallbackOptions:
    """The keys of ``config.fse_cam``, checked (``from_config``; errors name
    ``config.fse_cam.<key>``).

    ``targets``: pack names under cfg.rec (default cfg.val_targets); ``every``: steps between two
    logs (default cfg.verbose); ``pairs``: genuine pairs per pack (bounds the time: ~(1 + regions)
    x 2 x pairs forwards); ``masks``: a .npy path, or ``{name: path}`` (default
    <rec>/<name>.masks.npy); ``parser``: checkpoint that predicts masks once at start when no mask
    file exists; ``images``: overlay rows (0: none); ``batch_size``; ``precision``: 'fp32', 'bf16'
    or 'fp16' (``amp=True``, the earlier key, is deprecated and means 'bf16').
    """

    targets: tuple[str, ...]
    every: int
    pairs: int = 32
    masks: str | Mapping[str, str] | None = None
    parser: str | None = None
    images: int = 4
    batch_size: int = 260
    precision: str = "fp32"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> CallbackOptions:
        opts = dict(cfg.get("fse_cam") or {})
        known = ("targets", "every", "pairs", "masks", "parser", "images", "batch_size",
                 "precision", "amp")
        unknown = sorted(set(opts) - set(known))
        if unknown:
            raise FSEError(f"{_KEY}: unknown keys {unknown}; known: {', '.join(known[:-1])}")
        if "amp" in opts:
            opts["precision"] = _precision_from_amp(opts)
        targets = _pack_names(opts.pop("targets", None) or cfg.get("val_targets") or [])
        every = opts.pop("every", None)
        every = checks.count(every if every is not None else cfg.get("verbose") or 2000,
                             f"{_KEY}.every")
        made = cls(targets, every, **opts)
        for key in ("pairs", "batch_size"):
            checks.count(getattr(made, key), f"{_KEY}.{key}")
        checks.count(made.images, f"{_KEY}.images", minimum=0)
        checks.choice(made.precision, f"{_KEY}.precision", PRECISIONS)
        return made

    def masks_for(self, name: str) -> str | None:
        """The mask file named for pack ``name`` (None: the default beside the pack, or the
        parser)."""
        return self.masks.get(name) if isinstance(self.masks, Mapping) else self.masks


def _pack_names(value: Any) -> tuple[str, ...]:
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise FSEError(f"{_KEY}.targets: expected a list of pack names, got {value!r}")
    return (tuple(checks.name_list(list(names), f"{_KEY}.targets", [n.strip() for n in names]))
            if names else ())


def _precision_from_amp(opts: dict[str, Any]) -> str:
    amp = opts.pop("amp")
    if "precision" in opts:
        raise FSEError(f"{_KEY}: give precision only (amp is its deprecated spelling)")
    warnings.warn(f"{_KEY}.amp is deprecated; use precision='bf16' (amp=True) or 'fp32'",
                  DeprecationWarning, stacklevel=3)
    return "bf16" if checks.choice(amp, f"{_KEY}.amp", (True, False)) else "fp32"


class FSCAMCallback:
    """Wraps arcface_torch's CallBackVerification: after it runs, rank 0 also logs per-region FS-CAM
    importance of a few genuine pairs of each val pack to tensorboard (a scalar per region and an
    overlay image), at most once per ``every`` steps.

    Enabled by ``config.fse_cam = dict(...)`` once patches/0002-fse-cam.patch is applied; its keys
    are ``CallbackOptions``'. The target is the pair target (the other image's embedding): the
    training head is not passed to the verification callback.
    """

    def __init__(self, cfg: Mapping[str, Any], summary_writer: Any,
                 verification: Callable | None = None, rank: int | None = None) -> None:
        self.options = CallbackOptions.from_config(cfg)
        self.every = self.options.every
        self.writer, self.verification = summary_writer, verification
        if rank is None:
            dist = torch.distributed
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.rank = rank
        self.next_step = self.every
        # (name, images [2n], masks [2n]): all a-sides, then all b-sides
        self.packs: list[tuple[str, np.ndarray, np.ndarray]] = []
        if self.rank == 0:
            for name in self.options.targets:
                self._load(cfg, name)

    def _load(self, cfg: Mapping[str, Any], name: str) -> None:
        path = Path(cfg.get("rec", ".")) / f"{name}.bin"
        if not path.is_file():
            log.warning("fse_cam: %s not found, no FS-CAM for %s", path, name)
            return
        masks = self.options.masks_for(name)
        parser = None if masks else self.options.parser
        if not (masks or parser or masks_path_for(path).is_file()):
            log.warning("fse_cam: no masks for %s (no %s, no masks/parser in config.fse_cam)", path,
                        masks_path_for(path).name)
            return
        if masks:
            checks.existing_file(masks, f"{_KEY}.masks", "npy")
        elif parser:
            checks.existing_file(parser, f"{_KEY}.parser", "checkpoint")
        device = str(resolve_device())  # 'cuda' is the rank's device: train_v2 has set it
        pack = load_pack(path, masks, parser, "same", self.options.pairs, device)
        # a, then b
        order = np.concatenate([np.arange(0, len(pack.images), 2),
                                np.arange(1, len(pack.images), 2)])
        self.packs.append((name, pack.images[order], pack.masks[order]))
        n = len(pack.pairs)
        log.info("fse_cam: %s: %d genuine pair%s, masks from %s", name, n, "" if n == 1 else "s",
                 pack.masks_source)

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
        try:
            return {name: self._log_pack(name, images, masks, model, step)
                    for name, images, masks in self.packs}
        finally:
            model.train(training)

    def _log_pack(self, name: str, images: np.ndarray, masks: np.ndarray, model: nn.Module,
                  step: int) -> np.ndarray:
        t0 = time.perf_counter()
        p = len(images) // 2
        bs, precision = self.options.batch_size, self.options.precision
        x = as_input(images).float()
        scores, maps = fs_cam(model, x, masks, pair_target(model, x[:p], x[p:], bs, precision), bs,
                              precision)
        mean = region_mean(normalise_scores(scores).numpy())
        if self.writer is not None:
            self._write(name, images, masks, maps.numpy(), mean, step, time.perf_counter() - t0)
        top = np.argsort(-np.nan_to_num(mean, nan=-1.0))[:3]
        log.info("[%s][%d] FS-CAM top regions: %s (%.1f s)", name, step,
                 ", ".join(f"{CLASSES[k]} {mean[k]:.3f}" for k in top), time.perf_counter() - t0)
        return mean

    def _write(self, name: str, images: np.ndarray, masks: np.ndarray, maps: np.ndarray,
               mean: np.ndarray, step: int, seconds: float) -> None:
        """Scalars ``fse_cam_<name>/<region>`` and ``/seconds``, image ``/overlay``."""
        for k in np.flatnonzero(~np.isnan(mean)):
            self.writer.add_scalar(f"fse_cam_{name}/{CLASSES[k]}", float(mean[k]), step)
        n = min(self.options.images, len(images))
        if n:
            self.writer.add_image(f"fse_cam_{name}/overlay",
                                  overlay_strip(images[:n], masks[:n], [maps[:n]]), step,
                                  dataformats="HWC")
        self.writer.add_scalar(f"fse_cam_{name}/seconds", seconds, step)
