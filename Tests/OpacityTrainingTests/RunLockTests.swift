import Foundation
import Opacity
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
}
