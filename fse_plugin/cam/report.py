"""The files ``explain`` writes: per-image and per-region CSVs, one JSON, and a report page (md or html)."""
from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fse_plugin.labels import CLASSES, NUM_CLASSES

__all__ = ["write_scores_csv", "write_stats_csv", "write_json", "write_report", "render"]

Tables = Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]
"""``{model: {method: {kind: [N,25]}}}``"""
StatsTree = Mapping[str, Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]]
"""``{model: {method: {kind: {mean, lo, hi, n}}}}``"""
Block = tuple
"""A piece of the report page: ("h1"|"h2"|"p", text), ("img", file, alt) or ("table", header, rows)."""


def _cell(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.6g}"


def write_scores_csv(path: Path, tables: Tables, labels: Sequence[str]) -> Path:
    """One row per model, method, kind and image: the 25 region values (empty where absent)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "method", "kind", "image", "label", *CLASSES])
        for name, per in tables.items():
            for method, kinds in per.items():
                for kind, v in kinds.items():
                    for i, row in enumerate(v):
                        w.writerow([name, method, kind, i, labels[i], *[_cell(a) for a in row]])
    return path


def write_stats_csv(path: Path, stats: StatsTree, comparison: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
                    names: Sequence[str]) -> Path:
    """One row per model (and ``second-first``), method, kind and region: n, mean and 95% bounds."""
    rows = [(name, method, kind, st) for name, per in stats.items() for method, kinds in per.items()
            for kind, st in kinds.items()]
    if comparison:
        rows += [(f"{names[1]}-{names[0]}", method, kind, st) for method, kinds in comparison.items()
                 for kind, st in kinds.items()]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "method", "kind", "region", "class_id", "n", "mean", "lo95", "hi95"])
        for name, method, kind, st in rows:
            for k in range(NUM_CLASSES):
                w.writerow([name, method, kind, CLASSES[k], k, int(st["n"][k])]
                           + [_cell(st[c][k]) for c in ("mean", "lo", "hi")])
    return path


def _nan_to_none(a: np.ndarray) -> list:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in np.asarray(a, np.float64).ravel()]


def _jsonable(tree: Any) -> Any:
    """Nested dicts of arrays -> lists (NaN -> null); a 2-D table becomes a list of rows."""
    if isinstance(tree, Mapping):
        return {k: _jsonable(v) for k, v in tree.items()}
    a = np.asarray(tree)
    return [_nan_to_none(r) for r in a] if a.ndim == 2 else _nan_to_none(a)


def write_json(path: Path, meta: Mapping[str, Any], stats: StatsTree, comparison: Mapping[str, Any],
               labels: Sequence[str], tables: Tables) -> Path:
    """Everything in one file: meta, stats, comparison, image labels and the per-image tables."""
    doc = {"meta": dict(meta), "stats": _jsonable(stats), "comparison": _jsonable(comparison), "images": list(labels),
           "tables": _jsonable(tables)}
    path.write_text(json.dumps(doc, indent=1))
    return path


def _fmt_ci(st: Mapping[str, np.ndarray], k: int) -> str:
    if np.isnan(st["mean"][k]):
        return "-"
    if np.isnan(st["lo"][k]):
        return f"{st['mean'][k]:.3f}"
    return f"{st['mean'][k]:.3f} [{st['lo'][k]:.3f}, {st['hi'][k]:.3f}]"


def _model_blocks(name: str, stats: StatsTree, files: Mapping[str, Path], methods: Sequence[str],
                  timing: Mapping[str, float]) -> list[Block]:
    """One model: its timings, pictures and the region table, most important region (first method) first."""
    first = stats[name][methods[0]]["importance"]
    order = np.argsort(-np.nan_to_num(first["mean"], nan=-np.inf), kind="stable")
    rows = [[CLASSES[k], str(int(first["n"][k]))] + [_fmt_ci(stats[name][mt]["importance"], k) for mt in methods]
            for k in order]
    return [("h2", f"Model {name}"),
            ("p", "ms per image: " + ", ".join(f"{m} {t:.1f}" for m, t in timing.items())),
            ("img", files[f"overlay_{name}"].name, f"{name} overlays"),
            ("img", files[f"importance_{name}"].name, f"{name} importance"),
            ("table", ["region", "n", *methods], rows)]


def _comparison_blocks(comparison: Mapping[str, Any], files: Mapping[str, Path], names: Sequence[str],
                       methods: Sequence[str]) -> list[Block]:
    rows = [[CLASSES[k]] + [_fmt_ci(comparison[mt]["importance"], k) for mt in methods] for k in range(NUM_CLASSES)]
    return [("h2", f"{names[1]} vs {names[0]}"), ("img", files["compare"].name, "comparison"),
            ("p", f"Paired difference of importance, {names[1]} minus {names[0]} (same images and masks)."),
            ("table", ["region", *methods], rows)]


def write_report(out: Path, stats: StatsTree, comparison: Mapping[str, Any], files: Mapping[str, Path],
                 names: Sequence[str], methods: Sequence[str], ci: str, meta: Mapping[str, Any],
                 timing: Mapping[str, Mapping[str, float]], fmt: str = "md") -> Path:
    """One page (Markdown or HTML) with the target, the settings, region tables (top regions first) and pictures."""
    if fmt not in ("md", "html"):
        raise ValueError(f"report format must be 'md' or 'html', got {fmt!r}")
    settings = {k: v for k, v in meta.items() if k != "target_description"}
    blocks: list[Block] = [("h1", "FS-CAM region importance")]
    if meta.get("target_description"):
        blocks.append(("p", f"FS-CAM target: {meta['target_description']}."))
    blocks.append(("p", "; ".join(f"{k}: {v}" for k, v in settings.items())))
    interval = "image bootstrap, percentile" if ci == "bootstrap" else "Student t"
    blocks.append(("p", "Importance per region: normalised region score (fscam), normalised score drop (ablation), "
                        "mean of the map over the region (pixel methods). Mean over images where the region is "
                        f"present, 95% interval ({interval})."))
    for name in names:
        blocks += _model_blocks(name, stats, files, methods, timing[name])
    if comparison:
        blocks += _comparison_blocks(comparison, files, names, methods)
    blocks.append(("p", "Files: " + ", ".join(p.name for p in files.values())))
    path = out / f"report.{fmt}"
    path.write_text(render(blocks, fmt))
    return path


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
