"""``fse study``: K seeds x variants on one synthetic set, one parser and one mask cache.

Stages: synthesise -> parser (counted epochs, quality floor) -> mask cache (parser, or ground truth
with ``masks='gt'``) -> occluded probes -> per seed, per variant: train, score -> statistics ->
report. Runs go seed by seed, so an interrupted study has complete pairs; a run whose
``scores.json`` matches the study's settings is reused when the study is started again.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from fse_plugin.common import FSEError
from fse_plugin.study import data
from fse_plugin.study.clock import StageClock, warn_if_busy
from fse_plugin.study.pictures import probe_samples
from fse_plugin.study.probes import ProbeSet, add_drops, build_probes, score_model
from fse_plugin.study.results import RunResult, summarise
from fse_plugin.study.report import write_study_report
from fse_plugin.study.variants import DEFAULT_VARIANTS, Variant, parse_variants

__all__ = ["StudySizes", "DEFAULT", "QUICK", "run_study"]


@dataclass(frozen=True)
class StudySizes:
    """Data sizes and counted budgets of a study (seeds 0..seeds-1, ``steps`` per run)."""
    fs_images: int = field(default=1200, metadata={"help": "FaceSynthetics-layout frames for the parser"})
    ids: int = field(default=200, metadata={"help": "training identities of the rec"})
    per_id: int = field(default=12, metadata={"help": "faces per training identity"})
    pairs: int = field(default=300, metadata={"help": "held-out verification pairs"})
    parser_epochs: int = field(default=8, metadata={"help": "parser epochs (batch 8)"})
    seeds: int = field(default=5, metadata={"help": "seeds per variant (0..N-1), the K of the intervals"})
    steps: int = field(default=100, metadata={"help": "recognizer steps per run (--trainer arcface: rounded up "
                                                      "to whole epochs)"})
    batch_size: int = field(default=64, metadata={"help": "recognizer batch (per GPU with --trainer arcface)"})


DEFAULT = StudySizes()
QUICK = StudySizes(fs_images=100, ids=24, per_id=6, pairs=32, parser_epochs=2, seeds=3, steps=8, batch_size=32)


def _prepare_masks(out: Path, synthetic: data.SyntheticSet, sizes: StudySizes, masks: str, device: str,
                   progress: bool) -> tuple[Path, dict[str, Any], str | None]:
    """The mask cache of the rec, the parser's summary (empty with ground truth) and its warning."""
    if masks == "gt":
        return data.build_mask_cache(synthetic.rec, None, progress=progress), {}, None
    summary = data.train_parser(synthetic.facesynthetics, out / "parser", sizes.parser_epochs, seed=0, device=device,
                                progress=progress)
    warning = data.parser_warning(summary)
    data.warn(warning)
    return data.build_mask_cache(synthetic.rec, summary["best"], device, progress), summary, warning


def _run_one(trainer: Any, variant: Variant, seed: int, probes: ProbeSet, run_dir: Path, settings: dict[str, Any],
             device: str) -> RunResult:
    """Train and score one (variant, seed), or reuse a finished run with the same settings."""
    saved = run_dir / "scores.json"
    if saved.is_file():
        done = json.loads(saved.read_text())
        if done.get("settings") == settings:
            return RunResult(variant.name, seed, done["scores"], done["train"])
    train = trainer(variant, seed, run_dir)
    scores = add_drops(score_model(trainer.load(train["weights"]), probes, device))
    saved.write_text(json.dumps({"settings": settings, "scores": scores, "train": train}, indent=2, default=str))
    return RunResult(variant.name, seed, scores, train)


def run_study(out: str | Path = "fse_study", sizes: StudySizes = DEFAULT, variants: Sequence[str] = DEFAULT_VARIANTS,
              masks: str = "parser", device: str = "cpu", trainer: str = "builtin", arcface: dict | None = None,
              regions: bool = False, progress: bool = True) -> Path:
    """Run the study into ``out`` and return the path of its ``report.md``.

    ``masks``: 'parser' (trained here, as a user would) or 'gt' (the synthetic ground truth, to
    isolate the augmentation). ``trainer``: 'builtin' (``recognizer.train_recognizer``) or 'arcface'
    (upstream train_v2.py; ``arcface`` holds ArcfaceTrainer's arguments: arcface_dir, network,
    nproc_per_node, batch_size, launch). ``regions`` adds the mean over the 25 single regions.
    """
    chosen = _check(sizes, variants, masks, trainer, arcface)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock("study")
    warn_if_busy("study")
    synthetic = data.synthesise(out, sizes.fs_images, sizes.ids, sizes.per_id, sizes.pairs, 0, progress)
    clock("synthesise")
    cache, parser, warning = _prepare_masks(out, synthetic, sizes, masks, device, progress)
    clock("parser and mask cache")
    probes = build_probes(synthetic.pack, single_regions=regions)
    probes_png = probe_samples(probes, out / "probes.png")
    clock("probes")
    train = _trainer(trainer, out, synthetic, cache, sizes, device, progress, arcface or {})
    settings = {"sizes": asdict(sizes), "masks": masks, "trainer": repr(train), "regions": regions,
                "threads": torch.get_num_threads()}
    runs = [_run_one(train, v, seed, probes, out / "runs" / f"{v.slug}_s{seed}",
                     {**settings, "variant": repr(v), "seed": seed}, device)
            for seed in range(sizes.seeds) for v in chosen]
    clock("train and score")
    results = summarise(runs, [v.name for v in chosen])
    facts = {"config": {**settings, "steps": sizes.steps, "batch_size": sizes.batch_size,
                        "variants": {v.name: {"fse": v.fse, "random_erasing": v.random_erasing} for v in chosen},
                        "trainer": trainer, "trainer_detail": repr(train), "device": device,
                        "repeatable": not any(r.train.get("stopped_by_time") for r in runs)},
             "parser": {k: parser[k] for k in ("epochs", "steps", "val_mf1", "val_miou") if k in parser},
             "warning": warning, "timings_s": clock.total(), "runs": [asdict(r) for r in runs]}
    report = write_study_report(out, results, facts, probes_png)
    print(f"[study] report: {report}")
    return report


def _check(sizes: StudySizes, variants: Sequence[str], masks: str, trainer: str, arcface: dict | None) -> list[Variant]:
    """Refuse bad settings before minutes of data preparation; returns the parsed variants."""
    if masks not in ("parser", "gt"):
        raise FSEError(f"--masks must be 'parser' or 'gt', got {masks!r}")
    if trainer not in ("builtin", "arcface"):
        raise FSEError(f"--trainer must be 'builtin' or 'arcface', got {trainer!r}")
    if sizes.seeds < 1 or sizes.steps < 1:
        raise FSEError(f"a study needs at least one seed and one step (got seeds={sizes.seeds}, steps={sizes.steps})")
    chosen = parse_variants(list(variants))
    if trainer == "arcface":
        from fse_plugin.study.arcface import ArcfaceTrainer
        ArcfaceTrainer.check(chosen, (arcface or {}).get("launch"))
    return chosen


def _trainer(kind: str, out: Path, synthetic: data.SyntheticSet, cache: Path, sizes: StudySizes, device: str,
             progress: bool, arcface: dict) -> Any:
    if kind == "builtin":
        from fse_plugin.study.recognizer import BuiltinTrainer
        return BuiltinTrainer(synthetic.rec, cache, sizes.steps, sizes.batch_size, device, progress=progress)
    from fse_plugin.study.arcface import ArcfaceTrainer
    return ArcfaceTrainer(study_dir=out, rec_dir=synthetic.rec, masks=cache, steps=sizes.steps,
                          **{"batch_size": sizes.batch_size, **arcface})
