"""What upstream's ``eval_ijbc.py`` calls once patch 0004 is applied: ``--config configs/NAME.py``
gives the network and the weights as ``fse eval --config`` does (``--network`` / ``--model-prefix``
win), and the config's ``config.fse_eval`` adds FS-CAM and the semantic-occlusion benchmark after
upstream's table, into the same result folder. Without ``--config`` the script is upstream's.

Everything a user can get wrong is checked by ``IJBCScriptHook.from_args``, before the script
computes its first embedding; an error is one line on stderr and exit status 2, as ``fse`` reports
it.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fse_plugin.common import FSEError, resolve_device
from fse_plugin.evaluation.config import config_file, config_weights, load_config
from fse_plugin.evaluation.embed import EmbedSettings
from fse_plugin.evaluation.fse_eval import FSEEvalConfig
from fse_plugin.evaluation.ijb import IJBMeta, read_ijb_meta
from fse_plugin.evaluation.masks import open_masks, predict_ijb_masks
from fse_plugin.evaluation.occlusion import OcclusionSettings, occlusion_ijb
from fse_plugin.evaluation.occlusion_report import write_occlusion_report

__all__ = ["IJBCScriptHook"]

log = logging.getLogger(__name__)
SCRIPT = "eval_ijbc.py"
EMBEDDING_SIZE = 512
"""The only size upstream's script embeds with (``get_model``'s default, 1024 columns for
image + flip)."""


@contextmanager
def _user_errors() -> Iterator[None]:
    """An ``FSEError`` (or a missing file) ends the script as ``fse`` ends: one line, exit status
    2."""
    try:
        yield
    except (FSEError, FileNotFoundError) as e:
        print(f"{SCRIPT}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _log_to_stdout() -> None:
    """The plugin's messages beside upstream's prints (upstream configures no logging)."""
    root = logging.getLogger("fse_plugin")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def _model_from_config(args: argparse.Namespace, parser: argparse.ArgumentParser,
                       cfg: dict[str, Any]) -> None:
    """``args.network`` and ``args.model_prefix`` from the config where the command line left their
    defaults."""
    if args.network == parser.get_default("network") and cfg.get("network"):
        args.network = cfg["network"]
    if not args.model_prefix:
        weights = config_weights(cfg)
        if weights is None:
            raise FSEError(f"{args.config}: no weights: {Path(cfg['output']) / 'model.pt'} does "
                           "not exist; pass --model-prefix PATH/model.pt")
        args.model_prefix = str(weights)
    size = cfg.get("embedding_size", EMBEDDING_SIZE)
    if size != EMBEDDING_SIZE:
        raise FSEError(f"config.embedding_size is {size!r}, but {SCRIPT} embeds with {EMBEDDING_SIZE} only; evaluate "
                       f"this model with `fse eval ijb --config {args.config}`")


def _check_masks(settings: FSEEvalConfig, meta: IJBMeta) -> None:
    """A mask source exists and fits the meta rows (the parser is loaded when used)."""
    source = settings.mask_source()
    if source is None:
        raise FSEError("config.fse_eval: fscam and occlusion need face-parsing masks: set parser=CHECKPOINT, "
                       "masks=FILE.npy (one mask per row of the 5pts file) or mask_cache=DIR")
    if source != "parser":
        open_masks(getattr(settings, source), len(meta.names))


@dataclass
class IJBCScriptHook:
    """The plugin's part of one ``eval_ijbc.py --config`` run."""
    config_path: str
    settings: FSEEvalConfig
    network: str
    weights: str
    meta: IJBMeta | None
    batch_size: int
    name: str

    @classmethod
    def from_args(cls, args: argparse.Namespace, parser: argparse.ArgumentParser) -> IJBCScriptHook:
        """Read and check ``--config`` (network and weights defaults into ``args``), its
        ``config.fse_eval``, the masks it names and, when FS-CAM or occlusion is asked for, the IJB
        meta files."""
        with _user_errors():
            _log_to_stdout()
            cfg = load_config(args.config)
            _model_from_config(args, parser, cfg)
            settings = FSEEvalConfig.from_config(cfg, partial(config_file, cfg))
            meta = None
            if settings.wants_masks:
                meta = read_ijb_meta(args.image_path, args.target)
                _check_masks(settings, meta)
            return cls(args.config, settings, args.network, args.model_prefix, meta,
                       args.batch_size, args.job)

    def __call__(self, save_path: str | os.PathLike, image_features: np.ndarray) -> None:
        """After upstream's table: occlusion and FS-CAM into ``save_path``. ``image_features``:
        upstream's (image + flip) x faceness features of every row, the occlusion benchmark's clean
        side."""
        if not self.settings.wants_masks:
            return
        with _user_errors():
            from fse_plugin.backbone import load_backbone
            device = resolve_device("auto")
            model = load_backbone(self.weights, self.network, EMBEDDING_SIZE, os.getcwd(),
                                  config_path=self.config_path)
            models, out = {self.name: model}, Path(save_path)
            masks = self._masks(out, device)
            if self.settings.occlusion is not None:
                self._occlusion(models, masks, image_features, out, device)
            if self.settings.fscam is not None:
                self._fscam(models, masks, out, device)

    def _masks(self, out: Path, device: Any) -> Any:
        s = self.settings
        if s.mask_source() != "parser":
            return open_masks(s.masks or s.mask_cache, len(self.meta.names))
        rows = [self.meta.probe_rows()] if s.occlusion is not None else []
        if s.fscam is not None:
            from fse_plugin.cam import ijb_fscam_rows
            rows += list(ijb_fscam_rows(self.meta, s.fscam.pairs, s.fscam.limit))
        return predict_ijb_masks(s.parser, self.meta, np.unique(np.concatenate(rows)),
                                 out / f"{self.meta.target.lower()}_masks.npy", self.batch_size,
                                 device, False)

    def _occlusion(self, models: dict, masks: Any, image_features: np.ndarray, out: Path,
                   device: Any) -> None:
        o = self.settings.occlusion
        embedding = EmbedSettings(self.batch_size, device, embedding_size=EMBEDDING_SIZE,
                                  progress=False)
        settings = OcclusionSettings(list(o.regions), o.fill, o.seed, embedding)
        report = occlusion_ijb(models, self.meta, masks, settings, o.far,
                               {self.name: image_features})
        log.info("%s", report.table())
        paths = write_occlusion_report(report, out, f"occlusion_{self.meta.target.lower()}")
        log.info("occlusion: %s", ", ".join(str(p) for p in paths.values()))

    def _fscam(self, models: dict, masks: Any, out: Path, device: Any) -> None:
        from fse_plugin.cam import TARGETS, ExplainSettings, fscam_ijb
        f = self.settings.fscam
        log.info("FS-CAM target: %s", TARGETS["pair"])
        settings = ExplainSettings(methods=f.methods, device=str(device), progress=False)
        report = fscam_ijb(models, self.meta, masks, Path(f.out) if f.out else out / "fscam",
                           settings, f.pairs, f.limit)
        log.info("FS-CAM report: %s", report)
