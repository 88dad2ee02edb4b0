import Foundation
import Opacity
import XCTest

/// What a third new-user trial met: a result line that `-q` dropped, a refusal that did not
/// name the option to change, a run still training that `compare` drew without a word, and
/// `--window` missing from two of the commands that run a model on DICOM images.
final class ThirdTrialTests: XCTestCase {
    static let dcm = CLI.realdata.appendingPathComponent("rsna1k/stage_2_train_images/0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm")

    /// `convert -q` drops the progress bar, not its result: the `N converted` line still
    /// prints on standard output, as every command's results do under -q (CLI.md), and a
    /// failure is in it (trial: `convert ... -q` printed nothing at all).
    func testConvertQuietKeepsItsSummaryLine() throws {
        let dir = try CLI.tempDir("convert-q-summary")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["convert", Self.dcm.path, "-o", "one.png", "--size", "64", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertEqual(r.stdout, "1 converted, 0 skipped (output exists), 0 failed\n", r.all)
        XCTAssertEqual(r.stderr, "", r.all)
        let folder = dir.appendingPathComponent("in")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.dcm, to: folder.appendingPathComponent("good.dcm"))
        try Data("not a dicom".utf8).write(to: folder.appendingPathComponent("bad.dcm"))
        r = try CLI.run(["convert", "in", "-o", "out", "--size", "64", "-q"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stdout.hasPrefix("1 converted, 0 skipped (output exists), 1 failed\n  "), r.all)
        XCTAssertTrue(r.stdout.contains("bad.dcm"), r.all)
    }
}
