import Foundation

/// Limits that keep untrusted input from exhausting memory or the stack, shared by every
/// parser, and the helper that keeps error messages short.
public enum InputLimits {
    /// The longest text an error message quotes from its input, in characters; longer
    /// values are cut and end with an ellipsis (see ``quoted(_:limit:)``).
    public static let quotedValueLength = 80
    /// The deepest nesting a parser accepts (config strings, JSON in bundles and manifests).
    public static let nestingDepth = 64
    /// The longest physical line of a CSV file, in bytes (1 MiB).
    public static let csvLineBytes = 1 << 20
    /// The largest CSV file, in bytes (256 MiB): a bound for a stream (`--labels /dev/stdin`)
    /// that never ends, far above any labels or submission file (RSNA's labels are 1.5 MB).
    public static let csvFileBytes = 256 << 20
    /// The longest config string, in characters.
    public static let configLength = 16_384
    /// The most values (weights and buffers, 32-bit floats) a model built from a config
    /// may have: 2^30, 4.3 GB as 32-bit floats. Counted by a probe build before any weight
    /// is allocated (``Registry/makeDetector(_:)``, ``Initializer/shapeProbe(limit:_:)``).
    public static let modelValues = 1 << 30

    /// `value` cut to `limit` characters with an ellipsis and a note of its full length,
    /// so that a message never echoes unbounded input (a 100 MB CSV line, say).
    public static func quoted(_ value: some StringProtocol, limit: Int = quotedValueLength) -> String {
        let s = String(value)
        // utf8 count first: cheap, and short values are the common case
        if s.utf8.count <= limit { return s }
        let chars = s.unicodeScalars
        if chars.count <= limit { return s }
        return String(String.UnicodeScalarView(chars.prefix(limit))) + "… (\(s.utf8.count) bytes)"
    }

    /// A config string (`retinanet(encoder=resnet152(width=4.0), neck=fpn(channels=2048), ...)`)
    /// as ``quoted(_:limit:)`` quotes a value, but cut where a reader can see what was left
    /// out: whole when it fits in `limit` characters; else after the last comma within them, so
    /// that every `key=value` shown is complete (`...(channels=2048), … (103 bytes)`), or, with
    /// no comma there, after the last opening parenthesis (the component's name); only a
    /// string with neither is cut at `limit` characters as any value is.
    public static func quotedConfig(_ config: some StringProtocol, limit: Int = quotedValueLength) -> String {
        let s = String(config)
        if s.utf8.count <= limit { return s }
        let chars = s.unicodeScalars
        if chars.count <= limit { return s }
        let head = chars.prefix(limit)
        guard let end = head.lastIndex(of: ",").map({ head.index(after: $0) }) ?? head.lastIndex(of: "(").map({ head.index(after: $0) }) else {
            return quoted(s, limit: limit)
        }
        let kept = String(String.UnicodeScalarView(head[..<end]))
        return kept + (kept.hasSuffix(",") ? " " : "") + "… (\(s.utf8.count) bytes)"
    }

    /// The nesting depth of a JSON text (arrays and objects; brackets inside strings do not
    /// count), found without parsing it, so that a deeply nested document is refused before
    /// a recursive decoder sees it.
    public static func jsonDepth(_ bytes: some Sequence<UInt8>) -> Int {
        var depth = 0, deepest = 0
        var inString = false, escaped = false
        for b in bytes {
            if inString {
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch b {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                deepest = max(deepest, depth)
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
        return deepest
    }
}
