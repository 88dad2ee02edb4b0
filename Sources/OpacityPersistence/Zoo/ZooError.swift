import Foundation
import OpacityCore

/// Why a zoo operation failed, with the entry, file or URL concerned and what to do.
public enum ZooError: Error, CustomStringConvertible, Sendable {
    /// No manifest has an entry of this name.
    case unknownEntry(name: String, nearest: String?, known: [String])
    /// A name that could escape the cache folder or is otherwise unusable.
    case invalidName(name: String, reason: String)
    /// A manifest that cannot be read or does not follow the format.
    case invalidManifest(file: String, field: String, reason: String)
    /// The entry is neither shipped nor in the cache; loading never uses the network.
    case notFetched(name: String, url: String?)
    /// A file's SHA-256 differs from the manifest's.
    case hashMismatch(name: String, file: String, expected: String, actual: String)
    /// A file's size differs from the manifest's.
    case sizeMismatch(name: String, file: String, expected: Int64, actual: Int64)
    /// The entry's file cannot be opened (`reason`: the system's, e.g. "Permission denied").
    case unopenableFile(name: String, file: String, reason: String)
    /// The download failed.
    case fetchFailed(name: String, url: String, reason: String)
    /// The entry's URL is not http, https or file.
    case unsupportedURL(name: String, url: String)
    /// The entry names a shipped file that is missing and has no URL to fetch.
    case missingFile(name: String, file: String)
    /// The entry's bundle holds a different kind of model than the call needs.
    case wrongKind(name: String, expected: String, found: String)

    /// What to do about a damaged cached copy (``Zoo/cachedFile(for:)``'s name, `NAME-<16 hex>.opb`):
    /// fetching the entry again replaces it. Empty for a shipped file or a download.
    static func refetchHint(name: String, file: String) -> String {
        let base = (file as NSString).lastPathComponent, prefix = "\(name)-", suffix = ".\(BundleFormat.fileExtension)"
        guard base.hasPrefix(prefix), base.hasSuffix(suffix), base.count == prefix.count + 16 + suffix.count,
            base.dropFirst(prefix.count).dropLast(suffix.count).allSatisfy(\.isHexDigit)
        else { return "" }
        return "; `opacity zoo fetch \(name)` replaces the cached copy"
    }

    public var description: String {
        switch self {
        case let .unknownEntry(name, nearest, known):
            return "no zoo entry named '\(name)'" + (nearest.map { "; did you mean '\($0)'?" } ?? "")
                + (known.isEmpty ? " (the zoo has no entries; see Documentation/Zoo.md to add one)" : " (the zoo has: \(known.joined(separator: ", ")))")
        case let .invalidName(name, reason):
            return "invalid zoo name '\(name)': \(reason); names are letters, digits, '.', '_', '-' and '+', starting with a letter or digit"
        case let .invalidManifest(file, field, reason):
            return "\(file): invalid zoo manifest at \(field): \(reason)"
        case let .notFetched(name, url):
            let source = url.map { u in Zoo.localPath(ofFileURL: u).map { " (copies \($0))" } ?? " (downloads \(u))" } ?? ""
            return "zoo entry '\(name)' is not in the cache; run `opacity zoo fetch \(name)`\(source), or give the command --fetch (allowFetch: true in the API)"
        case let .hashMismatch(name, file, expected, actual):
            return "zoo entry '\(name)': \(file) has SHA-256 \(actual) but the manifest says \(expected); the file is corrupt or not the published one, so it was refused"
                + Self.refetchHint(name: name, file: file)
        case let .sizeMismatch(name, file, expected, actual):
            return "zoo entry '\(name)': \(file) has \(actual) bytes but the manifest says \(expected); refused" + Self.refetchHint(name: name, file: file)
        case let .unopenableFile(name, file, reason):
            return "zoo entry '\(name)': cannot open \(file): \(reason); expected a readable bundle file" + Self.refetchHint(name: name, file: file)
        case let .fetchFailed(name, url, reason):
            return "zoo entry '\(name)': cannot fetch \(Zoo.localPath(ofFileURL: url) ?? url): \(reason)"
        case let .unsupportedURL(name, url):
            return "zoo entry '\(name)': URL \(url) is not http://, https:// or file://"
        case let .missingFile(name, file):
            return "zoo entry '\(name)': the shipped file \(file) is missing and the entry has no URL"
        case let .wrongKind(name, expected, found):
            return "zoo entry '\(name)' holds a \(found) bundle, expected a \(expected) bundle"
        }
    }
}
