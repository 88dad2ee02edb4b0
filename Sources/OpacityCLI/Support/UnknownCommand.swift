import ArgumentParser
import Foundation
import Opacity

/// A command name that is not one (`opacity trian --data rsna`, `opacity zoo lst`).
///
/// ArgumentParser reads a word that names no subcommand as an argument of the command above
/// it, and then says something beside the point: `Unknown option '--data'` for `opacity trian
/// --data rsna` (the root takes no `--data`), `Unexpected argument 'lst'` for `opacity zoo lst`.
/// ``UnknownCommand/amend(_:arguments:)`` says instead that the word is no command, names the
/// nearest one when the word is a plausible typo, and lists the commands.
enum UnknownCommand {
    /// `message` (ArgumentParser's full message for a parse error) with its first line replaced
    /// by one that names the word that is no command of its group, the nearest command and every
    /// command of the group; `nil` when every command word of `arguments` names a command.
    /// - Parameters:
    ///   - message: the parser's message (`Error: ...`, then the usage lines).
    ///   - arguments: the command line without the executable's name.
    static func amend(_ message: String, arguments: [String]) -> String? {
        guard let (path, word, names) = unknown(arguments: arguments) else { return nil }
        let group = (["opacity"] + path).joined(separator: " ")
        var line = "Error: '\(InputLimits.quoted(word))' is not a command of `\(group)`"
        if let near = nearestMatch(word, in: names) {
            line += "; did you mean `\(group) \(near)`?"
        } else {
            line += "."
        }
        line += " The commands: " + names.joined(separator: ", ")
        let lineEnd = message.firstIndex(of: "\n") ?? message.endIndex
        return line + message[lineEnd...]
    }

    /// For a help request (`-h`, `--help`, `-help`) whose command words name no command
    /// (`opacity detet --help`, `opacity zoo lst -h`): the message the same line without the
    /// help flag gets (the word, the nearest command, the list and the group's usage); `nil`
    /// when every command word names a command, so that the help is shown.
    static func refuseHelp(arguments: [String]) -> String? {
        let helpFlags: Set<String> = ["-h", "--help", "-help"]
        guard arguments.contains(where: { helpFlags.contains($0) }) else { return nil }
        let rest = arguments.filter { !helpFlags.contains($0) }
        guard unknown(arguments: rest) != nil else { return nil }
        do {
            _ = try OpacityCommand.parseAsRoot(rest)
        } catch {
            return amend(OpacityCommand.fullMessage(for: error), arguments: rest)
        }
        return nil
    }

    /// The first word of `arguments` in a command's place that names none of its group's
    /// commands: the group's path (empty for the root), the word and the group's command names;
    /// `nil` when there is none (an option comes first, or every word names a command).
    static func unknown(arguments: [String]) -> (path: [String], word: String, names: [String])? {
        var commands: [any ParsableCommand.Type] = commandList
        var path: [String] = []
        for word in arguments {
            guard !commands.isEmpty, !word.hasPrefix("-") else { return nil }
            let names = commands.map { $0.configuration.commandName ?? $0._commandName }
            guard let index = names.firstIndex(of: word) else {
                // ArgumentParser's own `help` subcommand
                if word == "help" { return nil }
                return (path, word, names)
            }
            path.append(word)
            commands = commands[index].configuration.subcommands
        }
        return nil
    }
}
