import OpacityCore
import OpacityTensor

/// Xception in the paper's aligned form, with timm's `legacy_xception` (Cadene's `xception`)
/// architecture and parameter names (`conv1`, `block1.rep.0.conv1`, `block1.skip`, ...,
/// `conv4.pointwise`, `bn4`, `fc`).
///
/// The reference's two stem convolutions have no padding, so a 512-pixel image gives 255 and
/// then 253 pixels and the first block 127 instead of 128, which breaks the pyramid's sums.
/// The paper's `AlignedXception` gives both stem convolutions padding 1 (weights unchanged);
/// every stage then sits at exactly 1/4 ... 1/32 of the input (rounded up).
///
/// C2..C5 are, as in the paper's encoder, the raw outputs of `block1` (128 channels, stride
/// 4), `block2` (256, stride 8), `block11` (728, stride 16) and `bn4` (2048, stride 32), each
/// before the ReLU that follows it.
public final class Xception: Module, Encoder {
    /// The feature maps the encoder produces.
    public static let spec = FeatureSpec(zip([128, 256, 728, 2048], [4, 8, 16, 32]).map { FeatureLevel(channels: $0, stride: $1) })

    /// 3x3, stride 2, padding 1 (aligned), 32 channels, batch norm, ReLU (`conv1`, `bn1`).
    public let stem1: ConvNormAct
    /// 3x3, padding 1 (aligned), 64 channels, batch norm, ReLU (`conv2`, `bn2`).
    public let stem2: ConvNormAct
    /// `block1` ... `block12`.
    @Named(each: { "block\($0 + 1)" }) public private(set) var blocks: [XceptionBlock]
    /// Exit flow: separable 3x3 to 1536 channels, batch norm, ReLU (`conv3`, `bn3`).
    public let exit1: ConvNormAct
    /// Exit flow: separable 3x3 to 2048 channels and batch norm (`conv4`, `bn4`); its output is C5.
    public let exit2: ConvNormAct
    /// The ImageNet classifier, present only when built with `classes > 0`.
    public let fc: Linear?
    /// C2..C5: 128, 256, 728, 2048 channels at strides 4, 8, 16, 32.
    public let featureSpec = Xception.spec

    /// - Parameters:
    ///   - inChannels: input channels (1 for X-rays, 3 for ImageNet images).
    ///   - classes: size of the ImageNet classifier; 0 leaves it out.
    public init(inChannels: Int = 1, classes: Int = 0) {
        stem1 = ConvNormAct(inChannels, 32, kernel: 3, stride: 2, padding: 1, keys: .inline(conv: "conv1", norm: "bn1"))
        stem2 = ConvNormAct(32, 64, kernel: 3, padding: 1, keys: .inline(conv: "conv2", norm: "bn2"))
        var b = [XceptionBlock(64, 128, reps: 2, stride: 2, startWithReLU: false),
                 XceptionBlock(128, 256, reps: 2, stride: 2),
                 XceptionBlock(256, 728, reps: 2, stride: 2)]
        for _ in 4...11 { b.append(XceptionBlock(728, 728, reps: 3, stride: 1)) }
        b.append(XceptionBlock(728, 1024, reps: 2, stride: 2, growFirst: false))
        exit1 = ConvNormAct(conv: XceptionSeparableConv2d(1024, 1536, kernel: 3, padding: 1), norm: BatchNorm2d(1536),
                            keys: .inline(conv: "conv3", norm: "bn3"))
        exit2 = ConvNormAct(conv: XceptionSeparableConv2d(1536, 2048, kernel: 3, padding: 1), norm: BatchNorm2d(2048),
                            activation: .none, keys: .inline(conv: "conv4", norm: "bn4"))
        fc = classes > 0 ? Linear(2048, classes) : nil
        super.init()
        blocks = b
    }

    /// C2..C5 for `[N, inChannels, H, W]` images: `[N, 128, H/4, W/4]` ... `[N, 2048, H/32, W/32]`
    /// (sizes rounded up).
    public func features(_ images: Tensor) -> [Tensor] {
        let c2 = blocks[0](stem2(stem1(images)))
        let c3 = blocks[1](c2)
        var c4 = c3
        for i in 2...10 { c4 = blocks[i](c4) }
        let c5 = exit2(exit1(blocks[11](c4)))
        return [c2, c3, c4, c5]
    }

    /// ``features(_:)`` in checkpoint segments (``GradientCheckpointing``): the stem with
    /// `block1`, then one segment per block, then `block12` with the exit flow. Backward keeps
    /// the twelve maps between segments and recomputes one block at a time.
    public func checkpointedFeatures(_ images: Tensor) -> [Tensor] {
        let c2 = Autograd.checkpoint(images) { self.blocks[0](self.stem2(self.stem1($0))) }
        let c3 = Autograd.checkpoint(c2) { self.blocks[1]($0) }
        var c4 = c3
        for i in 2...10 {
            let block = blocks[i]
            c4 = Autograd.checkpoint(c4) { block($0) }
        }
        let c5 = Autograd.checkpoint(c4) { self.exit2(self.exit1(self.blocks[11]($0))) }
        return [c2, c3, c4, c5]
    }

    /// ImageNet logits `[N, classes]` from C5 (ReLU, global average pool, `fc`).
    public func logits(fromDeepest c5: Tensor) -> Tensor {
        guard let fc else { preconditionFailure("Xception.logits: built without a classifier (classes: 0)") }
        return fc(c5.relu().globalAvgPool2d().flattened())
    }

    /// ImageNet logits `[N, classes]` for `[N, inChannels, H, W]` images (only with a classifier).
    public func classify(_ images: Tensor) -> Tensor { logits(fromDeepest: features(images)[3]) }
}

/// A depthwise 3x3 convolution (`conv1`) followed by a pointwise 1x1 one (`pointwise`).
public final class XceptionSeparableConv2d: Module, InPlaceLayer {
    /// The depthwise convolution (one group per channel).
    public let conv1: Conv2d
    /// The 1x1 convolution across channels.
    public let pointwise: Conv2d

    /// - Parameters:
    ///   - inChannels, outChannels: channels before and after.
    ///   - kernel, stride, padding: of the depthwise convolution.
    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0) {
        let he = Initializer.heNormal(fanOut: true)
        conv1 = Conv2d(inChannels, inChannels, kernel: kernel, stride: stride, padding: padding, groups: inChannels,
                       bias: false, initializer: he)
        pointwise = Conv2d(inChannels, outChannels, kernel: 1, bias: false, initializer: he)
    }

    /// `pointwise(conv1(x))`.
    public func callAsFunction(_ x: Tensor) -> Tensor { pointwise(conv1(x)) }

    /// `pointwise(conv1(x))` with the depthwise half written over `x` where it can
    /// (``Conv2d/inPlace(_:)``): no second map of `x`'s size beside it. The same values.
    public func inPlace(_ x: consuming Tensor) -> Tensor { pointwise(conv1.inPlace(consume x)) }
}

/// An Xception block: `reps` times (ReLU, separable 3x3, batch norm), a 3x3 stride-2 max pool
/// when it downsamples, plus a shortcut (a strided 1x1 convolution and batch norm when the
/// shape changes). No activation after the sum.
public final class XceptionBlock: Module, Layer {
    /// The shortcut's strided 1x1 convolution and batch norm, when the shape changes (`skip`, `skipbn`).
    public let shortcut: ConvNormAct?
    /// The residual branch, numbered as the reference's `rep` (ReLUs and the pool count).
    public let rep: Sequential

    /// - Parameters:
    ///   - inChannels, outChannels: channels before and after.
    ///   - reps: separable convolutions.
    ///   - stride: 2 ends the branch with a max pool and strides the shortcut.
    ///   - startWithReLU: false drops the first ReLU (block1, right after the stem's ReLU).
    ///   - growFirst: change the channel count in the first separable convolution (else in the last).
    public init(_ inChannels: Int, _ outChannels: Int, reps: Int, stride: Int, startWithReLU: Bool = true, growFirst: Bool = true) {
        shortcut = outChannels != inChannels || stride != 1
            ? ConvNormAct(inChannels, outChannels, kernel: 1, stride: stride, activation: .none, keys: .inline(conv: "skip", norm: "skipbn"))
            : nil
        var layers: [any Layer] = []
        for i in 0..<reps {
            let inc = growFirst ? (i == 0 ? inChannels : outChannels) : inChannels
            let outc = growFirst ? outChannels : (i < reps - 1 ? inChannels : outChannels)
            layers += [ReLU(), XceptionSeparableConv2d(inc, outc, kernel: 3, padding: 1), BatchNorm2d(outc)]
        }
        if !startWithReLU { layers.removeFirst() }
        if stride != 1 { layers.append(MaxPool2d(kernel: 3, stride: stride, padding: 1)) }
        rep = Sequential(layers)
    }

    /// `rep(x) + shortcut(x)`.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        rep(x) + (shortcut?(x) ?? x)
    }
}
