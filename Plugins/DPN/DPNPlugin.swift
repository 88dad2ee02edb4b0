import OpacityCore
import OpacityTensor

/// Registers `encoder/dpn92`.
public enum DPNPlugin: OpacityPlugin {
    public static let name = "DPN"

    /// The parameters the DPN encoder takes.
    public static let parameters: [ParameterSpec] = [
        ParameterSpec("in_channels", .int(1...4), default: .int(1), "input channels (1 for X-rays)"),
        ParameterSpec("classes", .int(0...100_000), default: .int(0), "ImageNet classifier outputs (0 = none)"),
    ]

    public static func register(into registry: inout Registry) throws {
        let info = ComponentInfo(
            kind: .encoder, name: "dpn92", plugin: name,
            summary: "DPN-92 dual path network (timm dpn92 names; C2..C5 with both paths concatenated)",
            parameters: parameters)
        try registry.registerEncoder(info, EncoderFactory(
            featureSpec: { _ in DPN.spec },
            checkpoint: CheckpointNaming(classifierPrefixes: ["classifier."]),
            make: { cfg in DPN(inChannels: cfg.int("in_channels"), classes: cfg.int("classes")) }))
    }
}
