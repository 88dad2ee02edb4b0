import Foundation

extension Tensor {
    /// Batch normalisation with given statistics (eval mode, and the paper's frozen mode in
    /// which the statistics are fixed while `weight` and `bias` still train).
    ///
    /// `y = (x - mean) / sqrt(variance + eps) * weight + bias` per channel of `[N, C, H, W]`.
    public func batchNorm2d(weight: Tensor, bias: Tensor, mean: Tensor, variance: Tensor, eps: Float = 1e-5) -> Tensor {
        shapeCheck(rank == 4 || rank == 2, "batchNorm2d", "expects [N, C, H, W] or [N, C], got \(describe(shape))")
        let c = shape[1]
        for t in [weight, bias, mean, variance] {
            shapeCheck(t.shape == [c], "batchNorm2d", "parameter \(describe(t.shape)) for \(c) channels of \(describe(shape))")
        }
        let n = shape[0], hw = count / max(1, n * c)
        var scale = [Float](repeating: 0, count: c), shift = [Float](repeating: 0, count: c)
        var invStd = [Float](repeating: 0, count: c)
        for i in 0..<c {
            invStd[i] = 1 / (variance[flat: i] + eps).squareRoot()
            scale[i] = weight[flat: i] * invStd[i]
            shift[i] = bias[flat: i] - mean[flat: i] * scale[i]
        }
        let out = Tensor(uninitializedShape: shape)
        let xp = pointer, op = out.mutablePointer
        scale.withUnsafeBufferPointer { sc in shift.withUnsafeBufferPointer { sh in
            let scp = sc.baseAddress!, shp = sh.baseAddress!
            Compute.parallelFor(n * c, minPerThread: 16) { i in
                let ch = i % c
                let a = scp[ch], b = shp[ch]
                let src = xp + i * hw, dst = op + i * hw
                for j in 0..<hw { dst[j] = src[j] * a + b }
            }
        } }
        let x = detached(), meanD = mean.detached()
        let needX = node != nil, needW = weight.node != nil, needB = bias.node != nil
        return Autograd.record("batchNorm2d(eval)", out, inputs: [self, weight, bias]) { g in
            let gp = g.pointer
            var gx: Tensor?
            if needX {
                let t = Tensor(uninitializedShape: g.shape)
                let dp = t.mutablePointer
                scale.withUnsafeBufferPointer { sc in
                    let scp = sc.baseAddress!
                    Compute.parallelFor(n * c, minPerThread: 16) { i in
                        let a = scp[i % c]
                        let src = gp + i * hw, dst = dp + i * hw
                        for j in 0..<hw { dst[j] = src[j] * a }
                    }
                }
                gx = t
            }
            var gw: Tensor?, gb: Tensor?
            if needW || needB {
                let tw = Tensor.zeros([c]), tb = Tensor.zeros([c])
                let wp = tw.mutablePointer, bp = tb.mutablePointer
                let xp = x.pointer
                Compute.parallelFor(c, minPerThread: 8) { ch in
                    let m = meanD[flat: ch], istd = invStd[ch]
                    var sw: Float = 0, sb: Float = 0
                    for b in 0..<n {
                        let off = (b * c + ch) * hw
                        for j in 0..<hw {
                            let gv = gp[off + j]
                            sb += gv
                            sw += gv * (xp[off + j] - m) * istd
                        }
                    }
                    wp[ch] = sw
                    bp[ch] = sb
                }
                gw = tw
                gb = tb
            }
            return [gx, needW ? gw : nil, needB ? gb : nil]
        }
    }

    /// Batch normalisation with the statistics of this batch (training mode).
    ///
    /// - Returns: the normalised tensor, and the batch mean and biased variance per channel
    ///   (the caller updates its running statistics with them).
    public func batchNorm2dTraining(weight: Tensor, bias: Tensor, eps: Float = 1e-5) -> (Tensor, mean: [Float], variance: [Float]) {
        shapeCheck(rank == 4 || rank == 2, "batchNorm2d", "expects [N, C, H, W] or [N, C], got \(describe(shape))")
        let c = shape[1]
        shapeCheck(weight.shape == [c] && bias.shape == [c], "batchNorm2d", "parameters \(describe(weight.shape)) for \(c) channels")
        let n = shape[0], hw = count / max(1, n * c)
        let m = Float(n * hw)
        var mean = [Float](repeating: 0, count: c), variance = [Float](repeating: 0, count: c)
        let xp = pointer
        mean.withUnsafeMutableBufferPointer { mb in variance.withUnsafeMutableBufferPointer { vb in
            let mp = mb.baseAddress!, vp = vb.baseAddress!
            Compute.parallelFor(c, minPerThread: 4) { ch in
                var s: Double = 0
                for b in 0..<n { let src = xp + (b * c + ch) * hw; for j in 0..<hw { s += Double(src[j]) } }
                let mu = s / Double(m)
                var v: Double = 0
                for b in 0..<n { let src = xp + (b * c + ch) * hw; for j in 0..<hw { let d = Double(src[j]) - mu; v += d * d } }
                mp[ch] = Float(mu)
                vp[ch] = Float(v / Double(m))
            }
        } }
        let invStd = (0..<c).map { 1 / (variance[$0] + eps).squareRoot() }
        let xhat = Tensor(uninitializedShape: shape)
        let out = Tensor(uninitializedShape: shape)
        let hp = xhat.mutablePointer, op = out.mutablePointer
        Compute.parallelFor(n * c, minPerThread: 16) { i in
            let ch = i % c
            let mu = mean[ch], istd = invStd[ch], a = weight[flat: ch], b = bias[flat: ch]
            let src = xp + i * hw
            for j in 0..<hw {
                let v = (src[j] - mu) * istd
                hp[i * hw + j] = v
                op[i * hw + j] = v * a + b
            }
        }
        let w = weight.detached()
        let result = Autograd.record("batchNorm2d(train)", out, inputs: [self, weight, bias]) { g in
            let gp = g.pointer, hp = xhat.pointer
            var sumG = [Float](repeating: 0, count: c), sumGX = [Float](repeating: 0, count: c)
            for ch in 0..<c {
                var s: Float = 0, sx: Float = 0
                for b in 0..<n { let off = (b * c + ch) * hw; for j in 0..<hw { s += gp[off + j]; sx += gp[off + j] * hp[off + j] } }
                sumG[ch] = s
                sumGX[ch] = sx
            }
            let gx = Tensor(uninitializedShape: g.shape)
            let dp = gx.mutablePointer
            Compute.parallelFor(n * c, minPerThread: 16) { i in
                let ch = i % c
                let k = w[flat: ch] * invStd[ch] / m
                let sg = sumG[ch], sgx = sumGX[ch]
                for j in 0..<hw {
                    let o = i * hw + j
                    dp[o] = k * (m * gp[o] - sg - hp[o] * sgx)
                }
            }
            return [gx, Tensor(shape: [c], scalars: sumGX), Tensor(shape: [c], scalars: sumG)]
        }
        return (result, mean, variance)
    }
}
