import OpacityCore
import OpacityTensor

/// SE-ResNeXt-50 and -101 (32x4d) encoders: Cadene's `se_resnext*_32x4d`, which timm keeps as
/// `legacy_seresnext*_32x4d`, with the same architecture and parameter names (`layer0.conv1`,
/// `layer1.0.se_module.fc1`, ..., `last_linear`).
///
/// The stem is the paper's: a 7x7 stride-2 convolution, batch norm, ReLU and a 3x3 stride-2
/// max pool in ceil mode without padding. C2..C5 are the outputs of `layer1` ... `layer4`
/// (256, 512, 1024 and 2048 channels at strides 4, 8, 16 and 32).
///
/// The stem takes `inChannels` (1 for X-rays); a 3-channel ImageNet stem loads into a
/// 1-channel one by summing its kernels, which equals feeding the grey image three times.
public final class SEResNeXt: Module, Encoder {
    /// The depth variants.
    public enum Depth: Int, CaseIterable, Sendable {
        case seresnext50 = 50, seresnext101 = 101

        /// Bottleneck blocks per stage.
        public var blocks: [Int] { self == .seresnext50 ? [3, 4, 6, 3] : [3, 4, 23, 3] }
        /// The registry name, e.g. `seresnext50_32x4d`.
        public var name: String { "seresnext\(rawValue)_32x4d" }
    }

    /// The input sizes at which C2..C5 are exactly `ceil(size / 4)` ... `ceil(size / 32)`:
    /// `size % 4` is 0 or 3. The stem convolution gives `ceil(size / 2)` pixels and the
    /// unpadded ceil-mode pool halves that exactly only when it is even.
    public static let inputSizes = InputSizeRule.remainders([0, 3], modulo: 4, "multiples of 4 and one less, e.g. 96, 99, 100")

    /// The feature maps every variant produces.
    public static let spec = FeatureSpec((0..<4).map { FeatureLevel(channels: 256 << $0, stride: 4 << $0) })

    /// The stem's 7x7 stride-2 convolution, batch norm and ReLU (`layer0.conv1`, `layer0.bn1`).
    public let layer0: ConvNormAct
    /// Stage 2 (C2: 256 channels, stride 4).
    public let layer1: Sequential
    /// Stage 3 (C3: 512 channels, stride 8).
    public let layer2: Sequential
    /// Stage 4 (C4: 1024 channels, stride 16).
    public let layer3: Sequential
    /// Stage 5 (C5: 2048 channels, stride 32).
    public let layer4: Sequential
    /// The ImageNet classifier, present only when built with `classes > 0`.
    @Named("last_linear") public private(set) var lastLinear: Linear?
    /// C2..C5: 256, 512, 1024, 2048 channels at strides 4, 8, 16, 32.
    public let featureSpec = SEResNeXt.spec

    /// - Parameters:
    ///   - depth: the variant.
    ///   - inChannels: input channels (1 for X-rays, 3 for ImageNet images).
    ///   - classes: size of the ImageNet classifier; 0 leaves it out.
    public init(_ depth: Depth, inChannels: Int = 1, classes: Int = 0) {
        layer0 = ConvNormAct(inChannels, 64, kernel: 7, stride: 2, padding: 3, keys: .nested(conv: "conv1", norm: "bn1"))
        var inplanes = 64
        var stages: [Sequential] = []
        for (i, n) in depth.blocks.enumerated() {
            let planes = 64 << i
            var blocks: [any Layer] = []
            for b in 0..<n {
                blocks.append(SEResNeXtBottleneck(inplanes, planes, stride: b == 0 && i > 0 ? 2 : 1))
                inplanes = planes * 4
            }
            stages.append(Sequential(blocks))
        }
        layer1 = stages[0]; layer2 = stages[1]; layer3 = stages[2]; layer4 = stages[3]
        super.init()
        lastLinear = classes > 0 ? Linear(inplanes, classes) : nil
    }

    /// C2..C5 for `[N, inChannels, H, W]` images: `[N, 256, H/4, W/4]` ... `[N, 2048, H/32, W/32]`
    /// (sizes rounded up).
    public func features(_ images: Tensor) -> [Tensor] {
        let x = layer0(images).maxPool2d(kernel: (3, 3), stride: (2, 2), ceilMode: true)
        let c2 = layer1(consume x)  // freed here, not with the function's other locals
        let c3 = layer2(c2)
        let c4 = layer3(c3)
        let c5 = layer4(c4)
        return [c2, c3, c4, c5]
    }

    /// ``features(_:)`` with the stem and max pool as one checkpoint segment and each
    /// bottleneck as one (``GradientCheckpointing``): backward keeps the maps between blocks
    /// and recomputes one block at a time.
    public func checkpointedFeatures(_ images: Tensor) -> [Tensor] {
        let x = Autograd.checkpoint(images) { self.layer0($0).maxPool2d(kernel: (3, 3), stride: (2, 2), ceilMode: true) }
        let c2 = layer1.checkpointing(x, groupsOf: 1)
        let c3 = layer2.checkpointing(c2, groupsOf: 1)
        let c4 = layer3.checkpointing(c3, groupsOf: 1)
        let c5 = layer4.checkpointing(c4, groupsOf: 1)
        return [c2, c3, c4, c5]
    }

    /// ImageNet logits `[N, classes]` from C5 (global average pool, `last_linear`).
    public func logits(fromDeepest c5: Tensor) -> Tensor {
        guard let lastLinear else { preconditionFailure("SEResNeXt.logits: built without a classifier (classes: 0)") }
        return lastLinear(c5.globalAvgPool2d().flattened())
    }

    /// ImageNet logits `[N, classes]` for `[N, inChannels, H, W]` images (only with a classifier).
    public func classify(_ images: Tensor) -> Tensor { logits(fromDeepest: features(images)[3]) }
}

/// Squeeze and excitation: channel weights from the global average through a bottleneck of
/// two 1x1 convolutions (`fc1`, `fc2`) and a sigmoid.
public final class SEModule: Module, Layer {
    /// 1x1 convolution down to `channels / reduction`, with bias.
    public let fc1: Conv2d
    /// 1x1 convolution back up to `channels`, with bias.
    public let fc2: Conv2d

    /// - Parameters:
    ///   - channels: channels of the map it reweights.
    ///   - reduction: bottleneck ratio (16 in SE-ResNeXt).
    public init(_ channels: Int, reduction: Int) {
        fc1 = Conv2d(channels, channels / reduction, kernel: 1, initializer: .heNormal(fanOut: true))
        fc2 = Conv2d(channels / reduction, channels, kernel: 1, initializer: .heNormal(fanOut: true))
    }

    /// `x * sigmoid(fc2(relu(fc1(mean_hw(x)))))` for `[N, C, H, W]`.
    public func callAsFunction(_ x: Tensor) -> Tensor { x * excitation(x) }

    /// The channel weights `sigmoid(fc2(relu(fc1(mean_hw(x)))))`, `[N, C, 1, 1]` for
    /// `[N, C, H, W]`, each in `(0, 1)`.
    public func excitation(_ x: Tensor) -> Tensor {
        fc2(fc1(x.globalAvgPool2d()).relu()).sigmoid()
    }
}

/// The ResNeXt bottleneck (1x1, grouped 3x3 with the stride, 1x1) with squeeze and
/// excitation before the residual sum; 32 groups of width 4 per 64 planes.
public final class SEResNeXtBottleneck: Module, Layer {
    /// The 1x1 reduction, batch norm, ReLU (`conv1`, `bn1`).
    public let unit1: ConvNormAct
    /// The grouped 3x3 convolution with the stride, batch norm, ReLU (`conv2`, `bn2`).
    public let unit2: ConvNormAct
    /// The 1x1 expansion and batch norm (`conv3`, `bn3`).
    public let unit3: ConvNormAct
    /// Squeeze and excitation (`se_module`).
    @Named("se_module") public private(set) var squeeze: SEModule
    /// The shortcut's strided 1x1 convolution and batch norm, when the shape changes
    /// (`downsample.0`, `downsample.1`).
    public let downsample: ConvNormAct?

    /// - Parameters:
    ///   - inplanes: input channels.
    ///   - planes: a quarter of the output channels.
    ///   - stride: the 3x3 convolution's (and the shortcut's) stride.
    ///   - groups: cardinality (32).
    ///   - baseWidth: channels per group per 64 planes (4).
    public init(_ inplanes: Int, _ planes: Int, stride: Int, groups: Int = 32, baseWidth: Int = 4) {
        let width = planes * baseWidth / 64 * groups
        let out = planes * 4
        unit1 = ConvNormAct(inplanes, width, kernel: 1, keys: .inline(conv: "conv1", norm: "bn1"))
        unit2 = ConvNormAct(width, width, kernel: 3, stride: stride, padding: 1, groups: groups, keys: .inline(conv: "conv2", norm: "bn2"))
        unit3 = ConvNormAct(width, out, kernel: 1, activation: .none, keys: .inline(conv: "conv3", norm: "bn3"))
        let squeeze = SEModule(out, reduction: 16)
        downsample = stride != 1 || inplanes != out
            ? ConvNormAct(inplanes, out, kernel: 1, stride: stride, activation: .none, keys: .nested(conv: "0", norm: "1"))
            : nil
        super.init()
        self.squeeze = squeeze
    }

    /// `relu(se(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))))) + shortcut(x))`.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let y = unit3(unit2(unit1(x)))
        // `relu(y * excitation + shortcut)` in one pass (the same bits as the three operations).
        let s = squeeze.excitation(y)
        return y.scaledSumReLU(scale: s, residual: downsample?(x) ?? x)
    }
}
