import OpacityTensor
import XCTest

/// Convolution: forward against a direct loop, gradients against finite differences and
/// against direct-loop gradients, over every path of the kernel (tiled im2col, whole-image
/// im2col, 1x1 direct, strided col2im, grouped, depthwise) and several thread counts.
final class ConvolutionTests: XCTestCase {
    struct Case {
        var name: String
        var input: [Int]
        var cout: Int
        var kernel: (Int, Int)
        var stride: (Int, Int) = (1, 1)
        var padding: (Int, Int) = (0, 0)
        var dilation: (Int, Int) = (1, 1)
        var groups = 1
        var bias = false
    }

    static let cases: [Case] = [
        Case(name: "3x3 pad 1 with bias", input: [2, 3, 6, 5], cout: 4, kernel: (3, 3), padding: (1, 1), bias: true),
        Case(name: "3x3 stride 2 pad 1, odd size", input: [2, 3, 7, 6], cout: 4, kernel: (3, 3), stride: (2, 2), padding: (1, 1)),
        Case(name: "non-square 3x2 kernel, stride (2,1), pad (1,0)", input: [1, 2, 7, 5], cout: 3, kernel: (3, 2),
             stride: (2, 1), padding: (1, 0), bias: true),
        Case(name: "dilation 2 pad 2", input: [1, 3, 7, 7], cout: 2, kernel: (3, 3), padding: (2, 2), dilation: (2, 2)),
        Case(name: "dilation (2,1) stride 2", input: [2, 2, 8, 7], cout: 3, kernel: (3, 3), stride: (2, 2), padding: (1, 1),
             dilation: (2, 1)),
        Case(name: "groups 2", input: [2, 4, 5, 5], cout: 6, kernel: (3, 3), padding: (1, 1), groups: 2, bias: true),
        Case(name: "groups 3 stride 2", input: [1, 6, 7, 6], cout: 3, kernel: (3, 3), stride: (2, 2), padding: (1, 1), groups: 3),
        Case(name: "depthwise", input: [2, 3, 6, 5], cout: 3, kernel: (3, 3), padding: (1, 1), groups: 3, bias: true),
        Case(name: "depthwise multiplier 2 stride 2", input: [1, 3, 7, 7], cout: 6, kernel: (3, 3), stride: (2, 2),
             padding: (1, 1), groups: 3),
        Case(name: "depthwise 5x5 dilation 2", input: [1, 2, 9, 8], cout: 2, kernel: (5, 5), padding: (4, 4), dilation: (2, 2),
             groups: 2),
        Case(name: "1x1 direct", input: [2, 5, 4, 3], cout: 4, kernel: (1, 1), bias: true),
        Case(name: "1x1 direct groups 2", input: [2, 4, 3, 3], cout: 6, kernel: (1, 1), groups: 2),
        Case(name: "1x1 stride 2", input: [2, 4, 5, 6], cout: 3, kernel: (1, 1), stride: (2, 2)),
        Case(name: "7x7 stride 2 pad 3 (stem)", input: [1, 3, 11, 10], cout: 2, kernel: (7, 7), stride: (2, 2), padding: (3, 3)),
        Case(name: "padding beyond the kernel reach", input: [1, 2, 4, 4], cout: 2, kernel: (3, 3), padding: (3, 2)),
        Case(name: "kernel as large as the padded input", input: [1, 2, 3, 3], cout: 2, kernel: (5, 5), padding: (1, 1)),
        Case(name: "row expansion (stem-like, wide rows)", input: [1, 2, 5, 100], cout: 3, kernel: (3, 3), stride: (2, 1),
             padding: (1, 1), bias: true),
    ]

    func conv(_ c: Case, _ x: Tensor, _ w: Tensor, _ b: Tensor?) -> Tensor {
        x.conv2d(w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
    }

    func tensors(_ c: Case, seed: UInt64) -> (Tensor, Tensor, Tensor?) {
        let x = uniform(c.input, seed: seed)
        let w = uniform([c.cout, c.input[1] / c.groups, c.kernel.0, c.kernel.1], -0.5, 0.5, seed: seed + 1)
        let b = c.bias ? uniform([c.cout], seed: seed + 2) : nil
        return (x, w, b)
    }

    func testForwardMatchesDirectLoops() {
        let saved = Compute.threads
        defer { Compute.threads = saved }
        for threads in [1, 2, 3] {
            Compute.threads = threads
            for (i, c) in Self.cases.enumerated() {
                let (x, w, b) = tensors(c, seed: UInt64(10 * i))
                let y = conv(c, x, w, b)
                let ref = referenceConv2d(x, w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
                XCTAssertEqual(y.shape, ref.shape, c.name)
                assertClose(y, ref.values, absolute: 1e-5, relative: 1e-5, "\(c.name), \(threads) threads")
            }
        }
    }

    func testGradientsMatchFiniteDifferences() {
        for (i, c) in Self.cases.enumerated() {
            let (x, w, b) = tensors(c, seed: UInt64(10 * i + 3))
            var inputs = [x, w]
            if let b { inputs.append(b) }
            checkGradients("conv2d \(c.name)", inputs, eps: 1e-2) { t in
                conv(c, t[0], t[1], t.count > 2 ? t[2] : nil)
            }
        }
    }

    /// Runs `c` on `x`, `w`, `b` with gradients, backpropagates `r` and checks the output and
    /// both gradients against direct loops, each to 1e-4 of its largest magnitude (the usual
    /// measure for Winograd); returns the output and the input and weight gradients.
    @discardableResult
    func checkAgainstDirectLoops(
        _ c: Case, _ x: Tensor, _ w: Tensor, _ b: Tensor?, _ r: Tensor, _ label: String,
        file: StaticString = #filePath, line: UInt = #line
    ) -> (y: Tensor, gx: Tensor, gw: Tensor) {
        let ref = referenceConv2d(x, w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
        let xg = x.requiringGrad(), wg = w.requiringGrad()
        let y = conv(c, xg, wg, b)
        y.backward(r)
        let (dx, dw) = Self.referenceGradients(c, x, w, r)
        assertClose(y, ref.values, absolute: 1e-4 * ref.values.map(abs).max()!, relative: 0, "\(label) forward", file: file, line: line)
        assertClose(xg.grad!, dx, absolute: 1e-4 * dx.map(abs).max()!, relative: 0, "\(label) input gradient", file: file, line: line)
        assertClose(wg.grad!, dw, absolute: 1e-4 * dw.map(abs).max()!, relative: 0, "\(label) weight gradient", file: file, line: line)
        return (y, xg.grad!, wg.grad!)
    }

    /// Direct-loop gradients of `sum(conv(x, w) * r)`.
    static func referenceGradients(_ c: Case, _ x: Tensor, _ w: Tensor, _ r: Tensor) -> (dx: [Double], dw: [Double]) {
        let (n, cin, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (cout, cinG, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3])
        let (ho, wo) = (r.shape[2], r.shape[3])
        let coutG = cout / c.groups
        var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: w.count)
        let xs = x.scalars, ws = w.scalars, rs = r.scalars
        for b in 0..<n {
            for oc in 0..<cout {
                for oy in 0..<ho {
                    for ox in 0..<wo {
                        let g = Double(rs[((b * cout + oc) * ho + oy) * wo + ox])
                        for ci in 0..<cinG {
                            let ch = (oc / coutG) * cinG + ci
                            for i in 0..<kh {
                                for j in 0..<kw {
                                    let iy = oy * c.stride.0 - c.padding.0 + i * c.dilation.0
                                    let ix = ox * c.stride.1 - c.padding.1 + j * c.dilation.1
                                    if iy < 0 || iy >= h || ix < 0 || ix >= wd { continue }
                                    let xi = ((b * cin + ch) * h + iy) * wd + ix, wi = ((oc * cinG + ci) * kh + i) * kw + j
                                    dx[xi] += g * Double(ws[wi])
                                    dw[wi] += g * Double(xs[xi])
                                }
                            }
                        }
                    }
                }
            }
        }
        return (dx, dw)
    }

    /// Larger maps, so the kernels cut the work into several row tiles, per-thread weight
    /// gradients, and whole-image paths; checked exactly against direct loops.
    func testLargeMapsUseEveryPathAndMatchDirectLoops() {
        let large: [Case] = [
            Case(name: "tiled 3x3", input: [2, 64, 40, 36], cout: 8, kernel: (3, 3), padding: (1, 1)),
            Case(name: "tiled 3x3 stride 2", input: [1, 48, 41, 30], cout: 6, kernel: (3, 3), stride: (2, 2), padding: (1, 1)),
            Case(name: "tiled 1x1", input: [1, 32, 48, 48], cout: 16, kernel: (1, 1), bias: true),
            Case(name: "tiled 1x1 stride 2", input: [2, 32, 30, 30], cout: 8, kernel: (1, 1), stride: (2, 2)),
            Case(name: "tiled grouped 3x3", input: [1, 64, 30, 30], cout: 32, kernel: (3, 3), padding: (1, 1), groups: 4),
            Case(name: "whole-image deep 3x3", input: [1, 256, 6, 6], cout: 64, kernel: (3, 3), padding: (1, 1)),
            Case(name: "whole-image deep 3x3 stride 2 grouped", input: [1, 128, 8, 8], cout: 64, kernel: (3, 3),
                 stride: (2, 2), padding: (1, 1), groups: 2),
            Case(name: "whole-image deep 1x1", input: [1, 512, 4, 4], cout: 128, kernel: (1, 1)),
            // Few input channels, wide rows: the row-expansion path of network stems.
            Case(name: "row expansion 7x7/2 stem", input: [2, 3, 21, 200], cout: 16, kernel: (7, 7), stride: (2, 2),
                 padding: (3, 3), bias: true),
            Case(name: "row expansion 3x3 stride 1, horizontal dilation", input: [1, 3, 9, 130], cout: 8, kernel: (3, 3),
                 padding: (1, 2), dilation: (1, 2)),
            Case(name: "row expansion 5x3 stride (2, 3)", input: [1, 4, 12, 400], cout: 5, kernel: (5, 3), stride: (2, 3),
                 padding: (2, 0)),
        ]
        let saved = Compute.threads
        defer { Compute.threads = saved }
        for threads in [1, 2, 4] {
            Compute.threads = threads
            for (i, c) in large.enumerated() {
                let (x, w, b) = tensors(c, seed: UInt64(100 + i))
                let ref = referenceConv2d(x, w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
                let xg = x.requiringGrad(), wg = w.requiringGrad()
                let y = conv(c, xg, wg, b)
                assertClose(y, ref.values, absolute: 1e-4, relative: 1e-4, "\(c.name) forward, \(threads) threads")
                let r = uniform(y.shape, seed: UInt64(200 + i))
                y.backward(r)
                let (dx, dw) = Self.referenceGradients(c, x, w, r)
                assertClose(xg.grad!, dx, absolute: 1e-3, relative: 1e-4, "\(c.name) input gradient, \(threads) threads")
                assertClose(wg.grad!, dw, absolute: 1e-3, relative: 1e-4, "\(c.name) weight gradient, \(threads) threads")
            }
        }
    }

    /// The row expansion's forward pass in bands of output rows
    /// (``ConvolutionSettings/rowExpansionBandFloats``) gives the bits of the whole image
    /// expanded at once, and matches direct loops: bands of 1 to 3 rows and the rows two bands
    /// share, stride 1 and 2, batch 2, 1 to 3 threads.
    func testRowExpansionInBandsGivesTheBitsOfOneBand() {
        let cases: [Case] = [
            Case(name: "3x3 stride 1 pad 1, batch 2, bias", input: [2, 8, 30, 100], cout: 6, kernel: (3, 3), padding: (1, 1),
                 bias: true),
            Case(name: "3x3 stride 2 pad 1, odd rows", input: [1, 4, 31, 200], cout: 5, kernel: (3, 3), stride: (2, 2),
                 padding: (1, 1)),
        ]
        let saved = (Compute.threads, ConvolutionSettings.rowExpansionBandFloats)
        defer { (Compute.threads, ConvolutionSettings.rowExpansionBandFloats) = saved }
        for (i, c) in cases.enumerated() {
            let (x, w, b) = tensors(c, seed: UInt64(900 + i))
            let ref = referenceConv2d(x, w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
            let rowFloats = c.input[1] * c.kernel.1 * ref.shape[3]
            for threads in [1, 2, 3] {
                Compute.threads = threads
                ConvolutionSettings.rowExpansionBandFloats = 1 << 30
                let whole = conv(c, x, w, b)
                assertClose(whole, ref.values, absolute: 1e-4, relative: 1e-4, "\(c.name), one band, \(threads) threads")
                for bandRows in [3, 4, 5] {
                    ConvolutionSettings.rowExpansionBandFloats = bandRows * rowFloats
                    let banded = conv(c, x, w, b)
                    let differ = zip(banded.scalars, whole.scalars).filter { $0.0.bitPattern != $0.1.bitPattern }.count
                    XCTAssertEqual(differ, 0, "\(c.name), \(bandRows) expanded rows per band, \(threads) threads: values that differ")
                }
            }
        }
    }

    /// Grouped convolutions with enough groups for the per-group backward tasks
    /// (``ConvolutionSettings/groupedTasks``: the weight gradient one task per group, the
    /// strided input gradient one per image and group): gradients against direct loops and
    /// against the im2col path's splits, 3 to 8 channels per group (DPN's 3, SE-ResNeXt's 4
    /// and 8), stride 1 and 2, odd sizes, padding 0 and 1, a 5x3 kernel, batch 1 and 2.
    func testGroupedTasksMatchDirectLoopsAndSplits() {
        let cases: [Case] = [
            Case(name: "g8 3x3/2 pad 1, batch 2, bias", input: [2, 32, 13, 11], cout: 32, kernel: (3, 3), stride: (2, 2),
                 padding: (1, 1), groups: 8, bias: true),
            Case(name: "g8 3x3 stride 1, 3 channels per group", input: [1, 24, 12, 9], cout: 24, kernel: (3, 3), padding: (1, 1),
                 groups: 8),
            Case(name: "g8 3x3/2 pad 0, 3 in and 6 out per group", input: [1, 24, 15, 14], cout: 48, kernel: (3, 3),
                 stride: (2, 2), groups: 8),
            Case(name: "g16 5x3/2 pad (2, 1), 4 per group, 40x40", input: [1, 64, 40, 40], cout: 64, kernel: (5, 3),
                 stride: (2, 2), padding: (2, 1), groups: 16),
        ]
        let saved = (Compute.threads, ConvolutionSettings.groupedTasks)
        defer { (Compute.threads, ConvolutionSettings.groupedTasks) = saved }
        for (i, c) in cases.enumerated() {
            let (x, w, b) = tensors(c, seed: UInt64(600 + i))
            let ref = referenceConv2d(x, w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
            let r = uniform(ref.shape, seed: UInt64(700 + i))
            let (dx, dw) = Self.referenceGradients(c, x, w, r)
            var byThreads: [(Tensor, Tensor)] = []
            // Up to 4 threads: 8 groups are then still two per thread, so the tasks run.
            for threads in [1, 2, 4] {
                Compute.threads = threads
                var outputs: [Bool: (Tensor, Tensor, Tensor)] = [:]
                for tasks in [true, false] {
                    ConvolutionSettings.groupedTasks = tasks
                    let xg = x.requiringGrad(), wg = w.requiringGrad()
                    let y = conv(c, xg, wg, b)
                    y.backward(r)
                    outputs[tasks] = (y, xg.grad!, wg.grad!)
                }
                let (y, gx, gw) = outputs[true]!, (_, gx2, gw2) = outputs[false]!
                assertClose(y, ref.values, absolute: 1e-4, relative: 1e-4, "\(c.name) forward, \(threads) threads")
                assertClose(gx, dx, absolute: 1e-4, relative: 1e-4, "\(c.name) input gradient, \(threads) threads")
                assertClose(gw, dw, absolute: 1e-4, relative: 1e-4, "\(c.name) weight gradient, \(threads) threads")
                assertClose(gx, gx2, absolute: 1e-5, relative: 1e-5, "\(c.name) input gradient vs splits, \(threads) threads")
                assertClose(gw, gw2, absolute: 1e-5, relative: 1e-5, "\(c.name) weight gradient vs splits, \(threads) threads")
                byThreads.append((gx, gw))
            }
            // Each task owns its output: the same bits at every thread count.
            for (t, (gx, gw)) in byThreads.enumerated().dropFirst() {
                XCTAssertEqual(gx.scalars, byThreads[0].0.scalars, "\(c.name): input gradient differs at thread setting \(t)")
                XCTAssertEqual(gw.scalars, byThreads[0].1.scalars, "\(c.name): weight gradient differs at thread setting \(t)")
            }
        }
    }

    func testGroupedTasksGradientsMatchFiniteDifferences() {
        let saved = (Compute.threads, ConvolutionSettings.groupedTasks)
        defer { (Compute.threads, ConvolutionSettings.groupedTasks) = saved }
        ConvolutionSettings.groupedTasks = true
        Compute.threads = 2
        for (i, c) in [
            Case(name: "grouped tasks 3x3/2", input: [2, 16, 9, 7], cout: 16, kernel: (3, 3), stride: (2, 2), padding: (1, 1),
                 groups: 8, bias: true),
            Case(name: "grouped tasks 3x3", input: [1, 24, 6, 7], cout: 16, kernel: (3, 3), padding: (1, 1), groups: 8),
        ].enumerated() {
            let (x, w, b) = tensors(c, seed: UInt64(800 + 10 * i))
            var inputs = [x, w]
            if let b { inputs.append(b) }
            checkGradients("conv2d \(c.name)", inputs, eps: 1e-2, maxElements: 200) { t in
                conv(c, t[0], t[1], t.count > 2 ? t[2] : nil)
            }
        }
    }

    /// Winograd F(4x4, 3x3) (dense 3x3 stride 1, 16+ channels, 160+ output tiles): forward and
    /// gradients against direct loops, and against the im2col path, on sizes that are not
    /// multiples of the 4x4 tile nor of the eight tiles per vector, padding 0, 1 and 2, bias,
    /// batch 2, several thread counts. The input gradient is itself such a convolution.
    func testWinogradMatchesDirectLoopsAndIm2col() {
        let cases: [Case] = [
            Case(name: "winograd 3x3 pad 1, batch 2, bias", input: [2, 16, 37, 45], cout: 24, kernel: (3, 3), padding: (1, 1),
                 bias: true),
            Case(name: "winograd 3x3 pad 0, 17 tiles per row", input: [1, 20, 41, 70], cout: 16, kernel: (3, 3)),
            Case(name: "winograd 3x3 pad (2, 1)", input: [2, 16, 34, 37], cout: 16, kernel: (3, 3), padding: (2, 1)),
        ]
        let saved = (Compute.threads, ConvolutionSettings.winograd, ConvolutionSettings.winogradWeightGradientMinChannels)
        defer { (Compute.threads, ConvolutionSettings.winograd, ConvolutionSettings.winogradWeightGradientMinChannels) = saved }
        // The weight gradient too, although these channel counts keep im2col by default.
        ConvolutionSettings.winogradWeightGradientMinChannels = 0
        for threads in [1, 2, 3] {
            Compute.threads = threads
            for (i, c) in cases.enumerated() {
                let (x, w, b) = tensors(c, seed: UInt64(300 + i))
                let r = uniform(conv(c, x, w, b).shape, seed: UInt64(400 + i))
                ConvolutionSettings.winograd = false
                let (y2, gx2, gw2) = checkAgainstDirectLoops(c, x, w, b, r, "\(c.name), im2col, \(threads) threads")
                ConvolutionSettings.winograd = true
                let (y, gx, gw) = checkAgainstDirectLoops(c, x, w, b, r, "\(c.name), \(threads) threads")
                // The two paths compute differently: identical bits would mean Winograd never ran.
                XCTAssertNotEqual(y.scalars, y2.scalars, "\(c.name): the Winograd path was not taken")
                XCTAssertNotEqual(gx.scalars, gx2.scalars, "\(c.name): the Winograd path was not taken for the input gradient")
                XCTAssertNotEqual(gw.scalars, gw2.scalars, "\(c.name): the Winograd path was not taken for the weight gradient")
            }
        }
        // Repeats bit for bit at a fixed thread count.
        ConvolutionSettings.winograd = true
        Compute.threads = 2
        let c = cases[0]
        let (x, w, b) = tensors(c, seed: 300)
        XCTAssertEqual(conv(c, x, w, b).scalars, conv(c, x, w, b).scalars)
    }

    /// With many threads the Winograd forward pass and input gradient share each block of tiles
    /// among the threads (one block's scratch, whatever the thread count): against direct loops
    /// at 2, 3 and 5 threads, forward and both gradients, on odd sizes, padding 0 and 2, batch 2,
    /// channels that are not multiples of 8, several blocks per image; bit for bit again.
    /// On 4 or more threads, GEMM convolutions on small maps split the weight rows over the
    /// threads (`ConvPlan.splitsWeightRows`): values and gradients against direct loops, on
    /// row counts that are not multiples of 16, batch 1 and 2, 1x1 (also its input gradient,
    /// read through the transposed weights), strided and dilated 3x3.
    func testWeightRowSplitMatchesDirectLoops() {
        let cases: [Case] = [
            Case(name: "1x1, batch 2, bias", input: [2, 24, 7, 9], cout: 100, kernel: (1, 1), bias: true),
            Case(name: "1x1 wide input (input gradient split too)", input: [1, 112, 6, 6], cout: 100, kernel: (1, 1)),
            Case(name: "3x3 stride 2 pad 1", input: [1, 10, 15, 13], cout: 103, kernel: (3, 3), stride: (2, 2), padding: (1, 1)),
            Case(name: "3x3 dilation 2 pad 2, batch 2", input: [2, 6, 9, 9], cout: 98, kernel: (3, 3), padding: (2, 2),
                 dilation: (2, 2), bias: true),
        ]
        let saved = Compute.threads
        defer { Compute.threads = saved }
        for threads in [4, 6] {
            Compute.threads = threads
            for (i, c) in cases.enumerated() {
                let (x, w, b) = tensors(c, seed: UInt64(800 + i))
                let r = uniform(conv(c, x, w, b).shape, seed: UInt64(900 + i))
                let (_, log) = ConvolutionKernelLog.record {
                    checkAgainstDirectLoops(c, x, w, b, r, "\(c.name), \(threads) threads")
                }
                let forward = log.filter { $0.entry.pass == "forward" }.map(\.entry.kernel)
                XCTAssertTrue(forward.allSatisfy { $0.hasSuffix("weight rows") }, "\(c.name): \(forward)")
                if c.input[1] >= 16 * threads && c.kernel == (1, 1) {
                    // the 1x1 input gradient runs the same GEMM on the transposed weights, split too
                    let inputGradient = log.filter { $0.entry.pass == "input gradient" }.map(\.entry.kernel)
                    XCTAssertEqual(inputGradient, ["1x1 gemm weight rows"], c.name)
                }
            }
        }
    }

    func testWinogradSharedBlocksMatchDirectLoops() {
        let cases: [Case] = [
            Case(name: "batch 2, pad 1, bias", input: [2, 20, 37, 45], cout: 36, kernel: (3, 3), padding: (1, 1), bias: true),
            Case(name: "pad 0, 17 tiles per row", input: [1, 24, 41, 70], cout: 16, kernel: (3, 3)),
            Case(name: "pad 2", input: [1, 16, 54, 50], cout: 40, kernel: (3, 3), padding: (2, 2)),
        ]
        let saved = (Compute.threads, ConvolutionSettings.winograd, ConvolutionSettings.winogradMode, ConvolutionSettings.winogradSharedTiles)
        defer {
            (Compute.threads, ConvolutionSettings.winograd, ConvolutionSettings.winogradMode, ConvolutionSettings.winogradSharedTiles) = saved
        }
        ConvolutionSettings.winograd = true
        ConvolutionSettings.winogradMode = "shared"
        ConvolutionSettings.winogradSharedTiles = 40  // several blocks per image
        for threads in [2, 3, 5] {
            Compute.threads = threads
            for (i, c) in cases.enumerated() {
                let (x, w, b) = tensors(c, seed: UInt64(600 + i))
                let r = uniform(conv(c, x, w, b).shape, seed: UInt64(700 + i))
                let ((y, _, _), log) = ConvolutionKernelLog.record {
                    checkAgainstDirectLoops(c, x, w, b, r, "\(c.name), shared, \(threads) threads")
                }
                // The shared path ran, for the forward pass and the input gradient.
                XCTAssertEqual(Set(log.filter { $0.entry.pass != "weight gradient" }.map(\.entry.kernel)), ["winograd shared"], c.name)
                XCTAssertEqual(Autograd.inference { conv(c, x, w, b) }.scalars, y.scalars, "\(c.name): bit for bit again")
                ConvolutionSettings.winogradMode = "private"
                let (privateOut, privateLog) = ConvolutionKernelLog.record { Autograd.inference { conv(c, x, w, b) } }
                ConvolutionSettings.winogradMode = "shared"
                XCTAssertEqual(privateLog.map(\.entry.kernel), ["winograd"], c.name)
                assertClose(y, privateOut, absolute: 1e-5 * Double(y.scalars.map(abs).max()!), relative: 0,
                            "\(c.name): shared and private blocks, \(threads) threads")
            }
        }
    }

    /// `conv2dInPlace` with shared Winograd blocks writes over its input: the same bits as
    /// `conv2d` into a new tensor (odd sizes, a batch, several blocks per image, a block of one
    /// tile row, with and without bias). Where it cannot (the input held elsewhere, a graph
    /// recorded, private blocks, other channel counts or padding) it returns a new tensor and
    /// leaves the input as it was.
    func testWinogradInPlaceGivesTheBitsOfANewOutput() {
        let saved = (Compute.threads, ConvolutionSettings.winograd, ConvolutionSettings.winogradMode, ConvolutionSettings.winogradSharedTiles)
        defer {
            (Compute.threads, ConvolutionSettings.winograd, ConvolutionSettings.winogradMode, ConvolutionSettings.winogradSharedTiles) = saved
        }
        ConvolutionSettings.winograd = true
        ConvolutionSettings.winogradMode = "shared"
        // at least 160 tiles of 4x4 (``ConvPlan/winogradEligible``)
        let cases: [([Int], Bool, Int)] = [([1, 24, 53, 45], true, 40), ([2, 16, 38, 33], false, 40), ([1, 16, 81, 29], true, 8)]
        for threads in [3, 5] {
            Compute.threads = threads
            for (i, (shape, hasBias, tiles)) in cases.enumerated() {
                ConvolutionSettings.winogradSharedTiles = tiles
                let x = uniform(shape, seed: UInt64(800 + i))
                let w = uniform([shape[1], shape[1], 3, 3], -0.5, 0.5, seed: UInt64(810 + i))
                let b = hasBias ? uniform([shape[1]], seed: UInt64(820 + i)) : nil
                let expected = Autograd.inference { x.conv2d(w, bias: b, padding: (1, 1)) }
                let what = "\(shape), \(tiles) tiles per block, \(threads) threads"
                let (wasInPlace, got) = Autograd.inference {
                    let fresh = Tensor(shape: x.shape, scalars: x.scalars)
                    let before = ObjectIdentifier(fresh.storage)
                    let y = fresh.conv2dInPlace(w, bias: b, padding: (1, 1))
                    return (ObjectIdentifier(y.storage) == before, y)
                }
                XCTAssertTrue(wasInPlace, what)
                XCTAssertEqual(got.shape, expected.shape, what)
                XCTAssertEqual(got.scalars, expected.scalars, "\(what): bit for bit")
                // held elsewhere: a new tensor, the input untouched
                let held = Autograd.inference { x.conv2dInPlace(w, bias: b, padding: (1, 1)) }
                XCTAssertFalse(held.storage === x.storage, what)
                XCTAssertEqual(held.scalars, expected.scalars, what)
                XCTAssertEqual(x.scalars, uniform(shape, seed: UInt64(800 + i)).scalars, "\(what): input unchanged")
            }
        }
        // where it cannot, a new output
        Compute.threads = 3
        ConvolutionSettings.winogradSharedTiles = 40
        let x = uniform([1, 16, 70, 33], seed: 830), w = uniform([16, 16, 3, 3], -0.5, 0.5, seed: 831)
        func inPlace(_ weight: Tensor, padding: (Int, Int), recording: Bool = false) -> Bool {
            let run = {
                let fresh = Tensor(shape: x.shape, scalars: x.scalars)
                let before = ObjectIdentifier(fresh.storage)
                return ObjectIdentifier(fresh.conv2dInPlace(weight, padding: padding).storage) == before
            }
            return recording ? run() : Autograd.inference(run)
        }
        XCTAssertTrue(inPlace(w, padding: (1, 1)))
        XCTAssertFalse(inPlace(w, padding: (1, 1), recording: true), "a graph is recorded")
        XCTAssertFalse(inPlace(uniform([24, 16, 3, 3], seed: 832), padding: (1, 1)), "Cout != Cin")
        XCTAssertFalse(inPlace(w, padding: (2, 2)), "padding 2")
        ConvolutionSettings.winogradMode = "private"
        XCTAssertFalse(inPlace(w, padding: (1, 1)), "private blocks")
    }

    /// In `auto` mode at 2 threads, inference shares the Winograd blocks, so a 3x3 convolution
    /// with as many channels out as in writes over its input (the bits of `conv2d` into a new
    /// tensor); a pass that records a graph keeps a block per thread, and its values differ
    /// from the shared blocks' by rounding only.
    func testInferenceAtTwoThreadsSharesWinogradBlocksAndRunsInPlace() {
        let saved = (Compute.threads, ConvolutionSettings.winograd, ConvolutionSettings.winogradMode)
        defer { (Compute.threads, ConvolutionSettings.winograd, ConvolutionSettings.winogradMode) = saved }
        ConvolutionSettings.winograd = true
        ConvolutionSettings.winogradMode = "auto"
        Compute.threads = 2
        // 18 x 9 = 162 tiles of 4x4, at least 160 (``ConvPlan/winogradEligible``)
        let x = uniform([1, 16, 70, 33], seed: 840), w = uniform([16, 16, 3, 3], -0.5, 0.5, seed: 841)
        let (recorded, recordedLog) = ConvolutionKernelLog.record { x.conv2d(w, padding: (1, 1)) }
        XCTAssertEqual(recordedLog.map(\.entry.kernel), ["winograd"], "a recorded pass: a block per thread")
        let (expected, log) = ConvolutionKernelLog.record { Autograd.inference { x.conv2d(w, padding: (1, 1)) } }
        XCTAssertEqual(log.map(\.entry.kernel), ["winograd shared"], "inference: shared blocks")
        let (wasInPlace, got) = Autograd.inference {
            let fresh = Tensor(shape: x.shape, scalars: x.scalars)
            let before = ObjectIdentifier(fresh.storage)
            let y = (consume fresh).conv2dInPlace(w, padding: (1, 1))
            return (ObjectIdentifier(y.storage) == before, y)
        }
        XCTAssertTrue(wasInPlace, "inference at 2 threads writes over the input")
        XCTAssertEqual(got.scalars, expected.scalars, "bit for bit")
        assertClose(recorded, expected, absolute: 1e-5 * Double(expected.scalars.map(abs).max()!), relative: 0)
    }

    /// A depthwise convolution whose output has its input's shape runs in place at any thread
    /// count (``Tensor/conv2dInPlace(_:bias:stride:padding:dilation:groups:)``): the bits of
    /// `conv2d`, the input untouched when something else holds it, and a new output where the
    /// shape changes, a graph is recorded or the channel multiplier is not 1.
    func testDepthwiseInPlaceGivesTheBitsOfANewOutput() {
        let saved = Compute.threads
        defer { Compute.threads = saved }
        // (input, kernel, padding, dilation, bias)
        let cases: [([Int], Int, Int, Int, Bool)] = [
            ([1, 12, 17, 23], 3, 1, 1, false), ([2, 5, 9, 31], 5, 2, 1, true), ([1, 7, 20, 11], 3, 2, 2, true),
        ]
        for threads in [1, 2, 3] {
            Compute.threads = threads
            for (i, (shape, k, p, d, hasBias)) in cases.enumerated() {
                let c = shape[1]
                let x = uniform(shape, seed: UInt64(850 + i))
                let w = uniform([c, 1, k, k], -0.5, 0.5, seed: UInt64(860 + i))
                let b = hasBias ? uniform([c], seed: UInt64(870 + i)) : nil
                let expected = Autograd.inference { x.conv2d(w, bias: b, padding: (p, p), dilation: (d, d), groups: c) }
                let reference = referenceConv2d(x, w, bias: b, padding: (p, p), dilation: (d, d), groups: c)
                assertClose(expected, reference.values, "depthwise \(shape) k\(k) d\(d)")
                let what = "\(shape), \(k)x\(k) padding \(p) dilation \(d), \(threads) threads"
                let (wasInPlace, got) = Autograd.inference {
                    let fresh = Tensor(shape: x.shape, scalars: x.scalars)
                    let before = ObjectIdentifier(fresh.storage)
                    let y = (consume fresh).conv2dInPlace(w, bias: b, padding: (p, p), dilation: (d, d), groups: c)
                    return (ObjectIdentifier(y.storage) == before, y)
                }
                XCTAssertTrue(wasInPlace, what)
                XCTAssertEqual(got.shape, expected.shape, what)
                XCTAssertEqual(got.scalars, expected.scalars, "\(what): bit for bit")
                let held = Autograd.inference { x.conv2dInPlace(w, bias: b, padding: (p, p), dilation: (d, d), groups: c) }
                XCTAssertFalse(held.storage === x.storage, what)
                XCTAssertEqual(held.scalars, expected.scalars, what)
                XCTAssertEqual(x.scalars, uniform(shape, seed: UInt64(850 + i)).scalars, "\(what): input unchanged")
            }
        }
        let x = uniform([1, 6, 12, 10], seed: 880), w = uniform([6, 1, 3, 3], -0.5, 0.5, seed: 881)
        func inPlace(_ weight: Tensor, stride: Int = 1, padding: Int = 1, groups: Int = 6, recording: Bool = false) -> Bool {
            let run = {
                let fresh = Tensor(shape: x.shape, scalars: x.scalars)
                let before = ObjectIdentifier(fresh.storage)
                let y = (consume fresh).conv2dInPlace(weight, stride: (stride, stride), padding: (padding, padding), groups: groups)
                XCTAssertEqual(
                    y.scalars,
                    x.conv2d(weight, stride: (stride, stride), padding: (padding, padding), groups: groups).scalars)
                return ObjectIdentifier(y.storage) == before
            }
            return recording ? run() : Autograd.inference(run)
        }
        XCTAssertTrue(inPlace(w))
        XCTAssertFalse(inPlace(w, recording: true), "a graph is recorded")
        XCTAssertFalse(inPlace(w, stride: 2), "stride 2")
        XCTAssertFalse(inPlace(w, padding: 0), "padding 0")
        XCTAssertFalse(inPlace(uniform([12, 1, 3, 3], seed: 882)), "channel multiplier 2")
        XCTAssertFalse(inPlace(uniform([6, 3, 3, 3], seed: 883), groups: 2), "grouped, not depthwise")
    }

    /// ``Sequential`` hands an ``InPlaceLayer`` after its first layer the previous output to
    /// write over while no graph is recorded: the values of running each layer in turn, and the
    /// caller's input untouched (the first layer never writes over it).
    func testSequentialRunsInPlaceLayersOnItsOwnMaps() {
        let depthwise = { (seed: UInt64) -> Conv2d in
            let conv = Conv2d(8, 8, kernel: 3, padding: 1, groups: 8, bias: true)
            conv.weight.value = uniform([8, 1, 3, 3], -0.5, 0.5, seed: seed)
            conv.bias!.value = uniform([8], seed: seed + 1)
            return conv
        }
        let first = depthwise(890), second = depthwise(892)
        let x = uniform([1, 8, 15, 13], seed: 894)
        let stepByStep = Autograd.inference { second(ReLU()(first(x))) }
        let chained = Sequential([first, ReLU(), second])
        let (got, log) = ConvolutionKernelLog.record { Autograd.inference { chained(x) } }
        XCTAssertEqual(got.scalars, stepByStep.scalars)
        // the first convolution reads the caller's map, the second writes over the ReLU's
        XCTAssertEqual(log.map(\.entry.kernel), ["depthwise", "depthwise in place"])
        XCTAssertEqual(x.scalars, uniform([1, 8, 15, 13], seed: 894).scalars, "the caller's input is untouched")
        // the first layer in place would write over the caller's map
        let alone = Sequential([first])
        XCTAssertEqual(Autograd.inference { alone(x) }.scalars, Autograd.inference { first(x) }.scalars)
        XCTAssertEqual(x.scalars, uniform([1, 8, 15, 13], seed: 894).scalars, "the caller's input is untouched")
        // recorded: the graph's gradients, as layer by layer
        let xg = x.requiringGrad()
        chained(xg).sum().backward()
        let xs = x.requiringGrad()
        second(ReLU()(first(xs))).sum().backward()
        XCTAssertEqual(xg.grad?.scalars, xs.grad?.scalars)
    }

    /// The Winograd forward pass cuts the map into blocks of tiles (96 in inference by default,
    /// 192 while gradients are recorded, `OPACITY_WINOGRAD_TILES`); the block size changes the
    /// scratch memory, and the values by rounding at most (the GEMM library may split a wider
    /// product differently), and each size repeats bit for bit.
    func testWinogradBlockSizeChangesOnlyRounding() {
        let c = Case(name: "head layer", input: [1, 32, 64, 72], cout: 32, kernel: (3, 3), padding: (1, 1), bias: true)
        let saved = (Compute.threads, ConvolutionSettings.winograd, ConvolutionSettings.winogradTiles)
        defer { (Compute.threads, ConvolutionSettings.winograd, ConvolutionSettings.winogradTiles) = saved }
        ConvolutionSettings.winograd = true
        Compute.threads = 2
        let (x, w, b) = tensors(c, seed: 500)
        let ref = referenceConv2d(x, w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
        let scale = ref.values.map(abs).max()!
        ConvolutionSettings.winogradTiles = nil
        let inference = Autograd.inference { conv(c, x, w, b) }
        let recording = conv(c, x.requiringGrad(), w, b)
        assertClose(inference, ref.values, absolute: 1e-4 * scale, relative: 0, "96 tiles (inference) against direct loops")
        assertClose(recording, inference, absolute: 1e-5 * scale, relative: 0, "192 tiles (recording) against 96")
        for tiles in [18, 37, 288] {
            ConvolutionSettings.winogradTiles = tiles
            let y = Autograd.inference { conv(c, x, w, b) }
            assertClose(y, inference, absolute: 1e-5 * scale, relative: 0, "\(tiles) tiles per block")
            XCTAssertEqual(y.scalars, Autograd.inference { conv(c, x, w, b) }.scalars, "\(tiles) tiles: bit for bit again")
        }
    }

    /// The Winograd weight gradient alone (the forward pass and input gradient take Winograd
    /// either way) against direct loops and against the im2col weight gradient, relative error
    /// at most 1e-4 of the largest magnitude: channels that are not multiples of 4 or 8, odd
    /// map sizes, padding 0, 1 and 2, batch 1 to 7, a tile block that spans two images and a map
    /// cut into two blocks; bit for bit the same at 1, 2 and 3 threads.
    func testWinogradWeightGradientMatchesDirectLoopsAtAnyThreadCount() {
        let cases: [Case] = [
            Case(name: "18->17 channels, pad 1, batch 3", input: [3, 18, 27, 29], cout: 17, kernel: (3, 3), padding: (1, 1)),
            Case(name: "7 small images in one block, pad 0", input: [7, 21, 19, 22], cout: 19, kernel: (3, 3)),
            // 40 input channels: wide maps with fewer take the row expansion of stems.
            Case(name: "pad 2, wide", input: [1, 40, 23, 131], cout: 30, kernel: (3, 3), padding: (2, 2)),
            Case(name: "two blocks, the first spanning both images", input: [2, 16, 130, 90], cout: 16, kernel: (3, 3),
                 padding: (1, 1), bias: true),
        ]
        let saved = (
            Compute.threads, ConvolutionSettings.winograd, ConvolutionSettings.winogradWeightGradient,
            ConvolutionSettings.winogradWeightGradientMinChannels
        )
        defer {
            (
                Compute.threads, ConvolutionSettings.winograd, ConvolutionSettings.winogradWeightGradient,
                ConvolutionSettings.winogradWeightGradientMinChannels
            ) = saved
        }
        ConvolutionSettings.winograd = true
        // Small channel counts keep im2col by default (faster there); take Winograd anyway.
        ConvolutionSettings.winogradWeightGradientMinChannels = 0
        for (i, c) in cases.enumerated() {
            let (x, w, b) = tensors(c, seed: UInt64(800 + i))
            let (ho, wo) = (c.input[2] + 2 * c.padding.0 - 2, c.input[3] + 2 * c.padding.1 - 2)
            let r = uniform([c.input[0], c.cout, ho, wo], -1, 1, seed: UInt64(900 + i))
            func weightGradient(winograd: Bool, threads: Int) -> Tensor {
                ConvolutionSettings.winogradWeightGradient = winograd
                Compute.threads = threads
                let wg = w.requiringGrad()
                conv(c, x, wg, b).backward(r)
                return wg.grad!
            }
            let (_, dw) = Self.referenceGradients(c, x, w, r)
            let scale = dw.map(abs).max()!
            let im2col = weightGradient(winograd: false, threads: 2)
            let winograd = weightGradient(winograd: true, threads: 1)
            assertClose(winograd, dw, absolute: 1e-4 * scale, relative: 0, "\(c.name) against direct loops")
            assertClose(winograd, im2col, absolute: 1e-4 * scale, relative: 0, "\(c.name) against im2col")
            XCTAssertNotEqual(winograd.scalars, im2col.scalars, "\(c.name): the Winograd path was not taken")
            for threads in [2, 3] {
                XCTAssertEqual(weightGradient(winograd: true, threads: threads).scalars, winograd.scalars, "\(c.name), \(threads) threads")
            }
        }
    }

    func testWinogradGradientsMatchFiniteDifferences() {
        let saved = (ConvolutionSettings.winograd, ConvolutionSettings.winogradWeightGradientMinChannels)
        defer { (ConvolutionSettings.winograd, ConvolutionSettings.winogradWeightGradientMinChannels) = saved }
        ConvolutionSettings.winograd = true
        ConvolutionSettings.winogradWeightGradientMinChannels = 0
        // 169 tiles of 4x4 (above the threshold), 16 channels; a sample of the elements.
        let c = Case(name: "winograd", input: [1, 16, 50, 50], cout: 16, kernel: (3, 3), padding: (1, 1), bias: true)
        let (x, w, b) = tensors(c, seed: 500)
        checkGradients("conv2d winograd", [x, w, b!], eps: 1e-2, maxElements: 40) { t in
            conv(c, t[0], t[1], t[2])
        }
    }

    /// The Winograd weight transform is cached on the weight's storage from its second use at
    /// one version on (a first use keeps nothing), then reused; every in-place change (a direct
    /// write, Adam steps between which a weight is used twice) is seen by the next forward pass
    /// and input gradient; concurrent callers get the serial result bit for bit; a zero cache
    /// limit still computes correctly; a freed weight frees its transforms.
    func testWinogradWeightCacheFollowsWeightChanges() {
        let saved = (Compute.threads, ConvolutionSettings.winograd, TensorMemory.derivedCacheLimitBytes)
        defer { (Compute.threads, ConvolutionSettings.winograd, TensorMemory.derivedCacheLimitBytes) = saved }
        ConvolutionSettings.winograd = true
        Compute.threads = 2
        TensorMemory.derivedCacheLimitBytes = 512 << 20
        // 13 x 13 tiles (above the threshold); 24 out, 16 in: the input gradient's transform has
        // a different shape.
        let c = Case(name: "cache", input: [1, 16, 52, 50], cout: 24, kernel: (3, 3), padding: (1, 1))
        let x = uniform(c.input, seed: 600)
        let r = uniform([1, 24, 52, 50], seed: 601)
        let transformBytes = 36 * 24 * 16 * MemoryLayout<Float>.stride
        let before = TensorMemory.derivedCachedBytes
        func check(_ w: Tensor, _ label: String) {
            let ref = referenceConv2d(x, w, padding: c.padding)
            let scale = ref.values.map(abs).max()!
            let y = conv(c, x, w, nil)
            assertClose(y, ref.values, absolute: 1e-4 * scale, relative: 0, "\(label): forward")
            let xg = x.requiringGrad()
            conv(c, xg, w, nil).backward(r)
            let (dx, _) = Self.referenceGradients(c, x, w, r)
            assertClose(xg.grad!, dx, absolute: 1e-4 * dx.map(abs).max()!, relative: 0, "\(label): input gradient")
        }
        do {
            var w = uniform([24, 16, 3, 3], -0.5, 0.5, seed: 602)
            func infer() -> Tensor { Autograd.inference { conv(c, x, w, nil) } }
            // Passes that record a graph (training) keep nothing: check() runs two forward passes
            // and one input gradient.
            check(w, "training passes")
            XCTAssertEqual(TensorMemory.derivedCachedBytes - before, 0, "training passes keep nothing")
            // (their uses count: the next inference pass is a later use at this version)
            let y1 = infer()
            XCTAssertEqual(TensorMemory.derivedCachedBytes - before, transformBytes, "an inference pass after those keeps its transform")
            XCTAssertEqual(infer().scalars, y1.scalars)
            XCTAssertEqual(TensorMemory.derivedCachedBytes - before, transformBytes, "and uses it")
            check(w, "with the transform cached")
            XCTAssertEqual(TensorMemory.derivedCachedBytes - before, transformBytes, "a cached transform is used, none added in training")
            // An in-place change (unshared storage: no copy) releases it at once and is not reused.
            w.withUnsafeMutableBufferPointer { b in for i in b.indices { b[i] = 0.7 * b[i] + 0.01 * Float(i % 7) } }
            XCTAssertEqual(TensorMemory.derivedCachedBytes - before, 0, "an in-place write releases the cached transforms at once")
            check(w, "after an in-place write")
            _ = infer()
            XCTAssertEqual(TensorMemory.derivedCachedBytes - before, transformBytes)
            XCTAssertNotEqual(infer().scalars, y1.scalars)
            // Going into training mode releases what inference cached.
            let p = Parameter(w)
            final class Holder: Module {
                let p: Parameter
                init(_ p: Parameter) { self.p = p }
            }
            let module = Holder(p)
            module.eval()  // as for validation between epochs
            _ = Autograd.inference { conv(c, x, p.value, nil) }
            _ = Autograd.inference { conv(c, x, p.value, nil) }
            XCTAssertEqual(TensorMemory.derivedCachedBytes - before, transformBytes)
            module.train()
            XCTAssertEqual(TensorMemory.derivedCachedBytes - before, 0, "train() after eval() releases the parameters' cached transforms")
            // A parameter updated by Adam (in place), as in training.
            let opt = Adam([("w", p)], learningRate: 0.05)
            for step in 0..<3 {
                opt.zeroGrad()
                // Two uses per step, as a head shared by two pyramid levels.
                conv(c, x, p.tensor, nil).backward(r)
                conv(c, x, p.tensor, nil).backward(r)
                opt.step()
                check(p.value, "after Adam step \(step + 1)")
            }
        }
        XCTAssertEqual(TensorMemory.derivedCachedBytes, before, "freed weights free their cached transforms")

        // Concurrent first uses of one weight (as concurrent serve requests): the serial result.
        let w = uniform([24, 16, 3, 3], -0.5, 0.5, seed: 603)
        let serial = conv(c, x, Tensor(shape: w.shape, scalars: w.scalars), nil).scalars  // a copy: w stays uncached
        let results = ResultBox(count: 6)
        DispatchQueue.concurrentPerform(iterations: 6) { i in results.set(i, x.conv2d(w, padding: (1, 1)).scalars) }
        for i in 0..<6 { XCTAssertEqual(results.get(i), serial, "concurrent call \(i)") }

        // No cache: still correct, nothing kept.
        TensorMemory.derivedCacheLimitBytes = 0
        let held = TensorMemory.derivedCachedBytes
        let w2 = uniform([24, 16, 3, 3], -0.5, 0.5, seed: 604)
        for i in 0..<3 { check(w2, "cache off, use \(i + 1)") }
        XCTAssertEqual(TensorMemory.derivedCachedBytes, held)
    }

    /// With the cache off, the most recent transform stays on (``TensorMemory``'s recent value)
    /// so that consecutive uses of one weight at one version (a head layer over the pyramid's
    /// levels, forward and backward) compute it once; a use of another weight in between, an
    /// in-place write and a new version each compute it again; nothing counts against the cache;
    /// results match the reference convolution; a freed weight frees its transient transform.
    func testRecentWinogradTransformServesConsecutiveUses() {
        let saved = (Compute.threads, ConvolutionSettings.winograd, TensorMemory.derivedCacheLimitBytes, DerivedValues.recentCapacity)
        defer {
            (Compute.threads, ConvolutionSettings.winograd, TensorMemory.derivedCacheLimitBytes) = (saved.0, saved.1, saved.2)
            TensorMemory.releaseTransientDerivedValues()
            DerivedValues.recentCapacity = saved.3
        }
        ConvolutionSettings.winograd = true
        Compute.threads = 2
        TensorMemory.derivedCacheLimitBytes = 0
        DerivedValues.recentCapacity = 1  // `OPACITY_DERIVED_RECENT=1` (the default is 0)
        let c = Case(name: "recent", input: [1, 16, 52, 50], cout: 24, kernel: (3, 3), padding: (1, 1))
        let x = uniform(c.input, seed: 610)
        let r = uniform([1, 24, 52, 50], seed: 611)
        let cached = TensorMemory.derivedCachedBytes
        let live = TensorMemory.liveBytes
        do {
            var w = uniform([24, 16, 3, 3], -0.5, 0.5, seed: 612)
            let other = uniform([24, 16, 3, 3], -0.5, 0.5, seed: 613)
            let ref = referenceConv2d(x, w, padding: c.padding)
            let scale = ref.values.map(abs).max()!
            func computes(_ body: () -> Void) -> Int {
                let n = DerivedValues.computedCount
                body()
                return DerivedValues.computedCount - n
            }
            var y1 = Tensor(shape: [1], repeating: 0)
            XCTAssertEqual(computes { y1 = Autograd.inference { conv(c, x, w, nil) } }, 1)
            assertClose(y1, ref.values, absolute: 1e-4 * scale, relative: 0, "first use")
            XCTAssertEqual(computes { XCTAssertEqual(Autograd.inference { conv(c, x, w, nil) }.scalars, y1.scalars) }, 0, "a consecutive use reuses it")
            XCTAssertEqual(computes { _ = Autograd.inference { conv(c, x, other, nil) } }, 1)
            XCTAssertEqual(computes { XCTAssertEqual(Autograd.inference { conv(c, x, w, nil) }.scalars, y1.scalars) }, 1, "another weight in between evicts it")
            // Training: forward twice (two levels), then both input gradients: the forward
            // transform once, the flipped one once.
            let xg = x.requiringGrad()
            XCTAssertEqual(computes { _ = conv(c, xg, other, nil) }, 1)
            var loss = Tensor(shape: [1], repeating: 0)
            XCTAssertEqual(computes { loss = (conv(c, xg, w, nil) * r).sum() + (conv(c, xg, w, nil) * r).sum() }, 1)
            XCTAssertEqual(computes { loss.backward() }, 1, "the input gradient's transform once for both uses")
            let (dx, _) = Self.referenceGradients(c, x, w, r)
            assertClose(xg.grad!, dx.map { 2 * $0 }, absolute: 2e-4 * dx.map(abs).max()!, relative: 0, "input gradient")
            XCTAssertEqual(TensorMemory.derivedCachedBytes, cached, "transient values count against no cache budget")
            // An in-place write: the next use computes the transform of the new contents.
            w.withUnsafeMutableBufferPointer { b in for i in b.indices { b[i] = 0.5 * b[i] } }
            var y2 = Tensor(shape: [1], repeating: 0)
            XCTAssertEqual(computes { y2 = Autograd.inference { conv(c, x, w, nil) } }, 1)
            assertClose(y2, ref.values.map { 0.5 * $0 }, absolute: 1e-4 * scale, relative: 0, "after an in-place write")
            // Same-size weights in turn reuse the evicted blocks: no growth.
            let steady = TensorMemory.liveBytes
            for _ in 0..<4 {
                _ = Autograd.inference { conv(c, x, w, nil) }
                _ = Autograd.inference { conv(c, x, other, nil) }
            }
            XCTAssertLessThanOrEqual(TensorMemory.liveBytes, steady + 36 * 24 * 16 * 4, "alternating weights hold at most one more transform")
        }
        // A spare block outlives the weights (at most as many as the recent values), nothing else.
        XCTAssertLessThanOrEqual(TensorMemory.liveBytes - live, 36 * 24 * 16 * 4 + (64 << 10), "freed weights free their transient transforms")
    }

    /// The kernel log names the kernel each pass took: Winograd for a large dense 3x3 stride-1
    /// convolution (forward and input gradient; im2col for its weight gradient with these few
    /// channels), im2col and
    /// col2im for a strided one, with call counts, and records nothing outside `record`.
    func testKernelLogNamesTheKernelOfEachPass() {
        let saved = ConvolutionSettings.winograd
        defer { ConvolutionSettings.winograd = saved }
        ConvolutionSettings.winograd = true
        let x = uniform([1, 16, 52, 50], seed: 700).requiringGrad()
        let w = uniform([24, 16, 3, 3], -0.5, 0.5, seed: 701).requiringGrad()
        let w2 = uniform([8, 24, 3, 3], -0.5, 0.5, seed: 702).requiringGrad()
        let (_, log) = ConvolutionKernelLog.record {
            let y = x.conv2d(w, padding: (1, 1))
            let y2 = x.conv2d(w, padding: (1, 1))
            (y + y2).conv2d(w2, stride: (2, 2), padding: (1, 1)).sum().backward()
        }
        let found = Dictionary(uniqueKeysWithValues: log.map { ("\($0.entry.pass) \($0.entry.geometry)", "\($0.entry.kernel) x\($0.count)") })
        XCTAssertEqual(found["forward 3x3/1 p1 16->24 at 52x50"], "winograd x2")
        XCTAssertEqual(found["input gradient 3x3/1 p1 16->24 at 52x50"], "winograd x2")
        // 16 and 24 channels: too few for the Winograd weight gradient by default.
        XCTAssertEqual(found["weight gradient 3x3/1 p1 16->24 at 52x50"], "im2col x2")
        XCTAssertEqual(found["forward 3x3/2 p1 24->8 at 52x50"], "im2col x1")
        XCTAssertEqual(found["input gradient 3x3/2 p1 24->8 at 52x50"], "col2im x1")
        XCTAssertEqual(found.count, 6, "\(found)")
        _ = x.conv2d(w, padding: (1, 1))
        XCTAssertEqual(ConvolutionKernelLog.record { () }.1.count, 0)
    }

    /// Results written from concurrent threads, one slot each.
    final class ResultBox: @unchecked Sendable {
        private var values: [[Float]]
        private let lock = NSLock()
        init(count: Int) { values = Array(repeating: [], count: count) }
        func set(_ i: Int, _ v: [Float]) { lock.withLock { values[i] = v } }
        func get(_ i: Int) -> [Float] { lock.withLock { values[i] } }
    }

    func testLayerNamesAndShapes() {
        let conv = Conv2d(4, 8, kernel: 3, stride: 2, padding: 1, bias: true)
        XCTAssertEqual(conv.namedParameters().map(\.0), ["weight", "bias"])
        XCTAssertEqual(conv.weight.shape, [8, 4, 3, 3])
        XCTAssertEqual(conv(Tensor.zeros([1, 4, 9, 9])).shape, [1, 8, 5, 5])
        let depthwise = Conv2d(4, 8, kernel: 3, padding: 1, groups: 4, bias: false)
        XCTAssertEqual(depthwise.weight.shape, [8, 1, 3, 3])
        XCTAssertNil(depthwise.bias)
        let rect = Conv2d(3, 5, kernel2: (1, 7), padding: (0, 3))
        XCTAssertEqual(rect(Tensor.zeros([2, 3, 4, 9])).shape, [2, 5, 4, 9])
    }
}
