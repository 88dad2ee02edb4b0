import Foundation
import OpacityCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reading an input file once, front to back, in pieces, with a limit on its size.
///
/// A regular file, a pipe, a FIFO or `/dev/stdin` read alike (`cat labels.csv | opacity score
/// --labels /dev/stdin ...`): nothing is read twice and nothing asks the file's size first, so
/// a stream works. Each piece is handed to a check (the CSV line check, say) before the next is
/// read, so a file with an over-long line is refused after reading at most that line; a file
/// (or a stream) of more than the limit is refused when its first byte past the limit arrives,
/// a regular file at once from its size.
package enum BoundedRead {
    /// The size of the pieces read (1 MiB).
    package static let pieceBytes = 1 << 20

    /// `bytes` for a message: "16 MiB" when it is a whole number of MiB, else "N bytes".
    package static func describe(bytes: Int) -> String {
        bytes % (1 << 20) == 0 ? "\(bytes >> 20) MiB" : "\(bytes) bytes"
    }

    /// Reads the file at `url` once and keeps it, handing each piece to `check` first.
    /// - Parameters:
    ///   - url: a regular file, a pipe, a FIFO or a device such as `/dev/stdin`.
    ///   - limit: the most bytes it may hold.
    ///   - what: what it should be, for messages ("a CSV file").
    ///   - check: sees each piece, in order, before it is kept; throws to stop reading.
    /// - Returns: the whole file.
    /// - Throws: as ``pieces(of:limit:what:_:)``.
    package static func data(of url: URL, limit: Int, what: String,
                             check: (UnsafeBufferPointer<UInt8>) throws -> Void) throws -> Data {
        var data = Data()
        try pieces(of: url, limit: limit, what: what, sizeHint: { data.reserveCapacity($0) }) { piece in
            try check(piece)
            data.append(piece)
        }
        return data
    }

    /// Reads the file at `url` once, handing each piece (at most ``pieceBytes``) to `body`
    /// without keeping it.
    /// - Parameters:
    ///   - url: a regular file, a pipe, a FIFO or a device such as `/dev/stdin`.
    ///   - limit: the most bytes it may hold.
    ///   - what: what it should be, for messages ("a CSV file").
    ///   - sizeHint: given a regular file's size before it is read.
    ///   - body: sees each piece, in order; throws to stop reading.
    /// - Throws: ``DataError/missingFile(path:expected:)`` when there is no such file;
    ///   ``DataError/unreadableFile(path:reason:)`` for a folder, a file that cannot be opened
    ///   or read (with the system's reason), or one of more than `limit` bytes; whatever
    ///   `body` throws.
    package static func pieces(of url: URL, limit: Int, what: String, sizeHint: (Int) -> Void = { _ in },
                               _ body: (UnsafeBufferPointer<UInt8>) throws -> Void) throws {
        let path = url.path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let err = errno
            if err == ENOENT { throw DataError.missingFile(path: path, expected: what) }
            throw DataError.unreadableFile(path: path, reason: String(cString: strerror(err)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let code = errno
            throw DataError.unreadableFile(path: path, reason: String(cString: strerror(code)))
        }
        let kind = st.st_mode & S_IFMT
        if kind == S_IFDIR {
            throw DataError.unreadableFile(path: path, reason: "it is a folder; expected \(what) (a regular file, a pipe or /dev/stdin)")
        }
        if kind == S_IFREG {
            // a regular file says its size: refused without reading a byte
            guard Int(st.st_size) <= limit else { throw tooLarge(path, limit: limit, what: what) }
            sizeHint(Int(st.st_size))
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: pieceBytes, alignment: 1)
        defer { buffer.deallocate() }
        var total = 0
        while true {
            let n = read(fd, buffer.baseAddress, pieceBytes)
            if n < 0 {
                let err = errno
                if err == EINTR { continue }
                throw DataError.unreadableFile(path: path, reason: String(cString: strerror(err)))
            }
            if n == 0 { return }
            total += n
            // a stream (or a file that grew) past the limit: refused before the piece is used
            guard total <= limit else { throw tooLarge(path, limit: limit, what: what) }
            try body(UnsafeBufferPointer(start: buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), count: n))
        }
    }

    /// The error for a file of more than `limit` bytes.
    static func tooLarge(_ path: String, limit: Int, what: String) -> DataError {
        .unreadableFile(path: path, reason: "it holds more than \(describe(bytes: limit)); expected \(what) of at most \(describe(bytes: limit))")
    }
}
