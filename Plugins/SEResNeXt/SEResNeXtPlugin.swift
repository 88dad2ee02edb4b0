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
                inputSizes: SEResNeXt.inputSizes,
                checkpoint: checkpointNaming,
                make: { cfg in SEResNeXt(depth, inChannels: cfg.int("in_channels"), classes: cfg.int("classes")) }))
        }
    }
}

extension SEResNeXtPlugin {
    /// How the SE-ResNeXt encoders take published checkpoints: classifier `last_linear`;
    /// timm legacy / Cadene names as they are, ``KeyMap/cadene``, and ``KeyMap/timmSEResNeXt``
    /// (refused by default: other numerics).
    public static let checkpointNaming = CheckpointNaming(classifierPrefixes: ["last_linear."],
                                                          keyMaps: [.cadene, .timmSEResNeXt])
}

extension KeyMap {
    /// Cadene `pretrainedmodels` SE-ResNeXt (`se_resnext50_32x4d`, `se_resnext101_32x4d`):
    /// the names already equal Opacity's (`layer0.conv1`, `layer0.bn1`,
    /// `layer1.0.se_module.fc1`, `last_linear`); a `module.` prefix left by
    /// `nn.DataParallel` is removed.
    public static let cadene = KeyMap(
        name: "cadene",
        summary: "Cadene pretrainedmodels se_resnext*_32x4d (= timm legacy_seresnext*_32x4d) names; strips a DataParallel 'module.' prefix"
    ) { key in key.hasPrefix("module.") ? String(key.dropFirst(7)) : key }

    /// Why timm's current `seresnext*_32x4d` weights do not fit Opacity's SE-ResNeXt.
    public static let timmSEResNeXtNumerics =
        "timm's current seresnext*_32x4d were trained with a padded stem max pool (3x3, stride 2, padding 1), "
        + "while this encoder's stem pools in ceil mode without padding (Cadene se_resnext*, timm legacy_seresnext*): "
        + "every feature map shifts by one stem pixel; use legacy_seresnext*_32x4d or Cadene weights instead"

    /// timm's current `seresnext50_32x4d` / `seresnext101_32x4d` names to Cadene's, which
    /// Opacity's SE-ResNeXt encoders use: `conv1` -> `layer0.conv1`, `bn1` -> `layer0.bn1`,
    /// `.se.` -> `.se_module.`, `fc` -> `last_linear`. The shapes are the same, but timm's
    /// current models were trained with a padded stem max pool and Cadene's with `ceil_mode`
    /// and no padding, so the import is refused unless the difference is accepted
    /// (``numericsDiffer``). A file is recognised as this convention by its top-level
    /// `conv1.weight` and its `.se.fc1.` squeeze-excitation names.
    public static let timmSEResNeXt = KeyMap(
        name: "timm-seresnext",
        summary: "timm seresnext*_32x4d (non-legacy) names to Cadene/legacy names (conv1 -> layer0.conv1, .se. -> .se_module., fc -> last_linear); other numerics (padded stem pool)",
        numericsDiffer: timmSEResNeXtNumerics,
        recognises: { names in names.contains("conv1.weight") && names.contains { $0.contains(".se.fc1.") } }
    ) { key in
        var k = key
        if k.hasPrefix("conv1.") || k.hasPrefix("bn1.") { k = "layer0." + k }
        if k.hasPrefix("fc.") { k = "last_linear." + k.dropFirst(3) }
        return k.replacingOccurrences(of: ".se.", with: ".se_module.")
    }
}
