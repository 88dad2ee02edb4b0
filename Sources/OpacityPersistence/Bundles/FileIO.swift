import Foundation
import OpacityCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A POSIX file descriptor with errors that name the file.
final class FileDescriptor {
    let fd: Int32
    let path: String
    private var closed = false
    /// The bytes of a memory-backed descriptor (``memory(_:path:)``); `nil` for a file.
    private let bytes: [UInt8]?

    private init(fd: Int32, path: String, bytes: [UInt8]? = nil) {
        self.fd = fd
        self.path = path
        self.bytes = bytes
    }

    /// Bytes already in memory read as a file named `path` (no descriptor is open): for
    /// loading exactly the bytes that were hash-checked.
    static func memory(_ bytes: [UInt8], path: String) -> FileDescriptor {
        FileDescriptor(fd: -1, path: path, bytes: bytes)
    }

    /// Opens an existing file for reading.
    static func open(reading path: String) throws -> FileDescriptor {
        let (fd, code) = path.withCString { (openFile($0, O_RDONLY | O_CLOEXEC, 0), errno) }
        guard fd >= 0 else { throw BundleError.io(file: path, operation: "open for reading", reason: errnoText(code)) }
        return FileDescriptor(fd: fd, path: path)
    }

    /// Creates a new file that must not exist yet.
    static func create(_ path: String) throws -> FileDescriptor {
        let (fd, code) = path.withCString { (openFile($0, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644), errno) }
        guard fd >= 0 else { throw BundleError.io(file: path, operation: "create", reason: errnoText(code)) }
        return FileDescriptor(fd: fd, path: path)
    }

    /// The file's size in bytes.
    func size() throws -> UInt64 {
        if let bytes { return UInt64(bytes.count) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let code = errno
            throw BundleError.io(file: path, operation: "stat", reason: errnoText(code))
        }
        return UInt64(st.st_size)
    }

    /// Reads up to `buffer.count` bytes at `offset`; returns how many were read (fewer only at the end of the file).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        if let bytes {
            guard offset < UInt64(bytes.count) else { return 0 }
            let n = min(buffer.count, bytes.count - Int(offset))
            bytes.withUnsafeBytes { src in buffer.baseAddress!.copyMemory(from: src.baseAddress! + Int(offset), byteCount: n) }
            return n
        }
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                throw BundleError.io(file: path, operation: "read at byte \(offset + UInt64(done))", reason: errnoText(code))
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Reads up to `count` bytes at `offset`.
    func read(count: Int, at offset: UInt64) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let n = try out.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        out.removeLast(count - n)
        return out
    }

    /// Reads sequentially (for pipes and files alike).
    func readSome(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = sysRead(fd, buffer.baseAddress!, buffer.count)
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                throw BundleError.io(file: path, operation: "read", reason: errnoText(code))
            }
            return n
        }
    }

    /// Appends all bytes at the current position.
    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard var p = bytes.baseAddress else { return }
        var left = bytes.count
        while left > 0 {
            let n = sysWrite(fd, p, left)
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                throw BundleError.io(file: path, operation: "write", reason: errnoText(code))
            }
            p += n
            left -= n
        }
    }

    /// Writes all bytes at `offset` without moving the file position.
    func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { b in
            var done = 0
            while done < b.count {
                let n = pwrite(fd, b.baseAddress! + done, b.count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    let code = errno
                    if code == EINTR { continue }
                    throw BundleError.io(file: path, operation: "write at byte \(offset)", reason: errnoText(code))
                }
                done += n
            }
        }
    }

    /// Flushes the file's data to the storage device.
    func sync() throws {
        guard fsync(fd) == 0 else {
            let code = errno
            throw BundleError.io(file: path, operation: "fsync", reason: errnoText(code))
        }
    }

    func close() {
        guard !closed, bytes == nil else { return }
        closed = true
        _ = sysClose(fd)
    }

    deinit { close() }
}

@inline(__always)
private func openFile(_ path: UnsafePointer<CChar>, _ flags: Int32, _ mode: mode_t) -> Int32 {
    sysOpen(path, flags, mode)
}

#if canImport(Glibc)
@inline(__always) func sysOpen(_ p: UnsafePointer<CChar>, _ f: Int32, _ m: mode_t = 0) -> Int32 { Glibc.open(p, f, m) }
@inline(__always) func sysRead(_ fd: Int32, _ b: UnsafeMutableRawPointer, _ n: Int) -> Int { Glibc.read(fd, b, n) }
@inline(__always) func sysWrite(_ fd: Int32, _ b: UnsafeRawPointer, _ n: Int) -> Int { Glibc.write(fd, b, n) }
@inline(__always) func sysClose(_ fd: Int32) -> Int32 { Glibc.close(fd) }
#elseif canImport(Musl)
@inline(__always) func sysOpen(_ p: UnsafePointer<CChar>, _ f: Int32, _ m: mode_t = 0) -> Int32 { Musl.open(p, f, m) }
@inline(__always) func sysRead(_ fd: Int32, _ b: UnsafeMutableRawPointer, _ n: Int) -> Int { Musl.read(fd, b, n) }
@inline(__always) func sysWrite(_ fd: Int32, _ b: UnsafeRawPointer, _ n: Int) -> Int { Musl.write(fd, b, n) }
@inline(__always) func sysClose(_ fd: Int32) -> Int32 { Musl.close(fd) }
#else
@inline(__always) func sysOpen(_ p: UnsafePointer<CChar>, _ f: Int32, _ m: mode_t = 0) -> Int32 { Darwin.open(p, f, m) }
@inline(__always) func sysRead(_ fd: Int32, _ b: UnsafeMutableRawPointer, _ n: Int) -> Int { Darwin.read(fd, b, n) }
@inline(__always) func sysWrite(_ fd: Int32, _ b: UnsafeRawPointer, _ n: Int) -> Int { Darwin.write(fd, b, n) }
@inline(__always) func sysClose(_ fd: Int32) -> Int32 { Darwin.close(fd) }
#endif

/// The system's text for an `errno` value. Callers read `errno` into a constant right after
/// the failing call: building the error's other strings may allocate, and nothing promises
/// that leaves `errno` alone.
func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }

/// Writes a file atomically: everything goes to a temporary file in the same folder, which
/// is flushed (`fsync`) and renamed over the final name only when complete; the folder is
/// flushed after the rename. A failure or crash never leaves a partial file under the final
/// name, and an existing file there stays intact until the new one is complete.
final class AtomicFile {
    let finalPath: String
    let tempPath: String
    let file: FileDescriptor
    private var finished = false

    /// Starts writing `url`; the parent folder must exist.
    init(_ url: URL) throws {
        finalPath = url.path
        let dir = url.deletingLastPathComponent().path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw BundleError.io(file: finalPath, operation: "create", reason: "folder \(dir) does not exist")
        }
        tempPath = dir + "/." + url.lastPathComponent + ".tmp-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        file = try FileDescriptor.create(tempPath)
    }

    /// Flushes and renames the temporary file to the final name.
    func commit() throws {
        precondition(!finished, "AtomicFile.commit called twice")
        do {
            try file.sync()
            file.close()
            guard rename(tempPath, finalPath) == 0 else {
                let code = errno
                throw BundleError.io(file: finalPath, operation: "rename \(tempPath) to it", reason: errnoText(code))
            }
            finished = true
        } catch {
            abort()
            throw error
        }
        let dir = (finalPath as NSString).deletingLastPathComponent
        let dfd = (dir.isEmpty ? "." : dir).withCString { sysOpen($0, O_RDONLY | O_CLOEXEC) }
        if dfd >= 0 {
            _ = fsync(dfd)
            _ = sysClose(dfd)
        }
    }

    /// Removes the temporary file.
    func abort() {
        guard !finished else { return }
        finished = true
        file.close()
        _ = unlink(tempPath)
    }

    deinit { abort() }

    /// Runs `body` with a new atomic file, committing when it returns and removing the
    /// temporary file when it throws.
    static func write<T>(_ url: URL, _ body: (AtomicFile) throws -> T) throws -> T {
        let f = try AtomicFile(url)
        do {
            let r = try body(f)
            try f.commit()
            return r
        } catch {
            f.abort()
            throw error
        }
    }
}
