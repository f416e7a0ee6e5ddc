"""FS-CAM images/s against the model's plain batched forward (same run), and every CAM method's cost
per image.

    python benchmarks/cam.py --threads 2 --images 64 --method-images 4 --rise-n 500
    python benchmarks/cam.py --threads 2 --images 64 --methods fscam --head-classes 93431
    python benchmarks/cam.py --device cuda --precision bf16 --network r50 --arcface-dir DIR --images 1024 \
        --batch-size 520

Goal: FS-CAM images/s >= 0.9 x (forward images/s / 26), 26 = the reference's 1 + 25 forwards per
image. Faces are synthetic aligned 112x112 with exact masks (fse_plugin.synth), explained as
verification pairs (target = cosine to the partner's clean embedding, computed once beforehand and
not timed; its cost is one forward per image), or with --head-classes on the identity logits of a
random classifier head (the reference target). Forwards/backwards per image are counted with hooks
on the model. Random weights: costs do not depend on them.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fse_plugin import cam, synth
from fse_plugin.backbone import load_backbone


def faces(n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """2 * n_pairs aligned faces (a-sides then b-sides, two looks of one identity) and masks."""
    rng = np.random.default_rng(seed)
    ids = synth.make_identities(n_pairs, seed)
    a = [synth.render_aligned(i, rng) for i in ids]
    b = [synth.render_aligned(i, rng) for i in ids]
    return np.stack([r[0] for r in a + b]), np.stack([r[1] for r in a + b])


class Counter:
    """Images through the model's forward, and images whose output was backpropagated."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.forward = self.backward = 0
        self.handles = [model.register_forward_pre_hook(self._pre),
                        model.register_forward_hook(self._post)]

    def _pre(self, module, inputs) -> None:
        self.forward += inputs[0].shape[0]

    def _post(self, module, inputs, out) -> None:
        if out.requires_grad:
            out.register_hook(self._grad)

    def _grad(self, grad: torch.Tensor) -> None:
        self.backward += grad.shape[0]

    def reset(self) -> None:
        self.forward = self.backward = 0


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> np.ndarray:
    """(wall, process CPU) seconds: CPU time is less inflated by other jobs on a shared machine."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return np.array([time.perf_counter() - t0, time.process_time() - c0])


def forward_vs_fscam(model: torch.nn.Module, x: torch.Tensor, masks: np.ndarray, target: cam.Target,
                     args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """(forward, FS-CAM) images/s as [wall, CPU]: interleaved, best of ``args.reps`` (robust to
    other load)."""
    # the forward runs full batches of the same size FS-CAM uses (faces repeated to 2 batches at
    # least)
    xf = x.repeat(max(1, -(-2 * args.batch_size // len(x))),
                  1, 1, 1)[:max(len(x), 2 * args.batch_size)]
    # warm-up (cuDNN, allocator)
    cam.batched_forward(model, xf[:args.batch_size], args.batch_size, args.precision)
    cam.fs_cam(model, x[:8], masks[:8], target.take(slice(0, 8)), args.batch_size, args.precision)
    t_fwd, t_cam = [], []
    for _ in range(args.reps):
        t_fwd.append(timed(lambda: cam.batched_forward(model, xf, args.batch_size, args.precision), args.device)
                     / len(xf))
        t_cam.append(timed(lambda: cam.fs_cam(model, x, masks, target, args.batch_size, args.precision), args.device)
                     / len(x))
    return 1 / np.min(t_fwd, 0), 1 / np.min(t_cam, 0)


def method_costs(model: torch.nn.Module, x: torch.Tensor, masks: np.ndarray, target: cam.Target,
                 args: argparse.Namespace) -> None:
    """Print ms, forwards and backwards per face of every method (counted by hooks on the model)."""
    counter = Counter(model)
    n = min(args.method_images, len(x))
    xs, ms, ts = x[:n], torch.as_tensor(masks[:n]), target.take(slice(0, n))
    settings = cam.ExplainSettings(methods=args.methods, batch_size=args.batch_size,
                                   precision=args.precision)
    print(f"\ncost per image ({n} faces each; RISE with N={args.rise_n})")
    print(f"{'method':>13} {'ms/image':>10} {'forwards':>9} {'backwards':>10}")
    for method in settings.methods:
        cam_obj = None
        if method in cam.PIXEL_METHODS:
            opts = {"rise": {"n_masks": args.rise_n, "batch_size": args.batch_size,
                             "precision": args.precision},
                    "scorecam": {"batch_size": args.batch_size}}.get(method, {})
            cam_obj = cam.make_pixel_cam(method, model, None, **opts)

        def run(k: int, method: str = method, cam_obj=cam_obj):
            return cam.run_method(method, model, xs[:k], ms[:k], ts.take(slice(0, k)), settings,
                                  cam_obj)
        if method != "rise":
            run(1)  # warm-up: first-call costs (autograd, hooks, allocator) are not per-image costs
        counter.reset()
        sec = timed(lambda: run(n), args.device)[0]
        if cam_obj is not None:
            cam_obj.__exit__(None, None, None)
        print(f"{method:>13} {1000 * sec / n:>10.1f} {counter.forward / n:>9.1f} "
              f"{counter.backward / n:>10.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--network", default="tiny")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--arcface-dir", default=None)
    ap.add_argument("--head-classes", type=int, default=0,
                    help="explain identity logits of a random classifier head of N classes "
                         "(the reference target)")
    ap.add_argument("--images", type=int, default=64,
                    help="faces for the FS-CAM vs forward comparison")
    ap.add_argument("--method-images", type=int, default=4,
                    help="faces per method in the cost table")
    ap.add_argument("--methods", default=",".join(cam.METHODS))
    ap.add_argument("--batch-size", type=int, default=260)
    ap.add_argument("--rise-n", type=int, default=8000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                    help="autocast of the forwards (plain forward, FS-CAM, ablation, RISE)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = load_backbone(args.weights, args.network,
                          arcface_dir=args.arcface_dir).to(args.device).eval()
    images, masks = faces(args.images // 2, args.seed)
    x = cam.as_input(images).float().contiguous()
    p = len(x) // 2
    if args.head_classes:
        model = cam.IdentityLogits(model,
                                   torch.randn(args.head_classes, 512)).to(args.device).eval()
        target, what = cam.ClassTarget(), f"identity logits of a {args.head_classes:,}-class head"
    else:
        target = cam.pair_target(model, x[:p], x[p:], args.batch_size, args.precision)
        what = "pairs (cosine to partner)"
    present = float(np.mean([len(set(np.unique(m).tolist()) - {cam.IGNORE}) for m in masks]))

    fwd_ips, cam_ips = forward_vs_fscam(model, x, masks, target, args)
    ratio = cam_ips / (fwd_ips / 26)
    dev = args.device + ("" if args.precision == "fp32" else f" {args.precision}")
    print(f"network {args.network}, {len(x)} synthetic 112x112 faces ({present:.1f} regions "
          f"present on average), target {what}, batch {args.batch_size}, device {dev}, "
          f"{args.threads} CPU threads; best of {args.reps}")
    print(f"{'':14} {'images/s wall':>14} {'images/s CPU':>13}")
    print(f"{'plain forward':14} {fwd_ips[0]:>14.1f} {fwd_ips[1]:>13.1f}")
    print(f"{'FS-CAM':14} {cam_ips[0]:>14.1f} {cam_ips[1]:>13.1f}   {1 + present:.1f} "
          "forwards/image")
    print(f"FS-CAM / (forward / 26) = {ratio[0]:.2f} wall, {ratio[1]:.2f} CPU  (goal >= 0.90: "
          f"{'met' if ratio[0] >= 0.9 else 'NOT met'})")
    method_costs(model, x, masks, target, args)


if __name__ == "__main__":
    main()
