/// The seam between the convolution op and the code that computes it.
///
/// `Tensor.conv2d` checks shapes, allocates the output and records autograd; a provider
/// only computes. The CPU kernels (`Kernels/CPU/`) are the one provider today; another
/// (Winograd, oneDNN, a GPU) implements this protocol and is chosen in ``KernelProviders``,
/// without a change to the op.
///
/// Every tensor is contiguous row-major `Float32`: inputs and gradients `[N, C, H, W]`,
/// weights `[Cout, Cin/groups, kh, kw]`, bias `[Cout]`. Shapes were checked by the op.
protocol ConvolutionKernels: Sendable {
    /// Writes `conv(input, weight) + bias` into `out`, `[N, Cout, Ho, Wo]`, freshly
    /// allocated, not shared and not initialised.
    func forward(input: Tensor, weight: Tensor, bias: Tensor?, geometry: Conv2DGeometry, groups: Int, into out: Tensor)

    /// The gradient with respect to the input, `[N, Cin, H, W]`, from the output gradient
    /// `gradOut` `[N, Cout, Ho, Wo]`.
    func backwardData(input: Tensor, weight: Tensor, gradOut: Tensor, geometry: Conv2DGeometry, groups: Int) -> Tensor

    /// The gradient with respect to the weight, `[Cout, Cin/groups, kh, kw]`.
    func backwardWeights(input: Tensor, weight: Tensor, gradOut: Tensor, geometry: Conv2DGeometry, groups: Int) -> Tensor

    /// The gradient with respect to the bias, `[Cout]`: `gradOut` summed over `N`, `Ho`, `Wo`.
    func backwardBias(gradOut: Tensor) -> Tensor
}

/// The kernel providers the ops call.
enum KernelProviders {
    /// The convolution kernels `Tensor.conv2d` uses.
    static let convolution: any ConvolutionKernels = CPUConvolutionKernels()
    /// The parameter updates of the optimizers and gradient clipping.
    static let optimizer: any OptimizerKernels = CPUOptimizerKernels()
    /// The batch-norm kernels `Tensor.batchNorm2d` and `Tensor.batchNorm2dTraining` use.
    static let normalization: any NormalizationKernels = CPUNormalizationKernels()
    /// The pooling kernels `Tensor.maxPool2d` and `Tensor.avgPool2d` use.
    static let pooling: any PoolingKernels = CPUPoolingKernels()
}
