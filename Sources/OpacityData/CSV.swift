import CSV
import Foundation
import OpacityCore

/// A parsed CSV file: a header and rows, each row with its 1-based line number.
///
/// Read with CSV.swift (yaslab/CSV.swift): RFC 4180 quoting (`"a,b"`, `""` for a quote),
/// LF or CRLF line ends, an optional UTF-8 byte-order mark; blank lines are skipped. A line
/// longer than ``InputLimits/csvLineBytes`` is refused before parsing, and errors quote at
/// most ``InputLimits/quotedValueLength`` characters of a value. A file is read once, so a
/// pipe, a FIFO or `/dev/stdin` reads like a regular file (``readChecked(_:what:)``). Every
/// CSV Opacity reads (labels, class info, boxes, folds, submissions) comes through this
/// type, and every CSV it writes through ``render(header:rows:)``.
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
    ///   unterminated quote or a row whose field count differs from the header's;
    ///   ``DataError/csvLineTooLong(path:line:limit:fields:headerFields:headerLine:openQuoteLine:)``
    ///   for a line over the length limit.
    public init(data: Data, path: String) throws {
        self.path = path
        var bytes = [UInt8](data)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        try CSVTable.checkLines(bytes, path: path)
        // The parsing itself is CSV.swift's (RFC 4180); this type adds line numbers, the
        // header and the checks with messages that name the file and line.
        let text = String(decoding: bytes, as: UTF8.self)
        let reader: CSVReader
        do { reader = try CSVReader(string: text, hasHeaderRow: false) } catch {
            throw DataError.unreadableFile(path: path, reason: "not CSV: \(error)")
        }
        var all: [(Int, [String])] = []
        var line = 1
        while let row = reader.next() {
            // a blank line is one empty field
            if !(row.count == 1 && row[0].isEmpty) { all.append((line, row)) }
            line += 1
            for f in row where f.utf8.contains(UInt8(ascii: "\n")) || f.utf8.contains(UInt8(ascii: "\r")) {
                // line breaks inside quoted fields (CRLF counts once)
                line += f.replacingOccurrences(of: "\r\n", with: "\n").utf8.filter { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }.count
            }
        }
        if let e = reader.error { throw DataError.unreadableFile(path: path, reason: "not CSV: \(e)") }
        guard let first = all.first else {
            header = []
            rows = []
            return
        }
        header = first.1.map { $0.trimmingCharacters(in: .whitespaces) }
        rows = []
        rows.reserveCapacity(all.count - 1)
        for (ln, f) in all.dropFirst() {
            guard f.count == header.count else {
                throw DataError.csvValue(path: path, line: ln, column: "-", value: InputLimits.quoted(f.joined(separator: ",")),
                                         expected: "\(header.count) fields (\(InputLimits.quoted(header.joined(separator: ",")))), found \(f.count)",
                                         nearest: nil)
            }
            rows.append((ln, f))
        }
    }

    /// Refuses a physical line longer than ``InputLimits/csvLineBytes``, a record (a row, whose
    /// quoted fields may hold line breaks) longer than that too, and a quote that is never
    /// closed, before anything is parsed.
    static func checkLines(_ bytes: [UInt8], path: String) throws {
        var checker = LineChecker(path: path)
        try bytes.withUnsafeBufferPointer { try checker.feed($0) }
        try checker.finish()
    }

    /// The bytes of the CSV file at `url`, read once in pieces of 1 MiB with the line check of
    /// ``checkLines(_:path:)`` on each piece before it is kept: a regular file, a pipe, a FIFO
    /// or `/dev/stdin` alike (`cat labels.csv | opacity score --labels /dev/stdin ...`). A file
    /// with an over-long line is refused after reading at most that line, and one of more than
    /// ``InputLimits/csvFileBytes`` (a stream that never ends) after that many bytes.
    /// - Parameters:
    ///   - url: the file.
    ///   - what: what it should be, for messages ("a CSV file").
    /// - Throws: ``DataError/csvLineTooLong(path:line:limit:fields:headerFields:headerLine:openQuoteLine:)``
    ///   and ``DataError/csvValue(path:line:column:value:expected:nearest:)`` as
    ///   ``checkLines(_:path:)``; ``DataError/missingFile(path:expected:)`` when there is no
    ///   such file; ``DataError/unreadableFile(path:reason:)`` when it cannot be read, is a
    ///   folder or is too large.
    package static func readChecked(_ url: URL, what: String = "a CSV file") throws -> Data {
        var checker = LineChecker(path: url.path)
        let data = try BoundedRead.data(of: url, limit: InputLimits.csvFileBytes, what: what) { try checker.feed($0) }
        try checker.finish()
        return data
    }

    /// The line-length and quote check of ``checkLines(_:path:)`` over a file read in pieces,
    /// so that a file with an over-long line is refused after reading at most that line,
    /// holding one piece at a time, not the whole file.
    package struct LineChecker {
        package let path: String
        private var line = 1, quoteLine = 1
        /// Bytes of the current physical line so far, and of the current record (which a
        /// quoted line break does not end) and the line it starts on.
        private var lineLength = 0, recordLength = 0, recordLine = 1
        private var inQuotes = false, atFieldStart = true
        /// A carriage return ended the previous piece: a line feed starting this one belongs to it.
        private var pendingCR = false
        /// The fields of the current record so far (its commas outside quotes, plus one), and
        /// those of the header (the first record that is not blank) with its line, once read:
        /// an over-long line's message says how many it has and how many were expected.
        private var fields = 1, headerFields: Int?, headerLine = 1

        package init(path: String) { self.path = path }

        /// Checks the next piece of the file.
        package mutating func feed(_ b: UnsafeBufferPointer<UInt8>) throws {
            let limit = InputLimits.csvLineBytes
            var i = 0
            if pendingCR, b.count > 0 {
                pendingCR = false
                if b[0] == UInt8(ascii: "\n") { i = 1 }
            }
            while i < b.count {
                let c = b[i]
                if c == UInt8(ascii: "\n") || c == UInt8(ascii: "\r") {
                    // (a line over the limit was refused when its last byte was counted)
                    if c == UInt8(ascii: "\r") {
                        if i + 1 < b.count {
                            if b[i + 1] == UInt8(ascii: "\n") { i += 1 }
                        } else {
                            pendingCR = true
                        }
                    }
                    line += 1
                    lineLength = 0
                    if inQuotes {
                        recordLength += 1
                    } else {
                        if headerFields == nil && recordLength > 0 {
                            headerFields = fields
                            headerLine = recordLine
                        }
                        atFieldStart = true
                        recordLength = 0
                        recordLine = line
                        fields = 1
                    }
                } else {
                    lineLength += 1
                    recordLength += 1
                    if lineLength > limit {
                        throw DataError.csvLineTooLong(path: path, line: line, limit: limit, fields: fields, headerFields: headerFields, headerLine: headerLine)
                    }
                    if recordLength > limit {
                        throw DataError.csvLineTooLong(path: path, line: recordLine, limit: limit, fields: fields, headerFields: headerFields, headerLine: headerLine,
                                                       openQuoteLine: quoteLine)
                    }
                    if c == UInt8(ascii: "\"") {
                        if inQuotes { inQuotes = false } else if atFieldStart { inQuotes = true; quoteLine = line }
                        atFieldStart = false
                    } else if c == UInt8(ascii: ",") && !inQuotes {
                        atFieldStart = true
                        fields += 1
                    } else {
                        atFieldStart = false
                    }
                }
                i += 1
            }
        }

        /// The end of the file: refuses a quote never closed.
        package func finish() throws {
            if inQuotes {
                throw DataError.csvValue(path: path, line: quoteLine, column: "-", value: "\"", expected: "a closing quote", nearest: nil)
            }
        }
    }

    /// CSV text (RFC 4180, LF line ends, a final line end) written by CSV.swift: a field is
    /// quoted when it holds a comma, a quote or a line break.
    /// - Parameters:
    ///   - header: the column names.
    ///   - rows: the rows, each with as many fields as the header.
    public static func render(header: [String], rows: [[String]]) -> String {
        let stream = OutputStream(toMemory: ())
        stream.open()
        defer { stream.close() }
        do {
            let w = try CSVWriter(stream: stream)
            try w.write(row: header)
            for r in rows { try w.write(row: r) }
        } catch {
            // writing to memory cannot fail
            preconditionFailure("CSV to memory: \(error)")
        }
        let data = stream.property(forKey: .dataWrittenToMemoryStreamKey) as? Data ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// Reads and parses a CSV file: a regular file, a pipe, a FIFO or `/dev/stdin`, read once
    /// (``readChecked(_:what:)``).
    /// - Throws: ``DataError/missingFile(path:expected:)``, ``DataError/unreadableFile(path:reason:)``
    ///   (a folder, a file over ``InputLimits/csvFileBytes``, a read error) and parse errors.
    public init(contentsOf url: URL) throws {
        // The line check runs on each piece as it is read: an over-long line is refused
        // without reading the whole file into memory, and a pipe is read only once.
        let data = try CSVTable.readChecked(url)
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

/// Formats a coordinate like the RSNA files (`316.0`), without trailing noise.
func csvNumber(_ v: Float) -> String {
    let r = (Double(v) * 10).rounded() / 10
    return String(format: "%.1f", r)
}
