import Foundation
import OpacityTensor
import XCTest

/// OpenBLAS kernel selection and GEMM against the plain reference.
final class BLASTests: XCTestCase {
    func testKernelSelectionReportAndSelfCheck() {
        let k = BLAS.kernels
        print("OpenBLAS kernels: active \(k.active), OpenBLAS chose \(k.initial); \(k.reason); self-check error \(k.selfCheckError)")
        XCTAssertFalse(k.active.isEmpty)
        XCTAssertLessThan(k.selfCheckError, 1e-5, "the active kernels must agree with the reference GEMM")
        XCTAssertEqual(BLAS.coreName.lowercased(), k.active.lowercased())
        // On a CPU with AVX-512 the fast family must be active unless explicitly overridden.
        let env = ProcessInfo.processInfo.environment
        if env["OPACITY_BLAS_CORE"] == nil, let flags = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
           ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].allSatisfy({ flags.contains($0) }) {
            XCTAssertTrue(["skylakex", "cooperlake", "sapphirerapids"].contains(k.active.lowercased()),
                          "an AVX-512 CPU should run AVX-512 kernels, not \(k.active) (\(k.reason))")
        }
    }

    func gemmCase(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, seed: UInt64) -> (a: [Float], b: [Float]) {
        (uniform(transA ? [k, m] : [m, k], seed: seed).scalars, uniform(transB ? [n, k] : [k, n], seed: seed + 1).scalars)
    }

    func testGemmMatchesReference() {
        let saved = Compute.threads
        defer { Compute.threads = saved }
        for threads in [1, 2, 3] {
            Compute.threads = threads
            for (m, n, k) in [(1, 1, 1), (7, 5, 3), (67, 45, 129), (130, 257, 64), (300, 8, 33), (64, 64, 0)] {
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    let (a, b) = gemmCase(transA: ta, transB: tb, m: m, n: n, k: k, seed: UInt64(m * 1000 + n))
                    var c = [Float](repeating: 7, count: m * n)
                    a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                        BLAS.gemm(transA: ta, transB: tb, m: m, n: n, k: k, a: ap.baseAddress!, lda: ta ? m : k,
                                  b: bp.baseAddress!, ldb: tb ? k : n, c: cp.baseAddress!, ldc: n)
                    } } }
                    let ref = BLAS.referenceGemm(transA: ta, transB: tb, m: m, n: n, k: k, a: a, b: b)
                    assertClose(Tensor(shape: [m * n], scalars: c), ref.map(Double.init), absolute: 1e-5, relative: 1e-5,
                                "gemm \(m)x\(n)x\(k) transA \(ta) transB \(tb), \(threads) threads")
                }
            }
        }
    }

    func testGemmAlphaBetaAndLeadingDimensions() {
        // C (a 40x70 block inside a 40x80 matrix) = 0.5 * A B + 2 * C, with A a block of a wider matrix.
        let (m, n, k) = (40, 70, 50)
        let aFull = uniform([m, k + 6], seed: 1).scalars, b = uniform([k, n], seed: 2).scalars
        var c = uniform([m, 80], seed: 3).scalars
        let c0 = c
        aFull.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
            BLAS.gemm(m: m, n: n, k: k, alpha: 0.5, a: ap.baseAddress!, lda: k + 6, b: bp.baseAddress!, ldb: n, beta: 2,
                      c: cp.baseAddress!, ldc: 80)
        } } }
        let a = (0..<m).flatMap { i in aFull[(i * (k + 6))..<(i * (k + 6) + k)] }
        let ref = BLAS.referenceGemm(m: m, n: n, k: k, a: Array(a), b: b)
        for i in 0..<m {
            for j in 0..<80 {
                let expected = j < n ? 0.5 * Double(ref[i * n + j]) + 2 * Double(c0[i * 80 + j]) : Double(c0[i * 80 + j])
                XCTAssertEqual(Double(c[i * 80 + j]), expected, accuracy: 1e-4, "(\(i), \(j))")
            }
        }
    }

    func testOtherKernelFamiliesAgreeAndSelectionIsRestored() {
        let active = BLAS.kernels.active
        let (a, b) = gemmCase(transA: false, transB: true, m: 33, n: 47, k: 65, seed: 9)
        let ref = BLAS.referenceGemm(transB: true, m: 33, n: 47, k: 65, a: a, b: b)
        for family in ["Haswell", "Prescott", "SkylakeX"] {
            let c: [Float]? = BLAS.withKernels(family) {
                XCTAssertEqual(BLAS.coreName.lowercased(), family.lowercased())
                return Tensor(shape: [33, 65], scalars: a).matmul(Tensor(shape: [47, 65], scalars: b), transposeOther: true).scalars
            }
            guard let c else { continue }  // family not compiled into this OpenBLAS
            assertClose(Tensor(shape: [33 * 47], scalars: c), ref.map(Double.init), absolute: 1e-5, relative: 1e-5, family)
            XCTAssertEqual(BLAS.coreName.lowercased(), active.lowercased(), "kernels restored after \(family)")
        }
        XCTAssertNil(BLAS.withKernels("NoSuchCore") { 1 })
        XCTAssertEqual(BLAS.coreName.lowercased(), active.lowercased())
    }
}
