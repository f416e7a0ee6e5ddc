"""The files ``explain`` writes: overlay and importance pictures, per-image and per-region CSVs, one
JSON and a report page (md or html), the page last."""
from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fse_plugin.cam.plots import plot_overlay_grid, plot_region_bars
from fse_plugin.cam.results import MethodResult, MethodStats
from fse_plugin.cam.settings import ExplainSettings
from fse_plugin.cam.stats import RegionStats
from fse_plugin.common.files import atomic_output, atomic_write
from fse_plugin.labels import CLASSES, NUM_CLASSES

__all__ = ["RESULT_FILES", "clear_results", "write_outputs", "write_scores_csv",
           "write_stats_csv", "write_json", "write_report", "render"]

RESULT_FILES: tuple[str, ...] = ("region_scores.json", "region_scores.csv", "region_stats.csv",
                                 "report.md", "report.html")
"""The tables and the page a reader takes as a run's result (each written whole, through a temporary
file)."""
Results = Mapping[str, Mapping[str, MethodResult]]
"""``{model: {method: result}}`` as ``Explanation.results``."""
Comparison = Mapping[str, MethodStats]
"""``{method: stats of the difference}`` as ``Explanation.comparison``."""
Block = tuple
"""A piece of the report page: ("h1"|"h2"|"p", text), ("img", file, alt) or ("table", header, rows)."""


def _cell(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.6g}"


def write_scores_csv(path: Path, results: Results, labels: Sequence[str]) -> Path:
    """One row per model, method, kind and image: the 25 region values (empty where absent)."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "method", "kind", "image", "label", *CLASSES])
        for name, per in results.items():
            for method, result in per.items():
                for kind, v in result.values.kinds().items():
                    for i, row in enumerate(v):
                        w.writerow([name, method, kind, i, labels[i], *[_cell(a) for a in row]])
    return path


def write_stats_csv(path: Path, results: Results, comparison: Comparison) -> Path:
    """One row per model (and ``second-first``), method, kind and region: n, mean and 95% bounds."""
    names = list(results)
    rows = [(name, method, kind, st) for name, per in results.items()
            for method, result in per.items() for kind, st in result.stats.kinds().items()]
    if comparison:
        rows += [(f"{names[1]}-{names[0]}", method, kind, st) for method, diff in comparison.items()
                 for kind, st in diff.kinds().items()]
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "method", "kind", "region", "class_id", "n", "mean", "lo95", "hi95"])
        for name, method, kind, st in rows:
            for k in range(NUM_CLASSES):
                w.writerow([name, method, kind, CLASSES[k], k, int(st.n[k]), _cell(st.mean[k]),
                            _cell(st.lo[k]), _cell(st.hi[k])])
    return path


def _nan_to_none(a: np.ndarray) -> list:
    return [None if not np.isfinite(v) else round(float(v), 6)
            for v in np.asarray(a, np.float64).ravel()]


def _stats_json(stats: MethodStats) -> dict[str, dict[str, list]]:
    return {kind: {field: _nan_to_none(getattr(st, field)) for field in ("mean", "lo", "hi", "n")}
            for kind, st in stats.kinds().items()}


def write_json(path: Path, meta: Mapping[str, Any], results: Results, comparison: Comparison,
               labels: Sequence[str]) -> Path:
    """Everything in one file: meta, stats, comparison, image labels and the per-image tables
    (NaN -> null; ``{model: {method: {kind: ...}}}``, kind 'importance' and the method's
    measure)."""
    doc = {"meta": dict(meta),
           "stats": {name: {method: _stats_json(r.stats) for method, r in per.items()}
                     for name, per in results.items()},
           "comparison": {method: _stats_json(diff) for method, diff in comparison.items()},
           "images": list(labels),
           "tables": {name: {method: {kind: [_nan_to_none(row) for row in v]
                                      for kind, v in r.values.kinds().items()}
                             for method, r in per.items()} for name, per in results.items()}}
    atomic_write(path, json.dumps(doc, indent=1).encode())
    return path


def _fmt_ci(st: RegionStats, k: int) -> str:
    if np.isnan(st.mean[k]):
        return "-"
    if np.isnan(st.lo[k]):
        return f"{st.mean[k]:.3f}"
    return f"{st.mean[k]:.3f} [{st.lo[k]:.3f}, {st.hi[k]:.3f}]"


def _model_blocks(name: str, results: Mapping[str, MethodResult],
                  files: Mapping[str, Path]) -> list[Block]:
    """One model: its timings, pictures and the region table, most important region (first method)
    first."""
    methods = list(results)
    first = results[methods[0]].stats.importance
    order = np.argsort(-np.nan_to_num(first.mean, nan=-np.inf), kind="stable")
    rows = [[CLASSES[k], str(int(first.n[k]))] + [_fmt_ci(r.stats.importance, k) for r in results.values()]
            for k in order]
    return [("h2", f"Model {name}"),
            ("p",
             "ms per image: " + ", ".join(f"{m} {r.ms_per_image:.1f}" for m, r in results.items())),
            ("img", files[f"overlay_{name}"].name, f"{name} overlays"),
            ("img", files[f"importance_{name}"].name, f"{name} importance"),
            ("table", ["region", "n", *methods], rows)]


def _comparison_blocks(comparison: Comparison, files: Mapping[str, Path],
                       names: Sequence[str]) -> list[Block]:
    rows = [[CLASSES[k]] + [_fmt_ci(diff.importance, k) for diff in comparison.values()]
            for k in range(NUM_CLASSES)]
    return [("h2", f"{names[1]} vs {names[0]}"), ("img", files["compare"].name, "comparison"),
            ("p", f"Paired difference of importance, {names[1]} minus {names[0]} (same images and "
                  "masks)."), ("table", ["region", *comparison], rows)]


def write_report(out: Path, results: Results, comparison: Comparison, files: Mapping[str, Path],
                 settings: ExplainSettings, n_images: int) -> Path:
    """One page (Markdown or HTML, ``settings.report``) with the target, the settings, region tables
    (top regions first) and pictures."""
    meta = {**settings.meta, "images": n_images}
    blocks: list[Block] = [("h1", "FS-CAM region importance")]
    if meta.get("target_description"):
        blocks.append(("p", f"FS-CAM target: {meta['target_description']}."))
    blocks.append(("p",
                   "; ".join(f"{k}: {v}" for k, v in meta.items() if k != "target_description")))
    interval = "image bootstrap, percentile" if settings.ci == "bootstrap" else "Student t"
    blocks.append(("p", "Importance per region: normalised region score (fscam), normalised score drop (ablation), "
                        "mean of the map over the region (pixel methods). Mean over images where the region is "
                        f"present, 95% interval ({interval})."))
    for name, per in results.items():
        blocks += _model_blocks(name, per, files)
    if comparison:
        blocks += _comparison_blocks(comparison, files, list(results))
    blocks.append(("p", "Files: " + ", ".join(p.name for p in files.values())))
    path = out / f"report.{settings.report}"
    atomic_write(path, render(blocks, settings.report).encode())
    return path


def _write_pictures(out: Path, images: np.ndarray, masks: np.ndarray, labels: Sequence[str],
                    results: Results, comparison: Comparison, ci: str) -> dict[str, Path]:
    """Overlay grid and importance chart per model, and the comparison chart of two models."""
    files: dict[str, Path] = {}
    names = list(results)
    for name, per in results.items():
        files[f"overlay_{name}"] = plot_overlay_grid(images, masks,
                                                     {m: r.maps for m, r in per.items()},
                                                     out / f"overlay_{name}.png", labels,
                                                     title=name)
        files[f"importance_{name}"] = plot_region_bars(
            {m: {name: r.stats.importance} for m, r in per.items()},
            out / f"importance_{name}.png",
            title=f"{name}: per-region importance, mean and 95% interval ({ci})")
    if comparison:
        files["compare"] = plot_region_bars(
            {m: {n: results[n][m].stats.importance for n in names} for m in comparison},
            out / "compare.png",
            title=f"{names[0]} vs {names[1]}: per-region importance, mean and 95% interval ({ci})")
    return files


def clear_results(out: Path) -> None:
    """Remove an earlier run's tables and page from ``out``, so that a run interrupted there leaves
    no result that reads as complete (its own are written last, the page last of all)."""
    for name in RESULT_FILES:
        (out / name).unlink(missing_ok=True)


def write_outputs(out: Path, images: np.ndarray, masks: np.ndarray, labels: Sequence[str],
                  results: Results, comparison: Comparison,
                  settings: ExplainSettings) -> dict[str, Path]:
    """Every file of a run; ``images`` and ``masks`` are the first ``settings.grid`` (the
    overlays'), ``labels`` name all images. Returns ``{name: path}``, the report page last."""
    grid = len(images)
    files = _write_pictures(out, images, masks, labels[:grid], results, comparison, settings.ci)
    files["region_scores_csv"] = write_scores_csv(out / "region_scores.csv", results, labels)
    files["region_stats_csv"] = write_stats_csv(out / "region_stats.csv", results, comparison)
    methods = list(next(iter(results.values())))
    meta = {**settings.meta, "n_images": len(labels), "methods": methods, "models": list(results),
            "ci": settings.ci, "ms_per_image": {name: {m: r.ms_per_image for m, r in per.items()}
                                                for name, per in results.items()},
            "classes": list(CLASSES)}
    files["region_scores_json"] = write_json(out / "region_scores.json", meta, results, comparison,
                                             labels)
    files["report"] = write_report(out, results, comparison, files, settings, len(labels))
    return files


def _markdown(b: Block) -> list[str]:
    kind = b[0]
    if kind == "table":
        return ["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])] + ["| " + " | ".join(r) + " |" for r in b[2]]
    if kind == "img":
        return [f"![{b[2]}]({b[1]})"]
    return [{"h1": "# ", "h2": "## ", "p": ""}[kind] + b[1]]


def _html(b: Block) -> list[str]:
    kind, e = b[0], html.escape
    if kind == "img":
        return [f"<p><img src='{e(b[1])}' alt='{e(b[2])}' style='max-width:100%'></p>"]
    if kind == "table":
        return (["<table border='1' cellspacing='0' cellpadding='3'><tr>" + "".join(f"<th>{e(h)}</th>" for h in b[1])
                 + "</tr>"] + ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2]] + ["</table>"])
    return [f"<{kind}>{e(b[1])}</{kind}>"]


def render(blocks: Sequence[Block], fmt: str) -> str:
    """The page as Markdown (blocks separated by blank lines) or a standalone HTML document."""
    if fmt == "md":
        return "\n".join(line for b in blocks for line in [*_markdown(b), ""]) + "\n"
    body = [line for b in blocks for line in _html(b)]
    return "\n".join(["<!doctype html><html><head><meta charset='utf-8'><title>FS-CAM report</title></head><body>",
                      *body, "</body></html>"]) + "\n"
