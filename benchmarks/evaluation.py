"""Evaluation speed, measured side by side in one run and printed as ratios.

1. The .bin protocol on LFW-sized embeddings (6,000 pairs, 512-d): ``evaluate_embeddings`` (sorted-search
   counts) vs upstream ``eval/verification.py`` ``evaluate`` (a Python loop per threshold), results checked
   equal. Needs ARCFACE_TORCH_DIR (upstream is imported with a stub mxnet, its VAL interpolation patched
   to ours because scipy's raises, insightface #2152).
2. IJB template aggregation: ``template_features`` (one sort) vs upstream ``image2template_feature`` (a
   scan of all images per template) on an IJB-C-shaped set scaled by --ijb-scale; results checked equal.
3. ``embed`` throughput (images/s, flip included) of the built-in tiny backbone vs a bare loop that feeds
   pre-normalised tensors to the model: the cost of the loader, normalisation and bookkeeping.

    python benchmarks/evaluation.py [--ijb-scale 0.05] [--images 512] [--threads 1]
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import sys
import time
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import sklearn.preprocessing
import torch

from fse_plugin import evaluation as ev
from fse_plugin.common import to_input
from fse_plugin.backbone import iresnet_tiny


def timed(fn, *args, repeat: int = 1):
    """(best wall s, CPU s of that run, result): CPU time is what a busy shared machine distorts least."""
    best, cpu, out = float("inf"), 0.0, None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args)
        if time.perf_counter() - t0 < best:
            best, cpu = time.perf_counter() - t0, time.process_time() - c0
    return best, cpu, out


def upstream_modules(root: Path):
    stub = types.ModuleType("mxnet")
    stub.ndarray = types.ModuleType("mxnet.ndarray")
    sys.modules.setdefault("mxnet", stub)
    sys.modules.setdefault("mxnet.ndarray", stub.ndarray)
    spec = importlib.util.spec_from_file_location("upstream_verification", root / "eval" / "verification.py")
    ver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ver)
    ver.interpolate = SimpleNamespace(
        interp1d=lambda x, y, kind: (lambda t: ev.far_threshold(np.asarray(x), np.asarray(y), float(t))))
    tree = ast.parse((root / "eval_ijbc.py").read_text())
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "image2template_feature"]
    ns = {"np": np, "sklearn": sklearn}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "eval_ijbc.py", "exec"), ns)
    return ver, ns["image2template_feature"]


def protocol(upstream, rng: np.random.Generator) -> None:
    n_pairs, dim = 6000, 512
    issame = np.arange(n_pairs) % 2 == 0
    base = rng.normal(size=(2 * n_pairs, dim))
    base[1::2][issame] = base[0::2][issame]
    views = np.stack([base + 5.0 * rng.normal(size=base.shape) for _ in range(2)]).astype(np.float32)
    t_ours, c_ours, ours = timed(ev.evaluate_embeddings, views, issame, repeat=3)
    print(f"[protocol] 6000 pairs: evaluate_embeddings {t_ours:.3f} s (CPU {c_ours:.3f} s; acc {ours.accuracy:.5f}, "
          f"VAL {ours.val:.5f})")
    if upstream is None:
        print("[protocol] upstream: set ARCFACE_TORCH_DIR to compare")
        return
    t_up, c_up, (_, _, acc, val, val_std, far) = timed(upstream.evaluate, ev.fuse_views(views), issame.tolist())
    same = (np.mean(acc), np.std(acc), val, val_std, far) == (ours.accuracy, ours.accuracy_std, ours.val, ours.val_std,
                                                                ours.far)
    print(f"[protocol] upstream evaluate {t_up:.3f} s (CPU {c_up:.3f} s) -> x{t_up / t_ours:.1f} faster "
          f"(CPU x{c_up / c_ours:.1f}), results identical: {same}")


def ijb(upstream_i2t, rng: np.random.Generator, scale: float) -> None:
    n_images, n_templates, n_media = int(469375 * scale), int(23124 * scale), int(140000 * scale)
    feats = rng.normal(size=(n_images, 512)).astype(np.float32)
    templates = rng.integers(1, n_templates + 1, n_images)
    medias = rng.integers(1, n_media + 1, n_images)
    t_ours, c_ours, (mine, _) = timed(ev.template_features, feats, templates, medias)
    print(f"[ijb] {n_images} images, {len(np.unique(templates))} templates: template_features {t_ours:.2f} s "
          f"(CPU {c_ours:.2f} s)")
    if upstream_i2t is None:
        print("[ijb] upstream: set ARCFACE_TORCH_DIR to compare")
        return
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        t_up, c_up, (theirs, _) = timed(upstream_i2t, feats, templates, medias)
    print(f"[ijb] upstream image2template_feature {t_up:.2f} s (CPU {c_up:.2f} s) -> x{t_up / t_ours:.1f} faster "
          f"(CPU x{c_up / c_ours:.1f}), bitwise equal: {np.array_equal(mine, theirs)}")


def throughput(n_images: int, batch_size: int, rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    model = iresnet_tiny().eval()
    images = rng.integers(0, 256, (n_images, 112, 112, 3), dtype=np.uint8)
    ev.embed(model, images[:batch_size], batch_size, progress=False)  # warm-up
    t_embed, c_embed, _ = timed(lambda: ev.embed(model, images, batch_size, progress=False))
    x = to_input(images)

    @torch.no_grad()
    def bare():
        for s in range(0, n_images, batch_size):
            b = x[s:s + batch_size]
            model(b), model(torch.flip(b, dims=[3]))

    t_bare, c_bare, _ = timed(bare)
    print(f"[embed] iresnet_tiny CPU, {n_images} images x2 views, batch {batch_size}: embed {n_images / t_embed:.0f} "
          f"img/s ({n_images / c_embed:.0f} per CPU s), bare model loop {n_images / t_bare:.0f} img/s "
          f"({n_images / c_bare:.0f} per CPU s) -> overhead x{t_embed / t_bare:.2f} (CPU x{c_embed / c_bare:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ijb-scale", type=float, default=0.05, help="fraction of IJB-C's 469k images / 23k templates")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = os.environ.get("ARCFACE_TORCH_DIR")
    ver, i2t = upstream_modules(Path(root)) if root else (None, None)
    rng = np.random.default_rng(0)
    protocol(ver, rng)
    ijb(i2t, rng, args.ijb_scale)
    throughput(args.images, args.batch_size, rng)


if __name__ == "__main__":
    main()
