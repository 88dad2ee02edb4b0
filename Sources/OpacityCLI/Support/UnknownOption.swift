import ArgumentParser
import Foundation
import Opacity

/// An option that is a longer or shorter spelling of one the command takes
/// (`opacity train --limit-validation 8` for `--limit-val`, `detect --output-dir` for
/// `--output`).
///
/// ArgumentParser suggests an option only within a small edit distance, so such a spelling
/// got `Unknown option '--limit-validation'` and nothing more (new-user trial).
/// ``amend(_:arguments:)`` adds the option of the command that the typed name starts with (the
/// longest), or the one option whose name starts with the typed name.
enum UnknownOption {
    /// `message` (ArgumentParser's full message for a parse error) with `. Did you mean
    /// '--NAME'?` after its first line when that line refuses a long option without a
    /// suggestion and the command takes an option whose name is a prefix of the typed one, or
    /// the only one that starts with it (at least 6 characters in common); `nil` otherwise.
    /// - Parameters:
    ///   - message: the parser's message (`Error: Unknown option '--x'`, then the usage lines).
    ///   - arguments: the command line without the executable's name.
    static func amend(_ message: String, arguments: [String]) -> String? {
        let lead = "Error: Unknown option '"
        let lineEnd = message.firstIndex(of: "\n") ?? message.endIndex
        let first = message[..<lineEnd]
        guard first.hasPrefix(lead), first.hasSuffix("'"), first.count > lead.count + 1 else { return nil }
        let typed = String(first.dropFirst(lead.count).dropLast())
        guard typed.hasPrefix("--"), let command = command(arguments: arguments) else { return nil }
        guard let near = nearest(typed, in: optionNames(of: command)) else { return nil }
        return String(first) + ". Did you mean '\(near)'?" + message[lineEnd...]
    }

    /// The option of `names` that `typed` is a longer spelling of (the longest such name), else
    /// the only one that is a longer spelling of `typed`; at least 6 characters in common.
    static func nearest(_ typed: String, in names: [String]) -> String? {
        let minimum = 6
        if let longest = names.filter({ $0.count >= minimum && typed.hasPrefix($0) && $0 != typed }).max(by: { $0.count < $1.count }) {
            return longest
        }
        let longer = names.filter { typed.count >= minimum && $0.hasPrefix(typed) && $0 != typed }
        return longer.count == 1 ? longer[0] : nil
    }

    /// The command the leading command words of `arguments` name (`train`, `zoo add`); nil
    /// for the root or a word that names no command.
    static func command(arguments: [String]) -> (any ParsableCommand.Type)? {
        var commands: [any ParsableCommand.Type] = commandList
        var found: (any ParsableCommand.Type)?
        for word in arguments {
            guard !word.hasPrefix("-"), let next = commands.first(where: { ($0.configuration.commandName ?? $0._commandName) == word }) else { break }
            found = next
            commands = next.configuration.subcommands
        }
        return found
    }

    /// The long option names `command`'s help lists (hidden ones left out), `--threads` and
    /// the like from its option groups included.
    static func optionNames(of command: any ParsableCommand.Type) -> [String] {
        let help = OpacityCommand.helpMessage(for: command, includeHidden: false, columns: 10_000)
        var names: [String] = []
        for line in help.split(separator: "\n") where line.hasPrefix("  -") {
            var rest = line.dropFirst(2)
            if !rest.hasPrefix("--") { rest = rest.drop { $0 != " " }.drop { $0 == " " } }
            guard rest.hasPrefix("--") else { continue }
            let name = String(rest.prefix { $0.isLetter || $0.isNumber || $0 == "-" })
            if name.count > 2 && !names.contains(name) { names.append(name) }
        }
        return names
    }
}
