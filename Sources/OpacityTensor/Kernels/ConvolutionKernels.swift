/// The seam between the convolution op and the code that computes it.
///
/// `Tensor.conv2d` checks shapes, allocates the output and records autograd; a provider
/// only computes. Providers: the CPU kernels (`Kernels/CPU/`) and oneDNN (`Kernels/DNNL/`);
/// ``SelectingConvolutionKernels`` chooses between them per shape (see
/// ``ConvolutionKernelChoice``) and is what ``KernelProviders`` hands the op.
///
/// Every tensor is contiguous row-major `Float32`: inputs and gradients `[N, C, H, W]`,
/// weights `[Cout, Cin/groups, kh, kw]`, bias `[Cout]`. Shapes were checked by the op.
protocol ConvolutionKernels: Sendable {
    /// Writes `conv(input, weight) + bias` into `out`, `[N, Cout, Ho, Wo]`, freshly
    /// allocated, not shared and not initialised.
    func forward(input: Tensor, weight: Tensor, bias: Tensor?, geometry: Conv2DGeometry, groups: Int, into out: Tensor)

    /// Writes `conv(input, weight) + bias` over `input`'s own storage, which nothing else
    /// holds, and returns true, where a kernel of this provider can for this shape (the output
    /// has the input's shape); else returns false and changes nothing.
    func forwardInPlace(input: Tensor, weight: Tensor, bias: Tensor?, geometry: Conv2DGeometry, groups: Int) -> Bool

    /// The gradient with respect to the input, `[N, Cin, H, W]` (`inputShape`), from the output
    /// gradient `gradOut` `[N, Cout, Ho, Wo]`. It does not read the input's values, so the
    /// convolution's backward can release the input (when it was written again for backward)
    /// before this allocates the gradient.
    func backwardData(inputShape: [Int], weight: Tensor, gradOut: Tensor, geometry: Conv2DGeometry, groups: Int) -> Tensor

    /// The gradient with respect to the weight, `[Cout, Cin/groups, kh, kw]`.
    func backwardWeights(input: Tensor, weight: Tensor, gradOut: Tensor, geometry: Conv2DGeometry, groups: Int) -> Tensor

    /// The gradient with respect to the bias, `[Cout]`: `gradOut` summed over `N`, `Ho`, `Wo`.
    func backwardBias(gradOut: Tensor) -> Tensor
}

extension ConvolutionKernels {
    /// No kernel of this provider writes in place.
    func forwardInPlace(input: Tensor, weight: Tensor, bias: Tensor?, geometry: Conv2DGeometry, groups: Int) -> Bool { false }
}

/// The kernel providers the ops call.
enum KernelProviders {
    /// The convolution kernels `Tensor.conv2d` uses: the per-shape choice between the CPU
    /// kernels and oneDNN (``ConvolutionKernelChoice``; the CPU kernels unless asked).
    static let convolution: any ConvolutionKernels = SelectingConvolutionKernels()
    /// The parameter updates of the optimizers and gradient clipping.
    static let optimizer: any OptimizerKernels = CPUOptimizerKernels()
    /// The batch-norm kernels `Tensor.batchNorm2d` and `Tensor.batchNorm2dTraining` use.
    static let normalization: any NormalizationKernels = CPUNormalizationKernels()
    /// The pooling kernels `Tensor.maxPool2d` and `Tensor.avgPool2d` use.
    static let pooling: any PoolingKernels = CPUPoolingKernels()
}
