import Foundation

/// A parsed CSV file: a header and rows, each row with its 1-based line number.
///
/// RFC 4180 quoting (`"a,b"`, `""` for a quote), LF or CRLF line ends, an optional UTF-8
/// byte-order mark; blank lines are skipped.
public struct CSVTable: Sendable {
    /// The file name used in error messages.
    public var path: String
    /// The column names of the first line, trimmed.
    public var header: [String]
    /// The data rows with their line numbers in the file.
    public var rows: [(line: Int, fields: [String])]

    /// Parses CSV text.
    /// - Parameters:
    ///   - data: the file bytes (UTF-8).
    ///   - path: the name used in error messages.
    /// - Throws: ``DataError/csvValue(path:line:column:value:expected:nearest:)`` for an
    ///   unterminated quote or a row whose field count differs from the header's.
    public init(data: Data, path: String) throws {
        self.path = path
        var rows: [(Int, [String])] = []
        var field = [UInt8]()
        var fields: [String] = []
        var inQuotes = false
        var line = 1, rowLine = 1
        var bytes = [UInt8](data)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        var i = 0
        func endField() {
            fields.append(String(decoding: field, as: UTF8.self))
            field.removeAll(keepingCapacity: true)
        }
        func endRow() {
            endField()
            if !(fields.count == 1 && fields[0].isEmpty) { rows.append((rowLine, fields)) }
            fields.removeAll(keepingCapacity: true)
        }
        while i < bytes.count {
            let c = bytes[i]
            if inQuotes {
                if c == UInt8(ascii: "\"") {
                    if i + 1 < bytes.count && bytes[i + 1] == UInt8(ascii: "\"") {
                        field.append(c)
                        i += 1
                    } else {
                        inQuotes = false
                    }
                } else {
                    if c == UInt8(ascii: "\n") { line += 1 }
                    field.append(c)
                }
            } else if c == UInt8(ascii: "\"") && field.isEmpty {
                inQuotes = true
            } else if c == UInt8(ascii: ",") {
                endField()
            } else if c == UInt8(ascii: "\n") || c == UInt8(ascii: "\r") {
                if c == UInt8(ascii: "\r") && i + 1 < bytes.count && bytes[i + 1] == UInt8(ascii: "\n") { i += 1 }
                endRow()
                line += 1
                rowLine = line
            } else {
                field.append(c)
            }
            i += 1
        }
        if inQuotes {
            throw DataError.csvValue(path: path, line: rowLine, column: "-", value: String(decoding: field.prefix(40), as: UTF8.self),
                                     expected: "a closing quote", nearest: nil)
        }
        if !field.isEmpty || !fields.isEmpty { endRow() }
        guard let first = rows.first else {
            header = []
            self.rows = []
            return
        }
        header = first.1.map { $0.trimmingCharacters(in: .whitespaces) }
        self.rows = []
        self.rows.reserveCapacity(rows.count - 1)
        for (ln, f) in rows.dropFirst() {
            guard f.count == header.count else {
                throw DataError.csvValue(path: path, line: ln, column: "-", value: f.joined(separator: ","),
                                         expected: "\(header.count) fields (\(header.joined(separator: ","))), found \(f.count)",
                                         nearest: nil)
            }
            self.rows.append((ln, f))
        }
    }

    /// Reads and parses a CSV file.
    /// - Throws: ``DataError/missingFile(path:expected:)`` and parse errors.
    public init(contentsOf url: URL) throws {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw DataError.missingFile(path: url.path, expected: "a CSV file")
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw DataError.unreadableFile(path: url.path, reason: error.localizedDescription)
        }
        try self.init(data: data, path: url.path)
    }

    /// The index of a column, trying each name in `names` (case-insensitive).
    public func column(_ names: [String]) -> Int? {
        let lower = header.map { $0.lowercased() }
        for n in names { if let i = lower.firstIndex(of: n.lowercased()) { return i } }
        return nil
    }

    /// Throws unless the header is exactly `expected`.
    /// - Throws: ``DataError/csvHeader(path:found:expected:)``.
    public func requireHeader(_ expected: [String]) throws {
        guard header == expected else { throw DataError.csvHeader(path: path, found: header, expected: expected) }
    }
}

/// Quotes a CSV field when it needs it.
func csvField(_ s: String) -> String {
    if s.contains(",") || s.contains("\"") || s.contains("\n") {
        return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
    return s
}

/// Formats a coordinate like the RSNA files (`316.0`), without trailing noise.
func csvNumber(_ v: Float) -> String {
    let r = (Double(v) * 10).rounded() / 10
    return String(format: "%.1f", r)
}
