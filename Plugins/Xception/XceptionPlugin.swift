import OpacityCore
import OpacityTensor

/// Registers `encoder/xception` (the paper's aligned Xception).
public enum XceptionPlugin: OpacityPlugin {
    public static let name = "Xception"

    /// The parameters the Xception encoder takes.
    public static let parameters: [ParameterSpec] = [
        ParameterSpec("in_channels", .int(1...4), default: .int(1), "input channels (1 for X-rays)"),
        ParameterSpec("classes", .int(0...100_000), default: .int(0), "ImageNet classifier outputs (0 = none)"),
    ]

    public static func register(into registry: inout Registry) throws {
        let info = ComponentInfo(
            kind: .encoder, name: "xception", plugin: name,
            summary: "Xception, aligned as in the paper (stem padding 1; timm legacy_xception names)",
            parameters: parameters)
        try registry.registerEncoder(info, EncoderFactory(
            featureSpec: { _ in Xception.spec },
            make: { cfg in Xception(inChannels: cfg.int("in_channels"), classes: cfg.int("classes")) }))
    }
}
