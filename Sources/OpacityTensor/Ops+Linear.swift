import Foundation

extension Tensor {
    /// Matrix product of rank-2 tensors: `op(self) [M, K] x op(other) [K, N]`.
    public func matmul(_ other: Tensor, transposeSelf: Bool = false, transposeOther: Bool = false) -> Tensor {
        shapeCheck(rank == 2 && other.rank == 2, "matmul", "expects rank-2 tensors, got \(describe(shape)) and \(describe(other.shape))")
        let m = transposeSelf ? shape[1] : shape[0], k = transposeSelf ? shape[0] : shape[1]
        let k2 = transposeOther ? other.shape[1] : other.shape[0], n = transposeOther ? other.shape[0] : other.shape[1]
        shapeCheck(k == k2, "matmul", "inner dimensions differ: \(describe(shape))\(transposeSelf ? "ᵀ" : "") x \(describe(other.shape))\(transposeOther ? "ᵀ" : "")")
        let out = Tensor(uninitializedShape: [m, n])
        BLAS.gemm(transA: transposeSelf, transB: transposeOther, m: m, n: n, k: k, a: pointer, lda: shape[1],
                  b: other.pointer, ldb: other.shape[1], c: out.mutablePointer, ldc: n)
        let a = detached(), b = other.detached()
        OpTrace.note("matmul", [self, other], out, ["transposeSelf": .bool(transposeSelf), "transposeOther": .bool(transposeOther)])
        return Autograd.record("matmul", out, inputs: [self, other]) { g in
            // C = A B: dA = dC B^T, dB = A^T dC (with the transposes folded in).
            let ga: Tensor = transposeSelf
                ? b.matmulUntracked(g, tA: transposeOther, tB: true)   // dA^T = B dC^T
                : g.matmulUntracked(b, tA: false, tB: !transposeOther)
            let gb: Tensor = transposeOther
                ? g.matmulUntracked(a, tA: true, tB: transposeSelf)    // dB^T = dC^T A
                : a.matmulUntracked(g, tA: !transposeSelf, tB: false)
            return [ga, gb]
        }
    }

    func matmulUntracked(_ other: Tensor, tA: Bool, tB: Bool) -> Tensor {
        let m = tA ? shape[1] : shape[0], k = tA ? shape[0] : shape[1]
        let n = tB ? other.shape[0] : other.shape[1]
        let out = Tensor(uninitializedShape: [m, n])
        BLAS.gemm(transA: tA, transB: tB, m: m, n: n, k: k, a: pointer, lda: shape[1],
                  b: other.pointer, ldb: other.shape[1], c: out.mutablePointer, ldc: n)
        return out
    }

    /// A fully connected layer: `[N, in] x weight[out, in]^T + bias[out]`.
    public func linear(weight: Tensor, bias: Tensor?) -> Tensor {
        shapeCheck(rank == 2 && weight.rank == 2 && shape[1] == weight.shape[1], "linear",
                   "input \(describe(shape)) does not fit weight \(describe(weight.shape))")
        let y = matmul(weight, transposeOther: true)
        guard let bias else { return y }
        shapeCheck(bias.shape == [weight.shape[0]], "linear", "bias \(describe(bias.shape)) for \(weight.shape[0]) outputs")
        return y + bias
    }

    /// Selects rows of a `[N, D]` tensor (gradient scatters back, adding repeats).
    public func gatherRows(_ indices: [Int]) -> Tensor {
        shapeCheck(rank == 2, "gatherRows", "expects [N, D], got \(describe(shape))")
        let d = shape[1]
        let out = Tensor(uninitializedShape: [indices.count, d])
        let src = pointer, dst = out.mutablePointer
        for (i, r) in indices.enumerated() {
            shapeCheck(r >= 0 && r < shape[0], "gatherRows", "row \(r) outside \(describe(shape))")
            (dst + i * d).update(from: src + r * d, count: d)
        }
        let full = shape
        OpTrace.note("gatherRows", [self], out, ["indices": .ints(indices)])
        return Autograd.record("gatherRows", out, inputs: [self]) { g in
            let gx = Tensor.zeros(full)
            let gp = g.pointer, dp = gx.mutablePointer
            for (i, r) in indices.enumerated() { for j in 0..<d { dp[r * d + j] += gp[i * d + j] } }
            return [gx]
        }
    }
}
