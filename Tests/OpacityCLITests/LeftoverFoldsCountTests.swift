import Foundation
import Opacity
import XCTest

/// What a new-user trial met: `opacity folds --count 100` on labels of 40 patients wrote 60
/// empty folds without a word. More folds than patients is a usage error naming both counts,
/// with the number of patients as the nearest valid value, and nothing is written.
final class LeftoverFoldsCountTests: XCTestCase {
    func testMoreFoldsThanPatientsIsRefused() throws {
        let dir = try CLI.tempDir("folds-count")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["synth", "-o", "s", "--count", "12", "--size", "64", "--seed", "2", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        for option in ["--count", "--folds"] {
            r = try CLI.run(["folds", "--data", "s", option, "20", "-o", "f.csv"], in: dir)
            XCTAssertEqual(r.status, 64, r.all)
            XCTAssertTrue(
                r.stderr.hasPrefix(
                    "Error: \(option) 20 is not valid; expected an integer in 2...12: more folds than patients leave folds empty, "
                        + "and the data has 12 patients (nearest valid: 12)"), r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("f.csv").path), r.all)
        }
        // one fold per patient is the most
        r = try CLI.run(["folds", "--data", "s", "--count", "12", "-o", "f.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("12 patients in 12 folds"), r.all)
    }

    /// `train --folds` and `eval --folds` say the same, once the labels are read (trial: `train
    /// --folds 100` on 40 patients trained on fold 0's one validation image, `--fold 70` was told
    /// only "fold 70 has no validation images", and eval scored fold 0 of 100): exit 64, the
    /// nearest valid count, no run folder or report left.
    func testTrainAndEvalRefuseMoreFoldsThanPatients() throws {
        let dir = try CLI.tempDir("folds-count-train")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["synth", "-o", "s", "--count", "8", "--size", "64", "--seed", "2", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let refusal =
            "Error: --folds 20 is not valid; expected an integer in 2...8: more folds than patients leave folds empty, "
            + "and the data has 8 patients (nearest valid: 8)"
        for extra in [[String](), ["--fold", "15"]] {
            r = try CLI.run(["train", "--data", "s", "--config", CLIRobustnessTests.tiny, "--folds", "20", "--epochs", "1", "-o", "run", "-q"] + extra, in: dir)
            XCTAssertEqual(r.status, 64, r.all)
            XCTAssertTrue(r.stderr.hasPrefix(refusal), r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run").path), "a run folder is left: \(r.all)")
        }
        let model = dir.appendingPathComponent("tiny.opb")
        try Initializer.withSeed(1) { try Registry.standard().makeDetector(CLIRobustnessTests.tiny) }.save(to: model)
        r = try CLI.run(["eval", "--model", "tiny.opb", "--data", "s", "--folds", "20", "-o", "ev"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains(refusal), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("ev/report.json").path), r.all)
        // as many folds as patients still trains and scores
        r = try CLI.run(["eval", "--model", "tiny.opb", "--data", "s", "--folds", "8", "-o", "ev"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("scoring fold 0 of 8") || r.stdout.contains("scoring fold 0 of 8"), r.all)
    }
}
