import Foundation
import OpacityTensor
import XCTest

/// Unary and binary elementwise operations: values and gradients, with broadcasting.
final class ElementwiseTests: XCTestCase {
    func testUnaryGradients() {
        let x = awayFromZero([2, 3, 4, 5], seed: 1)
        checkGradients("relu", [x]) { $0[0].relu() }
        checkGradients("sigmoid", [uniform([3, 7], -4, 4, seed: 2)]) { $0[0].sigmoid() }
        checkGradients("exp", [uniform([3, 7], -2, 2, seed: 3)], eps: 1e-3) { $0[0].exp() }
        checkGradients("log", [uniform([3, 7], 0.5, 3, seed: 4)], eps: 1e-3) { $0[0].log() }
        checkGradients("squared", [uniform([4, 5], -2, 2, seed: 5)]) { $0[0].squared() }
        checkGradients("negation", [uniform([4, 5], seed: 6)]) { -$0[0] }
        checkGradients("scalar add and multiply", [uniform([4, 5], seed: 7)]) { ($0[0] + 0.5) * 3 - 1 }
        checkGradients("scalar on the left", [uniform([4, 5], seed: 8)]) { 2.5 * $0[0] }
    }

    func testUnaryValues() {
        let x = Tensor(shape: [5], scalars: [-30, -1, 0, 2, 30])
        assertClose(x.relu(), [0, 0, 0, 2, 30], "relu")
        // The vector part (eight at a time) and the tail agree, and NaN stays NaN (as PyTorch's
        // relu): 19 values, so both parts see each kind.
        let special: [Float] = [.nan, -.infinity, .infinity, -0.0, 1e-30, -1e-30, 3, -3, .nan, 0]
        let y = Tensor(shape: [19], scalars: Array((special + special).prefix(19))).relu()
        for (i, v) in y.scalars.enumerated() {
            let x = (special + special)[i]
            if x.isNaN { XCTAssertTrue(v.isNaN, "relu(NaN) at \(i)") } else { XCTAssertEqual(v, x > 0 ? x : 0, "relu(\(x)) at \(i)") }
        }
        assertClose(x.sigmoid(), [-30, -1, 0, 2, 30].map { 1 / (1 + Foundation.exp(-$0)) }, absolute: 1e-7, relative: 1e-6, "sigmoid")
        XCTAssertTrue(x.sigmoid().scalars.allSatisfy { $0.isFinite })
        assertClose(Tensor(shape: [3], scalars: [0, 1, -2]).exp(), [1, M_E, Foundation.exp(-2.0)], absolute: 1e-6, relative: 1e-6, "exp")
        assertClose(Tensor(shape: [2], scalars: [1, 4]).log(), [0, Foundation.log(4.0)], absolute: 1e-6, relative: 1e-6, "log")
    }

    func testBinaryGradientsSameShape() {
        let a = uniform([2, 3, 4], seed: 10), b = uniform([2, 3, 4], 0.5, 2, seed: 11)
        checkGradients("add", [a, b]) { $0[0] + $0[1] }
        checkGradients("sub", [a, b]) { $0[0] - $0[1] }
        checkGradients("mul", [a, b]) { $0[0] * $0[1] }
        checkGradients("div", [a, b], eps: 1e-3) { $0[0] / $0[1] }
    }

    func testBroadcastGradients() {
        let x = uniform([2, 3, 4, 5], seed: 20)
        let perImageChannel = uniform([2, 3, 1, 1], 0.5, 2, seed: 21)
        let perChannel = uniform([1, 3, 1, 1], 0.5, 2, seed: 22)
        let row = uniform([5], 0.5, 2, seed: 23)
        // Squeeze-and-excitation: [N, C, H, W] * [N, C, 1, 1].
        checkGradients("mul [N,C,H,W]*[N,C,1,1]", [x, perImageChannel]) { $0[0] * $0[1] }
        checkGradients("mul [N,C,1,1]*[N,C,H,W]", [perImageChannel, x]) { $0[0] * $0[1] }
        checkGradients("add [N,C,H,W]+[1,C,1,1]", [x, perChannel]) { $0[0] + $0[1] }
        checkGradients("sub [N,C,H,W]-[W]", [x, row]) { $0[0] - $0[1] }
        checkGradients("div [N,C,H,W]/[1,C,1,1]", [x, perChannel], eps: 1e-3) { $0[0] / $0[1] }
        checkGradients("sub [1,C,1,1]-[N,C,H,W]", [perChannel, x]) { $0[0] - $0[1] }
        // Both sides broadcast: [2, 1, 4] with [1, 3, 1].
        let a = uniform([2, 1, 4], seed: 24), b = uniform([1, 3, 1], 0.5, 2, seed: 25)
        checkGradients("mul both broadcast", [a, b]) { $0[0] * $0[1] }
        checkGradients("div both broadcast", [a, b], eps: 1e-3) { $0[0] / $0[1] }
        checkGradients("add scalar tensor", [a, Tensor(0.7)]) { $0[0] + $0[1] }
    }

    func testBroadcastValues() {
        let a = Tensor(shape: [2, 1, 3], scalars: [1, 2, 3, 4, 5, 6])
        let b = Tensor(shape: [1, 2, 1], scalars: [10, 20])
        let sum = a + b
        XCTAssertEqual(sum.shape, [2, 2, 3])
        XCTAssertEqual(sum.scalars, [11, 12, 13, 21, 22, 23, 14, 15, 16, 24, 25, 26])
        let x = Tensor(shape: [1, 2, 2, 2], scalars: [1, 2, 3, 4, 5, 6, 7, 8])
        let s = Tensor(shape: [1, 2, 1, 1], scalars: [2, -1])
        XCTAssertEqual((x * s).scalars, [2, 4, 6, 8, -5, -6, -7, -8])
        XCTAssertEqual((x - s).scalars, [-1, 0, 1, 2, 6, 7, 8, 9])
        XCTAssertEqual((s / Tensor(shape: [1, 1, 1, 2], scalars: [1, 2])).shape, [1, 2, 1, 2])
        XCTAssertEqual(x.sum(toShape: [1, 2, 1, 1]).scalars, [10, 26])
    }

    /// Random shape pairs of rank 0 to 4 that broadcast: values of `a - b` and the gradient
    /// reductions against direct index arithmetic.
    func testBroadcastingFuzz() {
        var rng = RandomGenerator(seed: 77)
        for trial in 0..<300 {
            let rank = rng.nextInt(5)
            var out: [Int] = [], sa: [Int] = [], sb: [Int] = []
            for _ in 0..<rank {
                let d = 1 + rng.nextInt(3)
                out.append(d)
                let mode = rng.nextInt(3)  // 0: both full, 1: a broadcasts, 2: b broadcasts
                sa.append(mode == 1 ? 1 : d)
                sb.append(mode == 2 ? 1 : d)
            }
            // Drop leading dimensions of one side sometimes (implicit size-1 dimensions).
            let dropA = rng.nextInt(rank + 1) / 2, dropB = rng.nextInt(rank + 1) / 2
            if dropA > 0 && sa.prefix(dropA).allSatisfy({ $0 == 1 }) { sa.removeFirst(dropA) }
            if dropB > 0 && sb.prefix(dropB).allSatisfy({ $0 == 1 }) { sb.removeFirst(dropB) }
            let a = uniform(sa, seed: UInt64(trial)), b = uniform(sb, 0.5, 1.5, seed: UInt64(1000 + trial))
            let y = a - b
            // Output shape: the elementwise max of the right-aligned shapes.
            let r = max(sa.count, sb.count)
            let pa = Array(repeating: 1, count: r - sa.count) + sa, pb = Array(repeating: 1, count: r - sb.count) + sb
            let expectedShape = zip(pa, pb).map { max($0, $1) }
            XCTAssertEqual(y.shape, expectedShape, "\(sa) - \(sb)")
            func offset(_ index: [Int], _ shape: [Int]) -> Int {
                var o = 0
                for (i, s) in zip(index, shape) { o = o * s + (s == 1 ? 0 : i) }
                return o
            }
            var gradA = [Double](repeating: 0, count: a.count), gradB = [Double](repeating: 0, count: b.count)
            let seed = uniform(expectedShape, seed: UInt64(2000 + trial))
            for flat in 0..<expectedShape.elementCount {
                var index = [Int](repeating: 0, count: r), rem = flat
                for k in stride(from: r - 1, through: 0, by: -1) { index[k] = rem % expectedShape[k]; rem /= expectedShape[k] }
                let ia = offset(index, pa), ib = offset(index, pb)
                XCTAssertEqual(y[flat: flat], a[flat: ia] - b[flat: ib], "\(sa) - \(sb) at \(index)")
                gradA[ia] += Double(seed[flat: flat])
                gradB[ib] -= Double(seed[flat: flat])
            }
            let ag = a.requiringGrad(), bg = b.requiringGrad()
            (ag - bg).backward(seed)
            assertClose(ag.grad!, gradA, absolute: 1e-5, relative: 1e-5, "d/da of \(sa) - \(sb)")
            assertClose(bg.grad!, gradB, absolute: 1e-5, relative: 1e-5, "d/db of \(sa) - \(sb)")
        }
    }

    func testLargeElementwiseRunsInParallelAndMatches() {
        // Large enough for the parallel kernels (more than 64k elements per thread).
        let a = uniform([4, 64, 32, 32], seed: 30), b = uniform([4, 64, 32, 32], seed: 31)
        let s = a + b, d = a - b, p = a * b, r = a.relu()
        for i in stride(from: 0, to: a.count, by: 997) {
            XCTAssertEqual(s[flat: i], a[flat: i] + b[flat: i])
            XCTAssertEqual(d[flat: i], a[flat: i] - b[flat: i])
            XCTAssertEqual(p[flat: i], a[flat: i] * b[flat: i])
            XCTAssertEqual(r[flat: i], max(0, a[flat: i]))
        }
    }
}
