import ArgumentParser
import Foundation

/// A number as a user typed it: `-1`, not `-1.0`; `1.1` for a `Float` 1.1, not its `Double` digits.
func plainNumber<T: BinaryFloatingPoint & CustomStringConvertible>(_ v: T) -> String {
    v.isFinite && v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : v.description
}

/// The usage error for a number outside its range, in one wording for every option:
/// `--threshold must be in [0, 1], got -1`.
/// - Parameters:
///   - option: the option as typed (`--threshold`).
///   - range: the valid range as written in the message (`[0, 1]`, `(0, 1)`, `1 or more`).
///   - value: what was given, as typed.
func outOfRange(_ option: String, _ range: String, got value: String) -> ValidationError {
    let interval = range.hasPrefix("[") || range.hasPrefix("(")
    return ValidationError("\(option) must be \(interval ? "in " : "")\(range), got \(value)")
}

/// Throws ``outOfRange(_:_:got:)`` unless `value` is `nil` or in `lower...upper`.
func requireRange<T: BinaryFloatingPoint & CustomStringConvertible>(_ option: String, _ value: T?, _ lower: T, _ upper: T) throws {
    guard let value else { return }
    guard value.isFinite, value >= lower, value <= upper else {
        throw outOfRange(option, "[\(plainNumber(lower)), \(plainNumber(upper))]", got: plainNumber(value))
    }
}

/// Throws ``outOfRange(_:_:got:)`` unless `value` is `nil` or in `lower...upper`.
func requireRange(_ option: String, _ value: Int?, _ lower: Int, _ upper: Int) throws {
    guard let value, !(lower...upper).contains(value) else { return }
    throw outOfRange(option, "[\(lower), \(upper)]", got: "\(value)")
}

/// Throws ``outOfRange(_:_:got:)`` unless `value` is `nil` or at least `lower`.
func requireAtLeast(_ option: String, _ value: Int?, _ lower: Int) throws {
    guard let value, value < lower else { return }
    throw outOfRange(option, "\(lower) or more", got: "\(value)")
}
