import Foundation
import OpacityCore

/// Any JSON value, for free-form metadata (scheduler state, trainer settings, notes).
///
/// Encode a `Codable` value into one with ``init(encoding:)`` and get it back with
/// ``decode(_:)``.
public enum JSONValue: Codable, Hashable, Sendable, CustomStringConvertible {
    /// `null`.
    case null
    /// `true` or `false`.
    case bool(Bool)
    /// A number.
    case number(Double)
    /// A string.
    case string(String)
    /// An array.
    case array([JSONValue])
    /// An object.
    case object([String: JSONValue])

    public init(from decoder: Swift.Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else if let o = try? c.decode([String: JSONValue].self) { self = .object(o) }
        else { throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a JSON value") }
    }

    public func encode(to encoder: Swift.Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// The JSON form of an `Encodable` value (e.g. a `ReduceLROnPlateau` scheduler).
    ///
    /// Non-finite floating-point values become the strings `inf`, `-inf` and `nan`, as
    /// everywhere in bundle metadata, and ``decode(_:)`` turns them back.
    /// - Throws: `EncodingError` when the value cannot be encoded.
    public init<T: Encodable>(encoding value: T) throws {
        let data = try BundleDocument.encoder().encode(value)
        self = try BundleDocument.decoder().decode(JSONValue.self, from: data)
    }

    /// Decodes this JSON into a `Decodable` type.
    /// - Throws: `DecodingError` naming the field that does not fit.
    public func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let data = try BundleDocument.encoder().encode(self)
        return try BundleDocument.decoder().decode(type, from: data)
    }

    /// Compact JSON text.
    public var description: String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? String(decoding: e.encode(self), as: UTF8.self)) ?? "null"
    }
}
