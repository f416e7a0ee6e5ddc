"""FS-CAM of the pairs a verification protocol just scored: ``fse eval ... --fscam OUT_DIR`` and the
patched ``eval_ijbc.py`` with ``config.fse_eval = dict(fscam=...)``.

The evaluation code does not import ``cam`` at module level; its callers use these after the
protocol ran, with the models, images and masks they already hold.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from torch import nn

from fse_plugin.cam.explain import explain_pairs
from fse_plugin.cam.settings import ExplainSettings
from fse_plugin.common import FSEError
from fse_plugin.evaluation import IJBFaces, IJBMeta, select_pairs, stack_masks
from fse_plugin.evaluation.embed import given_settings

__all__ = ["fscam_pack", "ijb_fscam_rows", "fscam_ijb"]


def _with_meta(settings: ExplainSettings | None, **meta: Any) -> ExplainSettings:
    """``settings`` (default ``ExplainSettings()``) with ``meta`` ahead of its own report
    entries."""
    s = given_settings(settings, ExplainSettings)
    return replace(s, meta={**meta, **s.meta})


def fscam_pack(models: Mapping[str, nn.Module], images: np.ndarray, issame: np.ndarray, masks: Any,
               out_dir: str | os.PathLike, settings: ExplainSettings | None = None,
               pairs: str = "same", limit: int | None = 64) -> Path:
    """FS-CAM (and any other ``cam`` method of ``settings``) of the first ``limit`` ``pairs``
    ('same', 'diff', 'all') of a pack, for one or two models side by side, through
    ``explain_pairs``; returns the report path."""
    sel = select_pairs(issame, pairs, limit)
    if not len(sel):
        raise FSEError(f"no {pairs!r} pairs to explain")
    return explain_pairs(models, images[2 * sel], images[2 * sel + 1], stack_masks(masks, 2 * sel),
                         stack_masks(masks, 2 * sel + 1), out_dir,
                         _with_meta(settings, pairs=f"{len(sel)} {pairs}")).report


def ijb_fscam_rows(meta: IJBMeta, pairs: str = "same",
                   limit: int | None = 64) -> tuple[np.ndarray, np.ndarray]:
    """Meta rows of the images FS-CAM explains for IJB: each selected template pair is represented
    by the first image (in meta order) of each of its two templates."""
    sel = select_pairs(meta.labels == 1, pairs, limit)
    unique, first = np.unique(meta.templates, return_index=True)
    return (first[np.searchsorted(unique, meta.p1[sel])],
            first[np.searchsorted(unique, meta.p2[sel])])


def fscam_ijb(models: Mapping[str, nn.Module], meta: IJBMeta, masks: Any,
              out_dir: str | os.PathLike, settings: ExplainSettings | None = None,
              pairs: str = "same", limit: int | None = 64) -> Path:
    """FS-CAM of the first ``limit`` template pairs of an IJB set (see ``ijb_fscam_rows``), as
    ``fscam_pack``."""
    rows1, rows2 = ijb_fscam_rows(meta, pairs, limit)
    if not len(rows1):
        raise FSEError(f"{meta.files['template_pair_label']}: no {pairs!r} pairs to explain")
    faces = IJBFaces(meta)

    def images(rows: np.ndarray) -> np.ndarray:
        return np.stack([faces.image(r) for r in rows])

    settings = _with_meta(settings, benchmark=meta.target, pairs=f"{len(rows1)} {pairs}")
    return explain_pairs(models, images(rows1), images(rows2), stack_masks(masks, rows1),
                         stack_masks(masks, rows2), out_dir, settings).report
