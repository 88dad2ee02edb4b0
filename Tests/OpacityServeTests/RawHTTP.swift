import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A small HTTP/1.1 client over a loopback TCP socket: whole requests, or raw bytes for the
/// hostile-client tests (truncated bodies, slow senders, idle connections).
final class RawSocket {
    let fd: Int32

    /// Connects to 127.0.0.1:`port` with a receive timeout.
    init(port: Int, timeout: Double = 60) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RawHTTPError("socket() failed: errno \(errno)") }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: .init((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0 else { let e = errno; close(fd); throw RawHTTPError("connect to port \(port) failed: errno \(e)") }
    }

    deinit { close(fd) }

    /// Sends all bytes.
    func send(_ data: Data) throws {
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            var off = 0
            while off < raw.count {
                let n = Glibc.send(fd, raw.baseAddress! + off, raw.count - off, Int32(MSG_NOSIGNAL))
                guard n > 0 else { throw RawHTTPError("send failed: errno \(errno)") }
                off += n
            }
        }
    }

    /// Stops sending (the server sees end of stream).
    func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Reads one response (head and a Content-Length body, or up to end of stream).
    func readResponse() throws -> HTTPAnswer {
        var buf = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        var headEnd: Int?
        var contentLength: Int?
        while true {
            if let h = headEnd, let cl = contentLength, buf.count >= h + cl { break }
            let n = recv(fd, &chunk, chunk.count, 0)
            if n == 0 { break }
            guard n > 0 else { throw RawHTTPError("receive failed or timed out: errno \(errno); got \(buf.count) bytes") }
            buf.append(contentsOf: chunk[0..<n])
            if headEnd == nil, let r = find(Array("\r\n\r\n".utf8), in: buf) {
                headEnd = r + 4
                let head = String(decoding: buf[0..<r], as: UTF8.self)
                for line in head.components(separatedBy: "\r\n").dropFirst() {
                    let kv = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                    if kv.count == 2, kv[0].lowercased() == "content-length" { contentLength = Int(kv[1]) }
                }
            }
        }
        guard let h = headEnd else { throw RawHTTPError("no complete response head (\(buf.count) bytes)") }
        let lines = String(decoding: buf[0..<(h - 4)], as: UTF8.self).components(separatedBy: "\r\n")
        let status = Int(lines[0].split(separator: " ").dropFirst().first ?? "") ?? -1
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            let kv = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if kv.count == 2 { headers[kv[0].lowercased()] = kv[1] }
        }
        let end = contentLength.map { min(buf.count, h + $0) } ?? buf.count
        return HTTPAnswer(status: status, headers: headers, body: Data(buf[h..<end]))
    }

    private func find(_ needle: [UInt8], in hay: [UInt8]) -> Int? {
        guard hay.count >= needle.count else { return nil }
        for i in 0...(hay.count - needle.count) where hay[i] == needle[0] && Array(hay[i..<i + needle.count]) == needle { return i }
        return nil
    }
}

struct RawHTTPError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A response.
struct HTTPAnswer {
    var status: Int
    var headers: [String: String]
    var body: Data
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: Any? { try? JSONSerialization.jsonObject(with: body) }
    var object: [String: Any] { json as? [String: Any] ?? [:] }
    var array: [[String: Any]] { json as? [[String: Any]] ?? [] }
}

enum HTTP {
    /// One request on a fresh connection (`Connection: close`).
    static func request(port: Int, _ method: String, _ path: String, headers: [String: String] = [:], body: Data? = nil,
                        timeout: Double = 120) throws -> HTTPAnswer {
        let s = try RawSocket(port: port, timeout: timeout)
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        var data = Data(head.utf8)
        if let body { data.append(body) }
        try s.send(data)
        return try s.readResponse()
    }

    /// A `multipart/form-data` body of files.
    static func multipart(_ files: [(name: String, type: String, data: Data)], boundary: String = "opacity-test-boundary-7d1f") -> (Data, String) {
        var body = Data()
        for f in files {
            body.append(Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\(f.name)\"\r\nContent-Type: \(f.type)\r\n\r\n".utf8))
            body.append(f.data)
            body.append(Data("\r\n".utf8))
        }
        body.append(Data("--\(boundary)--\r\n".utf8))
        return (body, "multipart/form-data; boundary=\(boundary)")
    }
}
