import Foundation
import Opacity
import XCTest

/// `compare` on a `log.jsonl` whose epochs repeat or go backwards (two runs' logs in one
/// file): the last line of each epoch, in epoch order, and a warning naming the file, the
/// lines and the epochs; a log whose epochs only go up gives no warning.
final class RunLogOrderTests: XCTestCase {
    /// One epoch's record as the trainer writes it (keys sorted).
    func record(epoch: Int, valTotal: Double) -> String {
        """
        {"best":true,"checkpoint":"checkpoints/epoch-\(epoch).opb","epoch":\(epoch),"images_per_second":10,"lr":0.001,\
        "metric":{"best":0.2,"sweep":[[0.5,0.2]],"threshold":0.5},"seconds":1,"time":"2026-01-01T00:00:00Z",\
        "train":{"focal":1,"regression":1,"total":2},"train_images":10,"val":{"focal":1,"regression":1,"total":\(valTotal)},"val_images":5}
        """
    }

    func testRepeatedAndBackwardEpochsKeepTheLastLineOfEach() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-logorder-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: root) }
        func run(_ name: String, _ epochs: [(Int, Double)]) throws -> URL {
            let dir = root.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try Data(epochs.map { record(epoch: $0.0, valTotal: $0.1) + "\n" }.joined().utf8).write(to: dir.appendingPathComponent("log.jsonl"))
            return dir
        }
        // a 3-epoch run, then a restarted run's 2 epochs appended to the same log
        let joined = try run("joined", [(1, 9), (2, 8), (3, 7), (1, 6), (2, 5)])
        let clean = try run("clean", [(1, 3), (2, 2)])
        let c = try RunComparison(folders: [joined, clean])
        XCTAssertEqual(c.groups.map(\.label), ["joined", "clean"])
        XCTAssertEqual(c.groups[0].runs[0].logs.map(\.epoch), [1, 2, 3])
        XCTAssertEqual(c.groups[0].runs[0].logs.map(\.val.total), [6, 5, 7])  // the last line of each epoch
        XCTAssertEqual(c.groups[0].runs[0].logs.last?.val.total, 7)
        XCTAssertEqual(c.chart("val_total").series[0].points.map { $0.y }, [6, 5, 7])  // not averaged with the older lines
        let path = joined.appendingPathComponent("log.jsonl").path
        XCTAssertEqual(c.warnings, [
            "\(path): its epochs repeat or go backwards: line 4 has epoch 1 again (first on line 1) after epoch 3 on line 3; "
                + "line 5 has epoch 2 again (first on line 2) after epoch 1 on line 4. Two runs' logs in one file? "
                + "Compared: the last line of each epoch, in epoch order, 3 epochs (1...3) of 5 lines"
        ])

        // out of order without repeats: sorted, and said; more than three findings are counted
        let lines = [5, 4, 3, 2, 1].enumerated().map { (line: $0.offset + 1, log: try! JSONDecoder().decode(EpochLog.self, from: Data(record(epoch: $0.element, valTotal: 1).utf8))) }
        let (logs, warning) = RunComparison.orderedEpochs(lines, path: "x/log.jsonl")
        XCTAssertEqual(logs.map(\.epoch), [1, 2, 3, 4, 5])
        XCTAssertEqual(
            warning,
            "x/log.jsonl: its epochs repeat or go backwards: line 2 has epoch 4 after epoch 5 on line 1; line 3 has epoch 3 after epoch 4 on line 2; "
                + "line 4 has epoch 2 after epoch 3 on line 3; and 1 more. Two runs' logs in one file? Compared: the last line of each epoch, "
                + "in epoch order, 5 epochs (1...5) of 5 lines")
        XCTAssertNil(RunComparison.orderedEpochs(Array(lines.reversed()), path: "x").warning)
    }
}
