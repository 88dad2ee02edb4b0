import ArgumentParser
import Foundation
import Opacity

/// Writes a PNG, making the folder.
func writePNG(_ image: RGBImage, to url: URL) throws {
    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    try PNG.write(image, to: url)
}

/// A result line on standard output.
func say(_ s: String) { if !outputSilenced { FileHandle.standardOutput.write(Data((rankPrefix + s + "\n").utf8)) } }

/// A warning or note on standard error (printed even under `--quiet`).
func note(_ s: String) { if !outputSilenced { FileHandle.standardError.write(Data((rankPrefix + s + "\n").utf8)) } }

/// The output path from `-o/--output` and the deprecated spelling `--out` (hidden from help,
/// kept so existing scripts run): `--out` wins with a warning when `--output` was left at
/// `defaultValue`; both with different values is a usage error.
///
/// - Throws: `ValidationError` when both spellings name different paths.
func resolveOutput(_ output: String?, deprecated: String?, defaultValue: String? = nil) throws -> String? {
    guard let deprecated else { return output }
    if let output, output != defaultValue, output != deprecated {
        throw ValidationError("-o/--output \(output) and --out \(deprecated) name different outputs; give -o/--output only")
    }
    note("warning: --out is deprecated; use -o/--output")
    return deprecated
}

/// Refuses an output folder that is an existing file, or lies under one, before anything is
/// computed or written (Foundation's own message would be "file exists" with no option name).
/// - Parameters:
///   - path: the folder as given.
///   - option: the option that named it (`-o/--output`).
///   - contents: what the folder is for, for the message (`the report, CSVs and figures`).
/// - Throws: `ValidationError` naming the option, the path, the file in the way and what was expected.
func requireOutputFolder(_ path: String, option: String, for contents: String) throws {
    let given = URL(fileURLWithPath: path).standardizedFileURL
    var url = given
    while true {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) {
            if isDirectory.boolValue { return }
            let what = url.path == given.path ? "is a file" : "lies under \(url.path), which is a file"
            throw ValidationError("\(option) \(path) \(what); expected a folder (for \(contents)): name a new folder or an existing one")
        }
        let parent = url.deletingLastPathComponent()
        if parent.path == url.path { return }
        url = parent
    }
}

/// An error with a line saying what to do about it (printed below the error).
struct WithHint: Error, CustomStringConvertible {
    let error: Error
    let hint: String
    init(_ error: Error, _ hint: String) {
        self.error = error
        self.hint = hint
    }
    var description: String { "\(error)\n\(hint)" }
}

/// Writes what a batch command left out to `url` and says so on the terminal (with `where`
/// added to the "listed in" line), or removes a stale `url` from an earlier run when nothing
/// was skipped.
/// - Throws: ``DataError/unwritableFile(path:reason:)``.
func reportSkipped(_ skipped: SkippedInputs, to url: URL, note extra: String = "") throws {
    if skipped.isEmpty {
        try? FileManager.default.removeItem(at: url)
    } else {
        try skipped.write(to: url)
        note(skipped.summary() + "\n(listed in \(url.path)\(extra))")
    }
}
