import Foundation
import Opacity

extension BenchSection {
    /// The OpenBLAS kernel report and sgemm rates.
    static let blas = BenchSection(
        name: "blas", summary: "OpenBLAS kernel report; sgemm GFLOP/s at 2048 (per kernel family, 1 and N threads)",
        runsByDefault: true
    ) { context in
        let reps = context.options.repetitions
        let k = BLAS.kernels
        print("== blas: OpenBLAS kernels and sgemm")
        print("  OpenBLAS picked on its own: \(k.initial)  (OPENBLAS_CORETYPE=\(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "unset"))")
        print("  active: \(k.active); \(k.reason)")
        print("  self-check vs reference GEMM: max relative error \(String(format: "%.2e", k.selfCheckError))")
        let main = measureSgemm(n: 2048, repetitions: reps)
        context.sgemmGFLOPS = main.gflops
        print("  sgemm 2048x2048x2048, \(Compute.threads) threads, \(k.active): \(fmt(main.gflops)) GFLOP/s (median of \(reps); best \(fmt(main.bestGFLOPS)))")
        // The other families, for comparison (restoring the active one afterwards).
        for family in ["SkylakeX", "Haswell", "Prescott"] where family.lowercased() != k.active.lowercased() {
            let r = BLAS.withKernels(family) { measureSgemm(n: 2048, repetitions: max(2, reps / 2)) }
            if let r {
                print("  sgemm 2048, \(Compute.threads) threads, \(family): \(fmt(r.gflops)) GFLOP/s")
            } else {
                print("  \(family): not available in this OpenBLAS")
            }
        }
        if Compute.threads > 1 {
            let saved = Compute.threads
            Compute.threads = 1
            let one = measureSgemm(n: 2048, repetitions: max(2, reps / 2))
            Compute.threads = saved
            print("  sgemm 2048, 1 thread, \(k.active): \(fmt(one.gflops)) GFLOP/s")
        }
        print("")
    }
}

struct SgemmRate {
    var timing: Timing
    var flops: Double
    var gflops: Double { flops / timing.median * 1e-9 }
    var bestGFLOPS: Double { flops / timing.best * 1e-9 }
}

/// Times a square row-major sgemm `C = A B` of side `n` through the engine's binding.
func measureSgemm(n: Int, repetitions: Int) -> SgemmRate {
    var rng = RandomGenerator(seed: 7)
    let a = Tensor.randomUniform([n, n], -1, 1, using: &rng)
    let b = Tensor.randomUniform([n, n], -1, 1, using: &rng)
    var c = Tensor.zeros([n, n])
    let t = a.withUnsafeBufferPointer { ap in
        b.withUnsafeBufferPointer { bp in
            c.withUnsafeMutableBufferPointer { cp in
                measure(repetitions: repetitions) {
                    BLAS.gemm(
                        m: n, n: n, k: n, a: ap.baseAddress!, lda: n, b: bp.baseAddress!, ldb: n,
                        c: cp.baseAddress!, ldc: n)
                }
            }
        }
    }
    return SgemmRate(timing: t, flops: 2 * Double(n) * Double(n) * Double(n))
}
