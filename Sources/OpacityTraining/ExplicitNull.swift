import Foundation

/// An optional property that `Codable` writes as an explicit `null` when it has no value,
/// where the synthesized encoding would leave the key out.
///
/// A documented JSON schema (such as `report.json`, Documentation/Evaluation.md) then always
/// has every key, and a reader sees that a value is missing rather than guessing whether the
/// writer knew the key. Decoding accepts the key with `null` and also a missing key (both
/// give `nil`), so files written before a key existed still read.
///
/// ```swift
/// struct Scores: Codable { @ExplicitNull var ap: Double? = nil }  // {"ap":null}
/// ```
@propertyWrapper
public struct ExplicitNull<Value: Codable>: Codable {
    /// The value; `nil` is written as `null`.
    public var wrappedValue: Value?

    /// Wraps a value (`nil` for none).
    public init(wrappedValue: Value?) { self.wrappedValue = wrappedValue }

    /// Reads the value or `null`.
    /// - Throws: `DecodingError` when the value is neither `null` nor a `Value`.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        wrappedValue = c.decodeNil() ? nil : try c.decode(Value.self)
    }

    /// Writes the value, or `null` when there is none.
    /// - Throws: the encoder's errors.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        if let wrappedValue { try c.encode(wrappedValue) } else { try c.encodeNil() }
    }
}

extension ExplicitNull: Sendable where Value: Sendable {}

extension KeyedDecodingContainer {
    /// A missing key decodes as `nil`, as for a plain optional property (the synthesized
    /// decoder would otherwise throw `keyNotFound` for a wrapped one).
    /// - Throws: `DecodingError` when the value is neither `null` nor a `Value`.
    public func decode<Value>(_ type: ExplicitNull<Value>.Type, forKey key: Key) throws -> ExplicitNull<Value> {
        ExplicitNull(wrappedValue: try decodeIfPresent(Value.self, forKey: key))
    }
}
