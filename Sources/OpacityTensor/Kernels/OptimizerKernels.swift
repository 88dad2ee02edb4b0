/// The seam between the optimizers and gradient clipping (Optimizers.swift) and the code that
/// updates parameters.
///
/// The optimizers keep the state and the hyper-parameters; a provider only computes, in
/// place, on contiguous `Float32` buffers of `count` elements. The CPU kernels
/// (`Kernels/CPU/CPUOptimizer.swift`) are the one provider today.
protocol OptimizerKernels: Sendable {
    /// One Adam update (PyTorch's `torch.optim.Adam`, L2 `weightDecay` added to the gradient):
    /// `g' = g + wd * p`, `m = b1 * m + (1 - b1) * g'`, `v = b2 * v + (1 - b2) * g'^2`,
    /// `p -= stepSize * m / (sqrt(v) / sqrt(bc2) + eps)`; `p`, `m`, `v` in place.
    func adam(
        parameter p: UnsafeMutablePointer<Float>, gradient g: UnsafePointer<Float>, m: UnsafeMutablePointer<Float>,
        v: UnsafeMutablePointer<Float>, count: Int, step: AdamStep)

    /// The sum of squares of `x`, in double precision.
    func sumOfSquares(_ x: UnsafePointer<Float>, count: Int) -> Double

    /// `x *= factor`, in place.
    func scale(_ x: UnsafeMutablePointer<Float>, count: Int, by factor: Float)
}

/// The scalars of one Adam update of one parameter.
struct AdamStep {
    /// `beta1`, `beta2`, `eps`, `weightDecay`.
    var beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    /// `learningRate / (1 - beta1^t)`.
    var stepSize: Float
    /// `sqrt(1 - beta2^t)`.
    var bc2Sqrt: Float
}
