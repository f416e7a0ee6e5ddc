"""Mask cache benchmark: the codec choice, bytes and decode time per mask, precompute vs parser forward.

    python benchmarks/maskcache.py [--rec DIR] [--feature-scale 8] [--batch-size 32] [--device cpu]

1. Codec candidates on the synthetic ground-truth masks (``gt_masks.npz`` of a synth rec): bytes per
   mask, decode and encode microseconds per mask on one core (best of 3; wall and CPU time).
2. The cache itself (``fse precompute --from-labels``): bytes per mask on disk, ``MaskCache.get``
   microseconds per mask in random key order.
3. ``fse precompute`` throughput (decode in DataLoader workers, encode in a process, IO) against the
   parser's forward-only throughput (``parser.forward_throughput``) at the same batch size, measured
   forward / precompute / forward in this one run; ratio goal >= 0.8. A random-init parser is fine for
   throughput. On CUDA pass ``--device cuda`` (bf16 and channels_last are on; ``--gpu-decode`` for nvJPEG).
"""
from __future__ import annotations

import argparse
import bz2
import json
import lzma
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch

from fse_plugin import maskcache as mc
from fse_plugin import synth
from fse_plugin.parsing import UNetRes18, forward_throughput, load_parser, save_parser


# ---- codec candidates (measurement only; the cache uses mc.encode_masks / mc.decode_mask) ----
def _from_bytes(raw: bytes, shape) -> np.ndarray:
    return np.frombuffer(raw, np.uint8).reshape(shape).copy()


def _up_xor_enc(m):
    d = m.copy()
    d[1:] ^= m[:-1]
    return zlib.compress(d.tobytes(), 9)


def _up_xor_dec(b, shape):
    return np.bitwise_xor.accumulate(np.frombuffer(zlib.decompress(b), np.uint8).reshape(shape), axis=0)


def _nibble_enc(m):
    pal, inv = np.unique(m, return_inverse=True)
    if pal.size > 16:
        return b"\xff" + zlib.compress(m.tobytes(), 9)
    inv = inv.reshape(-1).astype(np.uint8)
    return bytes([pal.size]) + pal.tobytes() + zlib.compress(((inv[0::2] << 4) | inv[1::2]).tobytes(), 9)


def _nibble_dec(b, shape):
    k = b[0]
    if k == 255:
        return _from_bytes(zlib.decompress(b[1:]), shape)
    p = np.frombuffer(zlib.decompress(b[1 + k:]), np.uint8)
    out = np.empty(shape[0] * shape[1], np.uint8)
    out[0::2], out[1::2] = p >> 4, p & 15
    return np.frombuffer(b, np.uint8, k, 1)[out].reshape(shape)


def _rle16_enc(m):
    which, values, lengths = mc._runs(m[None])
    return zlib.compress(values.tobytes() + lengths.astype("<u2").tobytes(), 9)


def _rle16_dec(b, shape):
    r = zlib.decompress(b)
    n = len(r) // 3
    return np.repeat(np.frombuffer(r, np.uint8, n), np.frombuffer(r, "<u2", n, n)).reshape(shape)


_LZMA = [{"id": lzma.FILTER_LZMA2, "preset": 6}]
CANDIDATES = {
    "zlib-9 of raw": (lambda m: zlib.compress(m.tobytes(), 9), lambda b, s: _from_bytes(zlib.decompress(b), s)),
    "zlib-6 of raw": (lambda m: zlib.compress(m.tobytes(), 6), lambda b, s: _from_bytes(zlib.decompress(b), s)),
    "zlib-1 of raw": (lambda m: zlib.compress(m.tobytes(), 1), lambda b, s: _from_bytes(zlib.decompress(b), s)),
    "lzma of raw": (lambda m: lzma.compress(m.tobytes(), lzma.FORMAT_RAW, filters=_LZMA),
                    lambda b, s: _from_bytes(lzma.decompress(b, lzma.FORMAT_RAW, filters=_LZMA), s)),
    "bz2-9 of raw": (lambda m: bz2.compress(m.tobytes(), 9), lambda b, s: _from_bytes(bz2.decompress(b), s)),
    "PNG (cv2, level 9)": (lambda m: cv2.imencode(".png", m, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes(),
                           lambda b, s: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED)),
    "row XOR (PNG up) + zlib-9": (_up_xor_enc, _up_xor_dec),
    "4-bit palette + zlib-9": (_nibble_enc, _nibble_dec),
    "runs, u16 lengths + zlib-9": (_rle16_enc, _rle16_dec),
    "runs, u8 lengths + zlib-9 (chosen)": (lambda m: mc.encode_masks(m[None])[0], lambda b, s: mc.decode_mask(b, *s)),
}


def ragged(masks: np.ndarray, p: float, seed: int = 0) -> np.ndarray:
    """Parser-like boundary noise: each pixel on a class boundary takes its neighbour's label with probability p."""
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
        rows.append({"codec": name, "bytes": float(np.mean([len(b) for b in blobs])), "decode_us": d_wall,
                     "decode_us_cpu": d_cpu, "encode_us": e_wall, "encode_us_cpu": e_cpu})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rec", default=None, help="synth rec dir with gt_masks.npz (default: write one)")
    ap.add_argument("--ids", type=int, default=40, help="identities of the rec written when --rec is not given")
    ap.add_argument("--per-id", type=int, default=25)
    ap.add_argument("--codec-masks", type=int, default=500, help="masks the codec candidates are compared on")
    ap.add_argument("--parser", default=None, help="parser checkpoint (default: random init of --feature-scale)")
    ap.add_argument("--feature-scale", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the inference process")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader decode workers")
    ap.add_argument("--encode-workers", type=int, default=1)
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--gpu-decode", action="store_true")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="fse_maskcache_bench_") as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> None:
    rec = Path(args.rec) if args.rec else synth.write_rec(tmp / "rec", args.ids, args.per_id, seed=0)
    with np.load(rec / "gt_masks.npz") as z:
        keys, masks = z["keys"], z["masks"]
    print(f"rec {rec}: {len(keys)} images; machine: {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}, torch {torch.__version__} with {args.threads} thread(s)\n")

    table = codec_table(masks[:args.codec_masks])
    print(f"codec candidates on {min(len(masks), args.codec_masks)} ground-truth masks, one core:")
    print("| codec | bytes/mask | decode us/mask (wall / CPU) | encode us/mask (wall / CPU) |")
    print("|---|---:|---:|---:|")
    for r in table:
        print(f"| {r['codec']} | {r['bytes']:.0f} | {r['decode_us']:.1f} / {r['decode_us_cpu']:.1f} "
              f"| {r['encode_us']:.0f} / {r['encode_us_cpu']:.0f} |")

    labels = mc.build_from_labels(rec, keys, masks, tmp / "labels_cache", progress=False)
    cache = mc.MaskCache(labels)
    order = np.random.default_rng(0).permutation(cache.keys).tolist()
    get_wall, get_cpu = _best_of(lambda: [cache.get(k) for k in order], len(order))
    print(f"\ncache of the ground-truth masks: {cache.bytes_per_mask:.0f} bytes/mask on disk "
          f"(raw {masks[0].size}); MaskCache.get {get_wall:.1f} us/mask wall, {get_cpu:.1f} us CPU (random order)")
    for p in (0.2, 0.5):
        noisy = ragged(masks[:args.codec_masks], p)
        print(f"with parser-like boundary noise (p={p}, {(noisy != masks[:len(noisy)]).mean():.1%} of pixels "
              f"changed): {np.mean([len(b) for b in mc.encode_masks(noisy)]):.0f} bytes/mask")
    chosen = table[-1]
    print(f"one encode process keeps up with {1e6 / chosen['encode_us_cpu']:.0f} masks/s of real masks "
          f"(CPU time; {1e6 / chosen['encode_us']:.0f} wall here)")

    torch.manual_seed(0)
    ckpt = args.parser or save_parser(UNetRes18(feature_scale=args.feature_scale), tmp / "parser.pt")
    model = load_parser(ckpt)
    amp = (args.device.startswith("cuda")) if args.amp is None else args.amp
    iters = max(3, min(20, len(keys) // args.batch_size))
    fwd = [forward_throughput(model, args.batch_size, args.device, amp, iters=iters)]
    t0 = time.perf_counter()
    out = mc.precompute(rec, ckpt, tmp / "parser_cache", batch_size=args.batch_size, device=args.device,
                        num_workers=args.workers, chunk_size=args.chunk_size, encode_workers=args.encode_workers,
                        amp=amp, gpu_decode=args.gpu_decode, progress=False)
    wall = time.perf_counter() - t0
    fwd.append(forward_throughput(model, args.batch_size, args.device, amp, iters=iters))
    info = json.loads((out / mc.BUILD_INFO).read_text())
    pre = info["masks_per_s_rank0"]
    f = float(np.mean(fwd))
    print(f"\nparser feature_scale {model.feature_scale}, batch {args.batch_size}, {args.device}, amp {amp}, "
          f"{args.workers} decode worker(s), {args.encode_workers} encode process(es):")
    print(f"  forward only        {fwd[0]:.1f} / {fwd[1]:.1f} images/s (before / after)")
    print(f"  precompute          {pre:.1f} masks/s (inference loop), {len(keys) / wall:.1f} masks/s end to end "
          f"incl. fingerprint, model load, workers start, merge ({wall:.1f} s)")
    print(f"  ratio precompute / forward = {pre / f:.2f} (goal >= 0.8); this parser's cache: "
          f"{mc.MaskCache(out).bytes_per_mask:.0f} bytes/mask" + ("" if args.parser else " (random init: near-uniform masks)"))
    if args.json:
        Path(args.json).write_text(json.dumps({"codecs": table, "cache_bytes_per_mask": cache.bytes_per_mask,
                                               "get_us": get_wall, "get_us_cpu": get_cpu, "forward": fwd,
                                               "precompute": pre, "end_to_end": len(keys) / wall,
                                               "ratio": pre / f}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
