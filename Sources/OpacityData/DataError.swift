import Foundation
import OpacityCore

/// Everything that can go wrong while reading, writing or preparing data.
///
/// Every case names the file (and where it applies the field, line or column), says what
/// was expected, and gives the nearest valid value when there is one, so a user can fix
/// the input without reading the code.
public enum DataError: Error, CustomStringConvertible, LocalizedError, Sendable, Equatable {
    /// The advice that ends an ``imageProblems(missing:unreadable:examples:named:folder:)``
    /// message (the command line says it in its own words, with its option).
    public static let skipProblemImagesAdvice = "; pass skipProblemImages (CLI: --skip-unreadable) to go on without them"

    /// A file could not be opened or read.
    case unreadableFile(path: String, reason: String)
    /// A file could not be written.
    case unwritableFile(path: String, reason: String)
    /// The file is not a DICOM Part 10 file (or is truncated / malformed).
    case malformedDICOM(path: String, reason: String)
    /// The DICOM transfer syntax is not one Opacity decodes.
    case unsupportedTransferSyntax(path: String, uid: String, name: String)
    /// The DICOM image is not single-channel grayscale, or has a pixel layout we do not decode.
    case unsupportedPixelFormat(path: String, reason: String)
    /// The JPEG codestream inside a DICOM (or a bare JPEG) failed to decode.
    case jpegDecodingFailed(path: String, reason: String)
    /// libpng refused the file.
    case pngFailed(path: String, reason: String)
    /// The file's format was not recognised from its extension and magic bytes.
    case unknownImageFormat(path: String, expected: String)
    /// A CSV header did not have the expected columns.
    case csvHeader(path: String, found: [String], expected: [String])
    /// A CSV value could not be used; `column` is the header name, or `-` for a whole row (printed without a column).
    case csvValue(path: String, line: Int, column: String, value: String, expected: String, nearest: String?)
    /// A CSV line longer than `limit` bytes, refused before it is parsed (the check stops
    /// reading it at the limit, so the message gives the limit, not the length): `fields` is
    /// how many fields its first `limit` bytes hold, `headerFields` how many the header on
    /// `headerLine` has (`nil` when the long line is the header itself). With `openQuoteLine`,
    /// the row starting on `line` runs over several lines inside a quoted field opened there
    /// (a quote left open, most likely).
    case csvLineTooLong(path: String, line: Int, limit: Int, fields: Int, headerFields: Int?, headerLine: Int, openQuoteLine: Int? = nil)
    /// Labels contradict each other (e.g. `Target` and the class disagree).
    case inconsistentLabels(path: String, line: Int, reason: String)
    /// A directory or file required by a dataset layout is not there: nothing is at `path`, or
    /// what is there is not what was expected (a file where a folder was expected, a folder
    /// without the files it should hold); the message says which.
    case missingFile(path: String, expected: String)
    /// Images the labels name are missing or cannot be decoded (reported together); `named`
    /// is how many images the labels name (0: not given) and `folder` the image folder they
    /// were looked for in, so that the message can say how much of the data is not there
    /// ("753 of the 757 images the labels name are not in DIR").
    case imageProblems(missing: Int, unreadable: Int, examples: [String], named: Int = 0, folder: String? = nil)
    /// A parameter value is out of its valid range.
    case invalidParameter(name: String, value: String, expected: String, nearest: String?)
    /// An output path is one of the command's inputs; `source` names the input whose output
    /// it is (e.g. `x.png` for `x.overlay.png`) and `kind` what it is ("overlay"), when known.
    case outputOverInput(output: String, input: String, source: String? = nil, kind: String = "output")

    /// A one-paragraph message a user can act on.
    public var description: String {
        switch self {
        case let .unreadableFile(path, reason):
            return "cannot read '\(path)': \(reason)"
        case let .unwritableFile(path, reason):
            return "cannot write '\(path)': \(reason)"
        case let .malformedDICOM(path, reason):
            return "'\(path)' is not a readable DICOM Part 10 file: \(reason)"
        case let .unsupportedTransferSyntax(path, uid, name):
            return "'\(path)': transfer syntax \(uid) (\(name)) is not supported; Opacity reads "
                + TransferSyntax.supported.map(\.description).joined(separator: ", ")
                + "; convert the file first (e.g. `gdcmconv --raw`)"
        case let .unsupportedPixelFormat(path, reason):
            return "'\(path)': \(reason)"
        case let .jpegDecodingFailed(path, reason):
            return "'\(path)': JPEG decoding failed: \(reason)"
        case let .pngFailed(path, reason):
            return "'\(path)': PNG: \(reason)"
        case let .unknownImageFormat(path, expected):
            return "'\(path)': unknown image format; expected \(expected)"
        case let .csvHeader(path, found, expected) where found.allSatisfy({ $0.isEmpty }):
            return "'\(path)' line 1: empty file; expected the header '\(expected.joined(separator: ","))'"
        case let .csvHeader(path, found, expected):
            return "'\(path)' line 1: header is '\(InputLimits.quoted(found.joined(separator: ",")))'; expected columns '\(expected.joined(separator: ","))'"
        case let .csvValue(path, line, column, value, expected, nearest):
            // a whole row (column "-": wrong field count, an unclosed quote) has no column to name
            let at = column == "-" ? "" : ", column '\(InputLimits.quoted(column))'"
            return "'\(path)' line \(line)\(at): '\(InputLimits.quoted(value))' is not valid; expected \(expected)" + Self.suggestion(nearest)
        case let .csvLineTooLong(path, line, _, _, _, _, _):
            return "'\(path)' line \(line): " + (csvLineTooLongReason ?? "")
        case let .inconsistentLabels(path, line, reason):
            return "'\(path)'" + (line > 0 ? " line \(line)" : "") + ": \(InputLimits.quoted(reason, limit: 400))"
        case let .missingFile(path, expected):
            return "'\(path)' \(Self.whatIsAt(path)); expected \(expected)" + (Self.nearestBeside(path).map { " (did you mean '\($0)'?)" } ?? "")
        case let .imageProblems(missing, unreadable, examples, named, folder):
            var s = "\(Wording.count(missing, "image")) missing and \(unreadable) unreadable"
            if missing > 0, named > 0, let folder {
                s += " (\(missing) of the \(Wording.count(named, "image")) the labels name \(missing == 1 ? "is" : "are") not in \(folder))"
            }
            if !examples.isEmpty { s += ", e.g. " + examples.prefix(5).map { InputLimits.quoted($0, limit: 300) }.joined(separator: "; ") }
            return s + Self.skipProblemImagesAdvice
        case let .outputOverInput(output, input, source, kind):
            if let source {
                return "the \(kind) of the input '\(source)' would replace the input '\(input)'; choose another output (inputs are never overwritten)"
            }
            return "'\(output)' would replace the input '\(input)'; choose another output (inputs are never overwritten)"
        case let .invalidParameter(name, value, expected, nearest):
            return "parameter '\(InputLimits.quoted(name))' = '\(InputLimits.quoted(value))' is not valid; expected \(expected)" + Self.suggestion(nearest)
        }
    }

    /// What is wrong with an over-long CSV line and what was expected, in plain words, without
    /// the file and line (``csvLineTooLong(path:line:limit:fields:headerFields:headerLine:openQuoteLine:)``
    /// says them first; a submission's error says them its own way); `nil` for any other error.
    package var csvLineTooLongReason: String? {
        guard case let .csvLineTooLong(_, _, limit, fields, headerFields, headerLine, openQuoteLine) = self else { return nil }
        let size = limit % (1 << 20) == 0 ? "\(limit >> 20) MiB" : "\(limit) bytes"
        let count = { (n: Int) in n == 1 ? "1 field" : "\(n) fields" }
        if let openQuoteLine {
            return "the row starting here is too long: more than \(limit) bytes (\(size), the most one row may have) over several lines, "
                + "inside a quoted field opened on line \(openQuoteLine); expected a row of at most \(limit) bytes, so that quote (\") is most likely never closed"
        }
        let expected =
            headerFields.map { "a row of \(count($0)) separated by commas, like the header on line \(headerLine)" }
            ?? "a header line of column names separated by commas"
        return "too long: more than \(limit) bytes (\(size), the most one line may have), with \(count(fields)) in its first \(limit) bytes; expected \(expected)"
    }

    /// The nearest valid value as the message's ending: a number is the end of the range it
    /// is clamped to, not a spelling the user may have meant, so it reads "nearest valid";
    /// a name reads "did you mean".
    package static func suggestion(_ nearest: String?) -> String {
        guard let n = nearest else { return "" }
        if Double(n) != nil { return " (nearest valid: \(n))" }
        return " (did you mean '\(InputLimits.quoted(n))'?)"
    }

    /// What is at `path`, for a missing input: "does not exist", or "is a file" / "is a
    /// folder" when something is there that is not what was expected (`submit --images` given
    /// a CSV, `convert` given a folder without DICOM files), so that the message never says
    /// that an existing path does not exist.
    static func whatIsAt(_ path: String) -> String {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return "does not exist" }
        return isDirectory.boolValue ? "is a folder" : "is a file"
    }

    /// For an absolute `path` where nothing is: the entry of its folder whose name is nearest
    /// to its last component when that looks like a typo of it (`/data/tst` beside
    /// `/data/test`), as a path; `nil` otherwise, and for a path that is not absolute (an image
    /// id) or a folder of more than 10,000 entries. `submit --images`, `convert`'s input and
    /// `score`'s submission then name what was probably meant, as `--data` and `--labels` do.
    static func nearestBeside(_ path: String) -> String? {
        guard path.hasPrefix("/"), !FileManager.default.fileExists(atPath: path) else { return nil }
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        guard let slash = trimmed.lastIndex(of: "/") else { return nil }
        let leaf = String(trimmed[trimmed.index(after: slash)...])
        let parent = slash == trimmed.startIndex ? "/" : String(trimmed[..<slash])
        guard !leaf.isEmpty, let names = try? FileManager.default.contentsOfDirectory(atPath: parent), names.count <= 10_000,
            let near = nearestName(leaf, in: names)
        else { return nil }
        return parent.hasSuffix("/") ? parent + near : parent + "/" + near
    }

    /// Same as ``description``.
    public var errorDescription: String? { description }
}

/// The candidate closest to `word` by edit distance, or `nil` when none is reasonably close
/// (the core's ``nearestMatch(_:in:)``).
func nearestName(_ word: String, in candidates: [String]) -> String? { nearestMatch(word, in: candidates) }
