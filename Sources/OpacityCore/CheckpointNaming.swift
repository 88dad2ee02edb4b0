/// Renames checkpoint keys from another library's convention to an encoder's before import.
///
/// Every encoder accepts ``KeyMap/identity`` (timm's `state_dict` names, unchanged); a plugin
/// registers further key maps for its encoders in their ``CheckpointNaming`` (the per-plugin
/// hook, as mlx-swift-lm's `sanitize(weights:)`), so the import code names no plugin.
public struct KeyMap: Sendable, CustomStringConvertible {
    /// The name `opacity import --key-map` takes.
    public var name: String
    /// What it maps from and to.
    public var summary: String
    /// The new key, or `nil` to drop the key.
    public var map: @Sendable (String) -> String?
    /// Set when checkpoints in this convention were trained for different numerics than the
    /// encoder computes (e.g. another stem): why. An import with this key map is refused unless
    /// the caller explicitly accepts the difference.
    public var numericsDiffer: String?
    /// Whether a checkpoint's full key set is in this convention (used to refuse a checkpoint
    /// whose numerics differ even when it is imported under another key map, and to suggest
    /// this map). `nil`: never recognised from the names alone.
    public var recognises: (@Sendable (Set<String>) -> Bool)?

    /// A key map from a closure.
    /// - Parameters:
    ///   - name: the name `--key-map` takes.
    ///   - summary: one line for help texts and reports.
    ///   - numericsDiffer: why weights in this convention do not fit the encoder's numerics, or nil.
    ///   - recognises: whether a key set is in this convention, or nil.
    ///   - map: the new key for a source key, or nil to drop it.
    public init(name: String, summary: String, numericsDiffer: String? = nil,
                recognises: (@Sendable (Set<String>) -> Bool)? = nil,
                map: @escaping @Sendable (String) -> String?) {
        self.name = name
        self.summary = summary
        self.numericsDiffer = numericsDiffer
        self.recognises = recognises
        self.map = map
    }

    public var description: String { "\(name): \(summary)" }

    /// Keys unchanged: timm's names, which Opacity's encoders use for the model of the same name.
    public static let identity = KeyMap(name: "timm", summary: "timm state_dict names, unchanged") { $0 }
}

/// How an encoder takes checkpoints published elsewhere: its classifier's name prefixes and
/// the key maps from other conventions. Registered with the encoder in ``EncoderFactory``.
public struct CheckpointNaming: Sendable {
    /// Name prefixes of the ImageNet classifier in the encoder's own names (e.g. `fc.`,
    /// `last_linear.`, `classifier.`); such source tensors are dropped when the encoder is
    /// built without a classifier.
    public var classifierPrefixes: [String]
    /// Key maps besides ``KeyMap/identity``, which every encoder accepts.
    public var keyMaps: [KeyMap]

    /// - Parameters:
    ///   - classifierPrefixes: the classifier's name prefixes (timm's ResNet family: `fc.`).
    ///   - keyMaps: further conventions the encoder's checkpoints come in.
    public init(classifierPrefixes: [String] = ["fc."], keyMaps: [KeyMap] = []) {
        self.classifierPrefixes = classifierPrefixes
        self.keyMaps = keyMaps
    }

    /// Every key map the encoder accepts: ``KeyMap/identity`` first.
    public var allKeyMaps: [KeyMap] { [.identity] + keyMaps.filter { $0.name != KeyMap.identity.name } }

    /// The key map of that name.
    /// - Throws: ``CheckpointError/unknownKeyMap(encoder:name:valid:nearest:)`` listing the valid names.
    public func keyMap(named name: String, encoder: String) throws -> KeyMap {
        let all = allKeyMaps
        if let m = all.first(where: { $0.name == name }) { return m }
        let valid = all.map(\.name)
        throw CheckpointError.unknownKeyMap(encoder: encoder, name: name, valid: valid, nearest: nearestValue(name, in: valid))
    }
}

/// Why a checkpoint cannot be taken by an encoder as asked.
public enum CheckpointError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The encoder registers no key map of that name.
    case unknownKeyMap(encoder: String, name: String, valid: [String], nearest: String?)
    /// The checkpoint's convention was trained for other numerics than the encoder computes;
    /// importing it would silently change the features.
    case numericsDiffer(file: String, encoder: String, keyMap: String, reason: String)

    public var description: String {
        switch self {
        case let .unknownKeyMap(encoder, name, valid, nearest):
            return "encoder \(encoder) has no key map '\(name)'" + (nearest.map { "; did you mean '\($0)'?" } ?? "")
                + " Valid: \(valid.joined(separator: ", "))"
        case let .numericsDiffer(file, encoder, keyMap, reason):
            return "\(file) is a '\(keyMap)' checkpoint, which does not fit encoder \(encoder)'s numerics: \(reason). "
                + "Nothing was written. To import it anyway (its features will differ from what it was trained for), "
                + "pass --allow-different-numerics (WeightImport: allowDifferentNumerics: true)."
        }
    }
}

extension Registry {
    /// The key map `name` for the encoder in the config `encoder` (e.g. `seresnext50_32x4d`).
    /// - Throws: ``ConfigError`` for an unknown encoder, ``CheckpointError/unknownKeyMap(encoder:name:valid:nearest:)``.
    public func keyMap(_ name: String, encoder: String) throws -> KeyMap {
        let resolved = try resolve(Config(parsing: encoder), as: .encoder)
        return try encoderFactory(resolved.name).checkpoint.keyMap(named: name, encoder: resolved.name)
    }
}
