import Foundation

/// Output size of a pooling window along one axis, with PyTorch's ceil-mode rule (the
/// last window must start inside the input or its left padding).
@inlinable
func poolOutSize(_ n: Int, k: Int, s: Int, p: Int, ceil: Bool) -> Int {
    let span = n + 2 * p - k
    var o = (ceil ? (span + s - 1) / s : span / s) + 1
    if ceil && (o - 1) * s >= n + p { o -= 1 }
    return o
}

extension Tensor {
    /// Max pooling over `[N, C, H, W]` (padding counts as minus infinity).
    ///
    /// - Parameters:
    ///   - kernel, stride, padding: `(vertical, horizontal)`; stride defaults to the kernel.
    ///   - ceilMode: PyTorch's `ceil_mode`.
    public func maxPool2d(kernel: (Int, Int), stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0),
                          ceilMode: Bool = false) -> Tensor {
        shapeCheck(rank == 4, "maxPool2d", "expects [N, C, H, W], got \(describe(shape))")
        let s = stride ?? kernel
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        let ho = poolOutSize(h, k: kernel.0, s: s.0, p: padding.0, ceil: ceilMode)
        let wo = poolOutSize(w, k: kernel.1, s: s.1, p: padding.1, ceil: ceilMode)
        shapeCheck(ho > 0 && wo > 0, "maxPool2d", "input \(describe(shape)) is smaller than kernel \(kernel)")
        let out = Tensor(uninitializedShape: [n, c, ho, wo])
        let needIdx = Autograd.needsGrad(self)
        var indices = needIdx ? [Int32](repeating: 0, count: n * c * ho * wo) : []
        let geometry = Pool2DGeometry(planes: n * c, h: h, w: w, ho: ho, wo: wo, kernel: kernel, stride: s, padding: padding)
        let kernels = KernelProviders.pooling
        indices.withUnsafeMutableBufferPointer { ib in
            // An empty array may still have a base address: only write indices when kept.
            let ip = needIdx ? ib.baseAddress : nil
            kernels.maxForward(input: pointer, output: out.mutablePointer, indices: ip, geometry: geometry)
        }
        let inShape = shape
        OpTrace.note("maxPool2d", [self], out, ["kernel": .ints([kernel.0, kernel.1]), "stride": .ints([s.0, s.1]), "padding": .ints([padding.0, padding.1]), "ceilMode": .bool(ceilMode)])
        return Autograd.record("maxPool2d", out, inputs: [self]) { g in
            let gx = Tensor.zeros(inShape)
            indices.withUnsafeBufferPointer { ib in
                kernels.maxBackward(gradOut: g.pointer, indices: ib.baseAddress!, gradInput: gx.mutablePointer, geometry: geometry)
            }
            return [gx]
        }
    }

    /// Average pooling over `[N, C, H, W]`.
    ///
    /// - Parameter countIncludePad: divide by the full window (PyTorch's default) or only
    ///   by the cells inside the input (`count_include_pad=False`, as NASNet uses).
    ///   Windows that ceil mode adds past the right edge never count those cells.
    public func avgPool2d(kernel: (Int, Int), stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0),
                          ceilMode: Bool = false, countIncludePad: Bool = true) -> Tensor {
        shapeCheck(rank == 4, "avgPool2d", "expects [N, C, H, W], got \(describe(shape))")
        let s = stride ?? kernel
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        let ho = poolOutSize(h, k: kernel.0, s: s.0, p: padding.0, ceil: ceilMode)
        let wo = poolOutSize(w, k: kernel.1, s: s.1, p: padding.1, ceil: ceilMode)
        shapeCheck(ho > 0 && wo > 0, "avgPool2d", "input \(describe(shape)) is smaller than kernel \(kernel)")
        // Divisors per output cell (shared by all planes).
        var divisor = [Float](repeating: 1, count: ho * wo)
        for oy in 0..<ho {
            let y0 = oy * s.0 - padding.0
            let yEnd = min(y0 + kernel.0, h + padding.0)
            for ox in 0..<wo {
                let x0 = ox * s.1 - padding.1
                let xEnd = min(x0 + kernel.1, w + padding.1)
                let cnt: Int
                if countIncludePad { cnt = (yEnd - y0) * (xEnd - x0) } else {
                    cnt = (min(yEnd, h) - max(y0, 0)) * (min(xEnd, w) - max(x0, 0))
                }
                divisor[oy * wo + ox] = 1 / Float(max(1, cnt))
            }
        }
        let out = Tensor(uninitializedShape: [n, c, ho, wo])
        let geometry = Pool2DGeometry(planes: n * c, h: h, w: w, ho: ho, wo: wo, kernel: kernel, stride: s, padding: padding)
        let kernels = KernelProviders.pooling
        divisor.withUnsafeBufferPointer { dv in
            kernels.averageForward(input: pointer, output: out.mutablePointer, divisors: dv.baseAddress!, geometry: geometry)
        }
        let inShape = shape
        OpTrace.note("avgPool2d", [self], out, ["kernel": .ints([kernel.0, kernel.1]), "stride": .ints([s.0, s.1]), "padding": .ints([padding.0, padding.1]), "ceilMode": .bool(ceilMode), "countIncludePad": .bool(countIncludePad)])
        return Autograd.record("avgPool2d", out, inputs: [self]) { g in
            let gx = Tensor.zeros(inShape)
            divisor.withUnsafeBufferPointer { dv in
                kernels.averageBackward(gradOut: g.pointer, divisors: dv.baseAddress!, gradInput: gx.mutablePointer, geometry: geometry)
            }
            return [gx]
        }
    }

    /// Global average pooling: `[N, C, H, W]` -> `[N, C, 1, 1]`.
    public func globalAvgPool2d() -> Tensor {
        shapeCheck(rank == 4, "globalAvgPool2d", "expects [N, C, H, W], got \(describe(shape))")
        return mean(axes: [2, 3])
    }

    /// Global max pooling: `[N, C, H, W]` -> `[N, C, 1, 1]`.
    public func globalMaxPool2d() -> Tensor {
        shapeCheck(rank == 4, "globalMaxPool2d", "expects [N, C, H, W], got \(describe(shape))")
        return maxPool2d(kernel: (shape[2], shape[3]))
    }

    /// Nearest-neighbour upsampling by 2 in both spatial dimensions.
    public func upsampleNearest2x() -> Tensor {
        shapeCheck(rank == 4, "upsampleNearest2x", "expects [N, C, H, W], got \(describe(shape))")
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        let out = Tensor(uninitializedShape: [n, c, 2 * h, 2 * w])
        let xp = pointer, op = out.mutablePointer
        Compute.parallelFor(n * c, minPerThread: 8) { plane in
            let src = xp + plane * h * w
            let dst = op + plane * 4 * h * w
            for y in 0..<h {
                let r0 = dst + 2 * y * 2 * w
                for x in 0..<w { let v = src[y * w + x]; r0[2 * x] = v; r0[2 * x + 1] = v }
                (r0 + 2 * w).update(from: r0, count: 2 * w)
            }
        }
        let inShape = shape
        OpTrace.note("upsampleNearest2x", [self], out)
        return Autograd.record("upsampleNearest2x", out, inputs: [self]) { g in [Tensor.upsample2xGradient(g, toShape: inShape)] }
    }
}
