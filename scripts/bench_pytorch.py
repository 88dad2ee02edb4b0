#!/usr/bin/env python3
"""PyTorch reference figures for opacity-bench.

Measures, with torch on the CPU and a fixed thread count, the same ResNet-50 network
that `opacity-bench resnet50` builds from Opacity's ResNet plugin (torchvision/timm layout: 7x7
stem, 3x3 max pool, bottlenecks [3, 4, 6, 3] with the stride on the 3x3 convolution,
batch norm in eval mode, global average pool, 1000-way linear), plus each distinct
convolution of that network at batch 1, and a 2048 sgemm. Writes JSON that opacity-bench
reads to print our-time / PyTorch-time ratios.

    python3 scripts/bench_pytorch.py --threads 2 --size 512 --batches 1,2 --out torch.json

Forward runs under torch.no_grad() (inference). Forward+backward runs with gradients for
all parameters but not for the input, loss = output.sum(), gradients reset (set to None)
before each timed step. Times are medians of --repeat runs after one warm-up run, on the
clock opacity-bench uses (--clock wall, the default, or cpu).
Needs only `torch` (pip install torch); the product never depends on it.
"""
import argparse
import json
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        s = x if self.downsample is None else self.downsample(x)
        return self.relu(y + s)


class ResNet50(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        layers = []
        for i, (count, planes) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512])):
            blocks = []
            for b in range(count):
                blocks.append(Bottleneck(inplanes, planes, 2 if (b == 0 and i > 0) else 1))
                inplanes = planes * 4
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(inplanes, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def conv_specs(size):
    """Every convolution of the network as (cin, cout, k, stride, pad, h, w), in order."""
    specs = [(3, 64, 7, 2, 3, size, size)]
    s = (size + 6 - 7) // 2 + 1
    s = (s + 2 - 3) // 2 + 1
    inplanes = 64
    for i, (count, planes) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512])):
        for b in range(count):
            stride = 2 if (b == 0 and i > 0) else 1
            after = (s + 2 - 3) // stride + 1
            specs += [(inplanes, planes, 1, 1, 0, s, s), (planes, planes, 3, stride, 1, s, s),
                      (planes, planes * 4, 1, 1, 0, after, after)]
            if b == 0:
                specs.append((inplanes, planes * 4, 1, stride, 0, s, s))
            inplanes = planes * 4
            s = after
    return specs


CLOCK = {"fn": time.perf_counter, "threads": 1}


def now():
    """Seconds on the selected clock: elapsed time, or process CPU time / threads."""
    return CLOCK["fn"]() / CLOCK["threads"]


def timed(fn, repeat, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = now()
        fn()
        times.append(now() - t)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, required=True, help="torch.set_num_threads (use opacity-bench's count)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-convs", action="store_true", help="skip the per-convolution timings")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: elapsed time; cpu: process CPU time / threads (as opacity-bench --clock cpu; "
                         "OpenMP threads that spin while waiting count as busy)")
    args = ap.parse_args()

    if args.clock == "cpu":
        CLOCK["fn"], CLOCK["threads"] = time.process_time, args.threads
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result = {
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "size": args.size,
        "repeat": args.repeat,
        "clock": args.clock,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "network": [],
        "convs": [],
    }

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    t = statistics.median(timed(lambda: a @ b, args.repeat))
    result["sgemm_2048_gflops"] = 2 * 2048 ** 3 / t * 1e-9

    model = ResNet50().eval()
    for batch in [int(x) for x in args.batches.split(",")]:
        x = torch.randn(batch, 3, args.size, args.size)

        def forward():
            with torch.no_grad():
                model(x)

        fwd = timed(forward, args.repeat)

        def step():
            model(x).sum().backward()

        times = []
        step()  # warm-up
        for _ in range(args.repeat):
            model.zero_grad(set_to_none=True)
            t0 = now()
            step()
            times.append(now() - t0)
        result["network"].append({"batch": batch, "forward_s": statistics.median(fwd),
                                  "forward_backward_s": statistics.median(times)})
        print(f"torch {torch.__version__}, {args.threads} threads, batch {batch}: forward "
              f"{statistics.median(fwd) * 1e3:.1f} ms, forward+backward {statistics.median(times) * 1e3:.1f} ms",
              file=sys.stderr)

    if not args.no_convs:
        seen = set()
        with torch.no_grad():
            for spec in conv_specs(args.size):
                if spec in seen:
                    continue
                seen.add(spec)
                cin, cout, k, stride, pad, h, w = spec
                conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False)
                x = torch.randn(1, cin, h, w)
                t = statistics.median(timed(lambda: conv(x), args.repeat))
                result["convs"].append({"in": cin, "out": cout, "kernel": k, "stride": stride, "padding": pad,
                                        "height": h, "width": w, "forward_s": t})

    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
