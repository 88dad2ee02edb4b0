import Foundation

/// The geometry of a 2-D convolution or pooling window.
public struct Conv2DGeometry: Equatable, Sendable {
    public var kernel: (Int, Int)
    public var stride: (Int, Int)
    public var padding: (Int, Int)
    public var dilation: (Int, Int)

    public init(kernel: (Int, Int), stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1)) {
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.kernel == b.kernel && a.stride == b.stride && a.padding == b.padding && a.dilation == b.dilation
    }

    /// Output size along one axis.
    @inlinable
    static func outSize(_ n: Int, k: Int, s: Int, p: Int, d: Int) -> Int { (n + 2 * p - d * (k - 1) - 1) / s + 1 }

    func output(h: Int, w: Int) -> (Int, Int) {
        (Self.outSize(h, k: kernel.0, s: stride.0, p: padding.0, d: dilation.0),
         Self.outSize(w, k: kernel.1, s: stride.1, p: padding.1, d: dilation.1))
    }
}

// MARK: - im2col / col2im

/// Unfolds channels `c0..<c1` of one image `[C, H, W]` into rows of `col` (`[C*kh*kw, Ho*Wo]`).
@inline(__always)
func im2col(_ src: UnsafePointer<Float>, channels: Range<Int>, h: Int, w: Int, g: Conv2DGeometry, ho: Int, wo: Int,
            col: UnsafeMutablePointer<Float>) {
    let (kh, kw) = g.kernel, (sh, sw) = g.stride, (ph, pw) = g.padding, (dh, dw) = g.dilation
    let p = ho * wo
    for c in channels {
        let plane = src + c * h * w
        for ki in 0..<kh {
            for kj in 0..<kw {
                let row = col + ((c * kh + ki) * kw + kj) * p
                // valid ox range: 0 <= ox*sw - pw + kj*dw < w
                let off = kj * dw - pw
                var oxLo = 0
                if off < 0 { oxLo = (-off + sw - 1) / sw }
                var oxHi = wo
                if w - off <= 0 { oxHi = 0 } else { oxHi = min(wo, (w - off + sw - 1) / sw) }
                if oxHi < oxLo { oxHi = oxLo }
                for oy in 0..<ho {
                    let iy = oy * sh - ph + ki * dh
                    let dst = row + oy * wo
                    if iy < 0 || iy >= h {
                        dst.update(repeating: 0, count: wo)
                        continue
                    }
                    let srow = plane + iy * w
                    if oxLo > 0 { dst.update(repeating: 0, count: oxLo) }
                    if sw == 1 {
                        if oxHi > oxLo { (dst + oxLo).update(from: srow + oxLo + off, count: oxHi - oxLo) }
                    } else {
                        var ox = oxLo
                        while ox < oxHi { dst[ox] = srow[ox * sw + off]; ox += 1 }
                    }
                    if oxHi < wo { (dst + oxHi).update(repeating: 0, count: wo - oxHi) }
                }
            }
        }
    }
}

/// Folds rows of `col` back into channels `c0..<c1` of one image, adding to `dst`.
@inline(__always)
func col2im(_ col: UnsafePointer<Float>, channels: Range<Int>, h: Int, w: Int, g: Conv2DGeometry, ho: Int, wo: Int,
            dst: UnsafeMutablePointer<Float>) {
    let (kh, kw) = g.kernel, (sh, sw) = g.stride, (ph, pw) = g.padding, (dh, dw) = g.dilation
    let p = ho * wo
    for c in channels {
        let plane = dst + c * h * w
        for ki in 0..<kh {
            for kj in 0..<kw {
                let row = col + ((c * kh + ki) * kw + kj) * p
                let off = kj * dw - pw
                var oxLo = 0
                if off < 0 { oxLo = (-off + sw - 1) / sw }
                var oxHi = wo
                if w - off <= 0 { oxHi = 0 } else { oxHi = min(wo, (w - off + sw - 1) / sw) }
                if oxHi < oxLo { oxHi = oxLo }
                for oy in 0..<ho {
                    let iy = oy * sh - ph + ki * dh
                    if iy < 0 || iy >= h { continue }
                    let drow = plane + iy * w
                    let srow = row + oy * wo
                    if sw == 1 {
                        var ox = oxLo
                        while ox < oxHi { drow[ox + off] += srow[ox]; ox += 1 }
                    } else {
                        var ox = oxLo
                        while ox < oxHi { drow[ox * sw + off] += srow[ox]; ox += 1 }
                    }
                }
            }
        }
    }
}

// MARK: - conv2d

extension Tensor {
    /// 2-D convolution (cross-correlation, as PyTorch's `conv2d`).
    ///
    /// - Parameters:
    ///   - weight: `[Cout, Cin/groups, kh, kw]`.
    ///   - bias: `[Cout]` or `nil`.
    ///   - stride, padding, dilation: `(vertical, horizontal)`.
    ///   - groups: channel groups; `groups == Cin` with one input channel per group is a
    ///     depthwise convolution and runs a direct kernel.
    /// - Returns: `[N, Cout, Ho, Wo]` with `Ho = (H + 2p - d(k-1) - 1) / s + 1`.
    ///
    /// Grouped and dense convolutions reach SGEMM: a 1x1 stride-1 convolution multiplies
    /// the input directly, others go through im2col.
    public func conv2d(_ weight: Tensor, bias: Tensor? = nil, stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
                       dilation: (Int, Int) = (1, 1), groups: Int = 1) -> Tensor {
        shapeCheck(rank == 4 && weight.rank == 4, "conv2d", "input \(describe(shape)) and weight \(describe(weight.shape)) must both be rank 4")
        let (n, cin, h, w) = (shape[0], shape[1], shape[2], shape[3])
        let cout = weight.shape[0]
        shapeCheck(groups > 0 && cin % groups == 0 && cout % groups == 0 && weight.shape[1] == cin / groups, "conv2d",
                   "input \(describe(shape)) with \(groups) groups does not fit weight \(describe(weight.shape))")
        if let b = bias { shapeCheck(b.shape == [cout], "conv2d", "bias \(describe(b.shape)) for \(cout) output channels") }
        let geo = Conv2DGeometry(kernel: (weight.shape[2], weight.shape[3]), stride: stride, padding: padding, dilation: dilation)
        let (ho, wo) = geo.output(h: h, w: w)
        shapeCheck(ho > 0 && wo > 0, "conv2d", "input \(describe(shape)) is too small for weight \(describe(weight.shape)) with padding \(padding)")
        let out = Tensor(uninitializedShape: [n, cout, ho, wo])
        ConvKernels.forward(input: self, weight: weight, bias: bias, geo: geo, groups: groups, out: out)
        let x = detached(), wt = weight.detached()
        let needX = node != nil, needW = weight.node != nil, needB = bias?.node != nil
        var inputs = [self, weight]
        if let b = bias { inputs.append(b) }
        return Autograd.record("conv2d", out, inputs: inputs) { g in
            let (gx, gw, gb) = ConvKernels.backward(input: x, weight: wt, gradOut: g, geo: geo, groups: groups,
                                                    needInput: needX, needWeight: needW, needBias: needB)
            return bias == nil ? [gx, gw] : [gx, gw, gb]
        }
    }
}

enum ConvKernels {
    static func isDepthwise(cin: Int, groups: Int) -> Bool { groups > 1 && cin == groups }
    static func isPointwise(_ g: Conv2DGeometry) -> Bool {
        g.kernel == (1, 1) && g.stride == (1, 1) && g.padding == (0, 0)
    }

    static func forward(input: Tensor, weight: Tensor, bias: Tensor?, geo: Conv2DGeometry, groups: Int, out: Tensor) {
        let (n, cin, h, w) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        let cout = out.shape[1], ho = out.shape[2], wo = out.shape[3]
        let p = ho * wo
        if isDepthwise(cin: cin, groups: groups) {
            depthwiseForward(input: input, weight: weight, geo: geo, out: out)
        } else {
            let cinG = cin / groups, coutG = cout / groups
            let k = cinG * geo.kernel.0 * geo.kernel.1
            let xp = input.pointer, wp = weight.pointer, op = out.mutablePointer
            let direct = isPointwise(geo)
            for b in 0..<n {
                let img = xp + b * cin * h * w
                let dst = op + b * cout * p
                let run = { (col: UnsafePointer<Float>) in
                    if groups == 1 {
                        BLAS.gemm(m: cout, n: p, k: k, a: wp, lda: k, b: col, ldb: p, c: dst, ldc: p)
                    } else {
                        withSingleThreadedBLAS {
                            Compute.parallelFor(groups) { gi in
                                BLAS.gemm(m: coutG, n: p, k: k, a: wp + gi * coutG * k, lda: k, b: col + gi * k * p, ldb: p,
                                          c: dst + gi * coutG * p, ldc: p)
                            }
                        }
                    }
                }
                if direct {
                    run(img)
                } else {
                    Workspace.with(cin * geo.kernel.0 * geo.kernel.1 * p) { col in
                        Compute.parallelRanges(cin, minPerThread: 1) { r in
                            im2col(img, channels: r, h: h, w: w, g: geo, ho: ho, wo: wo, col: col)
                        }
                        run(UnsafePointer(col))
                    }
                }
            }
        }
        if let bias {
            let bp = bias.pointer, op = out.mutablePointer
            Compute.parallelFor(n * cout, minPerThread: 16) { i in
                let v = bp[i % cout]
                let row = op + i * p
                for j in 0..<p { row[j] += v }
            }
        }
    }

    static func backward(input: Tensor, weight: Tensor, gradOut: Tensor, geo: Conv2DGeometry, groups: Int,
                         needInput: Bool, needWeight: Bool, needBias: Bool) -> (Tensor?, Tensor?, Tensor?) {
        let (n, cin, h, w) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        let cout = gradOut.shape[1], ho = gradOut.shape[2], wo = gradOut.shape[3]
        let p = ho * wo
        var gb: Tensor?
        if needBias {
            let t = Tensor.zeros([cout])
            let gp = gradOut.pointer, bp = t.mutablePointer
            Compute.parallelFor(cout, minPerThread: 8) { c in
                var s: Float = 0
                for b in 0..<n {
                    let row = gp + (b * cout + c) * p
                    for j in 0..<p { s += row[j] }
                }
                bp[c] = s
            }
            gb = t
        }
        if isDepthwise(cin: cin, groups: groups) {
            let (gx, gw) = depthwiseBackward(input: input, weight: weight, gradOut: gradOut, geo: geo,
                                             needInput: needInput, needWeight: needWeight)
            return (gx, gw, gb)
        }
        let cinG = cin / groups, coutG = cout / groups
        let kk = geo.kernel.0 * geo.kernel.1
        let k = cinG * kk
        let gx: Tensor? = needInput ? Tensor.zeros(input.shape) : nil
        let gw: Tensor? = needWeight ? Tensor.zeros(weight.shape) : nil
        let xp = input.pointer, wp = weight.pointer, gp = gradOut.pointer
        let direct = isPointwise(geo)
        for b in 0..<n {
            let img = xp + b * cin * h * w
            let gout = gp + b * cout * p
            if let gw {
                let gwp = gw.mutablePointer
                let accumulate = { (col: UnsafePointer<Float>) in
                    if groups == 1 {
                        BLAS.gemm(transB: true, m: cout, n: k, k: p, a: gout, lda: p, b: col, ldb: p, beta: 1, c: gwp, ldc: k)
                    } else {
                        withSingleThreadedBLAS {
                            Compute.parallelFor(groups) { gi in
                                BLAS.gemm(transB: true, m: coutG, n: k, k: p, a: gout + gi * coutG * p, lda: p,
                                          b: col + gi * k * p, ldb: p, beta: 1, c: gwp + gi * coutG * k, ldc: k)
                            }
                        }
                    }
                }
                if direct { accumulate(img) } else {
                    Workspace.with(cin * kk * p) { col in
                        Compute.parallelRanges(cin, minPerThread: 1) { r in
                            im2col(img, channels: r, h: h, w: w, g: geo, ho: ho, wo: wo, col: col)
                        }
                        accumulate(UnsafePointer(col))
                    }
                }
            }
            if let gx {
                let dst = gx.mutablePointer + b * cin * h * w
                if direct {
                    // dX = W^T * dY, straight into the image gradient.
                    if groups == 1 {
                        BLAS.gemm(transA: true, m: cin, n: p, k: cout, a: wp, lda: k, b: gout, ldb: p, c: dst, ldc: p)
                    } else {
                        withSingleThreadedBLAS {
                            Compute.parallelFor(groups) { gi in
                                BLAS.gemm(transA: true, m: cinG, n: p, k: coutG, a: wp + gi * coutG * k, lda: k,
                                          b: gout + gi * coutG * p, ldb: p, c: dst + gi * cinG * p, ldc: p)
                            }
                        }
                    }
                } else {
                    Workspace.with(cin * kk * p) { col in
                        if groups == 1 {
                            BLAS.gemm(transA: true, m: k, n: p, k: cout, a: wp, lda: k, b: gout, ldb: p, c: col, ldc: p)
                        } else {
                            withSingleThreadedBLAS {
                                Compute.parallelFor(groups) { gi in
                                    BLAS.gemm(transA: true, m: k, n: p, k: coutG, a: wp + gi * coutG * k, lda: k,
                                              b: gout + gi * coutG * p, ldb: p, c: col + gi * k * p, ldc: p)
                                }
                            }
                        }
                        Compute.parallelRanges(cin, minPerThread: 1) { r in
                            col2im(UnsafePointer(col), channels: r, h: h, w: w, g: geo, ho: ho, wo: wo, dst: dst)
                        }
                    }
                }
            }
        }
        return (gx, gw, gb)
    }

    // MARK: Depthwise (one input channel per group, channel multiplier m)

    static func depthwiseForward(input: Tensor, weight: Tensor, geo: Conv2DGeometry, out: Tensor) {
        let (n, cin, h, w) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        let cout = out.shape[1], ho = out.shape[2], wo = out.shape[3]
        let m = cout / cin
        let (kh, kw) = geo.kernel, (sh, sw) = geo.stride, (ph, pw) = geo.padding, (dh, dw) = geo.dilation
        let xp = input.pointer, wp = weight.pointer, op = out.mutablePointer
        Compute.parallelFor(n * cout, minPerThread: 4) { idx in
            let b = idx / cout, oc = idx % cout, c = oc / m
            let plane = xp + (b * cin + c) * h * w
            let dst = op + idx * ho * wo
            dst.update(repeating: 0, count: ho * wo)
            let kern = wp + oc * kh * kw
            for ki in 0..<kh {
                for kj in 0..<kw {
                    let wv = kern[ki * kw + kj]
                    let off = kj * dw - pw
                    var oxLo = 0
                    if off < 0 { oxLo = (-off + sw - 1) / sw }
                    var oxHi = wo
                    if w - off <= 0 { oxHi = 0 } else { oxHi = min(wo, (w - off + sw - 1) / sw) }
                    if oxHi <= oxLo { continue }
                    for oy in 0..<ho {
                        let iy = oy * sh - ph + ki * dh
                        if iy < 0 || iy >= h { continue }
                        let srow = plane + iy * w + off
                        let drow = dst + oy * wo
                        if sw == 1 {
                            for ox in oxLo..<oxHi { drow[ox] += wv * srow[ox] }
                        } else {
                            for ox in oxLo..<oxHi { drow[ox] += wv * srow[ox * sw] }
                        }
                    }
                }
            }
        }
    }

    static func depthwiseBackward(input: Tensor, weight: Tensor, gradOut: Tensor, geo: Conv2DGeometry,
                                  needInput: Bool, needWeight: Bool) -> (Tensor?, Tensor?) {
        let (n, cin, h, w) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        let cout = gradOut.shape[1], ho = gradOut.shape[2], wo = gradOut.shape[3]
        let m = cout / cin
        let (kh, kw) = geo.kernel, (sh, sw) = geo.stride, (ph, pw) = geo.padding, (dh, dw) = geo.dilation
        let xp = input.pointer, wp = weight.pointer, gp = gradOut.pointer
        func range(_ kj: Int) -> (Int, Int, Int) {
            let off = kj * dw - pw
            var oxLo = 0
            if off < 0 { oxLo = (-off + sw - 1) / sw }
            var oxHi = wo
            if w - off <= 0 { oxHi = 0 } else { oxHi = min(wo, (w - off + sw - 1) / sw) }
            return (off, oxLo, oxHi)
        }
        var gx: Tensor?
        if needInput {
            let t = Tensor.zeros(input.shape)
            let dp = t.mutablePointer
            Compute.parallelFor(n * cin, minPerThread: 4) { idx in
                let b = idx / cin, c = idx % cin
                let dplane = dp + idx * h * w
                for j in 0..<m {
                    let oc = c * m + j
                    let g = gp + (b * cout + oc) * ho * wo
                    let kern = wp + oc * kh * kw
                    for ki in 0..<kh {
                        for kj in 0..<kw {
                            let wv = kern[ki * kw + kj]
                            let (off, lo, hi) = range(kj)
                            if hi <= lo { continue }
                            for oy in 0..<ho {
                                let iy = oy * sh - ph + ki * dh
                                if iy < 0 || iy >= h { continue }
                                let drow = dplane + iy * w + off
                                let grow = g + oy * wo
                                if sw == 1 { for ox in lo..<hi { drow[ox] += wv * grow[ox] } } else {
                                    for ox in lo..<hi { drow[ox * sw] += wv * grow[ox] }
                                }
                            }
                        }
                    }
                }
            }
            gx = t
        }
        var gw: Tensor?
        if needWeight {
            let t = Tensor.zeros(weight.shape)
            let dwp = t.mutablePointer
            Compute.parallelFor(cout, minPerThread: 2) { oc in
                let c = oc / m
                for b in 0..<n {
                    let plane = xp + (b * cin + c) * h * w
                    let g = gp + (b * cout + oc) * ho * wo
                    for ki in 0..<kh {
                        for kj in 0..<kw {
                            let (off, lo, hi) = range(kj)
                            if hi <= lo { continue }
                            var s: Float = 0
                            for oy in 0..<ho {
                                let iy = oy * sh - ph + ki * dh
                                if iy < 0 || iy >= h { continue }
                                let srow = plane + iy * w + off
                                let grow = g + oy * wo
                                if sw == 1 { for ox in lo..<hi { s += srow[ox] * grow[ox] } } else {
                                    for ox in lo..<hi { s += srow[ox * sw] * grow[ox] }
                                }
                            }
                            dwp[oc * kh * kw + ki * kw + kj] += s
                        }
                    }
                }
            }
            gw = t
        }
        return (gx, gw)
    }
}

/// Runs `body` with OpenBLAS limited to one thread (for GEMMs issued from our own
/// parallel loops), restoring the engine's thread count afterwards.
func withSingleThreadedBLAS<R>(_ body: () -> R) -> R {
    BLAS.setThreadsRaw(1)
    defer { BLAS.setThreadsRaw(Compute.threads) }
    return body()
}
