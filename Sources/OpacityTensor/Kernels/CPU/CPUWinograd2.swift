import Foundation

// Winograd F(2x2, 3x3) for dense 3x3 stride-1 convolutions on mid-size maps (Lavin and Gray,
// "Fast Algorithms for Convolutional Neural Networks", 2016; points 0, +-1 and infinity).
//
// Each 2x2 block of output pixels (a tile) comes from the 4x4 input block around it:
// `Y = A^T [ sum over ci of (G g G^T) * (B^T d B) ] A`, with `B^T` and `A^T` of 0 and +-1
// only. The sums over the input channels are 16 matrix products, one per cell `xi` of the
// 4x4 transformed tile: `M[xi] = U[xi] x V[xi]`, `U[xi]` `[Cout, Cin]`, `V[xi]` `[Cin, tiles]`.
// That is 16 multiply-adds per input channel, output channel and 2x2 tile (4 per output pixel)
// against F(4x4, 3x3)'s 36 per 4x4 tile (2.25 per pixel) and im2col's 9 per pixel; but a map
// has four times as many 2x2 tiles as 4x4 ones, so on the maps where F(4x4)'s products are
// too narrow (32x32 and smaller at batch 2) these are wide enough to run near the SGEMM rate.
//
// The forward pass (and the stride-1 input gradient, itself such a convolution) cuts the tile
// rows of the whole batch into blocks (a block may span images). With enough tiles each thread
// takes whole blocks (transform, 16 products, output transform); with few, the threads share
// each block: the transform split over channels, the 16 products over threads, the output
// transform over output channels. The weight gradient is the transpose,
// `dU[xi] = Z[xi] x V[xi]^T` with `Z = A dY A^T`, then `dW = G^T dU G`, with the 16 products
// of each block split over the threads and each summed by one thread in block order.

extension ConvolutionSettings {
    nonisolated(unsafe) private static var _winograd2: Bool = {
        ProcessInfo.processInfo.environment["OPACITY_WINOGRAD2"] != "0"
    }()

    /// Whether dense 3x3 stride-1 convolutions that F(4x4, 3x3) does not take (too few
    /// tiles) run Winograd F(2x2, 3x3) (``Winograd2Kernels``) when they have enough channels
    /// (``winograd2MinChannels``) and tiles (``winograd2MinTiles``): the forward pass, the
    /// input gradient and, with ``winogradWeightGradient``, the weight gradient. Needs
    /// ``winograd`` on too. Default on; `OPACITY_WINOGRAD2=0` starts with it off (im2col).
    ///
    /// Results differ from im2col's by rounding only and repeat bit for bit at a fixed thread
    /// count. Set it before running kernels, not while they run.
    public static var winograd2: Bool {
        get { _winograd2 }
        set { _winograd2 = newValue }
    }

    nonisolated(unsafe) private static var _winograd2MinChannels: Int = {
        if let s = ProcessInfo.processInfo.environment["OPACITY_WINOGRAD2_MIN_CHANNELS"], let v = Int(s), v >= 0 { return v }
        return 32
    }()

    /// The least `cin * cout / (cin + cout)` for F(2x2, 3x3) (`OPACITY_WINOGRAD2_MIN_CHANNELS`,
    /// default 32: 64 channels in and out). 0 lets every shape the other conditions allow take
    /// it (tests). Set it before running kernels, not while they run.
    public static var winograd2MinChannels: Int {
        get { _winograd2MinChannels }
        set { _winograd2MinChannels = newValue }
    }

    nonisolated(unsafe) private static var _winograd2WeightGradientMinChannels: Int = {
        if let s = ProcessInfo.processInfo.environment["OPACITY_WINOGRAD2_WGRAD_MIN_CHANNELS"], let v = Int(s), v >= 0 { return v }
        return 96
    }()

    /// The least `cin * cout / (cin + cout)` for the F(2x2, 3x3) weight gradient
    /// (`OPACITY_WINOGRAD2_WGRAD_MIN_CHANNELS`, default 96: 192 channels in and out; 64->64 and
    /// 128->128 measured slower than im2col). 0: no limit beyond ``winograd2MinChannels``.
    /// Set it before running kernels, not while they run.
    public static var winograd2WeightGradientMinChannels: Int {
        get { _winograd2WeightGradientMinChannels }
        set { _winograd2WeightGradientMinChannels = newValue }
    }

    /// The fewest 2x2 output tiles over the batch for F(2x2, 3x3)
    /// (`OPACITY_WINOGRAD2_MIN_TILES`, default 64: a 16x16 map at batch 1; at 8x8, batch 2,
    /// the 16 transformed weight matrices cost more to make and read than the products save).
    /// Set it before running kernels, not while they run.
    public static var winograd2MinTiles: Int {
        get { _winograd2MinTiles }
        set { _winograd2MinTiles = newValue }
    }

    nonisolated(unsafe) private static var _winograd2MinTiles: Int = positiveIntegerSetting("OPACITY_WINOGRAD2_MIN_TILES", default: 64)

    /// Tiles per block when each thread takes whole blocks (`OPACITY_WINOGRAD2_TILES`,
    /// default 256).
    nonisolated(unsafe) static var winograd2Tiles: Int = positiveIntegerSetting("OPACITY_WINOGRAD2_TILES", default: 256)

    /// The forward pass shares each block among the threads when there are fewer tiles than
    /// this many per thread (`OPACITY_WINOGRAD2_SHARED_BELOW`, default 64; measured: 256->256
    /// at 16x16 batch 1 (64 tiles) faster shared, at batch 2 (128 tiles) faster with a block
    /// per thread).
    nonisolated(unsafe) static var winograd2SharedBelow: Int = positiveIntegerSetting("OPACITY_WINOGRAD2_SHARED_BELOW", default: 64)

    /// Tiles per block when the threads share a block (`OPACITY_WINOGRAD2_SHARED_TILES`,
    /// default 512).
    nonisolated(unsafe) static var winograd2SharedTiles: Int = positiveIntegerSetting("OPACITY_WINOGRAD2_SHARED_TILES", default: 512)

    /// How the forward pass splits work (`OPACITY_WINOGRAD2_MODE`: `auto` (default),
    /// `private`: every thread its own blocks, `shared`: threads share each block).
    nonisolated(unsafe) static var winograd2Mode: String = ProcessInfo.processInfo.environment["OPACITY_WINOGRAD2_MODE"] ?? "auto"

    /// Tiles per block of the F(2x2, 3x3) weight gradient (`OPACITY_WINOGRAD2_WGRAD_TILES`;
    /// 0, the default: `1 Mi / (16 (cin + cout))`, 128 to 2048). Set it before running kernels,
    /// not while they run.
    public static var winograd2WeightGradientTiles: Int {
        get { _winograd2WeightGradientTiles }
        set { _winograd2WeightGradientTiles = newValue }
    }

    nonisolated(unsafe) private static var _winograd2WeightGradientTiles: Int = positiveIntegerSetting(
        "OPACITY_WINOGRAD2_WGRAD_TILES", default: 0)
}

extension ConvPlan {
    /// Dense 3x3 stride-1 undilated, not the row expansion's, with
    /// `cin * cout / (cin + cout) >= ConvolutionSettings.winograd2MinChannels` (and at least 16
    /// each) and ``ConvolutionSettings/winograd2MinTiles`` output tiles of 2x2 over the batch.
    var winograd2Eligible: Bool {
        groups == 1 && geo.kernel == (3, 3) && geo.stride == (1, 1) && geo.dilation == (1, 1) && !rowExpansion && cin >= 16
            && cout >= 16 && cin * cout >= ConvolutionSettings.winograd2MinChannels * (cin + cout)
            && n * ((ho + 1) / 2) * ((wo + 1) / 2) >= ConvolutionSettings.winograd2MinTiles
    }

    /// Whether the forward pass (or, on the transposed plan, the input gradient) runs
    /// F(2x2, 3x3): both settings on, F(4x4, 3x3) not taken, ``winograd2Eligible``.
    var usesWinograd2: Bool {
        ConvolutionSettings.winograd && ConvolutionSettings.winograd2 && !usesWinograd && winograd2Eligible
    }

    /// Whether the weight gradient runs F(2x2, 3x3): ``ConvolutionSettings/winograd``,
    /// ``ConvolutionSettings/winogradWeightGradient`` and ``ConvolutionSettings/winograd2`` on,
    /// F(4x4, 3x3)'s weight gradient not taken, ``winograd2Eligible``, and
    /// `cin * cout / (cin + cout) >= ConvolutionSettings.winograd2WeightGradientMinChannels`.
    var usesWinograd2WeightGradient: Bool {
        ConvolutionSettings.winograd && ConvolutionSettings.winogradWeightGradient && ConvolutionSettings.winograd2
            && !usesWinogradWeightGradient && winograd2Eligible
            && cin * cout >= ConvolutionSettings.winograd2WeightGradientMinChannels * (cin + cout)
    }
}

/// Winograd F(2x2, 3x3) convolution kernels (see the file comment).
enum Winograd2Kernels {
    /// The transformed weights `U` `[16][Cout][Cin]` of `weight` `[Cout, Cin, 3, 3]`, or with
    /// `flipped` of the input gradient's kernel `W'[ci, co, 2 - i, 2 - j] = W[co, ci, i, j]`.
    /// Cached on the weight's storage as ``WinogradKernels/transformedWeights(_:flipped:)``
    /// caches F(4x4, 3x3)'s (from the second use at one weight version).
    static func transformedWeights(_ weight: Tensor, flipped: Bool = false) -> TensorStorage {
        let (cout, cin) = (weight.shape[0], weight.shape[1])
        let key = "winograd23\(flipped ? "-flipped" : "") \(cout)x\(cin)"
        let wp = weight.pointer
        return weight.storage.derived(key, count: 16 * cout * cin, keep: Autograd.isInference) { u in
            if flipped {
                transformWeights(wp, cout: cin, cin: cout, flipped: true, into: u)
            } else {
                transformWeights(wp, cout: cout, cin: cin, into: u)
            }
        }
    }

    /// `U[xi][co][ci] = (G g G^T)[xi]` (`xi = 4 i + k`) for `g` `[cout, cin, 3, 3]` in `wp`,
    /// written to `u` (`16 * cout * cin` floats). With `flipped`, `wp` holds `W`
    /// `[cin', cout', 3, 3]` = `[cout, cin, 3, 3]` read as `g[co, ci, i, j] = W[ci, co, 2 - i, 2 - j]`.
    /// `G` rows: `(1, 0, 0)`, `(1/2, 1/2, 1/2)`, `(1/2, -1/2, 1/2)`, `(0, 0, 1)`.
    static func transformWeights(
        _ wp: UnsafePointer<Float>, cout: Int, cin: Int, flipped: Bool = false, into u: UnsafeMutablePointer<Float>
    ) {
        let cinPad = (cin + 7) & ~7
        let half = SIMD8<Float>(repeating: 0.5)
        Compute.parallelRanges(cout, minPerThread: 8) { range in
            // g[j][ci] for the 9 taps of one output channel, eight input channels per vector;
            // the channel's 16 transformed rows are staged in `rows` ([16][cinPad]) and copied
            // out row by row, as in ``WinogradKernels/transformWeights(_:cout:cin:flipped:into:)``
            // (for 16 rows no faster measured, 0.26-0.30 ms for 256x256 weights either way, but
            // with no separate path for a last partial group of channels).
            var g = [Float](repeating: 0, count: 9 * cinPad)
            var rows = [Float](repeating: 0, count: 16 * cinPad)
            withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: 12) { tbuf in
                let t = tbuf.baseAddress!
                g.withUnsafeMutableBufferPointer { gb in
                    rows.withUnsafeMutableBufferPointer { rb in
                        let gp = gb.baseAddress!, rp = rb.baseAddress!
                        for co in range {
                            if flipped {
                                for ci in 0..<cin {
                                    let src = wp + (ci * cout + co) * 9
                                    for j in 0..<9 { gp[j * cinPad + ci] = src[8 - j] }
                                }
                            } else {
                                let src = wp + co * cin * 9
                                for ci in 0..<cin {
                                    for j in 0..<9 { gp[j * cinPad + ci] = src[ci * 9 + j] }
                                }
                            }
                            var c0 = 0
                            while c0 < cin {
                                // G g, [4][3] (tap j = 3 row + column).
                                for c in 0..<3 {
                                    let a = load8(gp, c * cinPad + c0), b = load8(gp, (3 + c) * cinPad + c0)
                                    let d = load8(gp, (6 + c) * cinPad + c0)
                                    let s = a + d
                                    t[c] = a
                                    t[3 + c] = (s + b) * half
                                    t[6 + c] = (s - b) * half
                                    t[9 + c] = d
                                }
                                // (G g) G^T, row by row.
                                let dst = rp + c0
                                for i in 0..<4 {
                                    let a = t[3 * i], b = t[3 * i + 1], d = t[3 * i + 2]
                                    let s = a + d
                                    store8(dst, (4 * i) * cinPad, a)
                                    store8(dst, (4 * i + 1) * cinPad, (s + b) * half)
                                    store8(dst, (4 * i + 2) * cinPad, (s - b) * half)
                                    store8(dst, (4 * i + 3) * cinPad, d)
                                }
                                c0 += 8
                            }
                            for xi in 0..<16 {
                                (u + (xi * cout + co) * cin).update(from: rp + xi * cinPad, count: cin)
                            }
                        }
                    }
                }
            }
        }
    }

    /// `B^T (d0, d1, d2, d3)^T`: `d0 - d2`, `d1 + d2`, `d2 - d1`, `d1 - d3`.
    @inline(__always)
    static func transformB(
        _ d0: SIMD8<Float>, _ d1: SIMD8<Float>, _ d2: SIMD8<Float>, _ d3: SIMD8<Float>
    ) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
        (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
    }

    /// `A^T (m0, m1, m2, m3)^T`: `m0 + m1 + m2`, `m1 - m2 - m3`.
    @inline(__always)
    static func transformA(
        _ m0: SIMD8<Float>, _ m1: SIMD8<Float>, _ m2: SIMD8<Float>, _ m3: SIMD8<Float>
    ) -> (SIMD8<Float>, SIMD8<Float>) {
        (m0 + m1 + m2, m1 - m2 - m3)
    }

    /// `A (y0, y1)^T`: `y0`, `y0 + y1`, `y0 - y1`, `-y1`.
    @inline(__always)
    static func transformAT(_ y0: SIMD8<Float>, _ y1: SIMD8<Float>) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
        (y0, y0 + y1, y0 - y1, -y1)
    }

    /// The sizes of one F(2x2, 3x3) convolution.
    struct Plan {
        let pl: ConvPlan
        /// Tiles per row and per column of the output.
        let tw: Int, th: Int
        /// Groups of eight tiles per tile row, and the width of a padded input row buffer.
        let groupsPerRow: Int, bufferWidth: Int

        init(_ pl: ConvPlan) {
            self.pl = pl
            tw = (pl.wo + 1) / 2
            th = (pl.ho + 1) / 2
            groupsPerRow = (tw + 7) / 8
            bufferWidth = max(16 * groupsPerRow + 8, pl.geo.padding.1 + pl.w)
        }

        /// Calls `body(image, tileRows, offset)` for each image's share of the global tile
        /// rows `rows` (numbered over the batch), `offset` the first tile's index in the block.
        func segments(_ rows: Range<Int>, _ body: (Int, Range<Int>, Int) -> Void) {
            var r = rows.lowerBound
            while r < rows.upperBound {
                let b = r / th, end = min(rows.upperBound, (b + 1) * th)
                body(b, (r - b * th)..<(end - b * th), (r - rows.lowerBound) * tw)
                r = end
            }
        }
    }

    /// Whether the forward pass of `pl` shares each block among the threads (few tiles).
    static func sharesBlocks(_ pl: ConvPlan, threads: Int) -> Bool {
        switch ConvolutionSettings.winograd2Mode {
        case "shared": return threads > 1
        case "private": return false
        default:
            let wg = Plan(pl)
            return threads > 1 && pl.n * wg.th * wg.tw < threads * ConvolutionSettings.winograd2SharedBelow
        }
    }

    /// `out = conv(input, weight) + bias` for a plan with ``ConvPlan/winograd2Eligible``, from
    /// the weights' transform `u` (``transformedWeights(_:flipped:)``, `16 * cout * cin` floats).
    static func forward(
        _ pl: ConvPlan, input xp: UnsafePointer<Float>, transformed u: UnsafePointer<Float>, bias bp: UnsafePointer<Float>?,
        out op: UnsafeMutablePointer<Float>
    ) {
        BLAS.ensureConfigured()
        let wg = Plan(pl)
        let (cin, cout, tw) = (pl.cin, pl.cout, wg.tw)
        let threads = Compute.threads
        let totalRows = pl.n * wg.th
        let imageIn = cin * pl.h * pl.w, imageOut = cout * pl.p
        let rowFloats = 4 * wg.bufferWidth
        if sharesBlocks(pl, threads: threads) {
            let rowsPerBlock = max(1, min(totalRows, ConvolutionSettings.winograd2SharedTiles / tw))
            let blocks = (totalRows + rowsPerBlock - 1) / rowsPerBlock
            let maxTiles = rowsPerBlock * tw
            let vSlot = (16 * cin * maxTiles + 15) & ~15, mSlot = (16 * cout * maxTiles + 15) & ~15
            withScratch(perThread: rowFloats, shared: vSlot + mSlot) { scratch in
                let v = scratch(-1), m = v + vSlot
                for blk in 0..<blocks {
                    let rows = (blk * rowsPerBlock)..<min(totalRows, (blk + 1) * rowsPerBlock)
                    let tiles = rows.count * tw
                    Compute.parallelChunks(cin) { chunk, range in
                        wg.segments(rows) { b, tys, offset in
                            transformInput(
                                wg, image: xp + b * imageIn, tileRows: tys, rowBuffer: scratch(chunk), into: v + offset, ldv: tiles,
                                channels: range)
                        }
                    }
                    Compute.parallelRanges(16, minPerThread: 1) { cells in
                        for xi in cells {
                            BLAS.gemmSerial(
                                m: cout, n: tiles, k: cin, a: u + xi * cout * cin, lda: cin, b: v + xi * cin * tiles, ldb: tiles,
                                c: m + xi * cout * tiles, ldc: tiles)
                        }
                    }
                    Compute.parallelRanges(cout, minPerThread: 1) { range in
                        wg.segments(rows) { b, tys, offset in
                            transformOutput(
                                wg, m: m + offset, ldm: tiles, tileRows: tys, bias: bp, out: op + b * imageOut, channels: range)
                        }
                    }
                }
            }
            return
        }
        let targetRows = max(1, min(totalRows, ConvolutionSettings.winograd2Tiles / tw))
        // Every thread has work, the same amount when there are few blocks (the batch's tile
        // rows split evenly).
        let blocks = balancedBlockCount((totalRows + targetRows - 1) / targetRows, rows: totalRows, images: 1, threads: threads)
        let maxTiles = (totalRows + blocks - 1) / blocks * tw
        let vSlot = (16 * cin * maxTiles + 15) & ~15, mSlot = (16 * cout * maxTiles + 15) & ~15
        withScratch(perThread: vSlot + mSlot + rowFloats) { scratch in
            Compute.parallelChunks(blocks) { chunk, range in
                let v = scratch(chunk), m = v + vSlot, rowBuf = m + mSlot
                for blk in range {
                    let rows = (totalRows * blk / blocks)..<(totalRows * (blk + 1) / blocks)
                    let tiles = rows.count * tw
                    wg.segments(rows) { b, tys, offset in
                        transformInput(
                            wg, image: xp + b * imageIn, tileRows: tys, rowBuffer: rowBuf, into: v + offset, ldv: tiles,
                            channels: 0..<cin)
                    }
                    for xi in 0..<16 {
                        BLAS.gemmSerial(
                            m: cout, n: tiles, k: cin, a: u + xi * cout * cin, lda: cin, b: v + xi * cin * tiles, ldb: tiles,
                            c: m + xi * cout * tiles, ldc: tiles)
                    }
                    wg.segments(rows) { b, tys, offset in
                        transformOutput(
                            wg, m: m + offset, ldm: tiles, tileRows: tys, bias: bp, out: op + b * imageOut, channels: 0..<cout)
                    }
                }
            }
        }
    }

    /// `V[xi][c][t] = (B^T d B)[xi]` for input channels `channels` of one image and every tile
    /// `t = (ty - lowerBound) * tw + tx` of tile rows `tileRows`, rows `ldv` floats apart (so
    /// `v[xi * cin * ldv + c * ldv + t]`). `rowBuffer` holds four rows of ``Plan/bufferWidth``.
    static func transformInput(
        _ wg: Plan, image: UnsafePointer<Float>, tileRows: Range<Int>, rowBuffer: UnsafeMutablePointer<Float>,
        into v: UnsafeMutablePointer<Float>, ldv: Int, channels: Range<Int>
    ) {
        let pl = wg.pl
        let (h, w, ph, pw) = (pl.h, pl.w, pl.geo.padding.0, pl.geo.padding.1)
        let bw = wg.bufferWidth, tw = wg.tw
        let stride16 = pl.cin * ldv
        withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: 33) { buf in
            let d = buf.baseAddress!, t = d + 16
            let lp = UnsafeMutableRawPointer(d + 32).assumingMemoryBound(to: Float.self)
            for c in channels {
                let plane = image + c * h * w
                for ty in tileRows {
                    // The four input rows of this tile row, zero-padded: buffer column x holds
                    // input column x - pw.
                    for j in 0..<4 {
                        let row = rowBuffer + j * bw
                        let iy = 2 * ty - ph + j
                        if iy < 0 || iy >= h {
                            row.update(repeating: 0, count: bw)
                            continue
                        }
                        if pw > 0 { row.update(repeating: 0, count: pw) }
                        (row + pw).update(from: plane + iy * w, count: w)
                        if bw > pw + w { (row + pw + w).update(repeating: 0, count: bw - pw - w) }
                    }
                    let tbase = (ty - tileRows.lowerBound) * tw
                    for gi in 0..<wg.groupsPerRow {
                        let x0 = 16 * gi
                        // d[j][l]: input row j, column 2 * tile + l, for eight tiles.
                        for j in 0..<4 {
                            let r = UnsafeRawPointer(rowBuffer + j * bw + x0)
                            let a = r.loadUnaligned(as: SIMD16<Float>.self)
                            let b = r.loadUnaligned(fromByteOffset: 8, as: SIMD16<Float>.self)
                            d[j * 4 + 0] = a.evenHalf
                            d[j * 4 + 1] = a.oddHalf
                            d[j * 4 + 2] = b.evenHalf
                            d[j * 4 + 3] = b.oddHalf
                        }
                        // Columns first (over j, for each l), then rows (over l).
                        for l in 0..<4 {
                            let r = transformB(d[l], d[4 + l], d[8 + l], d[12 + l])
                            t[l] = r.0
                            t[4 + l] = r.1
                            t[8 + l] = r.2
                            t[12 + l] = r.3
                        }
                        let count = min(8, tw - 8 * gi)
                        let dst = v + c * ldv + tbase + 8 * gi
                        for i in 0..<4 {
                            let r = transformB(t[i * 4], t[i * 4 + 1], t[i * 4 + 2], t[i * 4 + 3])
                            let row = dst + i * 4 * stride16
                            if count == 8 {
                                store8(row, 0, r.0)
                                store8(row, stride16, r.1)
                                store8(row, 2 * stride16, r.2)
                                store8(row, 3 * stride16, r.3)
                            } else {
                                for (k, value) in [r.0, r.1, r.2, r.3].enumerated() {
                                    store8(lp, 0, value)
                                    (row + k * stride16).update(from: lp, count: count)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `out[co, 2ty + r, 2tx + c] = (A^T M A)[r][c] (+ bias[co])` for output channels
    /// `channels` of one image and the tiles of `tileRows`, clipped to the output's `ho x wo`;
    /// `m` holds `M[xi][co][t]` (`m[xi * cout * ldm + co * ldm + t]`).
    static func transformOutput(
        _ wg: Plan, m: UnsafePointer<Float>, ldm: Int, tileRows: Range<Int>, bias: UnsafePointer<Float>?,
        out: UnsafeMutablePointer<Float>, channels: Range<Int>
    ) {
        let pl = wg.pl
        let (ho, wo, tw) = (pl.ho, pl.wo, wg.tw)
        let stride16 = pl.cout * ldm
        withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: 8) { sbuf in
            let s = sbuf.baseAddress!
            for co in channels {
                let bv = bias?[co] ?? 0
                let dstPlane = out + co * pl.p
                for ty in tileRows {
                    let tbase = (ty - tileRows.lowerBound) * tw
                    for gi in 0..<wg.groupsPerRow {
                        let src = m + co * ldm + tbase + 8 * gi
                        // Rows first (over i, for each k), then columns (over k).
                        for k in 0..<4 {
                            let r = transformA(
                                load8(src, k * stride16), load8(src, (4 + k) * stride16), load8(src, (8 + k) * stride16),
                                load8(src, (12 + k) * stride16))
                            s[k] = r.0
                            s[4 + k] = r.1
                        }
                        let count = min(8, tw - 8 * gi)
                        for r in 0..<2 {
                            let oy = 2 * ty + r
                            if oy >= ho { break }
                            let y = transformA(s[r * 4], s[r * 4 + 1], s[r * 4 + 2], s[r * 4 + 3])
                            let row = dstPlane + oy * wo
                            let ox0 = 16 * gi
                            if ox0 + 16 <= wo && count == 8 {
                                let even = y.0 + bv, odd = y.1 + bv
                                for lane in 0..<8 {
                                    row[ox0 + 2 * lane] = even[lane]
                                    row[ox0 + 2 * lane + 1] = odd[lane]
                                }
                            } else {
                                for lane in 0..<count {
                                    let x = ox0 + 2 * lane
                                    if x < wo { row[x] = y.0[lane] + bv }
                                    if x + 1 < wo { row[x + 1] = y.1[lane] + bv }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    // MARK: Weight gradient

    /// Tiles per block of the weight gradient: the transformed block
    /// (`16 * (cin + cout) * tiles` floats) near 4 MiB, 128 to 2048 tiles (measured, 256->256 at
    /// 32x32, batch 2: 128 tiles per block 32.7-34.4 ms per step, 256 35.3, 512 37.0-45.5).
    static func weightGradientBlockTiles(_ pl: ConvPlan) -> Int {
        if ConvolutionSettings.winograd2WeightGradientTiles > 0 { return ConvolutionSettings.winograd2WeightGradientTiles }
        return max(128, min(2048, (1 << 20) / (16 * (pl.cin + pl.cout))))
    }

    /// The weight gradient `dW` `[Cout, Cin, 3, 3]` of a convolution with
    /// ``ConvPlan/winograd2Eligible``, from its input `x` `[N, Cin, H, W]` and output gradient
    /// `dY` `[N, Cout, Ho, Wo]`: `dU[xi] = sum over blocks of Z[xi] x V[xi]^T`, each of the 16
    /// products summed by one thread in block order (the same result at any thread count),
    /// then `dW = G^T dU G`.
    static func weightGradient(
        _ pl: ConvPlan, input xp: UnsafePointer<Float>, gradOut gp: UnsafePointer<Float>, out dwp: UnsafeMutablePointer<Float>
    ) {
        BLAS.ensureConfigured()
        let wg = Plan(pl)
        let (cin, cout, tw) = (pl.cin, pl.cout, wg.tw)
        let rowsPerBlock = max(1, weightGradientBlockTiles(pl) / tw)
        let totalRows = pl.n * wg.th
        let blocks = (totalRows + rowsPerBlock - 1) / rowsPerBlock
        let maxTiles = min(rowsPerBlock, totalRows) * tw
        let vSlot = (16 * cin * maxTiles + 15) & ~15, zSlot = (16 * cout * maxTiles + 15) & ~15
        let uFloats = 16 * cout * cin
        let outRowWidth = 16 * wg.groupsPerRow + 16
        let perThread = max(4 * wg.bufferWidth, 2 * outRowWidth)
        withScratch(perThread: perThread, shared: vSlot + zSlot + uFloats) { scratch in
            let v = scratch(-1), z = v + vSlot, du = z + zSlot
            for blk in 0..<blocks {
                let rows = (blk * rowsPerBlock)..<min(totalRows, (blk + 1) * rowsPerBlock)
                let tiles = rows.count * tw
                // Transform: channels 0..<cin of the input, then cin..<cin+cout of dY.
                Compute.parallelChunks(cin + cout) { chunk, range in
                    let rowBuf = scratch(chunk)
                    wg.segments(rows) { b, tys, offset in
                        let inCh = range.clamped(to: 0..<cin)
                        if !inCh.isEmpty {
                            transformInput(
                                wg, image: xp + b * cin * pl.h * pl.w, tileRows: tys, rowBuffer: rowBuf, into: v + offset, ldv: tiles,
                                channels: inCh)
                        }
                        let outCh = range.clamped(to: cin..<(cin + cout))
                        if !outCh.isEmpty {
                            transformGradOut(
                                wg, gradImage: gp + b * cout * pl.p, tileRows: tys, rowBuffer: rowBuf, rowWidth: outRowWidth,
                                into: z + offset, ldz: tiles, channels: (outCh.lowerBound - cin)..<(outCh.upperBound - cin))
                        }
                    }
                }
                // dU[xi] (+)= Z[xi] x V[xi]^T, one thread per product.
                Compute.parallelRanges(16, minPerThread: 1) { cells in
                    for xi in cells {
                        BLAS.gemmSerial(
                            transB: true, m: cout, n: cin, k: tiles, a: z + xi * cout * tiles, lda: tiles, b: v + xi * cin * tiles,
                            ldb: tiles, beta: blk == 0 ? 0 : 1, c: du + xi * cout * cin, ldc: cin)
                    }
                }
            }
            inverseTransformWeights(UnsafePointer(du), cout: cout, cin: cin, into: dwp)
        }
    }

    /// `Z[xi][co][t] = (A dY_t A^T)[xi]` for output-gradient channels `channels` of one image and
    /// every tile of `tileRows`, rows `ldz` floats apart; `dY_t` is the 2x2 block of `dY` at
    /// `(2 ty, 2 tx)`, zero beyond the output. `rowBuffer` holds two rows of `rowWidth` floats
    /// (at least `16 * groupsPerRow + 16`).
    static func transformGradOut(
        _ wg: Plan, gradImage: UnsafePointer<Float>, tileRows: Range<Int>, rowBuffer: UnsafeMutablePointer<Float>, rowWidth bw: Int,
        into z: UnsafeMutablePointer<Float>, ldz: Int, channels: Range<Int>
    ) {
        let pl = wg.pl
        let (ho, wo, tw) = (pl.ho, pl.wo, wg.tw)
        let stride16 = pl.cout * ldz
        withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: 13) { buf in
            let d = buf.baseAddress!, t = d + 4
            let lp = UnsafeMutableRawPointer(d + 12).assumingMemoryBound(to: Float.self)
            for co in channels {
                let plane = gradImage + co * pl.p
                for ty in tileRows {
                    for j in 0..<2 {
                        let row = rowBuffer + j * bw
                        let oy = 2 * ty + j
                        if oy >= ho {
                            row.update(repeating: 0, count: bw)
                            continue
                        }
                        row.update(from: plane + oy * wo, count: wo)
                        (row + wo).update(repeating: 0, count: bw - wo)
                    }
                    let tbase = (ty - tileRows.lowerBound) * tw
                    for gi in 0..<wg.groupsPerRow {
                        // d[j][l]: row j, column 2 * tile + l, for eight tiles.
                        for j in 0..<2 {
                            let a = UnsafeRawPointer(rowBuffer + j * bw + 16 * gi).loadUnaligned(as: SIMD16<Float>.self)
                            d[j * 2] = a.evenHalf
                            d[j * 2 + 1] = a.oddHalf
                        }
                        // Columns first (over j, for each l), then rows (over l).
                        for l in 0..<2 {
                            let r = transformAT(d[l], d[2 + l])
                            t[l] = r.0
                            t[2 + l] = r.1
                            t[4 + l] = r.2
                            t[6 + l] = r.3
                        }
                        let count = min(8, tw - 8 * gi)
                        let dst = z + co * ldz + tbase + 8 * gi
                        for i in 0..<4 {
                            let r = transformAT(t[i * 2], t[i * 2 + 1])
                            let row = dst + i * 4 * stride16
                            if count == 8 {
                                store8(row, 0, r.0)
                                store8(row, stride16, r.1)
                                store8(row, 2 * stride16, r.2)
                                store8(row, 3 * stride16, r.3)
                            } else {
                                for (k, value) in [r.0, r.1, r.2, r.3].enumerated() {
                                    store8(lp, 0, value)
                                    (row + k * stride16).update(from: lp, count: count)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `dW[co][ci] = G^T dU[.][co][ci] G` (3x3 from 4x4) for `du` `[16][cout][cin]`, written
    /// to `dwp` `[cout, cin, 3, 3]`. `G^T x`: `x0 + (x1 + x2) / 2`, `(x1 - x2) / 2`,
    /// `(x1 + x2) / 2 + x3`.
    static func inverseTransformWeights(
        _ du: UnsafePointer<Float>, cout: Int, cin: Int, into dwp: UnsafeMutablePointer<Float>
    ) {
        let step = cout * cin
        let half: Float = 0.5
        Compute.parallelRanges(cout, minPerThread: 8) { range in
            for co in range {
                for ci in 0..<cin {
                    let src = du + co * cin + ci
                    // Over i for each k: r[a][k], a in 0..<3.
                    var r = (
                        Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
                        Float(0)
                    )
                    withUnsafeMutableBytes(of: &r) { raw in
                        let rp = raw.baseAddress!.assumingMemoryBound(to: Float.self)
                        for k in 0..<4 {
                            let x0 = src[k * step], x1 = src[(4 + k) * step], x2 = src[(8 + k) * step], x3 = src[(12 + k) * step]
                            let s = (x1 + x2) * half
                            rp[k] = x0 + s
                            rp[4 + k] = (x1 - x2) * half
                            rp[8 + k] = s + x3
                        }
                        let dst = dwp + (co * cin + ci) * 9
                        for a in 0..<3 {
                            let (x0, x1, x2, x3) = (rp[4 * a], rp[4 * a + 1], rp[4 * a + 2], rp[4 * a + 3])
                            let s = (x1 + x2) * half
                            dst[3 * a] = x0 + s
                            dst[3 * a + 1] = (x1 - x2) * half
                            dst[3 * a + 2] = s + x3
                        }
                    }
                }
            }
        }
    }
}
