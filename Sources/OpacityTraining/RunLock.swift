import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The lock of a run folder (`run.lock`): one training run at a time writes into a folder.
///
/// An advisory write lock on the whole of `run.lock`, held for the life of this object; the
/// file names the holder (`pid`, host, start time) for the message a second run gets. On
/// Linux it is an open-file-description lock (`F_OFD_SETLK`), elsewhere a `flock`: either
/// belongs to this object's descriptor, so a second `RunLock` in the same process is refused
/// too; ``liveHolder(of:)`` asks about it (on Linux with `F_OFD_GETLK`) without taking any. The
/// kernel drops the lock when its process dies, so the lock of a killed run is stale by
/// construction: the next run takes it over (``takenOverFrom`` says whose it was). Released
/// normally (the run finished, failed or was interrupted), it removes `run.lock`.
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
            // once, without waiting: a reader that asks whether the run is live
            // (``liveHolder(of:)``) takes no lock, so only another run can hold it
            let err = RunLock.lockExclusively(fd)
            if err != 0 {
                close(fd)
                if err == EWOULDBLOCK || err == EAGAIN || err == EACCES {
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
        let me = "pid \(getpid()) on \(RunLock.hostName()), started \(ISO8601DateFormatter().string(from: Date()))"
        _ = ftruncate(fd, 0)
        _ = me.withCString { pwrite(fd, $0, strlen($0), 0) }
    }

    /// Releases the lock and removes `run.lock` (a finished or failed run leaves none; only a
    /// killed run's file stays, for the next run to take over as stale).
    deinit {
        // removed while still held, so no other run can lock this file in between
        unlink(url.path)
        RunLock.unlock(fd)
        close(fd)
        let fm = FileManager.default
        if createdFolder, (try? fm.contentsOfDirectory(atPath: runDirectory.path)) == [] {
            try? fm.removeItem(at: runDirectory)
        }
    }

    /// The process that holds `runDirectory`'s lock now: a training run writing the folder.
    ///
    /// Takes no lock, so it cannot get in the way of a run that starts meanwhile: on Linux the
    /// kernel is asked whether a lock on `run.lock` would conflict (`F_OFD_GETLK`), and the
    /// lock, not the process id the file names, decides (a killed run's process id that a new
    /// process got since still reads as not live). Elsewhere (`flock`, which cannot be asked
    /// without taking it) the process the file names is looked up: alive on this host is live.
    /// A `run.lock` that no process holds (a killed run's, stale) or no `run.lock` at all
    /// gives nil.
    /// - Parameter runDirectory: the run folder.
    /// - Returns: the holder line its lock file names (`pid N on HOST, started TIME`), or
    ///   "a process that has not written its id yet" for a lock taken a moment ago; nil when
    ///   no process holds the lock.
    public static func liveHolder(of runDirectory: URL) -> String? {
        let fd = open(runDirectory.appendingPathComponent("run.lock").path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let holder = contents(fd)
        #if os(Linux)
        var probe = wholeFile(F_RDLCK)
        guard fcntl(fd, ofdGetLock, &probe) == 0, probe.l_type != Int16(F_UNLCK) else { return nil }
        #else
        guard holderIsAlive(holder) else { return nil }
        #endif
        return holder.isEmpty ? "a process that has not written its id yet" : holder
    }

    #if os(Linux)
    /// `F_OFD_GETLK` and `F_OFD_SETLK` (`<fcntl.h>` with `_GNU_SOURCE`, which Swift's Glibc
    /// module does not import; the same numbers on every Linux architecture).
    static let ofdGetLock: Int32 = 36
    static let ofdSetLock: Int32 = 37

    /// A lock record of `type` (`F_RDLCK`, `F_WRLCK`, `F_UNLCK`) over the whole file.
    static func wholeFile(_ type: Int32) -> flock {
        var record = flock()
        record.l_type = Int16(type)
        record.l_whence = Int16(SEEK_SET)
        return record
    }
    #endif

    /// Whether the process a holder line names (`pid N on HOST, ...`) runs on this host (an
    /// empty line: a run that has not written it yet, counted as alive). Where there are no
    /// open file description locks (not Linux), ``liveHolder(of:)`` asks this instead of the
    /// lock; compiled and tested on every platform.
    package static func holderIsAlive(_ holder: String) -> Bool {
        if holder.isEmpty { return true }
        let words = holder.split(separator: " ")
        guard words.count >= 4, words[0] == "pid", let pid = pid_t(words[1]), words[2] == "on" else { return false }
        guard String(words[3].dropLast(words[3].hasSuffix(",") ? 1 : 0)) == hostName() else { return false }
        return kill(pid, 0) == 0 || errno == EPERM
    }

    /// Takes the exclusive lock of `fd` without waiting: 0, or the errno (`EAGAIN`, `EACCES`
    /// or `EWOULDBLOCK` when another holds it).
    static func lockExclusively(_ fd: Int32) -> Int32 {
        #if os(Linux)
        var record = wholeFile(F_WRLCK)
        return fcntl(fd, ofdSetLock, &record) == 0 ? 0 : errno
        #else
        return flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : errno
        #endif
    }

    /// Releases the lock of `fd` (closing it would too).
    static func unlock(_ fd: Int32) {
        #if os(Linux)
        var record = wholeFile(F_UNLCK)
        _ = fcntl(fd, ofdSetLock, &record)
        #else
        _ = flock(fd, LOCK_UN)
        #endif
    }

    /// This machine's host name, as the holder line gives it.
    static func hostName() -> String {
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        return String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The holder line of a lock file (at most 512 bytes).
    static func contents(_ fd: Int32) -> String {
        var buf = [UInt8](repeating: 0, count: 512)
        let n = pread(fd, &buf, buf.count, 0)
        guard n > 0 else { return "" }
        return String(decoding: buf.prefix(n), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
