import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The lock of a run folder (`run.lock`): one training run at a time writes into a folder.
///
/// An advisory `flock` on `run.lock`, held for the life of this object; the file names the
/// holder (`pid`, host, start time) for the message a second run gets. The kernel drops the
/// lock when its process dies, so the lock of a killed run is stale by construction: the
/// next run takes it over (``takenOverFrom`` says whose it was). Released normally (the run
/// finished, failed or was interrupted), it removes `run.lock`.
public final class RunLock: @unchecked Sendable {
    /// The lock file.
    public let url: URL
    /// The holder written in a lock file this run took over from a process that is gone
    /// (a killed run), if any.
    public let takenOverFrom: String?
    private let fd: Int32
    private let runDirectory: URL
    private let createdFolder: Bool

    /// Takes the lock of `runDirectory`, creating the folder if needed.
    /// - Throws: ``RunError/locked(path:holder:)`` naming the process that holds it, or
    ///   ``RunError/incompatible(_:)`` when the lock file cannot be opened.
    ///
    /// A folder this lock created is removed again when the lock is released with nothing else
    /// in it (a run that failed before writing anything leaves no folder behind).
    public init(runDirectory: URL) throws {
        createdFolder = !FileManager.default.fileExists(atPath: runDirectory.path)
        self.runDirectory = runDirectory
        try FileManager.default.createDirectory(at: runDirectory, withIntermediateDirectories: true)
        url = runDirectory.appendingPathComponent("run.lock")
        var attempt = 0
        var fd: Int32 = -1
        var previous = ""
        while true {
            fd = open(url.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                let code = errno
                throw RunError.incompatible("cannot open \(url.path): \(String(cString: strerror(code)))")
            }
            previous = RunLock.contents(fd)
            if flock(fd, LOCK_EX | LOCK_NB) != 0 {
                let err = errno
                close(fd)
                if err == EWOULDBLOCK {
                    throw RunError.locked(path: runDirectory.path, holder: previous.isEmpty ? "it started a moment ago and has not written its process id yet" : previous)
                }
                throw RunError.incompatible("cannot lock \(url.path): \(String(cString: strerror(err)))")
            }
            // a finished run removes its lock file (holding the lock): a lock taken on a file
            // removed in between is on no file at all, so open the folder's new one instead
            var held = stat(), named = stat()
            if fstat(fd, &held) == 0, stat(url.path, &named) == 0, held.st_dev == named.st_dev, held.st_ino == named.st_ino { break }
            close(fd)
            attempt += 1
            guard attempt < 100 else { throw RunError.incompatible("cannot lock \(url.path): the file keeps being replaced") }
        }
        self.fd = fd
        takenOverFrom = previous.isEmpty ? nil : previous
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let hostName = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let me = "pid \(getpid()) on \(hostName), started \(ISO8601DateFormatter().string(from: Date()))"
        _ = ftruncate(fd, 0)
        _ = me.withCString { pwrite(fd, $0, strlen($0), 0) }
    }

    /// Releases the lock and removes `run.lock` (a finished or failed run leaves none; only a
    /// killed run's file stays, for the next run to take over as stale).
    deinit {
        // removed while still held, so no other run can lock this file in between
        unlink(url.path)
        flock(fd, LOCK_UN)
        close(fd)
        let fm = FileManager.default
        if createdFolder, (try? fm.contentsOfDirectory(atPath: runDirectory.path)) == [] {
            try? fm.removeItem(at: runDirectory)
        }
    }

    /// The holder line of a lock file (at most 512 bytes).
    static func contents(_ fd: Int32) -> String {
        var buf = [UInt8](repeating: 0, count: 512)
        let n = pread(fd, &buf, buf.count, 0)
        guard n > 0 else { return "" }
        return String(decoding: buf.prefix(n), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
