import ArgumentParser
import Foundation

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
        let nearest = value.isNaN ? nil : Wording.plainNumber(min(max(value, lower), upper))
        throw outOfRange(option, Wording.plainNumber(value), expected: "a number in [\(Wording.plainNumber(lower)), \(Wording.plainNumber(upper))]", nearest: nearest)
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
