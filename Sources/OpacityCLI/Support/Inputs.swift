import ArgumentParser
import Foundation
import Opacity

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What `path` is when it is not a regular file ("a folder", "a pipe", "a character device",
/// "a socket", "a block device"), following symbolic links (`/dev/stdin` is what standard
/// input is); `nil` for a regular file or a path that does not exist (its reader says so).
func fileKind(_ path: String) -> String? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    switch st.st_mode & S_IFMT {
    case S_IFDIR: return "a folder"
    case S_IFIFO: return "a pipe"
    case S_IFCHR: return "a character device"
    case S_IFSOCK: return "a socket"
    case S_IFBLK: return "a block device"
    default: return nil
    }
}

/// Refuses a folder, and an input that is read more than once (a second time in the same
/// command, or again by `--resume` from the path the run records) when it is a pipe or a
/// device, which can be read only once: every CSV reader takes a pipe (`--labels /dev/stdin`),
/// but such an input would be empty, or gone, the second time.
/// - Parameters:
///   - path: the input as given.
///   - option: the option that named it (`--labels`).
///   - reason: why it is read twice, for the message ("train reads it again on --resume").
/// - Throws: `ValidationError` naming the option, the path, what it is and what to give.
func requireRereadable(_ path: String, option: String, reason: String) throws {
    switch fileKind(path) {
    case nil: return
    case "a folder": throw ValidationError(folderForFileMessage(option, path, expected: "a CSV file (a regular file)"))
    case let kind?: throw ValidationError("\(option) \(path) is \(kind); this input is read twice (\(reason)), give a regular file")
    }
}

/// Throws a usage error (exit status 64) when `path`, the value of `option` naming a CSV file,
/// is a folder: ``folderForFileMessage(_:_:expected:)`` (new-user trial: `score --labels
/// FOLDER` said "cannot read '...': it is a folder" without naming the option).
/// - Throws: `ValidationError` naming the option, the path, `expected` and the CSV in it to
///   pass instead, if one stands out.
func requireNotAFolder(_ option: String, _ path: String, expected: String) throws {
    guard fileKind(path) == "a folder" else { return }
    throw ValidationError(folderForFileMessage(option, path, expected: expected))
}

/// `OPTION PATH is a folder; expected EXPECTED`, with ` (did you mean 'PATH/NAME'?)` when the
/// folder holds the CSV to pass: `stage_2_train_labels.csv` for `--labels`, else its only
/// `.csv` file.
func folderForFileMessage(_ option: String, _ path: String, expected: String) -> String {
    func inside(_ name: String) -> String { path.hasSuffix("/") ? path + name : path + "/" + name }
    let csvs = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { name in
        var isDirectory: ObjCBool = false
        return name.lowercased().hasSuffix(".csv") && FileManager.default.fileExists(atPath: inside(name), isDirectory: &isDirectory) && !isDirectory.boolValue
    }
    let labels = "stage_2_train_labels.csv"
    let pick = option == "--labels" && csvs.contains(labels) ? labels : csvs.count == 1 ? csvs[0] : nil
    return "\(option) \(path) is a folder; expected \(expected)" + (pick.map { " (did you mean '\(inside($0))'?)" } ?? "")
}

/// Throws a usage error (exit status 64) when `path`, the value of `option`, names no
/// folder (`directory`) or no file: the option, the path, `expected`, and the nearest
/// existing entry of the same kind beside it when the name looks like a typo of one
/// (`nearestMatch`, edit distance).
func requireExistingPath(_ option: String, _ path: String, directory: Bool, expected: String) throws {
    var isDirectory: ObjCBool = false
    let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
    if exists && isDirectory.boolValue == directory { return }
    if exists {
        throw ValidationError("\(option) \(path) is a \(directory ? "file" : "folder"); expected \(expected)")
    }
    throw ValidationError(noSuchPathMessage(option, path, directory: directory, expected: expected))
}

/// Throws a data error (exit status 1, ``MissingInput``) when nothing exists at `path`, the
/// value of `option`, for an input file that is read as data rather than checked before
/// anything loads (`score --labels`): the option, the path, that it does not exist,
/// `expected`, and the nearest existing file beside it when the name looks like a typo of
/// one. A path that exists, whatever it is, is left to the reader (which says what a folder
/// or an empty file is).
func requireExistingDataFile(_ option: String, _ path: String, expected: String) throws {
    if FileManager.default.fileExists(atPath: path) { return }
    throw MissingInput(message: noSuchPathMessage(option, path, directory: false, expected: expected))
}

/// An input named by an option that does not exist, when that is a data error (exit status 1)
/// rather than a usage error: ``requireExistingDataFile(_:_:expected:)``.
struct MissingInput: Error, CustomStringConvertible {
    /// The option, the path, what was expected and the nearest existing file.
    let message: String
    var description: String { message }
}

/// The folder part (`""` for a bare name, `/` at the root) and the name of `path`, split by
/// hand: Foundation's `NSString.deletingLastPathComponent` traps on a one-character name
/// (`--data d`: SIGILL in String._startOfLastPathComponent). A trailing `/` is dropped first.
func splitPath(_ path: String) -> (parent: String, leaf: String) {
    let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    let slash = trimmed.lastIndex(of: "/")
    let parent = slash.map { $0 == trimmed.startIndex ? "/" : String(trimmed[..<$0]) } ?? ""
    let leaf = slash.map { String(trimmed[trimmed.index(after: $0)...]) } ?? trimmed
    return (parent, leaf)
}

/// ` (did you mean 'NEAR'?)` naming the entry (a file or a folder) of the folder of `path`
/// whose name is nearest to its last component when that looks like a typo of it, else `""`:
/// for inputs that may be either (`detect`'s inputs, `import`'s source).
func nearestEntryHint(_ path: String) -> String {
    let (parent, leaf) = splitPath(path)
    guard !leaf.isEmpty, let names = try? FileManager.default.contentsOfDirectory(atPath: parent.isEmpty ? "." : parent), names.count <= 10_000,
        let near = nearestMatch(leaf, in: names)
    else { return "" }
    return " (did you mean '\(parent.isEmpty ? near : parent.hasSuffix("/") ? parent + near : parent + "/" + near)'?)"
}

/// `OPTION PATH: no such file; expected EXPECTED`, with ` (did you mean 'NEAR'?)` naming the
/// nearest existing entry of the same kind (a folder for `directory`, else a file) in the
/// folder of `path` when the name looks like a typo of one (`nearestMatch`, edit distance).
func noSuchPathMessage(_ option: String, _ path: String, directory: Bool, expected: String) -> String {
    let kind = directory ? "folder" : "file"
    let (parent, leaf) = splitPath(path)
    func beside(_ name: String) -> String { parent.isEmpty ? name : parent.hasSuffix("/") ? parent + name : parent + "/" + name }
    let names = (try? FileManager.default.contentsOfDirectory(atPath: parent.isEmpty ? "." : parent)) ?? []
    let sameKind = names.filter { name in
        var d: ObjCBool = false
        return FileManager.default.fileExists(atPath: beside(name), isDirectory: &d) && d.boolValue == directory
    }
    let hint = nearestMatch(leaf, in: sameKind).map { " (did you mean '\(beside($0))'?)" }
    return "\(option) \(path): no such \(kind); expected \(expected)\(hint ?? "")"
}
