import Foundation
import Opacity
import XCTest

/// What eval, detect and export say and write: every output named, defaults like the other
/// commands, negative numbers read as numbers and refused by range.
final class CLIOutputTests: XCTestCase {
    let rsna1k = CLI.realdata.appendingPathComponent("rsna1k")

    func firstDICOM() throws -> URL {
        let images = rsna1k.appendingPathComponent("stage_2_train_images")
        let name = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: images.path).filter { $0.hasSuffix(".dcm") }.sorted().first)
        return images.appendingPathComponent(name)
    }

    /// detect's last line names every output: the result file, the overlay PNGs, the DICOM
    /// SRs and the DICOM overlays, with their folders.
    func testDetectNamesEveryOutput() throws {
        let dir = try CLI.tempDir("detectout")
        defer { try? FileManager.default.removeItem(at: dir) }
        let dcm = try firstDICOM()
        let r = try CLI.run(["detect", dcm.path, "-o", "out", "--dicom-sr", "sr", "--dicom-overlay", "sc"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let last = try XCTUnwrap(r.stdout.split(separator: "\n").last.map(String.init))
        let stem = dcm.deletingPathExtension().lastPathComponent
        XCTAssertTrue(last.hasPrefix("wrote " + dir.appendingPathComponent("out/detections.json").path), last)
        for part in ["1 overlay PNG in", "1 DICOM SR (.sr.dcm) in \(dir.standardizedFileURL.path)/sr", "and 1 DICOM overlay (.overlay.dcm) in \(dir.standardizedFileURL.path)/sc"] {
            XCTAssertTrue(last.contains(part), "\(part): \(last)")
        }
        for path in ["out/detections.json", "out/\(stem).overlay.png", "sr/\(stem).sr.dcm", "sc/\(stem).overlay.dcm"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent(path).path), path)
        }
    }

    /// detect run twice into one folder (the default `detections`) keeps the first run's
    /// results and says how to go on, as `convert` keeps an existing --labels-output; with
    /// --overwrite the second run replaces them (new-user trial: the rerun replaced them
    /// silently).
    func testDetectKeepsAnEarlierRunsResultsUnlessOverwrite() throws {
        let dir = try CLI.tempDir("detectrerun")
        defer { try? FileManager.default.removeItem(at: dir) }
        let dcm = try firstDICOM()
        let result = dir.appendingPathComponent("detections/detections.json")
        let first = try CLI.run(["detect", dcm.path, "-q"], in: dir)
        XCTAssertEqual(first.status, 0, first.all)
        let written = try Data(contentsOf: result)
        // refused before the model loads, the file as it was
        let again = try CLI.run(["detect", dcm.path], in: dir)
        XCTAssertEqual(again.status, 64, again.all)
        XCTAssertTrue(
            again.stderr.contains(
                "Error: detections/detections.json exists (an earlier run's); add --overwrite to replace the earlier results and the overlay PNGs, "
                    + "or name another folder with -o/--output"),
            again.all)
        XCTAssertFalse(again.stderr.contains("model:"), again.all)
        XCTAssertEqual(try Data(contentsOf: result), written)
        // a run in the other format too (it would replace the overlays the JSON describes);
        // with --overwrite the JSON goes, so that what stays matches
        let otherFormat = try CLI.run(["detect", dcm.path, "--format", "csv"], in: dir)
        XCTAssertEqual(otherFormat.status, 64, otherFormat.all)
        XCTAssertTrue(otherFormat.stderr.contains("detections/detections.json exists (an earlier run's)"), otherFormat.all)
        XCTAssertEqual(try Data(contentsOf: result), written)
        let switched = try CLI.run(["detect", dcm.path, "--format", "csv", "--overwrite"], in: dir)
        XCTAssertEqual(switched.status, 0, switched.all)
        XCTAssertTrue(switched.stdout.contains("an earlier run's results in the other format (--overwrite)"), switched.all)
        XCTAssertFalse(FileManager.default.fileExists(atPath: result.path))
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("detections/detections.csv").path))
        // the CSV of an earlier run likewise, said without the overlays when none are written
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("found"), withIntermediateDirectories: true)
        try Data("earlier\n".utf8).write(to: dir.appendingPathComponent("found/detections.csv"))
        let csv = try CLI.run(["detect", dcm.path, "-o", "found", "--format", "csv", "--no-overlays"], in: dir)
        XCTAssertEqual(csv.status, 64, csv.all)
        XCTAssertTrue(
            csv.stderr.contains("found/detections.csv exists (an earlier run's); add --overwrite to replace the earlier results, or name another folder with -o/--output"),
            csv.all)
        XCTAssertEqual(try String(contentsOf: dir.appendingPathComponent("found/detections.csv"), encoding: .utf8), "earlier\n")
        // --overwrite replaces it
        let replaced = try CLI.run(["detect", dcm.path, "-o", "found", "--format", "csv", "--no-overlays", "--overwrite", "-q"], in: dir)
        XCTAssertEqual(replaced.status, 0, replaced.all)
        XCTAssertNotEqual(try String(contentsOf: dir.appendingPathComponent("found/detections.csv"), encoding: .utf8), "earlier\n")
    }

    /// submit, export, eval, compare, folds, preview, import and score --per-image keep what an
    /// earlier run wrote, as detect does: refused (usage error 64) before any model or data
    /// loads, naming the file, --overwrite and the other way on, the file as it was; with
    /// --overwrite the run replaces it (new-user trial: they replaced earlier results silently).
    func testEveryCommandKeepsAnEarlierRunsResultsUnlessOverwrite() throws {
        let dir = try CLI.tempDir("keepearlier")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        let one = dir.appendingPathComponent("one")
        try fm.createDirectory(at: one, withIntermediateDirectories: true)
        try fm.createSymbolicLink(at: one.appendingPathComponent("x.dcm"), withDestinationURL: try firstDICOM())
        let run = dir.appendingPathComponent("run")
        try fm.createDirectory(at: run, withIntermediateDirectories: true)
        let record = """
            {"best":true,"checkpoint":"checkpoints/epoch-1.opb","epoch":1,"images_per_second":10,"lr":0.001,\
            "metric":{"best":0.2,"sweep":[[0.5,0.2]],"threshold":0.5},"seconds":1,"time":"2026-01-01T00:00:00Z",\
            "train":{"focal":1,"regression":1,"total":2},"train_images":10,"val":{"focal":1,"regression":1,"total":1.5},"val_images":5}

            """
        try Data(record.utf8).write(to: run.appendingPathComponent("log.jsonl"))
        let cases: [(args: [String], earlier: String, message: String)] = [
            (
                ["submit", "--images", "one", "-o", "sub.csv", "-q"], "sub.csv",
                "sub.csv exists (an earlier run's); add --overwrite to replace the earlier submission, or name another file with -o/--output"
            ),
            (
                ["export", "--storage", "int8", "-o", "m.opb"], "m.opb",
                "m.opb exists (an earlier run's); add --overwrite to replace the earlier bundle, or name another file with -o/--output"
            ),
            (
                ["eval", "--data", rsna1k.path, "--limit", "2", "-o", "ev"], "ev/summary.md",
                "ev/summary.md exists (an earlier run's); add --overwrite to replace the earlier report, CSVs and figures, or name another folder with -o/--output"
            ),
            (
                ["eval", "--data", rsna1k.path, "--all", "--limit", "4", "-o", "ev2", "--operating-point-out", "op.opb"], "op.opb",
                "op.opb exists (an earlier run's); add --overwrite to replace the earlier bundle with its operating point, or name another file with --operating-point-out"
            ),
            (
                ["compare", "run", "-o", "cmp"], "cmp/curves.csv",
                "cmp/curves.csv exists (an earlier run's); add --overwrite to replace the earlier figures and curves.csv, or name another folder with -o/--output"
            ),
            (
                ["compare", "--from-csv", "curves.csv", "-o", "redrawn"], "redrawn/metric.svg",
                "redrawn/metric.svg exists (an earlier run's); add --overwrite to replace the earlier figures, or name another folder with -o/--output"
            ),
            (
                ["folds", "--data", rsna1k.path, "-o", "folds.csv"], "folds.csv",
                "folds.csv exists (an earlier run's); add --overwrite to replace the earlier folds file, or name another file with -o/--output"
            ),
            (
                ["preview", "--count", "1", "--size", "32", "-o", "p.png"], "p.png",
                "p.png exists (an earlier run's); add --overwrite to replace the earlier preview, or name another file with -o/--output"
            ),
            (
                ["score", "sub.csv", "--labels", rsna1k.appendingPathComponent("stage_2_train_labels.csv").path, "--per-image", "scores.csv"], "scores.csv",
                "scores.csv exists (an earlier run's); add --overwrite to replace the earlier per-image scores, or name another file with --per-image"
            ),
        ]
        try Data("patientId,PredictionString\n".utf8).write(to: dir.appendingPathComponent("sub.csv"))
        XCTAssertEqual(try CLI.run(["compare", "run", "-o", "first"], in: dir).status, 0)
        try fm.copyItem(at: dir.appendingPathComponent("first/curves.csv"), to: dir.appendingPathComponent("curves.csv"))
        for c in cases {
            let earlier = dir.appendingPathComponent(c.earlier)
            try fm.createDirectory(at: earlier.deletingLastPathComponent(), withIntermediateDirectories: true)
            if c.earlier != "sub.csv" { try Data("earlier\n".utf8).write(to: earlier) }
            let before = try Data(contentsOf: earlier)
            let refused = try CLI.run(c.args, in: dir)
            XCTAssertEqual(refused.status, 64, "\(c.args): \(refused.all)")
            XCTAssertTrue(refused.stderr.contains("Error: " + c.message), "\(c.args): \(refused.all)")
            XCTAssertFalse(refused.stdout.contains("model:"), "\(c.args): the model loaded first: \(refused.all)")
            XCTAssertEqual(try Data(contentsOf: earlier), before, "\(c.args)")
            let replaced = try CLI.run(c.args + ["--overwrite"], in: dir)
            XCTAssertEqual(replaced.status, 0, "\(c.args): \(replaced.all)")
            XCTAssertNotEqual(try Data(contentsOf: earlier), before, "\(c.args) --overwrite left the earlier file")
        }
        // import: the same refusal, before the source is read (it need not exist)
        try Data("earlier\n".utf8).write(to: dir.appendingPathComponent("r34.opb"))
        let imported = try CLI.run(["import", "nowhere.safetensors", "--encoder", "resnet34", "-o", "r34.opb"], in: dir)
        XCTAssertEqual(imported.status, 64, imported.all)
        XCTAssertTrue(
            imported.stderr.contains("r34.opb exists (an earlier run's); add --overwrite to replace the earlier bundle, or name another file with -o/--output"),
            imported.all)
    }

    /// Values that the library checks under its own parameter names are said as the options
    /// the user gave (new-user trial: `--aug hevy` said "parameter 'augmentation'"), with what
    /// was expected and the nearest valid value; a key inside the value names the option and
    /// the key.
    func testOptionValuesCheckedByTheLibraryNameTheOption() throws {
        let dir = try CLI.tempDir("optionnames")
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [([String], String)] = [
            (["train", "--data", "d", "--aug", "hevy"], "Error: --aug 'hevy' is not valid; expected one of "),
            (["train", "--data", "d", "--aug", "hevy"], "(did you mean 'heavy'?)"),
            (["train", "--data", "d", "--aug", "heavy,rotaton=3"], "Error: --aug: key 'rotaton' = '3' is not valid; expected one of "),
            (["train", "--data", "d", "--aug", "heavy,rotaton=3"], "(did you mean 'rotation'?)"),
            (["preview", "--augmentation", "ligth", "-o", "p.png"], "Error: --augmentation 'ligth' is not valid; expected one of "),
            (["preview", "--augmentation", "ligth", "-o", "p.png"], "(did you mean 'light'?)"),
            // numbers as every option out of range says them (new-user trial: the number was quoted)
            (["synth", "-o", "s", "--size", "32"], "Error: --size 32 is not valid; expected a number of pixels of at least 64 (nearest valid: 64)"),
            (["synth", "-o", "s", "--count", "0"], "Error: --count 0 is not valid; expected an integer of at least 1 (nearest valid: 1)"),
            // in convert's words (frameNotInFile), so the two commands agree
            (["detect", try firstDICOM().path, "--frame", "3", "-o", "d"], "Error: --frame 3 is not valid for \(try firstDICOM().path): it has one frame (nearest valid: 1)"),
        ]
        for (args, message) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): expected '\(message)' in \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("parameter '"), "\(args): \(r.stderr)")
        }
    }

    /// A path of one character that names nothing is a usage error like any other (new-user
    /// trial: `train --data d` crashed with SIGILL in Foundation's path splitting).
    func testOneCharacterPathsThatNameNothingAreRefused() throws {
        let dir = try CLI.tempDir("onechar")
        defer { try? FileManager.default.removeItem(at: dir) }
        for (args, message) in [
            (["train", "--data", "d"], "--data d: no such folder"), (["eval", "--data", "e", "--all"], "--data e: no such folder"),
            (["eval", "--labels", "l", "--images", "."], "--labels l: no such file"),
        ] {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains(message) && !r.all.contains("crashed"), "\(args): \(r.all)")
        }
    }

    /// A recipe number out of range names the option, the range and the nearest valid value
    /// (or, for a number with no nearest one, the usual setting); nothing is trained.
    func testRecipeNumbersOutOfRangeGiveTheNearestValidValue() throws {
        let dir = try CLI.tempDir("recipe")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = CLI.realdata.appendingPathComponent("rsna1k").path
        for (args, message) in [
            (["--fold", "9"], "--fold 9 is not valid; expected an integer in 0...3 (nearest valid: 3)"),
            (["--epochs", "0"], "--epochs 0 is not valid; expected an integer in 1...100000 (nearest valid: 1)"),
            (["--folds", "1"], "--folds 1 is not valid; expected an integer in 2...100 (nearest valid: 2)"),
            (["--lr", "-1"], "--lr -1 is not valid; expected a finite positive number, e.g. 1e-5 (the paper's)"),
            (["--workers", "99"], "--workers 99 is not valid; expected an integer in 0...64 (nearest valid: 64)"),
        ] {
            let r = try CLI.run(["train", "--data", data, "-o", "run"] + args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.all)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run").path), "\(args)")
        }
    }

    /// `train --resume` on a folder that holds no run, with no data named: a usage error that
    /// says so and suggests the nearest folder, not "name the data" (new-user trial).
    func testResumeOfAFolderWithoutARunSaysSo() throws {
        let dir = try CLI.tempDir("resume")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("runs/tiny"), withIntermediateDirectories: true)
        let misspelled = try CLI.run(["train", "-o", "runs/tinyy", "--resume"], in: dir)
        XCTAssertEqual(misspelled.status, 64, misspelled.all)
        XCTAssertTrue(misspelled.stderr.contains("-o/--output runs/tinyy: no such folder") && misspelled.stderr.contains("did you mean"), misspelled.all)
        let empty = try CLI.run(["train", "-o", "runs/tiny", "--resume"], in: dir)
        XCTAssertEqual(empty.status, 64, empty.all)
        XCTAssertTrue(empty.stderr.contains("--resume: runs/tiny holds no run to continue"), empty.all)
    }

    /// eval checks its data's paths before it loads the model (which takes a while for a large
    /// bundle): a wrong --data is what it reports, even with a model that would fail too.
    func testEvalChecksTheDataBeforeTheModel() throws {
        let dir = try CLI.tempDir("evalorder")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try CLI.run(["eval", "--model", "missing.opb", "--data", "nodata", "--all"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains("--data nodata: no such folder"), r.all)
        XCTAssertFalse(r.all.contains("missing.opb"), r.all)
    }

    /// The bench's training-memory report (OPACITY_MEMORY_REPORT=1) explains each column of
    /// its table of points in a key under the table (new-user trial: "peak before", "MiB
    /// mapped before" were not explained anywhere).
    func testBenchMemoryReportExplainsItsColumns() throws {
        let r = try CLI.run(
            ["detector", "--threads", "2", "--size", "64", "--repeat", "1", "--no-pytorch", "--config", "retinanet(encoder=resnet18(width=0.125), size=64)"],
            environment: ["OPACITY_MEMORY_REPORT": "1"], program: "opacity-bench")
        XCTAssertEqual(r.status, 0, r.all)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        let header = try XCTUnwrap(lines.firstIndex { $0.contains("page faults, MiB mapped before") }, r.stdout)
        let table = lines[(header + 1)...].prefix { !$0.contains("saved for backward") }
        let key = table.drop { !$0.hasPrefix("      key: ") }.joined(separator: "\n")
        for column in ["point =", "alive =", "peak before =", "rss =", "page faults, MiB mapped before ="] {
            XCTAssertTrue(key.contains(column), "\(column) is not explained: \(key)")
        }
    }

    /// export takes its model as the first argument or --model, and without either the zoo's
    /// default entry, as detect and serve do; two different models are a usage error.
    func testExportDefaultModel() throws {
        let dir = try CLI.tempDir("exportdefault")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try CLI.run(["export", "--storage", "int8", "-o", "d.opb"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("no model named: exporting the zoo's retinanet-r34-rsna1k"), r.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("d.opb").path))
        let m = try CLI.run(["export", "--model", "retinanet-r34-rsna1k", "--storage", "int8", "-o", "m.opb"], in: dir)
        XCTAssertEqual(m.status, 0, m.all)
        // what was written named absolute, as the other commands name their outputs
        let (mPath, dPath) = (dir.appendingPathComponent("m.opb").path, dir.appendingPathComponent("d.opb").path)
        XCTAssertTrue(m.stdout.contains("retinanet-r34-rsna1k.opb -> \(mPath)") && r.stdout.contains("retinanet-r34-rsna1k.opb -> \(dPath)"), r.stdout + m.stdout)
        let both = try CLI.run(["export", "retinanet-r34-composite", "--model", "retinanet-r34-rsna1k", "-o", "b.opb"], in: dir)
        XCTAssertEqual(both.status, 64, both.all)
        XCTAssertTrue(both.stderr.contains("name different models"), both.stderr)
    }

    /// export without --storage keeps the source bundle's storage (the zoo's int8 stays int8,
    /// not a 4x larger fp32 file) and says so; --storage still chooses.
    func testExportKeepsTheSourceStorage() throws {
        let dir = try CLI.tempDir("exportstorage")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try CLI.run(["export", "retinanet-r34-composite", "-o", "kept.opb"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("storage: int8, as the source bundle's"), r.stderr)
        let arrow = " -> " + dir.appendingPathComponent("kept.opb").path
        let source = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.hasSuffix(arrow) }).dropLast(arrow.count)
        XCTAssertEqual(try BundleReader(URL(fileURLWithPath: String(source))).info.metadata.storage, "int8")
        let kept = dir.appendingPathComponent("kept.opb")
        XCTAssertEqual(try BundleReader(kept).info.metadata.storage, "int8")
        let sourceBytes = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: String(source))[.size] as? Int)
        let keptBytes = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: kept.path)[.size] as? Int)
        XCTAssertLessThan(Double(keptBytes), 1.1 * Double(sourceBytes), "an int8 export is about the source's size")
        let chosen = try CLI.run(["export", "retinanet-r34-composite", "--storage", "fp16", "-o", "half.opb"], in: dir)
        XCTAssertEqual(chosen.status, 0, chosen.all)
        XCTAssertFalse(chosen.stderr.contains("as the source bundle's"), chosen.stderr)
        XCTAssertEqual(try BundleReader(dir.appendingPathComponent("half.opb")).info.metadata.storage, "fp16")
    }

    /// preview shows each image once: --positives-only --count 12 on data with fewer positives
    /// makes one tile per positive image and says how many there were.
    func testPreviewShowsEachImageOnce() throws {
        let dir = try CLI.tempDir("previewonce")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "-o", "data", "--count", "6", "--size", "64", "--seed", "3", "-q"], in: dir).status, 0)
        // the images with boxes: patientIds with a Target=1 row
        let labels = try String(contentsOf: dir.appendingPathComponent("data/stage_2_train_labels.csv"), encoding: .utf8)
        let positives = Set(labels.split(separator: "\n").dropFirst().filter { $0.hasSuffix(",1") }.map { $0.split(separator: ",")[0] }).count
        XCTAssertTrue((1..<12).contains(positives), "the synthetic set should have 1 to 11 positive images, has \(positives)")
        let r = try CLI.run(["preview", "data", "--positives-only", "--count", "12", "--size", "16", "--columns", "4", "-o", "p.png"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        // in the right number (this set has one: "1 images", "1 tiles" were printed)
        let (images, tiles) = positives == 1 ? ("1 image", "1 tile") : ("\(positives) images", "\(positives) tiles")
        XCTAssertTrue(r.stderr.contains("data has only \(images) with boxes; showing each once (\(tiles), not --count 12)"), r.stderr)
        let columns = min(4, positives), rows = (positives + columns - 1) / columns
        let (w, h) = (columns * 16 + (columns + 1) * 4, rows * 16 + (rows + 1) * 4)
        XCTAssertTrue(r.stdout.contains("wrote \(dir.appendingPathComponent("p.png").path) (\(w)x\(h), \(positives) sample\(positives == 1 ? "" : "s"),"), r.stdout)
        let png = try PNG.read(dir.appendingPathComponent("p.png")).gray
        XCTAssertEqual([png.width, png.height], [w, h])
        // enough images: no note, --count tiles
        let all = try CLI.run(["preview", "data", "--count", "6", "--size", "16", "-o", "q.png"], in: dir)
        XCTAssertEqual(all.status, 0, all.all)
        XCTAssertFalse(all.stderr.contains("showing each once"), all.stderr)
        XCTAssertTrue(all.stdout.contains(", 6 samples"), all.stdout)
    }

    /// A negative number after a numeric option is read as the value (not as a missing value)
    /// and refused with the option, the valid range and what was given.
    func testNegativeNumbersGetRangeErrors() throws {
        let dir = try CLI.tempDir("negative")
        defer { try? FileManager.default.removeItem(at: dir) }
        let dcm = try firstDICOM().path
        let cases: [([String], String)] = [
            (["detect", dcm, "--threshold", "-1"], "--threshold -1 is not valid; expected a number in [0, 1] (nearest valid: 0)"),
            (["detect", dcm, "--threshold", "1.5"], "--threshold 1.5 is not valid; expected a number in [0, 1] (nearest valid: 1)"),
            (["detect", dcm, "--frame", "-2"], "--frame -2 is not valid; expected an integer of at least 1 (nearest valid: 1)"),
            (["submit", "--images", dir.path, "--threshold", "-0.25", "-o", "s.csv"], "--threshold -0.25 is not valid; expected a number in [0, 1] (nearest valid: 0)"),
            (["export", "--format", "onnx", "--postprocess", "--threshold", "-1", "-o", "x.onnx"], "--threshold -1 is not valid; expected a number in [0, 1] (nearest valid: 0)"),
            (["serve", "--threshold", "-1"], "--threshold -1 is not valid; expected a number in [0, 1] (nearest valid: 0)"),
            (["eval", "--data", rsna1k.path, "--limit", "-3"], "--limit -3 is not valid; expected an integer of at least 1 (nearest valid: 1)"),
            (["train", "--data", rsna1k.path, "--limit", "-3"], "--limit -3 is not valid; expected an integer of at least 1 (nearest valid: 1)"),
            (["eval", "--data", rsna1k.path, "--fold", "-1"], "--fold -1 is not valid; expected an integer of at least 0 (nearest valid: 0)"),
            (["eval", "--data", rsna1k.path, "--folds", "-4"], "--folds -4 is not valid; expected an integer in 2...100 (nearest valid: 2)"),
            (["eval", "--data", rsna1k.path, "--wbf-iou", "-0.5"], "--wbf-iou -0.5 is not valid; expected a number in (0, 1), e.g. 0.55"),
            (["train", "--data", rsna1k.path, "--lr", "-1"], "--lr -1 is not valid; expected a finite positive number"),
            (["folds", "--data", rsna1k.path, "--count", "-2", "-o", "f.csv"], "--count -2 is not valid; expected an integer in 2...100 (nearest valid: 2)"),
            (["folds", "--data", rsna1k.path, "--folds", "1", "-o", "f.csv"], "--folds 1 is not valid; expected an integer in 2...100 (nearest valid: 2)"),
            // a zoo name without zoo: is a usage error that says how to write it (it was a
            // data error from the bundle reader: "<cwd>/retinanet-r34-composite: cannot open for reading")
            (
                ["train", "--data", rsna1k.path, "--init-weights", "retinanet-r34-composite"],
                "--init-weights retinanet-r34-composite: no such file; expected a bundle (.opb) or zoo:NAME (did you mean zoo:retinanet-r34-composite?)"
            ),
            (["train", "--data", rsna1k.path, "--encoder-weights", "retinanet-r34-rsna1"], "(did you mean zoo:retinanet-r34-rsna1k?)"),
            (["train", "--data", rsna1k.path, "--encoder-weights", "xyzzy"], "--encoder-weights xyzzy: no such file; expected a bundle (.opb) or zoo:NAME; `opacity zoo list`"),
            (["folds", "--data", rsna1k.path, "--folds", "3", "--count", "5", "-o", "f.csv"], "--folds 3 and --count 5 disagree"),
            (["demo", "-o", "dm", "--epochs", "-1"], "--epochs -1 is not valid; expected an integer of at least 1 (nearest valid: 1)"),
            (["demo", "-o", "dm", "--lr", "-1"], "--lr -1 is not valid; expected a finite positive number, e.g. 1e-3"),
            (["synth", "-o", "s", "--seed", "-1"], "The value '-1' is invalid for '--seed <seed>'"),
        ]
        for (args, message) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("Missing value"), "\(args): \(r.stderr)")
        }
    }

    /// Every option's range error has one wording, the option, the value given, the valid range
    /// and the nearest valid value (or, for an open bound, the usual setting) (new-user trial:
    /// two styles, "--x must be in ..., got V" and "--x V is not valid; expected ..."); each is a
    /// usage error (64).
    func testRangeErrorsHaveOneWording() throws {
        let dir = try CLI.tempDir("ranges")
        defer { try? FileManager.default.removeItem(at: dir) }
        let dcm = try firstDICOM().path
        let cases: [([String], String)] = [
            (["preview", "--size", "8"], "--size 8 is not valid; expected a number of pixels of at least 16 (nearest valid: 16)"),
            (["preview", "--count", "0"], "--count 0 is not valid; expected an integer of at least 1 (nearest valid: 1)"),
            (["preview", "--columns", "-1"], "--columns -1 is not valid; expected an integer of at least 1 (nearest valid: 1)"),
            (["convert", dcm, "-o", "c.png", "--size", "70000"], "--size 70000 is not valid; expected a number of pixels in 1...65536 (nearest valid: 65536)"),
            (["convert", dcm, "-o", "c.png", "--frame", "0"], "--frame 0 is not valid; expected a frame number (frames count from 1) of at least 1 (nearest valid: 1)"),
            (["detect", dcm, "--shrink", "3"], "--shrink 3 is not valid; expected a number in (0.1, 2], e.g. 0.875 (the paper's) (nearest valid: 2)"),
            (["detect", dcm, "--shrink", "0.05"], "--shrink 0.05 is not valid; expected a number in (0.1, 2], e.g. 0.875 (the paper's)"),
            (["detect", dcm, "--size-scale", "11"], "--size-scale 11 is not valid; expected a number in [0, 10] (nearest valid: 10)"),
            (["detect", dcm, "--wbf-skip", "1"], "--wbf-skip 1 is not valid; expected a number in [0, 1), e.g. 0.02"),
            (["detect", dcm, "--threads", "0"], "--threads 0 is not valid; expected an integer in 1...1024 (nearest valid: 1)"),
            (["train", "--data", "d", "--stop-after", "0"], "--stop-after 0 is not valid; expected an integer of at least 1 (nearest valid: 1)"),
            (["serve", "--port", "70000"], "--port 70000 is not valid; expected a port number (0 picks a free port) in 0...65535 (nearest valid: 65535)"),
            (["serve", "--max-batch", "0"], "--max-batch 0 is not valid; expected an integer in 1...256 (nearest valid: 1)"),
            (["serve", "--timeout", "0"], "--timeout 0 is not valid; expected a number of seconds in (0, 3600], e.g. 60"),
        ]
        for (args, message) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains(" must be "), "\(args): \(r.stderr)")
        }
    }

    /// Every command that writes an output folder refuses an existing file there (or above
    /// it) up front, naming the option, the path and what was expected; the file is untouched.
    func testOutputFolderThatIsAFile() throws {
        let dir = try CLI.tempDir("outfile")
        defer { try? FileManager.default.removeItem(at: dir) }
        try "keep".write(to: dir.appendingPathComponent("afile"), atomically: true, encoding: .utf8)
        let dcm = try firstDICOM().path
        let images = rsna1k.appendingPathComponent("stage_2_train_images").path
        let cases: [([String], String)] = [
            (["eval", "--data", rsna1k.path, "--all", "-o", "afile"], "-o/--output afile is a file; expected a folder (for the report"),
            (["detect", dcm, "-o", "afile"], "-o/--output afile is a file; expected a folder"),
            (["detect", dcm, "-o", "afile/sub"], "-o/--output afile/sub lies under \(dir.appendingPathComponent("afile").path), which is a file"),
            (["detect", dcm, "-o", "d", "--dicom-sr", "afile"], "--dicom-sr afile is a file; expected a folder"),
            (["detect", dcm, "-o", "d", "--dicom-overlay", "afile"], "--dicom-overlay afile is a file; expected a folder"),
            (["synth", "-o", "afile", "--count", "2"], "-o/--output afile is a file; expected a folder"),
            (["train", "--data", rsna1k.path, "-o", "afile"], "-o/--output afile is a file; expected a folder (for the run"),
            (["demo", "-o", "afile"], "-o/--output afile is a file; expected a folder"),
            (["convert", images, "-o", "afile"], "-o/--output afile is a file; expected a folder (for one PNG per DICOM file"),
        ]
        for (args, message) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("File exists") || r.stderr.contains("Usage:"), "\(args): \(r.stderr)")
        }
        XCTAssertEqual(try String(contentsOf: dir.appendingPathComponent("afile"), encoding: .utf8), "keep")
    }

    /// An output FILE that cannot be written (an existing folder, a path under a file) is a
    /// usage error (64) naming the option, found before any model loads or image is read
    /// (not Foundation's "Is a directory" after the whole run); missing folders above it are
    /// created. A --model that names nothing is a usage error too, for every command with
    /// --model, with the nearest zoo name.
    func testOutputFilesAndModelsCheckedUpFront() throws {
        let dir = try CLI.tempDir("outputfile")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        try "keep".write(to: dir.appendingPathComponent("afile"), atomically: true, encoding: .utf8)
        try fm.createDirectory(at: dir.appendingPathComponent("adir"), withIntermediateDirectories: true)
        let dcm = try firstDICOM()
        let one = dir.appendingPathComponent("one")
        try fm.createDirectory(at: one, withIntermediateDirectories: true)
        try fm.copyItem(at: dcm, to: one.appendingPathComponent(dcm.lastPathComponent))
        let labels = rsna1k.appendingPathComponent("stage_2_train_labels.csv").path
        let underFile = "lies under \(dir.appendingPathComponent("afile").path), which is a file"
        let cases: [([String], String)] = [
            (["submit", "--images", one.path, "-o", "adir"], "-o/--output adir is a folder; expected a file path (for the submission CSV)"),
            (["submit", "--images", one.path, "-o", "afile/x/sub.csv"], "-o/--output afile/x/sub.csv " + underFile),
            (["export", "-o", "adir"], "-o/--output adir is a folder; expected a file path (for the bundle)"),
            (["export", "--format", "onnx", "-o", "afile/m.onnx"], "-o/--output afile/m.onnx " + underFile),
            (["folds", "--data", rsna1k.path, "-o", "adir"], "-o/--output adir is a folder; expected a file path (for the folds CSV)"),
            (
                ["eval", "--data", rsna1k.path, "-o", "ev", "--operating-point-out", "adir"],
                "--operating-point-out adir is a folder; expected a file path (for the bundle with its operating point)"
            ),
            (["convert", dcm.path, "-o", "afile/x.png"], "-o/--output afile/x.png " + underFile),
            (["score", "missing.csv", "--labels", labels, "--per-image", "adir"], "--per-image adir is a folder; expected a file path"),
            (["preview", "-o", "adir"], "-o/--output adir is a folder; expected a file path (for the preview PNG)"),
            (["import", "missing.safetensors", "--encoder", "resnet34", "-o", "adir"], "-o/--output adir is a folder; expected a file path"),
            (["detect", dcm.path, "-o", "d", "--model", "missing.opb"], "--model missing.opb: no such file or folder; expected a bundle (.opb)"),
            (["detect", dcm.path, "-o", "d", "--model", "retinanet-r34-rsna1kk"], "did you mean 'retinanet-r34-rsna1k'"),
            (["eval", "--data", rsna1k.path, "--model", "runs/nope"], "--model runs/nope: no such file or folder"),
            (["submit", "--images", one.path, "--model", "retinanet-r34-rsna1k.opb"], "did you mean the zoo's 'retinanet-r34-rsna1k'"),
            (["serve", "--model", "missing.opb", "--port", "18999"], "--model missing.opb: no such file or folder"),
            (["export", "missing.opb", "-o", "m.opb"], "the model argument missing.opb: no such file or folder"),
        ]
        for (args, message) in cases {
            let r = try CLI.run(args, in: dir, timeout: 120)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
            XCTAssertFalse(r.all.contains("NSCocoaErrorDomain") || r.stderr.contains("Usage:") || r.stderr.contains("model:"), "\(args): \(r.all)")
        }
        XCTAssertEqual(try String(contentsOf: dir.appendingPathComponent("afile"), encoding: .utf8), "keep")
        XCTAssertEqual(try fm.contentsOfDirectory(atPath: dir.appendingPathComponent("adir").path), [])
        // missing folders above an output file are created, as for output folders
        let r = try CLI.run(["submit", "--images", one.path, "-o", "nodir/x/sub.csv", "--quiet"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let csv = try String(contentsOf: dir.appendingPathComponent("nodir/x/sub.csv"), encoding: .utf8)
        XCTAssertTrue(csv.hasPrefix("patientId,PredictionString") && csv.contains(dcm.deletingPathExtension().lastPathComponent), csv)
    }

    /// Errors found while running print the error (and its hint) only; errors in the command
    /// line keep the command's usage.
    func testRuntimeErrorsPrintNoUsage() throws {
        let dir = try CLI.tempDir("nousage")
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = try CLI.run(["detect", "/nonexistent/x.dcm", "-o", "d"], in: dir)
        XCTAssertEqual(missing.status, 64, missing.all)
        XCTAssertEqual(missing.stderr, "Error: /nonexistent/x.dcm: no such file or folder; expected an image file (DICOM, PNG, JPEG) or a folder of them\n")
        let data = try CLI.run(["eval", "--data", dir.path, "--all"], in: dir)
        XCTAssertEqual(data.status, 1, data.all)
        XCTAssertTrue(data.stderr.contains("stage_2_train_labels.csv") && !data.stderr.contains("Usage:"), data.stderr)
        let fold = try CLI.run(["eval", "--data", rsna1k.path, "--fold", "9"], in: dir)
        XCTAssertEqual(fold.status, 64, fold.all)
        XCTAssertTrue(fold.stderr.contains("--fold 9 does not exist") && !fold.stderr.contains("Usage:"), fold.stderr)
        let usage = try CLI.run(["detect", "x.dcm", "--threshold", "2"], in: dir)
        XCTAssertEqual(usage.status, 64, usage.all)
        XCTAssertTrue(usage.stderr.contains("Usage: opacity detect"), usage.stderr)
        let unknown = try CLI.run(["eval", "--no-such-option"], in: dir)
        XCTAssertEqual(unknown.status, 64, unknown.all)
        XCTAssertTrue(unknown.stderr.contains("Usage: opacity eval"), unknown.stderr)
    }

    /// A command that fails leaves no output folder it created (new-user trial: detect on a
    /// text file named .dcm left an empty `-o` folder; train with a bad labels CSV left a run
    /// folder holding only run.lock); folders that existed before, or hold a file, stay.
    func testFailedCommandsLeaveNoEmptyOutputFolder() throws {
        let dir = try CLI.tempDir("nofolderleft")
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data("not a DICOM\n".utf8).write(to: dir.appendingPathComponent("fake.dcm"))
        var r = try CLI.run(["detect", "fake.dcm", "-o", "det"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stderr.contains("fake.dcm"), r.all)
        r = try CLI.run(["detect", "fake.dcm", "-o", "a/b/c", "--format", "csv"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("kept"), withIntermediateDirectories: true)
        r = try CLI.run(["detect", "fake.dcm", "-o", "kept"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        try Data("a,b\n1,2\n".utf8).write(to: dir.appendingPathComponent("bad.csv"))
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("imgs"), withIntermediateDirectories: true)
        r = try CLI.run(["train", "--labels", "bad.csv", "--images", "imgs", "-o", "run", "--epochs", "1"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("bad.csv"), r.all)
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        XCTAssertEqual(left, ["bad.csv", "fake.dcm", "imgs", "kept"], "folders left behind by failed commands")
    }

    /// `folds` takes train's spelling of the fold count (`train --folds 5`) as well as its own
    /// `--count`: a user who splits for `train --folds-file` types the option train has.
    func testFoldsTakesTrainsSpellingOfTheFoldCount() throws {
        let dir = try CLI.tempDir("foldsspelling")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "-o", "data", "--count", "12", "--size", "64", "--seed", "2", "-q"], in: dir).status, 0)
        let r = try CLI.run(["folds", "--data", "data", "--folds", "3", "-o", "f.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("12 patients in 3 folds"), r.stdout)
        let folds = try String(contentsOf: dir.appendingPathComponent("f.csv"), encoding: .utf8).split(separator: "\n").dropFirst()
            .map { $0.split(separator: ",", omittingEmptySubsequences: false).last.map(String.init) ?? "" }
        XCTAssertEqual(Set(folds), ["0", "1", "2"])
        // both spellings must agree, the default's value included (--count 4 was taken as unset)
        for count in ["4", "3"] {
            let both = try CLI.run(["folds", "--data", "data", "--folds", "5", "--count", count, "-o", "g.csv"], in: dir)
            XCTAssertEqual(both.status, 64, both.all)
            XCTAssertTrue(both.stderr.contains("--folds 5 and --count \(count) disagree"), both.stderr)
        }
        XCTAssertEqual(try CLI.run(["folds", "--data", "data", "--folds", "3", "--count", "3", "-o", "g.csv"], in: dir).status, 0)
    }

    /// `--init-weights` from a bundle of another architecture (the zoo model into the default
    /// config) says which config the bundle holds and how to train with it, not only which
    /// tensors are mis-shaped.
    func testInitWeightsOfAnotherArchitectureNamesTheBundlesConfig() throws {
        let dir = try CLI.tempDir("initweights")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "-o", "data", "--count", "8", "--size", "64", "--seed", "2", "-q"], in: dir).status, 0)
        let r = try CLI.run(
            [
                "train", "--data", "data", "--config", "retinanet(encoder=resnet18(width=0.125), size=64)", "--init-weights", "zoo:retinanet-r34-composite",
                "--epochs", "1", "-o", "run", "-q",
            ], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stderr.contains("do not fit the model"), r.stderr)
        XCTAssertTrue(r.stderr.contains("train with --config \"retinanet(head=retina(channels=64), neck=fpn(channels=64), size=256)\""), r.stderr)
    }
}
