import Foundation
import Opacity
import XCTest

/// What was left over from a new-user trial: `submit` and `preview` named their outputs as
/// typed (relative) where the other commands name them absolute; `--model r1` for the run
/// folder runs/r1 was offered only the zoo's names; `zoo add` of a training checkpoint did not
/// say how to add the model alone.
final class TrialLeftoverTests: XCTestCase {
    /// `submit` and `preview` name what they wrote as an absolute, standardized path (as `detect`,
    /// `eval`, `folds` and `train` do), however the output was typed.
    func testSubmitAndPreviewNameTheirOutputsAbsolute() throws {
        let dir = try CLI.tempDir("leftover-absolute")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["synth", "-o", "data", "--count", "4", "--size", "64", "--seed", "1", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("sub"), withIntermediateDirectories: true)
        r = try CLI.run(["preview", "data", "--count", "2", "--size", "16", "-o", "sub/../p.png"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("wrote \(dir.appendingPathComponent("p.png").path) (44x24, 2 samples,"), r.stdout)
        r = try CLI.run(
            ["submit", "--images", "data/stage_2_train_images", "--model", "retinanet-r34-rsna1k", "-o", "sub/../s.csv", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("wrote \(dir.appendingPathComponent("s.csv").path): 4 patients,"), r.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("s.csv").path))
    }
}
