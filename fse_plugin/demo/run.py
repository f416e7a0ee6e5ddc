"""`fse demo`: the whole plugin on synthetic faces, on a CPU, in minutes, repeatable bit for bit.

Stages: synthesise -> parser (counted epochs; a quality floor warns when its masks are unreliable)
-> mask cache -> two recognizers, without and with FSErasing (counted steps, same seed) ->
verification pack, ROC and semantic-occlusion benchmark -> FS-CAM of both -> pictures -> report.
The data, parser and recognizer stages are the study's (``fse_plugin.study``); the demo is one seed
of it with pictures. Budgets are counted, so two runs with the same seed and thread count give the
same scores; ``parser_seconds`` / ``recognizer_seconds`` are optional safety stops, and a run they
cut short is marked ``repeatable: false`` in ``demo.json``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fse_plugin.demo.pictures import erased_samples, pack_roc, parser_vs_truth
from fse_plugin.demo.report import clean_verdict, write_report
from fse_plugin.study import data
from fse_plugin.study.clock import StageClock, warn_if_busy
from fse_plugin.study.recognizer import train_recognizer

__all__ = ["DemoSizes", "FULL", "QUICK", "run_demo"]


@dataclass(frozen=True)
class DemoSizes:
    """Data sizes and counted budgets of one demo run (seconds: optional safety stops, 0 = none)."""
    fs_images: int = field(default=1200, metadata={"help": "FaceSynthetics-layout 512x512 frames for the parser"})
    ids: int = field(default=300, metadata={"help": "training identities of the rec"})
    per_id: int = field(default=16, metadata={"help": "faces per training identity"})
    pairs: int = field(default=600, metadata={"help": "verification pairs of held-out identities"})
    parser_epochs: int = field(default=10, metadata={"help": "parser epochs (118 steps of batch 8 each at full size)"})
    recognizer_steps: int = field(default=350, metadata={"help": "steps of batch 64 per recognizer"})
    cam_pairs: int = field(default=16, metadata={"help": "genuine pairs explained with FS-CAM"})
    occlusion_pairs: int = field(default=300, metadata={"help": "pairs of the occlusion benchmark"})
    parser_seconds: float = field(default=0.0, metadata={
        "help": "safety stop of the parser in seconds (0 = none; it also anneals by the clock: not repeatable)"})
    recognizer_seconds: float = field(default=0.0, metadata={
        "help": "safety stop of each recognizer in seconds (0 = none; a run it stops is not repeatable)"})


FULL = DemoSizes()
QUICK = DemoSizes(fs_images=100, ids=24, per_id=6, pairs=40, parser_epochs=2, recognizer_steps=10, cam_pairs=3,
                  occlusion_pairs=16)


@dataclass
class Evaluation:
    """What the evaluation stage measured."""
    results: dict[str, Any]  # model name -> VerificationResult
    occlusion: Any  # OcclusionReport
    occlusion_files: dict[str, Path]
    roc: Path


def train_both(rec_dir: Path, cache: Path, out: Path, sizes: DemoSizes, seed: int, p: float, device: str,
               progress: bool) -> dict[str, dict[str, Any]]:
    """The baseline and the FSErasing model: same seed (initialisation, data order), same steps."""
    return {name: train_recognizer(rec_dir, out / "models" / f"{name}.pt", fse, sizes.recognizer_steps, seed=seed,
                                   device=device, max_seconds=sizes.recognizer_seconds, progress=progress, desc=name)
            for name, fse in (("baseline", None), ("fserasing", dict(masks=str(cache), p=p)))}


def load_pack(pack: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pack's images, issame and its ``.masks.npy`` (checked), read once for evaluation and FS-CAM."""
    from fse_plugin import evaluation
    from fse_plugin.common import load_masks, masks_path_for
    images, issame = evaluation.load_bin(pack)
    return images, issame, load_masks(masks_path_for(pack), len(images), images.shape[1:3], mmap=False)


def evaluate_models(models: dict[str, torch.nn.Module], images: np.ndarray, issame: np.ndarray, masks: np.ndarray,
                    out: Path, sizes: DemoSizes, seed: int, progress: bool) -> Evaluation:
    """Pack accuracy (10-fold) and ROC from one embedding pass per model, and the occlusion benchmark
    (25 regions + groups erased in the probe)."""
    from fse_plugin import evaluation
    views = {name: evaluation.embed(m, images, evaluation.EmbedSettings(progress=False)) for name, m in models.items()}
    results = {name: evaluation.evaluate_embeddings(v, issame, name=name) for name, v in views.items()}
    roc = pack_roc({name: evaluation.fuse_views(v) for name, v in views.items()}, issame, out / "roc.png")
    n = min(sizes.occlusion_pairs, len(issame))
    settings = evaluation.OcclusionSettings(seed=seed, embed=evaluation.EmbedSettings(progress=progress))
    occ = evaluation.occlusion_pack(models, images[:2 * n], issame[:n], masks[:2 * n], settings, name="synth_lfw")
    return Evaluation(results, occ, evaluation.write_occlusion_report(occ, out / "occlusion"), roc)


def explain(models: dict[str, torch.nn.Module], images: np.ndarray, issame: np.ndarray, masks: np.ndarray, out: Path,
            n_pairs: int, device: str, progress: bool) -> Any:
    """FS-CAM of both models on the first ``n_pairs`` genuine pairs of the pack."""
    from fse_plugin import cam
    same = np.flatnonzero(issame)[:n_pairs]
    return cam.explain_pairs({name: models[name] for name in ("baseline", "fserasing")}, images[2 * same],
                             images[2 * same + 1], masks[2 * same], masks[2 * same + 1], out / "fscam",
                             cam.ExplainSettings(device=device, progress=progress))


def _facts(sizes: DemoSizes, seed: int, p: float, device: str, clock: StageClock, parser: dict, warning: str | None,
           parser_on_rec: dict, runs: dict, ev: Evaluation) -> dict[str, Any]:
    """demo.json: settings, timings, and every score (the scores repeat bit for bit, timings do not)."""
    single = [r for r in ev.occlusion.rows if len(r.classes) == 1]
    stopped = parser["stopped_by_time"] or any(r["stopped_by_time"] for r in runs.values())
    return {
        "sizes": asdict(sizes), "seed": seed, "p": p, "device": device, "torch_threads": torch.get_num_threads(),
        "repeatable": parser["repeatable"] and not stopped, "timings_s": clock.total(),
        "parser": {k: parser[k] for k in ("epochs", "epochs_asked", "steps", "elapsed", "best_val_miou", "val_mf1",
                                          "n_train", "n_val", "stopped_by_time") if k in parser},
        "parser_quality": {"floor": data.PARSER_FLOOR, "val_mean_f1": parser.get("val_mf1"),
                           "reliable": warning is None, "warning": warning},
        "parser_on_rec": parser_on_rec, "recognizers": runs,
        "verification": {k: asdict(v) for k, v in ev.results.items()},
        "occlusion": {"mean_drop_single_regions": {m: float(np.mean([r.drop[m] for r in single])) for m in
                                                   ev.occlusion.models},
                      "drop": {r.region: r.drop for r in ev.occlusion.rows}},
        "clean_verdict": clean_verdict(ev.results["baseline"], ev.results["fserasing"]),
    }


def run_demo(out: str | os.PathLike = "fse_demo", sizes: DemoSizes = FULL, seed: int = 0, p: float = 0.5,
             device: str = "cpu", progress: bool = True) -> Path:
    """Run every stage into ``out`` and return the path of ``report.md``."""
    from fse_plugin.backbone import load_backbone
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock("demo")
    warn_if_busy("demo")
    synthetic = data.synthesise(out, sizes.fs_images, sizes.ids, sizes.per_id, sizes.pairs, seed, progress)
    clock("synthesise")
    parser = data.train_parser(synthetic.facesynthetics, out / "parser", sizes.parser_epochs, seed, device,
                               sizes.parser_seconds, progress)
    warning = data.parser_warning(parser)
    data.warn(warning)
    clock("train parser")
    cache = data.build_mask_cache(synthetic.rec, parser["best"], device, progress)
    clock("precompute masks")
    runs = train_both(synthetic.rec, cache, out, sizes, seed, p, device, progress)
    models = {name: load_backbone(r["weights"], network="tiny") for name, r in runs.items()}
    clock("train recognizers")
    pack = load_pack(synthetic.pack)
    ev = evaluate_models(models, *pack, out, sizes, seed, progress)
    clock("evaluate")
    cam_out = explain(models, *pack, out, sizes.cam_pairs, device, progress)
    clock("fs-cam")
    erased_png = erased_samples(synthetic.rec, cache, out / "erased_samples.png", seed=seed)
    parser_png, parser_on_rec = parser_vs_truth(synthetic.rec, cache, out / "parser_vs_truth.png")
    clock("pictures")
    facts = _facts(sizes, seed, p, device, clock, parser, warning, parser_on_rec, runs, ev)
    (out / "demo.json").write_text(json.dumps(facts, indent=2, default=str))
    report = write_report(out, facts, ev, cam_out, {"erased": erased_png, "parser": parser_png})
    print(f"[demo] report: {report}")
    return report
