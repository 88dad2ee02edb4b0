"""The parity weight filler: every tensor from a formula of its name and element index.

Twin of Tests/OpacityPluginTests/ParityFiller.swift; both must give bit-identical float32
values. The rules, which any language can reproduce with 32-bit unsigned integers and IEEE
doubles:

    h        = FNV-1a 32 of the tensor's name in UTF-8 (offset 0x811C9DC5, prime 0x01000193)
    x        = (h + i * 0x9E3779B1) mod 2^32           for flat element index i (row-major)
    x        = fmix32(x)                               (MurmurHash3 finaliser:
                                                        x ^= x >> 16; x *= 0x85EBCA6B;
                                                        x ^= x >> 13; x *= 0xC2B2AE35;
                                                        x ^= x >> 16, all mod 2^32)
    u        = (x >> 8) / 2^24                         in [0, 1), exact in float32
    s        = 2u - 1                                  in [-1, 1)

    name ends with ".weight", rank >= 2 (conv, linear):  s * sqrt(3 / fan_in),
                          fan_in = shape[1] * prod(shape[2:])
    name ends with ".weight", rank 1 (batch norm):       0.75 + 0.25 s
    ".bias" (any layer):                                 0.1 s
    ".running_mean":                                     0.1 s
    ".running_var":                                      1 + 0.5 s

each computed in double precision and rounded once to float32. Batch-norm counters
(`num_batches_tracked`) are left alone.

The input image batch `[N, 1, H, W]` is u for the name "input" (pixels in [0, 1)); a
3-channel reference sees it repeated three times, as the paper's encoders do. An
Opacity encoder with a one-channel stem gets the 3-channel stem kernel summed over its
input channels, which gives the same convolution.
"""
import math

import numpy as np

MASK = 0xFFFFFFFF


def fnv1a32(text):
    h = 0x811C9DC5
    for b in text.encode("utf-8"):
        h ^= b
        h = (h * 0x01000193) & MASK
    return h


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def uniform(name, count):
    """u in [0, 1) as float64 for elements 0..<count of the tensor called `name`."""
    i = np.arange(count, dtype=np.uint64)
    x = (np.uint64(fnv1a32(name)) + i * np.uint64(0x9E3779B1)) & np.uint64(MASK)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & np.uint64(MASK)
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & np.uint64(MASK)
    x ^= x >> np.uint64(16)
    return (x >> np.uint64(8)).astype(np.float64) / float(1 << 24)


def values(name, shape):
    """The filler's float32 values for a tensor, or None if the filler leaves it alone."""
    count = int(np.prod(shape)) if len(shape) else 1
    s = 2.0 * uniform(name, count) - 1.0
    if name.endswith(".weight") and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        v = s * math.sqrt(3.0 / fan_in)
    elif name.endswith(".weight"):
        v = 0.75 + 0.25 * s
    elif name.endswith(".bias") or name.endswith(".running_mean"):
        v = 0.1 * s
    elif name.endswith(".running_var"):
        v = 1.0 + 0.5 * s
    else:
        return None
    return v.astype(np.float32).reshape(shape)


def fill(model):
    """Fills every parameter and batch-norm statistic of a torch module in place."""
    import torch

    with torch.no_grad():
        for name, t in model.state_dict().items():
            v = values(name, tuple(t.shape))
            if v is not None:
                t.copy_(torch.from_numpy(v))


def image(shape):
    """The fixed input batch [N, 1, H, W] with pixels in [0, 1)."""
    n = int(np.prod(shape))
    return uniform("input", n).astype(np.float32).reshape(shape)
