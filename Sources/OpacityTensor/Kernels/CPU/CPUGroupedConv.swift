import Foundation

// Grouped convolutions (ResNeXt's and DPN's 3x3 convolutions with 32 groups of 3 to 64
// channels): the backward passes as one task per group (and image), each with its own small
// GEMM and its own output slice.
//
// The im2col path splits the weight gradient into (image, group, row tile) tasks that
// accumulate into per-thread copies of the whole gradient, summed afterwards, and the strided
// input gradient into one whole-image GEMM per group, each split over the threads. With 32
// groups there are enough groups to share out instead: each task owns one group's output, so
// there are no private copies to sum and no synchronisation per group, and the result does
// not depend on the thread count.
//
// Measured and not kept (2026-11-30): a direct SIMD kernel on the NCHW input (a padded,
// phase-split copy of the group's rows, 4 output channels x 8 pixels in registers over the
// group's input channels and taps) reached 70-90 GFLOP/s on 2 threads for the forward pass
// against im2col + OpenBLAS's 120-150, and a direct weight gradient (4 output channels x 3
// taps in registers) was 1.3x slower than the GEMM: the library is compiled for baseline
// x86-64 (SSE, no FMA), so Swift SIMD code runs at a quarter of the AVX-512 rate OpenBLAS
// reaches on the same shapes (Documentation/Benchmarks.md, "Grouped convolutions").

extension ConvolutionSettings {
    nonisolated(unsafe) private static var _groupedTasks: Bool = {
        ProcessInfo.processInfo.environment["OPACITY_GROUPED_TASKS"] != "0"
    }()

    /// Whether the backward passes of grouped convolutions run one task per group (the weight
    /// gradient, when there are at least two groups per thread) and per image and group (the
    /// strided input gradient) instead of the im2col path's splits. Default on;
    /// `OPACITY_GROUPED_TASKS=0` starts with it off (for comparisons).
    ///
    /// The weight gradient then sums over images and row tiles in one fixed order instead of
    /// per thread, so it differs from the other path by rounding only and repeats bit for bit
    /// at any thread count. Set it before running kernels, not while they run.
    public static var groupedTasks: Bool {
        get { _groupedTasks }
        set { _groupedTasks = newValue }
    }
}

/// The per-group kernels of grouped convolutions (see the file comment).
enum GroupedConvKernels {
    /// Whether the weight gradient of `pl` runs one task per group: grouped, not depthwise,
    /// at least two groups per thread.
    static func groupTasks(_ pl: ConvPlan) -> Bool {
        ConvolutionSettings.groupedTasks && pl.groups > 1 && pl.cinG > 1 && pl.groups >= 2 * Compute.threads
    }

    /// Whether the strided input gradient of `pl` runs one task per image and group.
    static func imageGroupTasks(_ pl: ConvPlan) -> Bool {
        ConvolutionSettings.groupedTasks && pl.groups > 1 && pl.cinG > 1 && pl.n * pl.groups >= 2 * Compute.threads
    }

    // MARK: Weight gradient

    /// `dW[g] = sum over images of dY[b, g] x unfold(x[b, g])^T`, one task per group: it
    /// unfolds its group's input one row tile at a time (``ConvPlan/rowTiles(budget:minColumns:threads:)``
    /// on one thread: tiles sized for the cache) and accumulates straight into its slice of the
    /// result, images and tiles in order.
    ///
    /// - Parameters:
    ///   - input: `[N, Cin, H, W]`.
    ///   - gradOut: `[N, Cout, Ho, Wo]`.
    ///   - out: `[Cout, Cin / groups, kh, kw]`, overwritten.
    static func weightGradient(
        _ pl: ConvPlan, input xp: UnsafePointer<Float>, gradOut gp: UnsafePointer<Float>, out dwp: UnsafeMutablePointer<Float>
    ) {
        BLAS.ensureConfigured()
        let tiles = pl.rowTiles(minColumns: 512, threads: 1)
        let maxColumns = pl.pointwise ? 0 : pl.k * pl.maxTileRows(of: tiles) * pl.wo
        let imageIn = pl.cin * pl.h * pl.w, imageOut = pl.cout * pl.p
        withScratch(perThread: maxColumns) { scratch in
            Compute.parallelChunks(pl.groups) { chunk, range in
                let col = scratch(chunk)
                for g in range {
                    let dw = dwp + g * pl.coutG * pl.k
                    var first = true
                    for b in 0..<pl.n {
                        for t in 0..<tiles {
                            let rows = pl.rows(t, of: tiles)
                            if rows.isEmpty { continue }
                            let c0 = rows.lowerBound * pl.wo, cols = rows.count * pl.wo
                            let img = xp + b * imageIn
                            let bmat: UnsafePointer<Float>, ldb: Int
                            if pl.pointwise {
                                bmat = img + g * pl.cinG * pl.p + c0
                                ldb = pl.p
                            } else {
                                im2col(
                                    img, channels: (g * pl.cinG)..<((g + 1) * pl.cinG), h: pl.h, w: pl.w, g: pl.geo, wo: pl.wo,
                                    rows: rows, col: col, ldcol: cols)
                                bmat = UnsafePointer(col)
                                ldb = cols
                            }
                            BLAS.gemmSerial(
                                transB: true, m: pl.coutG, n: pl.k, k: cols, a: gp + b * imageOut + g * pl.coutG * pl.p + c0, lda: pl.p,
                                b: bmat, ldb: ldb, beta: first ? 0 : 1, c: dw, ldc: pl.k)
                            first = false
                        }
                    }
                }
            }
        }
    }
}

extension GroupedConvKernels {
    // MARK: Strided input gradient

    /// The input gradient of a strided grouped convolution, one task per image and group:
    /// `col = W[g]^T x dY[b, g]` (`[cinG * kh * kw, Ho * Wo]`, in the task's own buffer),
    /// folded back (col2im) into the group's own input channels. The tasks write disjoint
    /// channels, so there are no partial sums, and the result does not depend on the thread
    /// count. (One whole-image GEMM per group, each split over the threads, synchronises the
    /// threads once per group on products as small as `288 x 64 x 32`.)
    ///
    /// - Parameters:
    ///   - weight: `[Cout, Cin / groups, kh, kw]`.
    ///   - gradOut: `[N, Cout, Ho, Wo]`.
    ///   - out: `[N, Cin, H, W]`, overwritten.
    static func stridedInputGradient(
        _ pl: ConvPlan, weight wp: UnsafePointer<Float>, gradOut gp: UnsafePointer<Float>, out dp: UnsafeMutablePointer<Float>
    ) {
        BLAS.ensureConfigured()
        let planeIn = pl.h * pl.w
        withScratch(perThread: pl.k * pl.p) { scratch in
            Compute.parallelChunks(pl.n * pl.groups) { chunk, range in
                let col = scratch(chunk)
                for task in range {
                    let b = task / pl.groups, g = task % pl.groups
                    BLAS.gemmSerial(
                        transA: true, m: pl.k, n: pl.p, k: pl.coutG, a: wp + g * pl.coutG * pl.k, lda: pl.k,
                        b: gp + (b * pl.cout + g * pl.coutG) * pl.p, ldb: pl.p, c: col, ldc: pl.p)
                    let dst = dp + (b * pl.cin + g * pl.cinG) * planeIn
                    dst.update(repeating: 0, count: pl.cinG * planeIn)
                    col2im(UnsafePointer(col), channels: 0..<pl.cinG, h: pl.h, w: pl.w, g: pl.geo, ho: pl.ho, wo: pl.wo, ldcol: pl.p, dst: dst)
                }
            }
        }
    }
}
