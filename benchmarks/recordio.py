"""RecordIO benchmark: index open time/memory and random-read rate, fse_plugin vs mxnet side by
side.

    python benchmarks/recordio.py [--mxnet-python /path/to/python-with-mxnet]

Every figure is measured in a fresh child process (same machine, same run), so peak-RSS deltas
and timings are comparable; mxnet's children run under ``--mxnet-python`` (or this interpreter if
it can import mxnet).  The children import only ``<module>.recordio``, which is why this file
imports nothing from fse_plugin at top level: the mxnet interpreter runs it too.

* index open: a generated MS1M-size .idx (5.2M lines: keys 1..N then 0, offsets of ~7.5 KB records,
  as insightface writes them) next to a sparse .rec with valid records at the first and last offset.
* random reads: a rec of 100k small records (24-byte header + 64..512 bytes) written by
  fse_plugin (byte-identical to mxnet), read in a seeded random order after a warm-up pass.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

MAGIC = 0xCED7230A


def _vm(field: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _child(args: argparse.Namespace) -> None:
    """Measure one thing with ``args.module`` (fse_plugin.recordio or mxnet.recordio); print
    JSON."""
    import importlib

    import numpy as np
    R = importlib.import_module(args.module)
    if args.child == "open":
        with open("/proc/self/clear_refs", "w") as f:  # reset the peak-RSS mark (VmHWM)
            f.write("5")
        rss0 = _vm("VmRSS")
        t, c = time.perf_counter(), time.process_time()
        if args.api == "RecordReader":
            r = R.RecordReader(args.rec, args.idx)
        else:
            r = R.MXIndexedRecordIO(args.idx, args.rec, "r")
        out = {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c,
               "peak_rss_mb": (_vm("VmHWM") - rss0) / 2**20, "keys": len(r.keys)}
    else:
        if args.api == "RecordReader":
            r = R.RecordReader(args.rec, args.idx)
            read = r.read
        else:
            r = R.MXIndexedRecordIO(args.idx, args.rec, "r")
            read = r.read_idx
        keys = [int(k) for k in r.keys]
        for k in keys:  # warm the page cache and the code paths
            read(k)
        order = np.random.default_rng(0).integers(0, len(keys), args.reads).tolist()
        sel = [keys[i] for i in order]
        t, c = time.perf_counter(), time.process_time()
        nbytes = sum(len(read(k)) for k in sel)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        out = {"records_per_s": len(sel) / dt, "records_per_cpu_s": len(sel) / dc,
               "mb_per_s": nbytes / dt / 2**20}
        if args.api == "RecordReader":  # labels of every record from headers only
            t = time.perf_counter()
            R.image_index(r)
            out["image_index_s"] = time.perf_counter() - t
    print(json.dumps(out))


def _run_child(python: str, module: str, what: str, api: str, rec: Path, idx: Path, reads: int = 0
               ) -> dict:
    cmd = [python, __file__, "--child", what, "--module", module, "--api", api, "--rec", str(rec),
           "--idx", str(idx), "--reads", str(reads)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def make_index(workdir: Path, n: int) -> tuple[Path, Path]:
    """An insightface-ordered .idx of n lines and a sparse .rec it fits (records only at the
    ends)."""
    import numpy as np
    idx, rec = workdir / f"index{n}.idx", workdir / f"index{n}.rec"
    if idx.is_file() and rec.is_file():
        return idx, rec
    rng = np.random.default_rng(0)
    offsets = np.concatenate([[0], np.cumsum(rng.integers(6000, 9000, n - 1) // 4 * 4)]
                             ).astype(np.int64)
    keys = np.concatenate([np.arange(1, n), [0]])
    with open(idx, "w") as f:
        for s in range(0, n, 1 << 20):
            part = zip(keys[s:s + (1 << 20)].tolist(), offsets[s:s + (1 << 20)].tolist())
            f.write("".join(f"{k}\t{o}\n" for k, o in part))
    record = struct.pack("<II", MAGIC, 24) + struct.pack("<IfQQ", 0, 0.0, 0, 0)
    with open(rec, "wb") as f:
        for o in (0, int(offsets[-1])):
            f.seek(o)
            f.write(record)
    return idx, rec


def make_small_rec(workdir: Path, n: int) -> tuple[Path, Path]:
    """n small image-style records (header + 64..512 random bytes) written with fse_plugin."""
    import numpy as np

    from fse_plugin.recordio import IRHeader, MXIndexedRecordIO, pack
    idx, rec = workdir / f"small{n}.idx", workdir / f"small{n}.rec"
    if idx.is_file() and rec.is_file():
        return idx, rec
    rng = np.random.default_rng(1)
    w = MXIndexedRecordIO(idx, rec, "w")
    for k in range(n):
        w.write_idx(k, pack(IRHeader(0, float(k % 1000), k, 0),
                            rng.bytes(int(rng.integers(64, 513)))))
    w.close()
    return idx, rec


def _has_mxnet(python: str) -> bool:
    return subprocess.run([python, "-c", "import mxnet.recordio"],
                          capture_output=True).returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mxnet-python", default=None,
                    help="interpreter with mxnet (default: this one, if it has mxnet)")
    ap.add_argument("--index-lines", type=int, default=5_200_000)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--reads", type=int, default=200_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fse_bench_recordio"))
    ap.add_argument("--child", choices=["open", "read"], help=argparse.SUPPRESS)
    ap.add_argument("--module", help=argparse.SUPPRESS)
    ap.add_argument("--api", help=argparse.SUPPRESS)
    ap.add_argument("--rec", help=argparse.SUPPRESS)
    ap.add_argument("--idx", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args)

    args.workdir.mkdir(parents=True, exist_ok=True)
    mx_python = args.mxnet_python or (sys.executable if _has_mxnet(sys.executable) else None)
    if mx_python and not _has_mxnet(mx_python):
        sys.exit(f"{mx_python} cannot import mxnet")
    t = time.perf_counter()
    big_idx, big_rec = make_index(args.workdir, args.index_lines)
    small_idx, small_rec = make_small_rec(args.workdir, args.records)
    print(f"data ready in {time.perf_counter() - t:.1f} s under {args.workdir} "
          f"(index {big_idx.stat().st_size / 2**20:.0f} MB, "
          f"small rec {small_rec.stat().st_size / 2**20:.0f} MB)")

    rows = []
    ours = "fse_plugin.recordio"
    for api in ("RecordReader", "MXIndexedRecordIO"):
        o = _run_child(sys.executable, ours, "open", api, big_rec, big_idx)
        r = _run_child(sys.executable, ours, "read", api, small_rec, small_idx, args.reads)
        rows.append((f"fse_plugin {api}", o, r))
    if mx_python:
        o = _run_child(mx_python, "mxnet.recordio", "open", "MXIndexedRecordIO", big_rec, big_idx)
        r = _run_child(mx_python, "mxnet.recordio", "read", "MXIndexedRecordIO", small_rec,
                       small_idx, args.reads)
        rows.append(("mxnet MXIndexedRecordIO", o, r))

    print(f"\nindex open: {args.index_lines:,} lines; "
          f"random reads: {args.reads:,} of {args.records:,} small records")
    print("(wall clock; 'cpu' columns use process CPU time, which shared machines inflate less)")
    print(f"{'reader':34s} {'open s':>7s} {'cpu s':>6s} {'peak MB':>8s} {'reads/s':>9s}"
          f" {'cpu reads/s':>12s}")
    for name, o, r in rows:
        print(f"{name:34s} {o['seconds']:7.2f} {o['cpu_seconds']:6.2f} {o['peak_rss_mb']:8.0f}"
              f" {r['records_per_s']:9,.0f} {r['records_per_cpu_s']:12,.0f}")
    print(f"image_index (labels from headers) of {args.records:,} records: "
          f"{rows[0][2]['image_index_s']:.3f} s")
    if mx_python:
        mx_o, mx_r = rows[-1][1], rows[-1][2]
        print("\nratios vs mxnet (open: mxnet / ours; reads: ours / mxnet; "
              "higher is better for us)")
        for name, o, r in rows[:-1]:
            print(f"{name:34s} open time x{mx_o['seconds'] / o['seconds']:.1f}"
                  f" (cpu x{mx_o['cpu_seconds'] / o['cpu_seconds']:.1f})"
                  f"  open memory x{mx_o['peak_rss_mb'] / max(o['peak_rss_mb'], 1e-9):.1f}"
                  f"  reads x{r['records_per_s'] / mx_r['records_per_s']:.2f}"
                  f" (cpu x{r['records_per_cpu_s'] / mx_r['records_per_cpu_s']:.2f})")
    else:
        print("\nmxnet not available: pass --mxnet-python PATH for the side-by-side ratios")


if __name__ == "__main__":
    main()
