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
        XCTAssertEqual(r.stdout, "1 converted, 0 skipped (output exists), 0 failed\nwrote \(dir.standardizedFileURL.path)/one.png\n", r.all)
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

    /// An output that would replace an input is refused naming the option to change, as the
    /// other refusals do ("choose another -o/--output"), not "choose another output" (trial:
    /// `detect scans -o scans` run a second time, whose overlays are then inputs).
    func testOutputOverAnInputNamesTheOption() throws {
        let dir = try CLI.tempDir("output-over-input")
        defer { try? FileManager.default.removeItem(at: dir) }
        let scans = dir.appendingPathComponent("scans")
        try FileManager.default.createDirectory(at: scans, withIntermediateDirectories: true)
        for name in ["a.png", "a.overlay.png", "x.dcm", "x.sr.dcm"] { try Data().write(to: scans.appendingPathComponent(name)) }
        let detect = try CLI.run(["detect", "scans", "-o", "scans"], in: dir)
        XCTAssertEqual(detect.status, 64, detect.all)
        XCTAssertTrue(detect.stderr.contains("would replace the input"), detect.all)
        XCTAssertTrue(detect.stderr.contains("a.overlay.png'; choose another -o/--output (inputs are never overwritten)"), detect.all)
        let sr = try CLI.run(["detect", "scans", "-o", "found", "--no-overlays", "--dicom-sr", "scans"], in: dir)
        XCTAssertEqual(sr.status, 64, sr.all)
        XCTAssertTrue(sr.stderr.contains("the DICOM SR of the input '"), sr.all)
        XCTAssertTrue(sr.stderr.contains("x.sr.dcm'; choose another --dicom-sr (inputs are never overwritten)"), sr.all)
        let submit = try CLI.run(["submit", "--images", "scans", "-o", "scans/a.png"], in: dir)
        XCTAssertEqual(submit.status, 64, submit.all)
        XCTAssertTrue(submit.stderr.contains("a.png'; choose another -o/--output (inputs are never overwritten)"), submit.all)
        for r in [detect, sr, submit] { XCTAssertFalse(r.stderr.contains("choose another output"), r.all) }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scans.path).sorted(), ["a.overlay.png", "a.png", "x.dcm", "x.sr.dcm"])
    }

    /// `compare` says on standard error that a run is still training (a process holds its
    /// run.lock) and where its curves end; a killed run's lock file (no process holds it) is
    /// stale and says nothing; a training run without a finished epoch is left out, and said
    /// so, or is an error when no other run is named (trial: no hint that a run was training).
    func testCompareSaysARunIsStillTraining() throws {
        let dir = try CLI.tempDir("compare-training")
        defer { try? FileManager.default.removeItem(at: dir) }
        try trainTinyRun(in: dir)
        var r: CLI.Result
        let run = dir.appendingPathComponent("run")
        var lock: RunLock? = try RunLock(runDirectory: run)
        r = try CLI.run(["compare", "run", "-o", "c1"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("note: run is still training (pid \(getpid())); its curves end at epoch 1 of 1"), r.all)
        XCTAssertTrue(r.stdout.contains("run: 1 run, final val loss"), r.all)
        lock = nil
        XCTAssertNil(lock)
        // a killed run's lock file: stale
        try Data("pid 999999 on elsewhere, started 2026-01-01T00:00:00Z".utf8).write(to: run.appendingPathComponent("run.lock"))
        r = try CLI.run(["compare", "run", "-o", "c2"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertFalse(r.stderr.contains("still training"), r.all)
        // training, no epoch finished yet
        let fresh = dir.appendingPathComponent("fresh")
        let freshLock = try RunLock(runDirectory: fresh)
        r = try CLI.run(["compare", "fresh", "-o", "c3"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stderr.contains("note: fresh is still training (pid \(getpid())) and has finished no epoch yet, so it has no curves\n"), r.all)
        XCTAssertTrue(
            r.stderr.contains(
                "Error: no run to compare: fresh is still training and has finished no epoch yet; compare after the first epoch"),
            r.all)
        // beside a run with curves: left out, and the other is drawn
        r = try CLI.run(["compare", "fresh", "run", "-o", "c4"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("note: fresh is still training (pid \(getpid())) and has finished no epoch yet, so it has no curves; left out"), r.all)
        XCTAssertTrue(r.stdout.contains("run: 1 run, final val loss"), r.all)
        withExtendedLifetime(freshLock) {}
    }

    /// `eval` and `submit` take `--window` as `detect` does (the same help, parser and errors),
    /// and it reaches the images the model sees: a fixed window changes the results; `serve`
    /// takes it too (ServeWindowTests: it reaches the model).
    func testEvalAndSubmitTakeDetectsWindow() throws {
        let dir = try CLI.tempDir("eval-submit-window")
        defer { try? FileManager.default.removeItem(at: dir) }
        let rsna1k = CLI.realdata.appendingPathComponent("rsna1k")
        let id = "00436515-870c-4b36-a041-de91049b9ab4"
        let lines = try String(contentsOf: rsna1k.appendingPathComponent("stage_2_train_labels.csv"), encoding: .utf8).split(separator: "\n")
        try ([lines[0]] + lines.filter { $0.hasPrefix(id) }).joined(separator: "\n").write(
            to: dir.appendingPathComponent("one.csv"), atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("dcm"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: rsna1k.appendingPathComponent("stage_2_train_images/\(id).dcm"), to: dir.appendingPathComponent("dcm/\(id).dcm"))
        let model = ["--model", "retinanet-r34-rsna1k"]
        // the same usage error as detect's
        let detect = try CLI.run(["detect", "dcm", "--window", "atuo"], in: dir)
        for args in [["eval"] + model + ["--labels", "one.csv", "--images", "dcm", "--all"], ["submit", "--images", "dcm"] + model, ["serve", "--port", "0"] + model] {
            let bad = try CLI.run(args + ["--window", "atuo"], in: dir)
            XCTAssertEqual(bad.status, 64, "\(args): \(bad.all)")
            let line = { (s: String) in s.split(separator: "\n").first { $0.contains("--window '") }.map(String.init) }
            XCTAssertNotNil(line(bad.stderr), bad.all)
            XCTAssertEqual(line(bad.stderr), line(detect.stderr), "\(args)")
            let help = try CLI.run([args[0], "--help"], in: dir)
            XCTAssertTrue(help.stdout.contains("DICOM windowing (as convert's)"), help.stdout)
        }
        func evaluated(_ window: [String], _ out: String) throws -> String {
            let r = try CLI.run(["eval"] + model + ["--labels", "one.csv", "--images", "dcm", "--all", "-o", out, "-q"] + window, in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            return try String(contentsOf: dir.appendingPathComponent(out + "/sweep.csv"), encoding: .utf8)
        }
        let auto = try evaluated([], "e1")
        XCTAssertEqual(try evaluated(["--window", "auto"], "e2"), auto)
        XCTAssertNotEqual(try evaluated(["--window", "40,60"], "e3"), auto, "eval --window 40,60 did not change what the model saw")
        func submitted(_ window: [String], _ out: String) throws -> String {
            let r = try CLI.run(["submit", "--images", "dcm", "--threshold", "0", "-o", out, "-q"] + model + window, in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            return try String(contentsOf: dir.appendingPathComponent(out), encoding: .utf8)
        }
        let plain = try submitted([], "s1.csv")
        XCTAssertEqual(try submitted(["--window", "auto"], "s2.csv"), plain)
        XCTAssertNotEqual(try submitted(["--window", "40,60"], "s3.csv"), plain, "submit --window 40,60 did not change what the model saw")
    }

    /// An option typed longer or shorter than the command's own gets that option suggested, as
    /// ArgumentParser suggests near typos (trial: `train --limit-validation 8` was told only
    /// "Unknown option"); a name that starts no option's name and is started by none gets no
    /// suggestion.
    func testAnOptionSpeltLongerOrShorterIsSuggested() throws {
        let dir = try CLI.tempDir("unknown-option")
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [([String], String?)] = [
            (["train", "--data", "d", "--limit-validation", "8"], "--limit-val"),
            (["detect", "x.png", "--output-dir", "found"], "--output"),
            (["zoo", "add", "n", "b.opb", "--licence", "MIT", "--manifest-file", "z.json"], "--manifest"),
            (["eval", "--operating-point", "x.opb"], "--operating-point-out"),
            (["detect", "x.png", "--frobnicate"], nil),
        ]
        for (args, near) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            let typed = args.last { $0.hasPrefix("--") }!
            if let near {
                XCTAssertTrue(r.stderr.hasPrefix("Error: Unknown option '\(typed)'. Did you mean '\(near)'?\n"), "\(args): \(r.all)")
            } else {
                XCTAssertTrue(r.stderr.hasPrefix("Error: Unknown option '\(typed)'\n"), "\(args): \(r.all)")
            }
        }
    }

    /// A `--window` centre or width out of range says which part of the value it is, not the
    /// library's "parameter 'window centre'" (trial: `--window nan,400`).
    func testWindowOutOfRangeNamesThePart() throws {
        let dir = try CLI.tempDir("window-part")
        defer { try? FileManager.default.removeItem(at: dir) }
        let centre = try CLI.run(["convert", Self.dcm.path, "-o", "x.png", "--window", "nan,400"], in: dir)
        XCTAssertEqual(centre.status, 64, centre.all)
        XCTAssertTrue(centre.stderr.contains("Error: --window 'nan,400': the centre nan is not valid; expected a finite number in [-1e9, 1e9], e.g. 40,400"), centre.all)
        let width = try CLI.run(["detect", Self.dcm.path, "--window", "40,0"], in: dir)
        XCTAssertEqual(width.status, 64, width.all)
        XCTAssertTrue(width.stderr.contains("Error: --window '40,0': the width 0 is not valid; expected a finite number in (0, 1e9]"), width.all)
        XCTAssertFalse(centre.all.contains("parameter '") || width.all.contains("parameter '"))
    }

    /// `submit` leaving out x.png because x.dcm is used says that the patientId has its row,
    /// not "they have no row" (trial: the duplicate's patientId was in the submission).
    func testSubmitSaysADuplicatesPatientIdHasItsRow() throws {
        let dir = try CLI.tempDir("submit-dup-row")
        defer { try? FileManager.default.removeItem(at: dir) }
        let images = dir.appendingPathComponent("images")
        try FileManager.default.createDirectory(at: images, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.dcm, to: images.appendingPathComponent("p1.dcm"))
        var r = try CLI.run(["convert", "images/p1.dcm", "-o", "images/p1.png", "--size", "256", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(["submit", "--images", "images", "-o", "sub.csv", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("images/p1.png: same patientId as p1.dcm, which is used"), r.all)
        XCTAssertTrue(r.stderr.contains("; each of their patientIds has its row in \(dir.appendingPathComponent("sub.csv").path), from the file used instead)"), r.all)
        XCTAssertFalse(r.stderr.contains("no row"), r.all)
        let rows = try String(contentsOf: dir.appendingPathComponent("sub.csv"), encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(rows.count, 2, "\(rows)")
    }

    /// `detect` and `submit` say where their threshold comes from; the operating point of a
    /// model whose validation metric was 0 at every threshold (a run of an epoch or two stores
    /// the lowest swept, 0.01; trial: `detect --model RUN` said only "threshold 0.01") is passed
    /// over for the default, with a note (FourthTrialTests); `--threshold` says nothing more.
    func testDetectSaysWhereItsThresholdComesFrom() throws {
        let dir = try CLI.tempDir("threshold-source")
        defer { try? FileManager.default.removeItem(at: dir) }
        try trainTinyRun(in: dir)
        var r: CLI.Result
        let metric = try XCTUnwrap(try EpochLog.read(dir.appendingPathComponent("run/log.jsonl")).last).metric.best
        let image = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("data/stage_2_train_images").path).sorted().first)
        let path = "data/stage_2_train_images/" + image
        for command in [["detect", path, "-o", "d", "--no-overlays"], ["submit", "--images", "data/stage_2_train_images", "-o", "s.csv"]] {
            r = try CLI.run(command + ["--model", "run", "-q"], in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            XCTAssertTrue(r.stderr.contains(metric > 0 ? " (the model's operating point)\n" : " (the default)\n"), r.all)
            XCTAssertEqual(
                r.stderr.contains("note: the model's operating point was picked where its validation metric was 0 at every threshold; using the default 0.20"), metric == 0, r.all)
            r = try CLI.run(command + ["--model", "run", "-q", "--threshold", "0.3", "--overwrite"], in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            XCTAssertFalse(r.stderr.contains("operating point"), r.all)
        }
        r = try CLI.run(["detect", path, "-o", "z", "--no-overlays", "-q"], in: dir)
        XCTAssertTrue(r.stderr.contains("threshold 0.11 (the model's operating point)\n"), r.all)
    }

    /// Images that a labels CSV names but its folder lacks are said in the command line's
    /// words: "add --skip-unreadable", not the library's "pass skipProblemImages (CLI:
    /// --skip-unreadable)" (trial: `eval --labels` with a folder holding some of the images).
    func testMissingImagesSayTheOption() throws {
        let dir = try CLI.tempDir("missing-images")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("dcm"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.dcm, to: dir.appendingPathComponent("dcm/0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm"))
        try Data("patientId,x,y,width,height,Target\n0004cfab-14fd-4e49-80ba-63a80b6bddd6,,,,,0\nmissing-one,,,,,0\n".utf8).write(
            to: dir.appendingPathComponent("two.csv"))
        let r = try CLI.run(["eval", "--labels", "two.csv", "--images", "dcm", "--all"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stderr.contains("Error: 1 image missing and 0 unreadable (1 of the 2 images the labels name is not in "), r.all)
        XCTAssertTrue(r.stderr.contains("/dcm), e.g. missing-one (missing); add --skip-unreadable to go on without them"), r.all)
        XCTAssertFalse(r.all.contains("skipProblemImages"), r.all)
    }

    /// Eight synthetic 64 px images in `dir`/data and a one-epoch run of the tiny config
    /// trained on them in `dir`/run.
    func trainTinyRun(in dir: URL) throws {
        var r = try CLI.run(["synth", "-o", "data", "--count", "8", "--size", "64", "--seed", "3", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(
            [
                "train", "--data", "data", "-o", "run", "--epochs", "1", "--config", CLIRobustnessTests.tiny, "--batch", "4", "--freeze-bn", "off",
                "--limit-val", "2", "--workers", "1", "-q",
            ], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
    }
}
