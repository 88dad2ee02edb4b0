#!/usr/bin/env python3
"""PyTorch's side of `opacity-bench grouped`: forward and forward+backward time of grouped
3x3 convolutions, one shape at a time, with the same thread count and clock.

    python scripts/bench_grouped_pytorch.py --threads 2 --batch 1 --repeat 7 \
        --shapes '[[128,128,32,1,64,64], ...]' --out figures.json

Each shape is [in_channels, out_channels, groups, stride, height, width] (3x3, padding 1,
no bias). Times are medians of --repeat runs after two warm-up runs; forward runs under
torch.no_grad(), forward+backward computes the input and weight gradients.

With --clock cpu, OpenMP's workers are told to sleep rather than spin while they wait
(OMP_WAIT_POLICY=PASSIVE, unless set already): on a shared machine spinning is billed as CPU
time and inflates PyTorch's figures several-fold (Documentation/Benchmarks.md).
"""
import argparse
import json
import os
import statistics
import sys
import time

if "cpu" in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--shapes", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.clock == "wall":
        def now():
            return time.perf_counter()
    else:
        def now():
            return time.process_time() / args.threads

    def timed(fn):
        for _ in range(2):
            fn()
        times = []
        for _ in range(args.repeat):
            t = now()
            fn()
            times.append(now() - t)
        return statistics.median(times)

    torch.manual_seed(0)
    results = []
    for cin, cout, groups, stride, h, w in json.loads(args.shapes):
        x = torch.rand(args.batch, cin, h, w) * 2 - 1
        conv = torch.nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)
        with torch.no_grad():
            fwd = timed(lambda: conv(x))
        xg = x.clone().requires_grad_(True)

        def both():
            conv.zero_grad(set_to_none=True)
            xg.grad = None
            conv(xg).sum().backward()

        results.append({"shape": [cin, cout, groups, stride, h, w], "forward_s": fwd, "forward_backward_s": timed(both)})
    with open(args.out, "w") as f:
        json.dump({"torch_version": torch.__version__, "threads": args.threads, "clock": args.clock, "results": results}, f)


if __name__ == "__main__":
    main()
