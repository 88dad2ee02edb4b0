#!/usr/bin/env python3
"""Writes the expected encoder features that Tests/OpacityPluginTests/ParityTests.swift checks.

For each encoder, builds the reference implementation with a 3-channel stem and its
ImageNet classifier (random init, never pretrained weights), overwrites every parameter
and batch-norm statistic with the formula in filler.py, runs it in eval mode on the
formula-defined input repeated to 3 channels (the paper's `torch.cat([x, x, x], 1)`),
and writes the statistics and a few slices of C2..C5 (and the classifier logits) to
Tests/OpacityPluginTests/Fixtures/parity/<encoder>.json.

The reference runs in float64, so the expected values carry no float32 rounding; the
float32 run's distance from it is written too, as a measure of what float32 alone costs.

    /work/venv/bin/python scripts/parity/reference.py            # all encoders
    /work/venv/bin/python scripts/parity/reference.py dpn92 xception
    /work/venv/bin/python scripts/parity/reference.py --names seresnext50_32x4d   # state names

References (pip: torch, timm, pretrainedmodels, six):
- resnet34/50/101: timm `resnet34`/`resnet50`/`resnet101`.
- seresnext50_32x4d/seresnext101_32x4d: timm `legacy_seresnext*_32x4d`, cross-checked against
  pretrainedmodels `se_resnext*_32x4d` (same names and architecture).
- xception: timm `legacy_xception` made "aligned" as the paper's AlignedXception: conv1 and
  conv2 get padding 1, so C2..C5 sit at exactly 1/4..1/32 of the input. Features are the
  raw outputs of block1, block2 and block11 and of bn4 (before its ReLU), as the paper's
  encoder returns them.
- dpn92: timm `dpn92`, cross-checked against pretrainedmodels `dpn92` (which the paper used);
  C2..C4 are the outputs of conv2_3, conv3_4 and conv4_20 (residual and dense paths
  concatenated), C5 the output of conv5_bn_ac (batch norm and ReLU; timm's `fc_act_layer='elu'`
  argument does not reach that layer, so timm, pretrainedmodels and MXNet agree).
- nasnetamobile: pretrainedmodels `nasnetamobile` (timm lacks it); C2..C5 are the outputs of
  cell_stem_0, cell_3, cell_9 and cell_15. Logits: ReLU, global average pool, last_linear
  (the reference's fixed 7x7 pool only fits 224-pixel inputs).
"""
import argparse
import json
import os
import platform
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import filler  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "Tests", "OpacityPluginTests", "Fixtures", "parity")
SAMPLES = 48


# MARK: - Reference models and their C2..C5 taps

def resnet(depth):
    import timm

    def build():
        return timm.create_model(f"resnet{depth}", pretrained=False, num_classes=1000)

    def taps(m, x):
        x = m.maxpool(m.act1(m.bn1(m.conv1(x))))
        c2 = m.layer1(x)
        c3 = m.layer2(c2)
        c4 = m.layer3(c3)
        c5 = m.layer4(c4)
        return [c2, c3, c4, c5], None

    return build, taps


def seresnext(depth, cadene=False):
    def build():
        if cadene:
            import pretrainedmodels
            return getattr(pretrainedmodels, f"se_resnext{depth}_32x4d")(num_classes=1000, pretrained=None)
        import timm
        return timm.create_model(f"legacy_seresnext{depth}_32x4d", pretrained=False, num_classes=1000)

    def taps(m, x):
        x = m.layer0(x)  # Cadene's layer0 ends with the pool; timm's legacy copy has it apart
        if hasattr(m, "pool0"):
            x = m.pool0(x)
        c2 = m.layer1(x)
        c3 = m.layer2(c2)
        c4 = m.layer3(c3)
        c5 = m.layer4(c4)
        return [c2, c3, c4, c5], m.last_linear(c5.mean((2, 3)))

    return build, taps


def align_xception(m):
    """The paper's AlignedXception from timm's legacy_xception `m` (or its features_only body):
    padding 1 on both stem convolutions, so C2..C5 sit at exactly 1/4..1/32 of the input."""
    m.conv1.padding = (1, 1)
    m.conv2.padding = (1, 1)
    return m


def xception():
    import timm

    def build():
        return align_xception(timm.create_model("legacy_xception", pretrained=False, num_classes=1000))

    def taps(m, x):
        x = m.act1(m.bn1(m.conv1(x)))
        x = m.act2(m.bn2(m.conv2(x)))
        c2 = m.block1(x)
        c3 = m.block2(c2)
        x = c3
        for i in range(3, 12):
            x = getattr(m, f"block{i}")(x)
        c4 = x
        x = m.block12(c4)
        x = m.act3(m.bn3(m.conv3(x)))
        c5 = m.bn4(m.conv4(x))
        return [c2, c3, c4, c5], m.fc(F.relu(c5).mean((2, 3)))

    return build, taps


def dpn92(cadene=False):
    def build():
        if cadene:
            import pretrainedmodels
            return pretrainedmodels.dpn92(num_classes=1000, pretrained=None)
        import timm
        m = timm.create_model("dpn92", pretrained=False, num_classes=1000)
        assert isinstance(m.features.conv5_bn_ac.bn.act, nn.ReLU), "timm's dpn92 changed its final activation"
        return m

    def taps(m, x):
        want = {"conv2_3": 0, "conv3_4": 1, "conv4_20": 2, "conv5_bn_ac": 3}
        out = [None] * 4
        for name, mod in m.features.named_children():
            x = mod(x)
            if name in want:
                out[want[name]] = torch.cat(x, 1) if isinstance(x, tuple) else x
        head = m.last_linear if cadene else m.classifier
        return out, head(out[3].mean((2, 3), keepdim=True)).flatten(1)

    return build, taps


def nasnet_cells(e, x):
    """C2..C5 of pretrainedmodels' NASNetAMobile `e`: the outputs of cell_stem_0, cell_3, cell_9
    and cell_15 (strides 4, 8, 16, 32; 44, 264, 528 and 1056 channels)."""
    x_conv0 = e.conv0(x)
    x_stem_0 = e.cell_stem_0(x_conv0)
    x_stem_1 = e.cell_stem_1(x_conv0, x_stem_0)
    c0 = e.cell_0(x_stem_1, x_stem_0)
    c1 = e.cell_1(c0, x_stem_1)
    c2 = e.cell_2(c1, c0)
    c3 = e.cell_3(c2, c1)
    r0 = e.reduction_cell_0(c3, c2)
    c6 = e.cell_6(r0, c3)
    c7 = e.cell_7(c6, r0)
    c8 = e.cell_8(c7, c6)
    c9 = e.cell_9(c8, c7)
    r1 = e.reduction_cell_1(c9, c8)
    c12 = e.cell_12(r1, c9)
    c13 = e.cell_13(c12, r1)
    c14 = e.cell_14(c13, c12)
    c15 = e.cell_15(c14, c13)
    return [x_stem_0, c3, c9, c15]


def nasnetamobile():
    def build():
        from pretrainedmodels.models import nasnet_mobile
        return nasnet_mobile.NASNetAMobile(num_classes=1000)

    def taps(e, x):
        c = nasnet_cells(e, x)
        return c, e.last_linear(F.relu(c[3]).mean((2, 3)))

    return build, taps


# name -> (config string, reference, stem weight, input [N, 1, H, W], model, cross-check model)
ENCODERS = {
    "resnet34": ("resnet34", "timm resnet34", "conv1.weight", [2, 1, 80, 80], resnet(34), None),
    "resnet50": ("resnet50", "timm resnet50", "conv1.weight", [2, 1, 64, 64], resnet(50), None),
    "resnet101": ("resnet101", "timm resnet101", "conv1.weight", [2, 1, 64, 64], resnet(101), None),
    "seresnext50_32x4d": ("seresnext50_32x4d", "timm legacy_seresnext50_32x4d", "layer0.conv1.weight",
                          [2, 1, 80, 80], seresnext(50), ("pretrainedmodels se_resnext50_32x4d", seresnext(50, True))),
    "seresnext101_32x4d": ("seresnext101_32x4d", "timm legacy_seresnext101_32x4d", "layer0.conv1.weight",
                           [2, 1, 64, 64], seresnext(101), ("pretrainedmodels se_resnext101_32x4d", seresnext(101, True))),
    "xception": ("xception", "timm legacy_xception with conv1 and conv2 padding 1 (the paper's AlignedXception)",
                 "conv1.weight", [2, 1, 80, 80], xception(), None),
    "dpn92": ("dpn92", "timm dpn92", "features.conv1_1.conv.weight", [2, 1, 64, 64], dpn92(),
              ("pretrainedmodels dpn92 (features only: its classifier is called last_linear)", dpn92(True))),
    "nasnetamobile": ("nasnetamobile", "pretrainedmodels nasnetamobile (NASNetAMobile, 1000 classes)",
                      "conv0.conv.weight", [2, 1, 96, 96], nasnetamobile(), None),
}


# MARK: - Running and writing

def state_lines(model):
    """`name:d0xd1x...` for every tensor the filler sets, sorted by name (bytes)."""
    lines = [f"{k}:{'x'.join(str(d) for d in v.shape)}" for k, v in model.state_dict().items()
             if filler.values(k, (1,)) is not None]
    return sorted(lines, key=lambda s: s.encode("utf-8"))


def run(build, taps, shape, dtype):
    torch.manual_seed(0)
    m = build()
    filler.fill(m)
    m = m.to(dtype).eval()
    x = torch.from_numpy(filler.image(shape)).to(dtype).repeat(1, 3, 1, 1)
    with torch.no_grad():
        feats, logits = taps(m, x)
    return m, feats, logits


def describe(t, with_slice=True):
    a = t.detach().to(torch.float64).numpy()
    flat = a.reshape(-1)
    idx = [int((k * 0x9E3779B1 + 12345) % flat.size) for k in range(SAMPLES)]
    d = {
        "shape": list(a.shape),
        "mean": float(flat.mean()),
        "std": float(flat.std()),
        "rms": float(np.sqrt((flat * flat).mean())),
        "min": float(flat.min()),
        "max": float(flat.max()),
        "samples": {"indices": idx, "values": [float(flat[i]) for i in idx]},
    }
    if with_slice and a.ndim == 4:
        s = a[:, :4, :4, :4]
        d["slice"] = {"shape": list(s.shape), "values": [float(v) for v in s.reshape(-1)]}
    return d


def compact_json(obj, digits=10):
    """Indented JSON with every list of numbers on one line and `digits` significant digits."""
    import re

    def r(o):
        if isinstance(o, float):
            return float(f"{o:.{digits}g}")
        if isinstance(o, dict):
            return {k: r(v) for k, v in o.items()}
        if isinstance(o, list):
            return [r(v) for v in o]
        return o

    text = json.dumps(r(obj), indent=1)
    return re.sub(r"\[\s*([-0-9.e+,\s]*?)\s*\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)


def rel(a, b):
    """max |a - b| / rms(b)."""
    a, b = a.detach().to(torch.float64), b.detach().to(torch.float64)
    return float((a - b).abs().max() / b.pow(2).mean().sqrt())


def write_filler_check(out):
    """filler.json: a few filled tensors, exact as float32, to check the Swift twin bit for bit."""
    tensors = [("layer1.0.conv2.weight", [3, 2, 3, 3]), ("fc.weight", [4, 5]), ("layer1.0.bn1.weight", [6]),
               ("layer1.0.bn1.bias", [6]), ("P6.bias", [3]), ("layer1.0.bn1.running_mean", [6]),
               ("layer1.0.bn1.running_var", [6]), ("conv0.conv.weight", [2, 3, 3, 3])]
    fx = {
        "generator": "scripts/parity/reference.py",
        "tensors": [{"name": n, "shape": sh, "values": [float(v) for v in filler.values(n, tuple(sh)).reshape(-1)]}
                    for n, sh in tensors],
        "input": {"shape": [1, 1, 3, 4], "values": [float(v) for v in filler.image((1, 1, 3, 4)).reshape(-1)]},
        "fnv1a64": {"text": "conv1.weight:64x3x7x7\nfc.bias:1000", "value": f"{filler.fnv1a64('conv1.weight:64x3x7x7' + chr(10) + 'fc.bias:1000'):016x}"},
    }
    # float32 values: 9 significant digits round-trip exactly.
    text = json.dumps(fx, indent=1)
    with open(os.path.join(out, "filler.json"), "w") as f:
        f.write(compact_json(json.loads(text), digits=9) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("encoders", nargs="*", help=f"any of {', '.join(ENCODERS)} (default: all)")
    ap.add_argument("--out", default=OUT, help="fixture directory")
    ap.add_argument("--names", action="store_true", help="print the reference state names and shapes, write nothing")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import timm

    names = args.encoders or list(ENCODERS)
    os.makedirs(args.out, exist_ok=True)
    if not args.encoders and not args.names:
        write_filler_check(args.out)
    for key in names:
        config, ref, stem, shape, (build, taps), cross = ENCODERS[key]
        if args.names:
            print("\n".join(state_lines(build())))
            continue
        m64, f64, l64 = run(build, taps, shape, torch.float64)
        _, f32, l32 = run(build, taps, shape, torch.float32)
        lines = state_lines(m64)
        fx = {
            "config": config,
            "reference": ref,
            "versions": {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()},
            "generator": "scripts/parity/reference.py (weights and input: scripts/parity/filler.py)",
            "stem": stem,
            "input": shape,
            "parameters": sum(p.numel() for p in m64.parameters()),
            "state": {"tensors": len(lines), "fnv1a64": f"{filler.fnv1a64(chr(10).join(lines)):016x}"},
            "float32_reference_error": max(rel(a, b) for a, b in zip(f32, f64)),
            "features": [describe(t) for t in f64],
        }
        if l64 is not None:
            fx["logits"] = describe(l64, with_slice=False)
        if cross is not None:
            cname, (cbuild, ctaps) = cross
            _, fc, _ = run(cbuild, ctaps, shape, torch.float64)
            err = max(rel(a, b) for a, b in zip(fc, f64))
            fx["cross_check"] = {"reference": cname, "max_relative_difference": err}
            if err > 1e-9:
                sys.exit(f"{key}: {cname} differs from {ref} by {err}")
        path = os.path.join(args.out, f"{key}.json")
        with open(path, "w") as f:
            f.write(compact_json(fx) + "\n")
        print(f"{key}: {[tuple(t.shape) for t in f64]} params {fx['parameters']:,} "
              f"float32 error {fx['float32_reference_error']:.2e} -> {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
