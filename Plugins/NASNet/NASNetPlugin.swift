import OpacityCore
import OpacityTensor

/// Registers `encoder/nasnetamobile`.
public enum NASNetPlugin: OpacityPlugin {
    public static let name = "NASNet"

    /// The parameters the NASNet-A-Mobile encoder takes.
    public static let parameters: [ParameterSpec] = [
        ParameterSpec("in_channels", .int(1...4), default: .int(1), "input channels (1 for X-rays)"),
        ParameterSpec("classes", .int(0...100_000), default: .int(0), "ImageNet classifier outputs (0 = none)"),
    ]

    public static func register(into registry: inout Registry) throws {
        let info = ComponentInfo(
            kind: .encoder, name: "nasnetamobile", plugin: name,
            summary: "NASNet-A-Mobile 4@1056 (Cadene pretrainedmodels nasnetamobile names)",
            parameters: parameters)
        try registry.registerEncoder(info, EncoderFactory(
            featureSpec: { _ in NASNetAMobile.spec },
            inputSizes: NASNetAMobile.inputSizes,
            checkpoint: CheckpointNaming(classifierPrefixes: ["last_linear."]),
            make: { cfg in NASNetAMobile(inChannels: cfg.int("in_channels"), classes: cfg.int("classes")) }))
    }
}
