"""Parser cost side by side: parameters, GFLOP per 112x112 face, forward-only images/s,
per feature_scale.

    python benchmarks/parser.py --threads 2 --batch-size 32 --scales 1 2 4
    python benchmarks/parser.py --device cuda --precision bf16 --batch-size 512 --scales 1 2 4
                                # GPU, channels_last

Forward-only = normalise + network + argmax on a uint8 batch already on the device
(``fse_plugin.parsing.forward_throughput``), the ceiling that ``fse cache build`` is measured
against. Ratios are relative to the first scale listed, all measured in this one run. ``img/CPU-s``
divides by the process's CPU time (all threads), which other jobs on a shared machine distort far
less than wall time.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from fse_plugin.parsing import UNetRes18, forward_throughput


def gflop_per_image(model: torch.nn.Module, size: int = 112) -> float:
    """Forward FLOPs (multiply and add counted separately) of one face,
    counted by torch's FlopCounterMode."""
    x = torch.zeros(1, model.in_channels, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops() / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                    help="autocast of the forward")
    ap.add_argument("--amp", dest="precision", action="store_const", const="bf16",
                    help="earlier spelling of --precision bf16")
    ap.add_argument("--iters", type=int, default=3,
                    help="timed batches per scale (after one warm-up batch)")
    ap.add_argument("--size", type=int, default=112)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for fs in args.scales:
        torch.manual_seed(0)
        model = UNetRes18(feature_scale=fs)
        params = sum(p.numel() for p in model.parameters())
        gflop = gflop_per_image(model, args.size)
        cpu0 = time.process_time()
        ips = forward_throughput(model, args.batch_size, args.device, args.precision,
                                 iters=args.iters, size=args.size)
        # images per CPU-second (all threads; warm-up batch included):
        # robust to other jobs on a shared machine
        ipc = args.batch_size * (args.iters + 1) / (time.process_time() - cpu0)
        rows.append((fs, params, gflop, ips, ipc))
        del model

    base = rows[0]
    print(f"parser forward-only, {args.size}x{args.size}, batch {args.batch_size}, "
          f"device {args.device} {args.precision}, {args.threads} CPU threads; "
          f"ratios vs feature_scale {base[0]}")
    print(f"{'scale':>5} {'params (M)':>11} {'GFLOP/img':>10} {'img/s':>9} {'img/CPU-s':>10} "
          f"{'params x':>9} {'GFLOP x':>8} {'speed x':>8} {'CPU-speed x':>11}")
    for fs, params, gflop, ips, ipc in rows:
        print(f"{fs:>5} {params / 1e6:>11.2f} {gflop:>10.2f} {ips:>9.1f} {ipc:>10.1f} "
              f"{params / base[1]:>9.3f} {gflop / base[2]:>8.3f} {ips / base[3]:>8.2f} "
              f"{ipc / base[4]:>11.2f}")


if __name__ == "__main__":
    main()
