import Foundation

/// A module with one input and one output.
public protocol Layer: Module {
    /// Applies the layer.
    func callAsFunction(_ x: Tensor) -> Tensor
}

/// A layer that can write its output over its input's storage at inference, when nothing
/// else holds that input: ``Sequential`` hands each such layer the previous layer's output
/// (which it alone holds) while no graph is recorded.
public protocol InPlaceLayer: Layer {
    /// `self(x)`, the same values bit for bit, written over `x`'s storage where the layer's
    /// kernels can, else into a new tensor.
    func inPlace(_ x: consuming Tensor) -> Tensor
}

/// A 2-D convolution layer; parameters `weight` `[out, in/groups, kh, kw]` and `bias` `[out]`.
public final class Conv2d: Module, InPlaceLayer {
    /// `[out, in / groups, kh, kw]`.
    public let weight: Parameter
    /// `[out]`, or `nil` for a convolution without bias.
    public let bias: Parameter?
    /// `(vertical, horizontal)` step between windows.
    public let stride: (Int, Int)
    /// `(vertical, horizontal)` zero padding on each side.
    public let padding: (Int, Int)
    /// `(vertical, horizontal)` spacing of the kernel taps.
    public let dilation: (Int, Int)
    /// Channel groups (`groups == in` with one input channel per group: depthwise).
    public let groups: Int

    /// - Parameters:
    ///   - kernel: square kernel size, or use ``init(_:_:kernel2:stride:padding:dilation:groups:bias:initializer:)``.
    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0,
                dilation: Int = 1, groups: Int = 1, bias: Bool = true, initializer: Initializer = .pytorchDefault) {
        precondition(inChannels % groups == 0 && outChannels % groups == 0,
                     "Conv2d: \(inChannels) -> \(outChannels) channels do not split into \(groups) groups")
        let wshape = [outChannels, inChannels / groups, kernel, kernel]
        self.weight = Parameter(initializer.make(wshape))
        self.bias = bias ? Parameter(Initializer.uniform(-1 / Float(wshape[1...].reduce(1, *)).squareRoot(),
                                                         1 / Float(wshape[1...].reduce(1, *)).squareRoot()).make([outChannels])) : nil
        self.stride = (stride, stride)
        self.padding = (padding, padding)
        self.dilation = (dilation, dilation)
        self.groups = groups
    }

    /// A convolution with a rectangular kernel and per-axis stride and padding.
    public init(_ inChannels: Int, _ outChannels: Int, kernel2: (Int, Int), stride: (Int, Int) = (1, 1),
                padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1), groups: Int = 1, bias: Bool = true,
                initializer: Initializer = .pytorchDefault) {
        precondition(groups > 0 && inChannels % groups == 0 && outChannels % groups == 0,
                     "Conv2d: \(inChannels) -> \(outChannels) channels do not split into \(groups) groups")
        let wshape = [outChannels, inChannels / groups, kernel2.0, kernel2.1]
        self.weight = Parameter(initializer.make(wshape))
        let b = 1 / Float(wshape[1...].reduce(1, *)).squareRoot()
        self.bias = bias ? Parameter(Initializer.uniform(-b, b).make([outChannels])) : nil
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
    }

    /// Input channels.
    public var inChannels: Int { weight.shape[1] * groups }
    /// Output channels.
    public var outChannels: Int { weight.shape[0] }

    /// `[N, in, H, W]` -> `[N, out, Ho, Wo]`.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        x.conv2d(weight.tensor, bias: bias?.tensor, stride: stride, padding: padding, dilation: dilation, groups: groups)
    }

    /// `self(x)`, written over `x`'s storage where that is possible (inference, `x` held by
    /// nothing else, a kernel that can: ``Tensor/conv2dInPlace(_:bias:stride:padding:dilation:groups:)``);
    /// the same values either way. `[N, in, H, W]` -> `[N, out, Ho, Wo]`.
    public func inPlace(_ x: consuming Tensor) -> Tensor {
        x.conv2dInPlace(weight.tensor, bias: bias?.tensor, stride: stride, padding: padding, dilation: dilation, groups: groups)
    }

    /// `self(x) + above.upsampleNearest2x()`, a feature pyramid's top-down merge, with `above`
    /// `[N, out, Ho / 2, Wo / 2]` (``Tensor/conv2d(_:bias:stride:padding:dilation:groups:addingUpsampled2x:)``:
    /// no upsampled map, and in training a recipe instead of the merged map).
    public func callAsFunction(_ x: Tensor, addingUpsampled2x above: Tensor) -> Tensor {
        x.conv2d(
            weight.tensor, bias: bias?.tensor, stride: stride, padding: padding, dilation: dilation, groups: groups,
            addingUpsampled2x: above)
    }
}

/// Batch normalisation over channels of `[N, C, H, W]`.
///
/// Three behaviours: training (batch statistics, running statistics updated with
/// `momentum`), evaluation (running statistics), and *frozen* (running statistics fixed
/// even in training mode while `weight` and `bias` still train, as the paper trains).
public final class BatchNorm2d: Module, Layer {
    /// `[C]` scale (gamma), initially ones.
    public let weight: Parameter
    /// `[C]` shift (beta), initially zeros.
    public let bias: Parameter
    /// `[C]` running mean, saved as `running_mean`.
    @Named("running_mean") public var runningMean = Buffer(.zeros([1]))
    /// `[C]` running (unbiased) variance, saved as `running_var`.
    @Named("running_var") public var runningVar = Buffer(.ones([1]))
    /// Added to the variance before the square root.
    public let eps: Float
    /// Weight of the current batch in the running statistics (PyTorch's convention).
    public let momentum: Float
    /// Keep running statistics fixed in training mode too.
    public var frozen = false
    /// In data-parallel training, sums the batch statistics over the processes so that they
    /// are the whole batch's (synchronised batch norm); `nil` in a single process.
    public var synchronizer: (any BatchStatisticsReducer)?

    /// Batch norm over `channels` channels, in training mode, not frozen.
    public init(_ channels: Int, eps: Float = 1e-5, momentum: Float = 0.1) {
        weight = Parameter(.ones([channels]))
        bias = Parameter(.zeros([channels]))
        self.eps = eps
        self.momentum = momentum
        super.init()
        runningMean = Buffer(.zeros([channels]))
        runningVar = Buffer(.ones([channels]))
    }

    /// Normalises `x` (`[N, C, H, W]` or `[N, C]`).
    public func callAsFunction(_ x: Tensor) -> Tensor { callAsFunction(x, relu: false) }

    /// Normalises `x` and, when `relu` is set, applies ReLU in the same pass: `bn(x, relu: true)`
    /// equals `bn(x).relu()` in every mode, saves a pass over the activation in each direction,
    /// and keeps no map for the ReLU's backward (the mask comes from what the norm keeps).
    public func callAsFunction(_ x: Tensor, relu: Bool) -> Tensor {
        if isTraining && !frozen {
            return trainingForward(x, relu: relu)
        }
        return x.batchNorm2d(weight: weight.tensor, bias: bias.tensor, mean: runningMean.value, variance: runningVar.value,
                             eps: eps, relu: relu)
    }

    /// Batch statistics; moves the running statistics (unbiased variance, as PyTorch).
    ///
    /// Inside a checkpoint segment (``Autograd/checkpoint(_:_:)``) the statistics move in the
    /// first run only (the recomputation computes the same batch statistics from the same
    /// input); with a ``synchronizer`` the layer refuses to run in a segment, since the
    /// recomputation would exchange the statistics between processes a second time.
    private func trainingForward(_ x: Tensor, relu: Bool) -> Tensor {
        if synchronizer != nil && Autograd.segment != nil {
            preconditionFailure("BatchNorm2d: synchronised batch norm (data-parallel training, batch norm not frozen) cannot run in a checkpoint segment; freeze batch norm or turn gradient checkpointing off (grad_checkpointing=none)")
        }
        let (y, mean, variance, count) = x.batchNorm2dTraining(
            weight: weight.tensor, bias: bias.tensor, eps: eps, across: synchronizer, relu: relu)
        if Autograd.isRecomputing { return y }
        let n = Float(count)
        let unbias = n > 1 ? n / (n - 1) : 1
        runningMean.value.withUnsafeMutableBufferPointer { m in
            for i in 0..<m.count { m[i] = (1 - momentum) * m[i] + momentum * mean[i] }
        }
        runningVar.value.withUnsafeMutableBufferPointer { v in
            for i in 0..<v.count { v[i] = (1 - momentum) * v[i] + momentum * variance[i] * unbias }
        }
        return y
    }
}

/// A fully connected layer; `weight` `[out, in]`, `bias` `[out]`.
public final class Linear: Module, Layer {
    /// `[out, in]`.
    public let weight: Parameter
    /// `[out]`, or `nil`.
    public let bias: Parameter?

    /// A layer from `inFeatures` to `outFeatures`; the bias is uniform in `+-1/sqrt(in)` as in PyTorch.
    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, initializer: Initializer = .pytorchDefault) {
        weight = Parameter(initializer.make([outFeatures, inFeatures]))
        let b = 1 / Float(max(1, inFeatures)).squareRoot()
        self.bias = bias ? Parameter(Initializer.uniform(-b, b).make([outFeatures])) : nil
    }

    /// `[N, in]` -> `[N, out]`.
    public func callAsFunction(_ x: Tensor) -> Tensor { x.linear(weight: weight.tensor, bias: bias?.tensor) }
}

/// Layers applied in order; children are named `0`, `1`, ... as in PyTorch's `Sequential`.
public final class Sequential: Module, Layer {
    /// The layers, applied first to last.
    public let layers: [any Layer]
    /// Layers applied in order.
    public init(_ layers: [any Layer]) { self.layers = layers }
    /// Layers applied in order.
    public convenience init(_ layers: any Layer...) { self.init(layers) }
    /// The layers, named `0`, `1`, ...
    override public func namedChildren() -> [(String, Module)] { layers.enumerated().map { ("\($0.offset)", $0.element) } }
    /// Applies each layer to the previous one's output. A ``BatchNorm2d`` followed by a
    /// ``ReLU`` runs as the norm with its fused ReLU (`bn(x, relu: true)`, the same values and
    /// gradients): one pass instead of two, and in training no map kept for the ReLU (a
    /// convolution after it keeps the norm's recipe, ``SavedActivation``). Xception's blocks
    /// are such lists.
    ///
    /// While no graph is recorded, an ``InPlaceLayer`` after the first layer gets the previous
    /// output to write over (``InPlaceLayer/inPlace(_:)``): the same values. Measured (xception
    /// RetinaNet, 512 px, batch 1): a separable convolution's depthwise half no longer holds a
    /// second map beside its input, 32 MiB at 128 channels and 256x256.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        var y = x
        var i = 0
        while i < layers.count {
            if i + 1 < layers.count, let norm = layers[i] as? BatchNorm2d, layers[i + 1] is ReLU {
                y = norm(y, relu: true)
                i += 2
            } else if i > 0, !Autograd.isRecording, let layer = layers[i] as? any InPlaceLayer {
                y = layer.inPlace(consume y)
                i += 1
            } else {
                y = layers[i](y)
                i += 1
            }
        }
        return y
    }
}

/// `max(x, 0)`.
public final class ReLU: Module, Layer {
    override public init() {}
    /// `max(x, 0)`.
    public func callAsFunction(_ x: Tensor) -> Tensor { x.relu() }
}

/// Passes its input through.
public final class Identity: Module, Layer {
    override public init() {}
    /// `x`.
    public func callAsFunction(_ x: Tensor) -> Tensor { x }
}

/// Max pooling as a layer.
public final class MaxPool2d: Module, Layer {
    /// Square window geometry; `ceilMode` is PyTorch's `ceil_mode`.
    public let kernel: Int, stride: Int, padding: Int, ceilMode: Bool
    /// Max pooling; the stride defaults to the kernel size.
    public init(kernel: Int, stride: Int? = nil, padding: Int = 0, ceilMode: Bool = false) {
        self.kernel = kernel
        self.stride = stride ?? kernel
        self.padding = padding
        self.ceilMode = ceilMode
    }
    /// Applies the layer to `[N, C, H, W]`.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        x.maxPool2d(kernel: (kernel, kernel), stride: (stride, stride), padding: (padding, padding), ceilMode: ceilMode)
    }
}

/// Average pooling as a layer.
public final class AvgPool2d: Module, Layer {
    /// Square window geometry; `ceilMode` and `countIncludePad` as in PyTorch.
    public let kernel: Int, stride: Int, padding: Int, ceilMode: Bool, countIncludePad: Bool
    /// Average pooling; the stride defaults to the kernel size.
    public init(kernel: Int, stride: Int? = nil, padding: Int = 0, ceilMode: Bool = false, countIncludePad: Bool = true) {
        self.kernel = kernel
        self.stride = stride ?? kernel
        self.padding = padding
        self.ceilMode = ceilMode
        self.countIncludePad = countIncludePad
    }
    /// Applies the layer to `[N, C, H, W]`.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        x.avgPool2d(kernel: (kernel, kernel), stride: (stride, stride), padding: (padding, padding), ceilMode: ceilMode,
                    countIncludePad: countIncludePad)
    }
}

/// Dropout that is active only in training mode; its mask generator is seeded.
public final class Dropout: Module, Layer {
    /// The probability of zeroing an element.
    public let p: Float
    private var rng: RandomGenerator

    /// - Parameter seed: the mask stream; by default drawn from the initialisation generator
    ///   so a model built under ``Initializer/withSeed(_:_:)`` repeats its masks too.
    public init(_ p: Float, seed: UInt64? = nil) {
        precondition(p >= 0 && p < 1, "Dropout: p must be in [0, 1), got \(p)")
        self.p = p
        self.rng = RandomGenerator(seed: seed ?? Initializer.nextSeed())
    }

    /// Restarts the mask stream (e.g. per epoch, for resumable training).
    public func reseed(_ seed: UInt64) { rng = RandomGenerator(seed: seed) }

    /// In data-parallel training: the input holds samples `offset..<offset + N` of a batch of
    /// `total`. The layer then draws the whole batch's mask stream and keeps its own part, so
    /// each sample gets the mask it gets in one process, whatever the number of processes.
    public var batchShard: (offset: Int, total: Int)?

    /// Applies the layer to `[N, C, H, W]`.
    ///
    /// Inside a checkpoint segment (``Autograd/checkpoint(_:_:)``) the recomputation draws
    /// the same mask as the first run and leaves the stream where the first run left it.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        guard isTraining, p > 0 else { return x }
        var stream = Autograd.checkpointReplayed(rng)
        defer { if !Autograd.isRecomputing { rng = stream } }
        guard let shard = batchShard, x.rank >= 1, x.shape[0] > 0 else { return x.dropout(p, using: &stream) }
        let per = x.count / x.shape[0]
        for _ in 0..<(shard.offset * per) { _ = stream.nextUniform() }
        let y = x.dropout(p, using: &stream)
        for _ in 0..<(max(0, shard.total - shard.offset - x.shape[0]) * per) { _ = stream.nextUniform() }
        return y
    }
}

extension Module {
    /// Freezes every batch-norm layer in the tree: running statistics stay fixed in
    /// training mode while the affine parameters still train (the paper's `freeze_bn`).
    public func freezeBatchNorm(_ frozen: Bool = true) {
        for (_, m) in namedModules() { (m as? BatchNorm2d)?.frozen = frozen }
    }
}
