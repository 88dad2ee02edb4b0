import Foundation
import XCTest

/// Follow-ups of the twenty-third new-user trial.
final class SessionTwentyThreeFollowUpTests: XCTestCase {
    /// `detect --dicom-sr sr --dicom-overlay ./sc/../sc` named the folders as typed ("… in sr",
    /// "… in ./sc/../sc") on its result line, where every other output is named absolute.
    func testDetectNamesItsDICOMFoldersAbsolute() throws {
        let dir = try CLI.tempDir("t23f-dicom-folders")
        defer { try? FileManager.default.removeItem(at: dir) }
        let images = CLI.realdata.appendingPathComponent("rsna1k/stage_2_train_images")
        let name = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: images.path).filter { $0.hasSuffix(".dcm") }.sorted().first)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("sc"), withIntermediateDirectories: true)
        let r = try CLI.run(
            ["detect", images.appendingPathComponent(name).path, "-o", "out", "--dicom-sr", "sr", "--dicom-overlay", "./sc/../sc"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let last = try XCTUnwrap(r.stdout.split(separator: "\n").last.map(String.init))
        let root = dir.standardizedFileURL.path
        XCTAssertTrue(last.contains("1 DICOM SR (.sr.dcm) in \(root)/sr"), last)
        XCTAssertTrue(last.hasSuffix("and 1 DICOM overlay (.overlay.dcm) in \(root)/sc"), last)
    }

    /// train's `data:` line said a label ("data: data (RSNA layout)") for `--data ./kill/data`
    /// while its `run:` line is absolute: it now names the folder absolute, with the layout.
    func testTrainNamesItsDataAbsolute() throws {
        let dir = try CLI.tempDir("t23f-train-data")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["synth", "-o", "kill/data", "--count", "8", "--size", "64", "--seed", "1", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(
            [
                "train", "--data", "./kill/data", "-o", "run", "--epochs", "1", "--workers", "1",
                "--config", "retinanet(encoder=resnet18(width=0.25), neck=fpn(channels=16), head=retina(channels=16), size=64)",
            ], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let line = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.hasPrefix("data: ") }, r.all)
        XCTAssertTrue(line.hasPrefix("data: \(dir.standardizedFileURL.path)/kill/data (RSNA layout), fold "), String(line))
    }
}
