import Foundation
import OpacityTensor
import XCTest

/// `scaledSumReLU(scale:residual:)`, the one-pass tail of a squeeze-and-excitation block (and
/// `sumReLU(_:)`, a residual block's):
/// gradients against finite differences, the same bits as the three operations it replaces
/// (values and every gradient, with and without packing and recipes), what it keeps for
/// backward, and a trace that still shows the three operations.
final class ScaledSumReLUTests: XCTestCase {
    /// Pre-activations away from zero (the ReLU's kink): the residual carries the sign,
    /// `|y * s| <= 0.3 < |r|`.
    func testGradientsMatchFiniteDifferences() {
        let y = uniform([2, 3, 5, 7], -0.3, 0.3, seed: 1), s = uniform([2, 3, 1, 1], 0.1, 0.9, seed: 2)
        let r = awayFromZero([2, 3, 5, 7], minMagnitude: 0.5, seed: 3)
        checkGradients("scaledSumReLU", [y, s, r]) { t in t[0].scaledSumReLU(scale: t[1], residual: t[2]) }
    }

    /// The block's tail as a network writes it: a 1x1 convolution and a batch norm (whose output
    /// the fused op keeps as a recipe), the excitation from that output, a tracked residual.
    /// Planes of 45 x 47 values (not a multiple of 8) over more than one packing chunk, so plane
    /// edges fall inside chunks and vector loops.
    func testSameBitsAsThreeOperations() {
        let input = uniform([2, 4, 45, 47], seed: 11), conv3 = uniform([8, 4, 1, 1], -0.5, 0.5, seed: 12)
        let g = uniform([8], 0.5, 1.5, seed: 13), b = uniform([8], -0.2, 0.2, seed: 14)
        let stats = (mean: uniform([8], -0.1, 0.1, seed: 15), variance: uniform([8], 0.5, 1.5, seed: 16))
        let fc = uniform([8, 8, 1, 1], -0.5, 0.5, seed: 17), shortcut = uniform([2, 8, 45, 47], seed: 18)
        let out = uniform([2, 8, 45, 47], seed: 19)
        XCTAssertGreaterThan(out.count, SparseActivation.chunk, "more than one chunk")
        func run(fused: Bool) -> [[UInt32]] {
            let ps = [input, conv3, g, b, fc, shortcut].map { $0.requiringGrad() }
            let y = Autograd.recordingGradients { () -> Tensor in
                let n = ps[0].conv2d(ps[1]).batchNorm2d(weight: ps[2], bias: ps[3], mean: stats.mean, variance: stats.variance)
                let s = n.globalAvgPool2d().conv2d(ps[4]).sigmoid()
                return fused ? n.scaledSumReLU(scale: s, residual: ps[5]) : ((n * s) + ps[5]).relu()
            }
            (y * out).sum().backward()
            return [y.scalars.map(\.bitPattern)] + ps.map { $0.grad!.scalars.map(\.bitPattern) }
        }
        let zeros = run(fused: false)[0].filter { $0 == 0 }.count
        XCTAssertGreaterThan(zeros, out.count / 4, "the ReLU zeroes a good part of the map")
        for level in [0, 1, 2] {
            for sparse in [false, true] {
                let (separate, _) = atLevel(level, sparse: sparse) { run(fused: false) }
                let (fused, tape) = atLevel(level, sparse: sparse) { run(fused: true) }
                XCTAssertEqual(fused, separate, "level \(level), packing \(sparse): the output and every gradient, bit for bit")
                // The norm's output is kept whole at level 0 and as its recipe from level 1 on
                // (the output, which the node keeps too, lives on in `y` here).
                let map = out.count * 4, kept = tape["scaledSumReLU"]?.bytes ?? 0
                if level == 0 {
                    XCTAssertGreaterThanOrEqual(kept, map, "packing \(sparse): \(tape)")
                } else {
                    XCTAssertLessThan(kept, map, "level \(level), packing \(sparse): \(tape)")
                }
            }
        }
    }

    /// Gradients for any subset of tracked operands (an untracked scale, an untracked residual).
    func testUntrackedOperands() {
        let y = uniform([1, 3, 4, 5], seed: 21), s = uniform([1, 3, 1, 1], 0.1, 0.9, seed: 22)
        let r = uniform([1, 3, 4, 5], seed: 23)
        for mask in [[true, false, false], [false, true, false], [false, false, true], [true, true, false]] {
            func run(fused: Bool) -> [[UInt32]] {
                let ts = zip([y, s, r], mask).map { $1 ? $0.requiringGrad() : $0 }
                let o = Autograd.recordingGradients {
                    fused ? ts[0].scaledSumReLU(scale: ts[1], residual: ts[2]) : ((ts[0] * ts[1]) + ts[2]).relu()
                }
                o.sum().backward()
                return [o.scalars.map(\.bitPattern)] + zip(ts, mask).compactMap { $1 ? $0.grad!.scalars.map(\.bitPattern) : nil }
            }
            XCTAssertEqual(run(fused: true), run(fused: false), "tracked \(mask)")
        }
    }

    /// Inference writes over a temporary receiver and gives the three operations' bits;
    /// other shapes (a scale that is not per plane) take the three-operation path.
    func testInferenceAndOtherShapes() {
        let y = uniform([2, 3, 6, 5], seed: 31), s = uniform([2, 3, 1, 1], seed: 32), r = uniform([2, 3, 6, 5], seed: 33)
        let expected = ((y * s) + r).relu().scalars
        let fused = Autograd.inference { (y + 0).scaledSumReLU(scale: s, residual: r) }
        XCTAssertEqual(fused.scalars.map(\.bitPattern), expected.map(\.bitPattern))
        let perChannel = uniform([1, 3, 1, 1], seed: 34)
        XCTAssertEqual(y.scaledSumReLU(scale: perChannel, residual: r).scalars.map(\.bitPattern),
                       ((y * perChannel) + r).relu().scalars.map(\.bitPattern), "broadcast over the batch too")
    }

    /// An exporter's trace sees `mul`, `add` and `relu`, the operations ONNX has.
    func testTraceShowsTheThreeOperations() {
        let y = uniform([1, 2, 3, 3], seed: 41), s = uniform([1, 2, 1, 1], seed: 42), r = uniform([1, 2, 3, 3], seed: 43)
        let trace = OpTrace()
        let traced = trace.run { y.scaledSumReLU(scale: s, residual: r) }
        XCTAssertEqual(trace.ops.map(\.op), ["mul", "add", "relu"])
        XCTAssertEqual(traced.scalars, y.scaledSumReLU(scale: s, residual: r).scalars)
    }

    /// `sumReLU`, the plain residual tail: finite differences, and the bits of `(y + r).relu()`
    /// (values and both gradients, packed and whole, a map over more than one chunk whose
    /// length is not a multiple of 8), and a trace showing `add` and `relu`.
    func testSumReLU() {
        let fy = uniform([2, 3, 5, 7], -0.3, 0.3, seed: 51), fr = awayFromZero([2, 3, 5, 7], minMagnitude: 0.5, seed: 52)
        checkGradients("sumReLU", [fy, fr]) { t in t[0].sumReLU(t[1]) }
        let y = uniform([3, 5, 47, 47], seed: 53), r = uniform([3, 5, 47, 47], seed: 54), seed = uniform([3, 5, 47, 47], seed: 55)
        XCTAssertGreaterThan(y.count, SparseActivation.chunk)
        func run(fused: Bool) -> [[UInt32]] {
            let ts = [y, r].map { $0.requiringGrad() }
            let o = Autograd.recordingGradients { () -> Tensor in
                let a = ts[0] * 2  // a temporary, as a norm's output is (written over)
                return fused ? a.sumReLU(ts[1]) : (a + ts[1]).relu()
            }
            o.backward(seed)
            return [o.scalars.map(\.bitPattern)] + ts.map { $0.grad!.scalars.map(\.bitPattern) }
        }
        for sparse in [false, true] {
            let (separate, _) = atLevel(2, sparse: sparse) { run(fused: false) }
            let (fused, _) = atLevel(2, sparse: sparse) { run(fused: true) }
            XCTAssertEqual(fused, separate, "packing \(sparse)")
        }
        let trace = OpTrace()
        _ = trace.run { y.sumReLU(r) }
        XCTAssertEqual(trace.ops.map(\.op), ["add", "relu"])
    }
}
