import Foundation

/// A `multipart/form-data` body (RFC 7578) split into its parts.
struct MultipartForm {
    /// One part: its form field name, file name and bytes.
    struct Part {
        var name: String?
        var filename: String?
        var contentType: String?
        var data: Data
    }

    var parts: [Part]

    /// The `boundary` parameter of a `multipart/form-data` content type.
    /// - Throws: ``ServeError/badRequest(_:)`` when it is missing or longer than 70 characters.
    static func boundary(from contentType: String) throws(ServeError) -> String {
        for param in contentType.split(separator: ";").dropFirst() {
            let kv = param.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2, kv[0].lowercased() == "boundary" else { continue }
            var b = kv[1]
            if b.hasPrefix("\""), b.hasSuffix("\""), b.count >= 2 { b = String(b.dropFirst().dropLast()) }
            guard !b.isEmpty, b.utf8.count <= 70 else {
                throw .badRequest("multipart/form-data boundary must be 1 to 70 characters, got \(b.utf8.count)")
            }
            return b
        }
        throw .badRequest("multipart/form-data without a boundary parameter (e.g. 'multipart/form-data; boundary=XYZ')")
    }

    /// Splits `body` at `--boundary` lines.
    /// - Throws: ``ServeError/badRequest(_:)`` naming what is malformed (no opening boundary,
    ///   a part without a blank line after its headers, a missing closing boundary).
    init(body: Data, boundary: String) throws(ServeError) {
        let bytes = [UInt8](body)
        let dash = Array("--\(boundary)".utf8)
        let delimiter = Array("\r\n--\(boundary)".utf8)
        guard let first = MultipartForm.find(dash, in: bytes, from: 0) else {
            throw .badRequest("multipart body: the boundary '--\(boundary)' never occurs")
        }
        var pos = first + dash.count
        var parts: [Part] = []
        while true {
            // after a boundary: "--" ends the body, CRLF starts a part
            if pos + 2 <= bytes.count, bytes[pos] == 0x2D, bytes[pos + 1] == 0x2D { break }
            // transport padding (spaces/tabs) then CRLF
            while pos < bytes.count, bytes[pos] == 0x20 || bytes[pos] == 0x09 { pos += 1 }
            guard pos + 2 <= bytes.count, bytes[pos] == 0x0D, bytes[pos + 1] == 0x0A else {
                throw .badRequest("multipart body is truncated or malformed after part \(parts.count + 1)'s boundary (no closing '--\(boundary)--')")
            }
            pos += 2
            guard let headerEnd = MultipartForm.find(Array("\r\n\r\n".utf8), in: bytes, from: pos - 2) else {
                throw .badRequest("multipart part \(parts.count + 1): its headers never end (no blank line)")
            }
            let headerText = headerEnd > pos ? String(decoding: bytes[pos..<headerEnd], as: UTF8.self) : ""
            let dataStart = headerEnd + 4
            guard let end = MultipartForm.find(delimiter, in: bytes, from: dataStart - 2) else {
                throw .badRequest("multipart part \(parts.count + 1) is truncated: no boundary after its data")
            }
            var part = Part(name: nil, filename: nil, contentType: nil, data: end > dataStart ? Data(bytes[dataStart..<end]) : Data())
            for line in headerText.components(separatedBy: "\r\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let key = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
                let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                if key == "content-type" { part.contentType = value }
                if key == "content-disposition" {
                    part.name = MultipartForm.parameter("name", in: value)
                    part.filename = MultipartForm.parameter("filename", in: value)
                }
            }
            parts.append(part)
            pos = end + delimiter.count
        }
        self.parts = parts
    }

    static func parameter(_ key: String, in header: String) -> String? {
        for p in header.split(separator: ";").dropFirst() {
            let kv = p.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2, kv[0].lowercased() == key else { continue }
            var v = kv[1]
            if v.hasPrefix("\""), v.hasSuffix("\""), v.count >= 2 { v = String(v.dropFirst().dropLast()) }
            return v
        }
        return nil
    }

    /// The first index of `needle` in `hay` at or after `from`.
    static func find(_ needle: [UInt8], in hay: [UInt8], from: Int) -> Int? {
        let n = needle.count
        guard n > 0, hay.count >= n else { return nil }
        var i = max(0, from)
        let first = needle[0]
        return hay.withUnsafeBufferPointer { h in
            needle.withUnsafeBufferPointer { nd in
                while i + n <= h.count {
                    if h[i] == first {
                        var k = 1
                        while k < n && h[i + k] == nd[k] { k += 1 }
                        if k == n { return i }
                    }
                    i += 1
                }
                return nil
            }
        }
    }
}
