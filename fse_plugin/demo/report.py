"""The demo's ``report.md``: what the run shows, worded by the numbers (``experiment.verdict``).

The clean-accuracy verdict compares the two models fold by fold: both are scored on the same 10
folds of the pack, so the per-fold differences are paired and their 95% t-interval measures the
noise from the choice of test pairs. It cannot measure the noise from training (another seed gives
other models); ``fse study`` does, over seeds.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fse_plugin.common.files import atomic_write
from fse_plugin.experiment.statistics import paired_difference
from fse_plugin.experiment.verdict import verdict

__all__ = ["clean_verdict", "write_report"]


def clean_verdict(base: Any, fse: Any) -> dict[str, Any]:
    """Verdict on FSErasing's clean accuracy against the baseline's (VerificationResults), paired by
    fold."""
    d = paired_difference(np.asarray(fse.fold_accuracy) * 100, np.asarray(base.fold_accuracy) * 100)
    tests = "" if d.n < 2 else f"paired t-test over the {d.n} folds p={d.t_test_p:.3g}"
    v = verdict("FSErasing", "the baseline", "clean verification accuracy", d, tests=tests)
    return {"outcome": v.outcome, "sentence": v.sentence, "difference": d.to_json()}


def _score(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.3f}"


def _rel(out: Path, path: Any) -> str:
    return os.path.relpath(str(path), str(out))


def _header(facts: dict[str, Any]) -> list[str]:
    lines = ["# fse_plugin demo report", ""]
    if facts["parser_quality"]["warning"]:
        lines += [f"> **{facts['parser_quality']['warning']}**", ""]
    if not facts["repeatable"]:
        lines += ["> **Not repeatable:** a safety stop (--parser-seconds / --recognizer-seconds) "
                  "ended or timed a stage, so another run with the same seed gives other "
                  "numbers.", ""]
    t = facts["timings_s"]
    lines += [f"Synthetic faces, seed {facts['seed']}, {facts['torch_threads']} torch thread(s); "
              f"sizes {facts['sizes']}; total {t['total']} s (stages: "
              f"{', '.join(f'{k} {v} s' for k, v in t.items() if k != 'total')}).", ""]
    return lines


def _verification(out: Path, facts: dict[str, Any], ev: Any) -> list[str]:
    occ = facts["occlusion"]["mean_drop_single_regions"]
    n_single = sum(len(r.classes) == 1 for r in ev.occlusion.rows)
    return [
        "## Verification (synthetic held-out identities, 10-fold protocol)", "",
        "| model | accuracy % | std | VAL@FAR=1e-3 | XNorm |", "|---|---|---|---|---|",
        *[f"| {k} | {v.accuracy * 100:.2f} | {v.accuracy_std * 100:.2f} | {v.val:.4f} | "
          f"{v.xnorm:.2f} |"
          for k, v in ev.results.items()], "",
        facts["clean_verdict"]["sentence"], "",
        "The interval comes from the 10 folds (which test pairs), not from training: another seed "
        "trains other models, and minutes of CPU training on procedural faces move accuracy by a "
        "point or two between seeds. `fse study` measures that, over seeds. Mean accuracy drop "
        f"over the {n_single} single occluded regions (one run, no interval): "
        + ", ".join(f"{m} {d:+.2f} points" for m, d in occ.items()) + ".", "",
        f"![ROC]({_rel(out, ev.roc)})", ""]


def write_report(out: Path, facts: dict[str, Any], ev: Any, cam_out: Any,
                 pictures: dict[str, Path]) -> Path:
    """report.md: the verdict, tables and every picture of the run, including when FSErasing did not
    help."""
    rec = facts["parser_on_rec"]
    n_rec = facts["sizes"]["ids"] * facts["sizes"]["per_id"]
    lines = _header(facts) + _verification(out, facts, ev) + [
        "## FSErasing samples (faces, cached parser masks, two erasing draws)", "",
        f"![erased]({_rel(out, pictures['erased'])})", "",
        "## Parser (trained for the demo) against synthetic ground truth", "",
        f"Validation mean F1 {_score(facts['parser_quality']['val_mean_f1'])} (quality floor "
        f"{facts['parser_quality']['floor']}). On all {n_rec} training images of the rec: mean F1 "
        f"{rec['mean_f1']:.3f}, mean IoU {rec['mean_iou']:.3f}, pixel accuracy "
        f"{rec['pixel_accuracy']:.3f}.", "",
        f"![parser]({_rel(out, pictures['parser'])})", "",
        "## Semantic-occlusion benchmark (region erased in the probe image)", "",
        "```", ev.occlusion.table(), "```", "",
        f"![occlusion]({_rel(out, ev.occlusion_files['png'])})", "",
        "## FS-CAM of both models (genuine pairs, target: cosine to the other image)", "",
        f"Full FS-CAM report: [{_rel(out, cam_out.report)}]({_rel(out, cam_out.report)})", "",
    ]
    for key, path in cam_out.files.items():
        if str(path).endswith(".png"):
            lines += [f"![{key}]({_rel(out, path)})", ""]
    report = out / "report.md"
    atomic_write(report, "\n".join(lines).encode())
    return report
