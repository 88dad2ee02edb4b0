import Foundation

// The weight gradient of dense 3x3 stride-1 convolutions through Winograd F(4x4, 3x3), the
// transpose of the forward algorithm in CPUWinograd.swift.
//
// The forward pass computes each 4x4 output tile as `Y = A^T [U * V] A` with `U = G g G^T`
// (per output and input channel) and `V = B^T d B` (per input channel and tile). `Y` is
// linear in `U`, so `dL/dU = (A dY A^T) * V` elementwise, summed over tiles, and
// `dL/dg = G^T (dL/dU) G`. Summed over the tiles `t` of every image, each of the 36 cells
// `xi` of the transformed tile is one matrix product:
//
//     dU[xi] (Cout x Cin) = Z[xi] (Cout x tiles) x V[xi]^T (tiles x Cin),  Z = A dY A^T,
//
// 36 * 2 = 72 multiply-adds per input channel, output channel and tile against im2col's
// 16 * 9 * 2 = 288, all of it in SGEMMs. The tiles are cut into blocks; the threads
// transform a block together (split over channels), then run the 36 products of the block
// (split over `xi`), each product accumulating into its own slice of `dU`. Every slice is
// summed by one thread in block order, so the result does not depend on the thread count.

extension ConvolutionSettings {
    nonisolated(unsafe) private static var _winogradWeightGradient: Bool = {
        ProcessInfo.processInfo.environment["OPACITY_WINOGRAD_WGRAD"] != "0"
    }()

    /// Whether the weight gradient of convolutions that ``winograd`` covers also runs through
    /// Winograd F(4x4, 3x3) (``WinogradKernels/weightGradient(_:input:gradOut:out:)``), when
    /// ``winograd`` is on too. Default on; `OPACITY_WINOGRAD_WGRAD=0` starts with it off (im2col).
    ///
    /// Its results differ from im2col's by rounding only (relative error about 1e-6 of the
    /// gradient's magnitude) and repeat bit for bit at any thread count. Set it before running
    /// kernels, not while they run.
    public static var winogradWeightGradient: Bool {
        get { _winogradWeightGradient }
        set { _winogradWeightGradient = newValue }
    }

    /// Tiles per block of the Winograd weight gradient (`OPACITY_WINOGRAD_WGRAD_TILES`; default
    /// 0: chosen per shape by ``WinogradKernels/weightGradientBlockTiles(_:)``).
    nonisolated(unsafe) static var winogradWeightGradientTiles: Int = positiveIntegerSetting("OPACITY_WINOGRAD_WGRAD_TILES", default: 0)

    /// The fewest output tiles (4x4, over the batch) for the Winograd weight gradient
    /// (`OPACITY_WINOGRAD_WGRAD_MIN_TILES`, default 160).
    nonisolated(unsafe) static var winogradWeightGradientMinTiles: Int = positiveIntegerSetting("OPACITY_WINOGRAD_WGRAD_MIN_TILES", default: 160)

    nonisolated(unsafe) private static var _winogradWeightGradientMinChannels: Int = {
        if let s = ProcessInfo.processInfo.environment["OPACITY_WINOGRAD_WGRAD_MIN_CHANNELS"], let v = Int(s), v >= 0 { return v }
        return 48
    }()

    /// The least `cin * cout / (cin + cout)` for which the weight gradient takes Winograd
    /// (`OPACITY_WINOGRAD_WGRAD_MIN_CHANNELS`, default 48: 96 channels in and out, or 256 in
    /// and 64 out). With fewer channels the tile transforms weigh as much as the smaller
    /// products save (measured in the 256 px detectors: 256->256 at 64x64 took 0.51x im2col's
    /// time; 64->64 and 256->36 came out even). 0 lets every shape the other conditions allow
    /// take it (tests). Set it before running kernels, not while they run.
    public static var winogradWeightGradientMinChannels: Int {
        get { _winogradWeightGradientMinChannels }
        set { _winogradWeightGradientMinChannels = newValue }
    }
}

extension ConvPlan {
    /// Whether the weight gradient of this convolution runs through Winograd: the settings
    /// are on, and the plan is a dense 3x3 stride-1 undilated convolution, not taken by the
    /// row expansion, with ``ConvolutionSettings/winogradWeightGradientMinTiles`` output tiles
    /// and enough channels that the products outweigh the transforms:
    /// `cin * cout / (cin + cout) >= ConvolutionSettings.winogradWeightGradientMinChannels`
    /// (the products grow with `cin * cout`, the transformed tiles with `cin + cout`).
    var usesWinogradWeightGradient: Bool {
        ConvolutionSettings.winograd && ConvolutionSettings.winogradWeightGradient && !rowExpansion && groups == 1
            && geo.kernel == (3, 3) && geo.stride == (1, 1) && geo.dilation == (1, 1) && cin >= 16 && cout >= 16
            && cin * cout >= ConvolutionSettings.winogradWeightGradientMinChannels * (cin + cout)
            && n * ((ho + 3) / 4) * ((wo + 3) / 4) >= ConvolutionSettings.winogradWeightGradientMinTiles
    }
}

extension WinogradKernels {
    /// Tiles per block of the weight gradient: enough that each of the 36 products is deep
    /// (`k` = tiles) while the transformed block (`36 * (cin + cout) * tiles` floats) stays
    /// near 16 MiB; 128 to 1024, rounded to whole tile rows by the caller.
    static func weightGradientBlockTiles(_ pl: ConvPlan) -> Int {
        if ConvolutionSettings.winogradWeightGradientTiles > 0 { return ConvolutionSettings.winogradWeightGradientTiles }
        return max(128, min(1024, (4 << 20) / (36 * (pl.cin + pl.cout))))
    }

    /// The weight gradient `dW` `[Cout, Cin, 3, 3]` of a convolution with
    /// ``ConvPlan/winogradEligible``, from its input `x` `[N, Cin, H, W]` and output gradient
    /// `dY` `[N, Cout, Ho, Wo]` (see the file comment).
    static func weightGradient(
        _ pl: ConvPlan, input xp: UnsafePointer<Float>, gradOut gp: UnsafePointer<Float>, out dwp: UnsafeMutablePointer<Float>
    ) {
        BLAS.ensureConfigured()
        let blockTiles = weightGradientBlockTiles(pl)
        let wg = Plan(pl, threads: 1, targetTiles: blockTiles)
        let (cin, cout, tw, th) = (pl.cin, pl.cout, wg.tw, wg.th)
        // Blocks of whole tile rows, numbered over the batch (a block may span two images).
        let rowsPerBlock = max(1, blockTiles / tw)
        let totalRows = pl.n * th
        let blocks = (totalRows + rowsPerBlock - 1) / rowsPerBlock
        let maxTiles = min(rowsPerBlock, totalRows) * tw
        let vSlot = (36 * cin * maxTiles + 15) & ~15, zSlot = (36 * cout * maxTiles + 15) & ~15
        let uFloats = 36 * cout * cin
        let inRow = 6 * wg.bufferWidth, outRowWidth = 32 * wg.groupsPerRow + 16
        let perThread = max(inRow, 4 * outRowWidth)
        withScratch(perThread: perThread, shared: vSlot + zSlot + uFloats) { scratch in
            let v = scratch(-1), z = v + vSlot, du = z + zSlot
            for blk in 0..<blocks {
                let r0 = blk * rowsPerBlock, r1 = min(totalRows, r0 + rowsPerBlock)
                let tiles = (r1 - r0) * tw
                // Transform: channels 0..<cin of the input, then cin..<cin+cout of dY.
                Compute.parallelChunks(cin + cout) { chunk, range in
                    let rowBuf = scratch(chunk)
                    var gr = r0
                    while gr < r1 {
                        let b = gr / th, segEnd = min(r1, (b + 1) * th)
                        let tys = (gr - b * th)..<(segEnd - b * th)
                        let offset = (gr - r0) * tw
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
                        gr = segEnd
                    }
                }
                // dU[xi] (+)= Z[xi] x V[xi]^T, one thread per product.
                Compute.parallelRanges(36, minPerThread: 1) { cells in
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

    /// `Z[xi][co][t] = (A dY_t A^T)[xi]` for output-gradient channels `channels` and every tile
    /// `t = (ty - lowerBound) * tw + tx` of tile rows `tileRows`, rows `ldz` floats apart. `dY_t`
    /// is the 4x4 block of `dY` at `(4 ty, 4 tx)`, zero beyond the output. `rowBuffer` holds
    /// four rows of `rowWidth` floats (at least `32 * groupsPerRow + 16`).
    static func transformGradOut(
        _ wg: Plan, gradImage: UnsafePointer<Float>, tileRows: Range<Int>, rowBuffer: UnsafeMutablePointer<Float>, rowWidth bw: Int,
        into z: UnsafeMutablePointer<Float>, ldz: Int, channels: Range<Int>
    ) {
        let pl = wg.pl
        let (ho, wo, tw) = (pl.ho, pl.wo, wg.tw)
        let stride36 = pl.cout * ldz
        withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: 41) { buf in
            let d = buf.baseAddress!, t = d + 16
            let lp = UnsafeMutableRawPointer(d + 40).assumingMemoryBound(to: Float.self)
            for co in channels {
                let plane = gradImage + co * pl.p
                for ty in tileRows {
                    for j in 0..<4 {
                        let row = rowBuffer + j * bw
                        let oy = 4 * ty + j
                        if oy >= ho {
                            row.update(repeating: 0, count: bw)
                            continue
                        }
                        row.update(from: plane + oy * wo, count: wo)
                        (row + wo).update(repeating: 0, count: bw - wo)
                    }
                    let tbase = (ty - tileRows.lowerBound) * tw
                    for gi in 0..<wg.groupsPerRow {
                        let x0 = 32 * gi
                        // d[j][l]: row j, column 4 * tile + l, for eight tiles.
                        for j in 0..<4 {
                            let a = UnsafeRawPointer(rowBuffer + j * bw + x0).loadUnaligned(as: SIMD32<Float>.self)
                            let ae = a.evenHalf, ao = a.oddHalf
                            d[j * 4 + 0] = ae.evenHalf
                            d[j * 4 + 1] = ao.evenHalf
                            d[j * 4 + 2] = ae.oddHalf
                            d[j * 4 + 3] = ao.oddHalf
                        }
                        // Columns first (over j, for each l), then rows (over l).
                        for l in 0..<4 {
                            let r = transformAT(d[l], d[4 + l], d[8 + l], d[12 + l])
                            t[l] = r.0
                            t[4 + l] = r.1
                            t[8 + l] = r.2
                            t[12 + l] = r.3
                            t[16 + l] = r.4
                            t[20 + l] = r.5
                        }
                        let count = min(8, tw - 8 * gi)
                        let dst = z + co * ldz + tbase + 8 * gi
                        for i in 0..<6 {
                            let r = transformAT(t[i * 4], t[i * 4 + 1], t[i * 4 + 2], t[i * 4 + 3])
                            let row = dst + i * 6 * stride36
                            if count == 8 {
                                store8x6(row, stride: stride36, r)
                            } else {
                                for (k, value) in [r.0, r.1, r.2, r.3, r.4, r.5].enumerated() {
                                    store8(lp, 0, value)
                                    (row + k * stride36).update(from: lp, count: count)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `A (y0 ... y3)^T`, six values (`A` is the transpose of ``transformA(_:_:_:_:_:_:)``'s
    /// `A^T`): `y0`, `y0 + y1 + y2 + y3`, `y0 - y1 + y2 - y3`, `y0 + 2 y1 + 4 y2 + 8 y3`,
    /// `y0 - 2 y1 + 4 y2 - 8 y3`, `y3`.
    @inline(__always)
    static func transformAT(
        _ y0: SIMD8<Float>, _ y1: SIMD8<Float>, _ y2: SIMD8<Float>, _ y3: SIMD8<Float>
    ) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
        let e = y0 + y2, o = y1 + y3
        let four: Float = 4, two: Float = 2, eight: Float = 8
        let e2 = y0 + four * y2, o2 = two * y1 + eight * y3
        return (y0, e + o, e - o, e2 + o2, e2 - o2, y3)
    }

    /// `G^T (x0 ... x5)^T`, three values (`G` as in ``transformG(_:_:_:)``).
    @inline(__always)
    static func transformGT(
        _ x0: SIMD8<Float>, _ x1: SIMD8<Float>, _ x2: SIMD8<Float>, _ x3: SIMD8<Float>, _ x4: SIMD8<Float>,
        _ x5: SIMD8<Float>
    ) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
        let s12 = x1 + x2, s34 = x3 + x4
        let sixth: Float = 1 / 6, twelfth: Float = 1 / 12, quarter: Float = 1 / 4, twentyFourth: Float = 1 / 24
        return (
            x0 * quarter - s12 * sixth + s34 * twentyFourth, (x2 - x1) * sixth + (x3 - x4) * twelfth,
            (s34 - s12) * sixth + x5
        )
    }

    /// `dW[co][ci] = G^T dU[.][co][ci] G` (3x3 from 6x6) for `du` `[36][cout][cin]`, written
    /// to `dwp` `[cout, cin, 3, 3]`.
    static func inverseTransformWeights(
        _ du: UnsafePointer<Float>, cout: Int, cin: Int, into dwp: UnsafeMutablePointer<Float>
    ) {
        Compute.parallelRanges(cout, minPerThread: 8) { range in
            withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: 36 + 18) { buf in
                let x = buf.baseAddress!, r = x + 36
                for co in range {
                    var c0 = 0
                    while c0 < cin {
                        let count = min(8, cin - c0)
                        let src = du + co * cin + c0, step = cout * cin
                        for xi in 0..<36 {
                            if count == 8 {
                                x[xi] = load8(src, xi * step)
                            } else {
                                var value = SIMD8<Float>(repeating: 0)
                                for l in 0..<count { value[l] = src[xi * step + l] }
                                x[xi] = value
                            }
                        }
                        // Rows first (over i, for each k), then columns (over k).
                        for k in 0..<6 {
                            let v = transformGT(x[k], x[6 + k], x[12 + k], x[18 + k], x[24 + k], x[30 + k])
                            r[k] = v.0
                            r[6 + k] = v.1
                            r[12 + k] = v.2
                        }
                        for a in 0..<3 {
                            let v = transformGT(r[a * 6], r[a * 6 + 1], r[a * 6 + 2], r[a * 6 + 3], r[a * 6 + 4], r[a * 6 + 5])
                            for l in 0..<count {
                                let dst = dwp + (co * cin + c0 + l) * 9 + a * 3
                                dst[0] = v.0[l]
                                dst[1] = v.1[l]
                                dst[2] = v.2[l]
                            }
                        }
                        c0 += 8
                    }
                }
            }
        }
    }
}
