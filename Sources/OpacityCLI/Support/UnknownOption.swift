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
/// longest), or the one option whose name starts with the typed name. An input option given to
/// a command that takes its inputs as arguments (`opacity detect --data scans`) gets the command
/// line meant instead of the parser's suggestion (``lineMeant(forInputOption:arguments:)``).
enum UnknownOption {
    /// `message` (ArgumentParser's full message for a parse error) with `. Did you mean
    /// '--NAME'?` after its first line when that line refuses a long option without a
    /// suggestion and the command takes an option whose name is a prefix of the typed one, or
    /// the only one that starts with it (at least 6 characters in common); for an input option
    /// given to a command of ``inputsAsArguments``, its first line says so, with the line meant
    /// (``lineMeant(forInputOption:arguments:)``); `nil` otherwise.
    /// - Parameters:
    ///   - message: the parser's message (`Error: Unknown option '--x'`, then the usage lines).
    ///   - arguments: the command line without the executable's name.
    static func amend(_ message: String, arguments: [String]) -> String? {
        let lead = "Error: Unknown option '"
        let lineEnd = message.firstIndex(of: "\n") ?? message.endIndex
        let first = message[..<lineEnd]
        if first.hasPrefix(lead), let typed = first.dropFirst(lead.count).split(separator: "'", omittingEmptySubsequences: false).first,
            let meant = lineMeant(forInputOption: String(typed), arguments: arguments)
        {
            // whatever the parser suggested (`--data`: '--tta') names nothing like an input
            return "Error: Unknown option '\(typed)': `opacity \(arguments[0])` takes its inputs as arguments; did you mean \(meant)?" + message[lineEnd...]
        }
        guard first.hasPrefix(lead), first.hasSuffix("'"), first.count > lead.count + 1 else { return nil }
        let typed = String(first.dropFirst(lead.count).dropLast())
        guard typed.hasPrefix("--"), let command = command(arguments: arguments) else { return nil }
        guard let near = nearest(typed, in: optionNames(of: command)) else { return nil }
        return String(first) + ". Did you mean '\(near)'?" + message[lineEnd...]
    }

    /// The commands that take their inputs as arguments (`opacity detect scans/`), where the
    /// other commands name them with options (`--data`, `--images`: `train`, `folds`, `eval`,
    /// `submit`).
    static let inputsAsArguments: Set<String> = ["detect", "convert", "preview"]

    /// The options that name inputs in the other commands (or in other tools).
    static let inputOptions: Set<String> = ["--data", "--images", "--input", "--inputs"]

    /// The command line meant by `arguments` when they give a command of ``inputsAsArguments``
    /// its input with an option of ``inputOptions`` (`opacity detect --data scans`, new-user
    /// trial: answered "Did you mean '--tta'?"): the same line with the value as an argument,
    /// `` `opacity detect scans` ``; `nil` for any other option or command, or an option
    /// without a value.
    static func lineMeant(forInputOption typed: String, arguments: [String]) -> String? {
        guard let name = arguments.first, inputsAsArguments.contains(name), inputOptions.contains(typed) else { return nil }
        var line = arguments
        if let i = line.indices.dropFirst().first(where: { line[$0] == typed }) {
            guard i + 1 < line.count, !line[i + 1].hasPrefix("-") else { return nil }
            line.remove(at: i)
        } else if let i = line.indices.dropFirst().first(where: { line[$0].hasPrefix(typed + "=") }) {
            line[i] = String(line[i].dropFirst(typed.count + 1))
        } else {
            return nil
        }
        return "`" + (["opacity"] + line).map(StrayArguments.shellWord).joined(separator: " ") + "`"
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
