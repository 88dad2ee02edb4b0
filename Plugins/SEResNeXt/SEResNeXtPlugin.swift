import OpacityCore
import OpacityTensor

/// Registers `encoder/seresnext50_32x4d` and `encoder/seresnext101_32x4d`.
public enum SEResNeXtPlugin: OpacityPlugin {
    public static let name = "SEResNeXt"

    /// The parameters every SE-ResNeXt encoder takes.
    public static let parameters: [ParameterSpec] = [
        ParameterSpec("in_channels", .int(1...4), default: .int(1), "input channels (1 for X-rays)"),
        ParameterSpec("classes", .int(0...100_000), default: .int(0), "ImageNet classifier outputs (0 = none)"),
    ]

    public static func register(into registry: inout Registry) throws {
        for depth in SEResNeXt.Depth.allCases {
            let info = ComponentInfo(
                kind: .encoder, name: depth.name, plugin: name,
                summary: "SE-ResNeXt-\(depth.rawValue) 32x4d with the paper's stem (timm legacy_\(depth.name) / Cadene se_resnext\(depth.rawValue)_32x4d names)",
                parameters: parameters)
            try registry.registerEncoder(info, EncoderFactory(
                featureSpec: { _ in SEResNeXt.spec },
                make: { cfg in SEResNeXt(depth, inChannels: cfg.int("in_channels"), classes: cfg.int("classes")) }))
        }
    }
}
