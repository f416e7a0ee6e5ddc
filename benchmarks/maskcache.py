"""Mask cache benchmark: codec choice, bytes and get() time per mask with and without verification,
start-up check cost, the build pipeline against decoding alone, cache build vs parser forward.

    python benchmarks/maskcache.py [--rec DIR] [--images N] [--feature-scale 8] [--batch-size 32]
                                   [--device cpu]
    python benchmarks/maskcache.py --pipeline-only [--images 6000] [--json FILE]
                                   # CPU proxy of the GPU build
    python benchmarks/maskcache.py --build-only --device cuda --images 40000 --batch-size 512
                                   --feature-scale 1

1. Codec candidates on the synthetic ground-truth masks (``gt_masks.npz`` of a synth rec): bytes per
   mask, decode and encode microseconds per mask on one core (best of 3; wall and CPU time).
2. The cache itself (``fse cache build --from-labels``): bytes per mask on disk; ``MaskCache.get``
   microseconds per mask in random key order, alternating with the same calls unverified (no entry
   crc32, uncapped inflate: what format 1 did) - the cost of "never a wrong mask", budget < 10%;
   ``MaskCache.check()`` per 16,384-row chunk and for keys.npy, summed for an MS1MV3-size cache.
3. ``--pipeline-only``: the build pipeline (batch decode processes, hand-off, encoding, chunk
   writes) with the parser replaced by a free stand-in, images/s per decode worker at 1 and 2
   workers, next to reading + decoding the same records in one process (JSON keys
   ``pipeline_per_worker``, ``decode_alone``; also per CPU-second, which a loaded machine distorts
   less); goal >= 0.5x and near-linear in workers.
4. ``fse cache build`` throughput with the default workers against the parser's forward-only
   throughput (``parsing.forward_throughput``) at the same batch size, measured forward / build /
   forward in this one run; goal >= 0.8. A random-init parser is fine for throughput. On CUDA pass
   ``--device cuda`` (and ``--images 40000 --batch-size 512``).
"""
from __future__ import annotations

import argparse
import bz2
import contextlib
import json
import lzma
import os
import resource
import sys
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch

from fse_plugin import maskcache as mc
from fse_plugin import recordio, synth
from fse_plugin.maskcache import build, chunk, codec, pipeline, source
from fse_plugin.maskcache.settings import default_workers
from fse_plugin.maskcache.spec import CacheSpec, Producer
from fse_plugin.parsing import UNetRes18, forward_throughput, load_parser, save_parser


# ---- codec candidates (measurement only; the cache uses mc.encode_masks / mc.decode_mask) ----
def _from_bytes(raw: bytes, shape) -> np.ndarray:
    return np.frombuffer(raw, np.uint8).reshape(shape).copy()


def _up_xor_enc(m):
    d = m.copy()
    d[1:] ^= m[:-1]
    return zlib.compress(d.tobytes(), 9)


def _up_xor_dec(b, shape):
    return np.bitwise_xor.accumulate(np.frombuffer(zlib.decompress(b), np.uint8).reshape(shape),
                                     axis=0)


def _nibble_enc(m):
    pal, inv = np.unique(m, return_inverse=True)
    if pal.size > 16:
        return b"\xff" + zlib.compress(m.tobytes(), 9)
    inv = inv.reshape(-1).astype(np.uint8)
    return (bytes([pal.size]) + pal.tobytes()
            + zlib.compress(((inv[0::2] << 4) | inv[1::2]).tobytes(), 9))


def _nibble_dec(b, shape):
    k = b[0]
    if k == 255:
        return _from_bytes(zlib.decompress(b[1:]), shape)
    p = np.frombuffer(zlib.decompress(b[1 + k:]), np.uint8)
    out = np.empty(shape[0] * shape[1], np.uint8)
    out[0::2], out[1::2] = p >> 4, p & 15
    return np.frombuffer(b, np.uint8, k, 1)[out].reshape(shape)


def _rle16_enc(m):
    runs = codec.Runs(m[None])
    return zlib.compress(runs.values.tobytes() + runs.lengths.astype("<u2").tobytes(), 9)


def _rle16_dec(b, shape):
    r = zlib.decompress(b)
    n = len(r) // 3
    return np.repeat(np.frombuffer(r, np.uint8, n), np.frombuffer(r, "<u2", n, n)).reshape(shape)


_LZMA = [{"id": lzma.FILTER_LZMA2, "preset": 6}]
CANDIDATES = {
    "zlib-9 of raw": (lambda m: zlib.compress(m.tobytes(), 9),
                      lambda b, s: _from_bytes(zlib.decompress(b), s)),
    "zlib-6 of raw": (lambda m: zlib.compress(m.tobytes(), 6),
                      lambda b, s: _from_bytes(zlib.decompress(b), s)),
    "zlib-1 of raw": (lambda m: zlib.compress(m.tobytes(), 1),
                      lambda b, s: _from_bytes(zlib.decompress(b), s)),
    "lzma of raw": (lambda m: lzma.compress(m.tobytes(), lzma.FORMAT_RAW, filters=_LZMA),
                    lambda b, s: _from_bytes(lzma.decompress(b, lzma.FORMAT_RAW, filters=_LZMA),
                                             s)),
    "bz2-9 of raw": (lambda m: bz2.compress(m.tobytes(), 9),
                     lambda b, s: _from_bytes(bz2.decompress(b), s)),
    "PNG (cv2, level 9)": (
        lambda m: cv2.imencode(".png", m, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes(),
        lambda b, s: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED)),
    "row XOR (PNG up) + zlib-9": (_up_xor_enc, _up_xor_dec),
    "4-bit palette + zlib-9": (_nibble_enc, _nibble_dec),
    "runs, u16 lengths + zlib-9": (_rle16_enc, _rle16_dec),
    "runs, u8 lengths + zlib-9 (chosen)": (lambda m: mc.encode_masks(m[None])[0],
                                           lambda b, s: mc.decode_mask(b, *s)),
}


def ragged(masks: np.ndarray, p: float, seed: int = 0) -> np.ndarray:
    """Parser-like boundary noise: each pixel on a class boundary takes its neighbour's label with
    probability p."""
    rng = np.random.default_rng(seed)
    out = masks.copy()
    for i, m in enumerate(masks):
        shifted = np.roll(m, int(rng.choice([-1, 1])), axis=int(rng.integers(2)))
        flip = (shifted != m) & (rng.random(m.shape) < p)
        out[i][flip] = shifted[flip]
    return out


def _best_of(fn, n_items: int, repeat: int = 3) -> tuple[float, float]:
    """(wall, CPU) microseconds per item, best of ``repeat``."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
    return 1e6 * wall / n_items, 1e6 * cpu / n_items


def codec_table(masks: np.ndarray) -> list[dict]:
    shape = masks.shape[1:]
    rows = []
    for name, (enc, dec) in CANDIDATES.items():
        blobs = []
        e_wall, e_cpu = _best_of(lambda: blobs.extend(enc(m) for m in masks), len(masks), repeat=1)
        for b, m in zip(blobs, masks):
            assert np.array_equal(dec(b, shape), m), name
        d_wall, d_cpu = _best_of(lambda: [dec(b, shape) for b in blobs], len(blobs))
        rows.append({"codec": name, "bytes": float(np.mean([len(b) for b in blobs])),
                     "decode_us": d_wall, "decode_us_cpu": d_cpu, "encode_us": e_wall,
                     "encode_us_cpu": e_cpu})
    return rows


@contextlib.contextmanager
def unverified():
    """MaskCache.get without its checks, as format 1 read:
    no entry crc32, zlib inflating without a cap."""
    entry, decode = chunk.ChunkFile.entry, chunk.decode_mask

    def raw_entry(self, i, key=None):
        return self._data[self._off[i]:self._off[i + 1]]

    def raw_decode(blob, height, width):
        r = np.frombuffer(zlib.decompress(blob), np.uint8)
        return np.repeat(r[:len(r) // 2], r[len(r) // 2:]).reshape(height, width)
    chunk.ChunkFile.entry, chunk.decode_mask = raw_entry, raw_decode
    try:
        yield
    finally:
        chunk.ChunkFile.entry, chunk.decode_mask = entry, decode


def get_table(cache: mc.MaskCache, repeat: int = 25, block: int = 100) -> dict:
    """MaskCache.get in random key order next to the same calls unverified, and get_runs (the same
    checks, no expansion into a mask): each block of ``block`` keys is timed ``repeat`` times per
    variant, alternating, and the per-block minima are summed (a burst of load then spoils one
    sample of one block, not the comparison)."""
    order = np.random.default_rng(0).permutation(cache.keys).tolist()
    for k in order:
        cache.get(k)  # map the chunks, warm the page cache
    variants = ("get", "raw", "runs")
    best: dict[str, np.ndarray] = {v: np.full((len(order) + block - 1) // block, np.inf)
                                   for v in variants}
    wall = {v: best[v].copy() for v in best}
    for _ in range(repeat):
        for j, s in enumerate(range(0, len(order), block)):
            keys = order[s:s + block]
            for variant in variants:
                read = cache.get_runs if variant == "runs" else cache.get
                with (unverified() if variant == "raw" else contextlib.nullcontext()):
                    w, c = time.perf_counter(), time.process_time()
                    for k in keys:
                        read(k)
                    wall[variant][j] = min(wall[variant][j], time.perf_counter() - w)
                    best[variant][j] = min(best[variant][j], time.process_time() - c)
    us = {v: float(1e6 * best[v].sum() / len(order)) for v in best}
    us_wall = {v: float(1e6 * wall[v].sum() / len(order)) for v in wall}
    return {"get_us": us_wall["get"], "get_us_cpu": us["get"], "unverified_us": us_wall["raw"],
            "unverified_us_cpu": us["raw"], "verify_overhead": us["get"] / us["raw"] - 1,
            "get_runs_us": us_wall["runs"], "get_runs_us_cpu": us["runs"]}


def check_table(cache: mc.MaskCache, masks: np.ndarray, tmp: Path, n_keys: int = 5_179_510) -> dict:
    """MaskCache.check() cost: this cache on a fresh instance; one full-size chunk (16,384 rows,
    entries tiled from ``masks``) mapped and checked; keys.npy of ``n_keys`` (MS1MV3) hashed and
    checked ascending; and the sum for a cache of that size (count / 16,384 chunks)."""
    fresh = mc.MaskCache(cache.path)
    t = time.perf_counter()
    fresh.check()
    small = time.perf_counter() - t
    fresh.close()
    blobs = mc.encode_masks(masks)
    rows = mc.DEFAULT_CHUNK_SIZE
    entries = chunk.Entries.of([blobs[i % len(blobs)] for i in range(rows)])
    meta = chunk.ChunkMeta([], [0] * 25, [0] * 25)
    path = tmp / "big.fsmc"
    path.write_bytes(chunk.chunk_bytes(b"\0" * 8, 0, 0, *masks.shape[1:], entries, meta))
    per_chunk = []
    for _ in range(5):
        t = time.perf_counter()
        chunk.ChunkFile(path).close()
        per_chunk.append(time.perf_counter() - t)
    keys_path = tmp / "keys.npy"
    np.save(keys_path, np.arange(1, n_keys + 1, dtype=np.int64))
    t = time.perf_counter()
    source.sha256_file(keys_path)
    keys = np.load(keys_path, mmap_mode="r")
    bool((np.diff(keys) > 0).all())
    keys_s = time.perf_counter() - t
    del keys
    chunks = -(-n_keys // rows)
    return {"check_ms": 1e3 * small, "chunks": len(cache.manifest.chunks),
            "chunk_ms_16384": 1e3 * min(per_chunk), "keys_ms": 1e3 * keys_s, "n_keys": n_keys,
            "estimate_ms": 1e3 * (chunks * min(per_chunk) + keys_s)}


# ---- --pipeline-only: the build pipeline with a free stand-in for the parser ----
class FreeStandIn:
    """The parser replaced by nothing: every batch gets all-background masks, ready at once."""

    def __init__(self, height: int, width: int):
        self.size = (height, width)

    def launch(self, images):
        masks = np.zeros((len(images), *self.size), np.uint8)
        return lambda: masks


def tile_rec(src: Path, out: Path, n: int) -> Path:
    """An im2rec-layout rec of ``n`` records cycling through ``src``'s image records
    (bytes as they are)."""
    reader = recordio.open_rec(src)
    keys = recordio.image_index(reader).keys
    out.mkdir(parents=True, exist_ok=True)
    w = recordio.MXIndexedRecordIO(str(out / "train.idx"), str(out / "train.rec"), "w")
    for i in range(n):
        w.write_idx(i, reader.read(int(keys[i % len(keys)])))
    w.close()
    reader.close()
    return out


def _cpu() -> tuple[float, float]:
    """CPU seconds of this process and of its finished children
    (DataLoader workers and encoders, once joined)."""
    me, kids = (resource.getrusage(resource.RUSAGE_SELF),
                resource.getrusage(resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def decode_alone(rec: Path) -> tuple[float, float]:
    """(images/s, images per CPU-second) of reading + decoding every image record in one process,
    one OpenCV thread."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    reader = recordio.open_rec(rec)
    keys = recordio.image_index(reader).keys.tolist()
    t, c = time.perf_counter(), time.process_time()
    for k in keys:
        reader.read_image(k)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    reader.close()
    cv2.setNumThreads(threads)
    return len(keys) / wall, len(keys) / cpu


def pipeline_rate(rec: Path, out: Path, workers: int, encode_workers: int, batch_size: int,
                  chunk_size: int) -> tuple[float, float]:
    """(images/s, images per CPU-second of the child processes) of ChunkPipeline over every record
    of ``rec`` with the free stand-in (fresh cache dir). With ``encode_workers=0`` the children are
    exactly the decode workers."""
    src = source.scan_source(rec)
    try:
        h, w = source.probe_size(src.reader, src.keys)
        spec = CacheSpec(h, w, len(src.keys), chunk_size, src.fingerprint,
                         Producer("stand-in", "0"))
        writer = build.CacheWriter(out, spec)
        writer.prepare(overwrite=True, command="benchmark")
        settings = mc.BuildSettings(batch_size=batch_size, num_workers=workers,
                                    encode_workers=encode_workers, chunk_size=chunk_size,
                                    progress=False)
        run = pipeline.ChunkPipeline(writer, src, FreeStandIn(h, w), settings)
        kids = _cpu()[1]
        rows, seconds = run.run(list(range(spec.n_chunks)))
        kids = _cpu()[1] - kids
    finally:
        src.reader.close()
    return rows / seconds, rows / kids


def run_pipeline_only(args: argparse.Namespace, tmp: Path) -> None:
    base = (Path(args.rec) if args.rec
            else synth.write_rec(tmp / "rec", args.ids, args.per_id, seed=0))
    rec = tile_rec(base, tmp / "tiled", args.images or 6000)
    enc = args.encode_workers
    print(f"{args.images or 6000} records (tiled from {base}); machine: {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; batch {args.batch_size}, "
          f"{enc} encode process(es), best of {args.repeat}")
    alone, per_worker = [], {}
    for _ in range(args.repeat):  # alternate, so both see the same load
        alone.append(decode_alone(rec))
        for w in args.pipeline_workers:
            wall, cpu = pipeline_rate(rec, tmp / f"cache{w}", w, enc, args.batch_size,
                                      args.chunk_size)
            per_worker.setdefault(w, []).append((wall / w, cpu))
    a, a_cpu = max(x[0] for x in alone), max(x[1] for x in alone)
    print(f"read + decode alone, one process: {a:.0f} images/s, {a_cpu:.0f} per CPU-second")
    table = {}
    for w, runs in per_worker.items():
        best, cpu = max(x[0] for x in runs), max(x[1] for x in runs)
        table[str(w)] = {"per_worker": best, "ratio": best / a, "per_worker_cpu": cpu,
                         "ratio_cpu": cpu / a_cpu}
        print(f"pipeline, {w} decode worker(s): {best:.0f} images/s per worker = {best / a:.2f}x "
              f"decode alone; "
              + (f"{cpu:.0f} per CPU-second of a worker = {cpu / a_cpu:.2f}x" if enc == 0 else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "decode_alone": a, "decode_alone_cpu": a_cpu,
            "pipeline_per_worker": {w: t["per_worker"] for w, t in table.items()},
            "pipeline_per_worker_cpu": ({w: t["per_worker_cpu"] for w, t in table.items()}
                                        if enc == 0 else None),
            "ratio": {w: t["ratio"] for w, t in table.items()},
            "runs": {"decode_alone": alone,
                     "pipeline_per_worker": {str(w): r for w, r in per_worker.items()}},
            "cpus": os.cpu_count(), "load": os.getloadavg()[0], "encode_workers": enc,
            "batch_size": args.batch_size}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rec", default=None,
                    help="synth rec dir with gt_masks.npz (default: write one)")
    ap.add_argument("--ids", type=int, default=40,
                    help="identities of the rec written when --rec is not given")
    ap.add_argument("--per-id", type=int, default=25)
    ap.add_argument("--codec-masks", type=int, default=500,
                    help="masks the codec candidates are compared on")
    ap.add_argument("--parser", default=None,
                    help="parser checkpoint (default: random init of --feature-scale)")
    ap.add_argument("--feature-scale", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the inference process")
    ap.add_argument("--num-workers", type=int, default=None,
                    help="decode processes (default: the build's default)")
    ap.add_argument("--encode-workers", type=int, default=None,
                    help="default: the build's; 0 with --pipeline-only (the stand-in's masks are "
                         "then encoded in the main process, so the child processes are exactly "
                         "the decode workers)")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default=None,
                    help="autocast of forward and build (default: bf16 on CUDA, else fp32)")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="earlier spelling: --amp is --precision bf16, --no-amp --precision fp32")
    ap.add_argument("--pipeline-only", action="store_true",
                    help="only the CPU proxy of the build pipeline")
    ap.add_argument("--build-only", action="store_true",
                    help="only the cache build against forward (section 4)")
    ap.add_argument("--images", type=int, default=0,
                    help="records to run on, the rec's images tiled "
                         "(default: the rec; 6000 with --pipeline-only)")
    ap.add_argument("--pipeline-workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3,
                    help="--pipeline-only: alternating runs, best kept")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.pipeline_only and args.encode_workers is None:
        args.encode_workers = 0
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="fse_maskcache_bench_") as tmp:
        (run_pipeline_only if args.pipeline_only else run)(args, Path(tmp))


def cache_section(args: argparse.Namespace, rec: Path, keys: np.ndarray, masks: np.ndarray,
                  tmp: Path) -> dict:
    """Sections 1-2: codec candidates, bytes/mask, get() with and without verification,
    check() cost, encoding."""
    table = codec_table(masks[:args.codec_masks])
    print(f"codec candidates on {min(len(masks), args.codec_masks)} ground-truth masks, one core:")
    print("| codec | bytes/mask | decode us/mask (wall / CPU) | encode us/mask (wall / CPU) |")
    print("|---|---:|---:|---:|")
    for r in table:
        print(f"| {r['codec']} | {r['bytes']:.0f} "
              f"| {r['decode_us']:.1f} / {r['decode_us_cpu']:.1f} "
              f"| {r['encode_us']:.0f} / {r['encode_us_cpu']:.0f} |")
    labels = mc.build_from_labels(rec, keys, masks, tmp / "labels_cache",
                                  chunk_size=args.chunk_size, progress=False)
    cache = mc.MaskCache(labels)
    g, c = get_table(cache), check_table(cache, masks, tmp)
    print(f"\ncache of the ground-truth masks: {cache.bytes_per_mask:.0f} bytes/mask on disk "
          f"(raw {masks[0].size})")
    print(f"MaskCache.get, random order: {g['get_us']:.1f} us/mask wall, "
          f"{g['get_us_cpu']:.1f} us CPU; the same calls unverified (no crc32, uncapped inflate) "
          f"{g['unverified_us']:.1f} / {g['unverified_us_cpu']:.1f} us: "
          f"verification costs {100 * g['verify_overhead']:+.1f}% of get (CPU; budget < 10%)")
    print(f"MaskCache.get_runs (same checks, runs not expanded): {g['get_runs_us']:.1f} us/mask "
          f"wall, {g['get_runs_us_cpu']:.1f} us CPU")
    print(f"MaskCache.check(): {c['check_ms']:.1f} ms for this cache "
          f"({c['chunks']} chunks of {args.chunk_size}); "
          f"{c['chunk_ms_16384']:.2f} ms per 16,384-row chunk, "
          f"{c['keys_ms']:.0f} ms for keys.npy of {c['n_keys']:,} "
          f"keys: ~{c['estimate_ms'] / 1e3:.2f} s for an MS1MV3-size cache (page cache warm)")
    for p in (0.2, 0.5):
        noisy = ragged(masks[:args.codec_masks], p)
        print(f"with parser-like boundary noise "
              f"(p={p}, {(noisy != masks[:len(noisy)]).mean():.1%} of pixels "
              f"changed): {np.mean([len(b) for b in mc.encode_masks(noisy)]):.0f} bytes/mask")
    batch = masks[:512]
    enc_wall, enc_cpu = _best_of(lambda: codec.encode_batch(batch, np.ones(len(batch), bool)),
                                 len(batch))
    print(f"one encode process (batch of real masks: runs, zlib, class counts) keeps up with "
          f"{1e6 / enc_cpu:.0f} masks/s (CPU time; {1e6 / enc_wall:.0f} wall here)")
    return {"codecs": table, "cache_bytes_per_mask": cache.bytes_per_mask, **g, **c,
            "encode_masks_per_s_cpu": 1e6 / enc_cpu}


def precision_of(args: argparse.Namespace) -> str:
    """--precision, else the earlier --amp/--no-amp, else bf16 on CUDA
    (what the build ran at when this benchmark's figures were first taken) and fp32 elsewhere."""
    if getattr(args, "precision", None):
        return args.precision
    amp = args.device.startswith("cuda") if getattr(args, "amp", None) is None else args.amp
    return "bf16" if amp else "fp32"


def build_section(args: argparse.Namespace, build_rec: Path, n_build: int, tmp: Path) -> dict:
    """Section 4: forward only / cache build with the default workers / forward only, one run."""
    torch.manual_seed(0)
    ckpt = args.parser or save_parser(UNetRes18(feature_scale=args.feature_scale),
                                      tmp / "parser.pt")
    model = load_parser(ckpt)
    precision = precision_of(args)
    iters = max(3, min(20, n_build // args.batch_size))
    fwd = [forward_throughput(model, args.batch_size, args.device, precision, iters=iters)]
    t0 = time.perf_counter()
    settings = mc.BuildSettings(batch_size=args.batch_size, device=args.device, precision=precision,
                                num_workers=args.num_workers, encode_workers=args.encode_workers,
                                chunk_size=args.chunk_size, progress=False)
    out = mc.precompute(build_rec, ckpt, tmp / "parser_cache", settings)
    wall = time.perf_counter() - t0
    fwd.append(forward_throughput(model, args.batch_size, args.device, precision, iters=iters))
    pre = json.loads((out / mc.BUILD_INFO).read_text())["masks_per_s_rank0"]
    f = float(np.mean(fwd))
    workers = default_workers()
    print(f"\nparser feature_scale {model.feature_scale}, batch {args.batch_size}, {args.device}, "
          f"{precision}, {n_build} images, {args.num_workers or workers[0]} decode worker(s), "
          f"{workers[1] if args.encode_workers is None else args.encode_workers} "
          f"encode process(es):")
    print(f"  forward only        {fwd[0]:.1f} / {fwd[1]:.1f} images/s (before / after)")
    print(f"  cache build         {pre:.1f} masks/s (inference loop), "
          f"{n_build / wall:.1f} masks/s end to end "
          f"incl. fingerprint, model load, workers start, merge ({wall:.1f} s)")
    print(f"  ratio build / forward = {pre / f:.2f} (goal >= 0.8); this parser's cache: "
          f"{mc.MaskCache(out).bytes_per_mask:.0f} bytes/mask"
          + ("" if args.parser else " (random init: near-uniform masks)"))
    return {"forward": fwd, "precompute": pre, "end_to_end": n_build / wall, "ratio": pre / f}


def run(args: argparse.Namespace, tmp: Path) -> None:
    rec = (Path(args.rec) if args.rec
           else synth.write_rec(tmp / "rec", args.ids, args.per_id, seed=0))
    with np.load(rec / "gt_masks.npz") as z:
        keys, masks = z["keys"], z["masks"]
    build_rec = tile_rec(rec, tmp / "tiled", args.images) if args.images else rec
    print(f"rec {rec}: {len(keys)} images; machine: {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}, torch {torch.__version__} with {args.threads} thread(s)\n")
    figures = {} if args.build_only else cache_section(args, rec, keys, masks, tmp)
    figures.update(build_section(args, build_rec, args.images or len(keys), tmp))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    sys.exit(main())
