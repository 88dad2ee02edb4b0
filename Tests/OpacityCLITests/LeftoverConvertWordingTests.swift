import Foundation
import XCTest

/// What a new-user trial met in `convert`: `--depth 12` said no nearest valid depth; a DICOM
/// converted onto itself was reported as "its output ... is the input ...", naming no file
/// first; the labels warnings named `--labels-output` as typed, unlike its `labels:` line.
final class LeftoverConvertWordingTests: XCTestCase {
    func testDepthErrorGivesTheNearestValidDepth() throws {
        for (depth, nearest) in [("12", "16"), ("24", "16"), ("9", "8"), ("0", "8")] {
            let r = try CLI.run(["convert", "x.dcm", "-o", "x.png", "--depth", depth])
            XCTAssertEqual(r.status, 64, r.all)
            XCTAssertTrue(
                r.stderr.hasPrefix("Error: --depth \(depth) is not valid; expected 8 or 16 (bits per PNG sample) (nearest valid: \(nearest))\nUsage: "),
                r.stderr)
        }
    }

    func testOutputOverItsInputNamesTheFile() throws {
        let dir = try CLI.tempDir("convert-self")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["synth", "-o", "d", "--count", "1", "--size", "64", "--seed", "1", "--format", "dicom", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let dcm = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("d/stage_2_train_images").path).first)
        try FileManager.default.copyItem(at: dir.appendingPathComponent("d/stage_2_train_images/\(dcm)"), to: dir.appendingPathComponent("scan.png"))
        r = try CLI.run(["convert", "scan.png", "-o", "scan.png"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        let scan = dir.appendingPathComponent("scan.png").standardizedFileURL.path
        XCTAssertTrue(
            r.stdout.contains("\n  \(scan): its output \(scan) is the input \(scan), which is never overwritten; choose another -o/--output"), r.stdout)
    }

    func testLabelsWarningsNameTheLabelsOutputAbsolute() throws {
        let dir = try CLI.tempDir("convert-labels-path")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["synth", "-o", "d", "--count", "2", "--size", "64", "--seed", "1", "--format", "dicom", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        // a row of an image that is not in the folder: left out and listed
        var labels = try String(contentsOf: dir.appendingPathComponent("d/stage_2_train_labels.csv"), encoding: .utf8)
        labels += (labels.hasSuffix("\n") ? "" : "\n") + "ghost,,,,,0\n"
        try labels.write(to: dir.appendingPathComponent("more.csv"), atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("sub"), withIntermediateDirectories: true)
        r = try CLI.run(["convert", "d/stage_2_train_images", "-o", "png", "--labels", "more.csv", "--labels-output", "sub/../scaled.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let scaled = dir.appendingPathComponent("scaled.csv").standardizedFileURL.path
        XCTAssertTrue(r.stdout.contains("written to \(scaled) "), r.stdout)
        XCTAssertTrue(r.stderr.contains("1 label row (1 image) of more.csv not written to \(scaled), as their images"), r.stderr)
        XCTAssertFalse(r.stderr.contains("sub/../scaled.csv"), r.stderr)
    }
}
