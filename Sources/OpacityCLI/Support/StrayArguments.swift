import Foundation
import Opacity

/// A command that names every input with an option (`folds`, `train`, `eval`: `--data DIR`),
/// so that a path given as a bare argument (`opacity folds rsna1k -o folds.csv`) is refused by
/// the parser as "Unexpected argument 'rsna1k'"; ``StrayArguments/amend(_:arguments:)`` adds
/// the command line that was most likely meant.
protocol NamesInputsWithOptions {
    /// The option that `value`, given as a bare argument, was most likely meant for (`--data`
    /// for a folder, `--labels` for a CSV file; `eval`'s `--model` for a bundle or a run folder).
    static func option(forStray value: String) -> String
}

extension NamesInputsWithOptions {
    /// `--labels` for a `.csv` file (a CSV of boxes, with `--images`), else `--data` (an RSNA folder).
    static func option(forStray value: String) -> String { DataOptions.option(forStray: value) }
}

extension DataOptions {
    /// The ``DataOptions`` option a bare argument most likely meant: `--labels` for a `.csv`
    /// path, `--data` for anything else.
    static func option(forStray value: String) -> String {
        URL(fileURLWithPath: value).pathExtension.lowercased() == "csv" ? "--labels" : "--data"
    }

    /// Whether `path` is a run folder (`train -o`: it holds `options.json` or `best.opb`) or a bundle file (`.opb`).
    static func isRunOrBundle(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return path.hasSuffix(".opb") }
        guard isDirectory.boolValue else { return path.hasSuffix(".opb") }
        return ["options.json", "best.opb"].contains { FileManager.default.fileExists(atPath: URL(fileURLWithPath: path).appendingPathComponent($0).path) }
    }
}

extension FoldsCommand: NamesInputsWithOptions {}

extension TrainCommand: NamesInputsWithOptions {}

extension EvalCommand: NamesInputsWithOptions {
    /// A bundle or a run folder is the model; anything else is data.
    static func option(forStray value: String) -> String { DataOptions.isRunOrBundle(value) ? "--model" : DataOptions.option(forStray: value) }
}

/// What ArgumentParser says about a bare argument that a command does not take, with the
/// command line that was most likely meant.
enum StrayArguments {
    /// The start of ArgumentParser's message (1.x) for one value no argument takes.
    static let unexpected = "Unexpected argument '"
    /// The middle of its message for several (`2 unexpected arguments: 'rsna', 'extra'`).
    static let unexpectedSeveral = " unexpected arguments: '"

    /// `message` (ArgumentParser's full message for a parse error) with the command line most
    /// likely meant, for a command that names its inputs with options (``NamesInputsWithOptions``)
    /// given a bare argument; `nil` for any other message or command.
    ///
    /// The parser says "Unexpected argument 'rsna'" once every option is read and checked
    /// (`opacity folds rsna -o folds.csv`); that line gets ``; did you mean `opacity folds
    /// --data rsna -o folds.csv`?``. An error found first (a required option missing:
    /// `opacity folds rsna`) keeps its line, and a bare first argument gets a line of its own
    /// after it (`'rsna' is no argument of `opacity folds`; did you mean ...?`).
    ///
    /// Several bare arguments (`2 unexpected arguments: 'rsna', 'extra'`) are named all, and each
    /// that looks like a path (it exists, or holds a `/` or an extension) gets its option as one
    /// would; the others, and a second value for an option already suggested, are left out of
    /// the line meant, which says so (``; did you mean `opacity train --data rsna`? (left out:
    /// 'extra', which names no file or folder)``).
    /// - Parameters:
    ///   - message: the parser's message (`Error: Unexpected argument 'rsna'`, then the usage).
    ///   - arguments: the command line without the executable's name, subcommand first.
    static func amend(_ message: String, arguments: [String]) -> String? {
        guard let name = arguments.first,
            let command = commandList.first(where: { $0.configuration.commandName == name }) as? any NamesInputsWithOptions.Type
        else { return nil }
        let lineEnd = message.firstIndex(of: "\n") ?? message.endIndex
        let first = String(message[..<lineEnd]), rest = String(message[lineEnd...])
        func meant(_ index: Int) -> String {
            var line = arguments
            line[index...index] = [command.option(forStray: arguments[index]), arguments[index]]
            return "`" + (["opacity"] + line).map(shellWord).joined(separator: " ") + "`"
        }
        // the place of each bare argument: the first of its spellings that is no option's value, else the first
        func place(of stray: String, besides taken: [Int]) -> Int? {
            let places = arguments.indices.dropFirst().filter { arguments[$0] == stray && !taken.contains($0) }
            return places.first(where: { !arguments[$0 - 1].hasPrefix("-") }) ?? places.first
        }
        if let start = first.range(of: unexpected), first.hasSuffix("'") {
            let stray = String(first[start.upperBound...].dropLast())
            guard let index = place(of: stray, besides: []) else { return nil }
            return first + "; did you mean \(meant(index))?" + rest
        }
        if let start = first.range(of: unexpectedSeveral), first.hasSuffix("'") {
            var indices: [Int] = []
            for stray in first[start.upperBound...].dropLast().components(separatedBy: "', '") {
                guard let index = place(of: stray, besides: indices) else { return nil }
                indices.append(index)
            }
            return first + "; " + lineMeant(several: indices, command: command, arguments: arguments) + rest
        }
        // another error came first; the arguments before the first option are bare all the same
        let bare = Array(arguments.indices.dropFirst().prefix { !arguments[$0].hasPrefix("-") })
        guard let firstBare = bare.first else { return nil }
        if bare.count == 1 {
            return first + "\n'\(InputLimits.quoted(arguments[firstBare]))' is no argument of `opacity \(name)`; did you mean \(meant(firstBare))?" + rest
        }
        let names = bare.map { "'\(InputLimits.quoted(arguments[$0]))'" }.joined(separator: ", ")
        return first + "\n\(names) are no arguments of `opacity \(name)`; " + lineMeant(several: bare, command: command, arguments: arguments) + rest
    }

    /// The command line most likely meant by `arguments` with bare arguments at `indices`:
    /// each that looks like a path (``looksLikePath(_:)``) with its option before it, the
    /// others left out, and said so; a second value for an option already given is left out
    /// too. With none that looks like a path, a pointer to the options instead.
    static func lineMeant(several indices: [Int], command: any NamesInputsWithOptions.Type, arguments: [String]) -> String {
        let name = arguments[0]
        var replaced: [Int: [String]] = [:]
        var options: [String] = [], leftOut: [String] = []
        for index in indices {
            let value = arguments[index], quoted = "'\(InputLimits.quoted(value))'"
            replaced[index] = []
            guard looksLikePath(value) else {
                leftOut.append("\(quoted), which names no file or folder")
                continue
            }
            let option = command.option(forStray: value)
            if options.contains(option) {
                leftOut.append("\(quoted), which would be a second \(option)")
            } else {
                options.append(option)
                replaced[index] = [option, value]
            }
        }
        if options.isEmpty {
            return "`opacity \(name)` takes no bare arguments, and none of these names a file or folder: "
                + "name the inputs with their options (`opacity \(name) --help` lists them)"
        }
        let line = ["opacity"] + arguments.indices.flatMap { replaced[$0] ?? [arguments[$0]] }
        return "did you mean `" + line.map(shellWord).joined(separator: " ") + "`?" + (leftOut.isEmpty ? "" : " (left out: " + leftOut.joined(separator: "; ") + ")")
    }

    /// Whether a bare argument looks like a path: it names a file or folder, or holds a `/`, or
    /// ends in an extension with a letter (`labels.csv`, `best.opb`; not `0.5`).
    static func looksLikePath(_ value: String) -> Bool {
        if value.contains("/") || FileManager.default.fileExists(atPath: value) { return true }
        let ext = URL(fileURLWithPath: value).pathExtension
        return ext.contains { $0.isLetter }
    }

    /// `word` as a shell reads it back: as it is when it holds only characters the shell takes
    /// literally, else in single quotes.
    static func shellWord(_ word: String) -> String {
        let plain = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,+@%")
        if !word.isEmpty && word.allSatisfy({ plain.contains($0) }) { return word }
        return "'" + word.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
    }
}
