import Foundation
import OpacityCore
import OpacityPersistence

/// The score threshold a model is used at, found on validation data: the threshold where the
/// RSNA metric peaked. Stored in the bundle metadata's `extra` as `operating_point`
/// (Documentation/Evaluation.md); detect, submit and serve use it unless told otherwise.
public struct OperatingPoint: Codable, Sendable, Hashable {
    /// Keep boxes scoring above this.
    public var threshold: Float
    /// The RSNA metric at the threshold on the validation data.
    public var metric: Double
    /// What it was measured on (folder, fold).
    public var data: String
    /// Images measured.
    public var images: Int

    public init(threshold: Float, metric: Double, data: String, images: Int) {
        self.threshold = threshold
        self.metric = metric
        self.data = data
        self.images = images
    }

    /// The metadata key.
    public static let key = "operating_point"

    /// The score threshold used when a model stores no operating point to use (none, or
    /// one that ``pickedAtZeroMetric``): detect, submit, serve and ONNX post-processing.
    public static let defaultThreshold: Float = 0.2

    /// Whether the point was picked where the validation metric was 0 at every threshold
    /// (its best, ``metric``, is 0): the model found no opacity on its validation images yet,
    /// as after an epoch or two, and the sweep's lowest threshold (0.01) was stored, no
    /// better than another. Such a point is not used: ``usable(_:)`` and
    /// ``threshold(for:fallback:)`` pass over it, as over a model that stores none.
    public var pickedAtZeroMetric: Bool { metric <= 0 }

    /// As a JSON value for ``BundleMetadata/extra``.
    public var json: JSONValue {
        .object(["threshold": .number(Double(threshold)), "metric": .number(metric), "data": .string(data), "images": .number(Double(images))])
    }

    /// Reads the operating point from metadata: `extra.operating_point`, else the trainer's
    /// validation threshold (`metrics.metric_threshold`, with `metrics.metric`); `nil` when
    /// neither is there.
    public init?(metadata m: BundleMetadata) {
        if case .object(let o)? = m.extra[Self.key], case .number(let t)? = o["threshold"] {
            var metric = 0.0, images = 0, data = ""
            if case .number(let v)? = o["metric"] { metric = v }
            if case .number(let v)? = o["images"] { images = Int(v) }
            if case .string(let v)? = o["data"] { data = v }
            self.init(threshold: Float(t), metric: metric, data: data, images: images)
            return
        }
        guard let t = m.metrics["metric_threshold"] else { return nil }
        self.init(threshold: Float(t), metric: m.metrics["metric"] ?? 0, data: m.provenance.data.map { "validation of \($0)" } ?? "validation", images: 0)
    }

    /// The operating point stored in a bundle, if any (unreadable bundles have none).
    public static func read(_ url: URL) -> OperatingPoint? {
        guard let info = try? WeightBundle.info(url) else { return nil }
        return OperatingPoint(metadata: info.metadata)
    }

    /// The operating point stored in a bundle when it is one to use: `nil` when the bundle
    /// stores none, cannot be read, or stores one that ``pickedAtZeroMetric``.
    public static func usable(_ url: URL) -> OperatingPoint? {
        guard let point = read(url), !point.pickedAtZeroMetric else { return nil }
        return point
    }

    /// The threshold to use for an ensemble: the first model's operating point to use
    /// (``usable(_:)``), else `fallback`.
    public static func threshold(for urls: [URL], fallback: Float = defaultThreshold) -> Float {
        urls.lazy.compactMap(usable).first?.threshold ?? fallback
    }

    /// Copies a bundle to `destination` with the operating point stored in its metadata;
    /// every tensor keeps its stored type. The source is not changed.
    /// - Throws: ``EvaluationError/invalidArgument(_:)`` when source and destination are
    ///   the same file; ``BundleError`` from reading or writing.
    public static func write(_ point: OperatingPoint, from source: URL, to destination: URL) throws {
        guard source.standardizedFileURL.resolvingSymlinksInPath() != destination.standardizedFileURL.resolvingSymlinksInPath() else {
            throw EvaluationError.invalidArgument("--operating-point-out \(destination.path) is the input bundle; name a new file")
        }
        let info = try WeightBundle.info(source)
        let tensors = try WeightBundle.read(source)
        var meta = info.metadata
        meta.extra[key] = point.json
        var types: [String: [String: StorageType]] = [:]
        for e in info.tensors { types[e.group, default: [:]][e.name] = e.dtype }
        let groups: [TensorGroup] = info.groups.map { g in
            let byName = types[g] ?? [:]
            let order = info.tensors.filter { $0.group == g }.map(\.name)
            let policy = StoragePolicy(name: meta.storage) { name, _ in byName[name] ?? .f32 }
            return TensorGroup(g, order.compactMap { n in tensors[g]?[n].map { (n, $0) } }, storage: policy)
        }
        try WeightBundle.write(to: destination, metadata: meta, groups: groups)
    }
}
