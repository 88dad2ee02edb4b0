import OpacityCore
/// Renames checkpoint keys from another library's convention to Opacity's before import.
///
/// Opacity's encoders use timm's names for the model of the same name; the SE-ResNeXt
/// encoders use Cadene's `pretrainedmodels` names, which timm keeps for its
/// `legacy_seresnext*_32x4d` models.
public struct KeyMap: Sendable, CustomStringConvertible {
    /// The name `opacity import --key-map` takes.
    public var name: String
    /// What it maps from and to.
    public var summary: String
    /// The new key, or `nil` to drop the key.
    public var map: @Sendable (String) -> String?

    /// A key map from a closure.
    public init(name: String, summary: String, map: @escaping @Sendable (String) -> String?) {
        self.name = name
        self.summary = summary
        self.map = map
    }

    public var description: String { "\(name): \(summary)" }

    /// Keys unchanged (timm checkpoints for ResNet, Xception, DPN, NASNet; timm `legacy_seresnext*`).
    public static let identity = KeyMap(name: "timm", summary: "timm state_dict names, unchanged") { $0 }

    /// Cadene `pretrainedmodels` SE-ResNeXt (`se_resnext50_32x4d`, `se_resnext101_32x4d`):
    /// the names already equal Opacity's (`layer0.conv1`, `layer0.bn1`,
    /// `layer1.0.se_module.fc1`, `last_linear`); a `module.` prefix left by
    /// `nn.DataParallel` is removed.
    public static let cadene = KeyMap(
        name: "cadene",
        summary: "Cadene pretrainedmodels se_resnext*_32x4d (= timm legacy_seresnext*_32x4d) names; strips a DataParallel 'module.' prefix"
    ) { key in key.hasPrefix("module.") ? String(key.dropFirst(7)) : key }

    /// timm's current `seresnext50_32x4d` / `seresnext101_32x4d` names to Cadene's, which
    /// Opacity's SE-ResNeXt encoders use: `conv1` -> `layer0.conv1`, `bn1` -> `layer0.bn1`,
    /// `.se.` -> `.se_module.`, `fc` -> `last_linear`. Shapes are the same, but note that
    /// timm's current models were trained with a padded stem max pool, Cadene's with
    /// `ceil_mode` and no padding.
    public static let timmSEResNeXt = KeyMap(
        name: "timm-seresnext",
        summary: "timm seresnext*_32x4d (non-legacy) names to Cadene/legacy names (conv1 -> layer0.conv1, .se. -> .se_module., fc -> last_linear)"
    ) { key in
        var k = key
        if k.hasPrefix("conv1.") || k.hasPrefix("bn1.") { k = "layer0." + k }
        if k.hasPrefix("fc.") { k = "last_linear." + k.dropFirst(3) }
        return k.replacingOccurrences(of: ".se.", with: ".se_module.")
    }

    /// Every built-in key map.
    public static let all: [KeyMap] = [.identity, .cadene, .timmSEResNeXt]

    /// The built-in key map with this name.
    /// - Throws: ``ImportError/unknownKeyMap(name:valid:nearest:)``.
    public static func named(_ name: String) throws -> KeyMap {
        if let m = all.first(where: { $0.name == name }) { return m }
        let valid = all.map(\.name)
        throw ImportError.unknownKeyMap(name: name, valid: valid, nearest: nearestMatch(name, in: valid))
    }
}
