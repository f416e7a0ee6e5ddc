"""``fse study``: K seeds x variants on one rec, one mask cache and one verification pack.

Stages: inputs (synthesise -> parser with a quality floor -> mask cache, or the user's own rec and
pack) -> probes -> per seed, per variant: train, score -> statistics and sensitivity -> report.
Every stage leaves a complete result or none: the inputs are recorded in ``inputs.json`` once they
are whole, each run's ``scores.json`` is written last, and the report files are written whole. A
study started again reuses inputs and runs whose settings match (so adding seeds trains only the
new ones); runs go seed by seed, so an interrupted study has complete pairs.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fse_plugin.common.files import atomic_output, atomic_write
from fse_plugin.experiment import inputs as make
from fse_plugin.experiment.clock import StageClock, machine, warn_if_busy
from fse_plugin.experiment.recognizer import RecognizerSettings
from fse_plugin.study.pictures import probe_samples
from fse_plugin.study.probes import ProbeSet, build_probes, probe_distances, scores
from fse_plugin.study.report import write_study_report
from fse_plugin.study.results import RunResult, summarise
from fse_plugin.study.settings import StudySettings
from fse_plugin.study.variants import Variant

__all__ = ["Inputs", "prepare_inputs", "run_study"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inputs:
    """What every run of a study shares: the rec and its mask cache, the pack and its masks, and the
    parser's summary and warning (empty and None when no parser was trained here)."""
    rec: Path
    cache: Path
    pack: Path
    pack_masks: Path
    parser: dict[str, Any]
    warning: str | None

    def to_json(self) -> dict[str, Any]:
        return {"rec": str(self.rec), "cache": str(self.cache), "pack": str(self.pack),
                "pack_masks": str(self.pack_masks), "parser": self.parser, "warning": self.warning}


def _inputs_spec(settings: StudySettings) -> dict[str, Any]:
    """What the inputs depend on: a study started again reuses them only when this is unchanged."""
    s, own = settings.sizes, settings.data
    spec: dict[str, Any] = {"data": settings.facts()["data"], "device": settings.device,
                            "threads": torch.get_num_threads()}
    if own.rec is None:
        spec.update(ids=s.ids, per_id=s.per_id, masks=settings.mask_source)
        if settings.mask_source == "parser":
            spec.update(fs_images=s.fs_images, parser_epochs=s.parser_epochs)
    if own.pack is None:
        spec.update(pairs=s.pairs)
    return spec


def _reused_inputs(out: Path, spec: dict[str, Any]) -> Inputs | None:
    path = out / "inputs.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("spec") != spec:
        return None
    found = Inputs(**{k: Path(v) if k in ("rec", "cache", "pack", "pack_masks") else v
                      for k, v in saved["inputs"].items()})
    return (found if all(p.exists() for p in (found.rec, found.cache, found.pack, found.pack_masks))
            else None)


def _pack_masks(settings: StudySettings, out: Path, pack: Path) -> Path:
    """The pack's masks: beside it, or predicted by ``--parser`` into the study folder."""
    from fse_plugin.common import masks_path_for
    if settings.data.parser is None:
        return masks_path_for(pack)
    from fse_plugin.evaluation import load_bin
    from fse_plugin.parsing import masks_from_checkpoint
    path = out / "packs" / masks_path_for(pack).name
    masks = masks_from_checkpoint(settings.data.parser, load_bin(pack)[0], settings.device)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, masks)
    return path


def prepare_inputs(settings: StudySettings, progress: bool = True) -> Inputs:
    """The rec, mask cache and pack of the study (synthesised where the user gave none), reused from
    an earlier start of the same study when nothing they depend on changed."""
    out, s, own = Path(settings.out), settings.sizes, settings.data
    spec = _inputs_spec(settings)
    found = _reused_inputs(out, spec)
    if found is not None:
        log.info("[study] reusing the inputs of %s", out / "inputs.json")
        return found
    (out / "inputs.json").unlink(missing_ok=True)  # whatever it recorded is being replaced
    parser_data = settings.mask_source == "parser"
    synthetic = make.synthesise(out, s.fs_images if parser_data else 0, 0 if own.rec else s.ids,
                                s.per_id, 0 if own.pack else s.pairs, 0, progress)
    rec, pack = Path(own.rec or synthetic.rec), Path(own.pack or synthetic.pack)
    summary, warning = {}, None
    if own.rec is not None:
        cache = Path(own.cache)
    elif settings.mask_source == "gt":
        cache = make.build_mask_cache(rec, None, progress=progress)
    else:
        summary = make.train_parser(synthetic.facesynthetics, out / "parser", s.parser_epochs,
                                    seed=0, device=settings.device, progress=progress)
        warning = make.parser_warning(summary)
        make.warn(warning)
        cache = make.build_mask_cache(rec, summary["best"], settings.device, progress)
    parser = {k: summary[k] for k in ("epochs", "steps", "val_mf1", "val_miou") if k in summary}
    found = Inputs(rec, Path(cache), pack, _pack_masks(settings, out, pack), parser, warning)
    atomic_write(out / "inputs.json",
                 json.dumps({"spec": spec, "inputs": found.to_json()}, indent=2).encode())
    return found


def _trainer(settings: StudySettings, found: Inputs, progress: bool) -> Any:
    s = settings.sizes
    if settings.trainer == "builtin":
        from fse_plugin.study.builtin import BuiltinTrainer
        return BuiltinTrainer(found.rec, found.cache,
                              RecognizerSettings(s.steps, s.batch_size, width=s.width,
                                                 device=settings.device), progress)
    from fse_plugin.study.arcface import ArcfaceTrainer
    return ArcfaceTrainer(settings.arcface, settings.out, found.rec, found.cache, s.steps,
                          s.batch_size)


def _run_one(trainer: Any, variant: Variant, seed: int, probes: ProbeSet, run_dir: Path,
             settings: dict[str, Any], device: str) -> RunResult:
    """Train and score one (variant, seed), or reuse a finished run with the same settings.
    ``scores.json`` is written last: a run folder without it is unfinished."""
    saved, distances = run_dir / "scores.json", run_dir / "distances.npz"
    if saved.is_file() and distances.is_file():
        done = json.loads(saved.read_text())
        if done.get("settings") == settings:
            with np.load(distances) as npz:
                return RunResult(variant.name, seed, done["scores"], done["train"],
                                 {k: npz[k] for k in npz.files})
    saved.unlink(missing_ok=True)
    train = trainer(variant, seed, run_dir)
    start = time.perf_counter()
    dist = probe_distances(trainer.load(train["weights"]), probes, device)
    train["score_seconds"] = time.perf_counter() - start
    result = RunResult(variant.name, seed, scores(dist, probes.issame), train, dist)
    with atomic_output(distances) as tmp, open(tmp, "wb") as f:
        np.savez(f, **dist)
    atomic_write(saved, json.dumps({"variant": variant.name, "seed": seed, "settings": settings,
                                    "scores": result.scores, "train": train},
                                   indent=2, default=str).encode())
    return result


def run_study(settings: StudySettings, progress: bool = True) -> Path:
    """Run the study into ``settings.out`` (checked whole first) and return the path of its
    ``report.md``."""
    chosen = settings.check()
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock("study")
    warn_if_busy("study")
    found = prepare_inputs(settings, progress)
    clock("inputs")
    pack = make.read_pack(found.pack, found.pack_masks)
    probes = build_probes(*pack, settings.probes, settings.regions)
    probes_png = probe_samples(probes, out / "probes.png")
    clock("probes")
    trainer = _trainer(settings, found, progress)
    facts = settings.facts()  # a run depends on all of it but the other variants and seeds
    run_settings = {**facts, "sizes": {**facts["sizes"], "seeds": None}, "variants": None,
                    "trainer": repr(trainer), "threads": torch.get_num_threads(),
                    "inputs": _inputs_spec(settings)}
    runs = [_run_one(trainer, v, seed, probes, out / "runs" / f"{v.slug}_s{seed}",
                     {**run_settings, "variant": repr(v), "seed": seed}, settings.device)
            for seed in range(settings.sizes.seeds) for v in chosen]
    clock("train and score")
    results = summarise(runs, [v.name for v in chosen], probes.issame)
    clock("statistics")
    facts = {"config": {**settings.facts(), "trainer_detail": repr(trainer),
                        "pairs": len(probes.issame),
                        "variants": {v.name: {"fse": v.fse, "random_erasing": v.random_erasing}
                                     for v in chosen},
                        "repeatable": not any(r.train.get("stopped_by_time") for r in runs)},
             "inputs": found.to_json(), "parser": found.parser, "warning": found.warning,
             "machine": machine(), "timings_s": clock.total(), "runs": [r.to_json() for r in runs]}
    return write_study_report(out, results, facts, probes_png)

