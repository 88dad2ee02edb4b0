import Foundation
import OpacityTensor
import OpacityCore

/// Which of a detector's weights a load touches.
public enum WeightPart: Sendable, Equatable {
    /// Every parameter and buffer.
    case all
    /// Only the encoder's (`encoder.*`), for transfer from ImageNet or another detector.
    case encoder
    /// Only paths starting with this prefix.
    case prefix(String)

    var prefix: String? {
        switch self {
        case .all: return nil
        case .encoder: return "encoder."
        case .prefix(let p): return p
        }
    }
}

/// A detector built from a bundle, with what the load did.
public struct LoadedDetector {
    /// The detector, in evaluation mode.
    public let detector: Detector
    /// Which tensors loaded (strict loads list every one).
    public let report: LoadReport
    /// The bundle's metadata and table.
    public let info: BundleInfo
    /// The SHA-256 (lower-case hex) of the very bytes the detector was built from, when
    /// they were read once into memory (``Detector/loadHashed(from:registry:options:)``,
    /// ``Zoo/loadDetector(_:registry:options:)``); `nil` for loads that read the file lazily.
    public var sha256: String? = nil
}

extension Detector {
    /// A detector config key that older versions accepted for starting encoder weights
    /// (`retinanet(..., encoder_weights="FILE")`). Starting weights are now a training option
    /// only (`TrainingOptions.encoderWeights`, `opacity train --encoder-weights`); bundles written
    /// with the key still load: it is stripped from their config when they are read.
    static let legacyEncoderWeightsKey = "encoder_weights"

    /// Saves the detector's parameters and buffers to one bundle with its config string.
    ///
    /// - Parameters:
    ///   - url: the file to write atomically (conventionally `*.opb`).
    ///   - storage: the storage policy (``StoragePolicy/fp32`` by default; ``StoragePolicy/int8``
    ///     is about 4x smaller).
    ///   - metadata: provenance, metrics and extras; `kind` and `config` are set from the detector.
    ///   - compressionLevel: zstd level (1...19).
    /// - Returns: what was written.
    /// - Throws: ``BundleError``.
    @discardableResult
    public func save(to url: URL, storage: StoragePolicy = .fp32, metadata: BundleMetadata = BundleMetadata(),
                     compressionLevel: Int = 3) throws -> BundleSummary {
        var m = metadata
        m.kind = .detector
        m.config = config
        return try WeightBundle.write(to: url, metadata: m, groups: [TensorGroup(WeightBundle.modelGroup, stateDict(), storage: storage)],
                                      compressionLevel: compressionLevel)
    }

    /// Saves only the encoder's weights, with timm's names and the encoder's config
    /// string, as an encoder bundle for ``loadEncoderWeights(from:)`` or `opacity train --encoder-weights`.
    /// - Parameter registry: resolves the encoder's config from the detector's.
    /// - Throws: ``BundleError``, or ``ConfigError`` if the registry cannot resolve the config.
    @discardableResult
    public func saveEncoder(to url: URL, registry: Registry, storage: StoragePolicy = .fp32,
                            metadata: BundleMetadata = BundleMetadata()) throws -> BundleSummary {
        let resolved = try registry.checkDetector(Detector.strippingEncoderWeights(config))
        let encoderConfig = resolved.components["encoder"]?.canonical.description ?? ""
        var m = metadata
        m.kind = .encoder
        m.config = encoderConfig
        return try WeightBundle.write(to: url, metadata: m, groups: [TensorGroup(WeightBundle.modelGroup, encoder.stateDict(), storage: storage)])
    }

    /// Builds a detector from the config string stored in a bundle and loads its weights.
    ///
    /// Reads only the `model` group (a checkpoint's optimizer state is not decompressed).
    /// The detector is returned in evaluation mode; call `train()` to train it further.
    /// - Parameters:
    ///   - url: a detector bundle.
    ///   - registry: must know every component the config names (e.g. `Registry.standard()`).
    ///   - options: ``LoadOptions/strict`` by default: every name must match in both
    ///     directions, with equal shapes.
    /// - Returns: the detector.
    /// - Throws: ``BundleError``: a damaged file, ``BundleError/wrongKind(file:expected:found:)``
    ///   for an encoder bundle, ``BundleError/cannotBuild(file:config:reason:)`` when the
    ///   registry lacks a component, ``BundleError/doesNotFit(file:report:)`` listing missing,
    ///   unexpected and mis-shaped names (nothing is loaded then).
    public static func load(from url: URL, registry: Registry, options: LoadOptions = .strict) throws -> Detector {
        try loadWithReport(from: url, registry: registry, options: options).detector
    }

    /// ``load(from:registry:options:)`` that also returns the load report and the bundle's info.
    public static func loadWithReport(from url: URL, registry: Registry, options: LoadOptions = .strict) throws -> LoadedDetector {
        try loadWithReport(reader: try BundleReader(url), registry: registry, options: options)
    }

    /// ``loadWithReport(from:registry:options:)`` from the file's bytes read once into
    /// memory, with ``LoadedDetector/sha256`` the digest of exactly those bytes: a file
    /// replaced or rewritten while it is loaded cannot make the digest (reported by `detect`
    /// and `serve`) describe other weights than the ones loaded.
    /// - Throws: ``BundleError``, or a file error when it cannot be read or changes size
    ///   while it is read.
    public static func loadHashed(from url: URL, registry: Registry, options: LoadOptions = .strict) throws -> LoadedDetector {
        let fd = try FileDescriptor.open(reading: url.path)
        let size = try fd.size()
        let bytes = try fd.read(count: Int(size), at: 0)
        // a byte more (or fewer) means the file changed while it was read
        guard UInt64(bytes.count) == size, try fd.read(count: 1, at: size).isEmpty else {
            throw BundleError.truncated(file: url.path, section: "file (it changed while it was read)", expectedBytes: size, actualBytes: UInt64(bytes.count))
        }
        var h = SHA256()
        bytes.withUnsafeBytes { h.update($0) }
        var loaded = try loadWithReport(reader: try BundleReader(bytes: bytes, url: url), registry: registry, options: options)
        loaded.sha256 = h.finalize().hex
        return loaded
    }

    /// ``load(from:registry:options:)`` from an open reader (e.g. over bytes already
    /// hash-checked, ``BundleReader/init(bytes:url:)``).
    public static func loadWithReport(reader: BundleReader, registry: Registry, options: LoadOptions = .strict) throws -> LoadedDetector {
        let info = reader.info
        let url = info.url
        guard info.metadata.kind == .detector else {
            throw BundleError.wrongKind(file: url.path, expected: "detector", found: info.metadata.kind.rawValue)
        }
        let detector = try checkedBuild(info, registry: registry, options: options, file: url.path)
        let state = try reader.tensors(groups: info.groups.contains(WeightBundle.modelGroup) ? [WeightBundle.modelGroup] : [])[WeightBundle.modelGroup] ?? [:]
        let report: LoadReport
        do { report = try detector.load(state, options: options) } catch let e as LoadError {
            throw BundleError.doesNotFit(file: url.path, report: e.report)
        }
        detector.eval()
        return LoadedDetector(detector: detector, report: report, info: info)
    }

    /// Builds the detector a bundle's config names, after checking the bundle's tensor table
    /// against the model's parameter shapes, which a build under
    /// ``Initializer/withShapeProbe(_:)`` gives without spending memory on weights. A
    /// table that does not fit (a 482-byte file naming a huge model, a tensor claiming 40 GB)
    /// is refused before the model is built and before any tensor is decompressed.
    /// - Throws: ``BundleError/doesNotFit(file:report:)``, ``BundleError/cannotBuild(file:config:reason:)``.
    ///
    /// When the bundle gives every parameter and buffer with its shape, the probe build itself is
    /// returned: loading replaces each of its tensors, so drawing random initial weights only to
    /// discard them (59% of `opacity detect`'s process time for a ResNet-34 RetinaNet, and a
    /// second copy of the weights in memory) is skipped. Otherwise (a partial bundle, shapes that
    /// differ) the model is built for real, so what the bundle does not give keeps its usual
    /// initial values.
    static func checkedBuild(_ info: BundleInfo, registry: Registry, options: LoadOptions, file: String) throws -> Detector {
        let probe = try Initializer.shapeProbe { try build(config: info.metadata.config, registry: registry, file: file) }
        try checkTable(info, against: probe.value, options: options, file: file)
        if probe.complete && suppliesEverything(info, probe.value) { return probe.value }
        return try build(config: info.metadata.config, registry: registry, file: file)
    }

    /// Whether the bundle's `model` group holds every parameter and buffer of `model` with the
    /// same shape (so that loading replaces every tensor the model has).
    static func suppliesEverything(_ info: BundleInfo, _ model: Detector) -> Bool {
        var given: [String: [Int]] = [:]
        for e in info.tensors where e.group == WeightBundle.modelGroup { given[e.name] = e.shape }
        return model.namedParameters().allSatisfy { given[$0.0] == $0.1.shape }
            && model.namedBuffers().allSatisfy { given[$0.0] == $0.1.value.shape }
    }

    /// Checks the names and shapes of a bundle's `model` group against `model` as
    /// ``Module/load(_:options:only:)`` would, and bounds every other group's tensors by
    /// the model's largest (optimizer state has the parameters' shapes), reading no data.
    /// - Throws: ``BundleError/doesNotFit(file:report:)``.
    public static func checkTable(_ info: BundleInfo, against model: Detector, options: LoadOptions = .strict, file: String) throws {
        var expected: [String: [Int]] = [:]
        for (n, p) in model.namedParameters() { expected[n] = p.shape }
        for (n, b) in model.namedBuffers() { expected[n] = b.value.shape }
        var report = LoadReport()
        var given = Set<String>()
        let largest = expected.values.map { $0.reduce(1, *) }.max() ?? 0
        for e in info.tensors {
            let count = e.shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
            guard e.group == WeightBundle.modelGroup else {
                if count > largest { report.unexpected.append("\(e.group)/\(e.name) (\(count) values, more than any parameter)") }
                continue
            }
            given.insert(e.name)
            if let shape = expected[e.name] {
                if shape != e.shape { report.mismatched.append((e.name, shape, e.shape)) } else { report.loaded.append(e.name) }
            } else {
                report.unexpected.append(e.name)
            }
        }
        report.missing = expected.keys.filter { !given.contains($0) }.sorted()
        let failed = report.unexpected.contains { $0.contains("/") }
            || (!report.mismatched.isEmpty && options.contains(.shapeMismatch))
            || (!report.missing.isEmpty && options.contains(.noMissingKeys))
            || (!report.unexpected.isEmpty && options.contains(.noUnusedKeys))
        if failed {
            report.refused = true
            throw BundleError.doesNotFit(file: file, report: report)
        }
    }

    /// Builds a detector for a stored config string. A legacy `encoder_weights` key (bundles
    /// from older versions) is stripped: the bundle's weights replace those anyway, and the
    /// detector's ``config`` is the stripped string.
    static func build(config: String, registry: Registry, file: String) throws -> Detector {
        let stripped = strippingEncoderWeights(config)
        do { return try registry.makeDetector(stripped) } catch {
            throw BundleError.cannotBuild(file: file, config: config, reason: "\(error)")
        }
    }

    /// The config string without a top-level legacy `encoder_weights` argument.
    static func strippingEncoderWeights(_ config: String) -> String {
        guard var c = try? Config(parsing: config), c[legacyEncoderWeightsKey] != nil else { return config }
        c[legacyEncoderWeightsKey] = nil
        return c.description
    }

    /// Loads weights from a bundle into this detector.
    ///
    /// - A detector bundle gives its `model` group; with `part: .encoder` only `encoder.*`.
    /// - An encoder bundle (timm names without a prefix) always loads into `encoder.*`.
    ///
    /// Checks run before anything changes: on failure the detector is untouched.
    /// - Parameters:
    ///   - url: the bundle.
    ///   - part: which weights take part (``WeightPart/all`` by default).
    ///   - options: strict by default, applied within `part`.
    /// - Returns: the report (what loaded; with relaxed options, what did not).
    /// - Throws: ``BundleError/doesNotFit(file:report:)`` with the report, or a file error.
    @discardableResult
    public func loadWeights(from url: URL, part: WeightPart = .all, options: LoadOptions = .strict) throws -> LoadReport {
        try loadWeights(reader: try BundleReader(url), part: part, options: options)
    }

    /// ``loadWeights(from:part:options:)`` from an open reader.
    public func loadWeights(reader: BundleReader, part: WeightPart = .all, options: LoadOptions = .strict) throws -> LoadReport {
        let info = reader.info
        let url = info.url
        guard info.groups.contains(WeightBundle.modelGroup) else {
            throw BundleError.missingGroup(file: url.path, group: WeightBundle.modelGroup, available: info.groups)
        }
        var state: [String: Tensor]
        var prefix = part.prefix
        switch info.metadata.kind {
        case .encoder:
            // encoder bundles hold timm's names without the `encoder.` prefix
            let scope = prefix.map { "encoder.".hasPrefix($0) ? "encoder." : $0 } ?? "encoder."
            guard scope.hasPrefix("encoder.") else {
                throw BundleError.wrongKind(file: url.path, expected: "detector (to load \(scope)*)", found: "encoder")
            }
            let inner = String(scope.dropFirst("encoder.".count))
            let got = try reader.tensors(groups: [WeightBundle.modelGroup], where: { $0.name.hasPrefix(inner) })[WeightBundle.modelGroup] ?? [:]
            state = Dictionary(uniqueKeysWithValues: got.map { ("encoder." + $0.key, $0.value) })
            prefix = scope
        case .detector, .tensors:
            state = try reader.tensors(groups: [WeightBundle.modelGroup], where: { e in prefix.map { e.name.hasPrefix($0) } ?? true })[WeightBundle.modelGroup] ?? [:]
        }
        do { return try load(state, options: options, only: prefix) } catch let e as LoadError {
            throw BundleError.doesNotFit(file: url.path, report: e.report)
        }
    }

    /// Loads the encoder's weights from an encoder bundle (e.g. made by `opacity import`)
    /// or from the encoder part of a detector bundle; strict within `encoder.*`.
    /// - Returns: the report.
    /// - Throws: ``BundleError``; the detector is unchanged on failure.
    @discardableResult
    public func loadEncoderWeights(from url: URL) throws -> LoadReport {
        try loadWeights(from: url, part: .encoder)
    }

    /// Loads encoder weights named the way `opacity train --encoder-weights` accepts: a file path, or
    /// `zoo:NAME` for a zoo entry that is shipped or already fetched (never fetched here).
    /// - Throws: ``BundleError`` or ``ZooError``.
    @discardableResult
    public func loadEncoderWeights(reference: String) throws -> LoadReport {
        try loadWeights(reference: reference, part: .encoder)
    }

    /// Loads weights named by a file path or `zoo:NAME` (a shipped or already fetched zoo
    /// entry; never fetched here), strictly within `part`.
    /// - Parameters:
    ///   - reference: a bundle path or `zoo:NAME`.
    ///   - part: which weights take part (``WeightPart/all``: every detector weight, for
    ///     transfer from a detector of the same architecture).
    /// - Returns: the report.
    /// - Throws: ``BundleError`` or ``ZooError``; the detector is unchanged on failure.
    @discardableResult
    public func loadWeights(reference: String, part: WeightPart = .all) throws -> LoadReport {
        if let name = Zoo.entryName(inReference: reference) {
            let zoo = try Zoo.standard()
            let (url, bytes) = try zoo.verifiedBytes(name)
            return try loadWeights(reader: try BundleReader(bytes: bytes, url: url), part: part, options: .strict)
        }
        return try loadWeights(from: URL(fileURLWithPath: reference), part: part)
    }
}
