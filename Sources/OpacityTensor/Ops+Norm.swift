import Foundation

extension Tensor {
    /// Batch normalisation with given statistics (eval mode, and the paper's frozen mode in
    /// which the statistics are fixed while `weight` and `bias` still train).
    ///
    /// `y = (x - mean) / sqrt(variance + eps) * weight + bias` per channel of `[N, C, H, W]`
    /// (or `[N, C]`), followed by `max(y, 0)` when `relu` is set. The fused ReLU saves
    /// one pass over the activation in each direction; the result equals
    /// `batchNorm2d(...).relu()`.
    ///
    /// - Parameters:
    ///   - weight, bias: `[C]`, trainable.
    ///   - mean, variance: `[C]`, constants (no gradient flows to them).
    ///   - relu: apply ReLU to the result.
    public func batchNorm2d(weight: Tensor, bias: Tensor, mean: Tensor, variance: Tensor, eps: Float = 1e-5,
                            relu: Bool = false) -> Tensor {
        shapeCheck(rank == 4 || rank == 2, "batchNorm2d", "expects [N, C, H, W] or [N, C], got \(describe(shape))")
        let c = shape[1]
        for t in [weight, bias, mean, variance] {
            shapeCheck(t.shape == [c], "batchNorm2d", "parameter \(describe(t.shape)) for \(c) channels of \(describe(shape))")
        }
        let n = shape[0], hw = count / max(1, n * c)
        // Per channel: scale, shift, 1/std, mean.
        let coef = Tensor(uninitializedShape: [4, c])
        let cp = coef.mutablePointer
        for i in 0..<c {
            let istd = 1 / (variance[flat: i] + eps).squareRoot()
            cp[i] = weight[flat: i] * istd
            cp[c + i] = bias[flat: i] - mean[flat: i] * cp[i]
            cp[2 * c + i] = istd
            cp[3 * c + i] = mean[flat: i]
        }
        let out = Tensor(uninitializedShape: shape)
        let kernels = KernelProviders.normalization
        kernels.inferenceForward(input: pointer, coefficients: coef.pointer, output: out.mutablePointer, n: n, c: c, hw: hw, relu: relu)
        // Backward reads the input only (the ReLU's mask is recomputed from it): holding the
        // output too would keep a map alive that its consumer may not keep (a residual sum,
        // a max pool), and stop `+` from reusing it in place. The input itself may be a
        // convolution's recipe (``Autograd/convolutionRecomputation``).
        //
        // With the ReLU, backward reads the input only where the output is not zero (elsewhere
        // the gradient is masked to zero, and `0 * (x - mean)` adds nothing to a sum), so the
        // input is kept without those values (``SparseActivation``), which come back as a
        // per-channel value on the zero side of the ReLU: the same mask, the same output when
        // a convolution recomputes it, the same gradient bits (for finite inputs).
        let x: SavedActivation
        if relu, Autograd.sparseActivations, Autograd.needsGrad(self, weight, bias),
           !(Autograd.selectiveRecomputation && storage.regeneration != nil), storage.sparse == nil,
           let fill = Self.reluZeroSideFill(coefficients: cp, c: c),
           let packed = SparseActivation.pack(pointer, count: count, keepingWhere: out.pointer, planeFill: (fill, hw)) {
            x = SavedActivation(packed: packed, shape: shape)
        } else {
            x = SavedActivation(self)
        }
        let needX = node != nil, needW = weight.node != nil, needB = bias.node != nil
        OpTrace.note("batchNorm2d", [self, weight, bias, mean, variance], out, ["eps": .float(eps), "relu": .bool(relu)])
        let result = Autograd.record(relu ? "batchNorm2d(eval)+relu" : "batchNorm2d(eval)", out, inputs: [self, weight, bias]) { g in
            // The input gradient, and the affine gradients from per-plane sums of g and
            // g * (x - mean) (added over images in order).
            // (The closure holds `coef` itself, not only a pointer into it.)
            let gx = needX ? Tensor(uninitializedShape: g.shape) : nil
            let sums = Tensor(uninitializedShape: [2, n * c])
            let needSums = needW || needB
            let gw = needSums ? Tensor(uninitializedShape: [c]) : nil
            let gb = needSums ? Tensor(uninitializedShape: [c]) : nil
            let xv = x.value()
            kernels.inferenceBackward(
                gradOut: g.pointer, input: xv.pointer, coefficients: coef.pointer,
                gradInput: gx?.mutablePointer, gradWeight: gw?.mutablePointer, gradBias: gb?.mutablePointer,
                scratch: sums.mutablePointer, n: n, c: c, hw: hw, relu: relu)
            withExtendedLifetime(xv) {}
            return [gx, needW ? gw : nil, needB ? gb : nil]
        }
        if result.node != nil {
            // The node keeps `x` and `coef`: a convolution that saves the output for its own
            // backward keeps this recipe instead (``SavedActivation``), the same kernel on the
            // same values, so the same bits.
            out.storage.regeneration = { dst in
                let xv = x.value()
                kernels.inferenceForward(
                    input: xv.pointer, coefficients: coef.pointer, output: dst.mutablePointer, n: n, c: c, hw: hw, relu: relu)
                withExtendedLifetime(xv) {}
            }
        }
        return result
    }

    /// Per channel, a finite input value `f` with `f * scale + shift <= 0` in the forward
    /// kernel's arithmetic (a product, then a sum), so that the fused ReLU's output there is
    /// zero and its backward masks it; nil when a channel has none (a non-finite coefficient).
    /// `coefficients` is the `[4, c]` of ``batchNorm2d(weight:bias:mean:variance:eps:relu:)``:
    /// scale, shift, `1/std`, mean.
    static func reluZeroSideFill(coefficients cp: UnsafePointer<Float>, c: Int) -> [Float]? {
        var fill = [Float](repeating: 0, count: c)
        for ch in 0..<c {
            let a = cp[ch], b = cp[c + ch]
            guard a.isFinite, b.isFinite else { return nil }
            if a == 0 { continue }  // `x * 0 + b` is `b` wherever the ReLU zeroes it: any finite f
            var f = -b / a
            guard f.isFinite else { return nil }
            let step = Swift.max(1, abs(f))
            var found = false
            for _ in 0..<4 {
                if f * a + b <= 0 {
                    found = true
                    break
                }
                f += a > 0 ? -step : step
            }
            guard found, f.isFinite else { return nil }
            fill[ch] = f
        }
        return fill
    }

    /// Batch normalisation with the statistics of this batch (training mode).
    ///
    /// `y = (x - mean_B) / sqrt(var_B + eps) * weight + bias`, with the mean and biased
    /// variance over `N, H, W` of each channel of `[N, C, H, W]` (or over `N` of `[N, C]`).
    ///
    /// - Parameter relu: apply ReLU to the result in the same pass (`batchNorm2dTraining(...).0.relu()`,
    ///   the same values and gradients).
    /// - Returns: the normalised tensor, and the batch mean and biased variance per channel
    ///   (the caller updates its running statistics with them).
    public func batchNorm2dTraining(weight: Tensor, bias: Tensor, eps: Float = 1e-5, relu: Bool = false)
        -> (Tensor, mean: [Float], variance: [Float]) {
        let r = batchNorm2dTraining(weight: weight, bias: bias, eps: eps, across: nil, relu: relu)
        return (r.0, r.mean, r.variance)
    }

    /// Batch normalisation with the statistics of a batch split over several processes
    /// (synchronised batch norm, PyTorch's `SyncBatchNorm`): mean and variance are those of
    /// the whole batch, `N` summed over processes, and backward uses the whole batch's
    /// `sum(dy)` and `sum(dy * xhat)`, so each process's input gradient is exactly its part
    /// of the whole batch's.
    ///
    /// - Parameters:
    ///   - across: sums per-channel statistics over the processes (three calls per layer and
    ///     step: sums in forward, squared deviations in forward, gradient sums in backward);
    ///     `nil` is a single-process batch.
    ///   - relu: apply ReLU to the result in the same pass. Backward then takes the ReLU's mask
    ///     from the normalised input it keeps anyway (`xhat * weight + bias <= 0`, the forward's
    ///     arithmetic), so the op keeps no map for the ReLU, and the output can be recomputed
    ///     from `xhat` by a convolution that consumes it (``SavedActivation``). The values and
    ///     gradients equal `batchNorm2dTraining(...).0.relu()`'s.
    /// - Returns: the normalised tensor, the batch mean and biased variance, and the number of
    ///   values per channel over all processes.
    public func batchNorm2dTraining(weight: Tensor, bias: Tensor, eps: Float = 1e-5, across: (any BatchStatisticsReducer)?,
                                    relu: Bool = false)
        -> (Tensor, mean: [Float], variance: [Float], count: Int) {
        shapeCheck(rank == 4 || rank == 2, "batchNorm2d", "expects [N, C, H, W] or [N, C], got \(describe(shape))")
        let c = shape[1]
        shapeCheck(weight.shape == [c] && bias.shape == [c], "batchNorm2d", "parameters \(describe(weight.shape)) for \(c) channels")
        let n = shape[0], hw = count / max(1, n * c)
        var m = Float(n * hw)
        var total = n * hw
        let xp = pointer
        // Per-plane sums, then per-channel statistics (two passes: mean, then squared deviations).
        let stats = Tensor(uninitializedShape: [2, c])
        let stp = stats.mutablePointer
        let planeSums = Tensor(uninitializedShape: [n * c])
        let psp = planeSums.mutablePointer
        let planeMeans = Tensor(uninitializedShape: [n * c])
        let pmp = planeMeans.mutablePointer
        // Plane sums in double (kept as float pairs: value and rounding remainder).
        let kernels = KernelProviders.normalization
        kernels.planeSums(input: xp, sums: psp, remainders: pmp, n: n, c: c, hw: hw)
        if let across {
            var local = [Double](repeating: 0, count: c + 1)
            for ch in 0..<c {
                for b in 0..<n { local[ch] += Double(psp[b * c + ch]) + Double(pmp[b * c + ch]) }
            }
            local[c] = Double(n * hw)
            let global = across.sumAcrossProcesses(local)
            total = Int(global[c])
            m = Float(total)
            for ch in 0..<c { stp[ch] = Float(global[ch] / global[c]) }
        } else {
            for ch in 0..<c {
                var s: Double = 0
                for b in 0..<n { s += Double(psp[b * c + ch]) + Double(pmp[b * c + ch]) }
                stp[ch] = Float(s / Double(m))
            }
        }
        kernels.planeSquaredDeviations(input: xp, mean: stp, deviations: psp, n: n, c: c, hw: hw)
        if let across {
            var local = [Double](repeating: 0, count: c)
            for ch in 0..<c {
                for b in 0..<n { local[ch] += Double(psp[b * c + ch]) }
            }
            let global = across.sumAcrossProcesses(local)
            for ch in 0..<c { stp[c + ch] = Float(global[ch] / Double(total)) }
        } else {
            for ch in 0..<c {
                var v: Double = 0
                for b in 0..<n { v += Double(psp[b * c + ch]) }
                stp[c + ch] = Float(v / Double(m))
            }
        }
        let mean = Array(UnsafeBufferPointer(start: stp, count: c))
        let variance = Array(UnsafeBufferPointer(start: stp + c, count: c))
        let coef = Tensor(uninitializedShape: [3, c])  // 1/std, weight, bias
        let cp = coef.mutablePointer
        for ch in 0..<c {
            cp[ch] = 1 / (variance[ch] + eps).squareRoot()
            cp[c + ch] = weight[flat: ch]
            cp[2 * c + ch] = bias[flat: ch]
        }
        let xhatMap = Tensor(uninitializedShape: shape)
        let out = Tensor(uninitializedShape: shape)
        kernels.trainingNormalize(
            input: xp, mean: stp, coefficients: coef.pointer, normalized: xhatMap.mutablePointer, output: out.mutablePointer,
            n: n, c: c, hw: hw, relu: relu)
        // Backward reads `xhat`. When the input is a convolution's recipe
        // (``Autograd/convolutionRecomputation``), the node keeps that recipe and the statistics
        // instead, and writes `xhat` again with the forward's arithmetic.
        let savedInput = SavedActivation(self)
        let xhat = TrainingNormalized(
            kept: savedInput.isRecipe ? nil : xhatMap, input: savedInput.isRecipe ? savedInput : nil, statistics: stats,
            coefficients: coef, kernels: kernels, n: n, c: c, hw: hw)
        OpTrace.note("batchNorm2dTraining", [self, weight, bias], out, ["relu": .bool(relu)])
        let result = Autograd.record(relu ? "batchNorm2d(train)+relu" : "batchNorm2d(train)", out, inputs: [self, weight, bias]) {
            gradOut in
            // With the fused ReLU, the gradient is zeroed first where the output was not positive.
            let xhat = xhat.value()
            var masked: Tensor?
            if relu {
                let m = Tensor(uninitializedShape: gradOut.shape)
                kernels.trainingReluGradient(
                    gradOut: gradOut.pointer, normalized: xhat.pointer, coefficients: coef.pointer, gradMasked: m.mutablePointer,
                    n: n, c: c, hw: hw)
                masked = m
            }
            let g = masked ?? gradOut
            let gp = g.pointer, hp = xhat.pointer
            let sums = Tensor(uninitializedShape: [2, n * c])
            let sumG = Tensor(uninitializedShape: [c]), sumGX = Tensor(uninitializedShape: [c])
            let sg = sumG.mutablePointer, sgx = sumGX.mutablePointer
            kernels.trainingGradientSums(
                gradOut: gp, normalized: hp, sumG: sg, sumGX: sgx, scratch: sums.mutablePointer, n: n, c: c, hw: hw)
            // Across processes, each one's `g` is its own loss's gradient; the whole batch's
            // is `share * g` (share = n_r / N). Sum the shares' sums, and use them in this
            // process's scale; `weight` and `bias` get the local sums (the gradient reducer
            // applies the share).
            var gs = sg, gsx = sgx
            var globalSums: Tensor?
            if let across {
                let w = across.gradientShare
                let local = (0..<c).map { Double(sg[$0]) * w } + (0..<c).map { Double(sgx[$0]) * w }
                let global = across.sumAcrossProcesses(local)
                let t = Tensor(uninitializedShape: [2, c])
                let tp = t.mutablePointer
                for ch in 0..<c {
                    tp[ch] = Float(global[ch] / w)
                    tp[c + ch] = Float(global[c + ch] / w)
                }
                globalSums = t
                gs = UnsafeMutablePointer(mutating: t.pointer)
                gsx = gs + c
            }
            let gx = Tensor(uninitializedShape: g.shape)
            kernels.trainingInputGradient(
                gradOut: gp, normalized: hp, coefficients: coef.pointer, sumG: gs, sumGX: gsx, count: m,
                gradInput: gx.mutablePointer, n: n, c: c, hw: hw)
            withExtendedLifetime(globalSums) {}
            return [gx, sumGX, sumG]
        }
        if result.node != nil {
            // The node keeps `xhat` and `coef`: the output's recipe for a convolution that
            // consumes it (``SavedActivation``), the forward's own arithmetic.
            out.storage.regeneration = { dst in
                let h = xhat.value()
                kernels.trainingOutput(
                    normalized: h.pointer, coefficients: coef.pointer, output: dst.mutablePointer, n: n, c: c, hw: hw, relu: relu)
                withExtendedLifetime(h) {}
            }
        }
        return (result, mean, variance, total)
    }
}

/// Sums per-channel statistics over the processes of a data-parallel job, for synchronised
/// batch norm. Every process calls it the same number of times in the same order; the
/// result is the same on every process. A transport failure ends the job (there is no
/// meaningful way to continue a forward or backward pass without it).
public protocol BatchStatisticsReducer: AnyObject, Sendable {
    /// Element-wise sums of `values` over all processes.
    func sumAcrossProcesses(_ values: [Double]) -> [Double]
    /// This process's share of the whole batch, `n_r / N`: its loss is the mean over its
    /// own samples, so its gradients times the share are its part of the whole batch's.
    var gradientShare: Double { get set }
}

/// The normalised input `xhat` of a training-mode batch norm as its backward reads it: the map
/// itself, or, when the norm's input is a convolution's recipe (``SavedActivation``), that
/// recipe with the batch statistics, from which `xhat` is written again with the forward's own
/// arithmetic (`(x - mean) * (1 / std)`, elementwise, so the same bits).
private struct TrainingNormalized: @unchecked Sendable {
    let kept: Tensor?
    let input: SavedActivation?
    /// `[2, c]`: mean, variance.
    let statistics: Tensor
    /// `[3, c]`: `1/std`, weight, bias.
    let coefficients: Tensor
    let kernels: any NormalizationKernels
    let n: Int, c: Int, hw: Int

    /// `xhat`, `[N, C, H, W]` (or `[N, C]`).
    func value() -> Tensor {
        if let kept { return kept }
        let x = input!.value()
        let h = Tensor(uninitializedShape: x.shape)
        kernels.trainingNormalized(
            input: x.pointer, mean: statistics.pointer, coefficients: coefficients.pointer, normalized: h.mutablePointer,
            n: n, c: c, hw: hw)
        return h
    }
}
