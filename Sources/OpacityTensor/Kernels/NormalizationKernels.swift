/// The seam between the batch-norm ops (Ops+Norm.swift) and the code that computes them.
///
/// `Tensor.batchNorm2d` and `Tensor.batchNorm2dTraining` check shapes, allocate every
/// buffer, prepare the per-channel coefficients, reduce statistics across processes and
/// record autograd; a provider only computes, on contiguous row-major `Float32` buffers.
/// The CPU kernels (`Kernels/CPU/CPUNormalization.swift`) are the one provider today;
/// another is chosen in ``KernelProviders`` without a change to the ops.
///
/// Activations and their gradients are `n * c` planes of `hw` values (`[N, C, H, W]` with
/// `hw = H * W`, or `[N, C]` with `hw = 1`); plane `i` belongs to channel `i % c`.
protocol NormalizationKernels: Sendable {
    /// Eval-mode forward: `y = x * scale + shift` per channel, then `max(y, 0)` when `relu`.
    ///
    /// - Parameter coefficients: `[4, c]`: scale, shift, `1/std`, mean.
    func inferenceForward(
        input: UnsafePointer<Float>, coefficients: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
        n: Int, c: Int, hw: Int, relu: Bool)

    /// Eval-mode backward. Writes the input gradient (`gradOut * scale`, zero where the fused
    /// ReLU's output is not positive) into `gradInput` when given, and, when `gradWeight`
    /// and `gradBias` are given, the affine gradients `[c]`: `sum(g * (x - mean)) / std` and
    /// `sum(g)`, summed per plane and then over images in order.
    ///
    /// The fused ReLU's mask comes from the input: `x * scale + shift`, computed as the forward
    /// computes it, is positive exactly where the forward's output is, so the op keeps only
    /// its input for backward and not its output too.
    ///
    /// - Parameters:
    ///   - coefficients: the forward's `[4, c]`.
    ///   - scratch: `[2, n * c]`, overwritten.
    func inferenceBackward(
        gradOut: UnsafePointer<Float>, input: UnsafePointer<Float>,
        coefficients: UnsafePointer<Float>, gradInput: UnsafeMutablePointer<Float>?,
        gradWeight: UnsafeMutablePointer<Float>?, gradBias: UnsafeMutablePointer<Float>?,
        scratch: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int, relu: Bool)

    /// Training forward, first pass: the sum of each plane in double precision, kept as a
    /// float pair: `sums[i]` the value, `remainders[i]` its rounding remainder (`[n * c]` each).
    func planeSums(
        input: UnsafePointer<Float>, sums: UnsafeMutablePointer<Float>, remainders: UnsafeMutablePointer<Float>,
        n: Int, c: Int, hw: Int)

    /// Training forward, second pass: the sum of squared deviations from the channel's
    /// `mean` (`[c]`) of each plane, into `deviations` (`[n * c]`).
    func planeSquaredDeviations(
        input: UnsafePointer<Float>, mean: UnsafePointer<Float>, deviations: UnsafeMutablePointer<Float>,
        n: Int, c: Int, hw: Int)

    /// Training forward, last pass: `xhat = (x - mean) / std` and `y = xhat * weight + bias`,
    /// then, when `relu`, `y < 0 ? 0 : y` (``Tensor/relu()``'s rule).
    ///
    /// - Parameter coefficients: `[3, c]`: `1/std`, weight, bias.
    func trainingNormalize(
        input: UnsafePointer<Float>, mean: UnsafePointer<Float>, coefficients: UnsafePointer<Float>,
        normalized: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int, relu: Bool)
    /// The training forward's `xhat` again from its input: the same bits as
    /// ``trainingNormalize(input:mean:coefficients:normalized:output:n:c:hw:relu:)`` wrote
    /// (selective recomputation, when the input is itself recomputed).
    ///
    /// - Parameters:
    ///   - mean: the forward's `[c]` batch mean.
    ///   - coefficients: the forward's `[3, c]` (only `1/std` is read).
    func trainingNormalized(
        input: UnsafePointer<Float>, mean: UnsafePointer<Float>, coefficients: UnsafePointer<Float>,
        normalized: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int)
    /// The training forward's output again from its `xhat`: the same bits as
    /// ``trainingNormalize(input:mean:coefficients:normalized:output:n:c:hw:relu:)`` wrote
    /// (selective recomputation, ``SavedActivation``).
    ///
    /// - Parameter coefficients: the forward's `[3, c]`.
    func trainingOutput(
        normalized: UnsafePointer<Float>, coefficients: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
        n: Int, c: Int, hw: Int, relu: Bool)
    /// The fused ReLU's backward in training mode: `gradOut`, zero where the forward's output
    /// was not positive (`xhat * weight + bias <= 0`, the forward's arithmetic; NaN passes, as
    /// in ``Tensor/relu()``), into `gradMasked`.
    ///
    /// - Parameter coefficients: the forward's `[3, c]`.
    func trainingReluGradient(
        gradOut: UnsafePointer<Float>, normalized: UnsafePointer<Float>, coefficients: UnsafePointer<Float>,
        gradMasked: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int)

    /// Training backward, first pass: this process's `sum(g)` and `sum(g * xhat)` per
    /// channel (`[c]` each), summed per plane and then over images in order.
    ///
    /// - Parameter scratch: `[2, n * c]`, overwritten.
    func trainingGradientSums(
        gradOut: UnsafePointer<Float>, normalized: UnsafePointer<Float>, sumG: UnsafeMutablePointer<Float>,
        sumGX: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int)

    /// Training backward, last pass: the input gradient
    /// `weight / std / m * (m * g - sumG - xhat * sumGX)`, `m` the values per channel over
    /// the whole batch.
    ///
    /// - Parameter coefficients: the forward's `[3, c]`.
    func trainingInputGradient(
        gradOut: UnsafePointer<Float>, normalized: UnsafePointer<Float>, coefficients: UnsafePointer<Float>,
        sumG: UnsafePointer<Float>, sumGX: UnsafePointer<Float>, count m: Float,
        gradInput: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int)
}
