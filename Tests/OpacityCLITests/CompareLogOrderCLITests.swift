import Foundation
import Opacity
import XCTest

/// `opacity compare` warns on a `log.jsonl` whose epochs repeat, naming the file, the lines
/// and the epochs, and reports the last line of each epoch as the run's final one.
final class CompareLogOrderCLITests: XCTestCase {
    func record(epoch: Int, valTotal: Double) -> String {
        """
        {"best":true,"checkpoint":"checkpoints/epoch-\(epoch).opb","epoch":\(epoch),"images_per_second":10,"lr":0.001,\
        "metric":{"best":0.2,"sweep":[[0.5,0.2]],"threshold":0.5},"seconds":1,"time":"2026-01-01T00:00:00Z",\
        "train":{"focal":1,"regression":1,"total":2},"train_images":10,"val":{"focal":1,"regression":1,"total":\(valTotal)},"val_images":5}
        """
    }

    func testRepeatedEpochsWarnAndTheLastLineOfEachEpochCounts() throws {
        let dir = try CLI.tempDir("compare-order")
        defer { try? FileManager.default.removeItem(at: dir) }
        let run = dir.appendingPathComponent("run")
        try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
        // epochs 1, 2, 3, then 1 and 2 again: the final epoch is 3 (val loss 0.7), not the last line's 2
        let log = [(1, 0.9), (2, 0.8), (3, 0.7), (1, 0.6), (2, 0.5)].map { record(epoch: $0.0, valTotal: $0.1) + "\n" }.joined()
        try Data(log.utf8).write(to: run.appendingPathComponent("log.jsonl"))
        let r = try CLI.run(["compare", "run", "-o", "cmp"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(
            r.stderr.contains(
                "warning: \(run.path)/log.jsonl: its epochs repeat or go backwards: line 4 has epoch 1 again (first on line 1) after epoch 3 on line 3; "),
            r.all)
        XCTAssertTrue(r.stderr.contains("Compared: the last line of each epoch, in epoch order, 3 epochs (1...3) of 5 lines\n"), r.all)
        XCTAssertTrue(r.stdout.contains("run: 1 run, final val loss 0.7000"), r.all)
        let curves = try String(contentsOf: dir.appendingPathComponent("cmp/curves.csv"), encoding: .utf8)
        XCTAssertEqual(curves.split(separator: "\n").dropFirst().map { $0.split(separator: ",")[2] }, ["1", "2", "3"])
    }

    /// Runs that differ only in the seed are one group, whose label says its count once
    /// (new-user trial: "run (2 runs): 2 runs, final val loss ...").
    func testAGroupOfRunsSaysItsCountOnce() throws {
        let dir = try CLI.tempDir("compare-count")
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, seed, val) in [("run-1", 1, 0.6), ("run-2", 2, 0.8)] {
            let run = dir.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
            var options = TrainingOptions(config: "retinanet(encoder=resnet18)")
            options.seed = UInt64(seed)
            try JSONEncoder().encode(options).write(to: run.appendingPathComponent("options.json"))
            try Data((record(epoch: 1, valTotal: val) + "\n").utf8).write(to: run.appendingPathComponent("log.jsonl"))
        }
        let r = try CLI.run(["compare", "run-1", "run-2", "-o", "cmp"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("run (2 runs): final val loss 0.7000, best metric 0.2000\n"), r.all)
        XCTAssertFalse(r.stdout.contains("2 runs,"), r.all)
    }
}
