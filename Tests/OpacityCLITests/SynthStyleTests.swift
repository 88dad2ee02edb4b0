import Foundation
import XCTest

/// `opacity synth --opacity-style` and `--air-bronchograms`: a patchy set is written and
/// repeats exactly for a seed; bad values are refused with the option and the valid values.
final class SynthStyleTests: XCTestCase {
    func testPatchySetRepeatsForASeed() throws {
        let dir = try CLI.tempDir("synth-style")
        defer { try? FileManager.default.removeItem(at: dir) }
        var labels: [String] = []
        for name in ["a", "b"] {
            let r = try CLI.run(
                [
                    "synth", "-o", dir.appendingPathComponent(name).path, "--count", "8", "--size", "128", "--seed", "4", "--opacity-style", "patchy",
                    "--air-bronchograms", "0.5",
                ])
            XCTAssertEqual(r.status, 0, r.all)
            labels.append(try String(contentsOf: dir.appendingPathComponent("\(name)/stage_2_train_labels.csv"), encoding: .utf8))
        }
        XCTAssertEqual(labels[0], labels[1])
        XCTAssertTrue(labels[0].contains(",1\n"), labels[0])
        let images = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("a/stage_2_train_images").path).sorted()
        XCTAssertEqual(images.count, 8)
        for f in images {
            let a = try Data(contentsOf: dir.appendingPathComponent("a/stage_2_train_images/\(f)"))
            let b = try Data(contentsOf: dir.appendingPathComponent("b/stage_2_train_images/\(f)"))
            XCTAssertEqual(a, b, f)
        }
    }

    func testBadValuesAreRefused() throws {
        let dir = try CLI.tempDir("synth-style-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("x").path
        let style = try CLI.run(["synth", "-o", out, "--opacity-style", "blobby"])
        XCTAssertNotEqual(style.status, 0)
        XCTAssertTrue(style.stderr.contains("--opacity-style"), style.all)
        XCTAssertTrue(style.stderr.contains("'ovals'") && style.stderr.contains("'patchy'"), style.all)
        let rate = try CLI.run(["synth", "-o", out, "--opacity-style", "patchy", "--air-bronchograms", "1.5"])
        XCTAssertNotEqual(rate.status, 0)
        XCTAssertTrue(rate.stderr.contains("--air-bronchograms 1.5 is not valid; expected a number in [0, 1] (nearest valid: 1)"), rate.all)
        let negative = try CLI.run(["synth", "-o", out, "--opacity-style", "patchy", "--air-bronchograms", "-0.5"])
        XCTAssertNotEqual(negative.status, 0)
        XCTAssertTrue(negative.stderr.contains("--air-bronchograms -0.5 is not valid; expected a number in [0, 1] (nearest valid: 0)"), negative.all)
        let ovals = try CLI.run(["synth", "-o", out, "--air-bronchograms", "0.5"])
        XCTAssertNotEqual(ovals.status, 0)
        XCTAssertTrue(ovals.stderr.contains("--air-bronchograms needs --opacity-style patchy"), ovals.all)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "nothing is written for a refused command")
    }
}
