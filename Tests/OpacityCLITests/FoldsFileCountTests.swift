import Foundation
import XCTest

/// What a new-user trial met: `train --folds-file` with a 5-fold file that `opacity folds
/// --count 5` wrote was refused unless `--folds 5` was repeated: `--fold 1` blamed the file
/// ("line N, column 'fold': '4' is not valid; expected an integer in 0...3") and `--fold 4`
/// was said to be outside 0...3. `eval --folds-file` takes the number of folds from the file.
final class FoldsFileCountTests: XCTestCase {
    static let config = "retinanet(encoder=resnet18(width=0.25), neck=fpn(channels=16), head=retina(channels=16), size=64)"

    /// Without `--folds`, the number of folds is the file's: its last fold trains; a `--folds`
    /// smaller than the file's is a usage error (64) that names both and the count to pass.
    func testTrainTakesTheNumberOfFoldsFromTheFoldsFile() throws {
        let dir = try CLI.tempDir("folds-file-count")
        defer { try? FileManager.default.removeItem(at: dir) }
        let synth = try CLI.run(["synth", "-o", "data", "--count", "12", "--size", "64", "--seed", "3", "-q"], in: dir)
        XCTAssertEqual(synth.status, 0, synth.all)
        let folds = try CLI.run(["folds", "--data", "data", "--count", "5", "-o", "f5.csv"], in: dir)
        XCTAssertEqual(folds.status, 0, folds.all)
        let common = ["--epochs", "1", "--batch", "2", "--limit", "2", "--threads", "1", "--freeze-bn", "off"]
        let last = try CLI.run(["train", "--data", "data", "--config", Self.config, "--folds-file", "f5.csv", "--fold", "4", "-o", "run4"] + common, in: dir)
        XCTAssertEqual(last.status, 0, last.all)
        XCTAssertTrue(last.stdout.contains("fold 4/5"), last.stdout)
        let first = try CLI.run(["train", "--data", "data", "--config", Self.config, "--folds-file", "f5.csv", "--fold", "1", "-o", "run1"] + common, in: dir)
        XCTAssertEqual(first.status, 0, first.all)
        XCTAssertTrue(first.stdout.contains("fold 1/5"), first.stdout)
        let disagreeing = try CLI.run(
            ["train", "--data", "data", "--config", Self.config, "--folds-file", "f5.csv", "--folds", "4", "--fold", "1", "-o", "runx"] + common, in: dir)
        XCTAssertEqual(disagreeing.status, 64, disagreeing.all)
        XCTAssertTrue(
            disagreeing.stderr.contains("--folds 4 disagrees with --folds-file f5.csv: it has 5 folds (0...4); leave out --folds, or pass --folds 5"),
            disagreeing.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("runx").path))
    }
}
