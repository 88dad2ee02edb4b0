#!/usr/bin/env python3
"""PyTorch reference for `opacity-bench detector`.

Builds the detector shape that `retinanet(encoder=E, ...)` builds in Opacity, with torch and
timm, and times the same work on the CPU with the same thread count:

- encoder: timm `features_only=True`, `in_chans=1`, the last four feature maps (strides 4, 8,
  16, 32 = C2..C5), random weights (pretrained=False). Xception is aligned as in Opacity
  (Documentation/Encoders.md): both stem convolutions get padding 1, so every map is
  ceil(size / stride) (timm's unpadded stem gives 125/63/32/16/8 at 256 px, which no anchor
  layout of the detector fits). nasnetamobile, which timm lacks, is Cadene's NASNetAMobile from
  the `pretrainedmodels` package (PyPI 0.7.4, what Opacity's port follows) with a one-channel
  stem, tapped at cell_stem_0, cell_3, cell_9 and cell_15 as in Opacity. Both are built by the
  code of the encoder parity tests' reference (scripts/parity/reference.py, imported; it needs
  numpy, which torch-venv.sh installs);
- neck: the paper's FPN (1x1 laterals, nearest 2x top-down, 3x3 smoothing per level; P6 a
  stride-2 3x3 convolution on C5, P7 a stride-2 3x3 convolution on ReLU(P6)), --levels, width
  --neck-channels;
- head: RetinaNet subnets shared across levels (four 3x3 convolutions with ReLU, width
  --head-channels, then a 3x3 output convolution; dropout before the classification output),
  9 anchors per location, 1 class; global classifier on C5 (2x2 max pool, 3x3 convolution,
  ReLU, concatenated average and max pool, dropout, linear to 3, log-softmax);
- loss: anchors of base size 2^(L+2) (ratios 0.5, 1, 2; scales 2^0, 2^1/3, 2^2/3), IoU matching
  (positive >= 0.5, negative < 0.4), sigmoid focal loss (alpha 0.25, gamma 2) over all
  non-ignored anchors / positives, smooth-L1 (beta 1/9) on positives, 0.1 x global NLL;
- post-processing: sigmoid scores above 0.025, box decoding, clipping, NMS at 0.05.

Forward: batch 1, eval mode, torch.no_grad(). Training step: batch 2 (two boxes on the first
image, none on the second), train mode: forward, loss, backward, clip_grad_norm_(0.05), Adam.
Times are medians of --repeat runs after one warm-up, per part; peak memory is the resident-set
high-water mark (VmHWM) of each phase after resetting it (/proc/self/clear_refs).

    python3 scripts/bench_detector_pytorch.py --encoder resnet34 --size 512 --threads 2 --out f.json

Exits with status 3 when the encoder has no reference here (or nasnetamobile without
`pretrainedmodels`). Needs torch and timm (scripts/torch-venv.sh installs them, and
pretrainedmodels; torchvision's compiled ops are not used); the product never depends on them.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# Opacity encoder name -> timm model name (Documentation/Encoders.md).
TIMM = {
    "resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50", "resnet101": "resnet101",
    "resnet152": "resnet152",
    "seresnext50_32x4d": "legacy_seresnext50_32x4d", "seresnext101_32x4d": "legacy_seresnext101_32x4d",
    "xception": "legacy_xception", "dpn92": "dpn92",
}


def parity_reference():
    """scripts/parity/reference.py, the encoder parity tests' reference: the NASNet and aligned
    Xception construction comes from there. Imported only once timm imports (main()), since
    importing it imports timm."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "parity"))
    import reference
    return reference


class NASNetMobileFeatures(nn.Module):
    """Cadene's NASNetAMobile (pretrainedmodels, built as the parity reference builds it) as an
    encoder: a one-channel stem, the outputs of cell_stem_0, cell_3, cell_9 and cell_15 (strides
    4, 8, 16, 32; 44, 264, 528, 1056 channels)."""

    def __init__(self):
        super().__init__()
        build, _ = parity_reference().nasnetamobile()
        m = build()
        m.conv0.conv = nn.Conv2d(1, m.conv0.conv.out_channels, 3, stride=2, padding=0, bias=False)
        del m.last_linear
        self.m = m
        self.channels = [44, 264, 528, 1056]

    def forward(self, x):
        return parity_reference().nasnet_cells(self.m, x)


class TimmFeatures(nn.Module):
    """A timm encoder with `features_only=True`: its stride 4, 8, 16 and 32 maps."""

    def __init__(self, timm, name):
        super().__init__()
        self.enc = timm.create_model(name, pretrained=False, features_only=True, in_chans=1)
        if name == "legacy_xception":
            # Aligned as Opacity's (and the paper's AlignedXception): padded stem convolutions.
            parity_reference().align_xception(self.enc.body)
        red, chs = self.enc.feature_info.reduction(), self.enc.feature_info.channels()
        self.idx = [red.index(r) for r in (4, 8, 16, 32)]
        self.channels = [chs[i] for i in self.idx]

    def forward(self, x):
        f = self.enc(x)
        return [f[i] for i in self.idx]


def check_anchors(cls, anc, encoder):
    if cls.shape[1] != anc.shape[0]:
        sys.exit(f"bench_detector_pytorch: the head of {encoder} predicts {cls.shape[1]} anchors, the layout for "
                 f"ceil(size / stride) maps has {anc.shape[0]}: the encoder's maps are not ceil(size / stride)")


class FPN(nn.Module):
    def __init__(self, cin, levels, ch):
        super().__init__()
        self.levels = levels
        lo, hi = levels
        self.lat = nn.ModuleDict({str(l): nn.Conv2d(cin[l - 2], ch, 1) for l in range(max(lo, 2), 6)})
        self.smooth = nn.ModuleDict({str(l): nn.Conv2d(ch, ch, 3, padding=1) for l in range(lo, min(hi, 5) + 1)})
        self.p6 = nn.Conv2d(cin[3], ch, 3, stride=2, padding=1) if hi >= 6 else None
        self.p7 = nn.Conv2d(ch, ch, 3, stride=2, padding=1) if hi >= 7 else None

    def forward(self, c):
        lo, hi = self.levels
        out, merged = {}, None
        for l in range(5, max(lo, 2) - 1, -1):
            m = self.lat[str(l)](c[l - 2])
            if merged is not None:
                up = F.interpolate(merged, scale_factor=2, mode="nearest")[:, :, : m.shape[2], : m.shape[3]]
                m = m + up
            merged = m
            if str(l) in self.smooth:
                out[l] = self.smooth[str(l)](m)
        if self.p6 is not None:
            x6 = self.p6(c[3])
            out[6] = x6
            if self.p7 is not None:
                out[7] = self.p7(F.relu(x6))
        return [out[l] for l in range(lo, hi + 1)]


class Subnet(nn.Module):
    def __init__(self, cin, ch, outputs, dropout):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(cin if i == 0 else ch, ch, 3, padding=1) for i in range(4)])
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.output = nn.Conv2d(ch, outputs, 3, padding=1)
        self.outputs = outputs

    def forward(self, x, per_anchor):
        for c in self.convs:
            x = F.relu(c(x))
        if self.dropout is not None:
            x = self.dropout(x)
        x = self.output(x)
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, per_anchor)


class GlobalClassifier(nn.Module):
    def __init__(self, cin, ch, dropout):
        super().__init__()
        self.conv = nn.Conv2d(cin, ch, 3)
        self.fc = nn.Linear(2 * ch, 3)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, c5):
        x = F.max_pool2d(c5, 2) if min(c5.shape[2:]) >= 2 else c5
        ph, pw = max(0, 3 - x.shape[2]), max(0, 3 - x.shape[3])
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        x = F.relu(self.conv(x))
        f = torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)
        if self.dropout is not None:
            f = self.dropout(f)
        return F.log_softmax(self.fc(f), 1)


class Head(nn.Module):
    def __init__(self, cin, ch, c5, dropout, global_dropout):
        super().__init__()
        self.reg = Subnet(cin, ch, 9 * 4, 0)
        self.cls = Subnet(cin, ch, 9 * 1, dropout)
        nn.init.constant_(self.cls.output.bias, -math.log((1 - 0.01) / 0.01))
        self.glob = GlobalClassifier(c5, ch, global_dropout) if global_dropout is not None else None

    def forward(self, pyramid, c5):
        cls = torch.cat([self.cls(p, 1) for p in pyramid], 1)
        reg = torch.cat([self.reg(p, 4) for p in pyramid], 1)
        return cls, reg, (self.glob(c5) if self.glob is not None else None)


def anchors(size, levels):
    out = []
    for l in range(levels[0], levels[1] + 1):
        stride, base = 2 ** l, 2 ** (l + 2)
        g = math.ceil(size / stride)
        b = []
        for r in (0.5, 1.0, 2.0):
            for s in (1.0, 2 ** (1 / 3), 2 ** (2 / 3)):
                side = base * s
                w, h = side / math.sqrt(r), side * math.sqrt(r)
                b.append((-w / 2, -h / 2, w / 2, h / 2))
        b = torch.tensor(b)
        c = (torch.arange(g, dtype=torch.float32) + 0.5) * stride
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        ctr = torch.stack([cx, cy, cx, cy], -1).reshape(-1, 1, 4)
        out.append((ctr + b.reshape(1, -1, 4)).reshape(-1, 4))
    return torch.cat(out)


def encode(boxes, a):
    aw, ah = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    acx, acy = a[:, 0] + 0.5 * aw, a[:, 1] + 0.5 * ah
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    bcx, bcy = boxes[:, 0] + 0.5 * bw, boxes[:, 1] + 0.5 * bh
    return torch.stack([(bcx - acx) / aw / 0.1, (bcy - acy) / ah / 0.1, torch.log(bw / aw) / 0.2, torch.log(bh / ah) / 0.2], 1)


def box_iou(a, b):
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    pt = p * targets + (1 - p) * (1 - targets)
    w = alpha * targets + (1 - alpha) * (1 - targets)
    return (w * ce * (1 - pt) ** gamma).sum()


def nms(boxes, scores, iou):
    order = scores.argsort(descending=True)
    keep = []
    while order.numel() > 0:
        i = order[0]
        keep.append(int(i))
        if order.numel() == 1:
            break
        o = box_iou(boxes[i : i + 1], boxes[order[1:]])[0]
        order = order[1:][o <= iou]
    return torch.tensor(keep, dtype=torch.long)


def loss(out, targets, classes, anc):
    cls, reg, glob = out
    total = 0
    for i, boxes in enumerate(targets):
        labels = torch.zeros(anc.shape[0])
        pos = torch.zeros(anc.shape[0], dtype=torch.bool)
        if len(boxes):
            iou = box_iou(anc, boxes)
            best, idx = iou.max(1)
            labels[(best >= 0.4) & (best < 0.5)] = -1
            pos = best >= 0.5
            labels[pos] = 1
        valid = labels >= 0
        fl = sigmoid_focal_loss(cls[i, valid, 0], labels[valid])
        total = total + fl / max(1, int(pos.sum()))
        if pos.any():
            t = encode(boxes[idx[pos]], anc[pos])
            total = total + F.smooth_l1_loss(reg[i, pos], t, beta=1 / 9, reduction="sum") / (4 * int(pos.sum()))
    total = total / len(targets)
    if glob is not None:
        total = total + 0.1 * F.nll_loss(glob, classes)
    return total


def postprocess(out, anc, size):
    cls, reg, _ = out
    result = []
    for i in range(cls.shape[0]):
        s = torch.sigmoid(cls[i, :, 0])
        keep = s > 0.025
        a, d, s = anc[keep], reg[i, keep], s[keep]
        aw, ah = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        cx, cy = a[:, 0] + 0.5 * aw + d[:, 0] * 0.1 * aw, a[:, 1] + 0.5 * ah + d[:, 1] * 0.1 * ah
        w, h = aw * torch.exp(d[:, 2] * 0.2), ah * torch.exp(d[:, 3] * 0.2)
        b = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).clamp(0, size)
        result.append(b[nms(b, s, 0.05)])
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", required=True)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--levels", default="2-7")
    ap.add_argument("--neck-channels", type=int, default=256)
    ap.add_argument("--head-channels", type=int, default=256)
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--global", dest="glob", type=int, default=1)
    ap.add_argument("--global-dropout", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--out", required=True)
    ap.add_argument("--freeze-bn", action="store_true",
                    help="train with frozen batch norm: BatchNorm2d modules in eval mode (running statistics), "
                         "their weight and bias still trained, as Opacity's --freeze-bn")
    a = ap.parse_args()
    # timm imports torchvision, whose compiled ops this script does not use (its IoU, focal
    # loss and NMS are written here); where they fail to load (a +cpu torch wheel with
    # torchvision from PyPI) their meta registrations would abort the import, so skip them.
    try:
        import torchvision  # noqa: F401
    except RuntimeError:
        import types
        for k in [k for k in sys.modules if k.startswith("torchvision")]:
            del sys.modules[k]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    import timm

    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    if a.encoder == "nasnetamobile":
        try:
            import pretrainedmodels  # noqa: F401
        except ImportError:
            print("bench_detector_pytorch: nasnetamobile needs the pretrainedmodels package "
                  "(pip install --no-deps pretrainedmodels==0.7.4 munch six tqdm; scripts/torch-venv.sh does)",
                  file=sys.stderr)
            sys.exit(3)
        name = "pretrainedmodels.nasnetamobile"
        enc = NASNetMobileFeatures()
    elif a.encoder in TIMM:
        name = TIMM[a.encoder]
        enc = TimmFeatures(timm, name)
    else:
        print(f"bench_detector_pytorch: encoder {a.encoder} has no reference here", file=sys.stderr)
        sys.exit(3)
    lo, hi = (int(v) for v in a.levels.split("-"))
    chs = enc.channels
    neck = FPN(chs, (lo, hi), a.neck_channels)
    head = Head(a.neck_channels, a.head_channels, chs[3], a.dropout, a.global_dropout if a.glob else None)
    model = nn.ModuleList([enc, neck, head])
    anc = anchors(a.size, (lo, hi))

    def now():
        if a.clock == "wall":
            return time.perf_counter()
        return time.process_time() / a.threads

    def reset_peak():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def peak():
        try:
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) * 1024
        except OSError:
            return None

    def run(x, train, targets=None, classes=None, opt=None):
        t0 = now()
        c = enc(x)
        t1 = now()
        pyr = neck(c)
        t2 = now()
        out = head(pyr, c[3])
        t3 = now()
        check_anchors(out[0], anc, a.encoder)
        if not train:
            postprocess(out, anc, a.size)
            t4 = now()
            return {"encoder": t1 - t0, "neck": t2 - t1, "head": t3 - t2, "post": t4 - t3, "total": t4 - t0}
        l = loss(out, targets, classes, anc)
        l.item()
        t4 = now()
        opt.zero_grad(set_to_none=True)
        l.backward()
        t5 = now()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
        opt.step()
        opt.zero_grad(set_to_none=True)  # as Opacity's trainer: spent gradients out of the next forward
        t6 = now()
        return {"encoder": t1 - t0, "neck": t2 - t1, "head": t3 - t2, "loss": t4 - t3, "backward": t5 - t4,
                "optimizer": t6 - t5, "total": t6 - t0}

    def median(rs):
        return {k: statistics.median(r[k] for r in rs) for k in rs[0]}

    g = torch.Generator().manual_seed(7)
    model.eval()
    x1 = torch.rand(1, 1, a.size, a.size, generator=g)
    reset_peak()
    with torch.no_grad():
        fr = [run(x1, False) for _ in range(a.repeat + 1)][1:]
    fwd = {"seconds": median(fr), "peak_bytes": peak()}

    model.train()
    if a.freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    s = float(a.size)
    boxes = torch.tensor([[0.15 * s, 0.25 * s, 0.35 * s, 0.55 * s], [0.6 * s, 0.3 * s, 0.85 * s, 0.65 * s]])
    targets = [boxes, torch.zeros(0, 4)]
    classes = torch.tensor([2, 1])
    x2 = torch.rand(2, 1, a.size, a.size, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    reset_peak()
    tr = [run(x2, True, targets, classes, opt) for _ in range(a.repeat + 1)][1:]
    train = {"seconds": median(tr), "peak_bytes": peak()}
    with open(a.out, "w") as f:
        json.dump({"torch_version": torch.__version__, "timm_model": name, "threads": a.threads, "size": a.size,
                   "clock": a.clock, "forward": fwd, "train": train}, f, indent=1)


if __name__ == "__main__":
    main()
