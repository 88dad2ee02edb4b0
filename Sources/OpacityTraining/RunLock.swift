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
            // a reader that asks whether the run is live (``liveHolder(of:)``) holds a shared
            // lock for a moment: tried again for up to 50 ms before the folder counts as held
            var err: Int32 = flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : errno
            for _ in 0..<10 where err == EWOULDBLOCK {
                usleep(5_000)
                err = flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : errno
            }
            if err != 0 {
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

    /// The process that holds `runDirectory`'s lock now: a training run writing the folder.
    ///
    /// A `run.lock` that no process holds (a killed run's, stale) or no `run.lock` at all
    /// gives nil; the lock is asked for, shared and without waiting, and let go at once (a run
    /// that starts in that moment tries again: ``init(runDirectory:)``).
    /// - Parameter runDirectory: the run folder.
    /// - Returns: the holder line its lock file names (`pid N on HOST, started TIME`), or
    ///   "a process that has not written its id yet" for a lock taken a moment ago; nil when
    ///   no process holds the lock.
    public static func liveHolder(of runDirectory: URL) -> String? {
        let fd = open(runDirectory.appendingPathComponent("run.lock").path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            return nil
        }
        guard errno == EWOULDBLOCK else { return nil }
        let holder = contents(fd)
        return holder.isEmpty ? "a process that has not written its id yet" : holder
    }

    /// The holder line of a lock file (at most 512 bytes).
    static func contents(_ fd: Int32) -> String {
        var buf = [UInt8](repeating: 0, count: 512)
        let n = pread(fd, &buf, buf.count, 0)
        guard n > 0 else { return "" }
        return String(decoding: buf.prefix(n), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
