import Foundation
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
        let data = dir.appendingPathComponent("s").standardizedFileURL.path
        for option in ["--count", "--folds"] {
            r = try CLI.run(["folds", "--data", "s", option, "20", "-o", "f.csv"], in: dir)
            XCTAssertEqual(r.status, 64, r.all)
            XCTAssertTrue(
                r.stderr.hasPrefix(
                    "Error: \(option) 20 is not valid; expected an integer in 2...12: more folds than patients leave folds empty, "
                        + "and the labels in \(data) have 12 patients (nearest valid: 12)"), r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("f.csv").path), r.all)
        }
        // one fold per patient is the most
        r = try CLI.run(["folds", "--data", "s", "--count", "12", "-o", "f.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("12 patients in 12 folds"), r.all)
    }
}
