import Foundation

/// The geometry of a 2-D convolution or pooling window.
public struct Conv2DGeometry: Equatable, Sendable {
    /// `(kh, kw)`.
    public var kernel: (Int, Int)
    /// `(vertical, horizontal)`.
    public var stride: (Int, Int)
    /// `(vertical, horizontal)` zeros on each side.
    public var padding: (Int, Int)
    /// `(vertical, horizontal)` spacing of the taps.
    public var dilation: (Int, Int)

    /// A window geometry.
    public init(kernel: (Int, Int), stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1)) {
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
    }

    /// Equal when all four pairs are equal.
    public static func == (a: Self, b: Self) -> Bool {
        a.kernel == b.kernel && a.stride == b.stride && a.padding == b.padding && a.dilation == b.dilation
    }

    /// Output size along one axis.
    @inlinable
    static func outSize(_ n: Int, k: Int, s: Int, p: Int, d: Int) -> Int { (n + 2 * p - d * (k - 1) - 1) / s + 1 }

    func output(h: Int, w: Int) -> (Int, Int) {
        (Self.outSize(h, k: kernel.0, s: stride.0, p: padding.0, d: dilation.0),
         Self.outSize(w, k: kernel.1, s: stride.1, p: padding.1, d: dilation.1))
    }
}

// MARK: - conv2d

extension Tensor {
    /// 2-D convolution (cross-correlation, as PyTorch's `conv2d`).
    ///
    /// - Parameters:
    ///   - weight: `[Cout, Cin/groups, kh, kw]`.
    ///   - bias: `[Cout]` or `nil`.
    ///   - stride, padding, dilation: `(vertical, horizontal)`.
    ///   - groups: channel groups; `groups == Cin` with one input channel per group is a
    ///     depthwise convolution (any channel multiplier `Cout / Cin`) and runs a direct kernel.
    /// - Returns: `[N, Cout, Ho, Wo]` with `Ho = (H + 2p - d(k-1) - 1) / s + 1`.
    ///
    /// The arithmetic is done by ``KernelProviders/convolution`` (the CPU kernels in
    /// `Kernels/CPU/`): dense and grouped convolutions reach SGEMM: a 1x1 stride-1 convolution multiplies
    /// the input directly, others unfold tiles of output rows (im2col) small enough to
    /// stay in cache. The input gradient of a stride-1 convolution is itself a convolution
    /// (of the output gradient with the flipped, transposed kernel) and takes the same path.
    public func conv2d(_ weight: Tensor, bias: Tensor? = nil, stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
                       dilation: (Int, Int) = (1, 1), groups: Int = 1) -> Tensor {
        shapeCheck(rank == 4 && weight.rank == 4, "conv2d", "input \(describe(shape)) and weight \(describe(weight.shape)) must both be rank 4")
        let (n, cin, h, w) = (shape[0], shape[1], shape[2], shape[3])
        let cout = weight.shape[0]
        shapeCheck(groups > 0 && cin % groups == 0 && cout % groups == 0 && weight.shape[1] == cin / groups, "conv2d",
                   "input \(describe(shape)) with \(groups) groups does not fit weight \(describe(weight.shape))")
        shapeCheck(stride.0 > 0 && stride.1 > 0 && dilation.0 > 0 && dilation.1 > 0 && padding.0 >= 0 && padding.1 >= 0, "conv2d",
                   "stride \(stride) and dilation \(dilation) must be positive, padding \(padding) not negative")
        if let b = bias { shapeCheck(b.shape == [cout], "conv2d", "bias \(describe(b.shape)) for \(cout) output channels") }
        let geo = Conv2DGeometry(kernel: (weight.shape[2], weight.shape[3]), stride: stride, padding: padding, dilation: dilation)
        let (ho, wo) = geo.output(h: h, w: w)
        shapeCheck(ho > 0 && wo > 0, "conv2d", "input \(describe(shape)) is too small for weight \(describe(weight.shape)) with padding \(padding) and dilation \(dilation)")
        let out = Tensor(uninitializedShape: [n, cout, ho, wo])
        let kernels = KernelProviders.convolution
        kernels.forward(input: self, weight: weight, bias: bias, geometry: geo, groups: groups, into: out)
        // The input as backward needs it (the weight gradient reads it): kept, or recomputed
        // from its recipe when it is a batch norm's output (``SavedActivation``).
        let x = SavedActivation(self), wt = weight.detached()
        let needX = node != nil, needW = weight.node != nil, needB = bias?.node != nil
        var inputs = [self, weight]
        if let b = bias { inputs.append(b) }
        OpTrace.note("conv2d", inputs, out, ["stride": .ints([stride.0, stride.1]), "padding": .ints([padding.0, padding.1]), "dilation": .ints([dilation.0, dilation.1]), "groups": .int(groups)])
        let result = Autograd.record("conv2d", out, inputs: inputs) { g in
            let gb = needB ? kernels.backwardBias(gradOut: g) : nil
            guard needW || needX else { return bias == nil ? [nil, nil] : [nil, nil, gb] }
            // The weight gradient first: when the input was written again for it (from a recipe
            // or its packed form), that map is released before the input gradient, which does
            // not read it, is allocated (one map less at the step's peak, a RetinaNet head's
            // P2 convolutions).
            let gw = needW ? kernels.backwardWeights(input: x.value(), weight: wt, gradOut: g, geometry: geo, groups: groups) : nil
            let gx = needX ? kernels.backwardData(inputShape: x.shape, weight: wt, gradOut: g, geometry: geo, groups: groups) : nil
            return bias == nil ? [gx, gw] : [gx, gw, gb]
        }
        if result.node != nil, needW, Autograd.selectiveRecomputation, Autograd.convolutionRecomputation, groups == 1,
           geo.kernel == (1, 1), geo.padding == (0, 0), cout >= 2 * cin {
            // A 1x1 convolution that at least doubles the channels: the node keeps its input and
            // weight anyway, so a norm that saves the output for its backward can keep this
            // recipe instead, the same kernel on the same values (``Autograd/convolutionRecomputation``).
            let bv = bias?.detached()
            out.storage.regeneration = { dst in
                let xv = x.value()
                kernels.forward(input: xv, weight: wt, bias: bv, geometry: geo, groups: groups, into: dst)
            }
        }
        return result
    }
}

