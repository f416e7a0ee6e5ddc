"""The arcface_torch training hook: ``config.fse_cam = dict(...)`` (after patches/0002-fse-cam.patch)."""
from __future__ import annotations

import logging
import time
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
from fse_plugin.common import FSEError, masks_path_for, resolve_device
from fse_plugin.labels import CLASSES

__all__ = ["FSCAMCallback"]

log = logging.getLogger(__name__)


class FSCAMCallback:
    """Wraps arcface_torch's CallBackVerification: after it runs, rank 0 also logs per-region FS-CAM
    importance of a few genuine pairs of each val pack to tensorboard (a scalar per region and an
    overlay image), at most once per ``every`` steps.

    Enabled by ``config.fse_cam = dict(...)`` once patches/0002-fse-cam.patch is applied. Keys:
    ``targets`` (pack names under cfg.rec; default cfg.val_targets), ``every`` (steps; default
    cfg.verbose), ``pairs`` (genuine pairs per pack, bounds the time: ~(1 + regions) x 2 x pairs
    forwards), ``masks`` (a .npy path, or {name: path}; default <rec>/<name>.masks.npy), ``parser``
    (checkpoint to predict masks once at start when no mask file exists), ``images`` (overlay rows),
    ``batch_size``, ``amp`` (bf16). The target is the pair target (the other image's embedding):
    the training head is not passed to the verification callback.
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
        # (name, images [2n], masks [2n]): all a-sides, then all b-sides
        self.packs: list[tuple[str, np.ndarray, np.ndarray]] = []
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
        device = str(resolve_device())  # 'cuda' is the rank's device: train_v2 has set it
        pack = load_pack(path, masks, parser, "same", int(self.opts["pairs"]), device)
        order = np.concatenate([np.arange(0, len(pack.images), 2), np.arange(1, len(pack.images), 2)])  # a, then b
        self.packs.append((name, pack.images[order], pack.masks[order]))
        log.info("fse_cam: %s: %d genuine pairs, masks from %s", name, len(pack.pairs), pack.masks_source)

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
            return {name: self._log_pack(name, images, masks, model, step) for name, images, masks in self.packs}
        finally:
            model.train(training)

    def _log_pack(self, name: str, images: np.ndarray, masks: np.ndarray, model: nn.Module, step: int) -> np.ndarray:
        t0 = time.perf_counter()
        p = len(images) // 2
        bs, amp = self.opts["batch_size"], self.opts["amp"]
        x = as_input(images).float()
        scores, maps = fs_cam(model, x, masks, pair_target(model, x[:p], x[p:], bs, amp), bs, amp)
        mean = region_mean(normalise_scores(scores).numpy())
        if self.writer is not None:
            self._write(name, images, masks, maps.numpy(), mean, step, time.perf_counter() - t0)
        top = np.argsort(-np.nan_to_num(mean, nan=-1.0))[:3]
        log.info("[%s][%d] FS-CAM top regions: %s (%.1f s)", name, step,
                 ", ".join(f"{CLASSES[k]} {mean[k]:.3f}" for k in top), time.perf_counter() - t0)
        return mean

    def _write(self, name: str, images: np.ndarray, masks: np.ndarray, maps: np.ndarray, mean: np.ndarray,
               step: int, seconds: float) -> None:
        """Scalars ``fse_cam_<name>/<region>`` and ``/seconds``, image ``/overlay``."""
        for k in np.flatnonzero(~np.isnan(mean)):
            self.writer.add_scalar(f"fse_cam_{name}/{CLASSES[k]}", float(mean[k]), step)
        n = min(int(self.opts["images"]), len(images))
        if n:
            self.writer.add_image(f"fse_cam_{name}/overlay", overlay_strip(images[:n], masks[:n], [maps[:n]]),
                                  step, dataformats="HWC")
        self.writer.add_scalar(f"fse_cam_{name}/seconds", seconds, step)
