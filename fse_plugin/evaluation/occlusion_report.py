"""What the occlusion benchmark reports: per region the score of each model and its drop from the
clean score, as a text table, CSV, JSON and a bar chart."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fse_plugin.common.files import atomic_output, atomic_write
from fse_plugin.evaluation.outputs import atomic_figure
from fse_plugin.evaluation.tables import format_table

__all__ = ["OcclusionReport", "OcclusionRow", "write_occlusion_report"]


@dataclass
class OcclusionRow:
    region: str
    classes: list[str]
    n_probes: int  # probes that contain the region (the others are unchanged)
    score: dict[str, float]  # per model, percent
    drop: dict[str, float]  # clean - occluded, points


@dataclass
class OcclusionReport:
    """Per-region scores of one or two models with the region erased in every probe image."""
    benchmark: str
    metric: str
    models: list[str]
    clean: dict[str, float]
    rows: list[OcclusionRow]
    skipped: list[str]
    fill: Any
    seed: int
    n_probes: int

    def table(self) -> str:
        header = ["region", "probes"] + [f"{m} {h}" for m in self.models for h in ("score", "drop")]
        rows = [["(clean)", self.n_probes] + [v for m in self.models for v in (f"{self.clean[m]:.2f}", "")]]
        rows += [[r.region, r.n_probes] + [v for m in self.models for v in (f"{r.score[m]:.2f}", f"{r.drop[m]:+.2f}")]
                 for r in self.rows]
        text = (f"{self.benchmark}: {self.metric}, region erased in the probe image "
                f"(fill={self.fill}, seed={self.seed})\n{format_table(rows, header)}")
        if self.skipped:
            text += f"\nskipped (absent in every probe): {', '.join(self.skipped)}"
        return text


def _plot(report: OcclusionReport, path: Path) -> Path:
    """Horizontal bars: the score drop per region, one bar per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n, k = len(report.rows), len(report.models)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.32 * max(n, 1) * max(k, 1) ** 0.5))
    y = np.arange(n)
    height = 0.8 / k
    for j, m in enumerate(report.models):
        ax.barh(y + (j - (k - 1) / 2) * height, [r.drop[m] for r in report.rows], height,
                label=f"{m} (clean {report.clean[m]:.2f})")
    ax.set_yticks(y, [r.region for r in report.rows])
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(f"drop in {report.metric} (clean - occluded)")
    ax.set_title(f"{report.benchmark}: region erased in the probe")
    ax.grid(axis="x", linestyle="--", linewidth=0.5)
    ax.legend(loc="lower right", fontsize="small")
    atomic_figure(fig, path, bbox_inches="tight", dpi=120)
    plt.close(fig)
    return path


def write_occlusion_report(report: OcclusionReport, out_dir: str | os.PathLike,
                           stem: str = "occlusion") -> dict[str, Path]:
    """``<stem>.csv``, ``<stem>.json`` and ``<stem>.png`` (chart) under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / f"{stem}.csv", "json": out_dir / f"{stem}.json",
             "png": out_dir / f"{stem}.png"}
    models = report.models
    with atomic_output(paths["csv"]) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["region", "classes", "n_probes"] + [f"{m} {h}" for m in models for h in ("score", "drop")])
        w.writerow(["(clean)", "", report.n_probes] + [v for m in models for v in (report.clean[m], 0.0)])
        for r in report.rows:
            scores = [v for m in models for v in (r.score[m], r.drop[m])]
            w.writerow([r.region, ",".join(r.classes), r.n_probes] + scores)
    atomic_write(paths["json"], json.dumps(asdict(report), indent=2).encode())
    _plot(report, paths["png"])
    return paths
