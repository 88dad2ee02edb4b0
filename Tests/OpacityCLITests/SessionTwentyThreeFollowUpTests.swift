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
}
