import Foundation
import Opacity

/// The nearest valid value for a value the parser refused for an option with a fixed set of
/// values (every `ExpressibleByArgument` enum of the commands: `--format`, `--ensemble`,
/// `--storage`, ...).
///
/// ArgumentParser's message names the option and the accepted values but not the nearest one;
/// ``amend(_:)`` adds it to that message and leaves every other message as it is.
enum ChoiceErrors {
    /// The marker between the refused value and the option in ArgumentParser's message.
    static let invalidFor = "' is invalid for '"

    /// `message` (ArgumentParser's full message for a parse error) with ` (nearest valid:
    /// 'V')` after the list of accepted values when it refuses a value of an option that
    /// takes one of a list; `nil` for any other message.
    ///
    /// The two forms it reads (ArgumentParser 1.x):
    /// `Error: The value 'xml' is invalid for '--format <format>'. Please provide one of 'json' and 'csv'.`
    /// and, for six values or more, `... Please provide one of the following:` with one
    /// `  - value` line each.
    static func amend(_ message: String) -> String? {
        let lead = "The value '"
        guard let start = message.range(of: lead), let mark = message.range(of: invalidFor, range: start.upperBound..<message.endIndex) else {
            return nil
        }
        let value = String(message[start.upperBound..<mark.lowerBound])
        guard let optionEnd = message.range(of: "'", range: mark.upperBound..<message.endIndex) else { return nil }
        let rest = message[optionEnd.upperBound...]
        let listed = ". Please provide one of the following:\n"
        let inline = ". Please provide one of "
        if rest.hasPrefix(listed) {
            // one "  - value" line each, up to the first other line
            let after = rest.index(rest.startIndex, offsetBy: listed.count)
            let lines = rest[after...].split(separator: "\n", omittingEmptySubsequences: false)
            let values = lines.prefix { $0.hasPrefix("  - ") }.map { String($0.dropFirst(4)) }
            guard let near = nearestValue(value, in: values) else { return nil }
            let tail = lines.dropFirst(values.count)
            return String(message[..<after]) + (values.map { "  - " + $0 } + ["  (nearest valid: '\(near)')"] + tail).joined(separator: "\n")
        }
        guard rest.hasPrefix(inline), let stop = rest.range(of: ".", range: rest.index(rest.startIndex, offsetBy: inline.count)..<rest.endIndex)
        else { return nil }
        let list = rest[rest.index(rest.startIndex, offsetBy: inline.count)..<stop.lowerBound]
        // 'a', 'b' or 'c': the quoted values (none holds a quote)
        let values = list.split(separator: "'", omittingEmptySubsequences: false).enumerated().filter { $0.offset % 2 == 1 }.map { String($0.element) }
        guard let near = nearestValue(value, in: values) else { return nil }
        return String(message[..<stop.lowerBound]) + " (nearest valid: '\(near)')" + String(message[stop.lowerBound...])
    }
}
