import OpacityCore
import OpacityTensor

/// ResNet-18/34/50/101/152 encoders with timm's architecture and parameter names
/// (`conv1`, `bn1`, `layer1.0.conv1`, ..., `fc`).
///
/// The stem takes `inChannels` (1 for X-rays); loading a 3-channel ImageNet stem into a
/// 1-channel one sums the kernels, which equals feeding the grey image three times.
/// `width` scales every stage's channels (1 gives the published network).
public final class ResNet: Module, Encoder {
    /// The depth variants.
    public enum Depth: Int, CaseIterable, Sendable {
        case resnet18 = 18, resnet34 = 34, resnet50 = 50, resnet101 = 101, resnet152 = 152

        var blocks: [Int] {
            switch self {
            case .resnet18: return [2, 2, 2, 2]
            case .resnet34: return [3, 4, 6, 3]
            case .resnet50: return [3, 4, 6, 3]
            case .resnet101: return [3, 4, 23, 3]
            case .resnet152: return [3, 8, 36, 3]
            }
        }
        var bottleneck: Bool { rawValue >= 50 }
        public var name: String { "resnet\(rawValue)" }
    }

    /// The stem: 7x7 stride-2 convolution, batch norm and ReLU (`conv1`, `bn1`).
    public let stem: ConvNormAct
    public let layer1: Sequential
    public let layer2: Sequential
    public let layer3: Sequential
    public let layer4: Sequential
    /// The ImageNet classifier, present only when built with `classes > 0`.
    public let fc: Linear?
    public let featureSpec: FeatureSpec

    /// - Parameters:
    ///   - depth: the variant.
    ///   - inChannels: input channels (1 for X-rays, 3 for ImageNet images).
    ///   - width: channel multiplier for every stage (1 for the published network).
    ///   - classes: size of the ImageNet classifier; 0 leaves it out.
    public init(_ depth: Depth, inChannels: Int = 1, width: Double = 1, classes: Int = 0) {
        func ch(_ c: Int) -> Int { max(1, Int((Double(c) * width).rounded())) }
        let expansion = depth.bottleneck ? 4 : 1
        let stem = ch(64)
        self.stem = ConvNormAct(inChannels, stem, kernel: 7, stride: 2, padding: 3, keys: .inline(conv: "conv1", norm: "bn1"))
        var inplanes = stem
        var stages: [Sequential] = []
        for (i, n) in depth.blocks.enumerated() {
            let planes = ch(64 << i)
            var blocks: [any Layer] = []
            for b in 0..<n {
                let stride = (b == 0 && i > 0) ? 2 : 1
                let block: any Layer = depth.bottleneck
                    ? Bottleneck(inplanes, planes, stride: stride, expansion: expansion)
                    : BasicBlock(inplanes, planes, stride: stride)
                blocks.append(block)
                inplanes = planes * expansion
            }
            stages.append(Sequential(blocks))
        }
        layer1 = stages[0]; layer2 = stages[1]; layer3 = stages[2]; layer4 = stages[3]
        fc = classes > 0 ? Linear(inplanes, classes) : nil
        featureSpec = FeatureSpec((0..<4).map { FeatureLevel(channels: ch(64 << $0) * expansion, stride: 4 << $0) })
    }

    public func features(_ images: Tensor) -> [Tensor] {
        let x = stem(images).maxPool2d(kernel: (3, 3), stride: (2, 2), padding: (1, 1))
        let c2 = layer1(consume x)  // freed here, not with the function's other locals (resnet152, 512 px: 4 MiB)
        let c3 = layer2(c2)
        let c4 = layer3(c3)
        let c5 = layer4(c4)
        return [c2, c3, c4, c5]
    }

    /// ``features(_:)`` in checkpoint segments (``GradientCheckpointing``): the stem and max
    /// pool, then each stage of basic blocks (ResNet-18/34) or each bottleneck (ResNet-50 and
    /// deeper), whose wide outputs make a whole stage costly to recompute at once. Backward
    /// keeps the maps between segments: in a detector they are alive while the head's
    /// segments are recomputed, where training peaks, so fewer of them lower the peak.
    public func checkpointedFeatures(_ images: Tensor) -> [Tensor] {
        let x = Autograd.checkpoint(images) { self.stem($0).maxPool2d(kernel: (3, 3), stride: (2, 2), padding: (1, 1)) }
        let stages = [layer1, layer2, layer3, layer4]
        var maps: [Tensor] = []
        var y = x
        for stage in stages {
            y = stage.checkpointing(y, groupsOf: Self.checkpointGroup(stage))
            maps.append(y)
        }
        return maps
    }

    /// Blocks per checkpoint segment: a whole stage of basic blocks, one bottleneck.
    static func checkpointGroup(_ stage: Sequential) -> Int {
        stage.layers.first is Bottleneck ? 1 : max(1, stage.layers.count)
    }

    /// ImageNet logits (only with a classifier).
    public func classify(_ images: Tensor) -> Tensor {
        guard let fc else { preconditionFailure("ResNet.classify: built without a classifier (classes: 0)") }
        let c5 = features(images)[3]
        return fc(c5.globalAvgPool2d().flattened())
    }
}

/// The two-convolution residual block of ResNet-18/34.
public final class BasicBlock: Module, Layer {
    /// 3x3 (with the stride), batch norm, ReLU (`conv1`, `bn1`).
    public let unit1: ConvNormAct
    /// 3x3, batch norm (`conv2`, `bn2`).
    public let unit2: ConvNormAct
    /// The shortcut's strided 1x1 convolution and batch norm when the shape changes
    /// (`downsample.0`, `downsample.1`).
    public let downsample: ConvNormAct?

    public init(_ inplanes: Int, _ planes: Int, stride: Int) {
        unit1 = ConvNormAct(inplanes, planes, kernel: 3, stride: stride, padding: 1, keys: .inline(conv: "conv1", norm: "bn1"))
        unit2 = ConvNormAct(planes, planes, kernel: 3, padding: 1, activation: .none, keys: .inline(conv: "conv2", norm: "bn2"))
        unit2.norm.weight.value = .zeros([planes])  // timm's zero_init_last
        downsample = (stride != 1 || inplanes != planes)
            ? ConvNormAct(inplanes, planes, kernel: 1, stride: stride, activation: .none, keys: .nested(conv: "0", norm: "1"))
            : nil
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let out = unit2(unit1(x))
        return out.sumReLU(downsample?(x) ?? x)  // `relu(out + shortcut)` in one pass, the same bits
    }
}

/// The 1x1-3x3-1x1 bottleneck of ResNet-50 and deeper (stride on the 3x3, as timm).
public final class Bottleneck: Module, Layer {
    /// 1x1, batch norm, ReLU (`conv1`, `bn1`).
    public let unit1: ConvNormAct
    /// 3x3 with the stride, batch norm, ReLU (`conv2`, `bn2`).
    public let unit2: ConvNormAct
    /// 1x1 expansion, batch norm (`conv3`, `bn3`).
    public let unit3: ConvNormAct
    /// The shortcut's strided 1x1 convolution and batch norm when the shape changes
    /// (`downsample.0`, `downsample.1`).
    public let downsample: ConvNormAct?

    public init(_ inplanes: Int, _ planes: Int, stride: Int, expansion: Int = 4) {
        let out = planes * expansion
        unit1 = ConvNormAct(inplanes, planes, kernel: 1, keys: .inline(conv: "conv1", norm: "bn1"))
        unit2 = ConvNormAct(planes, planes, kernel: 3, stride: stride, padding: 1, keys: .inline(conv: "conv2", norm: "bn2"))
        unit3 = ConvNormAct(planes, out, kernel: 1, activation: .none, keys: .inline(conv: "conv3", norm: "bn3"))
        unit3.norm.weight.value = .zeros([out])  // timm's zero_init_last
        downsample = (stride != 1 || inplanes != out)
            ? ConvNormAct(inplanes, out, kernel: 1, stride: stride, activation: .none, keys: .nested(conv: "0", norm: "1"))
            : nil
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let y = unit3(unit2(unit1(x)))
        return y.sumReLU(downsample?(x) ?? x)  // `relu(y + shortcut)` in one pass, the same bits
    }
}

/// Registers `encoder/resnet18` ... `encoder/resnet152`.
public enum ResNetPlugin: OpacityPlugin {
    public static let name = "ResNet"

    /// The parameters every ResNet encoder takes.
    public static let parameters: [ParameterSpec] = [
        ParameterSpec("in_channels", .int(1...4), default: .int(1), "input channels (1 for X-rays)"),
        ParameterSpec("width", .float(0.03125...4), default: .float(1), "channel multiplier (1 = the published network)"),
        ParameterSpec("classes", .int(0...100_000), default: .int(0), "ImageNet classifier outputs (0 = none)"),
    ]

    public static func register(into registry: inout Registry) throws {
        for depth in ResNet.Depth.allCases {
            let info = ComponentInfo(kind: .encoder, name: depth.name, plugin: name,
                                     summary: "ResNet-\(depth.rawValue) (timm layout and names)", parameters: parameters)
            try registry.registerEncoder(info, EncoderFactory(
                featureSpec: { cfg in
                    let w = cfg.double("width"), e = depth.bottleneck ? 4 : 1
                    return FeatureSpec((0..<4).map { FeatureLevel(channels: max(1, Int((Double(64 << $0) * w).rounded())) * e, stride: 4 << $0) })
                },
                make: { cfg in
                    ResNet(depth, inChannels: cfg.int("in_channels"), width: cfg.double("width"), classes: cfg.int("classes"))
                }))
        }
    }
}
