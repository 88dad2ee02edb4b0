import Foundation
import Opacity
import XCTest

/// Wording a new-user trial found out of step: `--freeze-bn`'s help read "(default: on)
/// (values: on, off)" where every other choice reads "(values: ...; default: ...)"; `detect`
/// said "threshold 0.2 (the default)" and "using the default 0.20" in one run; `zoo list` said
/// a metric as 0.07 where `zoo info` says 0.0700.
final class LeftoverWordingTests: XCTestCase {
    func testChoicesShowValuesAndDefaultAsEveryOtherChoice() throws {
        let r = try CLI.run(["train", "--help"], environment: ["COLUMNS": "1000"])
        XCTAssertEqual(r.status, 0, r.all)
        let lines = r.stdout.split(separator: "\n")
        for (option, tail) in [("--freeze-bn", "(values: on, off; default: on)"), ("--best-by", "(values: metric, loss; default: metric)")] {
            let line = try XCTUnwrap(lines.first { $0.hasPrefix("  \(option) <") }, r.stdout)
            XCTAssertTrue(line.hasSuffix(tail), String(line))
            XCTAssertEqual(line.components(separatedBy: "default").count, 2, String(line))
        }
        // a value given is still told from the default (train --resume compares it with the run's)
        let bad = try CLI.run(["train", "--data", "d", "--freeze-bn", "of"])
        XCTAssertEqual(bad.status, 64, bad.all)
        XCTAssertTrue(bad.stderr.contains("Please provide one of 'on' and 'off' (nearest valid: 'on')") || bad.stderr.contains("(nearest valid: 'off')"), bad.stderr)
    }

    func testDetectSaysTheDefaultThresholdInOneFormat() throws {
        let dir = try CLI.tempDir("threshold-format")
        defer { try? FileManager.default.removeItem(at: dir) }
        // a model whose operating point was picked at metric 0: the default is used, and said twice
        let source = try CLI.zoo().verifiedFile("retinanet-r34-rsna1k")
        try OperatingPoint.write(
            OperatingPoint(threshold: 0.01, metric: 0, data: "validation", images: 4), from: source, to: dir.appendingPathComponent("zero.opb"))
        var r = try CLI.run(["synth", "-o", "s", "--count", "1", "--size", "64", "--seed", "1", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let image = try XCTUnwrap(try ImageFile.list(in: dir.appendingPathComponent("s/stage_2_train_images")).first).path
        r = try CLI.run(["detect", image, "--model", "zero.opb", "-o", "d", "--no-overlays", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains(", threshold 0.20 (the default)\n"), r.stderr)
        XCTAssertTrue(r.stderr.contains("using the default 0.20 (it stores 0.01,"), r.stderr)
        XCTAssertFalse(r.stderr.contains("threshold 0.2 "), r.stderr)
        // a threshold typed with more decimals is said as typed
        r = try CLI.run(["detect", image, "--model", "zero.opb", "-o", "d", "--no-overlays", "-q", "--threshold", "0.125", "--overwrite"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains(", threshold 0.125\n"), r.stderr)
    }

    func testZooListSaysMetricsAsZooInfo() throws {
        let list = try CLI.run(["zoo", "list"])
        XCTAssertEqual(list.status, 0, list.all)
        let info = try CLI.run(["zoo", "info", "retinanet-r34-composite"])
        XCTAssertEqual(info.status, 0, info.all)
        XCTAssertTrue(info.stdout.contains("metric_threshold=0.0700"), info.stdout)
        let line = try XCTUnwrap(list.stdout.split(separator: "\n").first { $0.hasPrefix("retinanet-r34-composite ") }, list.stdout)
        XCTAssertTrue(line.contains(" metric_threshold=0.0700 ") && line.contains(" metric=0.8997 ") && line.contains(" epoch=7 "), String(line))
    }
}
