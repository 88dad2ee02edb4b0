import Foundation
import Opacity
import XCTest

/// A reader of the standard output that goes away early (`opacity train ... | head -3`; new-user
/// trial: the run died from SIGPIPE before writing a checkpoint): `opacity` ignores SIGPIPE,
/// prints nothing more, finishes quietly and exits 141; a training run stops as after Ctrl-C,
/// with its checkpoint and the `--resume` hint on standard error.
final class ClosedOutputTests: XCTestCase {
    struct Outcome {
        var status: Int32
        /// Whether the process exited by itself (not ended by a signal).
        var exited: Bool
        var stdout: String
        var stderr: String
        var all: String { stdout + "\n" + stderr }
    }

    /// Runs `opacity args` in `dir` with its standard output into a pipe whose reader closes it
    /// after reading `lines` lines (`| head -LINES`; 0: closed before the command starts, so
    /// that its first write finds no reader).
    ///
    /// The command starts with SIGPIPE's default action, as from a shell (a child inherits an
    /// ignored signal, and the test process may ignore SIGPIPE): without its own handling, the
    /// first write after the close ends it.
    static func run(_ args: [String], in dir: URL, closingAfter lines: Int) throws -> Outcome {
        let p = CLI.process(args, in: dir)
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        if lines == 0 { try out.fileHandleForReading.close() }
        let previous = signal(SIGPIPE, SIG_DFL)
        defer { signal(SIGPIPE, previous) }
        try p.run()
        let box = CLI.DataBox()
        let group = DispatchGroup()
        group.enter()
        let errReader = err.fileHandleForReading
        DispatchQueue.global().async {
            box.set(errReader.readDataToEndOfFile())
            group.leave()
        }
        var read = Data()
        if lines > 0 {
            let reader = out.fileHandleForReading
            while read.filter({ $0 == UInt8(ascii: "\n") }).count < lines {
                let chunk = reader.availableData
                if chunk.isEmpty { break }
                read += chunk
            }
            try reader.close()
        }
        group.wait()
        p.waitUntilExit()
        return Outcome(
            status: p.terminationStatus, exited: p.terminationReason == .exit, stdout: String(decoding: read, as: UTF8.self),
            stderr: String(decoding: box.get(), as: UTF8.self))
    }

    /// `train ... | head -1`: the run stops at the first step after a line could not be written,
    /// writes `checkpoints/interrupted.opb` and says on standard error that `--resume`
    /// continues; it exits 141 by itself. `--resume` then finishes the run. A command that
    /// writes files and prints (`detect`) finishes its files and exits 141, without a message.
    func testTrainingIntoAReaderThatStopsEarlyKeepsItsCheckpoint() throws {
        let dir = try CLI.tempDir("closedout")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "-o", "data", "--count", "16", "--size", "64", "--seed", "2", "-q"], in: dir).status, 0)
        // 12 training images at batch 4: 3 steps an epoch, so the stop comes inside an epoch
        let train = ["train", "--data", "data", "--config", CLIRobustnessTests.tiny, "--epochs", "3", "--batch", "4", "-o", "run", "--workers", "1"]
        let r = try Self.run(train, in: dir, closingAfter: 1)
        XCTAssertTrue(r.exited, "ended by a signal: \(r.all)")
        XCTAssertEqual(r.status, 141, r.all)
        XCTAssertTrue(r.stdout.hasPrefix("run: "), r.all)
        let interrupted = dir.appendingPathComponent("run/checkpoints/interrupted.opb")
        XCTAssertTrue(r.stderr.contains("stopped: standard output was closed by its reader (e.g. `| head`); interrupted; state saved to "), r.stderr)
        XCTAssertTrue(r.stderr.contains("Continue with --resume."), r.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: interrupted.path), r.all)
        XCTAssertEqual(Trainer.latestCheckpoint(in: dir.appendingPathComponent("run"))?.lastPathComponent, "interrupted.opb", r.all)
        XCTAssertFalse(r.stderr.contains("Error"), r.stderr)
        // the checkpoint continues: the run finishes its 3 epochs
        let resumed = try CLI.run(["train", "-o", "run", "--resume", "-q"], in: dir)
        XCTAssertEqual(resumed.status, 0, resumed.all)
        XCTAssertEqual(try EpochLog.read(dir.appendingPathComponent("run/log.jsonl")).map(\.epoch), [1, 2, 3], resumed.all)

        // detect into a closed pipe: every file written, nothing said, status 141
        let images = try ImageFile.list(in: dir.appendingPathComponent("data/stage_2_train_images")).prefix(3).map(\.path)
        let d = try Self.run(["detect"] + images + ["--model", "run", "-o", "found"], in: dir, closingAfter: 0)
        XCTAssertTrue(d.exited, "ended by a signal: \(d.all)")
        XCTAssertEqual(d.status, 141, d.all)
        XCTAssertFalse(d.stderr.contains("Error"), d.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("found/detections.json")))
        XCTAssertEqual((report as? [Any])?.count, 3, "\(report)")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("found").path).filter { $0.hasSuffix(".overlay.png") }.count, 3)
    }

    /// Commands that only print (`plugins`, `zoo list`) stop quietly with status 141 when
    /// nobody reads them, rather than being ended by SIGPIPE; with a reader they exit 0.
    func testPrintingCommandsIntoAClosedPipeExitQuietly() throws {
        let dir = try CLI.tempDir("closedprint")
        defer { try? FileManager.default.removeItem(at: dir) }
        for args in [["plugins"], ["zoo", "list"]] {
            let r = try Self.run(args, in: dir, closingAfter: 0)
            XCTAssertTrue(r.exited, "\(args): ended by a signal: \(r.all)")
            XCTAssertEqual(r.status, 141, "\(args): \(r.all)")
            XCTAssertEqual(r.stderr, "", "\(args)")
            let read = try CLI.run(args, in: dir)
            XCTAssertEqual(read.status, 0, "\(args): \(read.all)")
        }
    }
}
