import Foundation
import Opacity
import XCTest

/// What a new user met trying the finished tool (session 24's trial), each fixed with its test.
final class SessionTwentyFourTrialTests: XCTestCase {
    /// Trial: `mpirun -np 2 opacity train ... -o runs/mpi` finished ("done: 1 epoch run; best
    /// epoch 1 -> .../best.opb") and left `runs/mpi/run.lock` behind, which a plain run never
    /// does: rank 0's SIGCONT handler (mpirun's first sign of ending a job) held the trainer,
    /// and with it the lock, until the process exited. A finished distributed run now leaves
    /// no `run.lock`, as a finished single-process run does not.
    func testFinishedDistributedRunLeavesNoRunLock() throws {
        let dir = try CLI.tempDir("s24-mpi-lock")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "--output", "data", "--count", "12", "--size", "64", "--seed", "5"], in: dir).status, 0)
        let r = try DistributedTests.mpirun(
            2,
            [
                "train", "--data", "data", "--config", DistributedTests.tiny, "--epochs", "1", "--batch", "4", "--threads", "1",
                "--output", "run",
            ], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("done: 1 epoch run"), r.all)
        let run = dir.appendingPathComponent("run")
        XCTAssertTrue(FileManager.default.fileExists(atPath: run.appendingPathComponent("best.opb").path), r.all)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run.appendingPathComponent("run.lock").path), "a finished run leaves no run.lock")
    }

    /// Trial: `opacity compare runs/* -o cmp` wrote every figure as PNG and SVG but its result
    /// line named the PNGs and curves.csv only, so the SVGs looked missing (`--from-csv` said
    /// "(each with an SVG)"). The line now says so too.
    func testCompareResultLineSaysEachFigureHasAnSVG() throws {
        let dir = try CLI.tempDir("s24-compare")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "--output", "data", "--count", "12", "--size", "64", "--seed", "5"], in: dir).status, 0)
        var r = try CLI.run(
            ["train", "--data", "data", "--config", DistributedTests.tiny, "--epochs", "1", "--batch", "4", "--threads", "1", "-o", "run"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(["compare", "run", "-o", "cmp"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let cmp = dir.appendingPathComponent("cmp").standardizedFileURL.path
        XCTAssertTrue(FileManager.default.fileExists(atPath: cmp + "/metric.svg"), r.all)
        let line = r.stdout.split(separator: "\n").first { $0.hasPrefix("wrote ") }.map(String.init) ?? ""
        XCTAssertTrue(line.contains("\(cmp)/metric.png"), r.all)
        XCTAssertTrue(line.hasSuffix("\(cmp)/curves.csv (each figure with an SVG)"), line)
    }

    /// Trial: `opacity detect x.dcm --model-weights 2:1` (and with two models, no --ensemble)
    /// said only "--model-weights applies to --ensemble wbf": not which rule was asked for nor
    /// what to change. It now names the --ensemble given (or none) and the way on, in every command that
    /// takes the model options.
    func testModelWeightsWithoutWBFSaysTheRuleInForceAndTheWayOn() throws {
        let dir = try CLI.tempDir("s24-weights")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["detect", "x.dcm", "--model-weights", "2:1"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(
            r.stderr.contains(
                "--model-weights weighs the models of --ensemble wbf only, and no --ensemble was given (the default rule is percentile); add --ensemble wbf, or leave out --model-weights"
            ), r.all)
        r = try CLI.run(["submit", "--images", "imgs", "-o", "s.csv", "--ensemble", "mean", "--model-weights", "1"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(
            r.stderr.contains("--model-weights weighs the models of --ensemble wbf only, not --ensemble mean; use --ensemble wbf, or leave out --model-weights"),
            r.all)
    }

    /// Trial: a 30-epoch run stopped by Ctrl-C 5 steps into epoch 5, then `train -o RUN --resume
    /// --epochs 2` said "has already run 4 epochs, more than --epochs 2; nothing to train" but
    /// rewrote options.json with 2 epochs: a plain `--resume` afterwards said the run "has
    /// already finished its 4 epochs" and never went on to 30. Now nothing is written, the
    /// message says where the run stopped and how to continue it, and `--resume` continues.
    func testResumeWithFewerEpochsThanRunLeavesAStoppedRunAsItWas() throws {
        let dir = try CLI.tempDir("s24-resume-fewer")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "--output", "data", "--count", "12", "--size", "64", "--seed", "5"], in: dir).status, 0)
        var r = try CLI.run(
            [
                "train", "--data", "data", "--config", DistributedTests.tiny, "--epochs", "5", "--batch", "4", "--threads", "1", "-o", "run",
                "--stop-after", "4",
            ], in: dir)
        XCTAssertEqual(r.status, 130, r.all)
        let run = dir.appendingPathComponent("run")
        let options = run.appendingPathComponent("options.json")
        let before = try Data(contentsOf: options)
        XCTAssertTrue(FileManager.default.fileExists(atPath: run.appendingPathComponent("checkpoints/interrupted.opb").path), r.all)
        r = try CLI.run(["train", "-o", "run", "--resume", "--epochs", "2", "--threads", "1"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertEqual(try Data(contentsOf: options), before, "options.json must not change: \(r.all)")
        XCTAssertTrue(r.stdout.contains("run stopped 1 step into epoch 3 of its 5; --epochs 2 asks for no more than the 2 epochs it has run"), r.all)
        XCTAssertTrue(r.stdout.contains("nothing to train, nothing changed. To continue it: opacity train -o run --resume (to its 5 epochs)"), r.all)
        r = try CLI.run(["train", "-o", "run", "--resume", "--threads", "1"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("done: 3 epochs run"), r.all)
    }

    /// Trial: `opacity detect coll/a coll/b` with a file x.dcm in each folder said "wrote
    /// detections.json and 2 overlay PNGs" but wrote one, x.dcm.overlay.png: the second
    /// image's overlay replaced the first's (likewise their --dicom-sr reports). Two inputs
    /// whose outputs would share a name are now refused before anything loads (exit 64),
    /// naming both inputs, the shared file and the way on.
    func testDetectRefusesTwoInputsWhoseOutputsWouldShareAName() throws {
        let dir = try CLI.tempDir("s24-shared-overlay")
        defer { try? FileManager.default.removeItem(at: dir) }
        let images = CLI.realdata.appendingPathComponent("rsna1k/stage_2_train_images")
        let fm = FileManager.default
        for (folder, id) in [("a", "0004cfab-14fd-4e49-80ba-63a80b6bddd6"), ("b", "000924cf-0f8d-42bd-9158-1af53881a557")] {
            try fm.createDirectory(at: dir.appendingPathComponent(folder), withIntermediateDirectories: true)
            try fm.copyItem(at: images.appendingPathComponent(id + ".dcm"), to: dir.appendingPathComponent("\(folder)/x.dcm"))
        }
        let root = dir.standardizedFileURL.path
        var r = try CLI.run(["detect", "a", "b", "-o", "found", "--threads", "1"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(
            r.stderr.contains(
                "the inputs '\(root)/a/x.dcm' and '\(root)/b/x.dcm' would both write their overlay to '\(root)/found/x.dcm.overlay.png'"),
            r.all)
        XCTAssertTrue(r.stderr.contains("(outputs are named after the input's file name); run them with different -o/--output folders, or rename one"), r.all)
        XCTAssertFalse(fm.fileExists(atPath: dir.appendingPathComponent("found").path), r.all)
        // without overlays the DICOM SRs would collide the same way
        r = try CLI.run(["detect", "a", "b", "-o", "found", "--no-overlays", "--dicom-sr", "sr", "--threads", "1"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains("would both write their DICOM SR to '\(root)/sr/x.dcm.sr.dcm'"), r.all)
        XCTAssertTrue(r.stderr.contains("run them with different --dicom-sr folders"), r.all)
        // without per-image outputs nothing is shared: both images are reported
        r = try CLI.run(["detect", "a", "b", "-o", "found", "--no-overlays", "--threads", "1"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
    }

    /// Trial: `opacity detect coll` on a study kept as coll/a/x.dcm, coll/b/x.dcm said only "no
    /// images (.dcm, .png, .jpg) in coll", `submit --images coll` "coll holds no images", and
    /// `convert coll` "'.../coll' is a folder; expected a folder containing .dcm files": none
    /// said that subfolders are not searched, nor that coll/a and coll/b hold images. They do now.
    func testAFolderWhoseImagesLieInSubfoldersSaysSubfoldersAreNotSearched() throws {
        let dir = try CLI.tempDir("s24-subfolders")
        defer { try? FileManager.default.removeItem(at: dir) }
        let images = CLI.realdata.appendingPathComponent("rsna1k/stage_2_train_images")
        let fm = FileManager.default
        for folder in ["coll/a", "coll/b", "coll/empty"] {
            try fm.createDirectory(at: dir.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
        for folder in ["a", "b"] {
            try fm.copyItem(
                at: images.appendingPathComponent("0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm"), to: dir.appendingPathComponent("coll/\(folder)/x.dcm"))
        }
        let hint = "subfolders are not searched, and 2 of them hold images: name them (coll/a coll/b)"
        var r = try CLI.run(["detect", "coll", "-o", "found"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains("no images (.dcm, .png, .jpg) in coll; " + hint), r.all)
        r = try CLI.run(["submit", "--images", "coll", "-o", "s.csv"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains("coll holds no images (.dcm, .png, .jpg); " + hint), r.all)
        r = try CLI.run(["convert", "coll", "-o", "pngs"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        let root = dir.standardizedFileURL.path
        XCTAssertTrue(
            r.stderr.contains(
                "expected a folder containing .dcm files; subfolders are not searched, and 2 of them hold images: name them (\(root)/coll/a \(root)/coll/b)"),
            r.all)
        // an empty folder keeps its message as it was
        r = try CLI.run(["detect", "coll/empty", "-o", "found"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains("no images (.dcm, .png, .jpg) in coll/empty\n"), r.all)
    }
}
