"""What the study's budget buys: its levers measured as `fse study` runs, and the trade-off table.

    python benchmarks/study.py data --out DIR            # the shared synthetic rec, mask cache and
    packs python benchmarks/study.py run --out DIR [--only NAME,...] [--jobs 2]
    python benchmarks/study.py table --out DIR           # the tables of benchmarks/README.md,
    curve.png

Every lever is one `fse study` (off and fse, ground-truth masks, --threads 1) on the same synthetic
data, so the runs differ only in the lever: training steps, network width, seeds, and the pairs
scored (a 6,000-pair pack; smaller packs are its first N pairs, re-scored from the runs' saved
distances, so the pairs lever costs no training). `table` reads each study's runs and prints, per
configuration and pack size, the standard deviation of the paired difference fse - off over seeds
with its parts from the test pairs (bootstrap with the models fixed) and from training, the effect
the seeds detect at 80% power, the seeds 1 point (clean) and 2 points (upper-face drop) would take,
and the CPU seconds per run (training and scoring, from the runs' own clocks). Budgets are counted
in steps, so the figures do not depend on the machine's load; the seconds do.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

IDS, PER_ID, PAIRS, SMALL_PAIRS = 200, 12, 6000, 2000
GRID = {  # name -> (fse study flags, pack)
    "s100": (["--steps", "100", "--seeds", "8"], "big"),
    "s300": (["--steps", "300", "--seeds", "6"], "big"),
    "w16": (["--steps", "100", "--width", "16", "--seeds", "4"], "small"),
    "s50": (["--steps", "50", "--seeds", "2", "--probes", "none"], "small"),
    "s200": (["--steps", "200", "--seeds", "2", "--probes", "none"], "small"),
    "s600": (["--steps", "600", "--seeds", "2", "--probes", "none"], "small"),
}
COMMON = ["--variants", "off", "fse", "--probes", "upper_face", "--threads", "1", "--quiet"]
HEADLINE = {"clean": 1.0, "drop:erased:upper_face": 2.0}
# Quiet 2-core costs (2 torch threads) for the plan: seconds per training step of batch 64 at width
# 8 and per forward pass when scoring (batch 16), the fixed part of a default study (synthesis,
# parser, mask cache), and what width 16 multiplies them by; benchmarks/README.md says where each
# comes from.
STEP_S, FORWARD_S, FIXED_S, WIDE = 0.48, 0.0010, 320.0, {"train": 2.8, "forward": 3.7}


def _fse(*args: str) -> list[str]:
    return [sys.executable, "-m", "fse_plugin", *args]


def data(out: Path) -> None:
    """The rec (IDS x PER_ID faces) with its ground-truth mask cache, and two packs of held-out
    pairs."""
    rec = out / "data" / "rec"
    subprocess.run(_fse("synth", "--out", str(out / "data"), "--ids", str(IDS), "--per-id",
                        str(PER_ID), "--pairs",
                        str(PAIRS), "--facesynthetics", "0", "--ijb", "0"), check=True)
    subprocess.run(_fse("cache", "build", "--rec", str(rec), "--from-labels",
                        str(rec / "gt_masks.npz"), "--overwrite"), check=True)
    from fse_plugin import synth
    synth.write_pairs_bin(out / "data" / "small.bin", SMALL_PAIRS, seed=7)


def _command(out: Path, name: str) -> list[str]:
    flags, pack = GRID[name]
    pack_path = out / "data" / ("rec/synth_val.bin" if pack == "big" else "small.bin")
    common = [f for f in COMMON if not ("--probes" in flags and f in ("--probes", "upper_face"))]
    return _fse("study", "--rec", str(out / "data" / "rec"), "--pack", str(pack_path), "--out",
                str(out / name), *common, *flags)


def run(out: Path, names: list[str], jobs: int) -> None:
    """Each configuration's study, ``jobs`` at a time (niced: they take what the machine has
    spare)."""
    def one(name: str) -> None:
        cmd = ["nice", "-n", "10", *_command(out, name)]
        print("$", " ".join(cmd[3:]), flush=True)
        t0 = time.perf_counter()
        with open(out / f"{name}.log", "w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
        print(f"{name} done in {time.perf_counter() - t0:.0f} s", flush=True)

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, names))


def _runs(study: Path) -> dict[tuple[str, int], dict]:
    """(variant, seed) -> scores.json's train summary and the saved distances."""
    runs = {}
    for scores in sorted((study / "runs").glob("*/scores.json")):
        saved = json.loads(scores.read_text())
        with np.load(scores.parent / "distances.npz") as npz:
            distances = {k: npz[k] for k in npz.files}
        runs[(saved["variant"], saved["seed"])] = {"train": saved["train"], "distances": distances}
    return runs


def _sensitivity(runs: dict, issame: np.ndarray, n_pairs: int) -> dict:
    """Per metric: the Sensitivity of fse - off on the first ``n_pairs`` pairs of the pack (the
    study's own summary, on the runs' distances cut to those pairs)."""
    from fse_plugin.study.probes import scores
    from fse_plugin.study.results import RunResult, summarise
    same = issame[:n_pairs]
    cut = [RunResult(v, seed, scores(d, same), {}, d) for (v, seed), r in runs.items()
           for d in [{k: x[:n_pairs] for k, x in r["distances"].items()}]]
    seeds = {s for v, s in runs if v == "off"} & {s for v, s in runs if v == "fse"}
    return summarise([r for r in cut if r.seed in seeds], ["off", "fse"], same).sensitivity["fse"]


def _identity_resamples(seed: int, n: int = 100) -> list[np.ndarray]:
    """Resamples of the big pack that draw identities (each pair goes with its first identity), not
    pairs."""
    from fse_plugin.synth import pair_plan
    first = np.array([a for a, _, _ in pair_plan(PAIRS, 0)])
    members = [np.flatnonzero(first == i) for i in np.unique(first)]
    rng = np.random.default_rng([31, seed])
    return [np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
            for _ in range(n)]


def _difference(runs: dict, seed: int, idx: np.ndarray, issame: np.ndarray) -> dict[str, float]:
    """fse - off of one seed on the pairs ``idx``."""
    from fse_plugin.study.probes import scores
    a, b = (scores({k: d[idx] for k, d in runs[(v, seed)]["distances"].items()}, issame[idx])
            for v in ("fse", "off"))
    return {m: a[m] - b[m] for m in a}


def identities_lever(out: Path) -> None:
    """Is a pair's noise its own or its identities'? The pairs' part of s100's differences with the
    pairs resampled against the identities resampled (all pairs of an identity together)."""
    from fse_plugin.experiment import read_pack
    from fse_plugin.study.sensitivity import pair_resamples
    runs, issame = _runs(out / "s100"), read_pack(out / "data" / "rec" / "synth_val.bin")[1]
    seeds = sorted(s for v, s in runs if v == "off" and ("fse", s) in runs)
    for name, draw in (("pairs", lambda s: list(pair_resamples(len(issame), s))),
                       ("identities", _identity_resamples)):
        var: dict[str, list[float]] = {}
        for seed in seeds:
            diffs = [_difference(runs, seed, idx, issame) for idx in draw(seed)]
            for m in HEADLINE:
                var.setdefault(m, []).append(float(np.var([d[m] for d in diffs], ddof=1)))
        print(f"s100, {len(issame)} pairs, {name} resampled: " +
              ", ".join(f"{m} SD {math.sqrt(np.mean(v)):.3f}" for m, v in var.items()))


def _plan(name: str, steps: int, width: int, sens: dict, pairs: int) -> list[str]:
    """What the goal takes with this configuration's measured spreads: seeds (off and fse each) and
    quiet minutes, for packs of several sizes (the pairs' part scaled as 1 / sqrt(pairs))."""
    rows = []
    for n in (1000, 2000, 3000, 6000, 12000):
        need = [sens[m].seeds_for(goal, n) for m, goal in HEADLINE.items()]
        if None in need:
            continue
        seeds = max(need)
        wide = WIDE if width > 8 else {"train": 1.0, "forward": 1.0}
        # clean pairs + probe
        per_run = steps * STEP_S * wide["train"] + 3 * n * 2 * FORWARD_S * wide["forward"]
        minutes = (FIXED_S + 2 * seeds * per_run) / 60
        rows.append(f"| {name} | {steps} | {width} | {n} | {' / '.join(map(str, need))} | {seeds} "
                    f"| {minutes:.0f} |")
    return rows


def _seconds(runs: dict) -> str:
    """Mean seconds per run: training + scoring."""
    return (f"{np.mean([r['train']['seconds'] for r in runs.values()]):.0f} + "
            f"{np.mean([r['train']['score_seconds'] for r in runs.values()]):.0f}")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.2f}"


def table(out: Path) -> None:
    from fse_plugin.experiment import mean_ci, read_pack
    from fse_plugin.study.probes import scores
    rows = ["| config | pairs | seeds | metric | SD over seeds (pairs, training) | detectable at "
            "80% | seeds for the goal | s/run (train + score) |",
            "|---|---:|---:|---|---:|---:|---:|---:|"]
    curve, plans = {}, []
    for name, (flags, pack) in GRID.items():
        study = out / name
        if not (study / "runs").is_dir():
            continue
        runs = _runs(study)
        issame = read_pack(out / "data" / ("rec/synth_val.bin" if pack == "big"
                                           else "small.bin"))[1]
        steps = int(flags[flags.index("--steps") + 1])
        for v in ("off", "fse"):
            clean = [scores(r["distances"], issame)["clean"] for (w, _),
                     r in runs.items() if w == v]
            if clean:
                curve.setdefault(v, []).append((steps, mean_ci(clean)))
        if not {s for v, s in runs if v == "off"} & {s for v, s in runs if v == "fse"}:
            continue
        for n in sorted({len(issame), 300, 1000, 3000} & set(range(1, len(issame) + 1))):
            sens = _sensitivity(runs, issame, n)
            for m, s in sens.items():
                if m in HEADLINE:
                    rows.append(f"| {name} ({' '.join(flags)}) | {n} | {s.seeds} | {m} | "
                                f"{_fmt(s.sd_seeds)} ({_fmt(s.sd_pairs)}, {_fmt(s.sd_training)}) | "
                                f"{_fmt(s.detectable)} | {s.seeds_for(HEADLINE[m])} | "
                                f"{_seconds(runs)} |")
        if all(m in sens for m in HEADLINE) and sens["clean"].seeds > 1:
            width = int(flags[flags.index("--width") + 1]) if "--width" in flags else 8
            plans += _plan(name, steps, width, sens, len(issame))
    print("\n".join(rows))
    print("\n| config | steps | width | pairs | seeds for 1 point clean / 2 points upper-face drop "
          "| seeds | quiet minutes (off and fse) |\n|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(plans))
    _plot_curve(curve, out / "curve.png")
    if (out / "s100" / "runs").is_dir():
        identities_lever(out)


def _plot_curve(curve: dict, path: Path) -> None:
    """Clean accuracy of off and fse against training steps: mean and 95% interval over seeds."""
    from fse_plugin.experiment import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for v, points in curve.items():
        points = sorted(points, key=lambda p: p[0])
        steps = [p[0] for p in points]
        ax.errorbar(steps, [p[1].mean for p in points], capsize=3, marker="o", label=v,
                    yerr=np.nan_to_num([[p[1].mean - p[1].lo for p in points],
                                        [p[1].hi - p[1].mean for p in points]]))
        print(v, " ".join(f"{s}: {p.mean:.2f} [{_fmt(p.lo)}, {_fmt(p.hi)}]" for s, p in points))
    ax.set_xscale("log")
    ax.set_xlabel("training steps (batch 64)")
    ax.set_ylabel("clean verification accuracy %")
    ax.grid(ls="--", lw=0.5)
    ax.legend()
    ax.set_title("held-out accuracy over training length (mean, 95% CI over seeds)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stage", choices=("data", "run", "table"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", default=",".join(GRID), help="configurations to run, comma-separated")
    ap.add_argument("--jobs", type=int, default=2, help="studies at a time")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "data":
        data(args.out)
    elif args.stage == "run":
        run(args.out, args.only.split(","), args.jobs)
    else:
        table(args.out)


if __name__ == "__main__":
    main()
