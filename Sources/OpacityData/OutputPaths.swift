import Foundation
import OpacityCore

/// Keeps outputs off inputs: no command writes over one of its inputs, and two inputs
/// never map silently to one output file or one id.
public enum OutputPaths {
    /// Whether two paths name the same file: the same device and inode when both exist
    /// (hard links, symbolic links and `..` included), else the same standardized path with
    /// symbolic links resolved.
    public static func sameFile(_ a: URL, _ b: URL) -> Bool {
        var sa = stat(), sb = stat()
        if stat(a.path, &sa) == 0, stat(b.path, &sb) == 0 { return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino }
        return a.standardizedFileURL.resolvingSymlinksInPath().path == b.standardizedFileURL.resolvingSymlinksInPath().path
    }

    /// The input `output` would replace, if any.
    public static func input(replacedBy output: URL, inputs: [URL]) -> URL? {
        inputs.first { sameFile($0, output) }
    }

    /// Refuses an output path that is one of the inputs.
    /// - Parameters:
    ///   - source: the input whose output `output` is (named in the error), if any.
    ///   - kind: what the output is for that input ("overlay", "DICOM SR").
    /// - Throws: ``DataError/outputOverInput(output:input:source:kind:)``.
    public static func refuseOverwriting(_ output: URL, inputs: [URL], source: URL? = nil, kind: String = "output") throws {
        if let i = input(replacedBy: output, inputs: inputs) {
            throw DataError.outputOverInput(output: output.path, input: i.path, source: source?.path, kind: kind)
        }
    }

    /// The image id of a file: its name without the last extension (`x.dcm` -> `x`).
    public static func imageID(_ file: URL) -> String { file.deletingPathExtension().lastPathComponent }

    /// The preference among files that share an id: DICOM, then PNG, then JPEG (as the
    /// dataset loaders index images).
    static let rank: [String: Int] = ["dcm": 0, "dicom": 0, "png": 1, "jpg": 2, "jpeg": 2]

    /// One file per image id. Where several files share an id (`x.dcm` and `x.png`), the
    /// DICOM is kept, then the PNG, then the JPEG (ties by name), and the others are
    /// returned with the file kept, so a caller can report them.
    /// - Returns: the kept files in input order, and the left-out ones with the file kept.
    public static func onePerID(_ files: [URL]) -> (kept: [URL], duplicates: [(file: URL, keptInstead: URL)]) {
        var best: [String: URL] = [:]
        for f in files {
            let id = imageID(f)
            guard let old = best[id] else { best[id] = f; continue }
            let ro = rank[old.pathExtension.lowercased()] ?? 9, rf = rank[f.pathExtension.lowercased()] ?? 9
            if rf < ro || (rf == ro && f.lastPathComponent < old.lastPathComponent) { best[id] = f }
        }
        var kept: [URL] = [], dups: [(URL, URL)] = []
        for f in files {
            let b = best[imageID(f)]!
            if b == f { kept.append(f) } else { dups.append((f, b)) }
        }
        return (kept, dups)
    }
}

/// A list of inputs a batch command left out, and why: printed, and written as
/// `skipped.csv` (`file,reason`) beside the command's outputs.
public struct SkippedInputs: Sendable {
    /// The inputs and reasons, in order.
    public private(set) var entries: [(file: String, reason: String)] = []

    public init() {}

    /// Notes one input left out.
    public mutating func add(_ file: String, _ reason: String) { entries.append((file, reason)) }

    public var isEmpty: Bool { entries.isEmpty }
    public var count: Int { entries.count }

    /// A few lines for the terminal: the count, then up to `limit` entries, each naming its
    /// input once (a reason that names the file already, as every ``DataError`` does, is shown
    /// alone; any other after the file's name).
    public func summary(limit: Int = 10) -> String {
        var s = "\(Wording.count(entries.count, "input")) skipped:"
        for e in entries.prefix(limit) {
            let reason = InputLimits.quoted(e.reason, limit: 300)
            s += "\n  " + (e.reason.contains(e.file) ? reason : "\(e.file): \(reason)")
        }
        if entries.count > limit { s += "\n  ... and \(entries.count - limit) more" }
        return s
    }

    /// Writes `file,reason` rows (through ``CSVTable/render(header:rows:)``), atomically.
    /// - Throws: ``DataError/unwritableFile(path:reason:)``.
    public func write(to url: URL) throws {
        let text = CSVTable.render(header: ["file", "reason"], rows: entries.map { [$0.file, $0.reason] })
        do { try Data(text.utf8).write(to: url, options: .atomic) } catch {
            throw DataError.unwritableFile(path: url.path, reason: error.localizedDescription)
        }
    }
}

extension WindowSetting {
    /// The setting if its numbers are usable: a fixed window needs a finite centre and a
    /// finite positive width.
    /// - Throws: ``DataError/invalidParameter(name:value:expected:nearest:)``.
    public func validated() throws -> WindowSetting {
        if case let .fixed(c, w) = self {
            guard c.isFinite, abs(c) <= 1e9 else {
                throw DataError.invalidParameter(name: "window centre", value: "\(c)", expected: "a finite number in [-1e9, 1e9]", nearest: nil)
            }
            guard w.isFinite, w > 0, w <= 1e9 else {
                throw DataError.invalidParameter(name: "window width", value: "\(w)", expected: "a finite number in (0, 1e9]", nearest: nil)
            }
        }
        return self
    }
}
