"""The study's outputs: ``study.json``, ``table.md``, ``accuracy.png``, ``differences.png`` and
``report.md``, whose sentences come from ``verdict`` and so follow the numbers, and whose first
paragraph says what the study could see (``sensitivity``). Every file is written whole
(``report.md`` last: a study folder with it is complete)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fse_plugin.common.files import atomic_write
from fse_plugin.experiment.pictures import pyplot, save_figure
from fse_plugin.study.probes import describe
from fse_plugin.study.results import StudyResults
from fse_plugin.study.sensitivity import TARGETS
from fse_plugin.study.variants import REFERENCE

__all__ = ["results_table", "differences_table", "sensitivity_table", "multiplicity_note",
           "plot_study", "write_study_report"]

HEADLINE = ("clean", "drop:erased:upper_face")
"""The metrics whose sensitivity the report's first paragraph states."""


def _ci(lo: float, hi: float) -> str:
    return "n/a" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:.2f}, {hi:.2f}]"


def _pts(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.2f}"


def _judged(res: StudyResults) -> list[str]:
    return [m for m in res.metrics if m == "clean" or m.startswith("drop:")]


def results_table(res: StudyResults) -> str:
    """Markdown: one row per metric, per variant the mean over seeds and its 95% interval."""
    head = "| metric | " + " | ".join(f"{v} (mean, 95% CI)" for v in res.variants) + " |"
    rows = [head, "|---|" + "---:|" * len(res.variants)]
    for m in res.metrics:
        cells = [f"{res.intervals[v][m].mean:.2f} "
                 f"{_ci(res.intervals[v][m].lo, res.intervals[v][m].hi)}"
                 for v in res.variants]
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def differences_table(res: StudyResults) -> str:
    """Markdown: per metric and variant the paired difference from the reference, its interval, the
    two tests' p-values and the verdict's outcome."""
    others = [v for v in res.variants if v != REFERENCE]
    head = ("| metric | "
            + " | ".join(f"{v} - {REFERENCE} (95% CI; t-test p, sign-flip p; outcome)"
                         for v in others))
    rows = [head + " |", "|---|" + "---:|" * len(others)]
    for m in res.metrics:
        cells = []
        for v in others:
            d, outcome = res.differences[v][m], res.verdicts[v][m].outcome
            p = "n/a" if d.t_test_p != d.t_test_p else f"{d.t_test_p:.3g}"
            cells.append(f"{d.mean:+.2f} {_ci(d.lo, d.hi)}; {p}, {d.sign_flip_p:.3g}; {outcome}")
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def sensitivity_table(res: StudyResults) -> str:
    """Markdown: per judged metric and variant, the standard deviation of the paired difference over
    seeds (its parts from the test pairs and from training), the effect the seeds detect at 80%
    power, and the seeds it would take for each of ``TARGETS``."""
    if not res.sensitivity:
        return ""
    others = [v for v in res.variants if v != REFERENCE]
    targets = " / ".join(f"{t:g}" for t in TARGETS)
    head = "| metric | " + " | ".join(f"{v} - {REFERENCE}: SD over seeds (pairs, training); "
                                      f"detectable at 80% power; seeds for {targets} points"
                                      for v in others)
    rows = [head + " |", "|---|" + "---:|" * len(others)]
    for m in _judged(res):
        cells = []
        for v in others:
            s = res.sensitivity[v][m]
            needed = " / ".join(str(s.seeds_for(t) or ">1000") for t in TARGETS)
            cells.append(f"{_pts(s.sd_seeds)} ({_pts(s.sd_pairs)}, {_pts(s.sd_training)}); "
                         f"{_pts(s.detectable)}; {needed}")
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _bars(ax, names: list[str], series: dict[str, list[tuple[float, float, float]]],
          ylabel: str) -> None:
    import numpy as np
    x = np.arange(len(names))
    width = 0.8 / max(1, len(series))
    for j, (label, points) in enumerate(series.items()):
        mean = np.array([p[0] for p in points])
        err = np.array([[p[0] - p[1] for p in points], [p[2] - p[0] for p in points]])
        err = np.where(np.isfinite(err), err, 0.0)
        ax.bar(x + (j - (len(series) - 1) / 2) * width, mean, width, yerr=err, capsize=3,
               label=label)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", ls="--", lw=0.5)
    ax.legend(fontsize="small", loc="best")


def plot_study(res: StudyResults, out: Path) -> dict[str, Path]:
    """``accuracy.png`` (mean and 95% interval per variant and probe) and ``differences.png``
    (paired differences from the reference with their intervals: accuracy, and accuracy lost to each
    probe)."""
    plt = pyplot()
    acc = [m for m in res.metrics if not m.startswith("drop:")]
    drops = [m for m in res.metrics if m.startswith("drop:")]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(acc), 4))
    _bars(ax, acc, {v: [(res.intervals[v][m].mean, res.intervals[v][m].lo,
                         res.intervals[v][m].hi) for m in acc]
                    for v in res.variants}, "accuracy %")
    ax.set_ylim(max(0, min(res.intervals[v][m].mean for v in res.variants for m in acc) - 15), 100)
    ax.set_title(f"verification accuracy: mean and 95% CI over {len(res.seeds)} seeds")
    fig.tight_layout()
    paths = {"accuracy": save_figure(fig, out / "accuracy.png", dpi=120)}
    others = [v for v in res.variants if v != REFERENCE]
    fig, axes = plt.subplots(1, 2, figsize=(2 + 0.9 * (len(acc) + len(drops)), 4), squeeze=False)
    for ax, metrics, label in ((axes[0, 0], acc, "accuracy"),
                               (axes[0, 1], drops, "accuracy lost (drop)")):
        _bars(ax, metrics,
              {v: [(res.differences[v][m].mean, res.differences[v][m].lo, res.differences[v][m].hi)
                   for m in metrics] for v in others}, f"{label}, variant - {REFERENCE} (points)")
        ax.axhline(0, color="black", lw=0.8)
    fig.suptitle(f"paired per-seed differences from '{REFERENCE}' with 95% CI (right: below zero = "
                 f"less lost)")
    fig.tight_layout()
    paths["differences"] = save_figure(fig, out / "differences.png", dpi=120)
    return paths


def multiplicity_note(res: StudyResults) -> str:
    """How many of the judged comparisons crossed the 95% line, against how many chance alone gives:
    with many metrics a lone crossing is expected even where nothing differs."""
    judged = [res.verdicts[v][m].outcome for v in res.variants if v != REFERENCE
              for m in _judged(res)]
    crossed = sum(o in ("better", "worse") for o in judged)
    return (f"{len(judged)} comparisons are judged below; at 95% about {0.05 * len(judged):.1f} of "
            f"them would exclude zero by chance alone if nothing differed, and {crossed} did. A "
            "lone crossing is a lead for more seeds, not a finding (no correction for multiple "
            "comparisons is applied).")


def _what_it_can_see(res: StudyResults, pairs: int) -> str:
    """The report's statement of its own sensitivity (first paragraph)."""
    if len(res.seeds) < 2 or not res.sensitivity:
        return (f"With {len(res.seeds)} seed there is no estimate of the noise from training, so "
                "no difference can be judged and no detectable effect stated.")
    parts = []
    for v in (v for v in res.variants if v != REFERENCE):
        shown = [m for m in HEADLINE if m in res.sensitivity[v]]
        effects = " and ".join(f"{_pts(res.sensitivity[v][m].detectable)} points in "
                               f"{describe(m)}" for m in shown)
        spreads = "; ".join(f"{describe(m)} {_pts(s.sd_seeds)} (test pairs {_pts(s.sd_pairs)}, "
                            f"training {_pts(s.sd_training)})" for m in shown
                            for s in [res.sensitivity[v][m]])
        parts.append(f"{v} - {REFERENCE}: **{effects}** (standard deviation of the per-seed "
                     f"difference: {spreads})")
    return (f"What this study can see: with {len(res.seeds)} seeds and {pairs} pairs, a true "
            f"difference is detected 80% of the time (paired t-test at 5%) when it is at least "
            + "; ".join(parts) + ". Smaller true differences would mostly go unseen; the "
            "sensitivity table below says how many seeds other effects need.")


def _summary(res: StudyResults, facts: dict[str, Any]) -> str:
    cfg, sizes = facts["config"], facts["config"]["sizes"]
    rec = (f"the rec {cfg['data']['rec']}" if "rec" in cfg["data"] else
           f"one synthetic rec ({sizes['ids']} identities x {sizes['per_id']} faces)")
    masks = {"parser": "a parser trained here",
             "gt": "the synthetic ground truth"}.get(cfg["masks"], cfg["masks"])
    net = f"width {sizes['width']}" if cfg["trainer"] == "builtin" else cfg["arcface"]["network"]
    return (f"{len(res.seeds)} seeds x {len(res.variants)} variants ({', '.join(res.variants)}), "
            f"trained with the {cfg['trainer']} trainer ({net}) for {sizes['steps']} steps of "
            f"batch {sizes['batch_size']} each on {rec}, "
            f"masks from {masks}; evaluated on {cfg['pairs']} held-out pairs (10-fold protocol): "
            f"clean, with parsing regions erased in the probe and with occluders drawn on the "
            f"probe. Total {facts['timings_s'].get('total', 0):.0f} s. "
            + _what_it_can_see(res, cfg["pairs"]))


def write_study_report(out: Path, res: StudyResults, facts: dict[str, Any],
                       probes_png: Path) -> Path:
    """study.json (facts + results), table.md, the plots and report.md (linking ``probes_png``, the
    probe samples); returns report.md's path."""
    out = Path(out)
    atomic_write(out / "study.json",
                 json.dumps({**facts, **res.to_json()}, indent=2, default=str).encode())
    sensitivity = sensitivity_table(res)
    tables = [results_table(res), differences_table(res)] + ([sensitivity] if sensitivity else [])
    atomic_write(out / "table.md", ("\n\n".join(tables) + "\n").encode())
    plots = plot_study(res, out)
    lines = ["# fse_plugin study", ""]
    if facts.get("warning"):
        lines += [f"> **{facts['warning']}**", ""]
    lines += [_summary(res, facts), "",
              "## Verdicts (each variant against the same seeds of 'off')", "",
              "Noise is the spread over seeds: a difference counts only when its 95% t-interval "
              "over the paired per-seed differences excludes zero (equivalently paired t-test p < "
              "0.05); the exact sign-flip test is shown as a check that does not assume normal "
              "differences (with K seeds it cannot go below 2/2^K).", "",
              multiplicity_note(res), ""]
    for v in (v for v in res.variants if v != REFERENCE):
        lines += [f"### {v}", ""]
        lines += [f"- {res.verdicts[v][m].sentence}" for m in _judged(res)]
        lines.append("")
    lines += ["## Results (mean over seeds, 95% CI)", "", results_table(res), "",
              f"![accuracy]({plots['accuracy'].name})", "",
              "## Paired differences from 'off'", "", differences_table(res), "",
              f"![differences]({plots['differences'].name})", ""]
    if sensitivity:
        lines += ["## What the study can see", "",
                  "Standard deviation of each paired difference over seeds, split into the part "
                  "from the test pairs (the pairs resampled with the models fixed) and the part "
                  "from training (the rest); the smallest true difference the seeds run detect 80% "
                  "of the time (paired t-test at 5%); and the seeds that detecting a difference of "
                  "1 or 2 points would take with this pack.", "",
                  sensitivity, ""]
    lines += ["## Probes and metrics", "", f"![probes]({Path(probes_png).name})", ""]
    lines += [f"- `{m}`: {describe(m)}" for m in res.metrics]
    lines += ["", "Per-run scores and training summaries: `study.json` (`runs`)."]
    report = out / "report.md"
    atomic_write(report, ("\n".join(lines) + "\n").encode())
    return report
