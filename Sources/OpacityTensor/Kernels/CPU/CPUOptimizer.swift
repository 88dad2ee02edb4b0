// The CPU optimizer kernels: eight lanes at a time, split over the compute threads for large
// parameters. Every element is updated by the same operations in the same order whatever the
// split, so results do not depend on the thread count.

/// The CPU provider of ``OptimizerKernels``.
struct CPUOptimizerKernels: OptimizerKernels {
    /// Parameters smaller than this many elements per thread are updated on the calling thread.
    static let minPerThread = 1 << 15

    func adam(
        parameter p: UnsafeMutablePointer<Float>, gradient g: UnsafePointer<Float>, m: UnsafeMutablePointer<Float>,
        v: UnsafeMutablePointer<Float>, count: Int, step: AdamStep
    ) {
        let (b1, b2, e, wd) = (step.beta1, step.beta2, step.eps, step.weightDecay)
        let (stepSize, bc2Sqrt) = (step.stepSize, step.bc2Sqrt)
        let (c1, c2) = (1 - b1, 1 - b2)
        Compute.parallelRanges(count, minPerThread: Self.minPerThread) { r in
            var j = r.lowerBound
            while j + 8 <= r.upperBound {
                let pj = load8(p, j)
                let gj = load8(g, j) + wd * pj
                let mj = b1 * load8(m, j) + c1 * gj
                let vj = b2 * load8(v, j) + c2 * gj * gj
                store8(m, j, mj)
                store8(v, j, vj)
                store8(p, j, pj - stepSize * mj / (vj.squareRoot() / bc2Sqrt + e))
                j += 8
            }
            while j < r.upperBound {
                let gj = g[j] + wd * p[j]
                m[j] = b1 * m[j] + c1 * gj
                v[j] = b2 * v[j] + c2 * gj * gj
                p[j] -= stepSize * m[j] / (v[j].squareRoot() / bc2Sqrt + e)
                j += 1
            }
        }
    }

    func sumOfSquares(_ x: UnsafePointer<Float>, count: Int) -> Double {
        simdSumOfSquares(x, count)
    }

    func scale(_ x: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
        Compute.parallelRanges(count, minPerThread: Self.minPerThread) { r in
            var j = r.lowerBound
            while j + 8 <= r.upperBound {
                store8(x, j, load8(x, j) * factor)
                j += 8
            }
            while j < r.upperBound {
                x[j] *= factor
                j += 1
            }
        }
    }
}
