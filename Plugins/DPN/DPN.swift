import OpacityCore
import OpacityTensor

/// DPN-92 (Dual Path Network) with timm's `dpn92` architecture and parameter names
/// (`features.conv1_1.conv`, `features.conv2_1.c1x1_w_s1.bn`, ..., `features.conv5_bn_ac.bn`,
/// `classifier`), which are also Cadene's.
///
/// Each dual-path block carries a residual path (summed) and a densely connected path
/// (concatenated) as one tensor, residual channels first. C2..C4 are the outputs of the
/// last block of stages 2..4 with both paths (336, 704 and 1552 channels at strides 4, 8 and
/// 16); C5 is the output of the final batch norm and activation `conv5_bn_ac` (2688 channels,
/// stride 32), as in the paper's encoder. timm's `dpn92`, Cadene's `dpn92` (which the paper
/// used) and the original MXNet model compute the same function.
public final class DPN: Module, Encoder {
    /// The feature maps DPN-92 produces.
    public static let spec = FeatureSpec(zip([336, 704, 1552, 2688], [4, 8, 16, 32]).map { FeatureLevel(channels: $0, stride: $1) })

    /// The stem and the dual-path blocks (`features.conv1_1` ... `features.conv5_bn_ac`).
    @Named("features") public private(set) var body: DPNFeatures
    /// The ImageNet classifier, a 1x1 convolution, present only when built with `classes > 0`.
    public let classifier: Conv2d?
    /// C2..C5: 336, 704, 1552, 2688 channels at strides 4, 8, 16, 32.
    public let featureSpec = DPN.spec

    /// DPN-92.
    /// - Parameters:
    ///   - inChannels: input channels (1 for X-rays, 3 for ImageNet images).
    ///   - classes: size of the ImageNet classifier; 0 leaves it out.
    public init(inChannels: Int = 1, classes: Int = 0) {
        let body = DPNFeatures(inChannels: inChannels, initFeatures: 64, kR: 96, groups: 32,
                               blocks: [3, 4, 20, 3], increments: [16, 32, 24, 128])
        classifier = classes > 0 ? Conv2d(body.outChannels, classes, kernel: 1) : nil
        super.init()
        self.body = body
    }

    /// C2..C5 for `[N, inChannels, H, W]` images: `[N, 336, H/4, W/4]` ... `[N, 2688, H/32, W/32]`
    /// (sizes rounded up).
    public func features(_ images: Tensor) -> [Tensor] { body.taps(images) }

    /// ``features(_:)`` in checkpoint segments (``GradientCheckpointing``): the stem and max
    /// pool, then one segment per dual-path block (the final norm with the last block).
    /// Backward keeps the 30 block outputs and recomputes one block at a time.
    public func checkpointedFeatures(_ images: Tensor) -> [Tensor] { body.taps(images, checkpointed: true) }

    /// ImageNet logits `[N, classes]` from C5 (global average pool, 1x1 `classifier`).
    public func logits(fromDeepest c5: Tensor) -> Tensor {
        guard let classifier else { preconditionFailure("DPN.logits: built without a classifier (classes: 0)") }
        return classifier(c5.globalAvgPool2d()).flattened()
    }

    /// ImageNet logits `[N, classes]` for `[N, inChannels, H, W]` images (only with a classifier).
    public func classify(_ images: Tensor) -> Tensor { logits(fromDeepest: features(images)[3]) }
}

/// DPN's flat `features` sequence: `conv1_1` (7x7 stride-2 convolution, batch norm, ReLU), a
/// 3x3 stride-2 max pool, the blocks `conv2_1` ... `conv5_3`, and `conv5_bn_ac`.
public final class DPNFeatures: Module {
    /// The stem (`conv1_1.conv`, `conv1_1.bn`).
    @Named("conv1_1") public private(set) var stem: ConvNormAct
    /// Stage 2's dual-path blocks (`conv2_1`, `conv2_2`, ...).
    @Named(each: { "conv2_\($0 + 1)" }) public private(set) var stage2: [DualPathBlock]
    /// Stage 3's dual-path blocks (`conv3_1`, ...).
    @Named(each: { "conv3_\($0 + 1)" }) public private(set) var stage3: [DualPathBlock]
    /// Stage 4's dual-path blocks (`conv4_1`, ...).
    @Named(each: { "conv4_\($0 + 1)" }) public private(set) var stage4: [DualPathBlock]
    /// Stage 5's dual-path blocks (`conv5_1`, ...).
    @Named(each: { "conv5_\($0 + 1)" }) public private(set) var stage5: [DualPathBlock]
    /// The final batch norm and activation (`conv5_bn_ac.bn`).
    @Named("conv5_bn_ac") public private(set) var finalNorm: ConvNormAct
    /// Channels of the last map.
    public let outChannels: Int

    /// The dual-path blocks by stage (stage 2 first).
    public var stages: [[DualPathBlock]] { [stage2, stage3, stage4, stage5] }

    /// - Parameters:
    ///   - inChannels: input channels.
    ///   - initFeatures: stem channels (64 for DPN-92).
    ///   - kR: bottleneck width per 64 residual channels (96).
    ///   - groups: groups of the 3x3 convolutions (32).
    ///   - blocks: blocks per stage, four stages (3, 4, 20, 3).
    ///   - increments: dense channels each block adds, per stage (16, 32, 24, 128).
    public init(inChannels: Int, initFeatures: Int, kR: Int, groups: Int, blocks: [Int], increments: [Int]) {
        precondition(blocks.count == 4 && increments.count == 4 && blocks.allSatisfy { $0 > 0 },
                     "DPNFeatures: four stages of at least one block, got blocks \(blocks) and increments \(increments)")
        let stem = ConvNormAct(inChannels, initFeatures, kernel: 7, stride: 2, padding: 3, eps: 1e-3)
        var inChs = initFeatures
        var s: [[DualPathBlock]] = []
        for (i, (depth, inc)) in zip(blocks, increments).enumerated() {
            let bw = (64 << i) * 4, r = kR * (64 << i) / 64
            var stage = [DualPathBlock(inChs, r, r, bw, inc: inc, groups: groups, kind: i == 0 ? .projection : .down)]
            inChs = bw + 3 * inc
            for _ in 1..<depth {
                stage.append(DualPathBlock(inChs, r, r, bw, inc: inc, groups: groups, kind: .normal))
                inChs += inc
            }
            s.append(stage)
        }
        outChannels = inChs
        super.init()
        self.stem = stem
        (stage2, stage3, stage4, stage5) = (s[0], s[1], s[2], s[3])
        finalNorm = ConvNormAct.normAct(inChs, eps: 1e-3)
    }

    /// The output of each stage's last block and of `conv5_bn_ac`; with `checkpointed`, in
    /// checkpoint segments of one block each (``Autograd/checkpoint(_:_:)``), the stem and
    /// max pool as one, the final norm with the last block.
    func taps(_ images: Tensor, checkpointed: Bool = false) -> [Tensor] {
        let stem = self.stem
        let run: (Tensor, @escaping (Tensor) -> Tensor) -> Tensor = { x, body in
            checkpointed ? Autograd.checkpoint(x, body) : body(x)
        }
        var x = run(images) { stem($0).maxPool2d(kernel: (3, 3), stride: (2, 2), padding: (1, 1)) }
        var out: [Tensor] = []
        let finalNorm = self.finalNorm
        for (s, stage) in stages.enumerated() {
            for (i, b) in stage.enumerated() {
                let last = s == 3 && i == stage.count - 1
                // C2..C4 are raw block outputs; C5 is the final norm's, so it runs with the last block.
                x = run(x) { last ? finalNorm(b($0)) : b($0) }
            }
            out.append(x)
        }
        return out
    }
}

/// DPN's pre-activation unit, Cadene's `BnActConv2d`: batch norm (eps 0.001), ReLU, then a
/// convolution without bias (`bn`, `conv`), padded to keep the size divided by the stride
/// (rounded up).
func dpnUnit(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int, groups: Int = 1) -> ConvNormAct {
    ConvNormAct(inChannels, outChannels, kernel: kernel, stride: stride, padding: (stride - 1 + kernel - 1) / 2, groups: groups,
                eps: 1e-3, order: .normActConv)
}

/// A dual-path block: a pre-activation 1x1, grouped 3x3 (with the stride), 1x1 bottleneck
/// whose output splits into `residual` channels added to the residual path and `inc` channels
/// appended to the dense path. The first block of a stage projects its input onto both paths
/// (`c1x1_w_s1`, or `c1x1_w_s2` when it downsamples).
public final class DualPathBlock: Module, Layer {
    /// The first block of stage 2 projects; later stages' first blocks also downsample.
    public enum Kind: Sendable { case projection, down, normal }

    /// The first block's projection of its input onto both paths (`c1x1_w_s1`, stage 2).
    @Named("c1x1_w_s1") public private(set) var projection: ConvNormAct?
    /// The strided projection of a later stage's first block (`c1x1_w_s2`).
    @Named("c1x1_w_s2") public private(set) var downProjection: ConvNormAct?
    /// The 1x1 reduction (`c1x1_a`).
    @Named("c1x1_a") public private(set) var reduce: ConvNormAct
    /// The grouped 3x3 convolution, with the stride (`c3x3_b`).
    @Named("c3x3_b") public private(set) var grouped: ConvNormAct
    /// The 1x1 expansion to both paths (`c1x1_c`).
    @Named("c1x1_c") public private(set) var expand: ConvNormAct
    /// Residual-path channels.
    public let residual: Int

    /// - Parameters:
    ///   - inChannels: both paths' channels in.
    ///   - a, b: the bottleneck's 1x1 and 3x3 widths.
    ///   - residual: residual-path channels.
    ///   - inc: dense channels this block adds.
    ///   - groups: groups of the 3x3 convolution.
    ///   - kind: projection (and stride) of the input.
    public init(_ inChannels: Int, _ a: Int, _ b: Int, _ residual: Int, inc: Int, groups: Int, kind: Kind) {
        let stride = kind == .down ? 2 : 1
        self.residual = residual
        super.init()
        reduce = dpnUnit(inChannels, a, kernel: 1, stride: 1)
        grouped = dpnUnit(a, b, kernel: 3, stride: stride, groups: groups)
        expand = dpnUnit(b, residual + inc, kernel: 1, stride: 1)
        switch kind {
        case .projection: projection = dpnUnit(inChannels, residual + 2 * inc, kernel: 1, stride: 1)
        case .down: downProjection = dpnUnit(inChannels, residual + 2 * inc, kernel: 1, stride: 2)
        case .normal: break
        }
    }

    /// `[N, residual + dense, H, W]` -> `[N, residual + dense + inc, H', W']`.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let shortcut = projection?(x) ?? downProjection?(x) ?? x
        let c = shortcut.shape[1]
        let y = expand(grouped(reduce(x)))
        let r = residual, n = y.shape[1]
        return Tensor.concat([shortcut.slice(axis: 1, 0..<r) + y.slice(axis: 1, 0..<r),
                              shortcut.slice(axis: 1, r..<c),
                              y.slice(axis: 1, r..<n)], axis: 1)
    }
}
