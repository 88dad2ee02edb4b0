import Foundation

/// `log(1 + exp(x))` without overflow.
@inline(__always)
func softplus(_ x: Float) -> Float { x > 0 ? x + Foundation.log1p(Foundation.exp(-x)) : Foundation.log1p(Foundation.exp(x)) }

extension Tensor {
    /// Log-softmax over the last dimension.
    public func logSoftmax() -> Tensor {
        shapeCheck(rank >= 1, "logSoftmax", "needs at least one dimension")
        let c = shape[rank - 1], rows = count / max(1, c)
        let out = Tensor(uninitializedShape: shape)
        let xp = pointer, op = out.mutablePointer
        for r in 0..<rows {
            let x = xp + r * c, o = op + r * c
            var m = -Float.infinity
            for i in 0..<c { m = max(m, x[i]) }
            var s: Float = 0
            for i in 0..<c { s += Foundation.exp(x[i] - m) }
            let lse = m + Foundation.log(s)
            for i in 0..<c { o[i] = x[i] - lse }
        }
        let od = out.detached()
        OpTrace.note("logSoftmax", [self], out)
        return Autograd.record("logSoftmax", out, inputs: [self]) { g in
            let gx = Tensor(uninitializedShape: g.shape)
            let gp = g.pointer, lp = od.pointer, dp = gx.mutablePointer
            for r in 0..<rows {
                var s: Float = 0
                for i in 0..<c { s += gp[r * c + i] }
                for i in 0..<c { dp[r * c + i] = gp[r * c + i] - Foundation.exp(lp[r * c + i]) * s }
            }
            return [gx]
        }
    }

    /// Negative log-likelihood of `[N, C]` log-probabilities for class indices `targets`,
    /// averaged over the batch (PyTorch's `nll_loss` with mean reduction).
    public func nllLoss(targets: [Int]) -> Tensor {
        shapeCheck(rank == 2 && shape[0] == targets.count, "nllLoss", "log-probabilities \(describe(shape)) for \(targets.count) targets")
        let (n, c) = (shape[0], shape[1])
        var s: Float = 0
        for (i, t) in targets.enumerated() {
            shapeCheck(t >= 0 && t < c, "nllLoss", "target \(t) outside 0..<\(c)")
            s -= self[flat: i * c + t]
        }
        let out = Tensor(s / Float(max(1, n)))
        let sh = shape
        OpTrace.note("nllLoss", [self], out)
        return Autograd.record("nllLoss", out, inputs: [self]) { g in
            let gx = Tensor.zeros(sh)
            let v = -g.scalar / Float(max(1, n))
            for (i, t) in targets.enumerated() { gx.mutablePointer[i * c + t] = v }
            return [gx]
        }
    }

    /// Cross entropy of `[N, C]` logits: `nllLoss(logSoftmax(x))`.
    public func crossEntropy(targets: [Int]) -> Tensor { logSoftmax().nllLoss(targets: targets) }

    /// The sigmoid focal loss of RetinaNet, summed over elements.
    ///
    /// For logits `x` with `p = sigmoid(x)` and targets `t` (1 positive, 0 negative, any
    /// other value ignored): positives add `-alpha (1-p)^gamma log p`, negatives add
    /// `-(1-alpha) p^gamma log(1-p)`. Computed from the logits with `log p = -softplus(-x)`,
    /// so it stays finite where the reference clamps `p` to `[1e-4, 1-1e-4]`.
    public func sigmoidFocalLoss(targets: Tensor, alpha: Float = 0.25, gamma: Float = 2) -> Tensor {
        shapeCheck(shape == targets.shape, "sigmoidFocalLoss", "logits \(describe(shape)) and targets \(describe(targets.shape)) differ")
        let n = count
        let xp = pointer, tp = targets.pointer
        let threads = max(1, min(Compute.threads, n / 65536))
        var partial = [Double](repeating: 0, count: threads)
        partial.withUnsafeMutableBufferPointer { pb in
            let pp = pb.baseAddress!
            Compute.parallelFor(threads) { t in
                let lo = n * t / threads, hi = n * (t + 1) / threads
                var s: Double = 0
                for i in lo..<hi {
                    let x = xp[i], tv = tp[i]
                    if tv == 1 {
                        let logp = -softplus(-x), p = Foundation.exp(logp)
                        s += Double(-alpha * Foundation.pow(1 - p, gamma) * logp)
                    } else if tv == 0 {
                        let log1mp = -softplus(x), p = Foundation.exp(-softplus(-x))
                        s += Double(-(1 - alpha) * Foundation.pow(p, gamma) * log1mp)
                    }
                }
                pp[t] = s
            }
        }
        let out = Tensor(Float(partial.reduce(0, +)))
        let x = detached(), tg = targets.detached()
        OpTrace.note("sigmoidFocalLoss", [self], out)
        return Autograd.record("sigmoidFocalLoss", out, inputs: [self]) { g in
            let scale = g.scalar
            let gx = Tensor(uninitializedShape: x.shape)
            let xp = x.pointer, tp = tg.pointer, dp = gx.mutablePointer
            Compute.parallelRanges(n, minPerThread: 65536) { r in
                for i in r {
                    let xv = xp[i], tv = tp[i]
                    let logp = -softplus(-xv), log1mp = -softplus(xv)
                    let p = Foundation.exp(logp), q = Foundation.exp(log1mp)
                    if tv == 1 {
                        // d/dx = alpha (1-p)^gamma (gamma p log p - (1-p))
                        dp[i] = scale * alpha * Foundation.pow(q, gamma) * (gamma * p * logp - q)
                    } else if tv == 0 {
                        // d/dx = (1-alpha) p^gamma (p - gamma (1-p) log(1-p))
                        dp[i] = scale * (1 - alpha) * Foundation.pow(p, gamma) * (p - gamma * q * log1mp)
                    } else {
                        dp[i] = 0
                    }
                }
            }
            return [gx]
        }
    }

    /// Smooth L1 loss summed over elements: `0.5 d^2 / beta` where `|d| < beta`, else
    /// `|d| - 0.5 beta`, with `d = self - target`.
    public func smoothL1Loss(target: Tensor, beta: Float = 1.0 / 9) -> Tensor {
        shapeCheck(shape == target.shape, "smoothL1Loss", "prediction \(describe(shape)) and target \(describe(target.shape)) differ")
        var s: Double = 0
        let xp = pointer, tp = target.pointer
        for i in 0..<count {
            let d = abs(xp[i] - tp[i])
            s += Double(d < beta ? 0.5 * d * d / beta : d - 0.5 * beta)
        }
        let out = Tensor(Float(s))
        let x = detached(), t = target.detached()
        OpTrace.note("smoothL1Loss", [self, target], out)
        return Autograd.record("smoothL1Loss", out, inputs: [self, target]) { g in
            let scale = g.scalar
            let gx = Tensor(uninitializedShape: x.shape)
            let xp = x.pointer, tp = t.pointer, dp = gx.mutablePointer
            for i in 0..<x.count {
                let d = xp[i] - tp[i]
                dp[i] = scale * (abs(d) < beta ? d / beta : (d > 0 ? 1 : -1))
            }
            return [gx, -gx]
        }
    }

    /// Inverted dropout: zeroes each element with probability `p` and scales the rest by
    /// `1 / (1 - p)`. Identity when `p == 0`.
    public func dropout(_ p: Float, using rng: inout RandomGenerator) -> Tensor {
        precondition(p >= 0 && p < 1, "dropout: p must be in [0, 1), got \(p)")
        if p == 0 { return self }
        // The mask is drawn again in backward from a copy of the generator's state, so the
        // graph keeps no mask (an activation's size of memory) between the passes.
        let start = rng
        let (shape, count) = (self.shape, self.count)
        func mask(_ rng: inout RandomGenerator) -> Tensor {
            let keep = 1 / (1 - p)
            let mask = Tensor(uninitializedShape: shape)
            let mp = mask.mutablePointer
            for i in 0..<count { mp[i] = rng.nextUniform() < p ? 0 : keep }
            return mask
        }
        let out = Tensor.binaryKernel(self, mask(&rng), .mul, op: "dropout")
        OpTrace.note("dropout", [self], out)
        return Autograd.record("dropout", out, inputs: [self]) { g in
            var again = start
            return [Tensor.binaryKernel(g, mask(&again), .mul, op: "dropout")]
        }
    }
}
