"""The inputs of a demo or study run: synthetic faces, a parser held to a quality floor, a mask
cache.

Synthetic faces (``fse_plugin.synth``): a FaceSynthetics-layout folder for the parser, an
insightface-layout rec for the recognizers and a verification pack of held-out identities. The
parser is trained for a counted number of epochs (a wall-clock limit is only an optional safety
stop) and checked against a quality floor: a parser below it gives masks that do not follow the
face's regions, so FSErasing erases blobs and a comparison built on them says nothing about
FSErasing. The mask cache comes from that parser (as a user would build it) or, to isolate the
augmentation from the parser's errors, from the synthetic ground truth.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PARSER_FLOOR", "SyntheticSet", "synthesise", "read_pack", "train_parser",
           "parser_warning", "build_mask_cache", "warn"]

log = logging.getLogger(__name__)

PARSER_FLOOR = 0.6
"""Validation mean F1 below which the parser's masks are called unreliable (a quiet full demo
reaches ~0.85; a parser starved of steps on a busy machine reached 0.20)."""


@dataclass(frozen=True)
class SyntheticSet:
    """Where one run's synthetic data lies (None: that part was not asked for)."""
    facesynthetics: Path | None
    rec: Path | None
    pack: Path | None


def synthesise(out: str | Path, fs_images: int, ids: int, per_id: int, pairs: int, seed: int,
               progress: bool = True) -> SyntheticSet:
    """Write the parser folder (``fs_images`` frames), the training rec (``ids`` x ``per_id`` faces)
    and a ``pairs``-pair pack of held-out identities; a part whose count is 0 is not written (its
    path is None)."""
    from fse_plugin import synth
    out = Path(out)
    fs = (synth.write_facesynthetics(out / "facesynthetics", fs_images, seed, progress=progress)
          if fs_images else None)
    rec = synth.write_rec(out / "rec", ids, per_id, seed, progress=progress) if ids else None
    pack = (synth.write_pairs_bin(out / "packs" / "synth_lfw.bin", pairs, seed + 1,
                                  progress=progress) if pairs else None)
    return SyntheticSet(*(Path(p) if p else None for p in (fs, rec, pack)))


def read_pack(pack: str | Path,
              masks: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pack's images, issame and masks (``masks``, default its ``.masks.npy``; checked), read once
    for every use."""
    from fse_plugin.common import load_masks, masks_path_for
    from fse_plugin.evaluation import load_bin
    images, issame = load_bin(pack)
    path = masks_path_for(pack) if masks is None else masks
    return images, np.asarray(issame), load_masks(path, len(images), images.shape[1:3], mmap=False)


def train_parser(fs_dir: str | Path, out: str | Path, epochs: int, seed: int = 0,
                 device: str = "cpu",
                 max_seconds: float = 0.0, progress: bool = True) -> dict[str, Any]:
    """Train the small parser for ``epochs`` epochs; returns ``parsing.train_parser``'s summary plus
    ``epochs_asked`` and ``stopped_by_time``.

    feature_scale 8 and batch 8: on a CPU, steps buy accuracy (a quiet 2-core run reached val mean
    F1 0.85 in 1,180 steps; batch 32 gets a quarter of the steps per second). ``max_seconds`` > 0 is
    a safety stop; ``parsing.train_parser`` then also anneals the learning rate by the clock, so a
    run with it is not repeatable (``repeatable`` False in the summary).
    """
    from fse_plugin import parsing
    summary = asdict(parsing.train_parser(fs_dir, out, parsing.TrainSettings(
        epochs=epochs, batch_size=8, time_budget=max_seconds or None, seed=seed, feature_scale=8,
        workers=0, device=device, progress=progress)))
    return {**summary, "epochs_asked": epochs, "stopped_by_time": summary["epochs"] < epochs,
            "repeatable": not max_seconds}


def parser_warning(summary: dict[str, Any], floor: float = PARSER_FLOOR) -> str | None:
    """The warning to print and put at the top of a report when the parser is below ``floor``, else
    None."""
    score = summary.get("val_mf1")
    if score is not None and score >= floor:
        return None
    measured = "was not measured (no validation split)" if score is None else f"is {score:.3f}"
    return (f"WARNING: the parser's validation mean F1 {measured}, below the quality floor "
            f"{floor}: the mask cache is unreliable (masks do not follow the face's regions), so "
            f"FSErasing erased wrong areas and the comparison is not meaningful. Give the parser "
            f"more epochs.")


def build_mask_cache(rec_dir: str | Path, parser_ckpt: str | Path | None, device: str = "cpu",
                     progress: bool = True) -> Path:
    """The rec's mask cache from the parser checkpoint, or from ``gt_masks.npz`` when
    ``parser_ckpt`` is None."""
    from fse_plugin import maskcache
    rec_dir = Path(rec_dir)
    if parser_ckpt is None:
        gt = np.load(rec_dir / "gt_masks.npz")
        return maskcache.build_from_labels(rec_dir, gt["keys"], gt["masks"], overwrite=True,
                                           progress=progress,
                                           labels_path=str(rec_dir / "gt_masks.npz"))
    return maskcache.precompute(rec_dir, parser_ckpt, settings=maskcache.BuildSettings(
        batch_size=64, device=device, num_workers=1, overwrite=True, progress=progress))


def warn(text: str | None) -> None:
    """Log a warning set apart, so it is not lost among progress lines."""
    if text:
        log.warning("\n%s\n%s\n%s\n", "!" * 100, text, "!" * 100)
