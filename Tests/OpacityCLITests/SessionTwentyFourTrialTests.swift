import Foundation
import Opacity
import XCTest

/// What a new user met trying the finished tool (session 24's trial), each fixed with its test.
final class SessionTwentyFourTrialTests: XCTestCase {
    /// Trial: `mpirun -np 2 opacity train ... -o runs/mpi` finished ("done: 1 epoch run; best
    /// epoch 1 -> .../best.opb") and left `runs/mpi/run.lock` behind, which a plain run never
    /// does: rank 0's SIGCONT handler (mpirun's first sign of ending a job) held the trainer,
    /// and with it the lock, until the process exited. A finished distributed run now leaves
    /// no `run.lock`, as a finished single-process run does not.
    func testFinishedDistributedRunLeavesNoRunLock() throws {
        let dir = try CLI.tempDir("s24-mpi-lock")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "--output", "data", "--count", "12", "--size", "64", "--seed", "5"], in: dir).status, 0)
        let r = try DistributedTests.mpirun(
            2,
            [
                "train", "--data", "data", "--config", DistributedTests.tiny, "--epochs", "1", "--batch", "4", "--threads", "1",
                "--output", "run",
            ], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("done: 1 epoch run"), r.all)
        let run = dir.appendingPathComponent("run")
        XCTAssertTrue(FileManager.default.fileExists(atPath: run.appendingPathComponent("best.opb").path), r.all)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run.appendingPathComponent("run.lock").path), "a finished run leaves no run.lock")
    }
}
