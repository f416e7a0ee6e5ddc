"""`fse demo`: the whole plugin on synthetic faces, on a CPU, in minutes, repeatable bit for bit.

Stages: synthesise -> parser (counted epochs; a quality floor warns when its masks are unreliable)
-> mask cache -> two recognizers, without and with FSErasing (counted steps, same seed) ->
verification pack, ROC and semantic-occlusion benchmark -> FS-CAM of both -> pictures -> report.
The data, parser and recognizer stages are shared with the study (``fse_plugin.experiment``); the
demo is one seed of a study with pictures. Every output file is written whole (``report.md`` last).
Budgets are counted, so two runs with the same seed and thread count give the same scores on one
kind of CPU (``demo.json`` records it); ``parser_seconds`` / ``recognizer_seconds`` are optional
safety stops, and a run they cut short is marked ``repeatable: false`` in ``demo.json``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fse_plugin.common import checks
from fse_plugin.common.files import atomic_write
from fse_plugin.demo.pictures import erased_samples, pack_roc, parser_vs_truth
from fse_plugin.demo.report import clean_verdict, write_report
from fse_plugin.demo.sizes import FULL, DemoSizes
from fse_plugin.experiment import inputs as make
from fse_plugin.experiment.clock import StageClock, machine, warn_if_busy
from fse_plugin.experiment.recognizer import (RecognizerSettings, load_recognizer_weights,
                                              train_recognizer)

__all__ = ["run_demo"]


@dataclass
class Evaluation:
    """What the evaluation stage measured."""
    results: dict[str, Any]  # model name -> VerificationResult
    occlusion: Any  # OcclusionReport
    occlusion_files: dict[str, Path]
    roc: Path


def train_both(rec_dir: Path, cache: Path, out: Path, sizes: DemoSizes, seed: int, p: float,
               device: str, progress: bool) -> dict[str, dict[str, Any]]:
    """The baseline and the FSErasing model: same seed (initialisation, data order), same steps."""
    settings = RecognizerSettings(sizes.recognizer_steps, seed=seed, device=device,
                                  max_seconds=sizes.recognizer_seconds)
    return {name: train_recognizer(rec_dir, out / "models" / f"{name}.pt", settings, fse=fse,
                                   progress=progress, desc=name)
            for name, fse in (("baseline", None), ("fserasing", dict(masks=str(cache), p=p)))}


def evaluate_models(models: dict[str, torch.nn.Module], images: np.ndarray, issame: np.ndarray,
                    masks: np.ndarray, out: Path, sizes: DemoSizes, seed: int,
                    progress: bool) -> Evaluation:
    """Pack accuracy (10-fold) and ROC from one embedding pass per model, and the occlusion
    benchmark (25 regions + groups erased in the probe)."""
    from fse_plugin import evaluation
    views = {name: evaluation.embed(m, images, evaluation.EmbedSettings(progress=False))
             for name, m in models.items()}
    results = {name: evaluation.evaluate_embeddings(v, issame, name=name)
               for name, v in views.items()}
    roc = pack_roc({name: evaluation.fuse_views(v) for name, v in views.items()}, issame,
                   out / "roc.png")
    n = min(sizes.occlusion_pairs, len(issame))
    settings = evaluation.OcclusionSettings(seed=seed,
                                            embed=evaluation.EmbedSettings(progress=progress))
    occ = evaluation.occlusion_pack(models, images[:2 * n], issame[:n], masks[:2 * n], settings,
                                    name="synth_lfw")
    return Evaluation(results, occ, evaluation.write_occlusion_report(occ, out / "occlusion"), roc)


def explain(models: dict[str, torch.nn.Module], images: np.ndarray, issame: np.ndarray,
            masks: np.ndarray, out: Path, n_pairs: int, device: str, progress: bool) -> Any:
    """FS-CAM of both models on the first ``n_pairs`` genuine pairs of the pack."""
    from fse_plugin import cam
    same = np.flatnonzero(issame)[:n_pairs]
    return cam.explain_pairs({name: models[name] for name in ("baseline", "fserasing")},
                             images[2 * same], images[2 * same + 1], masks[2 * same],
                             masks[2 * same + 1],
                             out / "fscam", cam.ExplainSettings(device=device, progress=progress))


@dataclass
class Outcome:
    """What the stages of one demo run produced."""
    parser: dict[str, Any]
    warning: str | None
    parser_on_rec: dict[str, float]
    runs: dict[str, dict[str, Any]]
    evaluation: Evaluation


def _facts(settings: dict[str, Any], clock: StageClock, done: Outcome) -> dict[str, Any]:
    """demo.json: settings, timings, machine and every score (the scores repeat bit for bit, timings
    do not)."""
    ev, parser = done.evaluation, done.parser
    single = [r for r in ev.occlusion.rows if len(r.classes) == 1]
    stopped = parser["stopped_by_time"] or any(r["stopped_by_time"] for r in done.runs.values())
    return {
        **settings, "torch_threads": torch.get_num_threads(), "machine": machine(),
        "repeatable": parser["repeatable"] and not stopped, "timings_s": clock.total(),
        "parser": {k: parser[k] for k in ("epochs", "epochs_asked", "steps", "elapsed",
                                          "best_val_miou", "val_mf1",
                                          "n_train", "n_val", "stopped_by_time") if k in parser},
        "parser_quality": {"floor": make.PARSER_FLOOR, "val_mean_f1": parser.get("val_mf1"),
                           "reliable": done.warning is None, "warning": done.warning},
        "parser_on_rec": done.parser_on_rec, "recognizers": done.runs,
        "verification": {k: asdict(v) for k, v in ev.results.items()},
        "occlusion": {"mean_drop_single_regions": {m: float(np.mean([r.drop[m] for r in single]))
                                                   for m in ev.occlusion.models},
                      "drop": {r.region: r.drop for r in ev.occlusion.rows}},
        "clean_verdict": clean_verdict(ev.results["baseline"], ev.results["fserasing"]),
    }


def run_demo(out: str | os.PathLike = "fse_demo", sizes: DemoSizes = FULL, seed: int = 0,
             p: float = 0.5, device: str = "cpu", progress: bool = True) -> Path:
    """Run every stage into ``out`` and return the path of ``report.md``."""
    checks.count(seed, "--seed", minimum=0)
    checks.probability(p, "--p")
    out = Path(checks.output_dir(out, "--out"))
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock("demo")
    warn_if_busy("demo")
    synthetic = make.synthesise(out, sizes.fs_images, sizes.ids, sizes.per_id, sizes.pairs, seed,
                                progress)
    clock("synthesise")
    parser = make.train_parser(synthetic.facesynthetics, out / "parser", sizes.parser_epochs, seed,
                               device, sizes.parser_seconds, progress)
    warning = make.parser_warning(parser)
    make.warn(warning)
    clock("train parser")
    cache = make.build_mask_cache(synthetic.rec, parser["best"], device, progress)
    clock("precompute masks")
    runs = train_both(synthetic.rec, cache, out, sizes, seed, p, device, progress)
    models = {name: load_recognizer_weights(r["weights"]) for name, r in runs.items()}
    clock("train recognizers")
    pack = make.read_pack(synthetic.pack)
    ev = evaluate_models(models, *pack, out, sizes, seed, progress)
    clock("evaluate")
    cam_out = explain(models, *pack, out, sizes.cam_pairs, device, progress)
    clock("fs-cam")
    erased_png = erased_samples(synthetic.rec, cache, out / "erased_samples.png", seed=seed)
    parser_png, parser_on_rec = parser_vs_truth(synthetic.rec, cache, out / "parser_vs_truth.png")
    clock("pictures")
    facts = _facts({"sizes": asdict(sizes), "seed": seed, "p": p, "device": device}, clock,
                   Outcome(parser, warning, parser_on_rec, runs, ev))
    atomic_write(out / "demo.json", json.dumps(facts, indent=2, default=str).encode())
    return write_report(out, facts, ev, cam_out, {"erased": erased_png, "parser": parser_png})
