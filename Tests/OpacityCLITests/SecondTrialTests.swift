import Foundation
import Opacity
import XCTest

/// What a second new-user trial met: outputs whose name said one thing and whose content was
/// another, and messages that did not say what to type instead.
final class SecondTrialTests: XCTestCase {
    /// `export MODEL -o model.onnx` without `--format onnx` wrote an Opacity bundle under the
    /// ONNX name (ONNX Runtime then refused it); an `.onnx` name with the bundle format, or an
    /// `.opb` name with `--format onnx`, is a usage error (64) that says which option to add,
    /// before any model loads, and nothing is written.
    func testExportRefusesAnOutputNamedForTheOtherFormat() throws {
        let dir = try CLI.tempDir("export-ext")
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [([String], String)] = [
            (
                ["export", "retinanet-r34-composite", "-o", "m.onnx"],
                "-o m.onnx names an ONNX file, but --format is bundle (the default), which writes an Opacity bundle; add --format onnx"
            ),
            (
                ["export", "retinanet-r34-composite", "--format", "bundle", "-o", "M.ONNX"],
                "-o M.ONNX names an ONNX file, but --format is bundle"
            ),
            (
                ["export", "retinanet-r34-composite", "--format", "onnx", "-o", "m.opb"],
                "-o m.opb names an Opacity bundle (.opb), but --format onnx writes an ONNX model; name it .onnx"
            ),
        ]
        for (args, expected) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains(expected), "\(args): \(r.all)")
            let left = try FileManager.default.contentsOfDirectory(atPath: dir.path)
            XCTAssertEqual(left, [], "\(args) left \(left)")
        }
    }

    /// `--model-weights` with the wrong count says how many numbers it wants in words that
    /// agree with the count (trial: "expected 1 positive numbers separated by ':'" for one model).
    func testModelWeightsCountIsWordedForOneAndSeveralModels() throws {
        let dir = try CLI.tempDir("model-weights")
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data().write(to: dir.appendingPathComponent("x.png"))
        let one = try CLI.run(["detect", "x.png", "--ensemble", "wbf", "--model-weights", "1:2"], in: dir)
        XCTAssertEqual(one.status, 64, one.all)
        XCTAssertTrue(
            one.stderr.contains("--model-weights '1:2': expected 1 positive number, one per --model (1 model given), e.g. 1"), one.all)
        let two = try CLI.run(
            ["detect", "x.png", "--model", "a.opb", "--model", "b.opb", "--ensemble", "wbf", "--model-weights", "1"], in: dir)
        XCTAssertEqual(two.status, 64, two.all)
        XCTAssertTrue(
            two.stderr.contains("--model-weights '1': expected 2 positive numbers separated by ':', one per --model (2 models given), e.g. 1:1"),
            two.all)
    }

    /// `serve --token-file` naming no file is a usage error (64) that says "no such file" with
    /// the nearest file beside it, before the server starts, as every path checked before
    /// anything loads (trial: "--token-file tokn.txt: cannot read the file", exit 1).
    func testServeNamesAMissingTokenFileAndTheNearestFile() throws {
        let dir = try CLI.tempDir("token-file")
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data("secret\n".utf8).write(to: dir.appendingPathComponent("token.txt"))
        let r = try CLI.run(["serve", "--token-file", "tokn.txt", "--port", "0"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(
            r.stderr.contains("--token-file tokn.txt: no such file; expected a file whose first line is the bearer token (did you mean 'token.txt'?)"),
            r.all)
        XCTAssertFalse(r.all.contains("listening"), r.all)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("tokens"), withIntermediateDirectories: true)
        let folder = try CLI.run(["serve", "--token-file", "tokens", "--port", "0"], in: dir)
        XCTAssertEqual(folder.status, 64, folder.all)
        XCTAssertTrue(folder.stderr.contains("--token-file tokens is a folder; expected a file whose first line is the bearer token"), folder.all)
    }

    /// `zoo add NAME RUNFOLDER` adds the run's best.opb (the checkpoint it points to), as a run
    /// folder stands for its best.opb in every --model; a folder without best.opb, or a path
    /// that names nothing, is a usage error (64) saying what was expected, and the manifest is
    /// not written (trial: "cannot read at byte 0: Is a directory", exit 1).
    func testZooAddTakesARunFolderAsItsBestBundle() throws {
        let dir = try CLI.tempDir("zoo-add-run")
        defer { try? FileManager.default.removeItem(at: dir) }
        let checkpoints = dir.appendingPathComponent("runs/r/checkpoints")
        try FileManager.default.createDirectory(at: checkpoints, withIntermediateDirectories: true)
        try Initializer.withSeed(1) { try Registry.standard().makeDetector(CLIRobustnessTests.tiny) }
            .save(to: checkpoints.appendingPathComponent("epoch_001.opb"))
        try FileManager.default.createSymbolicLink(
            atPath: dir.appendingPathComponent("runs/r/best.opb").path, withDestinationPath: "checkpoints/epoch_001.opb")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("runs/empty"), withIntermediateDirectories: true)
        let manifest = ["--manifest", "zoo.json", "--licence", "MIT"]
        let empty = try CLI.run(["zoo", "add", "e", "runs/empty"] + manifest, in: dir)
        XCTAssertEqual(empty.status, 64, empty.all)
        XCTAssertTrue(
            empty.stderr.contains(
                "the bundle argument runs/empty is a folder without best.opb; expected a bundle file (.opb) or a run folder (its best.opb)"),
            empty.all)
        let missing = try CLI.run(["zoo", "add", "m", "runs/r/bets.opb"] + manifest, in: dir)
        XCTAssertEqual(missing.status, 64, missing.all)
        XCTAssertTrue(missing.stderr.contains("the bundle argument runs/r/bets.opb: no such file"), missing.all)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("zoo.json").path))
        let r = try CLI.run(["zoo", "add", "mine", "runs/r"] + manifest, in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let written = try String(contentsOf: dir.appendingPathComponent("zoo.json"), encoding: .utf8)
        XCTAssertTrue(written.contains("runs/r/checkpoints/epoch_001.opb") || written.contains("runs\\/r\\/checkpoints\\/epoch_001.opb"), written)
    }

    /// A run resumed with another compute thread count than its last epoch's says so (the
    /// weights then differ in the last bits from an uninterrupted run's, Training.md); the
    /// count is recorded per epoch as `threads` in log.jsonl (trial: a run started with
    /// `--threads 1` and resumed without it ended with other weights, without a word).
    func testResumeWithAnotherThreadCountSaysSo() throws {
        let dir = try CLI.tempDir("resume-threads")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["synth", "-o", "data", "--count", "8", "--size", "64", "--seed", "3", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let recipe = ["--config", CLIRobustnessTests.tiny, "--batch", "4", "--freeze-bn", "off", "--limit-val", "2", "--workers", "1", "-q"]
        r = try CLI.run(["train", "--data", "data", "-o", "run", "--epochs", "1", "--threads", "1"] + recipe, in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let log = dir.appendingPathComponent("run/log.jsonl")
        XCTAssertEqual(try EpochLog.read(log).map(\.threads), [1])
        r = try CLI.run(["train", "-o", "run", "--resume", "--epochs", "2", "--threads", "2", "--workers", "1", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(
            r.stderr.contains(
                "note: the run trained with 1 compute thread per process and resumes with 2; sums run in another order, so its weights will not be the bits of an uninterrupted run (--threads 1 resumes with the run's own)"
            ), r.all)
        XCTAssertEqual(try EpochLog.read(log).map(\.threads), [1, 2])
        // the same count as the last epoch's: no note
        r = try CLI.run(["train", "-o", "run", "--resume", "--epochs", "3", "--threads", "2", "--workers", "1", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertFalse(r.stderr.contains("compute thread"), r.all)
    }

    /// A zoo entry name typed on the command line that names no entry (`zoo info`, `zoo fetch`)
    /// or is not a valid name (`zoo add`) is a usage error (64) with the zoo's message, as for
    /// `--model NAME` (trial: exit 1); `zoo add` says so before it reads the bundle, and writes
    /// no manifest.
    func testZooNamesTypedByTheUserAreUsageErrors() throws {
        let dir = try CLI.tempDir("zoo-names")
        defer { try? FileManager.default.removeItem(at: dir) }
        let info = try CLI.run(["zoo", "info", "retinanet-r34-rsna2k"], in: dir)
        XCTAssertEqual(info.status, 64, info.all)
        XCTAssertTrue(info.stderr.contains("no zoo entry named 'retinanet-r34-rsna2k'; did you mean 'retinanet-r34-rsna1k'?"), info.all)
        let fetch = try CLI.run(["zoo", "fetch", "retinanet-r34-rsna1k", "nosuch-model"], in: dir)
        XCTAssertEqual(fetch.status, 64, fetch.all)
        XCTAssertTrue(fetch.stderr.contains("no zoo entry named 'nosuch-model'"), fetch.all)
        let add = try CLI.run(["zoo", "add", "../x", "missing.opb", "--manifest", "zoo.json", "--licence", "MIT"], in: dir)
        XCTAssertEqual(add.status, 64, add.all)
        XCTAssertTrue(add.stderr.contains("'../x'"), add.all)
        XCTAssertFalse(add.all.contains("missing.opb"), "the name is refused before the bundle is looked at:\n\(add.all)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("zoo.json").path))
    }
}
