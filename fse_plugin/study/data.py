"""The synthetic data of a demo or study run, its parser and its mask cache, built once per run.

Synthetic faces (``fse_plugin.synth``): a FaceSynthetics-layout folder for the parser, an
insightface-layout rec for the recognizers and a verification pack of held-out identities. The
parser is trained for a counted number of epochs (a wall-clock limit is only an optional safety
stop) and checked against a quality floor: a parser below it gives masks that do not follow the
face's regions, so FSErasing erases blobs and a comparison built on them says nothing about
FSErasing. The mask cache comes from that parser (as a user would build it) or, to isolate the
augmentation from the parser's errors, from the synthetic ground truth.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PARSER_FLOOR", "SyntheticSet", "synthesise", "train_parser", "parser_warning", "build_mask_cache", "warn"]

PARSER_FLOOR = 0.6
"""Validation mean F1 below which the parser's masks are called unreliable (a quiet full demo reaches
~0.85; a parser starved of steps on a busy machine reached 0.20)."""


@dataclass(frozen=True)
class SyntheticSet:
    """Where one run's synthetic data lies."""
    facesynthetics: Path
    rec: Path
    pack: Path


def synthesise(out: str | Path, fs_images: int, ids: int, per_id: int, pairs: int, seed: int,
               progress: bool = True) -> SyntheticSet:
    """Write the parser folder, the training rec (``ids`` x ``per_id`` faces) and a ``pairs``-pair pack."""
    from fse_plugin import synth
    out = Path(out)
    fs_dir = synth.write_facesynthetics(out / "facesynthetics", fs_images, seed, progress=progress)
    rec_dir = synth.write_rec(out / "rec", ids, per_id, seed, progress=progress)
    pack = synth.write_pairs_bin(out / "packs" / "synth_lfw.bin", pairs, seed + 1, progress=progress)
    return SyntheticSet(Path(fs_dir), Path(rec_dir), Path(pack))


def train_parser(fs_dir: str | Path, out: str | Path, epochs: int, seed: int = 0, device: str = "cpu",
                 max_seconds: float = 0.0, progress: bool = True) -> dict[str, Any]:
    """Train the small parser for ``epochs`` epochs; returns ``parsing.train_parser``'s summary plus
    ``epochs_asked`` and ``stopped_by_time``.

    feature_scale 8 and batch 8: on a CPU, steps buy accuracy (a quiet 2-core run reached val mean F1
    0.85 in 1,180 steps; batch 32 gets a quarter of the steps per second). ``max_seconds`` > 0 is a
    safety stop; ``parsing.train_parser`` then also anneals the learning rate by the clock, so a run
    with it is not repeatable (``repeatable`` False in the summary).
    """
    from fse_plugin import parsing
    if epochs < 1:
        raise ValueError(f"parser epochs must be >= 1, got {epochs}")
    summary = asdict(parsing.train_parser(fs_dir, out, parsing.TrainSettings(
        epochs=epochs, batch_size=8, time_budget=max_seconds or None, seed=seed, feature_scale=8, workers=0,
        device=device, progress=progress)))
    return {**summary, "epochs_asked": epochs, "stopped_by_time": summary["epochs"] < epochs,
            "repeatable": not max_seconds}


def parser_warning(summary: dict[str, Any], floor: float = PARSER_FLOOR) -> str | None:
    """The warning to print and put at the top of a report when the parser is below ``floor``, else None."""
    score = summary.get("val_mf1")
    if score is not None and score >= floor:
        return None
    measured = "was not measured (no validation split)" if score is None else f"is {score:.3f}"
    return (f"WARNING: the parser's validation mean F1 {measured}, below the quality floor {floor}: the mask cache "
            f"is unreliable (masks do not follow the face's regions), so FSErasing erased wrong areas and the "
            f"comparison is not meaningful. Give the parser more epochs.")


def build_mask_cache(rec_dir: str | Path, parser_ckpt: str | Path | None, device: str = "cpu",
                     progress: bool = True) -> Path:
    """The rec's mask cache from the parser checkpoint, or from ``gt_masks.npz`` when ``parser_ckpt`` is None."""
    from fse_plugin import maskcache
    rec_dir = Path(rec_dir)
    if parser_ckpt is None:
        gt = np.load(rec_dir / "gt_masks.npz")
        return maskcache.build_from_labels(rec_dir, gt["keys"], gt["masks"], overwrite=True, progress=progress,
                                           labels_path=str(rec_dir / "gt_masks.npz"))
    return maskcache.precompute(rec_dir, parser_ckpt, settings=maskcache.BuildSettings(
        batch_size=64, device=device, num_workers=1, overwrite=True, progress=progress))


def warn(text: str | None) -> None:
    """Print a warning on stderr, set apart so it is not lost among progress lines."""
    if text:
        print(f"\n{'!' * 100}\n{text}\n{'!' * 100}\n", file=sys.stderr, flush=True)
