import Foundation
import Opacity
import OpacityTraining
import XCTest

/// The run folder's lock: held (and named) while a run writes, gone once the run ends, and a
/// lock file a killed run left behind is taken over as stale (new-user trial: an empty
/// run.lock stayed in every finished run folder).
final class RunLockTests: XCTestCase {
    func folder(_ name: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("runlock-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    func testTheLockIsHeldWhileRunningAndRemovedWhenReleased() throws {
        let dir = try folder("release")
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data("{}".utf8).write(to: dir.appendingPathComponent("options.json"))
        let file = dir.appendingPathComponent("run.lock")
        var lock: RunLock? = try RunLock(runDirectory: dir)
        XCTAssertNil(lock?.takenOverFrom)
        XCTAssertTrue(try String(contentsOf: file, encoding: .utf8).hasPrefix("pid \(getpid()) on "))
        // a second run into the folder is refused, naming the holder
        XCTAssertThrowsError(try RunLock(runDirectory: dir)) { e in
            XCTAssertTrue("\(e)".contains("pid \(getpid())"), "\(e)")
        }
        lock = nil
        XCTAssertFalse(FileManager.default.fileExists(atPath: file.path), "run.lock stays after the run")
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("options.json").path))
        // the next run takes the folder as if it had never been locked
        lock = try RunLock(runDirectory: dir)
        XCTAssertNil(lock?.takenOverFrom)
        lock = nil
        XCTAssertFalse(FileManager.default.fileExists(atPath: file.path))
    }

    func testALockFileWithoutAHolderIsStaleAndTakenOver() throws {
        let dir = try folder("stale")
        defer { try? FileManager.default.removeItem(at: dir) }
        // what a killed run leaves: its holder line, no flock (the kernel dropped it)
        let file = dir.appendingPathComponent("run.lock")
        try Data("pid 999999 on elsewhere, started 2026-01-01T00:00:00Z\n".utf8).write(to: file)
        var lock: RunLock? = try RunLock(runDirectory: dir)
        XCTAssertEqual(lock?.takenOverFrom, "pid 999999 on elsewhere, started 2026-01-01T00:00:00Z")
        XCTAssertTrue(try String(contentsOf: file, encoding: .utf8).hasPrefix("pid \(getpid()) on "))
        lock = nil
        XCTAssertFalse(FileManager.default.fileExists(atPath: file.path))
    }

    /// Asks ``RunLock/liveHolder(of:)`` without pause on another thread while `body` runs;
    /// the answers, in order.
    func answers(of dir: URL, during body: () throws -> Void) throws -> [String?] {
        final class Asker: @unchecked Sendable {
            let lock = NSLock()
            var stop = false
            var answers: [String?] = []
            let done = DispatchSemaphore(value: 0)
            var count: Int { lock.lock(); defer { lock.unlock() }; return answers.count }
        }
        let asker = Asker()
        Thread.detachNewThread {
            while true {
                let answer = RunLock.liveHolder(of: dir)
                asker.lock.lock()
                asker.answers.append(answer)
                let stop = asker.stop
                asker.lock.unlock()
                if stop { break }
            }
            asker.done.signal()
        }
        while asker.count == 0 { usleep(100) }
        let result = Result { try body() }
        asker.lock.lock()
        asker.stop = true
        asker.lock.unlock()
        asker.done.wait()
        try result.get()
        return asker.answers
    }

    /// Asking whether a run is live takes no lock (`compare` asks it of every run folder):
    /// asked without pause while a run holds the folder, it never misses the run, and the run
    /// keeps its lock and its holder line; asked without pause while runs start and end in
    /// the folder, no run is refused (the shared lock the question took for a moment refused
    /// a run that started then, which tried again for 50 ms to get past it).
    func testAskingWhetherARunIsLiveTakesNoLock() throws {
        let dir = try folder("probe")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("run.lock")
        var lock: RunLock? = try RunLock(runDirectory: dir)
        let holder = try String(contentsOf: file, encoding: .utf8)
        let live = try answers(of: dir) { usleep(100_000) }
        XCTAssertGreaterThan(live.count, 10)
        XCTAssertEqual(Set(live.map { $0 ?? "nil" }), [holder], "a run holding its folder was missed")
        XCTAssertEqual(try String(contentsOf: file, encoding: .utf8), holder)
        XCTAssertThrowsError(try RunLock(runDirectory: dir), "the run lost its lock to the question")
        lock = nil
        XCTAssertNil(lock)
        XCTAssertNil(RunLock.liveHolder(of: dir))
        var started = 0
        let asked = try answers(of: dir) {
            for _ in 0..<500 {
                var run: RunLock? = try RunLock(runDirectory: dir)
                started += 1
                run = nil
                XCTAssertNil(run)
            }
        }
        XCTAssertEqual(started, 500)
        XCTAssertGreaterThan(asked.count, 10)
    }

    /// A lock file whose holder is gone is stale, not live: a killed run's (a process that
    /// has exited), and on Linux one naming a process that runs but holds no lock on it (a
    /// process id a new process got since): the lock decides, not the process id.
    func testALockFileNoProcessHoldsIsNotLive() throws {
        let dir = try folder("dead")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("run.lock")
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/sh")
        gone.arguments = ["-c", "exit 0"]
        try gone.run()
        gone.waitUntilExit()
        try Data("pid \(gone.processIdentifier) on \(ProcessInfo.processInfo.hostName), started 2026-01-01T00:00:00Z\n".utf8).write(to: file)
        XCTAssertNil(RunLock.liveHolder(of: dir))
        #if os(Linux)
        try Data("pid \(getpid()) on \(ProcessInfo.processInfo.hostName), started 2026-01-01T00:00:00Z\n".utf8).write(to: file)
        XCTAssertNil(RunLock.liveHolder(of: dir))
        #endif
        // and taken over by the next run
        let lock = try RunLock(runDirectory: dir)
        XCTAssertNotNil(lock.takenOverFrom)
        XCTAssertEqual(RunLock.liveHolder(of: dir).map { $0.hasPrefix("pid \(getpid()) on ") }, true)
    }

    /// The holder check that takes the place of the lock where there are no open file
    /// description locks (not Linux): a live process of this host holds; a process that has
    /// ended, another host's process, or a line that names none does not; an empty line (a run
    /// that has not written its id yet) counts as held.
    func testTheHolderLineNamesALiveProcessOfThisHostOnly() throws {
        let dir = try folder("holder")
        defer { try? FileManager.default.removeItem(at: dir) }
        let lock = try RunLock(runDirectory: dir)
        let line = try String(contentsOf: dir.appendingPathComponent("run.lock"), encoding: .utf8)
        withExtendedLifetime(lock) {}
        XCTAssertTrue(RunLock.holderIsAlive(line), line)
        XCTAssertTrue(RunLock.holderIsAlive(""))
        let ended = Process()
        ended.executableURL = URL(fileURLWithPath: "/bin/true")
        try ended.run()
        ended.waitUntilExit()
        XCTAssertFalse(RunLock.holderIsAlive(line.replacingOccurrences(of: "pid \(getpid()) ", with: "pid \(ended.processIdentifier) ")))
        XCTAssertFalse(RunLock.holderIsAlive("pid \(getpid()) on another-host.invalid, started now"))
        XCTAssertFalse(RunLock.holderIsAlive("held by someone"))
    }
}
