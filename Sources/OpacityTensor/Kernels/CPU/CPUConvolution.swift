import Foundation

// The CPU convolution kernels: SGEMM over unfolded tiles (im2col), a row expansion for
// stems, a direct depthwise kernel. `Tensor.conv2d` (Ops+Conv.swift) reaches them only
// through ``ConvolutionKernels``.

/// The CPU provider of ``ConvolutionKernels``.
struct CPUConvolutionKernels: ConvolutionKernels {
    func forward(input: Tensor, weight: Tensor, bias: Tensor?, geometry: Conv2DGeometry, groups: Int, into out: Tensor) {
        ConvKernels.forward(input: input, weight: weight, bias: bias, geo: geometry, groups: groups, out: out)
    }

    func forwardInPlace(input: Tensor, weight: Tensor, bias: Tensor?, geometry: Conv2DGeometry, groups: Int) -> Bool {
        ConvKernels.forwardInPlace(input: input, weight: weight, bias: bias, geo: geometry, groups: groups)
    }

    func backwardData(inputShape: [Int], weight: Tensor, gradOut: Tensor, geometry: Conv2DGeometry, groups: Int) -> Tensor {
        ConvKernels.inputGradient(inputShape: inputShape, weight: weight, gradOut: gradOut, geo: geometry, groups: groups)
    }

    func backwardWeights(input: Tensor, weight: Tensor, gradOut: Tensor, geometry: Conv2DGeometry, groups: Int) -> Tensor {
        ConvKernels.weightGradient(input: input, weight: weight, gradOut: gradOut, geo: geometry, groups: groups)
    }

    func backwardBias(gradOut: Tensor) -> Tensor {
        ConvKernels.biasGradient(gradOut: gradOut)
    }
}

/// The sizes of one convolution and how its work is cut into tasks.
struct ConvPlan {
    let n: Int, cin: Int, h: Int, w: Int
    let cout: Int, ho: Int, wo: Int
    let groups: Int
    let geo: Conv2DGeometry
    /// Input and output channels per group.
    let cinG: Int, coutG: Int
    /// Kernel cells (`kh * kw`) and the GEMM depth per group (`cinG * kh * kw`).
    let kk: Int, k: Int
    /// Output positions per image.
    let p: Int
    /// 1x1, stride 1, no padding: the input is already the unfolded matrix.
    let pointwise: Bool
    /// Few input channels and wide rows (network stems): unfold each input row once for
    /// all the output rows that use it (see ``ConvKernels/rowForward(_:input:weight:out:)``).
    let rowExpansion: Bool

    init(input: [Int], cout: Int, geo: Conv2DGeometry, groups: Int) {
        (n, cin, h, w) = (input[0], input[1], input[2], input[3])
        self.cout = cout
        self.geo = geo
        self.groups = groups
        (ho, wo) = geo.output(h: h, w: w)
        cinG = cin / groups
        coutG = cout / groups
        kk = geo.kernel.0 * geo.kernel.1
        k = cinG * kk
        p = ho * wo
        pointwise = geo.kernel == (1, 1) && geo.stride == (1, 1) && geo.padding == (0, 0)
        rowExpansion =
            groups == 1 && geo.dilation.0 == 1 && geo.kernel.0 > 1 && k <= 320 && wo >= 96
            && geo.stride.0 < geo.kernel.0
    }

    /// Input rows the row expansion covers: `(ho - 1) * sh + kh`, starting at row `-ph`.
    var expandedRows: Int { (ho - 1) * geo.stride.0 + geo.kernel.0 }
    /// Floats of one expanded input row: `cin * kw * wo`.
    var expandedRowFloats: Int { cin * geo.kernel.1 * wo }

    /// Floats of unfolded columns that one task keeps in cache (the per-core L2 share).
    nonisolated(unsafe) static var tileBudget: Int = positiveIntegerSetting("OPACITY_CONV_TILE", default: 160 * 1024)

    /// The number of row tiles an image is cut into so one tile's unfolded columns
    /// (`k * rows * wo` floats) stay within `budget`, but no tile is narrower than
    /// `minColumns` (narrow GEMMs repack the weights too often).
    ///
    /// When the tasks (`n * groups * tiles`) are few, the count is raised so that they
    /// divide evenly over the threads: 7 tiles on 2 threads would leave one thread idle
    /// for an eighth of the time.
    func rowTiles(budget: Int = ConvPlan.tileBudget, minColumns: Int = 192, threads: Int = Compute.threads) -> Int {
        let columns = max(minColumns, budget / max(1, k))
        let rows = max(1, columns / wo)
        let tiles = max(1, (ho + rows - 1) / rows)
        let perTile = n * groups
        if threads > 1 && perTile * tiles < 8 * threads && (perTile * tiles) % threads != 0 {
            for t in tiles...min(ho, tiles + threads) where (perTile * t) % threads == 0 { return t }
        }
        return tiles
    }

    /// Whether a GEMM convolution gives each thread a share of the weight rows, multiplied by
    /// the whole unfolded image, instead of a row tile of the image multiplied by all the
    /// weights. On many threads a small output map cut into one tile per thread leaves GEMMs
    /// a few columns wide that each repack the whole weight matrix (device run, 16 threads,
    /// 512 px: 1x1 512->2048 at 16x16 at 53% of sgemm, 16-column tiles). From
    /// `OPACITY_ROW_SPLIT_THREADS` threads (default 4, so 2-thread runs keep their kernels and
    /// bits); one group, under 64 columns per tile, at least 16 weight rows per thread.
    func splitsWeightRows(threads: Int = Compute.threads) -> Bool {
        guard groups == 1, !rowExpansion, threads > 1, threads >= Self.rowSplitThreads, coutG >= 16 * threads
        else { return false }
        return p / rowTiles(threads: threads) < 64
    }

    /// `OPACITY_ROW_SPLIT_THREADS`, read once (every convolution asks).
    static let rowSplitThreads = TuningVariable.rowSplitThreads.value

    /// The kernel log's name for the GEMM paths of ``ConvKernels/gemmForward(_:input:weight:weightsTransposed:bias:out:)``
    /// (the forward pass, and the stride-1 input gradient, which runs it on the flipped plan).
    var gemmKernelName: String { (pointwise ? "1x1 gemm" : "im2col") + (splitsWeightRows() ? " weight rows" : "") }

    /// Output rows `[lo, hi)` of tile `t` of `tiles` (an even split).
    @inline(__always)
    func rows(_ t: Int, of tiles: Int) -> Range<Int> { (ho * t / tiles)..<(ho * (t + 1) / tiles) }

    /// The most output rows in one of `tiles` tiles (``rows(_:of:)``): `ceil(ho / tiles)`.
    func maxTileRows(of tiles: Int) -> Int { (ho + tiles - 1) / tiles }

    /// The most floats the per-thread unfolded tiles of the im2col weight gradient take in all
    /// (24 MiB). Each thread unfolds `k` rows of at least 512 columns; on many threads that
    /// is a large block held for the call and kept idle afterwards (measured, 16 threads, the
    /// RetinaNet head's 3x3 256->36 output convolution at 128x128 with a row to spare: 16 x 5.9
    /// MiB; 96 MiB of idle kernel scratch at the backward's peak of the resnet34 detector's
    /// training step, which peaked at 952 MiB resident against 879 at 2 threads). Past it,
    /// tiles get fewer columns.
    /// On 2 threads only convolutions with more than 682 input channels (`k` over 6144) reach
    /// it; in the registry's detectors those run on maps of a few rows (the FPN's P6
    /// convolution on C5, one tile either way), so 2-thread tiles and bits do not change.
    static let weightGradientScratchFloats = 6 << 20

    /// The fewest columns per tile of the im2col weight gradient with `threads` threads: 512,
    /// or fewer (at least 64) where the unfolded tiles would exceed
    /// ``weightGradientScratchFloats``. 1x1 convolutions unfold nothing (their tiles read the
    /// input), so they keep 512 on any thread count.
    func weightGradientMinColumns(threads: Int) -> Int {
        if pointwise { return 512 }
        return max(64, min(512, Self.weightGradientScratchFloats / max(1, threads * k)))
    }
}

// MARK: - im2col / col2im

/// `dst[i] = src[2 * i]` for `i` in `0..<count`, eight at a time (the stride-2 gather of
/// strided convolutions; a scalar loop moves one value per cycle).
@inline(__always)
func gatherEven(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ count: Int) {
    var i = 0
    let s = UnsafeRawPointer(src), d = UnsafeMutableRawPointer(dst)
    // Sixteen loads reach src[2i + 15]; stop while that is still inside the gathered span.
    while i + 8 < count {
        let v = s.loadUnaligned(fromByteOffset: 8 * i, as: SIMD16<Float>.self)
        d.storeBytes(of: v.evenHalf, toByteOffset: 4 * i, as: SIMD8<Float>.self)
        i += 8
    }
    while i < count {
        dst[i] = src[2 * i]
        i += 1
    }
}

/// Unfolds channels `channels` of one image `[C, H, W]` for output rows `oyRange` into
/// `col`: row `(c - channels.lowerBound) * kh * kw + ki * kw + kj`, column
/// `(oy - oyRange.lowerBound) * wo + ox`, rows `ldcol` apart.
@inline(__always)
func im2col(
    _ src: UnsafePointer<Float>, channels: Range<Int>, h: Int, w: Int, g: Conv2DGeometry, wo: Int,
    rows oyRange: Range<Int>, col: UnsafeMutablePointer<Float>, ldcol: Int
) {
    let (kh, kw) = g.kernel, (sh, sw) = g.stride, (ph, pw) = g.padding, (dh, dw) = g.dilation
    for c in channels {
        let plane = src + c * h * w
        for ki in 0..<kh {
            for kj in 0..<kw {
                let row = col + (((c - channels.lowerBound) * kh + ki) * kw + kj) * ldcol
                // Valid ox: 0 <= ox * sw + off < w.
                let off = kj * dw - pw
                let oxLo = off < 0 ? min(wo, (-off + sw - 1) / sw) : 0
                let oxHi = max(oxLo, w - off <= 0 ? 0 : min(wo, (w - off + sw - 1) / sw))
                for oy in oyRange {
                    let iy = oy * sh - ph + ki * dh
                    let dst = row + (oy - oyRange.lowerBound) * wo
                    if iy < 0 || iy >= h {
                        dst.update(repeating: 0, count: wo)
                        continue
                    }
                    let srow = plane + iy * w + off
                    if oxLo > 0 { dst.update(repeating: 0, count: oxLo) }
                    if sw == 1 {
                        if oxHi > oxLo { (dst + oxLo).update(from: srow + oxLo, count: oxHi - oxLo) }
                    } else if sw == 2 {
                        if oxHi > oxLo { gatherEven(dst + oxLo, srow + 2 * oxLo, oxHi - oxLo) }
                    } else {
                        var ox = oxLo
                        while ox < oxHi { dst[ox] = srow[ox * sw]; ox += 1 }
                    }
                    if oxHi < wo { (dst + oxHi).update(repeating: 0, count: wo - oxHi) }
                }
            }
        }
    }
}

/// Folds rows of `col` (`[C*kh*kw, ho*wo]` for one image, rows `ldcol` apart) back into
/// channels `channels` of the image gradient `dst`, adding.
@inline(__always)
func col2im(
    _ col: UnsafePointer<Float>, channels: Range<Int>, h: Int, w: Int, g: Conv2DGeometry, ho: Int, wo: Int,
    ldcol: Int, dst: UnsafeMutablePointer<Float>
) {
    let (kh, kw) = g.kernel, (sh, sw) = g.stride, (ph, pw) = g.padding, (dh, dw) = g.dilation
    for c in channels {
        let plane = dst + c * h * w
        for ki in 0..<kh {
            for kj in 0..<kw {
                let row = col + ((c * kh + ki) * kw + kj) * ldcol
                let off = kj * dw - pw
                let oxLo = off < 0 ? min(wo, (-off + sw - 1) / sw) : 0
                let oxHi = max(oxLo, w - off <= 0 ? 0 : min(wo, (w - off + sw - 1) / sw))
                for oy in 0..<ho {
                    let iy = oy * sh - ph + ki * dh
                    if iy < 0 || iy >= h { continue }
                    let drow = plane + iy * w + off
                    let srow = row + oy * wo
                    var ox = oxLo
                    if sw == 1 {
                        while ox < oxHi { drow[ox] += srow[ox]; ox += 1 }
                    } else if sw == 2 {
                        // Eight at a time: add into the even lanes of sixteen. The odd lanes are
                        // written back unchanged, so stay strictly inside the span (the cell
                        // after it may belong to another thread's channel).
                        let d = UnsafeMutableRawPointer(drow), s = UnsafeRawPointer(srow)
                        while ox + 8 < oxHi {
                            var v = d.loadUnaligned(fromByteOffset: 8 * ox, as: SIMD16<Float>.self)
                            v.evenHalf += s.loadUnaligned(fromByteOffset: 4 * ox, as: SIMD8<Float>.self)
                            d.storeBytes(of: v, toByteOffset: 8 * ox, as: SIMD16<Float>.self)
                            ox += 8
                        }
                        while ox < oxHi { drow[2 * ox] += srow[ox]; ox += 1 }
                    } else {
                        while ox < oxHi { drow[ox * sw] += srow[ox]; ox += 1 }
                    }
                }
            }
        }
    }
}

// MARK: - Kernels

enum ConvKernels {
    static func isDepthwise(cin: Int, groups: Int) -> Bool { groups > 1 && cin == groups }

    // MARK: Forward

    /// Writes `conv(input, weight) + bias` over `input`'s storage when the Winograd kernel can
    /// (``WinogradKernels/runsInPlace(_:)``) or the convolution is depthwise with the input's
    /// shape out (``depthwiseForwardInPlace(input:weight:bias:geo:)``) and returns true; else
    /// returns false and touches nothing.
    static func forwardInPlace(input: Tensor, weight: Tensor, bias: Tensor?, geo: Conv2DGeometry, groups: Int) -> Bool {
        let plan = ConvPlan(input: input.shape, cout: weight.shape[0], geo: geo, groups: groups)
        if isDepthwise(cin: plan.cin, groups: groups) {
            guard depthwiseForwardInPlace(input: input, weight: weight, bias: bias, geo: geo) else { return false }
            ConvolutionKernelLog.note("forward", plan, "depthwise in place")
            return true
        }
        guard groups == 1, WinogradKernels.runsInPlace(plan) else { return false }
        ConvolutionKernelLog.note("forward", plan, WinogradKernels.kernelName(plan))
        let u = WinogradKernels.transformedWeights(weight)
        withExtendedLifetime(u) {
            WinogradKernels.sharedForward(
                plan, input: input.pointer, transformed: u.base, bias: bias?.pointer, out: input.mutablePointer, inPlace: true)
        }
        return true
    }

    static func forward(input: Tensor, weight: Tensor, bias: Tensor?, geo: Conv2DGeometry, groups: Int, out: Tensor) {
        let plan = ConvPlan(input: input.shape, cout: weight.shape[0], geo: geo, groups: groups)
        ConvolutionKernelLog.note(
            "forward", plan,
            isDepthwise(cin: plan.cin, groups: groups)
                ? "depthwise"
                : plan.usesWinograd
                    ? WinogradKernels.kernelName(plan)
                    : plan.usesWinograd2
                        ? "winograd 2x2"
                        : plan.rowExpansion ? "row expansion" : plan.gemmKernelName)
        if isDepthwise(cin: plan.cin, groups: groups) {
            depthwiseForward(input: input, weight: weight, geo: geo, out: out)
            if let bias { addBias(plan, bias: bias.pointer, out: out.mutablePointer) }
        } else if plan.usesWinograd {
            let u = WinogradKernels.transformedWeights(weight)
            withExtendedLifetime(u) {
                WinogradKernels.forward(plan, input: input.pointer, transformed: u.base, bias: bias?.pointer, out: out.mutablePointer)
            }
        } else if plan.usesWinograd2 {
            let u = Winograd2Kernels.transformedWeights(weight)
            withExtendedLifetime(u) {
                Winograd2Kernels.forward(plan, input: input.pointer, transformed: u.base, bias: bias?.pointer, out: out.mutablePointer)
            }
        } else {
            gemmForward(plan, input: input.pointer, weight: weight.pointer, bias: bias?.pointer, out: out.mutablePointer)
        }
    }

    static func addBias(_ pl: ConvPlan, bias bp: UnsafePointer<Float>, out op: UnsafeMutablePointer<Float>) {
        let (cout, p) = (pl.cout, pl.p)
        Compute.parallelFor(pl.n * cout, minPerThread: 16) { i in
            let v = bp[i % cout]
            let row = op + i * p
            for j in 0..<p { row[j] += v }
        }
    }

    /// `out[b, g] = W[g] x unfold(input[b, g]) (+ bias)` for every image `b` and group `g`.
    ///
    /// When there are enough row tiles, each task unfolds one tile of one image into a
    /// cache-sized buffer, multiplies it by the whole weight matrix into a contiguous
    /// result tile, and copies that out (adding the bias). Multiplying straight into the
    /// output would write rows `Ho * Wo` floats apart, a power of two in most networks,
    /// whose cache-set conflicts evict the tile. Small late-stage maps instead unfold each
    /// image once, in parallel over channels, and split the weight rows over the threads.
    ///
    /// - Parameter weightsTransposed: the weights of group `g` are stored transposed, as
    ///   `[k, coutG]` (the input gradient of a 1x1 convolution reads its weights this way).
    static func gemmForward(
        _ pl: ConvPlan, input xp: UnsafePointer<Float>, weight wp: UnsafePointer<Float>,
        weightsTransposed: Bool = false, bias bp: UnsafePointer<Float>?, out op: UnsafeMutablePointer<Float>
    ) {
        BLAS.ensureConfigured()
        let lda = weightsTransposed ? pl.coutG : pl.k
        if pl.rowExpansion && !weightsTransposed {
            rowForward(pl, input: xp, weight: wp, out: op)
            if let bp { addBias(pl, bias: bp, out: op) }
            return
        }
        let threads = Compute.threads
        let tiles = pl.rowTiles()
        let tasks = pl.n * pl.groups * tiles
        let imageIn = pl.cin * pl.h * pl.w, imageOut = pl.cout * pl.p
        let splitsWeightRows = pl.splitsWeightRows(threads: threads)
        if !splitsWeightRows && (tasks >= threads || threads == 1) {
            let maxCols = pl.maxTileRows(of: tiles) * pl.wo
            let colFloats = pl.pointwise ? 0 : pl.k * maxCols
            // Multiply straight into the output when it is one tile per image (contiguous
            // anyway) and for 1x1 convolutions on large maps, where the copy-out costs more
            // than the cache conflicts it avoids (measured: 1x1 64->256 at 128x128 goes
            // from 74% to 83% of sgemm).
            let direct = tiles == 1 || (pl.pointwise && pl.p >= 4096)
            let tileFloats = direct ? 0 : pl.coutG * maxCols
            let colSlot = (colFloats + 15) & ~15
            withScratch(perThread: colSlot + tileFloats) { scratch in
                Compute.parallelChunks(tasks) { chunk, range in
                    let col = scratch(chunk), ctile = col + colSlot
                    for task in range {
                        let t = task % tiles, gi = (task / tiles) % pl.groups, b = task / (tiles * pl.groups)
                        let rows = pl.rows(t, of: tiles)
                        let c0 = rows.lowerBound * pl.wo, cols = rows.count * pl.wo
                        let img = xp + b * imageIn
                        let bmat: UnsafePointer<Float>, ldb: Int
                        if pl.pointwise {
                            bmat = img + gi * pl.cinG * pl.p + c0
                            ldb = pl.p
                        } else {
                            im2col(
                                img, channels: (gi * pl.cinG)..<((gi + 1) * pl.cinG), h: pl.h, w: pl.w, g: pl.geo,
                                wo: pl.wo, rows: rows, col: col, ldcol: cols)
                            bmat = UnsafePointer(col)
                            ldb = cols
                        }
                        let dst = op + b * imageOut + gi * pl.coutG * pl.p + c0
                        BLAS.gemmSerial(
                            transA: weightsTransposed, m: pl.coutG, n: cols, k: pl.k, a: wp + gi * pl.coutG * pl.k,
                            lda: lda, b: bmat, ldb: ldb, c: direct ? dst : ctile, ldc: direct ? pl.p : cols)
                        for r in 0..<pl.coutG {
                            let o = dst + r * pl.p
                            if direct {
                                if let bp {
                                    let v = bp[gi * pl.coutG + r]
                                    for j in 0..<cols { o[j] += v }
                                }
                            } else {
                                let src = ctile + r * cols
                                if let bp {
                                    let v = bp[gi * pl.coutG + r]
                                    for j in 0..<cols { o[j] = src[j] + v }
                                } else {
                                    o.update(from: src, count: cols)
                                }
                            }
                        }
                    }
                }
            }
            return
        }
        // Few, small maps, or the weight-row split: unfold each image once (in parallel over
        // channels), then multiply by all of it: the library's threaded GEMM per group, or
        // each thread its share of the weight rows (a column of the result sums over k in
        // the same order whichever rows a thread holds).
        withScratch(perThread: 0, shared: pl.pointwise ? 0 : pl.cin * pl.kk * pl.p) { scratch in
            let col = scratch(-1)
            let parts = min(threads, pl.coutG / 16)
            for b in 0..<pl.n {
                let img = xp + b * imageIn
                let bmat: UnsafePointer<Float>
                if pl.pointwise {
                    bmat = img
                } else {
                    Compute.parallelRanges(pl.cin, minPerThread: 1) { r in
                        im2col(
                            img, channels: r, h: pl.h, w: pl.w, g: pl.geo, wo: pl.wo, rows: 0..<pl.ho,
                            col: col + r.lowerBound * pl.kk * pl.p, ldcol: pl.p)
                    }
                    bmat = UnsafePointer(col)
                }
                if splitsWeightRows {
                    Compute.parallelFor(parts) { part in
                        // rows in multiples of 16 (whole micro-kernel panels) where possible
                        let lo = (pl.coutG * part / parts) & ~15
                        let hi = part == parts - 1 ? pl.coutG : (pl.coutG * (part + 1) / parts) & ~15
                        guard hi > lo else { return }
                        BLAS.gemmSerial(
                            transA: weightsTransposed, m: hi - lo, n: pl.p, k: pl.k, a: weightsTransposed ? wp + lo : wp + lo * lda,
                            lda: lda, b: bmat, ldb: pl.p, c: op + b * imageOut + lo * pl.p, ldc: pl.p)
                    }
                    continue
                }
                for gi in 0..<pl.groups {
                    BLAS.gemm(
                        transA: weightsTransposed, m: pl.coutG, n: pl.p, k: pl.k, a: wp + gi * pl.coutG * pl.k, lda: lda,
                        b: bmat + gi * pl.k * pl.p, ldb: pl.p, c: op + b * imageOut + gi * pl.coutG * pl.p, ldc: pl.p)
                }
            }
        }
        if let bp { addBias(pl, bias: bp, out: op) }
    }

    // MARK: Backward

    static func biasGradient(gradOut: Tensor) -> Tensor {
        let (n, cout) = (gradOut.shape[0], gradOut.shape[1])
        let p = gradOut.shape[2] * gradOut.shape[3]
        let t = Tensor(uninitializedShape: [cout])
        let gp = gradOut.pointer, bp = t.mutablePointer
        Compute.parallelFor(cout, minPerThread: 8) { c in
            var s: Float = 0
            for b in 0..<n { s += simdSum(gp + (b * cout + c) * p, p) }
            bp[c] = s
        }
        return t
    }

    static func weightGradient(input: Tensor, weight: Tensor, gradOut: Tensor, geo: Conv2DGeometry, groups: Int) -> Tensor {
        let pl = ConvPlan(input: input.shape, cout: weight.shape[0], geo: geo, groups: groups)
        ConvolutionKernelLog.note(
            "weight gradient", pl,
            isDepthwise(cin: pl.cin, groups: groups)
                ? "depthwise"
                : pl.rowExpansion
                    ? "row expansion"
                    : pl.usesWinogradWeightGradient
                        ? "winograd"
                        : pl.usesWinograd2WeightGradient
                            ? "winograd 2x2"
                            : GroupedConvKernels.groupTasks(pl) ? "grouped per-group tasks" : pl.pointwise ? "1x1 gemm" : "im2col")
        if isDepthwise(cin: pl.cin, groups: groups) {
            return depthwiseBackward(inputShape: input.shape, input: input, weight: weight, gradOut: gradOut, geo: geo).1!
        }
        let t = Tensor(uninitializedShape: weight.shape)
        weightGradient(pl, input: input.pointer, gradOut: gradOut.pointer, out: t.mutablePointer)
        return t
    }

    static func inputGradient(inputShape: [Int], weight: Tensor, gradOut: Tensor, geo: Conv2DGeometry, groups: Int) -> Tensor {
        let pl = ConvPlan(input: inputShape, cout: weight.shape[0], geo: geo, groups: groups)
        if isDepthwise(cin: pl.cin, groups: groups) {
            ConvolutionKernelLog.note("input gradient", pl, "depthwise")
            return depthwiseBackward(inputShape: inputShape, input: nil, weight: weight, gradOut: gradOut, geo: geo).0!
        }
        return inputGradient(pl, weight: weight, gradOut: gradOut)
    }

    /// The input gradient.
    ///
    /// With stride 1 it is the convolution of the output gradient with the kernel flipped
    /// in space and transposed in channels, padded by `d(k-1) - p`, and takes the forward
    /// path. Strided convolutions multiply by the transposed weights and fold back (col2im).
    static func inputGradient(_ pl: ConvPlan, weight: Tensor, gradOut: Tensor) -> Tensor {
        let (kh, kw) = pl.geo.kernel, (dh, dw) = pl.geo.dilation
        let tpad = (dh * (kh - 1) - pl.geo.padding.0, dw * (kw - 1) - pl.geo.padding.1)
        if pl.geo.stride == (1, 1) && tpad.0 >= 0 && tpad.1 >= 0 {
            let tgeo = Conv2DGeometry(kernel: pl.geo.kernel, stride: (1, 1), padding: tpad, dilation: pl.geo.dilation)
            let tplan = ConvPlan(input: gradOut.shape, cout: pl.cin, geo: tgeo, groups: pl.groups)
            precondition(tplan.ho == pl.h && tplan.wo == pl.w, "conv2d backward: transposed geometry does not restore the input size")
            let gx = Tensor(uninitializedShape: [pl.n, pl.cin, pl.h, pl.w])
            ConvolutionKernelLog.note(
                "input gradient", pl,
                tplan.usesWinograd
                    ? WinogradKernels.kernelName(tplan)
                    : tplan.usesWinograd2 ? "winograd 2x2" : tplan.rowExpansion ? "row expansion" : tplan.gemmKernelName)
            if tplan.usesWinograd {
                let u = WinogradKernels.transformedWeights(weight, flipped: true)
                withExtendedLifetime(u) {
                    WinogradKernels.forward(tplan, input: gradOut.pointer, transformed: u.base, bias: nil, out: gx.mutablePointer)
                }
                return gx
            }
            if tplan.usesWinograd2 {
                let u = Winograd2Kernels.transformedWeights(weight, flipped: true)
                withExtendedLifetime(u) {
                    Winograd2Kernels.forward(tplan, input: gradOut.pointer, transformed: u.base, bias: nil, out: gx.mutablePointer)
                }
                return gx
            }
            if pl.kk == 1 {
                // 1x1: the transposed weights are W read transposed; no copy.
                gemmForward(
                    tplan, input: gradOut.pointer, weight: weight.pointer, weightsTransposed: true, bias: nil,
                    out: gx.mutablePointer)
                return gx
            }
            // W'[g*cinG + ci, co, kh-1-i, kw-1-j] = W[g*coutG + co, ci, i, j], in 32x32 blocks
            // of (co, ci) so that neither side strides through memory one cell at a time.
            let flipped = Tensor(uninitializedShape: [pl.cin, pl.coutG, kh, kw])
            let src = weight.pointer, dst = flipped.mutablePointer
            let (coutG, cinG, kk) = (pl.coutG, pl.cinG, pl.kk)
            Compute.parallelFor(pl.groups * ((cinG + 31) / 32), minPerThread: 1) { job in
                let gi = job / ((cinG + 31) / 32), ci0 = (job % ((cinG + 31) / 32)) * 32
                for co0 in stride(from: 0, to: coutG, by: 32) {
                    for ci in ci0..<min(cinG, ci0 + 32) {
                        for co in co0..<min(coutG, co0 + 32) {
                            let s = src + ((gi * coutG + co) * cinG + ci) * kk
                            let d = dst + ((gi * cinG + ci) * coutG + co) * kk
                            for i in 0..<kk { d[kk - 1 - i] = s[i] }
                        }
                    }
                }
            }
            gemmForward(tplan, input: gradOut.pointer, weight: flipped.pointer, bias: nil, out: gx.mutablePointer)
            return gx
        }
        if GroupedConvKernels.imageGroupTasks(pl) {
            ConvolutionKernelLog.note("input gradient", pl, "grouped col2im per image and group")
            let gx = Tensor(uninitializedShape: [pl.n, pl.cin, pl.h, pl.w])
            GroupedConvKernels.stridedInputGradient(pl, weight: weight.pointer, gradOut: gradOut.pointer, out: gx.mutablePointer)
            return gx
        }
        // Strided: col = W^T dY per image and group, folded back into the zeroed gradient.
        ConvolutionKernelLog.note("input gradient", pl, "col2im")
        let gx = Tensor.zeros([pl.n, pl.cin, pl.h, pl.w])
        let wp = weight.pointer, gp = gradOut.pointer, dp = gx.mutablePointer
        withScratch(perThread: 0, shared: pl.cin * pl.kk * pl.p) { scratch in
            let col = scratch(-1)
            for b in 0..<pl.n {
                let gout = gp + b * pl.cout * pl.p
                for gi in 0..<pl.groups {
                    BLAS.gemm(
                        transA: true, m: pl.k, n: pl.p, k: pl.coutG, a: wp + gi * pl.coutG * pl.k, lda: pl.k,
                        b: gout + gi * pl.coutG * pl.p, ldb: pl.p, c: col + gi * pl.k * pl.p, ldc: pl.p)
                }
                let dst = dp + b * pl.cin * pl.h * pl.w
                Compute.parallelRanges(pl.cin, minPerThread: 1) { r in
                    col2im(
                        UnsafePointer(col), channels: r, h: pl.h, w: pl.w, g: pl.geo, ho: pl.ho, wo: pl.wo,
                        ldcol: pl.p, dst: dst)
                }
            }
        }
        return gx
    }

    /// The weight gradient `dW[g] = sum over images of dY[b, g] x unfold(x[b, g])^T`.
    ///
    /// Large maps: each thread unfolds its own row tiles and accumulates into a private
    /// gradient; the private gradients are then summed in a fixed order. Small maps: each
    /// image is unfolded once and the output channels are split over the threads.
    static func weightGradient(
        _ pl: ConvPlan, input xp: UnsafePointer<Float>, gradOut gp: UnsafePointer<Float>,
        out dwp: UnsafeMutablePointer<Float>
    ) {
        BLAS.ensureConfigured()
        if pl.rowExpansion {
            rowWeightGradient(pl, input: xp, gradOut: gp, out: dwp)
            return
        }
        if pl.usesWinogradWeightGradient {
            WinogradKernels.weightGradient(pl, input: xp, gradOut: gp, out: dwp)
            return
        }
        if pl.usesWinograd2WeightGradient {
            Winograd2Kernels.weightGradient(pl, input: xp, gradOut: gp, out: dwp)
            return
        }
        if GroupedConvKernels.groupTasks(pl) {
            GroupedConvKernels.weightGradient(pl, input: xp, gradOut: gp, out: dwp)
            return
        }
        let threads = Compute.threads
        let tiles = pl.rowTiles(minColumns: pl.weightGradientMinColumns(threads: threads))
        let tasks = pl.n * pl.groups * tiles
        let imageIn = pl.cin * pl.h * pl.w, imageOut = pl.cout * pl.p
        let weightCount = pl.cout * pl.k
        let chunks = min(threads, tasks)
        if chunks > 1 && tasks >= 2 * threads && weightCount * (chunks - 1) <= 8 << 20 {
            let maxColumns = pl.pointwise ? 0 : pl.k * pl.maxTileRows(of: tiles) * pl.wo
            // Chunk 0 accumulates straight into the result, the others into private copies.
            withScratch(perThread: maxColumns, shared: weightCount * (chunks - 1)) { scratch in
                let partials = scratch(-1)
                Compute.parallelChunks(tasks) { chunk, range in
                    let col = scratch(chunk)
                    let acc = chunk == 0 ? dwp : partials + (chunk - 1) * weightCount
                    acc.update(repeating: 0, count: weightCount)
                    for task in range {
                        let t = task % tiles, gi = (task / tiles) % pl.groups, b = task / (tiles * pl.groups)
                        let rows = pl.rows(t, of: tiles)
                        let c0 = rows.lowerBound * pl.wo, cols = rows.count * pl.wo
                        let img = xp + b * imageIn
                        let bmat: UnsafePointer<Float>, ldb: Int
                        if pl.pointwise {
                            bmat = img + gi * pl.cinG * pl.p + c0
                            ldb = pl.p
                        } else {
                            im2col(
                                img, channels: (gi * pl.cinG)..<((gi + 1) * pl.cinG), h: pl.h, w: pl.w, g: pl.geo,
                                wo: pl.wo, rows: rows, col: col, ldcol: cols)
                            bmat = UnsafePointer(col)
                            ldb = cols
                        }
                        BLAS.gemmSerial(
                            transB: true, m: pl.coutG, n: pl.k, k: cols,
                            a: gp + b * imageOut + gi * pl.coutG * pl.p + c0, lda: pl.p,
                            b: bmat, ldb: ldb, beta: 1, c: acc + gi * pl.coutG * pl.k, ldc: pl.k)
                    }
                }
                // Sum the private gradients into the result, in chunk order.
                Compute.parallelRanges(weightCount, minPerThread: 1 << 14) { r in
                    for c in 1..<chunks {
                        let src = partials + (c - 1) * weightCount
                        for i in r { dwp[i] += src[i] }
                    }
                }
            }
            return
        }
        withScratch(perThread: 0, shared: pl.pointwise ? 0 : pl.cin * pl.kk * pl.p) { scratch in
            let col = scratch(-1)
            for b in 0..<pl.n {
                let img = xp + b * imageIn
                let bmat: UnsafePointer<Float>
                if pl.pointwise {
                    bmat = img
                } else {
                    Compute.parallelRanges(pl.cin, minPerThread: 1) { r in
                        im2col(
                            img, channels: r, h: pl.h, w: pl.w, g: pl.geo, wo: pl.wo, rows: 0..<pl.ho,
                            col: col + r.lowerBound * pl.kk * pl.p, ldcol: pl.p)
                    }
                    bmat = UnsafePointer(col)
                }
                for gi in 0..<pl.groups {
                    BLAS.gemm(
                        transB: true, m: pl.coutG, n: pl.k, k: pl.p, a: gp + b * imageOut + gi * pl.coutG * pl.p,
                        lda: pl.p, b: bmat + gi * pl.k * pl.p, ldb: pl.p, beta: b == 0 ? 0 : 1,
                        c: dwp + gi * pl.coutG * pl.k, ldc: pl.k)
                }
            }
        }
    }

    // MARK: Row expansion (stems: few input channels, wide rows)

    /// Unfolds input rows `rows` (indices into the expanded range, row `r` is input row
    /// `r - ph`) of one image: expanded row `r` holds `[cin][kw][wo]` with
    /// `x[ci, r - ph, ox * sw - pw + kj * dw]`, zero outside the image.
    static func expandRows(
        _ pl: ConvPlan, image: UnsafePointer<Float>, rows: Range<Int>, into e: UnsafeMutablePointer<Float>, firstRow: Int = 0
    ) {
        let (kw, sw, pw, dw) = (pl.geo.kernel.1, pl.geo.stride.1, pl.geo.padding.1, pl.geo.dilation.1)
        let (h, w, wo) = (pl.h, pl.w, pl.wo)
        for r in rows {
            let iy = r - pl.geo.padding.0
            for ci in 0..<pl.cin {
                for kj in 0..<kw {
                    let dst = e + (((r - firstRow) * pl.cin + ci) * kw + kj) * wo
                    if iy < 0 || iy >= h {
                        dst.update(repeating: 0, count: wo)
                        continue
                    }
                    let off = kj * dw - pw
                    let oxLo = off < 0 ? min(wo, (-off + sw - 1) / sw) : 0
                    let oxHi = max(oxLo, w - off <= 0 ? 0 : min(wo, (w - off + sw - 1) / sw))
                    let srow = image + (ci * h + iy) * w + off
                    if oxLo > 0 { dst.update(repeating: 0, count: oxLo) }
                    var ox = oxLo
                    if sw == 1 {
                        if oxHi > oxLo { (dst + oxLo).update(from: srow + oxLo, count: oxHi - oxLo) }
                    } else if sw == 2 {
                        if oxHi > oxLo { gatherEven(dst + oxLo, srow + 2 * oxLo, oxHi - oxLo) }
                    } else {
                        while ox < oxHi { dst[ox] = srow[ox * sw]; ox += 1 }
                    }
                    if oxHi < wo { (dst + oxHi).update(repeating: 0, count: wo - oxHi) }
                }
            }
        }
    }

    /// The weights reordered to `[Cout, kh, Cin, kw]`, the row order of the expansion.
    static func weightsByRow(_ pl: ConvPlan, _ wp: UnsafePointer<Float>, into d: UnsafeMutablePointer<Float>) {
        let (kh, kw) = pl.geo.kernel
        for co in 0..<pl.cout {
            for ci in 0..<pl.cin {
                for ki in 0..<kh {
                    (d + ((co * kh + ki) * pl.cin + ci) * kw).update(from: wp + ((co * pl.cin + ci) * kh + ki) * kw, count: kw)
                }
            }
        }
    }

    /// Convolution through row expansion.
    ///
    /// im2col copies each input value about `kh * kw / (sh * sw)` times (12 for a 7x7/2
    /// stem); here each input row is unfolded once, as `[cin][kw][wo]`, and output row
    /// `oy` multiplies the `kh` consecutive expanded rows starting at `oy * sh` (one
    /// `[kh * cin * kw, wo]` matrix) by the weights reordered to `[Cout, kh, Cin, kw]`.
    /// That copies each value only `kw / sw` times; the product per output row
    /// (`Cout x kh*cin*kw x wo`) is still large enough for full-speed SGEMM.
    ///
    /// The output rows go in bands of ``rowExpansionBand(_:threads:)`` rows, each band
    /// expanding only the input rows it reads (the `kh - sh` rows two bands share are expanded
    /// twice): each output row is the same product, bit for bit, as with the whole image
    /// expanded at once. Measured (xception RetinaNet, 512 px, its 3x3 32->64 convolution at
    /// 256x256): the whole image's expansion was a 25 MiB scratch buffer, kept idle through
    /// the rest of the pass and on top of its peak.
    static func rowForward(
        _ pl: ConvPlan, input xp: UnsafePointer<Float>, weight wp: UnsafePointer<Float>,
        out op: UnsafeMutablePointer<Float>
    ) {
        let rowFloats = pl.expandedRowFloats, sh = pl.geo.stride.0, kh = pl.geo.kernel.0
        let band = rowExpansionBand(pl)
        let bandRows = (band - 1) * sh + kh
        withScratch(perThread: 0, shared: bandRows * rowFloats + pl.cout * pl.k) { scratch in
            let e = scratch(-1), wr = e + bandRows * rowFloats
            weightsByRow(pl, wp, into: wr)
            for b in 0..<pl.n {
                let img = xp + b * pl.cin * pl.h * pl.w
                let dst = op + b * pl.cout * pl.p
                for start in stride(from: 0, to: pl.ho, by: band) {
                    let end = min(pl.ho, start + band)
                    let first = start * sh, last = (end - 1) * sh + kh
                    Compute.parallelRanges(last - first, minPerThread: 8) { r in
                        expandRows(pl, image: img, rows: (first + r.lowerBound)..<(first + r.upperBound), into: e, firstRow: first)
                    }
                    Compute.parallelRanges(end - start, minPerThread: 1) { oys in
                        for oy in (start + oys.lowerBound)..<(start + oys.upperBound) {
                            BLAS.gemmSerial(
                                m: pl.cout, n: pl.wo, k: pl.k, a: wr, lda: pl.k, b: e + (oy * sh - first) * rowFloats, ldb: pl.wo,
                                c: dst + oy * pl.wo, ldc: pl.p)
                        }
                    }
                }
            }
        }
    }

    /// Output rows per band of ``rowForward(_:input:weight:out:)``: as many as
    /// ``ConvolutionSettings/rowExpansionBandFloats`` of expanded rows hold, rounded down to a multiple of
    /// `threads` so that every band's products divide evenly (at least `threads` rows, and at
    /// most `ho`).
    static func rowExpansionBand(_ pl: ConvPlan, threads: Int = Compute.threads) -> Int {
        let fit = (ConvolutionSettings.rowExpansionBandFloats / max(1, pl.expandedRowFloats) - pl.geo.kernel.0) / pl.geo.stride.0 + 1
        let t = max(1, threads)
        return min(pl.ho, max(t, fit / t * t))
    }

    /// The weight gradient through row expansion: per-thread sums over output rows of
    /// `dY[:, oy, :] x E_oy^T`, added in thread order, then reordered back.
    static func rowWeightGradient(
        _ pl: ConvPlan, input xp: UnsafePointer<Float>, gradOut gp: UnsafePointer<Float>,
        out dwp: UnsafeMutablePointer<Float>
    ) {
        let rowFloats = pl.expandedRowFloats, rows = pl.expandedRows, sh = pl.geo.stride.0
        let wcount = pl.cout * pl.k
        let chunks = min(Compute.threads, pl.ho)
        let (kh, kw) = pl.geo.kernel
        withScratch(perThread: 0, shared: rows * rowFloats + chunks * wcount) { scratch in
            let e = scratch(-1), partials = e + rows * rowFloats
            partials.update(repeating: 0, count: chunks * wcount)
            for b in 0..<pl.n {
                let img = xp + b * pl.cin * pl.h * pl.w
                Compute.parallelRanges(rows, minPerThread: 8) { r in expandRows(pl, image: img, rows: r, into: e) }
                let gout = gp + b * pl.cout * pl.p
                Compute.parallelChunks(pl.ho) { chunk, oys in
                    let acc = partials + chunk * wcount
                    for oy in oys {
                        BLAS.gemmSerial(
                            transB: true, m: pl.cout, n: pl.k, k: pl.wo, a: gout + oy * pl.wo, lda: pl.p,
                            b: e + oy * sh * rowFloats, ldb: pl.wo, beta: 1, c: acc, ldc: pl.k)
                    }
                }
            }
            // Sum the partials (fixed order) and reorder [Cout, kh, Cin, kw] -> [Cout, Cin, kh, kw].
            Compute.parallelFor(pl.cout, minPerThread: 4) { co in
                for ci in 0..<pl.cin {
                    for ki in 0..<kh {
                        let src = ((co * kh + ki) * pl.cin + ci) * kw, dst = dwp + ((co * pl.cin + ci) * kh + ki) * kw
                        for kj in 0..<kw {
                            var s = partials[src + kj]
                            for c in 1..<max(1, chunks) { s += partials[c * wcount + src + kj] }
                            dst[kj] = s
                        }
                    }
                }
            }
        }
    }

    // MARK: Depthwise (one input channel per group, channel multiplier m)

    static func depthwiseForward(input: Tensor, weight: Tensor, geo: Conv2DGeometry, out: Tensor) {
        let (n, cin, h, w) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        let cout = out.shape[1], ho = out.shape[2], wo = out.shape[3]
        let m = cout / cin
        let xp = input.pointer, wp = weight.pointer, op = out.mutablePointer
        Compute.parallelFor(n * cout, minPerThread: 4) { idx in
            let b = idx / cout, oc = idx % cout, c = oc / m
            depthwisePlane(
                xp + (b * cin + c) * h * w, h: h, w: w, kernel: wp + oc * geo.kernel.0 * geo.kernel.1, geo: geo,
                into: op + idx * ho * wo, ho: ho, wo: wo)
        }
    }

    /// One output plane of a depthwise convolution: `dst` (`[ho, wo]`) = the `[h, w]` plane at
    /// `plane` correlated with one `kh x kw` kernel. The arithmetic of every depthwise forward
    /// pass, so that ``depthwiseForwardInPlace(input:weight:bias:geo:)`` gives the same bits.
    @inline(__always)
    static func depthwisePlane(
        _ plane: UnsafePointer<Float>, h: Int, w: Int, kernel kern: UnsafePointer<Float>, geo: Conv2DGeometry,
        into dst: UnsafeMutablePointer<Float>, ho: Int, wo: Int
    ) {
        let (kh, kw) = geo.kernel, (sh, sw) = geo.stride, (ph, pw) = geo.padding, (dh, dw) = geo.dilation
        dst.update(repeating: 0, count: ho * wo)
        for ki in 0..<kh {
            for kj in 0..<kw {
                let wv = kern[ki * kw + kj]
                let off = kj * dw - pw
                let oxLo = off < 0 ? min(wo, (-off + sw - 1) / sw) : 0
                let oxHi = w - off <= 0 ? 0 : min(wo, (w - off + sw - 1) / sw)
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

    /// A depthwise convolution with one output channel per input channel whose output has the
    /// input's shape (stride 1, "same" padding), written over `input`: each thread copies a
    /// plane aside (one plane of scratch per thread) and writes the plane's output where it
    /// was. The same bits as ``depthwiseForward(input:weight:geo:out:)`` plus the bias. Returns
    /// false, touching nothing, for any other depthwise convolution.
    static func depthwiseForwardInPlace(input: Tensor, weight: Tensor, bias: Tensor?, geo: Conv2DGeometry) -> Bool {
        let (n, c, h, w) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        guard weight.shape[0] == c, weight.shape[1] == 1, geo.output(h: h, w: w) == (h, w) else { return false }
        let plane = h * w, wp = weight.pointer, xp = input.mutablePointer
        withScratch(perThread: plane) { scratch in
            Compute.parallelChunks(n * c) { chunk, planes in
                let copy = scratch(chunk)
                for idx in planes {
                    let dst = xp + idx * plane
                    copy.update(from: dst, count: plane)
                    depthwisePlane(copy, h: h, w: w, kernel: wp + (idx % c) * geo.kernel.0 * geo.kernel.1, geo: geo, into: dst, ho: h, wo: w)
                }
            }
        }
        if let bias { addBias(ConvPlan(input: input.shape, cout: c, geo: geo, groups: c), bias: bias.pointer, out: xp) }
        return true
    }

    /// A depthwise convolution's input gradient (`input` nil: only its shape is read) or its
    /// weight gradient (`input` given).
    static func depthwiseBackward(
        inputShape: [Int], input: Tensor?, weight: Tensor, gradOut: Tensor, geo: Conv2DGeometry
    ) -> (Tensor?, Tensor?) {
        let needInput = input == nil, needWeight = input != nil
        let (n, cin, h, w) = (inputShape[0], inputShape[1], inputShape[2], inputShape[3])
        let cout = gradOut.shape[1], ho = gradOut.shape[2], wo = gradOut.shape[3]
        let m = cout / cin
        let (kh, kw) = geo.kernel, (sh, sw) = geo.stride, (ph, pw) = geo.padding, (dh, dw) = geo.dilation
        let wp = weight.pointer, gp = gradOut.pointer
        func range(_ kj: Int) -> (Int, Int, Int) {
            let off = kj * dw - pw
            let oxLo = off < 0 ? min(wo, (-off + sw - 1) / sw) : 0
            let oxHi = w - off <= 0 ? 0 : min(wo, (w - off + sw - 1) / sw)
            return (off, oxLo, oxHi)
        }
        var gx: Tensor?
        if needInput {
            let t = Tensor.zeros(inputShape)
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
                                if sw == 1 {
                                    for ox in lo..<hi { drow[ox] += wv * grow[ox] }
                                } else {
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
            let dwp = t.mutablePointer, xp = input!.pointer
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
                                if sw == 1 {
                                    for ox in lo..<hi { s += srow[ox] * grow[ox] }
                                } else {
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
