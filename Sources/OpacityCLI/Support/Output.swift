import ArgumentParser
import Foundation
import Opacity

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Writes a PNG, making the folder.
func writePNG(_ image: RGBImage, to url: URL) throws {
    try OutputFolders.create(url.deletingLastPathComponent())
    try PNG.write(image, to: url)
}

/// A result line on standard output (nothing once its reader has gone: ``StandardStreams``).
func say(_ s: String) { if !outputSilenced { StandardStreams.writeOutput(rankPrefix + s + "\n") } }

/// A warning or note on standard error (printed even under `--quiet`).
func note(_ s: String) { if !outputSilenced { StandardStreams.writeError(rankPrefix + s + "\n") } }

/// A path a command wrote, as its result lines name it: absolute and standardized, however it
/// was typed (`sub/../s.csv`, typed in /home/me, is /home/me/s.csv).
func shownPath(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }

/// Training data as a line on this machine names it: the folder (or the CSV and the image
/// folder) absolute, with the layout, as `run:` names the run folder (`data:
/// /home/me/kill/data (RSNA layout)`). New-user trial: `train --data ./kill/data` said
/// "data: data (RSNA layout)", the label a bundle records.
func shownData(_ data: DataLocation) -> String {
    switch data {
    case .rsna(let u): return "\(shownPath(u.path)) (RSNA layout)"
    case .csv(let l, let i): return "\(shownPath(l.path)) + \(shownPath(i.path)) (boxes CSV)"
    }
}

/// A score threshold as every line of the commands says it: two decimals (`0.20`, `0.07`), as
/// `submit`'s model line, `eval`'s operating point and the notes about a model's operating
/// point; more only for a value typed with more (`--threshold 0.125`). New-user trial: `detect`
/// said "threshold 0.2 (the default)" on one line and "using the default 0.20" on the next.
func thresholdText(_ t: Float) -> String {
    let two = String(format: "%.2f", t)
    return Float(two) == t ? two : Wording.plainNumber(t)
}

/// Standard output and standard error, written without Foundation's `FileHandle.write(_:)`,
/// which traps when a write fails.
///
/// `opacity` ignores SIGPIPE (``OpacityMain/run(plugins:arguments:)``), so a reader that goes
/// away early (`opacity train ... | head -3`) no longer kills the process from a signal: the
/// write fails with EPIPE instead. From then on ``outputClosed`` is true and nothing more is
/// written to standard output; the command goes on quietly (a training run stops as after
/// Ctrl-C, writing its checkpoint: ``TrainCommand``) and the process exits with
/// ``ExitStatus/outputClosed``. Other write errors on either stream are ignored: a message
/// that cannot be shown never stops a command.
enum StandardStreams {
    /// Guards ``outputClosed``; never held during a write, so that asking never waits for one.
    private static let state = NSLock()
    nonisolated(unsafe) private static var closed = false
    /// One write at a time per stream (whole lines stay whole); separate locks, so that a
    /// write blocked on a full standard output (`| less`, paused) never holds up standard
    /// error's (Ctrl-C's messages among them).
    private static let outputWrites = NSLock(), errorWrites = NSLock()

    /// Whether standard output's reader has gone (a write failed with EPIPE).
    static var outputClosed: Bool { state.withLock { closed } }

    /// Writes `text` to standard output, whole, unless its reader has gone.
    /// - Returns: false when its reader has gone (now or before): nothing was written.
    @discardableResult
    static func writeOutput(_ text: String) -> Bool {
        outputWrites.withLock {
            if outputClosed { return false }
            guard write(text, to: STDOUT_FILENO) != EPIPE else {
                state.withLock { closed = true }
                return false
            }
            return true
        }
    }

    /// Writes `text` to standard error, whole; a failure (a closed pipe too) is ignored.
    static func writeError(_ text: String) {
        errorWrites.withLock { _ = write(text, to: STDERR_FILENO) }
    }

    /// Writes all of `text` to `fd`, retrying after a signal and a partial write.
    /// - Returns: 0, or the `errno` of the write that failed.
    private static func write(_ text: String, to fd: Int32) -> Int32 {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { buffer -> Int32 in
            var offset = 0
            while offset < buffer.count {
                #if canImport(Glibc)
                    let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                #else
                    let n = Darwin.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                #endif
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                offset += n
            }
            return 0
        }
    }
}

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

/// Refuses an output file path that cannot be written, before anything is loaded or computed
/// (Foundation's own messages, "The file doesn't exist" or "Is a directory", would come only
/// after the whole run and name no option): the path must not be an existing folder (nor end
/// in `/`), and no part of it may be an existing file. Folders above the file that do not
/// exist yet are fine: they are created when the file is written (``createParentFolder(of:option:)``),
/// as the commands that write a folder create it.
/// - Parameters:
///   - path: the file as given.
///   - option: the option that named it (`-o/--output`).
///   - contents: what the file is for, for the message (`the submission CSV`).
/// - Throws: `ValidationError` naming the option, the path, what is in the way and what was expected.
func requireOutputFile(_ path: String, option: String, for contents: String) throws {
    let fm = FileManager.default
    let given = URL(fileURLWithPath: path).standardizedFileURL
    var isDirectory: ObjCBool = false
    if path.hasSuffix("/") || (fm.fileExists(atPath: given.path, isDirectory: &isDirectory) && isDirectory.boolValue) {
        let example = given.appendingPathComponent("out").path
        throw ValidationError("\(option) \(path) is a folder; expected a file path (for \(contents)), e.g. \(example)")
    }
    var url = given.deletingLastPathComponent()
    while true {
        if fm.fileExists(atPath: url.path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw ValidationError(
                    "\(option) \(path) lies under \(url.path), which is a file; expected a file path (for \(contents)) whose folders are folders or do not exist yet")
            }
            guard fm.isWritableFile(atPath: url.path) else {
                throw ValidationError("\(option) \(path): the folder \(url.path) is not writable; expected a file path (for \(contents)) in a folder you can write to")
            }
            return
        }
        let parent = url.deletingLastPathComponent()
        if parent.path == url.path { return }
        url = parent
    }
}

/// Refuses an output path that is one of the inputs (``OutputPaths/refuseOverwriting(_:inputs:source:kind:)``),
/// in words that name the option to change: as the library says it, with "choose another
/// output" said as the option that named the output's folder or file.
/// - Parameters:
///   - output: the output file.
///   - inputs: the command's input files.
///   - source: the input whose output `output` is (named in the message), if any.
///   - kind: what the output is for that input ("overlay", "DICOM SR").
///   - option: the option that named where `output` goes (`-o/--output`, `--dicom-sr`).
/// - Throws: `ValidationError` (a usage error, 64) naming the output, the input it would
///   replace and `option`.
func refuseOverwritingInput(_ output: URL, inputs: [URL], source: URL? = nil, kind: String = "output", option: String) throws {
    guard let input = OutputPaths.input(replacedBy: output, inputs: inputs) else { return }
    let what = source.map { "the \(kind) of the input '\($0.path)'" } ?? "'\(output.path)'"
    throw ValidationError("\(what) would replace the input '\(input.path)'; choose another \(option) (inputs are never overwritten)")
}

/// Refuses an output file that is one of the files a data set is read from, before it is
/// written (`folds -o rsna/stage_2_train_labels.csv --overwrite` replaced the labels it had
/// just read; `preview` likewise): every file directly in `folders` (an RSNA-layout folder's
/// labels and class-info CSVs), `files` (a `--labels` or boxes CSV, a source file) and
/// `images` (the data set's image files, once it is loaded).
/// - Throws: `ValidationError` (usage error, 64) naming the output, the input and `option`.
func refuseOverwritingDataInputs(_ output: String, option: String, folders: [URL] = [], files: [URL] = [], images: [URL] = []) throws {
    var inputs = files
    for folder in folders {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        inputs += names.map { folder.appendingPathComponent($0) }
    }
    try refuseOverwritingInput(URL(fileURLWithPath: output), inputs: inputs + images, option: option)
}

/// The folders an RSNA-layout data set at `root` is read from, for
/// ``refuseOverwritingDataInputs(_:option:folders:files:images:)`` before the data loads: the
/// root (its labels and class-info CSVs) and each image folder the loader accepts under it
/// (``RSNADataset/imageFolderNames``; those that do not exist hold nothing).
func rsnaInputFolders(_ root: URL) -> [URL] {
    [root] + RSNADataset.imageFolderNames.map { root.appendingPathComponent($0) }
}

/// Refuses the results an earlier run left where this one writes, unless `--overwrite` was
/// given: every command that writes results (`detect`, `submit`, `eval`, `export`, `compare`;
/// `convert` checks its `--labels-output` after converting) calls this before anything is
/// loaded or computed, so a rerun never replaces them silently nor fails after the work.
/// - Parameters:
///   - paths: this run's result files, as the user named them (`found/detections.json`).
///   - overwrite: whether `--overwrite` was given.
///   - replaced: what `--overwrite` would replace, for the message (`the earlier submission`).
///   - otherwise: the other way on, for the message (`name another file with -o/--output`).
/// - Returns: the paths that exist (which this run replaces, with `overwrite`).
/// - Throws: `ValidationError` (usage error, 64) naming the first path that exists, `--overwrite`
///   and `otherwise`, when one exists and `overwrite` is false.
@discardableResult
func refuseEarlierResults(_ paths: [String], overwrite: Bool, replacing replaced: String, otherwise: String) throws -> [String] {
    let existing = paths.filter { FileManager.default.fileExists(atPath: $0) }
    if !overwrite, let first = existing.first {
        throw ValidationError("\(first) exists (an earlier run's); add --overwrite to replace \(replaced), or \(otherwise)")
    }
    return existing
}

/// Creates the folders above an output file that do not exist yet (checked up front by
/// ``requireOutputFile(_:option:for:)``).
/// - Throws: `ValidationError` naming the option and the folder when it cannot be created.
func createParentFolder(of file: URL, option: String) throws {
    let folder = file.deletingLastPathComponent()
    do { try OutputFolders.create(folder) } catch {
        throw ValidationError("\(option) \(file.path): cannot create its folder \(folder.path): \(error.localizedDescription)")
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

/// The output folders this process created (those that did not exist before), so that a
/// command that fails leaves no empty folder behind: ``OpacityMain/run(plugins:arguments:)``
/// calls ``removeEmpty()`` before it exits with an error status.
enum OutputFolders {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var created: [URL] = []

    /// Creates `folder` and any missing parents, remembering the topmost one that was missing.
    /// - Throws: the file system's error when the folder cannot be created.
    static func create(_ folder: URL) throws {
        let fm = FileManager.default
        var topmostMissing: URL?
        var current = folder.standardizedFileURL
        while !fm.fileExists(atPath: current.path) {
            topmostMissing = current
            let parent = current.deletingLastPathComponent()
            if parent.path == current.path { break }
            current = parent
        }
        try fm.createDirectory(at: folder, withIntermediateDirectories: true)
        if let topmostMissing { lock.withLock { created.append(topmostMissing) } }
    }

    /// Removes each folder ``create(_:)`` made that holds no file (only empty folders, if any),
    /// newest first; a folder with a file in it is kept as it is.
    static func removeEmpty() {
        let folders = lock.withLock { () -> [URL] in
            defer { created.removeAll() }
            return created
        }
        let fm = FileManager.default
        for folder in folders.reversed() where fm.fileExists(atPath: folder.path) {
            let entries = fm.enumerator(at: folder, includingPropertiesForKeys: [.isDirectoryKey])
            var holdsFile = false
            while let entry = entries?.nextObject() as? URL {
                if (try? entry.resourceValues(forKeys: [.isDirectoryKey]).isDirectory) != true {
                    holdsFile = true
                    break
                }
            }
            if !holdsFile { try? fm.removeItem(at: folder) }
        }
    }
}
