import OpacityTensor
import XCTest

/// The oneDNN convolution provider (`Kernels/DNNL/`) and the per-shape choice
/// (``ConvolutionKernelChoice``): forward and both gradients against the plain reference
/// convolution and direct-loop gradients, on odd sizes, padding, stride, dilation, groups and
/// depthwise, at several thread counts (each thread runs its own channel slice); gradients also
/// against finite differences; the report names the kernel that ran; deterministic mode keeps
/// the CPU kernels; the cached weight reorders give the uncached results bit for bit and follow
/// in-place changes of the weights; the choices file is written and read back.
final class DNNLConvolutionTests: XCTestCase {
    typealias Case = ConvolutionTests.Case

    /// The small cases of ``ConvolutionTests`` and larger maps with enough channels for
    /// several 16-channel slices per thread.
    static let cases: [Case] =
        ConvolutionTests.cases + [
            Case(name: "3x3 64->48, odd map, bias", input: [2, 64, 19, 23], cout: 48, kernel: (3, 3), padding: (1, 1), bias: true),
            Case(name: "3x3 stride 2, 40->36", input: [1, 40, 21, 18], cout: 36, kernel: (3, 3), stride: (2, 2), padding: (1, 1)),
            Case(name: "1x1 stride 2, 48->64", input: [2, 48, 9, 11], cout: 64, kernel: (1, 1), stride: (2, 2), bias: true),
            Case(name: "grouped 32 x 4 channels", input: [2, 128, 13, 12], cout: 128, kernel: (3, 3), padding: (1, 1), groups: 32),
            Case(name: "dilation 2, 32->33", input: [1, 32, 17, 15], cout: 33, kernel: (3, 3), padding: (2, 2), dilation: (2, 2)),
        ]

    override func tearDown() {
        ConvolutionKernelChoice.mode = .cpu
        ConvolutionKernelChoice.deterministic = false
        ConvolutionKernelChoice.choicesFile = nil
        ConvolutionKernelChoice.oneDNNWeightCache = .inference
        super.tearDown()
    }

    func tensors(_ c: Case, seed: UInt64) -> (Tensor, Tensor, Tensor?) {
        let x = uniform(c.input, seed: seed)
        let w = uniform([c.cout, c.input[1] / c.groups, c.kernel.0, c.kernel.1], -0.5, 0.5, seed: seed + 1)
        let b = c.bias ? uniform([c.cout], seed: seed + 2) : nil
        return (x, w, b)
    }

    func conv(_ c: Case, _ x: Tensor, _ w: Tensor, _ b: Tensor?) -> Tensor {
        x.conv2d(w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
    }

    /// Every case through oneDNN (forced), forward and both gradients, at 1, 2 and 3 threads.
    func testOneDNNMatchesReferenceForwardAndGradients() throws {
        ConvolutionKernelChoice.mode = .dnnl
        ConvolutionKernelChoice.deterministic = false
        XCTAssertEqual(ConvolutionKernelChoice.effectiveMode, .dnnl, "oneDNN's CPU engine is unavailable")
        let saved = Compute.threads
        defer { Compute.threads = saved }
        for threads in [1, 2, 3] {
            Compute.threads = threads
            for (i, c) in Self.cases.enumerated() {
                ConvolutionKernelChoice.resetReport()
                let (x, w, b) = tensors(c, seed: UInt64(500 + 10 * i))
                let ref = referenceConv2d(x, w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
                let xg = x.requiringGrad(), wg = w.requiringGrad()
                let y = conv(c, xg, wg, b)
                XCTAssertEqual(y.shape, ref.shape, c.name)
                assertClose(y, ref.values, absolute: 1e-4, relative: 1e-4, "\(c.name) forward, \(threads) threads")
                let r = uniform(y.shape, seed: UInt64(600 + i))
                y.backward(r)
                let (dx, dw) = ConvolutionTests.referenceGradients(c, x, w, r)
                assertClose(xg.grad!, dx, absolute: 1e-3, relative: 1e-4, "\(c.name) input gradient, \(threads) threads")
                assertClose(wg.grad!, dw, absolute: 1e-3, relative: 1e-4, "\(c.name) weight gradient, \(threads) threads")
                let report = ConvolutionKernelChoice.report()
                XCTAssertEqual(
                    Set(report.map(\.direction)), ["forward", "backward-data", "backward-weights"], "\(c.name): \(report)")
                for rec in report {
                    XCTAssertTrue(rec.kernel.hasPrefix("dnnl("), "\(c.name) \(rec.direction) ran \(rec.kernel), not oneDNN")
                }
            }
        }
    }

    /// oneDNN's gradients against finite differences of its own forward pass.
    func testOneDNNGradientsMatchFiniteDifferences() {
        ConvolutionKernelChoice.mode = .dnnl
        let picked = [0, 1, 3, 5, 8, 11]
        for i in picked {
            let c = ConvolutionTests.cases[i]
            let (x, w, b) = tensors(c, seed: UInt64(700 + 10 * i))
            var inputs = [x, w]
            if let b { inputs.append(b) }
            checkGradients("oneDNN conv2d \(c.name)", inputs, eps: 1e-2) { t in
                conv(c, t[0], t[1], t.count > 2 ? t[2] : nil)
            }
        }
    }

    /// `auto` measures each shape and direction once, runs the winner, and reports the
    /// timings of both candidates; the results match the reference whichever won.
    func testAutoChoosesAMeasuredKernelAndMatchesReference() {
        ConvolutionKernelChoice.mode = .auto
        ConvolutionKernelChoice.resetChoices()
        ConvolutionKernelChoice.resetReport()
        let c = Self.cases[ConvolutionTests.cases.count]
        let (x, w, b) = tensors(c, seed: 901)
        let ref = referenceConv2d(x, w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
        for _ in 0..<2 {
            let xg = x.requiringGrad(), wg = w.requiringGrad()
            let y = conv(c, xg, wg, b)
            assertClose(y, ref.values, absolute: 1e-4, relative: 1e-4, "auto forward")
            let r = uniform(y.shape, seed: 902)
            y.backward(r)
            let (dx, dw) = ConvolutionTests.referenceGradients(c, x, w, r)
            assertClose(xg.grad!, dx, absolute: 1e-3, relative: 1e-4, "auto input gradient")
            assertClose(wg.grad!, dw, absolute: 1e-3, relative: 1e-4, "auto weight gradient")
        }
        let report = ConvolutionKernelChoice.report()
        XCTAssertEqual(report.count, 3, "\(report)")
        for rec in report {
            XCTAssertEqual(Set(rec.timings.keys), ["cpu", "dnnl"], "\(rec.direction): \(rec.timings)")
            XCTAssertEqual(rec.calls, 2)
            // One kernel for both calls: the choice is kept.
            XCTAssertFalse(rec.kernel.contains(","), "\(rec.direction) changed kernel: \(rec.kernel)")
            // oneDNN only when it is faster by the margin.
            let winner = rec.timings["dnnl"]! < (1 - ConvolutionKernelChoice.margin) * rec.timings["cpu"]! ? "dnnl" : "cpu"
            XCTAssertTrue(rec.kernel.hasPrefix(winner + (winner == "cpu" ? ":" : "(")), "\(rec.kernel) is not the choice of \(rec.timings)")
        }
    }

    /// `OPACITY_DETERMINISTIC=1` (here the setting) keeps the CPU kernels in every mode, and
    /// the results then repeat bit for bit.
    func testDeterministicKeepsTheCPUKernels() {
        ConvolutionKernelChoice.deterministic = true
        let c = Self.cases[ConvolutionTests.cases.count + 3]
        let (x, w, b) = tensors(c, seed: 950)
        var outputs: [[Float]] = []
        for mode in [ConvolutionKernelChoice.Mode.auto, .dnnl, .cpu] {
            ConvolutionKernelChoice.mode = mode
            XCTAssertEqual(ConvolutionKernelChoice.effectiveMode, .cpu)
            ConvolutionKernelChoice.resetReport()
            let xg = x.requiringGrad()
            let y = conv(c, xg, w, b)
            y.backward(uniform(y.shape, seed: 951))
            outputs.append(y.scalars + xg.grad!.scalars)
            for rec in ConvolutionKernelChoice.report() {
                XCTAssertTrue(rec.kernel.hasPrefix("cpu:"), "\(mode): \(rec.direction) ran \(rec.kernel)")
            }
        }
        XCTAssertEqual(outputs[0], outputs[1])
        XCTAssertEqual(outputs[0], outputs[2])
    }

    /// The forward pass and input gradient through oneDNN at 2 threads (two slices), as
    /// values.
    func forwardAndInputGradient(_ c: Case, _ x: Tensor, _ w: Tensor, _ b: Tensor?, seed: UInt64) -> (y: [Float], dx: [Float]) {
        let xg = x.requiringGrad()
        let y = conv(c, xg, w, b)
        y.backward(uniform(y.shape, seed: seed))
        return (y.scalars, xg.grad!.scalars)
    }

    /// oneDNN's reordered weights are cached on the weight's storage from the second use at one
    /// weight version on: the results equal the uncached path's bit for bit, and a weight
    /// changed in place (a new version) is reordered again, not read from the stale copy.
    func testCachedWeightReordersMatchUncachedAndFollowInPlaceChanges() {
        ConvolutionKernelChoice.mode = .dnnl
        let saved = (Compute.threads, TensorMemory.derivedCacheLimitBytes)
        defer { (Compute.threads, TensorMemory.derivedCacheLimitBytes) = saved }
        Compute.threads = 2
        TensorMemory.derivedCacheLimitBytes = 512 << 20  // the default keeps nothing
        for index in [0, 3] {
            let c = Self.cases[ConvolutionTests.cases.count + index]
            let (x, _, b) = tensors(c, seed: UInt64(970 + index))
            // Held by this variable only, so that the change below is in place.
            var w = uniform([c.cout, c.input[1] / c.groups, c.kernel.0, c.kernel.1], -0.5, 0.5, seed: UInt64(975 + index))
            let address = w.withUnsafeBufferPointer { $0.baseAddress }
            ConvolutionKernelChoice.oneDNNWeightCache = .off
            let before = TensorMemory.derivedCachedBytes
            let plain = forwardAndInputGradient(c, x, w, b, seed: 971)
            XCTAssertEqual(TensorMemory.derivedCachedBytes, before, "\(c.name): the uncached path keeps nothing")
            ConvolutionKernelChoice.oneDNNWeightCache = .always
            for use in 0..<3 {
                let r = forwardAndInputGradient(c, x, w, b, seed: 971)
                XCTAssertEqual(r.y, plain.y, "\(c.name) forward, use \(use) with the cache")
                XCTAssertEqual(r.dx, plain.dx, "\(c.name) input gradient, use \(use) with the cache")
            }
            XCTAssertGreaterThan(TensorMemory.derivedCachedBytes, before, "\(c.name): the reordered weights are kept")
            // An in-place change (as an optimizer step makes): same storage, new version.
            w.withUnsafeMutableBufferPointer { p in
                for i in p.indices { p[i] = 0.75 * p[i] - 0.01 * Float(i % 7) }
            }
            XCTAssertEqual(w.withUnsafeBufferPointer { $0.baseAddress }, address, "the weights changed in place")
            let changed = forwardAndInputGradient(c, x, w, b, seed: 971)
            let ref = referenceConv2d(x, w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
            assertClose(Tensor(shape: ref.shape, scalars: changed.y), ref.values, absolute: 1e-4, relative: 1e-4, "\(c.name) after the change")
            for _ in 0..<2 {
                let again = forwardAndInputGradient(c, x, w, b, seed: 971)
                XCTAssertEqual(again.y, changed.y, "\(c.name): cached after the change")
                XCTAssertEqual(again.dx, changed.dx, "\(c.name): cached input gradient after the change")
            }
            ConvolutionKernelChoice.oneDNNWeightCache = .off
            let uncached = forwardAndInputGradient(c, x, w, b, seed: 971)
            XCTAssertEqual(uncached.y, changed.y, "\(c.name): uncached after the change")
            XCTAssertEqual(uncached.dx, changed.dx, "\(c.name): uncached input gradient after the change")
            // The default keeps the reorders of forward passes without a graph only.
            ConvolutionKernelChoice.oneDNNWeightCache = .inference
            w.withUnsafeMutableBufferPointer { p in p[0] += 1 }
            let kept = TensorMemory.derivedCachedBytes
            for _ in 0..<3 { _ = forwardAndInputGradient(c, x, w, b, seed: 971) }
            XCTAssertLessThanOrEqual(TensorMemory.derivedCachedBytes, kept, "\(c.name): training passes keep no reorder")
            let graphless = Autograd.inference { conv(c, x, w, b) }
            let afterFirst = TensorMemory.derivedCachedBytes
            for _ in 0..<2 { XCTAssertEqual(Autograd.inference { conv(c, x, w, b) }.scalars, graphless.scalars) }
            XCTAssertGreaterThan(TensorMemory.derivedCachedBytes, afterFirst, "\(c.name): inference keeps the reorder from its second use")
            let ref2 = referenceConv2d(x, w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
            assertClose(graphless, ref2.values, absolute: 1e-4, relative: 1e-4, "\(c.name) inference after the second change")
        }
    }

    /// `auto` with a choices file: each measurement appends its line; a later process (here:
    /// the choices forgotten and the file read again) runs the file's choices without measuring,
    /// whichever they are; a line that does not parse is skipped.
    func testChoicesFileIsWrittenAndReadBack() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-choices-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("choices.txt")
        ConvolutionKernelChoice.mode = .auto
        ConvolutionKernelChoice.choicesFile = file.path
        ConvolutionKernelChoice.resetReport()
        let c = Self.cases[ConvolutionTests.cases.count + 1]
        let (x, w, b) = tensors(c, seed: 990)
        _ = forwardAndInputGradient(c, x, w.requiringGrad(), b, seed: 991)
        let written = try String(contentsOf: file, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(written.count, 3, "one line per direction: \(written)")
        let measured = ConvolutionKernelChoice.report()
        for forced in ["dnnl", "cpu"] {
            // The same keys with the choice replaced, and a line that does not parse.
            let lines = written.map { l -> String in
                var f = l.split(separator: " ").map(String.init)
                f[10] = forced
                return f.joined(separator: " ")
            }
            try (["v1 forward 1,2,3 nonsense"] + lines).joined(separator: "\n").write(to: file, atomically: true, encoding: .utf8)
            ConvolutionKernelChoice.resetChoices()
            ConvolutionKernelChoice.resetReport()
            let y = forwardAndInputGradient(c, x, w.requiringGrad(), b, seed: 991)
            let ref = referenceConv2d(x, w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
            assertClose(Tensor(shape: ref.shape, scalars: y.y), ref.values, absolute: 1e-4, relative: 1e-4, "\(forced) from the file")
            let report = ConvolutionKernelChoice.report()
            XCTAssertEqual(report.count, 3, "\(report)")
            for rec in report {
                XCTAssertTrue(rec.kernel.hasPrefix(forced + (forced == "cpu" ? ":" : "(")), "\(rec.direction) ran \(rec.kernel), file says \(forced)")
                let m = measured.first { $0.direction == rec.direction }!
                // The file keeps six significant digits.
                XCTAssertEqual(Set(rec.timings.keys), Set(m.timings.keys), "\(rec.direction): the file's timings")
                for (k, v) in m.timings { XCTAssertEqual(rec.timings[k] ?? 0, v, accuracy: 1e-5 * v, "\(rec.direction) \(k) time") }
            }
            let now = try String(contentsOf: file, encoding: .utf8).split(separator: "\n")
            XCTAssertEqual(now.count, 4, "nothing measured again, nothing appended")
        }
    }
}
