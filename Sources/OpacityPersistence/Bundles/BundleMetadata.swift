import Foundation
import OpacityCore

/// Where a set of weights came from: the data, the split, the epoch, the seed.
///
/// Every field is optional; a trainer fills in what it knows. Stored as the `provenance`
/// object of the bundle metadata.
public struct Provenance: Codable, Hashable, Sendable {
    /// The training data, e.g. `rsna-stage2-train` or a folder path.
    public var data: String?
    /// The validation fold held out (0-based), if trained on folds.
    public var fold: Int?
    /// The number of folds.
    public var folds: Int?
    /// The epoch after which the weights were saved (1-based).
    public var epoch: Int?
    /// The random seed of the run.
    public var seed: UInt64?
    /// Where imported weights came from (file, URL, model tag).
    public var source: String?
    /// Anything else worth keeping.
    public var notes: String?

    /// Provenance with the fields given.
    public init(data: String? = nil, fold: Int? = nil, folds: Int? = nil, epoch: Int? = nil, seed: UInt64? = nil,
                source: String? = nil, notes: String? = nil) {
        self.data = data
        self.fold = fold
        self.folds = folds
        self.epoch = epoch
        self.seed = seed
        self.source = source
        self.notes = notes
    }

    /// Whether no field is set.
    public var isEmpty: Bool { self == Provenance() }
}

/// What a bundle holds besides its tensors: the model's config string, the framework
/// version, the creation time, training provenance, metrics and free-form extras.
///
/// See Documentation/Bundles.md for the JSON form.
public struct BundleMetadata: Sendable {
    /// What the tensors are weights of.
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// A whole detector: ``BundleMetadata/config`` is a detector config string and the
        /// `model` group's names start with `encoder.`, `neck.`, `head.`.
        case detector
        /// An encoder alone (e.g. imported ImageNet weights): ``BundleMetadata/config`` is an
        /// encoder config string and the `model` group's names are timm's, without a prefix.
        case encoder
        /// Tensors that are not a registered model.
        case tensors
    }

    /// What the tensors are weights of.
    public var kind: Kind
    /// The canonical config string of the model (detector or encoder), or empty.
    public var config: String
    /// The Opacity version that wrote the bundle (filled in on writing).
    public var frameworkVersion: String
    /// When the bundle was written (filled in on writing; whole seconds, UTC).
    public var created: Date
    /// The storage policy name the bundle was written with (filled in on writing).
    public var storage: String
    /// Where the weights came from.
    public var provenance: Provenance
    /// Metrics at save time, e.g. `["val_loss": 0.41, "map": 0.23]`.
    public var metrics: [String: Double]
    /// Free-form JSON values by key, e.g. `scheduler` for a checkpoint's scheduler state.
    public var extra: [String: JSONValue]

    /// Metadata for a bundle of `kind` with `config`; version, time and storage are set
    /// when the bundle is written.
    public init(kind: Kind = .detector, config: String = "", provenance: Provenance = Provenance(),
                metrics: [String: Double] = [:], extra: [String: JSONValue] = [:]) {
        self.kind = kind
        self.config = config
        self.frameworkVersion = FrameworkVersion.current
        self.created = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
        self.storage = ""
        self.provenance = provenance
        self.metrics = metrics
        self.extra = extra
    }

    /// Stores an `Encodable` value (e.g. scheduler state) under `key` in ``extra``.
    /// - Throws: ``BundleError/extraValue(file:key:reason:)`` when it cannot be encoded.
    public mutating func setExtra<T: Encodable>(_ key: String, _ value: T) throws {
        do { extra[key] = try JSONValue(encoding: value) } catch {
            throw BundleError.extraValue(file: "(metadata)", key: key, reason: "cannot encode \(T.self): \(error)")
        }
    }

    /// Decodes the value stored under `key` in ``extra``, or `nil` if there is none.
    /// - Throws: ``BundleError/extraValue(file:key:reason:)`` when it does not decode as `T`.
    public func extra<T: Decodable>(_ key: String, as type: T.Type) throws -> T? {
        guard let v = extra[key] else { return nil }
        do { return try v.decode(type) } catch {
            throw BundleError.extraValue(file: "(metadata)", key: key, reason: "cannot decode as \(T.self): \(describeDecodingError(error))")
        }
    }
}

/// One row of a bundle's tensor table.
public struct TensorEntry: Hashable, Sendable {
    /// The tensor's path, e.g. `encoder.layer1.0.conv1.weight` (unique within its group).
    public var name: String
    /// The group: `model` for weights, `optimizer` for optimizer state, or any other name.
    public var group: String
    /// How the values are stored.
    public var dtype: StorageType
    /// The dimensions, outermost first.
    public var shape: [Int]
    /// Where the stored bytes start in the decompressed data section.
    public var offset: UInt64
    /// How many stored bytes the tensor takes (``StorageType/storedLength(shape:)``).
    public var length: UInt64
    /// CRC-32 of the stored bytes.
    public var crc32: UInt32

    /// A table row.
    public init(name: String, group: String, dtype: StorageType, shape: [Int], offset: UInt64, length: UInt64, crc32: UInt32) {
        self.name = name
        self.group = group
        self.dtype = dtype
        self.shape = shape
        self.offset = offset
        self.length = length
        self.crc32 = crc32
    }

    /// The number of values.
    public var count: Int { shape.reduce(1, *) }
}

// MARK: - JSON document (the on-disk form)

struct BundleDocument: Codable {
    var format: String
    var formatVersion: UInt32
    var kind: String
    var config: String
    var frameworkVersion: String
    var created: String
    var storage: String
    var provenance: Provenance
    var metrics: [String: Double]
    var extra: [String: JSONValue]
    var tensors: [Row]

    struct Row: Codable {
        var name: String
        var group: String
        var dtype: String
        var shape: [Int]
        var offset: UInt64
        var length: UInt64
        var crc32: UInt32
    }

    enum CodingKeys: String, CodingKey {
        case format, kind, config, created, storage, provenance, metrics, extra, tensors
        case formatVersion = "format_version"
        case frameworkVersion = "framework_version"
    }

    static let formatName = "opacity-bundle"

    init(_ m: BundleMetadata, table: [TensorEntry]) {
        format = BundleDocument.formatName
        formatVersion = BundleFormat.version
        kind = m.kind.rawValue
        config = m.config
        frameworkVersion = m.frameworkVersion
        created = BundleDocument.timestamp(m.created)
        storage = m.storage
        provenance = m.provenance
        metrics = m.metrics
        extra = m.extra
        tensors = table.map { Row(name: $0.name, group: $0.group, dtype: $0.dtype.rawValue, shape: $0.shape, offset: $0.offset, length: $0.length, crc32: $0.crc32) }
    }

    static func timestamp(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        f.timeZone = TimeZone(identifier: "UTC")
        return f.string(from: d)
    }

    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return e
    }

    static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return d
    }
}

/// A decoding error as `field: reason`, with the coding path written like `tensors[3].shape`.
func describeDecodingError(_ error: Error) -> String {
    let (field, reason) = decodingErrorParts(error)
    return field.isEmpty ? reason : "\(field): \(reason)"
}

func decodingErrorParts(_ error: Error) -> (field: String, reason: String) {
    func path(_ keys: [CodingKey]) -> String {
        var s = ""
        for k in keys {
            if let i = k.intValue { s += "[\(i)]" } else { s += (s.isEmpty ? "" : ".") + k.stringValue }
        }
        return s
    }
    guard let e = error as? DecodingError else { return ("", "\(error)") }
    switch e {
    case let .keyNotFound(key, ctx):
        let p = path(ctx.codingPath)
        return (p.isEmpty ? key.stringValue : p + "." + key.stringValue, "required field is missing")
    case let .typeMismatch(type, ctx):
        return (path(ctx.codingPath), "expected \(jsonTypeName(type))")
    case let .valueNotFound(type, ctx):
        return (path(ctx.codingPath), "expected \(jsonTypeName(type)), found null")
    case let .dataCorrupted(ctx):
        let underlying = (ctx.underlyingError as NSError?).map { ": \($0.localizedDescription)" } ?? ""
        return (path(ctx.codingPath), ctx.debugDescription + underlying)
    @unknown default:
        return ("", "\(e)")
    }
}

private func jsonTypeName(_ t: Any.Type) -> String {
    switch t {
    case is String.Type: return "a string"
    case is Int.Type, is UInt32.Type, is UInt64.Type, is Int64.Type: return "an integer"
    case is Double.Type, is Float.Type: return "a number"
    case is Bool.Type: return "true or false"
    default:
        let n = "\(t)"
        if n.hasPrefix("Array") { return "an array" }
        if n.hasPrefix("Dictionary") { return "an object" }
        return n
    }
}
