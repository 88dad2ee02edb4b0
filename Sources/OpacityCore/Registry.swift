import Foundation

/// The roles a registered component can play.
public enum ComponentKind: String, CaseIterable, Sendable, Codable {
    case detector, encoder, neck, head
}

/// The type and admissible values of one config parameter.
public enum ParameterKind: Sendable, CustomStringConvertible {
    case int(ClosedRange<Int>?)
    case float(ClosedRange<Double>?)
    case bool
    case string(choices: [String]?)
    case range(within: ClosedRange<Int>?)
    case component(ComponentKind)

    public var description: String {
        switch self {
        case .int(let r): return "integer" + (r.map { " in \($0.lowerBound)...\($0.upperBound)" } ?? "")
        case .float(let r): return "number" + (r.map { " in \(Config.format($0.lowerBound))...\(Config.format($0.upperBound))" } ?? "")
        case .bool: return "true or false"
        case .string(let c): return c.map { "one of " + $0.joined(separator: ", ") } ?? "string"
        case .range(let r): return "range like 2-7" + (r.map { " within \($0.lowerBound)-\($0.upperBound)" } ?? "")
        case .component(let k): return "\(k.rawValue) name"
        }
    }
}

/// One parameter a component takes.
public struct ParameterSpec: Sendable {
    public var name: String
    public var kind: ParameterKind
    public var defaultValue: ConfigValue
    public var summary: String

    public init(_ name: String, _ kind: ParameterKind, default defaultValue: ConfigValue, _ summary: String) {
        self.name = name
        self.kind = kind
        self.defaultValue = defaultValue
        self.summary = summary
    }
}

/// A registered component: its role, name, parameters and the plugin that registered it.
public struct ComponentInfo: Sendable {
    public var kind: ComponentKind
    public var name: String
    public var plugin: String
    public var summary: String
    public var parameters: [ParameterSpec]

    public init(kind: ComponentKind, name: String, plugin: String, summary: String, parameters: [ParameterSpec]) {
        self.kind = kind
        self.name = name
        self.plugin = plugin
        self.summary = summary
        self.parameters = parameters
    }

    /// `kind/name`, e.g. `encoder/resnet34`.
    public var key: String { "\(kind.rawValue)/\(name)" }
}

/// A config whose names and values have been checked and whose defaults are filled in.
public struct ResolvedConfig: Sendable, CustomStringConvertible {
    public let info: ComponentInfo
    /// Every parameter, defaults included, in declaration order.
    public let values: [String: ConfigValue]
    /// Resolved nested components.
    public let components: [String: ResolvedConfig]
    /// The canonical config (defaults elided, keys sorted).
    public let canonical: Config

    public var name: String { info.name }
    public var description: String { canonical.description }

    public func int(_ key: String) -> Int {
        switch values[key] {
        case .int(let v): return v
        case .float(let v): return Int(v)
        default: fatalError("\(info.key): parameter \(key) is not an integer (registry bug)")
        }
    }

    public func float(_ key: String) -> Float { Float(double(key)) }

    public func double(_ key: String) -> Double {
        switch values[key] {
        case .float(let v): return v
        case .int(let v): return Double(v)
        default: fatalError("\(info.key): parameter \(key) is not a number (registry bug)")
        }
    }

    public func bool(_ key: String) -> Bool {
        guard case .bool(let v) = values[key] else { fatalError("\(info.key): parameter \(key) is not a boolean (registry bug)") }
        return v
    }

    public func string(_ key: String) -> String {
        guard case .string(let v) = values[key] else { fatalError("\(info.key): parameter \(key) is not a string (registry bug)") }
        return v
    }

    public func range(_ key: String) -> ClosedRange<Int> {
        guard case .range(let v) = values[key] else { fatalError("\(info.key): parameter \(key) is not a range (registry bug)") }
        return v
    }

    public func component(_ key: String) -> ResolvedConfig {
        guard let c = components[key] else { fatalError("\(info.key): parameter \(key) is not a component (registry bug)") }
        return c
    }
}

/// How an encoder is described and built.
public struct EncoderFactory: Sendable {
    /// The feature maps the encoder will produce, computed from the config alone.
    public var featureSpec: @Sendable (ResolvedConfig) throws -> FeatureSpec
    /// Builds the encoder (allocates weights).
    public var make: @Sendable (ResolvedConfig) throws -> any Encoder
    /// How the encoder takes checkpoints published elsewhere (classifier names, key maps):
    /// the plugin's hook, so the import code names no plugin.
    public var checkpoint: CheckpointNaming
    /// The input sizes the encoder accepts (its maps are then `ceil(size / stride)`); a
    /// detector refuses others before allocating.
    public var inputSizes: InputSizeRule

    /// - Parameters:
    ///   - featureSpec: the maps a config gives, without building.
    ///   - inputSizes: the input sizes the encoder accepts (default: any).
    ///   - checkpoint: classifier prefixes and key maps (default: timm names, classifier `fc`).
    ///   - make: builds the encoder.
    public init(featureSpec: @escaping @Sendable (ResolvedConfig) throws -> FeatureSpec,
                inputSizes: InputSizeRule = .any,
                checkpoint: CheckpointNaming = CheckpointNaming(),
                make: @escaping @Sendable (ResolvedConfig) throws -> any Encoder) {
        self.featureSpec = featureSpec
        self.inputSizes = inputSizes
        self.checkpoint = checkpoint
        self.make = make
    }
}

/// How a neck is described and built, given the encoder's feature spec and the pyramid levels.
public struct NeckFactory: Sendable {
    public var outputSpec: @Sendable (ResolvedConfig, FeatureSpec, ClosedRange<Int>) throws -> FeatureSpec
    public var make: @Sendable (ResolvedConfig, FeatureSpec, ClosedRange<Int>) throws -> any Neck

    public init(outputSpec: @escaping @Sendable (ResolvedConfig, FeatureSpec, ClosedRange<Int>) throws -> FeatureSpec,
                make: @escaping @Sendable (ResolvedConfig, FeatureSpec, ClosedRange<Int>) throws -> any Neck) {
        self.outputSpec = outputSpec
        self.make = make
    }
}

/// What a detector tells its head besides the head's own config.
public struct HeadContext: Sendable {
    /// The pyramid the head reads.
    public var pyramid: FeatureSpec
    /// The encoder's deepest map (input of a global classifier).
    public var deepest: FeatureLevel
    /// Anchors per pyramid location.
    public var anchorsPerLocation: Int
    /// Box classes (1 for lung opacity).
    public var classes: Int
    /// Dropout before the box-classification output.
    public var dropout: Float
    /// Dropout in the global classifier (nil: no global classifier).
    public var globalDropout: Float?

    public init(pyramid: FeatureSpec, deepest: FeatureLevel, anchorsPerLocation: Int, classes: Int = 1,
                dropout: Float, globalDropout: Float?) {
        self.pyramid = pyramid
        self.deepest = deepest
        self.anchorsPerLocation = anchorsPerLocation
        self.classes = classes
        self.dropout = dropout
        self.globalDropout = globalDropout
    }
}

/// How a head is built, given the pyramid and the encoder's deepest map.
public struct HeadFactory: Sendable {
    public var check: @Sendable (ResolvedConfig, HeadContext) throws -> Void
    public var make: @Sendable (ResolvedConfig, HeadContext) throws -> any Head

    public init(check: @escaping @Sendable (ResolvedConfig, HeadContext) throws -> Void = { _, _ in },
                make: @escaping @Sendable (ResolvedConfig, HeadContext) throws -> any Head) {
        self.check = check
        self.make = make
    }
}

/// How a whole detector is checked and built.
public struct DetectorFactory: Sendable {
    /// Checks that the parts fit, from the config alone (no weights allocated).
    public var check: @Sendable (ResolvedConfig, Registry) throws -> Void
    public var make: @Sendable (ResolvedConfig, Registry) throws -> Detector

    public init(check: @escaping @Sendable (ResolvedConfig, Registry) throws -> Void,
                make: @escaping @Sendable (ResolvedConfig, Registry) throws -> Detector) {
        self.check = check
        self.make = make
    }
}

/// A plugin: one target that registers a family of components.
///
/// Registration is explicit: the application lists its plugins and calls
/// ``Registry/init(plugins:)``; nothing registers itself as a side effect of importing.
public protocol OpacityPlugin {
    /// The plugin's name, shown in `opacity plugins` and in duplicate-name errors.
    static var name: String { get }
    /// Adds this plugin's components.
    static func register(into registry: inout Registry) throws
}

/// Maps component names to their parameters and factories, and turns config strings into
/// checked, canonical configs and into models.
public struct Registry: Sendable {
    private var infos: [String: ComponentInfo] = [:]
    private var encoders: [String: EncoderFactory] = [:]
    private var necks: [String: NeckFactory] = [:]
    private var heads: [String: HeadFactory] = [:]
    private var detectors: [String: DetectorFactory] = [:]
    /// The plugins registered, in order.
    public private(set) var plugins: [String] = []

    public init() {}

    /// A registry holding the given plugins' components.
    /// - Throws: ``ConfigError/duplicateName(kind:name:firstPlugin:secondPlugin:)`` when two
    ///   plugins register the same name.
    public init(plugins: [any OpacityPlugin.Type]) throws {
        for p in plugins { try add(p) }
    }

    /// Adds a plugin's components.
    public mutating func add(_ plugin: any OpacityPlugin.Type) throws {
        try plugin.register(into: &self)
        plugins.append(plugin.name)
    }

    private mutating func insert(_ info: ComponentInfo) throws {
        if let old = infos[info.key] {
            throw ConfigError.duplicateName(kind: info.kind.rawValue, name: info.name, firstPlugin: old.plugin, secondPlugin: info.plugin)
        }
        infos[info.key] = info
    }

    public mutating func registerEncoder(_ info: ComponentInfo, _ factory: EncoderFactory) throws {
        precondition(info.kind == .encoder)
        try insert(info)
        encoders[info.name] = factory
    }

    public mutating func registerNeck(_ info: ComponentInfo, _ factory: NeckFactory) throws {
        precondition(info.kind == .neck)
        try insert(info)
        necks[info.name] = factory
    }

    public mutating func registerHead(_ info: ComponentInfo, _ factory: HeadFactory) throws {
        precondition(info.kind == .head)
        try insert(info)
        heads[info.name] = factory
    }

    public mutating func registerDetector(_ info: ComponentInfo, _ factory: DetectorFactory) throws {
        precondition(info.kind == .detector)
        try insert(info)
        detectors[info.name] = factory
    }

    /// Every registered component, sorted by kind then name.
    public var components: [ComponentInfo] {
        infos.values.sorted { ($0.kind.rawValue, $0.name) < ($1.kind.rawValue, $1.name) }
    }

    /// The names registered for a role.
    public func names(_ kind: ComponentKind) -> [String] { components.filter { $0.kind == kind }.map(\.name) }

    /// The component registered as `kind/name`.
    public func info(_ kind: ComponentKind, _ name: String) throws -> ComponentInfo {
        if let i = infos["\(kind.rawValue)/\(name)"] { return i }
        let valid = names(kind)
        throw ConfigError.unknownName(kind: kind.rawValue, name: name, valid: valid, nearest: nearestMatch(name, in: valid))
    }

    // MARK: Resolving

    /// Checks a config against the registry and fills in defaults.
    /// - Throws: ``ConfigError`` naming the unknown name or key (with the valid ones and the
    ///   nearest match) or the value that has the wrong type or range.
    public func resolve(_ config: Config, as kind: ComponentKind) throws -> ResolvedConfig {
        let info = try self.info(kind, config.name)
        var values: [String: ConfigValue] = [:]
        var components: [String: ResolvedConfig] = [:]
        let validKeys = info.parameters.map(\.name)
        for (key, _) in config.arguments where !validKeys.contains(key) {
            throw ConfigError.unknownKey(component: info.name, key: key, valid: validKeys, nearest: nearestMatch(key, in: validKeys))
        }
        var canonicalArgs: [(key: String, value: ConfigValue)] = []
        for spec in info.parameters {
            let given = config[spec.name]
            var value = try check(given ?? spec.defaultValue, spec, component: info.name)
            if case .component(let k) = spec.kind {
                let nested: Config
                switch value {
                case .string(let s): nested = Config(name: s)
                case .config(let c): nested = c
                default: fatalError("unreachable")
                }
                let r = try resolve(nested, as: k)
                components[spec.name] = r
                value = .config(r.canonical)
                let def: Config
                switch spec.defaultValue {
                case .string(let s): def = Config(name: s)
                case .config(let c): def = c
                default: def = Config(name: "")
                }
                let defCanon = (try? resolve(def, as: k).canonical) ?? def
                if r.canonical != defCanon { canonicalArgs.append((spec.name, .config(r.canonical))) }
            } else {
                let def = try check(spec.defaultValue, spec, component: info.name)
                if value != def { canonicalArgs.append((spec.name, value)) }
            }
            values[spec.name] = value
        }
        canonicalArgs.sort { $0.key < $1.key }
        return ResolvedConfig(info: info, values: values, components: components,
                              canonical: Config(name: info.name, arguments: canonicalArgs))
    }

    private func check(_ v: ConfigValue, _ spec: ParameterSpec, component: String) throws -> ConfigValue {
        func bad(_ expected: String? = nil) -> ConfigError {
            .invalidValue(component: component, key: spec.name, value: v.description, expected: expected ?? spec.kind.description)
        }
        // a number outside the key's range: the range, and its end nearest to the number
        func nearestFloat(_ x: Double, _ r: ClosedRange<Double>) -> String {
            let n = x.isNaN ? r.lowerBound : min(max(x, r.lowerBound), r.upperBound)
            return spec.kind.description + " (nearest valid: \(Config.format(n)))"
        }
        switch (spec.kind, v) {
        case (.int(let r), .int(let x)):
            if let r, !r.contains(x) {
                // name the nearest value the key takes (the range's end on that side)
                throw bad(spec.kind.description + " (nearest valid: \(min(max(x, r.lowerBound), r.upperBound)))")
            }
            return .int(x)
        case (.float(let r), .float(let x)):
            if let r, !r.contains(x) { throw bad(nearestFloat(x, r)) }
            return .float(x)
        case (.float(let r), .int(let x)):
            if let r, !r.contains(Double(x)) { throw bad(nearestFloat(Double(x), r)) }
            return .float(Double(x))
        case (.bool, .bool): return v
        case (.string(let choices), .string(let s)):
            if let choices, !choices.contains(s) {
                throw bad("one of \(choices.joined(separator: ", "))" + (nearestMatch(s, in: choices).map { " (did you mean '\($0)'?)" } ?? ""))
            }
            return v
        case (.range(let within), .range(let r)):
            if let within, !(within.contains(r.lowerBound) && within.contains(r.upperBound)) {
                // both ends moved into the allowed span: the nearest range the key takes
                let lo = min(max(r.lowerBound, within.lowerBound), within.upperBound)
                let hi = min(max(r.upperBound, within.lowerBound), within.upperBound)
                throw bad(spec.kind.description + " (nearest valid: \(lo)-\(hi))")
            }
            return v
        case (.range(let within), .int(let x)):
            if let within, !within.contains(x) {
                let n = min(max(x, within.lowerBound), within.upperBound)
                throw bad(spec.kind.description + " (nearest valid: \(n))")
            }
            return .range(x...x)
        case (.component, .string), (.component, .config): return v
        default: throw bad()
        }
    }

    /// The canonical form of a config: names checked, defaults elided, keys sorted.
    public func canonical(_ config: Config, as kind: ComponentKind = .detector) throws -> Config {
        try resolve(config, as: kind).canonical
    }

    /// Parses and canonicalises a config string.
    public func canonical(_ text: String, as kind: ComponentKind = .detector) throws -> String {
        try canonical(Config(parsing: text), as: kind).description
    }

    // MARK: Building

    public func encoderFactory(_ name: String) throws -> EncoderFactory {
        guard let f = encoders[name] else { _ = try info(.encoder, name); fatalError("unreachable") }
        return f
    }

    public func neckFactory(_ name: String) throws -> NeckFactory {
        guard let f = necks[name] else { _ = try info(.neck, name); fatalError("unreachable") }
        return f
    }

    public func headFactory(_ name: String) throws -> HeadFactory {
        guard let f = heads[name] else { _ = try info(.head, name); fatalError("unreachable") }
        return f
    }

    /// Builds an encoder from a config string such as `resnet34`, after a probe build has
    /// counted its values (see ``makeDetector(_:)``).
    /// - Throws: ``ConfigError``, ``ConfigError/tooLarge(config:values:limit:)`` above
    ///   ``InputLimits/modelValues``.
    public func makeEncoder(_ text: String) throws -> any Encoder {
        let r = try resolve(Config(parsing: text), as: .encoder)
        let f = try encoderFactory(r.name)
        try Self.checkSize(r) { _ = try f.make(r) }
        return try f.make(r)
    }

    /// Probes `build` (lazily mapped zeros, nothing drawn; ``Initializer/shapeProbe(limit:_:)``)
    /// and refuses a model of more than ``InputLimits/modelValues`` values, or one whose
    /// weights the address space cannot hold, before anything is allocated for it.
    static func checkSize(_ r: ResolvedConfig, _ build: () throws -> Void) throws {
        let limit = InputLimits.modelValues
        let probe = try Initializer.shapeProbe(limit: limit, build)
        if probe.requested > limit {
            throw ConfigError.tooLarge(config: r.canonical.description, values: probe.requested, limit: limit)
        }
        // Under the limit but unmappable (`ulimit -v`): the real build would fail to allocate.
        if !probe.complete {
            throw ConfigError.tooLarge(config: r.canonical.description, values: probe.requested, limit: limit, addressSpace: true)
        }
    }

    /// The feature spec an encoder config would produce, without building it.
    public func encoderSpec(_ text: String) throws -> FeatureSpec {
        let r = try resolve(Config(parsing: text), as: .encoder)
        return try encoderFactory(r.name).featureSpec(r)
    }

    /// Checks a detector config (parts fit each other) without allocating any weights.
    public func checkDetector(_ text: String) throws -> ResolvedConfig {
        let r = try resolve(Config(parsing: text), as: .detector)
        guard let f = detectors[r.name] else { throw ConfigError.unknownName(kind: "detector", name: r.name, valid: names(.detector), nearest: nil) }
        try f.check(r, self)
        return r
    }

    /// Builds a detector from a config string such as
    /// `retinanet(encoder=resnet34, size=512, levels=2-7, dropout=0.5)`.
    ///
    /// The parts are checked against each other first, then a probe build counts the
    /// model's values without allocating them (a config naming a model of billions of
    /// weights is refused before any is allocated); weights are drawn from the
    /// initialisation generator (wrap in ``Initializer/withSeed(_:_:)`` to repeat them).
    /// - Throws: ``ConfigError``, ``ConfigError/tooLarge(config:values:limit:addressSpace:)``
    ///   for a model of more than ``InputLimits/modelValues`` values.
    public func makeDetector(_ text: String) throws -> Detector {
        let r = try checkDetector(text)
        let f = detectors[r.name]!
        try Self.checkSize(r) { _ = try f.make(r, self) }
        return try f.make(r, self)
    }
}
