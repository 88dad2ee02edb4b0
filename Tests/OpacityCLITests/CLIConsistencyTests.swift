import Foundation
import XCTest

/// The command line's shared conventions: one output spelling (the old one still works),
/// choices checked by the parser, the documented exit statuses, `--version`, and `train
/// --resume --epochs N` extending a run whatever N is.
final class CLIConsistencyTests: XCTestCase {
    func testVersionPrintsAndExitsZero() throws {
        let r = try CLI.run(["--version"])
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertNotNil(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines).range(of: #"^\d+\.\d+\.\d+$"#, options: .regularExpression), r.all)
    }

    /// A value outside a choice is a usage error (64) that lists every valid value.
    func testChoicesListTheirValuesAndExitWithUsageStatus() throws {
        let cases: [([String], [String])] = [
            (["detect", "x.png", "--format", "xml"], ["json", "csv"]),
            (["synth", "-o", "s", "--format", "tiff"], ["png", "dicom", "dicom-jpeg"]),
            (["train", "--data", "d", "--freeze-bn", "yes"], ["on", "off"]),
            (["train", "--data", "d", "--best-by", "auc"], ["metric", "loss"]),
            (["eval", "--data", "d", "--ensemble", "median"], ["percentile", "mean"]),
            (["export", "m.opb", "-o", "x.opb", "--storage", "int4"], ["fp32", "fp16", "bf16", "int8"]),
            (["plugins", "--kind", "backbone"], ["detector", "encoder", "neck", "head"]),
        ]
        for (args, values) in cases {
            let r = try CLI.run(args)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            for v in values { XCTAssertTrue(r.stderr.contains("'\(v)'"), "\(args) should list '\(v)': \(r.stderr)") }
        }
    }

    /// A missing input data file is data error 1 (ExitStatus's table and CLI.md's); a missing
    /// required option, and a path checked before anything loads (`detect`'s input), are usage
    /// error 64.
    func testExitStatusScheme() throws {
        let dir = try CLI.tempDir("exit")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["score", "missing.csv", "--labels", "missing-labels.csv"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stderr.contains("missing.csv' does not exist; expected a submission CSV"), r.all)
        r = try CLI.run(["detect", "missing.png"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        r = try CLI.run(["synth", "--count", "4"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains("-o/--output"), r.all)
    }

    /// `-o` and `--output` and the deprecated `--out` write to the same place; `--out` warns.
    func testOutputSpellings() throws {
        let dir = try CLI.tempDir("output")
        defer { try? FileManager.default.removeItem(at: dir) }
        for (flag, folder) in [("-o", "a"), ("--output", "b"), ("--out", "c")] {
            let r = try CLI.run(["synth", flag, folder, "--count", "3", "--size", "64", "--seed", "1", "--quiet"], in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("\(folder)/stage_2_train_labels.csv").path), r.all)
            XCTAssertEqual(r.stderr.contains("deprecated"), flag == "--out", r.all)
        }
        let a = try Data(contentsOf: dir.appendingPathComponent("a/stage_2_train_labels.csv"))
        let c = try Data(contentsOf: dir.appendingPathComponent("c/stage_2_train_labels.csv"))
        XCTAssertEqual(a, c)
        let r = try CLI.run(["synth", "-o", "x", "--out", "y", "--count", "3"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
    }

    /// `--resume --epochs 16` extends a shorter run even though 16 is the default.
    func testResumeWithTheDefaultEpochCountExtendsAShorterRun() throws {
        let dir = try CLI.tempDir("extend")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "-o", "data", "--count", "16", "--size", "64", "--seed", "2", "-q"], in: dir).status, 0)
        let tiny = "retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=16), head=retina(channels=16), size=64)"
        var r = try CLI.run(["train", "--data", "data", "--config", tiny, "--epochs", "1", "--batch", "4", "-o", "run"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(["train", "--data", "data", "-o", "run", "--resume", "--epochs", "16", "--stop-after", "1"], in: dir)
        XCTAssertEqual(r.status, 130, r.all)
        XCTAssertTrue(r.stderr.contains("epoch 2/16"), r.all)
    }
}
