// A backbone that lives outside the framework: one file, one encoder, one plugin.
//
// Documentation/AddingABackbone.md walks through it. The same file is compiled into
// Opacity's own tests (Tests/OpacityPluginTests/EncoderTemplate+TinyBackbone.swift links
// here), so the public-API path it shows is checked on every test run, and into the plugin
// library libTinyBackbonePlugin.so (Sources/TinyBackbonePlugin links here too). It imports
// OpacityCore only (which brings OpacityTensor): all a plugin library can link against.
import OpacityCore

/// A small four-stage convolutional encoder: a stride-2 stem, then four stages of a strided
/// 3x3 convolution, batch norm and ReLU, followed by a residual 3x3 block. Each convolution,
/// batch norm and ReLU is the engine's shared `ConvNormAct` (children `conv`, `bn`).
///
/// C2..C5 are the stage outputs at strides 4, 8, 16 and 32 with `width`, `2 width`,
/// `4 width` and `8 width` channels. Parameter paths: `stem.conv.weight`,
/// `stages.0.down.conv.weight`, `stages.0.block.conv.weight`, ...
public final class TinyBackbone: Module, Encoder {
    /// The stride-2 stem: 3x3 convolution, batch norm, ReLU (`stem.conv`, `stem.bn`).
    public let stem: ConvNormAct
    /// The four stages, each halving the size.
    public let stages: [TinyStage]
    /// C2..C5: `width` ... `8 width` channels at strides 4, 8, 16, 32.
    public let featureSpec: FeatureSpec

    /// The maps a TinyBackbone of this width produces, known before any weight exists (the
    /// registry uses it to check the neck and head against the encoder).
    public static func spec(width: Int) -> FeatureSpec {
        FeatureSpec((0..<4).map { FeatureLevel(channels: width << $0, stride: 4 << $0) })
    }

    /// - Parameters:
    ///   - inChannels: input channels (1 for X-rays).
    ///   - width: channels of C2; each later stage doubles them.
    public init(inChannels: Int = 1, width: Int = 16) {
        stem = ConvNormAct(inChannels, width, kernel: 3, stride: 2, padding: 1)
        stages = (0..<4).map { i in TinyStage(i == 0 ? width : width << (i - 1), width << i) }
        featureSpec = Self.spec(width: width)
    }

    /// C2..C5 for `[N, inChannels, H, W]` images: `[N, width, H/4, W/4]` ...
    /// `[N, 8 width, H/32, W/32]` (sizes rounded up).
    public func features(_ images: Tensor) -> [Tensor] {
        var x = stem(images)
        var out: [Tensor] = []
        for stage in stages {
            x = stage(x)
            out.append(x)
        }
        return out
    }
}

/// A stride-2 convolution (`down`) and a residual 3x3 block (`block`).
public final class TinyStage: Module, Layer {
    /// Halves the size and sets the channels: 3x3 stride-2 convolution, batch norm, ReLU
    /// (`down.conv`, `down.bn`).
    public let down: ConvNormAct
    /// The residual branch: 3x3 convolution, batch norm, ReLU (`block.conv`, `block.bn`).
    public let block: ConvNormAct

    /// - Parameters: channels in and out.
    public init(_ inChannels: Int, _ outChannels: Int) {
        down = ConvNormAct(inChannels, outChannels, kernel: 3, stride: 2, padding: 1)
        block = ConvNormAct(outChannels, outChannels, kernel: 3, padding: 1)
    }

    /// `down(x) + block(down(x))`.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let y = down(x)
        return y + block(y)
    }
}

/// Registers `encoder/tiny_backbone` with its parameters `in_channels` and `width`.
///
/// Pass it to the registry next to the built-in plugins:
/// `try Registry(plugins: builtinPlugins + [TinyBackbonePlugin.self])`.
public enum TinyBackbonePlugin: OpacityPlugin {
    public static let name = "TinyBackbone"

    public static func register(into registry: inout Registry) throws {
        let info = ComponentInfo(
            kind: .encoder, name: "tiny_backbone", plugin: name,
            summary: "a small four-stage example encoder (Examples/TinyBackbone)",
            parameters: [
                ParameterSpec("in_channels", .int(1...4), default: .int(1), "input channels (1 for X-rays)"),
                ParameterSpec("width", .int(1...512), default: .int(16), "channels of C2 (doubled per stage)"),
            ])
        try registry.registerEncoder(info, EncoderFactory(
            featureSpec: { cfg in TinyBackbone.spec(width: cfg.int("width")) },
            make: { cfg in TinyBackbone(inChannels: cfg.int("in_channels"), width: cfg.int("width")) }))
    }
}
