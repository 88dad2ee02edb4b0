import OpacityTensor
import XCTest

/// Winograd F(2x2, 3x3) (dense 3x3 stride-1 convolutions with too few 4x4 tiles for
/// F(4x4, 3x3)): forward pass, input gradient and weight gradient against direct loops and
/// against the im2col path, on odd sizes, padding 0, 1 and 2, batch 1 to 3, channel counts that
/// are not multiples of eight, at 1, 2 and 3 threads (blocks each thread owns, and blocks the
/// threads share); finite differences; bit-for-bit repeats; the cached weight transform.
final class Winograd2Tests: XCTestCase {
    typealias Case = ConvolutionTests.Case

    // Every case has fewer than 160 output tiles of 4x4 (F(4x4, 3x3) does not take it) and at
    // least 32 of 2x2.
    static let cases: [Case] = [
        Case(name: "1 image, pad 1, bias, 42 tiles", input: [1, 16, 13, 11], cout: 20, kernel: (3, 3), padding: (1, 1), bias: true),
        Case(name: "3 images, 8 tiles per row, odd width", input: [3, 24, 9, 15], cout: 17, kernel: (3, 3), padding: (1, 1)),
        Case(name: "2 images, 17 tiles per row, 544 tiles", input: [2, 18, 31, 33], cout: 16, kernel: (3, 3), padding: (1, 1)),
        Case(name: "pad 0", input: [2, 16, 12, 20], cout: 16, kernel: (3, 3), bias: true),
        Case(name: "pad (2, 1)", input: [1, 16, 12, 12], cout: 24, kernel: (3, 3), padding: (2, 1)),
    ]

    func conv(_ c: Case, _ x: Tensor, _ w: Tensor, _ b: Tensor?) -> Tensor {
        x.conv2d(w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
    }

    func tensors(_ c: Case, seed: UInt64) -> (Tensor, Tensor, Tensor?) {
        let x = uniform(c.input, seed: seed)
        let w = uniform([c.cout, c.input[1], 3, 3], -0.5, 0.5, seed: seed + 1)
        let b = c.bias ? uniform([c.cout], seed: seed + 2) : nil
        return (x, w, b)
    }

    /// Saves the settings the tests change and lets every channel count and map of 32 tiles or
    /// more take F(2x2, 3x3).
    func withWinograd2<R>(_ body: () throws -> R) rethrows -> R {
        let saved = (
            Compute.threads, ConvolutionSettings.winograd, ConvolutionSettings.winograd2, ConvolutionSettings.winogradWeightGradient,
            ConvolutionSettings.winograd2MinChannels, ConvolutionSettings.winograd2WeightGradientMinChannels,
            ConvolutionSettings.winograd2MinTiles
        )
        defer {
            (
                Compute.threads, ConvolutionSettings.winograd, ConvolutionSettings.winograd2,
                ConvolutionSettings.winogradWeightGradient, ConvolutionSettings.winograd2MinChannels,
                ConvolutionSettings.winograd2WeightGradientMinChannels, ConvolutionSettings.winograd2MinTiles
            ) = saved
        }
        ConvolutionSettings.winograd = true
        ConvolutionSettings.winogradWeightGradient = true
        ConvolutionSettings.winograd2MinChannels = 0
        ConvolutionSettings.winograd2WeightGradientMinChannels = 0
        // Down from 256, so that small maps test every edge case quickly.
        ConvolutionSettings.winograd2MinTiles = 32
        return try body()
    }

    func testMatchesDirectLoopsAndIm2col() {
        let savedTiles = ConvolutionSettings.winograd2WeightGradientTiles
        defer { ConvolutionSettings.winograd2WeightGradientTiles = savedTiles }
        // Weight-gradient blocks of one to three tile rows: several blocks per map, some
        // spanning two images (the default makes one block of these small maps).
        ConvolutionSettings.winograd2WeightGradientTiles = 24
        withWinograd2 {
            for threads in [1, 2, 3] {
                Compute.threads = threads
                for (i, c) in Self.cases.enumerated() {
                    let (x, w, b) = tensors(c, seed: UInt64(1300 + 10 * i))
                    let ref = referenceConv2d(x, w, bias: b, padding: c.padding)
                    let r = uniform(ref.shape, seed: UInt64(1400 + i))
                    var outputs: [Bool: (Tensor, Tensor, Tensor)] = [:]
                    for on in [true, false] {
                        ConvolutionSettings.winograd2 = on
                        let xg = x.requiringGrad(), wg = w.requiringGrad()
                        let y = conv(c, xg, wg, b)
                        y.backward(r)
                        outputs[on] = (y, xg.grad!, wg.grad!)
                    }
                    let (y, gx, gw) = outputs[true]!, (y2, gx2, gw2) = outputs[false]!
                    let label = "\(c.name), \(threads) threads"
                    // Error relative to the largest magnitude (the usual measure for Winograd).
                    let scale = ref.values.map(abs).max()!
                    assertClose(y, ref.values, absolute: 1e-4 * scale, relative: 0, "\(label): forward")
                    assertClose(y, y2, absolute: 1e-4 * scale, relative: 0, "\(label): forward against im2col")
                    let (dx, dw) = ConvolutionTests.referenceGradients(c, x, w, r)
                    assertClose(gx, dx, absolute: 1e-4 * dx.map(abs).max()!, relative: 0, "\(label): input gradient")
                    assertClose(gw, dw, absolute: 1e-4 * dw.map(abs).max()!, relative: 0, "\(label): weight gradient")
                    // The paths compute differently: identical bits would mean F(2x2, 3x3) never ran.
                    XCTAssertNotEqual(y.scalars, y2.scalars, "\(label): F(2x2, 3x3) not taken for the forward pass")
                    XCTAssertNotEqual(gx.scalars, gx2.scalars, "\(label): F(2x2, 3x3) not taken for the input gradient")
                    XCTAssertNotEqual(gw.scalars, gw2.scalars, "\(label): F(2x2, 3x3) not taken for the weight gradient")
                }
            }
        }
    }

    /// Bit for bit the same on a second run at a fixed thread count (forward and both
    /// gradients), and the weight gradient at every thread count.
    func testRepeatsBitForBit() {
        withWinograd2 {
            ConvolutionSettings.winograd2 = true
            for (i, c) in Self.cases.enumerated() {
                let (x, w, b) = tensors(c, seed: UInt64(1500 + 10 * i))
                let r = uniform(referenceConv2d(x, w, padding: c.padding).shape, seed: UInt64(1600 + i))
                func run(_ threads: Int) -> ([Float], [Float], [Float]) {
                    Compute.threads = threads
                    let xg = x.requiringGrad(), wg = w.requiringGrad()
                    let y = conv(c, xg, wg, b)
                    y.backward(r)
                    return (y.scalars, xg.grad!.scalars, wg.grad!.scalars)
                }
                let first = run(1)
                for threads in [1, 2, 3] {
                    let a = run(threads), again = run(threads)
                    XCTAssertEqual(a.0, again.0, "\(c.name): forward differs between runs at \(threads) threads")
                    XCTAssertEqual(a.1, again.1, "\(c.name): input gradient differs between runs at \(threads) threads")
                    XCTAssertEqual(a.2, again.2, "\(c.name): weight gradient differs between runs at \(threads) threads")
                    XCTAssertEqual(a.2, first.2, "\(c.name): weight gradient differs at \(threads) threads from 1 thread")
                }
            }
        }
    }

    func testGradientsMatchFiniteDifferences() {
        withWinograd2 {
            ConvolutionSettings.winograd2 = true
            Compute.threads = 2
            // 36 tiles of 2x2 (9 of 4x4), 16 channels; a sample of the elements.
            let c = Case(name: "winograd 2x2", input: [1, 16, 12, 11], cout: 16, kernel: (3, 3), padding: (1, 1), bias: true)
            let (x, w, b) = tensors(c, seed: 1700)
            checkGradients("conv2d winograd 2x2", [x, w, b!], eps: 1e-2, maxElements: 40) { t in
                conv(c, t[0], t[1], t[2])
            }
        }
    }

    /// Off by default below 64 channels in and out, on at 64; the transform is kept on the
    /// weight from its second use at one version (16 x Cout x Cin floats for the forward pass,
    /// as many for the input gradient) and a weight changed in place is seen.
    func testChannelThresholdAndWeightCache() {
        let savedLimit = TensorMemory.derivedCacheLimitBytes
        defer { TensorMemory.derivedCacheLimitBytes = savedLimit }
        TensorMemory.derivedCacheLimitBytes = 512 << 20
        withWinograd2 {
            ConvolutionSettings.winograd2 = true
            ConvolutionSettings.winograd2MinChannels = 32
            Compute.threads = 2
            let small = Case(name: "48 channels", input: [1, 48, 12, 12], cout: 48, kernel: (3, 3), padding: (1, 1))
            let (xs, ws, _) = tensors(small, seed: 1800)
            let onSmall = conv(small, xs, ws, nil).scalars
            ConvolutionSettings.winograd2 = false
            XCTAssertEqual(onSmall, conv(small, xs, ws, nil).scalars, "48 channels should keep im2col")
            ConvolutionSettings.winograd2 = true

            let c = Case(name: "64 channels", input: [1, 64, 12, 12], cout: 64, kernel: (3, 3), padding: (1, 1))
            let (x, w0, _) = tensors(c, seed: 1810)
            var w = w0
            let before = TensorMemory.derivedCachedBytes
            let ref = referenceConv2d(x, w, padding: c.padding)
            let scale = ref.values.map(abs).max()!
            // passes that record a graph (training) keep nothing
            _ = conv(c, x, w, nil)
            _ = conv(c, x, w, nil)
            XCTAssertEqual(TensorMemory.derivedCachedBytes - before, 0, "training passes keep nothing")
            // (their uses count: the next inference pass is a second use at this version)
            let y1 = Autograd.inference { conv(c, x, w, nil) }
            XCTAssertEqual(TensorMemory.derivedCachedBytes - before, 16 * 64 * 64 * 4, "an inference pass after two uses keeps the transform")
            let y2 = Autograd.inference { conv(c, x, w, nil) }
            XCTAssertEqual(TensorMemory.derivedCachedBytes - before, 16 * 64 * 64 * 4)
            XCTAssertEqual(y1.scalars, y2.scalars)
            assertClose(y2, ref.values, absolute: 1e-4 * scale, relative: 0, "64 channels, cached transform")
            ConvolutionSettings.winograd2 = false
            XCTAssertNotEqual(y2.scalars, conv(c, x, w, nil).scalars, "64 channels should take F(2x2, 3x3)")
            ConvolutionSettings.winograd2 = true
            // An in-place change of the weight: the next pass must not reuse the old transform.
            w.withUnsafeMutableBufferPointer { b in for i in b.indices { b[i] = 0.7 * b[i] + 0.01 * Float(i % 7) } }
            let ref2 = referenceConv2d(x, w, padding: c.padding)
            assertClose(conv(c, x, w, nil), ref2.values, absolute: 1e-4 * ref2.values.map(abs).max()!, relative: 0, "after a change")
        }
    }
}
