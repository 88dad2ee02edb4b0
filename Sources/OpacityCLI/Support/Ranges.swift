import ArgumentParser
import Foundation

/// A number as a user typed it: `-1`, not `-1.0`; `1.1` for a `Float` 1.1, not its `Double` digits.
func plainNumber<T: BinaryFloatingPoint & CustomStringConvertible>(_ v: T) -> String {
    v.isFinite && v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : v.description
}

/// The usage error for a value outside its range, in the one wording of every option
/// (``Wording/outOfRange(_:_:expected:nearest:)``):
/// `--threshold -1 is not valid; expected a number in [0, 1] (nearest valid: 0)`.
/// - Parameters:
///   - option: the option as typed (`--threshold`).
///   - value: what was given, as typed.
///   - expected: the valid range in words (`a number in [0, 1]`), with an example when no
///     value is nearest (an open bound: `a number in (0, 1), e.g. 0.55`).
///   - nearest: the nearest valid value, where there is one.
func outOfRange(_ option: String, _ value: String, expected: String, nearest: String? = nil) -> ValidationError {
    ValidationError(Wording.outOfRange(option, value, expected: expected, nearest: nearest))
}

/// Throws ``outOfRange(_:_:expected:nearest:)`` unless `value` is `nil` or in `lower...upper`
/// (the nearest bound is the nearest valid value; a non-finite value gets none).
func requireRange<T: BinaryFloatingPoint & CustomStringConvertible>(_ option: String, _ value: T?, _ lower: T, _ upper: T) throws {
    guard let value else { return }
    guard value.isFinite, value >= lower, value <= upper else {
        let nearest = value.isNaN ? nil : plainNumber(min(max(value, lower), upper))
        throw outOfRange(option, plainNumber(value), expected: "a number in [\(plainNumber(lower)), \(plainNumber(upper))]", nearest: nearest)
    }
}

/// Throws ``outOfRange(_:_:expected:nearest:)`` unless `value` is `nil` or in `lower...upper`.
func requireRange(_ option: String, _ value: Int?, _ lower: Int, _ upper: Int, noun: String = "an integer") throws {
    guard let value, !(lower...upper).contains(value) else { return }
    throw outOfRange(option, "\(value)", expected: "\(noun) in \(lower)...\(upper)", nearest: "\(min(max(value, lower), upper))")
}

/// Throws ``outOfRange(_:_:expected:nearest:)`` unless `value` is `nil` or at least `lower`.
func requireAtLeast(_ option: String, _ value: Int?, _ lower: Int, noun: String = "an integer") throws {
    guard let value, value < lower else { return }
    throw outOfRange(option, "\(value)", expected: "\(noun) of at least \(lower)", nearest: "\(lower)")
}
