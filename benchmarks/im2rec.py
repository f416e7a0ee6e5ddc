"""im2rec benchmark: ``python -m fse_plugin.im2rec`` vs mxnet 1.9.1's
``python -m mxnet.tools.im2rec``.

    python benchmarks/im2rec.py --mxnet-python PYTHON_WITH_MXNET [--images 3000] [--copies 5]
        [--threads 1 2]

The image folder: aligned 112x112 synthetic faces (``fse_plugin.synth``), one sub-folder per
identity, JPEG files (written once under --workdir; ``--copies`` hard-links it into more identity
folders). Each measurement is a whole command in a fresh process, the two tools alternating,
``--repeats`` times (median): ``--list --recursive``, then packing the same list re-encoded at
``--quality 95`` (im2rec's default) and with ``--pass-through``, at each ``--threads`` count.
Outputs are checked to be byte-identical. Images/s are of the work (the command less the import of
its package, which each tool's ``--help`` measures); the whole commands' ratio too.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_folder(workdir: Path, images: int, per_identity: int = 20) -> Path:
    """``images`` aligned faces as ``images/<label>/<key>.jpg`` (the synthetic rec's JPEGs, written
    out)."""
    from fse_plugin import synth
    from fse_plugin.recordio import image_index, open_rec, unpack
    root = workdir / f"images{images}"
    if root.is_dir():
        return root
    rec = synth.write_rec(workdir / f"synth{images}", max(1, images // per_identity), per_identity,
                          seed=0)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with open_rec(rec) as reader:
        index = image_index(reader)
        for key, label in zip(index.keys.tolist(), index.labels.tolist()):
            (tmp / f"{label:05d}").mkdir(parents=True, exist_ok=True)
            (tmp / f"{label:05d}" / f"{key:07d}.jpg").write_bytes(unpack(reader.read(key))[1])
    tmp.rename(root)
    shutil.rmtree(rec)
    return root


# Each tool's package is imported before the clock starts, so the work is timed alone; start-up is
# measured separately (``--help``). Worker processes are started inside the timed part for both.
_DRIVERS = {
    "mxnet": "import sys, time, runpy, cv2, mxnet\n"
             "t = time.perf_counter()\n"
             "try:\n"
             "    runpy.run_module('mxnet.tools.im2rec', run_name='__main__', alter_sys=True)\n"
             "finally:\n"
             "    print('SECONDS', time.perf_counter() - t)\n",
    "fse_plugin": "import sys, time\n"
                  "from fse_plugin.cli import app\n"
                  "from fse_plugin.cli.rec import im2rec_argv\n"
                  "import fse_plugin.im2rec\n"
                  "t = time.perf_counter()\n"
                  "rc = app.main(im2rec_argv(sys.argv[1:]))\n"
                  "print('SECONDS', time.perf_counter() - t)\n"
                  "sys.exit(rc)\n",
}


def _env() -> dict:
    """This repo first on the path, and bytecode cached as in a normal install (both tools' imports
    then read .pyc files; the first start-up run writes ours)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed(python: str, tool: str, argv: list[str]) -> tuple[float, float]:
    """(seconds of the whole command, seconds of its work) of one run of ``tool`` with ``argv``."""
    t = time.perf_counter()
    res = subprocess.run([python, "-c", _DRIVERS[tool], *argv], capture_output=True, text=True,
                         env=_env())
    wall = time.perf_counter() - t
    if res.returncode:
        raise RuntimeError(f"{tool} {' '.join(argv)} failed:\n{res.stderr[-2000:]}")
    return wall, float(res.stdout.rsplit("SECONDS", 1)[1])


def startup(python: str, tool: str) -> float:
    module = {"mxnet": "mxnet.tools.im2rec", "fse_plugin": "fse_plugin.im2rec"}[tool]
    t = time.perf_counter()
    subprocess.run([python, "-m", module, "--help"], capture_output=True, check=True, env=_env())
    return time.perf_counter() - t


def run_pair(pythons: dict, workdir: Path, args: list[str], lst: Path | None, repeats: int,
             outputs: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """Median (whole, work) seconds of each tool running ``args PREFIX ROOT``; outputs must be
    byte-identical."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in pythons}
    for _ in range(repeats):
        for name, python in pythons.items():
            d = workdir / name
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            if lst is not None:
                shutil.copy(lst, d / "t.lst")
            times[name].append(timed(python, name, [*args[:-1], str(d / "t"), args[-1]]))
    for out in outputs:
        a, b = ((workdir / name / out).read_bytes() for name in pythons)
        if a != b:
            raise AssertionError(f"{out} differs between the tools")
    return {name: (statistics.median(w for w, _ in t), statistics.median(x for _, x in t))
            for name, t in times.items()}


def copied(base: Path, copies: int) -> Path:
    """``copies`` hard-linked copies of the folder's identities (new identity folders, the same
    files): a bigger folder for the per-image rates without rendering more faces."""
    if copies == 1:
        return base
    root = base.with_name(f"{base.name}x{copies}")
    if not root.is_dir():
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for k in range(copies):
            for folder in sorted(base.iterdir()):
                (tmp / f"{k}_{folder.name}").mkdir(parents=True)
                for f in folder.iterdir():
                    os.link(f, tmp / f"{k}_{folder.name}" / f.name)
        tmp.rename(root)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mxnet-python", required=True, help="interpreter with mxnet 1.9.1")
    ap.add_argument("--images", type=int, default=3000, help="faces rendered")
    ap.add_argument("--copies", type=int, default=1,
                    help="the folder this many times over (hard links)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fse_bench_im2rec"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    root = copied(make_folder(args.workdir, args.images), args.copies)
    n = sum(1 for _ in root.rglob("*.jpg"))
    pythons = {"mxnet": args.mxnet_python, "fse_plugin": sys.executable}
    for name, py in pythons.items():
        startup(py, name)  # warm-up: bytecode written, files in the page cache
    start = {name: statistics.median(startup(py, name) for _ in range(args.repeats))
             for name, py in pythons.items()}
    print(f"{n} images of 112x112 under {root}; start-up (--help): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in start.items()))
    rows = [("--list --recursive", "-", run_pair(pythons, args.workdir,
                                                  ["--list", "--recursive", str(root)], None,
                                                  args.repeats, ("t.lst",)))]
    keep = args.workdir / "bench.lst"
    shutil.copy(args.workdir / "fse_plugin" / "t.lst", keep)
    for mode in (["--quality", "95"], ["--pass-through"]):
        for t in args.threads:
            flags = ["--num-thread", str(t), *mode, str(root)]
            rows.append((" ".join(mode), str(t), run_pair(pythons, args.workdir, flags, keep,
                                                          args.repeats, ("t.rec", "t.idx"))))
    print(f"\nmedian of {args.repeats} runs; "
          "work = the command less its package import (start-up above)")
    print(f"{'step':20s} {'threads':>7s} {'mxnet s':>8s} {'ours s':>7s} {'mxnet work img/s':>17s}"
          f" {'ours work img/s':>16s} {'ours/mxnet work':>16s} {'whole':>6s}")
    for step, t, s in rows:
        (mx, mx_work), (us, us_work) = s["mxnet"], s["fse_plugin"]
        print(f"{step:20s} {t:>7s} {mx:8.2f} {us:7.2f} {n / mx_work:17.0f} {n / us_work:16.0f}"
              f" {mx_work / us_work:16.2f} {mx / us:6.2f}")


if __name__ == "__main__":
    main()
