"""The study's outputs: ``study.json``, ``table.md``, ``accuracy.png``, ``differences.png`` and
``report.md``, whose sentences come from ``verdict`` and so follow the numbers."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fse_plugin.study.pictures import pyplot
from fse_plugin.study.probes import describe
from fse_plugin.study.results import StudyResults
from fse_plugin.study.variants import REFERENCE

__all__ = ["results_table", "differences_table", "multiplicity_note", "plot_study", "write_study_report"]


def _ci(lo: float, hi: float) -> str:
    return "n/a" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:.2f}, {hi:.2f}]"


def results_table(res: StudyResults) -> str:
    """Markdown: one row per metric, per variant the mean over seeds and its 95% interval."""
    head = "| metric | " + " | ".join(f"{v} (mean, 95% CI)" for v in res.variants) + " |"
    rows = [head, "|---|" + "---:|" * len(res.variants)]
    for m in res.metrics:
        cells = [f"{res.intervals[v][m].mean:.2f} {_ci(res.intervals[v][m].lo, res.intervals[v][m].hi)}"
                 for v in res.variants]
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def differences_table(res: StudyResults) -> str:
    """Markdown: per metric and variant the paired difference from the reference, its interval, the
    two tests' p-values and the verdict's outcome."""
    others = [v for v in res.variants if v != REFERENCE]
    head = "| metric | " + " | ".join(f"{v} - {REFERENCE} (95% CI; t-test p, sign-flip p; outcome)" for v in others)
    rows = [head + " |", "|---|" + "---:|" * len(others)]
    for m in res.metrics:
        cells = []
        for v in others:
            d, outcome = res.differences[v][m], res.verdicts[v][m].outcome
            p = "n/a" if d.t_test_p != d.t_test_p else f"{d.t_test_p:.3g}"
            cells.append(f"{d.mean:+.2f} {_ci(d.lo, d.hi)}; {p}, {d.sign_flip_p:.3g}; {outcome}")
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _bars(ax, names: list[str], series: dict[str, list[tuple[float, float, float]]], ylabel: str) -> None:
    import numpy as np
    x = np.arange(len(names))
    width = 0.8 / max(1, len(series))
    for j, (label, points) in enumerate(series.items()):
        mean = np.array([p[0] for p in points])
        err = np.array([[p[0] - p[1] for p in points], [p[2] - p[0] for p in points]])
        err = np.where(np.isfinite(err), err, 0.0)
        ax.bar(x + (j - (len(series) - 1) / 2) * width, mean, width, yerr=err, capsize=3, label=label)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", ls="--", lw=0.5)
    ax.legend(fontsize="small", loc="best")


def plot_study(res: StudyResults, out: Path) -> dict[str, Path]:
    """``accuracy.png`` (mean and 95% interval per variant and probe) and ``differences.png`` (paired
    differences from the reference with their intervals: accuracy, and accuracy lost to each probe)."""
    plt = pyplot()
    acc = [m for m in res.metrics if not m.startswith("drop:")]
    drops = [m for m in res.metrics if m.startswith("drop:")]
    paths = {"accuracy": out / "accuracy.png", "differences": out / "differences.png"}
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(acc), 4))
    _bars(ax, acc, {v: [(res.intervals[v][m].mean, res.intervals[v][m].lo, res.intervals[v][m].hi) for m in acc]
                    for v in res.variants}, "accuracy %")
    ax.set_ylim(max(0, min(res.intervals[v][m].mean for v in res.variants for m in acc) - 15), 100)
    ax.set_title(f"verification accuracy: mean and 95% CI over {len(res.seeds)} seeds")
    fig.tight_layout()
    fig.savefig(paths["accuracy"], dpi=120)
    plt.close(fig)
    others = [v for v in res.variants if v != REFERENCE]
    fig, axes = plt.subplots(1, 2, figsize=(2 + 0.9 * (len(acc) + len(drops)), 4), squeeze=False)
    for ax, metrics, label in ((axes[0, 0], acc, "accuracy"), (axes[0, 1], drops, "accuracy lost (drop)")):
        _bars(ax, metrics, {v: [(res.differences[v][m].mean, res.differences[v][m].lo, res.differences[v][m].hi)
                                for m in metrics] for v in others}, f"{label}, variant - {REFERENCE} (points)")
        ax.axhline(0, color="black", lw=0.8)
    fig.suptitle(f"paired per-seed differences from '{REFERENCE}' with 95% CI (right: below zero = less lost)")
    fig.tight_layout()
    fig.savefig(paths["differences"], dpi=120)
    plt.close(fig)
    return paths


def multiplicity_note(res: StudyResults) -> str:
    """How many of the judged comparisons crossed the 95% line, against how many chance alone gives:
    with many metrics a lone crossing is expected even where nothing differs."""
    judged = [res.verdicts[v][m].outcome for v in res.variants if v != REFERENCE
              for m in res.metrics if m == "clean" or m.startswith("drop:")]
    crossed = sum(o in ("better", "worse") for o in judged)
    return (f"{len(judged)} comparisons are judged below; at 95% about {0.05 * len(judged):.1f} of them would exclude "
            f"zero by chance alone if nothing differed, and {crossed} did. A lone crossing is a lead for more seeds, "
            "not a finding (no correction for multiple comparisons is applied).")


def write_study_report(out: Path, res: StudyResults, facts: dict[str, Any], probes_png: Path) -> Path:
    """study.json (facts + results), table.md, the plots and report.md (linking ``probes_png``, the
    probe samples); returns report.md's path."""
    out = Path(out)
    (out / "study.json").write_text(json.dumps({**facts, **res.to_json()}, indent=2, default=str))
    tables = results_table(res) + "\n\n" + differences_table(res) + "\n"
    (out / "table.md").write_text(tables)
    plots = plot_study(res, out)
    cfg = facts["config"]
    lines = ["# fse_plugin study", ""]
    if facts.get("warning"):
        lines += [f"> **{facts['warning']}**", ""]
    lines += [
        f"{len(res.seeds)} seeds x {len(res.variants)} variants ({', '.join(res.variants)}), trained with the "
        f"{cfg['trainer']} trainer for {cfg['steps']} steps of batch {cfg['batch_size']} each on one synthetic rec "
        f"({cfg['sizes']['ids']} identities x {cfg['sizes']['per_id']} faces), masks from the "
        f"{'parser' if cfg['masks'] == 'parser' else 'synthetic ground truth'}; evaluated on "
        f"{cfg['sizes']['pairs']} held-out pairs (10-fold protocol): clean, with parsing regions erased in the probe "
        f"and with occluders drawn on the probe. Total {facts['timings_s'].get('total', 0):.0f} s.", "",
        "## Verdicts (each variant against the same seeds of 'off')", "",
        "Noise is the spread over seeds: a difference counts only when its 95% t-interval over the paired per-seed "
        "differences excludes zero (equivalently paired t-test p < 0.05); the exact sign-flip test is shown "
        "as a check that does not assume normal differences (with K seeds it cannot go below 2/2^K).", "",
        multiplicity_note(res), ""]
    for v in (v for v in res.variants if v != REFERENCE):
        lines += [f"### {v}", ""]
        lines += [f"- {res.verdicts[v][m].sentence}" for m in res.metrics if m == "clean" or m.startswith("drop:")]
        lines.append("")
    lines += ["## Results (mean over seeds, 95% CI)", "", results_table(res), "",
              f"![accuracy]({plots['accuracy'].name})", "",
              "## Paired differences from 'off'", "", differences_table(res), "",
              f"![differences]({plots['differences'].name})", "",
              "## Probes and metrics", "", f"![probes]({Path(probes_png).name})", ""]
    lines += [f"- `{m}`: {describe(m)}" for m in res.metrics]
    lines += ["", "Per-run scores and training summaries: `study.json` (`runs`)."]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
