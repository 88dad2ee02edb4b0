import OpacityTensor
import XCTest

/// Matrix products in all transpose combinations, and the linear layer.
final class LinearTests: XCTestCase {
    func testMatmulGradientsAllTransposes() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = uniform(ta ? [4, 3] : [3, 4], seed: 1), b = uniform(tb ? [5, 4] : [4, 5], seed: 2)
            checkGradients("matmul transposeSelf \(ta) transposeOther \(tb)", [a, b]) {
                $0[0].matmul($0[1], transposeSelf: ta, transposeOther: tb)
            }
            let c = a.matmul(b, transposeSelf: ta, transposeOther: tb)
            XCTAssertEqual(c.shape, [3, 5])
            let ref = BLAS.referenceGemm(transA: ta, transB: tb, m: 3, n: 5, k: 4, a: a.scalars, b: b.scalars)
            assertClose(c, ref.map(Double.init), absolute: 1e-6, relative: 1e-6, "matmul values")
        }
    }

    func testLargeMatmulSplitsOverThreadsAndMatches() {
        let saved = Compute.threads
        defer { Compute.threads = saved }
        for threads in [1, 2, 3] {
            Compute.threads = threads
            for (m, n, k) in [(200, 90, 70), (40, 300, 64), (129, 129, 33)] {
                for (ta, tb) in [(false, false), (true, true), (false, true)] {
                    let a = uniform(ta ? [k, m] : [m, k], seed: 3), b = uniform(tb ? [n, k] : [k, n], seed: 4)
                    let c = a.matmul(b, transposeSelf: ta, transposeOther: tb)
                    let ref = BLAS.referenceGemm(transA: ta, transB: tb, m: m, n: n, k: k, a: a.scalars, b: b.scalars)
                    assertClose(c, ref.map(Double.init), absolute: 1e-4, relative: 1e-4, "\(m)x\(n)x\(k) \(ta) \(tb), \(threads) threads")
                }
            }
        }
    }

    func testLinearGradientsAndLayer() {
        let x = uniform([3, 4], seed: 5), w = uniform([2, 4], seed: 6), b = uniform([2], seed: 7)
        checkGradients("linear with bias", [x, w, b]) { $0[0].linear(weight: $0[1], bias: $0[2]) }
        checkGradients("linear without bias", [x, w]) { $0[0].linear(weight: $0[1], bias: nil) }
        let layer = Linear(4, 2)
        XCTAssertEqual(layer.namedParameters().map(\.0), ["weight", "bias"])
        XCTAssertEqual(layer.weight.shape, [2, 4])
        let y = layer(x)
        let ref = BLAS.referenceGemm(transB: true, m: 3, n: 2, k: 4, a: x.scalars, b: layer.weight.value.scalars)
        assertClose(y, (0..<6).map { Double(ref[$0]) + Double(layer.bias!.value[flat: $0 % 2]) }, absolute: 1e-6, relative: 1e-5, "linear")
    }
}
