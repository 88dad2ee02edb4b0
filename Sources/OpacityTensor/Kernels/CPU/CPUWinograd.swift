import Foundation

// Winograd F(4x4, 3x3) for dense 3x3 stride-1 convolutions (Lavin and Gray, "Fast
// Algorithms for Convolutional Neural Networks", 2016; points 0, +-1, +-2 and infinity).
//
// Each 4x4 block of output pixels (a tile) is computed from the 6x6 input block around it:
// `Y = A^T [ sum over ci of (G g G^T) * (B^T d B) ] A`. The elementwise products summed over
// the input channels are 36 independent matrix products, one per cell of the 6x6 transformed
// tile: `M[xi] = U[xi] x V[xi]` with `U[xi]` `[Cout, Cin]` (transformed weights) and `V[xi]`
// `[Cin, tiles]` (transformed input). That is 36 * 2 = 72 multiply-adds per input channel,
// output channel and tile against im2col's 16 * 9 * 2 = 288: a quarter of the arithmetic,
// all of it in large SGEMMs whose weight operand is packed once per block of tiles.

/// A kernel tuning setting from the environment: `name`'s value when it is a positive
/// integer, else `default` (read once, when the setting is first used).
func positiveIntegerSetting(_ name: String, default value: Int) -> Int {
    if let s = ProcessInfo.processInfo.environment[name], let v = Int(s), v > 0 { return v }
    return value
}

/// How the Winograd kernel is chosen.
public enum ConvolutionSettings {
    nonisolated(unsafe) private static var _winograd: Bool = {
        ProcessInfo.processInfo.environment["OPACITY_WINOGRAD"] != "0"
    }()

    /// Whether dense 3x3 stride-1 convolutions with at least 16 input and output channels on
    /// large enough maps (``winogradMinTiles`` output tiles of 4x4 over the batch) use Winograd
    /// F(4x4, 3x3): the forward pass, the input gradient (itself such a convolution) and, with
    /// ``winogradWeightGradient``, the weight gradient. Default on; `OPACITY_WINOGRAD=0` starts
    /// with it off.
    ///
    /// Off, they take the im2col path. Winograd results differ from im2col's by rounding
    /// only (relative error about 1e-6 of the output's magnitude); either path repeats bit for
    /// bit at a fixed thread count. Set it before running kernels, not while they run.
    public static var winograd: Bool {
        get { _winograd }
        set { _winograd = newValue }
    }

    /// Tiles per block of the Winograd kernel (`OPACITY_WINOGRAD_TILES`; nil: the default of
    /// ``winogradBlockTiles``): each thread transforms one block of tiles, runs the 36 products
    /// on it and writes it out.
    nonisolated(unsafe) package static var winogradTiles: Int? = {
        let v = positiveIntegerSetting("OPACITY_WINOGRAD_TILES", default: 0)
        return v > 0 ? v : nil
    }()

    /// The tiles per block for the pass running now: ``winogradTiles`` if set, else 192 while
    /// gradients are recorded and 96 in inference. A thread's transformed input and products
    /// take `36 * (Cin + Cout) * 4` bytes per tile (7 MiB per thread for 256 channels at 96
    /// tiles, 14 at 192): in inference that scratch is a large part of what a pass holds.
    /// Measured (resnet34 RetinaNet, 512 px, 2 threads): the forward pass's peak 272-273 MiB
    /// at 192 tiles, 259 at 96; the head 297-309 ms against 306-318 (3% slower). In training,
    /// where the saved activations dwarf it (1414-1418 MiB), 192.
    static var winogradBlockTiles: Int { winogradTiles ?? (Autograd.isInference ? 96 : 192) }

    /// How the Winograd forward pass and input gradient split their work among the threads
    /// (`OPACITY_WINOGRAD_MODE`: `auto`, the default, `private`: a block of tiles per thread,
    /// `shared`: all threads on one block at a time; see ``WinogradKernels/sharesBlocks(_:perThreadFloats:threads:)``).
    nonisolated(unsafe) package static var winogradMode: String = ProcessInfo.processInfo.environment["OPACITY_WINOGRAD_MODE"] ?? "auto"

    /// Tiles per block when the threads share a block (`OPACITY_WINOGRAD_SHARED_TILES`,
    /// default 192).
    nonisolated(unsafe) package static var winogradSharedTiles: Int = positiveIntegerSetting("OPACITY_WINOGRAD_SHARED_TILES", default: 192)

    /// Expanded input floats that one band of the row-expansion forward pass (network stems:
    /// few input channels, wide rows) keeps at most: 1 Mi floats (4 MiB), about a core's share
    /// of a server's last-level cache. A band is at least as many output rows as threads.
    nonisolated(unsafe) package static var rowExpansionBandFloats: Int = 1 << 20

    /// The fewest output tiles (4x4, over the batch) for the Winograd forward pass and input
    /// gradient (`OPACITY_WINOGRAD_MIN_TILES`, default 160; see ``ConvPlan/winogradEligible``).
    nonisolated(unsafe) static var winogradMinTiles: Int = positiveIntegerSetting("OPACITY_WINOGRAD_MIN_TILES", default: 160)
}

extension ConvPlan {
    /// Dense 3x3 stride-1 undilated, at least 16 channels in and out, at least 160 output
    /// tiles (4x4) in all: below that the weight transform and the narrow products cost more
    /// than the arithmetic saved (measured, 2 threads: 256 channels at 64x64 take 0.51x
    /// im2col's time, at 32x32 0.96x, at 16x16 2x).
    var winogradEligible: Bool {
        groups == 1 && geo.kernel == (3, 3) && geo.stride == (1, 1) && geo.dilation == (1, 1) && cin >= 16 && cout >= 16
            && n * ((ho + 3) / 4) * ((wo + 3) / 4) >= ConvolutionSettings.winogradMinTiles
    }
}

extension ConvPlan {
    /// Whether this convolution runs the Winograd kernel: the setting is on, the plan is
    /// ``winogradEligible`` and the row expansion (stems) does not take it first.
    var usesWinograd: Bool { ConvolutionSettings.winograd && winogradEligible && !rowExpansion }
}

/// How many blocks to cut `rows` rows of each of `images` images into, starting from `blocks`:
/// at least one per thread, and when there are few, a number whose blocks the threads share
/// equally (`images * blocks` a multiple of `threads`, or at least eight per thread). Measured
/// (resnet34 RetinaNet at 256 px, batch 1): the nine 3x3 256->256 convolutions on P2 (one
/// image, 16 tile rows) were cut into blocks of 12 and 4 rows, so one of two threads idled
/// half the time: 105.3 ms on one thread, 71.7 ms on two; in halves, 53.4 ms. The whole
/// forward pass went from 1.37x to 1.87x faster on two threads than on one.
func balancedBlockCount(_ blocks: Int, rows: Int, images: Int, threads: Int) -> Int {
    var blocks = max(1, min(blocks, rows))
    while blocks < rows && images * blocks < 8 * threads && (images * blocks) % threads != 0 { blocks += 1 }
    return blocks
}

/// Winograd F(4x4, 3x3) convolution kernels (see the file comment).
enum WinogradKernels {
    /// The transformed weights `U` (``transformWeights(_:cout:cin:flipped:into:)``) of
    /// `weight` `[Cout, Cin, 3, 3]`, or with `flipped` of the input gradient's kernel
    /// `W'[ci, co, 2 - i, 2 - j] = W[co, ci, i, j]` (`[Cin, Cout, 3, 3]`).
    ///
    /// Cached on the weight's storage until its contents change (an optimizer step, a weight
    /// load: ``TensorStorage/version``), so inference transforms each weight once and training
    /// once per step for the forward pass and once for the input gradient, however many
    /// pyramid levels share the weight. Safe for concurrent callers.
    static func transformedWeights(_ weight: Tensor, flipped: Bool = false) -> TensorStorage {
        let (cout, cin) = (weight.shape[0], weight.shape[1])
        let key = "winograd43\(flipped ? "-flipped" : "") \(cout)x\(cin)"
        let wp = weight.pointer
        return weight.storage.derived(key, count: 36 * cout * cin, keep: Autograd.isInference) { u in
            if flipped {
                transformWeights(wp, cout: cin, cin: cout, flipped: true, into: u)
            } else {
                transformWeights(wp, cout: cout, cin: cin, into: u)
            }
        }
    }

    /// Transformed weights `U[xi][co][ci] = (G g G^T)[xi]` for `weight` `[Cout, Cin, 3, 3]`,
    /// written to `u` (`36 * cout * cin` floats). With `flipped`, `wp` holds the forward
    /// weights `W` `[Cin, Cout, 3, 3]` and `g` is the input gradient's kernel
    /// `g[co, ci, i, j] = W[ci, co, 2 - i, 2 - j]`.
    ///
    /// `G` rows: `(1/4, 0, 0)`, `(-1/6, -1/6, -1/6)`, `(-1/6, 1/6, -1/6)`,
    /// `(1/24, 1/12, 1/6)`, `(1/24, -1/12, 1/6)`, `(0, 0, 1)`.
    static func transformWeights(
        _ wp: UnsafePointer<Float>, cout: Int, cin: Int, flipped: Bool = false, into u: UnsafeMutablePointer<Float>
    ) {
        let cinPad = (cin + 7) & ~7
        Compute.parallelRanges(cout, minPerThread: 8) { range in
            // g[j][ci] for the 9 taps of one output channel, eight input channels per vector;
            // the channel's 36 transformed rows are staged in `rows` ([36][cinPad]) and copied
            // out row by row: storing eight floats at a time to 36 places `cout * cin` apart
            // (a multiple of 4 KiB for the usual widths) hit cache-set conflicts (measured,
            // 256x256 weights on two threads: 2.0-2.7 ms per transform; staged, 0.35 ms).
            var g = [Float](repeating: 0, count: 9 * cinPad)
            var rows = [Float](repeating: 0, count: 36 * cinPad)
            withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: 18) { tbuf in
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
                                // G g, [6][3]
                                for col in 0..<3 {
                                    let g0 = load8(gp, 0 * 3 * cinPad + col * cinPad + c0)
                                    let g1 = load8(gp, 1 * 3 * cinPad + col * cinPad + c0)
                                    let g2 = load8(gp, 2 * 3 * cinPad + col * cinPad + c0)
                                    let r = transformG(g0, g1, g2)
                                    t[col] = r.0
                                    t[3 + col] = r.1
                                    t[6 + col] = r.2
                                    t[9 + col] = r.3
                                    t[12 + col] = r.4
                                    t[15 + col] = r.5
                                }
                                for i in 0..<6 {
                                    let r = transformG(t[i * 3], t[i * 3 + 1], t[i * 3 + 2])
                                    let dst = rp + i * 6 * cinPad + c0
                                    store8x6(dst, stride: cinPad, r)
                                }
                                c0 += 8
                            }
                            for xi in 0..<36 {
                                (u + (xi * cout + co) * cin).update(from: rp + xi * cinPad, count: cin)
                            }
                        }
                    }
                }
            }
        }
    }

    /// `G (g0, g1, g2)^T`, six values.
    @inline(__always)
    static func transformG(
        _ g0: SIMD8<Float>, _ g1: SIMD8<Float>, _ g2: SIMD8<Float>
    ) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
        let s = g0 + g2
        let a = (s + g1) * (-1 / 6 as Float), b = (g1 - s) * (1 / 6 as Float)
        let c = g0 * (1 / 24 as Float) + g2 * (1 / 6 as Float), d = g1 * (1 / 12 as Float)
        return (g0 * (1 / 4 as Float), a, b, c + d, c - d, g2)
    }

    /// `B^T (d0 ... d5)^T`, six values.
    @inline(__always)
    static func transformB(
        _ d0: SIMD8<Float>, _ d1: SIMD8<Float>, _ d2: SIMD8<Float>, _ d3: SIMD8<Float>, _ d4: SIMD8<Float>,
        _ d5: SIMD8<Float>
    ) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
        let four: Float = 4, five: Float = 5, two: Float = 2
        let t0 = four * d0 - five * d2 + d4
        let a = d4 - four * d2, b = d3 - four * d1
        let c = d4 - d2, e = two * (d3 - d1)
        let t5 = four * d1 - five * d3 + d5
        return (t0, a + b, a - b, c + e, c - e, t5)
    }

    /// `A^T (m0 ... m5)^T`, four values.
    @inline(__always)
    static func transformA(
        _ m0: SIMD8<Float>, _ m1: SIMD8<Float>, _ m2: SIMD8<Float>, _ m3: SIMD8<Float>, _ m4: SIMD8<Float>,
        _ m5: SIMD8<Float>
    ) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
        let s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4
        let two: Float = 2, four: Float = 4, eight: Float = 8
        return (m0 + s12 + s34, d12 + two * d34, s12 + four * s34, d12 + eight * d34 + m5)
    }

    /// The sizes of one Winograd convolution and how it is cut into blocks of tile rows.
    struct Plan {
        let pl: ConvPlan
        /// Tiles per row and per column of the output.
        let tw: Int, th: Int
        /// The most tile rows of a block, blocks per image (``tileRows(_:)``).
        let rowsPerBlock: Int, blocks: Int
        /// Groups of eight tiles per tile row, and the width of a padded input row buffer.
        let groupsPerRow: Int, bufferWidth: Int

        init(_ pl: ConvPlan, threads: Int, targetTiles: Int) {
            self.pl = pl
            tw = (pl.wo + 3) / 4
            th = (pl.ho + 3) / 4
            let rows = max(1, min(th, targetTiles / tw))
            blocks = balancedBlockCount((th + rows - 1) / rows, rows: th, images: pl.n, threads: threads)
            rowsPerBlock = (th + blocks - 1) / blocks
            groupsPerRow = (tw + 7) / 8
            bufferWidth = max(32 * groupsPerRow + 8, pl.geo.padding.1 + pl.w)
        }

        /// Tiles in the largest block.
        var blockTiles: Int { rowsPerBlock * tw }

        /// The tile rows of block `blk`: the image's tile rows split evenly (sizes differ by
        /// one at most).
        func tileRows(_ blk: Int) -> Range<Int> { (th * blk / blocks)..<(th * (blk + 1) / blocks) }
    }

    /// `out = conv(input, weight) + bias` for a plan with ``ConvPlan/winogradEligible``, from
    /// the weights' transform `u` (``transformedWeights(_:flipped:)``, `36 * cout * cin` floats).
    static func forward(
        _ pl: ConvPlan, input xp: UnsafePointer<Float>, transformed u: UnsafePointer<Float>, bias bp: UnsafePointer<Float>?,
        out op: UnsafeMutablePointer<Float>
    ) {
        BLAS.ensureConfigured()
        let (wg, perThread, shared) = layout(pl)
        if shared {
            sharedForward(pl, input: xp, transformed: u, bias: bp, out: op)
            return
        }
        let (cin, cout) = (pl.cin, pl.cout)
        let vFloats = 36 * cin * wg.blockTiles + 16, mFloats = 36 * cout * wg.blockTiles + 16
        withScratch(perThread: perThread) { scratch in
            let tasks = pl.n * wg.blocks
            Compute.parallelChunks(tasks) { chunk, range in
                let v = scratch(chunk), m = v + ((vFloats + 15) & ~15), rowBuf = m + ((mFloats + 15) & ~15)
                for task in range {
                    let b = task / wg.blocks, blk = task % wg.blocks
                    let rows = wg.tileRows(blk)
                    let (ty0, ty1) = (rows.lowerBound, rows.upperBound)
                    let tiles = (ty1 - ty0) * wg.tw
                    transformInput(wg, image: xp + b * cin * pl.h * pl.w, tileRows: ty0..<ty1, rowBuffer: rowBuf, into: v, ldv: tiles)
                    for xi in 0..<36 {
                        BLAS.gemmSerial(
                            m: cout, n: tiles, k: cin, a: u + xi * cout * cin, lda: cin, b: v + xi * cin * tiles, ldb: tiles,
                            c: m + xi * cout * tiles, ldc: tiles)
                    }
                    transformOutput(wg, m: m, ldm: tiles, tileRows: ty0..<ty1, bias: bp, out: op + b * cout * pl.p)
                }
            }
        }
    }

    /// How ``forward(_:input:transformed:bias:out:)`` runs `pl` at the current thread count:
    /// the private blocks' plan, each thread's scratch in floats with private blocks (the
    /// transformed input and the products of a block, and a row buffer), and whether the
    /// threads share each block instead (``sharesBlocks(_:perThreadFloats:threads:)``).
    static func layout(_ pl: ConvPlan) -> (plan: Plan, perThreadFloats: Int, shared: Bool) {
        let wg = Plan(pl, threads: Compute.threads, targetTiles: ConvolutionSettings.winogradBlockTiles)
        let vFloats = 36 * pl.cin * wg.blockTiles + 16, mFloats = 36 * pl.cout * wg.blockTiles + 16
        let perThread = ((vFloats + 15) & ~15) + ((mFloats + 15) & ~15) + 6 * wg.bufferWidth
        return (wg, perThread, sharesBlocks(wg, perThreadFloats: perThread, threads: Compute.threads))
    }

    /// The kernel log's name for `pl`'s Winograd F(4x4) pass: `winograd`, or `winograd shared`
    /// when the threads share each block.
    static func kernelName(_ pl: ConvPlan) -> String { layout(pl).shared ? "winograd shared" : "winograd" }

    /// Whether the forward pass shares each block among the threads (``ConvolutionSettings/winogradMode``):
    /// with a block per thread, the threads' scratch (transformed input and products, 72 KiB
    /// per tile for 256 channels in and out) grows with their number, since every thread
    /// needs a block of its own: at 16 threads, a 512 px pass's P2 convolutions held 16 blocks
    /// of 64 tiles (75 MiB, computed) where 2 threads held 2 of 96 (14 MiB). Shared, the scratch is one
    /// block of ``ConvolutionSettings/winogradSharedTiles`` tiles whatever the thread count.
    /// `auto` shares on two threads or more in inference (``Autograd/isInference``), and
    /// otherwise (a pass that records a graph) when the private blocks would take more than one
    /// shared block, never at 2 threads.
    ///
    /// In inference, sharing lets the RetinaNet head's convolutions write over their input
    /// (``runsInPlace(_:)``) and makes one block of 192 tiles where 2 threads made two of 96.
    /// Measured at 2 threads (512 px, batch 1, forward): resnet34 RetinaNet's head 560-562 ms
    /// shared against 611-661 private, its peak 236-237 MiB against 247-248; resnet152's peak
    /// 421 MiB against 428. The training step at 2 threads was 2-4% slower shared (5125-5258 ms
    /// against 4971-5044), so passes that record keep the rule below.
    /// (It shared past twice one block until the 16-thread memory report showed a resnet152
    /// RetinaNet's P3 convolutions, 64x64, holding 16 private blocks of 16 tiles, 18 MiB, whose
    /// buffer the P2 convolutions' 14 MiB shared block then reused at the forward pass's peak.)
    static func sharesBlocks(_ wg: Plan, perThreadFloats: Int, threads: Int) -> Bool {
        switch ConvolutionSettings.winogradMode {
        case "shared": return threads > 1
        case "private": return false
        default:
            if Autograd.isInference { return threads > 1 }
            let shared = 36 * (wg.pl.cin + wg.pl.cout) * ConvolutionSettings.winogradSharedTiles
            return threads > 2 && threads * perThreadFloats > shared
        }
    }

    /// Whether ``sharedForward(_:input:transformed:bias:out:inPlace:)`` can write `pl`'s output
    /// over its input: the Winograd pass runs with shared blocks at this thread count, as many
    /// channels out as in, and padding 1 (so the output has the input's shape).
    static func runsInPlace(_ pl: ConvPlan) -> Bool {
        pl.usesWinograd && pl.cin == pl.cout && pl.geo.padding == (1, 1) && pl.ho == pl.h && pl.wo == pl.w && layout(pl).shared
    }

    /// The forward pass with every thread working on the same block of tile rows at a time:
    /// the input transform split by input channels, the 36 products by cell and by rows of
    /// output channels, the output transform by output channels. The same arithmetic per tile
    /// as the private blocks (equal up to the GEMM library's rounding for other shapes).
    ///
    /// With `inPlace` (`op` is the input's own storage; only where ``runsInPlace(_:)``) the
    /// output is written over the input: blocks run top to bottom, each block's input is
    /// transformed before its output is written, and the one input row a block overwrites that
    /// the next block still reads (the row above its first tile's outputs, padding 1) is copied
    /// aside first. The same values, bit for bit, as writing to a separate output.
    static func sharedForward(
        _ pl: ConvPlan, input xp: UnsafePointer<Float>, transformed u: UnsafePointer<Float>, bias bp: UnsafePointer<Float>?,
        out op: UnsafeMutablePointer<Float>, inPlace: Bool = false
    ) {
        precondition(!inPlace || runsInPlace(pl), "sharedForward: in place needs Cin == Cout and padding 1")
        let wg = Plan(pl, threads: 1, targetTiles: ConvolutionSettings.winogradSharedTiles)
        let (cin, cout, tw) = (pl.cin, pl.cout, wg.tw)
        let rowsPerBlock = max(1, min(wg.th, ConvolutionSettings.winogradSharedTiles / tw))
        let maxTiles = rowsPerBlock * tw
        let vSlot = (36 * cin * maxTiles + 15) & ~15, mSlot = (36 * cout * maxTiles + 15) & ~15
        let haloSlot = inPlace ? (cin * pl.w + 15) & ~15 : 0
        // Rows of output channels per product task: 36 cells times enough row slices for
        // every thread to get several tasks (slices of at least 32 rows).
        let slices = max(1, min(cout / 32, (4 * Compute.threads + 35) / 36))
        withScratch(perThread: 6 * wg.bufferWidth, shared: vSlot + mSlot + haloSlot) { scratch in
            let v = scratch(-1), m = v + vSlot, halo = m + mSlot
            for b in 0..<pl.n {
                var ty0 = 0
                while ty0 < wg.th {
                    let rows = ty0..<min(wg.th, ty0 + rowsPerBlock)
                    let tiles = rows.count * tw
                    // In place, the row above this block's outputs was overwritten by the block
                    // before; its input values were copied to `halo`.
                    let haloRow = inPlace && ty0 > 0 ? (row: 4 * ty0 - 1, values: UnsafePointer(halo)) : nil
                    Compute.parallelChunks(cin) { chunk, range in
                        transformInput(
                            wg, image: xp + b * cin * pl.h * pl.w, tileRows: rows, rowBuffer: scratch(chunk), into: v, ldv: tiles,
                            channels: range, halo: haloRow)
                    }
                    Compute.parallelRanges(36 * slices, minPerThread: 1) { tasks in
                        for task in tasks {
                            let xi = task / slices, slice = task % slices
                            let r0 = cout * slice / slices, r1 = cout * (slice + 1) / slices
                            BLAS.gemmSerial(
                                m: r1 - r0, n: tiles, k: cin, a: u + (xi * cout + r0) * cin, lda: cin, b: v + xi * cin * tiles,
                                ldb: tiles, c: m + (xi * cout + r0) * tiles, ldc: tiles)
                        }
                    }
                    if inPlace && rows.upperBound < wg.th {
                        // The next block reads the input row just above its outputs, which this
                        // block's outputs replace.
                        let row = 4 * rows.upperBound - 1, plane = pl.h * pl.w
                        let image = xp + b * cin * plane
                        Compute.parallelRanges(cin, minPerThread: 16) { range in
                            for c in range { (halo + c * pl.w).update(from: image + c * plane + row * pl.w, count: pl.w) }
                        }
                    }
                    Compute.parallelRanges(cout, minPerThread: 1) { range in
                        transformOutput(wg, m: m, ldm: tiles, tileRows: rows, bias: bp, out: op + b * cout * pl.p, channels: range)
                    }
                    ty0 = rows.upperBound
                }
            }
        }
    }

    /// `V[xi][c][t] = (B^T d B)[xi]` for every input channel and every tile of tile rows
    /// `tileRows` (tile `t = (ty - lowerBound) * tw + tx`), rows `ldv` floats apart.
    ///
    /// `channels` (default all) limits the work to those input channels, so that threads can
    /// share one block. `halo` gives one input row's values (channel `c`'s at `values + c * w`)
    /// in place of the image's (an in-place pass, ``sharedForward(_:input:transformed:bias:out:inPlace:)``).
    static func transformInput(
        _ wg: Plan, image: UnsafePointer<Float>, tileRows: Range<Int>, rowBuffer: UnsafeMutablePointer<Float>,
        into v: UnsafeMutablePointer<Float>, ldv: Int, channels: Range<Int>? = nil, halo: (row: Int, values: UnsafePointer<Float>)? = nil
    ) {
        let pl = wg.pl
        let (h, w, ph, pw) = (pl.h, pl.w, pl.geo.padding.0, pl.geo.padding.1)
        let bw = wg.bufferWidth, tw = wg.tw, cin = pl.cin
        let stride36 = cin * ldv
        withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: 73) { buf in
            let d = buf.baseAddress!, t = d + 36
            let lp = UnsafeMutableRawPointer(d + 72).assumingMemoryBound(to: Float.self)
            for c in channels ?? 0..<cin {
                let plane = image + c * h * w
                for ty in tileRows {
                    // The six input rows of this tile row, zero-padded: buffer column x holds
                    // input column x - pw.
                    for j in 0..<6 {
                        let row = rowBuffer + j * bw
                        let iy = 4 * ty - ph + j
                        if iy < 0 || iy >= h {
                            row.update(repeating: 0, count: bw)
                            continue
                        }
                        if pw > 0 { row.update(repeating: 0, count: pw) }
                        let source = halo.flatMap { iy == $0.row ? $0.values + c * w : nil } ?? plane + iy * w
                        (row + pw).update(from: source, count: w)
                        if bw > pw + w { (row + pw + w).update(repeating: 0, count: bw - pw - w) }
                    }
                    let tbase = (ty - tileRows.lowerBound) * tw
                    for gi in 0..<wg.groupsPerRow {
                        let x0 = 32 * gi
                        // d[j][l]: input row j, column 4 * tile + l, for eight tiles.
                        for j in 0..<6 {
                            let r = UnsafeRawPointer(rowBuffer + j * bw + x0)
                            let a = r.loadUnaligned(as: SIMD32<Float>.self)
                            let b = r.loadUnaligned(fromByteOffset: 16, as: SIMD32<Float>.self)
                            let ae = a.evenHalf, ao = a.oddHalf
                            d[j * 6 + 0] = ae.evenHalf
                            d[j * 6 + 1] = ao.evenHalf
                            d[j * 6 + 2] = ae.oddHalf
                            d[j * 6 + 3] = ao.oddHalf
                            d[j * 6 + 4] = b.evenHalf.evenHalf
                            d[j * 6 + 5] = b.oddHalf.evenHalf
                        }
                        // Columns first (over j, for each l), then rows (over l).
                        for l in 0..<6 {
                            let r = transformB(d[l], d[6 + l], d[12 + l], d[18 + l], d[24 + l], d[30 + l])
                            t[l] = r.0
                            t[6 + l] = r.1
                            t[12 + l] = r.2
                            t[18 + l] = r.3
                            t[24 + l] = r.4
                            t[30 + l] = r.5
                        }
                        let count = min(8, tw - 8 * gi)
                        let dst = v + c * ldv + tbase + 8 * gi
                        for i in 0..<6 {
                            let r = transformB(t[i * 6], t[i * 6 + 1], t[i * 6 + 2], t[i * 6 + 3], t[i * 6 + 4], t[i * 6 + 5])
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

    /// `out[co, 4ty + r, 4tx + c] = (A^T M A)[r][c] (+ bias[co])` for the tiles of `tileRows`,
    /// clipped to the output's `ho x wo`; `m` holds `M[xi][co][t]`, rows `ldm` floats apart.
    /// `channels` (default all) limits the work to those output channels, so that threads can
    /// share one block.
    static func transformOutput(
        _ wg: Plan, m: UnsafePointer<Float>, ldm: Int, tileRows: Range<Int>, bias: UnsafePointer<Float>?,
        out: UnsafeMutablePointer<Float>, channels: Range<Int>? = nil
    ) {
        let pl = wg.pl
        let (ho, wo, cout, tw) = (pl.ho, pl.wo, pl.cout, wg.tw)
        let stride36 = cout * ldm
        withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: 24) { sbuf in
            let s = sbuf.baseAddress!
            for co in channels ?? 0..<cout {
                let bv = bias?[co] ?? 0
                let dstPlane = out + co * pl.p
                for ty in tileRows {
                    let tbase = (ty - tileRows.lowerBound) * tw
                    for gi in 0..<wg.groupsPerRow {
                        let src = m + co * ldm + tbase + 8 * gi
                        // Rows first (over i, for each k), then columns (over k).
                        for k in 0..<6 {
                            let r = transformA(
                                load8(src, k * stride36), load8(src, (6 + k) * stride36), load8(src, (12 + k) * stride36),
                                load8(src, (18 + k) * stride36), load8(src, (24 + k) * stride36), load8(src, (30 + k) * stride36))
                            s[k] = r.0
                            s[6 + k] = r.1
                            s[12 + k] = r.2
                            s[18 + k] = r.3
                        }
                        let count = min(8, tw - 8 * gi)
                        for r in 0..<4 {
                            let oy = 4 * ty + r
                            if oy >= ho { break }
                            let y = transformA(s[r * 6], s[r * 6 + 1], s[r * 6 + 2], s[r * 6 + 3], s[r * 6 + 4], s[r * 6 + 5])
                            let row = dstPlane + oy * wo
                            let ox0 = 32 * gi
                            if ox0 + 32 <= wo && count == 8 {
                                for lane in 0..<8 {
                                    let o = row + ox0 + 4 * lane
                                    o[0] = y.0[lane] + bv
                                    o[1] = y.1[lane] + bv
                                    o[2] = y.2[lane] + bv
                                    o[3] = y.3[lane] + bv
                                }
                            } else {
                                for lane in 0..<count {
                                    let x = ox0 + 4 * lane
                                    let vals = (y.0[lane], y.1[lane], y.2[lane], y.3[lane])
                                    if x < wo { row[x] = vals.0 + bv }
                                    if x + 1 < wo { row[x + 1] = vals.1 + bv }
                                    if x + 2 < wo { row[x + 2] = vals.2 + bv }
                                    if x + 3 < wo { row[x + 3] = vals.3 + bv }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
