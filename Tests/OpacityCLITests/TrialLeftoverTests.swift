import Foundation
import Opacity
import XCTest

/// What was left over from a new-user trial: `submit` and `preview` named their outputs as
/// typed (relative) where the other commands name them absolute; `--model r1` for the run
/// folder runs/r1 was offered only the zoo's names; `zoo add` of a training checkpoint did not
/// say how to add the model alone. And a test that failed once while several checkouts ran
/// their tests at the same time: the commands the tests run read the machine's user manifest.
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

    /// `synth`, `eval --operating-point-out`, `score --per-image`, `convert`'s labels line and
    /// `export` name what they wrote absolute and standardized too, however it was typed
    /// (`sub/../x` in the folder named the folder's x).
    func testTheOtherWritersNameTheirOutputsAbsolute() throws {
        let dir = try CLI.tempDir("leftover-absolute-others")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        func shown(_ name: String) -> String { dir.appendingPathComponent(name).path }
        try fm.createDirectory(at: dir.appendingPathComponent("sub"), withIntermediateDirectories: true)
        var r = try CLI.run(["synth", "-o", "sub/../data", "--count", "2", "--size", "64", "--seed", "1"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("wrote 2 images to \(shown("data")): "), r.stdout)
        let rsna1k = CLI.realdata.appendingPathComponent("rsna1k")
        let labels = rsna1k.appendingPathComponent("stage_2_train_labels.csv")
        r = try CLI.run(["eval", "--data", rsna1k.path, "--all", "--limit", "4", "-o", "ev", "--operating-point-out", "sub/../op.opb"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("wrote \(shown("op.opb")) with operating point "), r.stdout)
        try Data("patientId,PredictionString\n".utf8).write(to: dir.appendingPathComponent("s.csv"))
        r = try CLI.run(["score", "s.csv", "--labels", labels.path, "--per-image", "sub/../scores.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("wrote \(shown("scores.csv"))\n"), r.stdout)
        // two films and their rows, converted to 64 px with the labels scaled; a rerun leaves them
        let lines = try String(contentsOf: labels, encoding: .utf8).split(separator: "\n").map(String.init)
        let films = rsna1k.appendingPathComponent("stage_2_train_images")
        let ids = Array(
            Set(lines.dropFirst().map { String($0.prefix { $0 != "," }) }).sorted()
                .filter { fm.fileExists(atPath: films.appendingPathComponent("\($0).dcm").path) }.prefix(2))
        try fm.createDirectory(at: dir.appendingPathComponent("dcm"), withIntermediateDirectories: true)
        for id in ids {
            try fm.copyItem(at: films.appendingPathComponent("\(id).dcm"), to: dir.appendingPathComponent("dcm/\(id).dcm"))
        }
        let rows = lines.dropFirst().filter { ids.contains(String($0.prefix { $0 != "," })) }
        try ([lines[0]] + rows).joined(separator: "\n").write(to: dir.appendingPathComponent("two.csv"), atomically: true, encoding: .utf8)
        let convert = ["convert", "dcm", "-o", "png", "--size", "64", "--labels", "two.csv", "--labels-output", "sub/../scaled.csv"]
        r = try CLI.run(convert, in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("labels: \(rows.count) rows written to \(shown("scaled.csv")) (boxes "), r.stdout)
        r = try CLI.run(convert, in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("labels: \(shown("scaled.csv")) already holds these \(rows.count) rows, byte for byte"), r.stdout)
        r = try CLI.run(["export", "retinanet-r34-rsna1k", "-o", "sub/../m.opb"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("retinanet-r34-rsna1k.opb -> \(shown("m.opb"))\n"), r.stdout)
        r = try CLI.run(["export", "retinanet-r34-rsna1k", "--format", "onnx", "-o", "sub/../m.onnx"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("retinanet-r34-rsna1k.opb -> \(shown("m.onnx"))\n"), r.stdout)
        for name in ["data", "op.opb", "scores.csv", "scaled.csv", "m.opb", "m.onnx"] {
            XCTAssertTrue(fm.fileExists(atPath: shown(name)), name)
        }
    }

    /// A `--model` that names nothing and no zoo entry is offered the nearest local model when
    /// that is nearer than any zoo name: a run folder (beside the reference, or in `runs/`,
    /// where `train` puts runs) or a bundle; a usage error (64) before anything loads. A near
    /// zoo name is still offered as before.
    func testAModelThatNamesNothingIsOfferedTheNearestLocalModel() throws {
        let dir = try CLI.tempDir("leftover-model")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        try fm.createDirectory(at: dir.appendingPathComponent("runs/r1"), withIntermediateDirectories: true)
        try Data("not read".utf8).write(to: dir.appendingPathComponent("runs/r1/best.opb"))
        try fm.createDirectory(at: dir.appendingPathComponent("notes"), withIntermediateDirectories: true)
        try Data("not read".utf8).write(to: dir.appendingPathComponent("mine.opb"))
        let cases: [(String, String)] = [
            ("r1", "--model r1: not a file or folder (did you mean the run folder 'runs/r1'?), and no zoo entry named 'r1'"),
            ("mnie", "--model mnie: not a file or folder (did you mean the bundle 'mine.opb'?), and no zoo entry named 'mnie'"),
            ("runs/r2", "--model runs/r2: no such file or folder; expected a bundle (.opb), a run folder (its best.opb) or a zoo name (did you mean the run folder 'runs/r1'?)"),
            ("runs/r1/bets.opb", "(did you mean the bundle 'runs/r1/best.opb'?)"),
            ("retinanet-r34-rsna1", "no zoo entry named 'retinanet-r34-rsna1'; did you mean 'retinanet-r34-rsna1k'?"),
        ]
        for (model, expected) in cases {
            let r = try CLI.run(["detect", ThirdTrialTests.dcm.path, "--model", model, "-o", "found"], in: dir)
            XCTAssertEqual(r.status, 64, "\(model): \(r.all)")
            XCTAssertTrue(r.stderr.contains(expected), "\(model): expected '\(expected)' in \(r.stderr)")
        }
        // a folder that is no run is not offered
        let r = try CLI.run(["detect", ThirdTrialTests.dcm.path, "--model", "note", "-o", "found"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertFalse(r.stderr.contains("notes"), r.stderr)
        XCTAssertFalse(fm.fileExists(atPath: dir.appendingPathComponent("found").path))
    }

    /// `zoo add` of a training checkpoint (a run folder's best.opb) adds it as before, with a
    /// note that it holds optimizer state and the exact `opacity export` and `opacity zoo add`
    /// commands that add the model alone; those commands work as given, and a model-only bundle
    /// gets no note.
    func testZooAddOfACheckpointSaysHowToExportTheModel() throws {
        let dir = try CLI.tempDir("leftover-zoo-add-checkpoint")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["synth", "-o", "data", "--count", "8", "--size", "64", "--seed", "2", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(["train", "--data", "data", "--config", CLIRobustnessTests.tiny, "--epochs", "1", "--batch", "4", "-o", "run", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(["zoo", "add", "mine", "run", "--licence", "MIT", "--manifest", "m.json"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("note: run/best.opb is a training checkpoint: it holds the optimizer's state beside the weights ("), r.stderr)
        let export = ["export", "run", "-o", "run/mine.opb"], add = ["zoo", "add", "mine", "run/mine.opb", "--licence", "MIT", "--manifest", "m.json", "--replace"]
        XCTAssertTrue(r.stderr.contains("`opacity " + export.joined(separator: " ") + "` writes the weights alone"), r.stderr)
        XCTAssertTrue(r.stderr.contains("`opacity " + add.joined(separator: " ") + "` adds that in its place"), r.stderr)
        r = try CLI.run(export, in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(add, in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertFalse(r.stderr.contains("training checkpoint"), r.stderr)
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: dir.appendingPathComponent("run/mine.opb").path)[.size] as? NSNumber)
        let entry = try XCTUnwrap(try ZooManifest.read(dir.appendingPathComponent("m.json")).entries.first { $0.name == "mine" })
        XCTAssertEqual(entry.file, "run/mine.opb")
        XCTAssertEqual(entry.size, size.int64Value)
    }

    /// The commands the tests run read a user manifest of this test process's own
    /// (``CLI/userManifest``), not the machine's, which an `opacity zoo add` without `--manifest`
    /// run meanwhile (a person, another checkout's tests) writes: an unreadable one there made
    /// every command that loads the zoo fail with exit status 1, as
    /// `EvalOperatingPointOutTests.testAMetricOfZeroEverywhereStoresNoPoint` then expects for
    /// another reason.
    func testTheCommandsOfTheTestsReadNoUserManifestOfTheMachine() throws {
        let dir = try CLI.tempDir("leftover-user-manifest")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = dir.appendingPathComponent("config/opacity")
        try FileManager.default.createDirectory(at: config, withIntermediateDirectories: true)
        try Data(#"{"format": "opacity-zoo", "version": 1, "entries": ["#.utf8).write(to: config.appendingPathComponent("zoo.json"))
        let machine = ["XDG_CONFIG_HOME": dir.appendingPathComponent("config").path, "HOME": dir.path]
        let r = try CLI.run(["zoo", "list"], in: dir, environment: machine)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("retinanet-r34-rsna1k"), r.stdout)
        XCTAssertFalse(FileManager.default.fileExists(atPath: CLI.userManifest.path), "a test wrote the tests' user manifest")
    }
}
