import Foundation
import OpacityTensor
import XCTest

/// Broadcast arithmetic, its gradient reduction, and the channel copies (slice, concatenation,
/// padding) split their work over the compute threads (their parts start in the middle of a
/// multi-index, or in the middle of one long row). On every thread count they give the
/// values of a plain index loop, and the same bits as on one thread.
final class ParallelElementwiseTests: XCTestCase {
    /// Runs `body` on 1, 3 and 7 threads (7 > cores splits rows into uneven parts).
    private func onThreadCounts(_ body: () -> [Float]) -> [[Float]] {
        let saved = Compute.threads
        defer { Compute.threads = saved }
        return [1, 3, 7].map { n in
            Compute.threads = n
            return body()
        }
    }

    /// The element of a row-major `shape` broadcast to `out` at the flat output index `i`.
    private func broadcastIndex(_ i: Int, out: [Int], shape: [Int]) -> Int {
        let s = Array(repeating: 1, count: out.count - shape.count) + shape
        var rest = i, index = 0, step = 1
        for k in stride(from: out.count - 1, through: 0, by: -1) {
            let coordinate = rest % out[k]
            rest /= out[k]
            if s[k] != 1 { index += coordinate * step }
            step *= s[k]
        }
        return index
    }

    func testBroadcastArithmeticMatchesIndexLoopsOnEveryThreadCount() {
        let cases: [([Int], [Int])] = [
            ([2, 48, 37, 41], [2, 48, 1, 1]),  // squeeze-and-excitation's product (145 Ki elements)
            ([3, 1, 61, 1], [1, 40, 1, 29]),  // both sides broadcast: no dimension collapses
            ([5, 7, 2003], [7, 1]),  // fewer dimensions on the right
        ]
        for (sa, sb) in cases {
            let a = uniform(sa, seed: 21), b = uniform(sb, 0.5, 2, seed: 22)
            let out = zip(Array(repeating: 1, count: max(0, sb.count - sa.count)) + sa, Array(repeating: 1, count: max(0, sa.count - sb.count)) + sb).map { max($0, $1) }
            let n = out.reduce(1, *)
            XCTAssertGreaterThan(n, 1 << 16, "large enough to run in parallel")
            let av = a.scalars, bv = b.scalars
            let expected: [(String, (Float, Float) -> Float, (Tensor, Tensor) -> Tensor)] = [
                ("+", { $0 + $1 }, { $0 + $1 }), ("-", { $0 - $1 }, { $0 - $1 }),
                ("*", { $0 * $1 }, { $0 * $1 }), ("/", { $0 / $1 }, { $0 / $1 }),
            ]
            for (name, f, op) in expected {
                let reference = (0..<n).map { f(av[broadcastIndex($0, out: out, shape: sa)], bv[broadcastIndex($0, out: out, shape: sb)]) }
                let results = onThreadCounts { op(a, b).scalars }
                for (t, r) in zip([1, 3, 7], results) {
                    XCTAssertEqual(r, reference, "\(sa) \(name) \(sb) on \(t) threads")
                }
            }
        }
    }

    /// `sigmoid`'s forward and backward split over the threads: every thread count gives the
    /// formula's value per element, `s(x)` and `g * s * (1 - s)`, bit for bit.
    func testSigmoidAndItsGradientOnEveryThreadCount() {
        let x = uniform([3, 5, 71, 67], -6, 6, seed: 25), g = uniform([3, 5, 71, 67], seed: 26)
        XCTAssertGreaterThan(x.count, 1 << 16, "large enough to run in parallel")
        let xv = x.scalars, gv = g.scalars
        let s = xv.map { $0 >= 0 ? 1 / (1 + Foundation.exp(-$0)) : Foundation.exp($0) / (1 + Foundation.exp($0)) }
        let expected = s + zip(gv, s).map { $0 * $1 * (1 - $1) }
        let results = onThreadCounts {
            let p = Parameter(x)
            let y = Autograd.recordingGradients { p.tensor.sigmoid() }
            let values = y.scalars
            y.backward(g)
            return values + p.grad!.scalars
        }
        for (t, r) in zip([1, 3, 7], results) { XCTAssertEqual(r, expected, "sigmoid and its gradient on \(t) threads") }
    }

    /// The gradient of a broadcast product sums the output gradient down to each operand's
    /// shape: over H and W for `[N, C, 1, 1]` (split over the threads), and also over N for
    /// `[1, C, 1, 1]` (several runs into one element: one thread, in order).
    func testBroadcastGradientReductionOnEveryThreadCount() {
        let x = uniform([2, 48, 37, 41], seed: 23)
        for shape in [[2, 48, 1, 1], [1, 48, 1, 1], [48, 1, 1]] {
            let s = uniform(shape, seed: 24)
            let results = onThreadCounts {
                let p = Parameter(s)
                Autograd.recordingGradients { (x * p.tensor).sum() }.backward()
                return p.grad!.scalars
            }
            let xv = x.scalars
            var reference = [Double](repeating: 0, count: shape.reduce(1, *))
            for i in 0..<xv.count { reference[broadcastIndex(i, out: x.shape, shape: shape)] += Double(xv[i]) }
            for (t, r) in zip([1, 3, 7], results) {
                XCTAssertEqual(r, results[0], "\(shape): \(t) threads give the bits of one")
                for (g, e) in zip(r, reference) { XCTAssertEqual(Double(g), e, accuracy: 1e-3 * max(1, abs(e)), "\(shape) on \(t) threads") }
            }
        }
    }

    /// DPN's dense paths slice and concatenate channels of one image: a single row of
    /// megabytes, split over the threads; the gradient of a slice pads it back.
    func testChannelSliceConcatAndPadOnEveryThreadCount() {
        for n in [1, 3] {
            let x = uniform([n, 96, 37, 41], seed: UInt64(25 + n)), y = uniform([n, 17, 37, 41], seed: 27)
            let xv = x.scalars, yv = y.scalars, plane = 37 * 41
            let results = onThreadCounts {
                let p = Parameter(x)
                let out = Autograd.recordingGradients { () -> Tensor in
                    let parts = [p.tensor.slice(axis: 1, 10..<70), y, p.tensor.slice(axis: 1, 0..<5)]
                    return Tensor.concat(parts, axis: 1)
                }
                (out * out).sum().backward()
                return out.scalars + p.grad!.scalars
            }
            var expected: [Float] = []
            for i in 0..<n {
                for c in 10..<70 { expected += xv[((i * 96 + c) * plane)..<((i * 96 + c + 1) * plane)] }
                for c in 0..<17 { expected += yv[((i * 17 + c) * plane)..<((i * 17 + c + 1) * plane)] }
                for c in 0..<5 { expected += xv[((i * 96 + c) * plane)..<((i * 96 + c + 1) * plane)] }
            }
            // d/dx sum(out^2): 2x where a channel was taken once (10..<70 and 0..<5 do not overlap), else 0
            var gradient = [Float](repeating: 0, count: xv.count)
            for i in 0..<n {
                for c in Array(0..<5) + Array(10..<70) {
                    for k in 0..<plane { gradient[(i * 96 + c) * plane + k] = 2 * xv[(i * 96 + c) * plane + k] }
                }
            }
            for (t, r) in zip([1, 3, 7], results) {
                XCTAssertEqual(Array(r.prefix(expected.count)), expected, "batch \(n): concatenation on \(t) threads")
                XCTAssertEqual(Array(r.dropFirst(expected.count)), gradient, "batch \(n): slice gradient on \(t) threads")
            }
        }
    }
}
