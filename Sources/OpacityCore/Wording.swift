import Foundation

/// Wording shared by every message that prints a count with its noun.
public enum Wording {
    /// `n` with its noun in the right number: `1 image`, `2 images`, `0 boxes`.
    ///
    /// - Parameters:
    ///   - n: the count.
    ///   - singular: the noun for one (`image`).
    ///   - plural: the noun for any other count; `nil` adds `s` to `singular`.
    /// - Returns: the count, a space and the noun.
    public static func count(_ n: Int, _ singular: String, plural: String? = nil) -> String {
        "\(n) " + (n == 1 ? singular : plural ?? singular + "s")
    }

    /// A number as a user typed it: `-1`, not `-1.0`; `1.1` for a `Float` 1.1, not its `Double`
    /// digits. Whole numbers below 1e15 in magnitude print without a fraction, others as
    /// `description` does (`nan`, `inf`, `1e+20`).
    public static func plainNumber<T: BinaryFloatingPoint & CustomStringConvertible>(_ v: T) -> String {
        v.isFinite && v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : v.description
    }

    /// A bound of a valid range as messages write it: a power of ten from 1e6 up as `1e6`
    /// (`-1e7`), which a user can type back; any other number as ``plainNumber(_:)``
    /// (`10000`, `0.5`). Never C's `%g` form (`1e+06`).
    public static func boundNumber(_ v: Double) -> String {
        if v.isFinite, v != 0 {
            let e = log10(abs(v)).rounded()
            if e >= 6, e < 300, abs(v) == pow(10, e) { return (v < 0 ? "-" : "") + "1e\(Int(e))" }
        }
        return plainNumber(v)
    }

    /// The one wording of a value outside its valid range, for every option of the command line
    /// (`opacity`'s own checks, the recipe's ``RunError``-style checks, `opacity serve`'s):
    /// `--threshold -1 is not valid; expected a number in [0, 1] (nearest valid: 0)`.
    ///
    /// - Parameters:
    ///   - option: the option as typed (`--threshold`).
    ///   - value: the value given, as typed.
    ///   - expected: the valid range in words (`a number in [0, 1]`, `an integer in 2...100`,
    ///     `an integer of at least 1`), with an example where no value is nearest (an open bound).
    ///   - nearest: the valid value nearest to `value`, if one is (a closed bound, an integer).
    /// - Returns: the message.
    public static func outOfRange(_ option: String, _ value: String, expected: String, nearest: String? = nil) -> String {
        "\(option) \(value) is not valid; expected \(expected)" + (nearest.map { " (nearest valid: \($0))" } ?? "")
    }
}
