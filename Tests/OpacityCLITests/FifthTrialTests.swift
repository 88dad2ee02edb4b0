import Foundation
import XCTest

/// What a fifth new-user trial met: a misspelt command with `--help` showed the root's help and
/// exited 0, and a misspelt input of `submit --images`, `convert` or `score` was said not to
/// exist without the nearest entry beside it, which `--data`, `--labels` and `--images` of the
/// other commands name; `zoo add` given a run's log.jsonl did not say to pass the run, as
/// `--model` does.
final class FifthTrialTests: XCTestCase {
    /// `opacity detet --help` (and `opacity zoo lst -h`) is the same usage error as the line
    /// without the help flag: the word, the nearest command, the list; exit status 64. A real
    /// command's help is still shown.
    func testAMisspelledCommandWithHelpIsRefusedNotAnswered() throws {
        let cases: [([String], String)] = [
            (["detet", "--help"], "Error: 'detet' is not a command of `opacity`; did you mean `opacity detect`? The commands: demo, synth, train,"),
            (["ensemble", "-h"], "Error: 'ensemble' is not a command of `opacity`. The commands: demo,"),
            (["zoo", "lst", "--help"], "Error: 'lst' is not a command of `opacity zoo`; did you mean `opacity zoo list`? The commands: list, info, fetch, verify, add"),
        ]
        for (args, expected) in cases {
            let r = try CLI.run(args)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.hasPrefix(expected), "\(args): \(r.stderr)")
            XCTAssertFalse(r.stdout.contains("OVERVIEW"), "\(args): \(r.stdout)")
        }
        for args in [["detect", "--help"], ["zoo", "list", "-h"], ["--help"], ["help", "detect"]] {
            let r = try CLI.run(args)
            XCTAssertEqual(r.status, 0, "\(args): \(r.all)")
            XCTAssertTrue(r.stdout.contains("USAGE: opacity"), "\(args): \(r.stdout)")
        }
    }

    /// A misspelt input path of `submit --images`, `convert` and `score` (data errors, 1) names
    /// the nearest entry beside it, as `eval --images` and `score --labels` do.
    func testMissingInputsNameTheNearestEntryBesideThem() throws {
        let dir = try CLI.tempDir("fifth-missing-input")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        try fm.createDirectory(at: dir.appendingPathComponent("test"), withIntermediateDirectories: true)
        try fm.copyItem(at: ThirdTrialTests.dcm, to: dir.appendingPathComponent("test/x.dcm"))
        try Data(TrialWordingTests.labels.utf8).write(to: dir.appendingPathComponent("labels.csv"))
        try Data(TrialWordingTests.submission.utf8).write(to: dir.appendingPathComponent("sub.csv"))
        let cases: [([String], String)] = [
            (["submit", "--images", "tst", "-o", "s.csv"], "test"),
            (["convert", "tset", "-o", "pngs"], "test"),
            (["score", "su.csv", "--labels", "labels.csv"], "sub.csv"),
        ]
        for (args, near) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 1, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains("does not exist; expected"), "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("(did you mean '\(dir.appendingPathComponent(near).path)'?)"), "\(args): \(r.stderr)")
        }
        // nothing near: no guess
        let r = try CLI.run(["convert", "zzzzzzzz", "-o", "pngs"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertFalse(r.stderr.contains("did you mean"), r.stderr)
        XCTAssertFalse(fm.fileExists(atPath: dir.appendingPathComponent("s.csv").path))
    }

    /// `zoo add NAME RUN/log.jsonl` names the run folder and its best.opb to pass, as `--model`
    /// does, a usage error (64); the manifest is not written.
    func testZooAddOfARunFileSuggestsTheRunFolder() throws {
        let dir = try CLI.tempDir("fifth-zoo-add-run-file")
        defer { try? FileManager.default.removeItem(at: dir) }
        let run = dir.appendingPathComponent("run")
        try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
        try Data("{}\n".utf8).write(to: run.appendingPathComponent("options.json"))
        try Data("{\"epoch\":1}\n".utf8).write(to: run.appendingPathComponent("log.jsonl"))
        let r = try CLI.run(["zoo", "add", "mine", "run/log.jsonl", "--licence", "CC-BY-4.0", "--manifest", "m.json"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains("the bundle argument run/log.jsonl: not an Opacity bundle; pass the run folder run"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("m.json").path))
    }

    /// `folds` and `preview` with `--overwrite` never replace the CSVs or images they read
    /// (`folds --data rsna -o rsna/stage_2_train_labels.csv --overwrite` replaced the labels
    /// with the folds), nor `import` its safetensors file: a usage error (64) naming the input
    /// and -o/--output, and the input is left as it was.
    func testFoldsPreviewAndImportNeverReplaceTheirInputs() throws {
        let dir = try CLI.tempDir("fifth-data-inputs")
        defer { try? FileManager.default.removeItem(at: dir) }
        let synth = try CLI.run(["synth", "-o", "data", "--count", "6", "--size", "64", "--seed", "3", "-q"], in: dir)
        XCTAssertEqual(synth.status, 0, synth.all)
        let images = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("data/stage_2_train_images").path).sorted()
        let image = "data/stage_2_train_images/" + images[0]
        // a safetensors file import reads (one timm tensor; the rest left at initial values)
        let values = 64 * 3 * 7 * 7
        var header = Array(#"{"conv1.weight":{"dtype":"F32","shape":[64,3,7,7],"data_offsets":[0,\#(values * 4)]}}"#.utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        var safetensors = Data(withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) })
        safetensors.append(contentsOf: header)
        safetensors.append(Data(count: values * 4))
        try safetensors.write(to: dir.appendingPathComponent("w.safetensors"))
        let dryRun = try CLI.run(["import", "w.safetensors", "--encoder", "resnet18", "--allow-missing", "--dry-run"], in: dir)
        XCTAssertEqual(dryRun.status, 0, "the file is one import reads: \(dryRun.all)")
        let cases: [([String], String)] = [
            (["folds", "--data", "data", "-o", "data/stage_2_train_labels.csv", "--overwrite"], "data/stage_2_train_labels.csv"),
            (["folds", "--data", "data", "-o", "data/stage_2_detailed_class_info.csv", "--overwrite"], "data/stage_2_detailed_class_info.csv"),
            (
                ["folds", "--labels", "data/stage_2_train_labels.csv", "--images", "data/stage_2_train_images", "-o", "data/stage_2_train_labels.csv", "--overwrite"],
                "data/stage_2_train_labels.csv"
            ),
            (["folds", "--data", "data", "-o", image, "--overwrite"], image),
            (["preview", "data", "--count", "2", "--size", "64", "-o", "data/stage_2_train_labels.csv", "--overwrite"], "data/stage_2_train_labels.csv"),
            (["preview", "data", "--count", "2", "--size", "64", "-o", image, "--overwrite"], image),
            (["import", "w.safetensors", "--encoder", "resnet18", "--allow-missing", "-o", "w.safetensors", "--overwrite"], "w.safetensors"),
        ]
        for (args, input) in cases {
            let url = dir.appendingPathComponent(input)
            let before = try Data(contentsOf: url)
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains("would replace the input '\(url.path)'; choose another -o/--output"), "\(args): \(r.stderr)")
            XCTAssertEqual(try Data(contentsOf: url), before, "\(args): the input changed")
        }
    }

    /// `eval` and `train` given a `--folds-file` where nothing is name the option, not only the
    /// file, and the nearest file beside it: a data error (1), as `score --labels`; nothing is
    /// written.
    func testAMissingFoldsFileNamesTheOption() throws {
        let dir = try CLI.tempDir("fifth-folds-file")
        defer { try? FileManager.default.removeItem(at: dir) }
        let synth = try CLI.run(["synth", "-o", "data", "--count", "6", "--size", "64", "--seed", "3", "-q"], in: dir)
        XCTAssertEqual(synth.status, 0, synth.all)
        let folds = try CLI.run(["folds", "--data", "data", "-o", "folds.csv"], in: dir)
        XCTAssertEqual(folds.status, 0, folds.all)
        let config = "retinanet(encoder=resnet18(width=0.25), neck=fpn(channels=16), head=retina(channels=16), size=64)"
        for args in [
            ["eval", "--data", "data", "--folds-file", "fods.csv", "-o", "ev"],
            ["train", "--data", "data", "--folds-file", "fods.csv", "--config", config, "-o", "run"],
        ] {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 1, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains("--folds-file fods.csv: no such file; expected a folds CSV"), "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("(did you mean 'folds.csv'?)"), "\(args): \(r.stderr)")
        }
        for leftover in ["ev", "run"] { XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent(leftover).path), leftover) }
    }

    /// `train`'s header says the thread count once, on the processes line with the BLAS
    /// kernels (it said `threads: 2, BLAS kernels: ...` and then `processes: 1 (plain start),
    /// threads: 2`).
    func testTrainSaysItsThreadsOnce() throws {
        let dir = try CLI.tempDir("fifth-train-header")
        defer { try? FileManager.default.removeItem(at: dir) }
        let synth = try CLI.run(["synth", "-o", "data", "--count", "8", "--size", "64", "--seed", "3", "-q"], in: dir)
        XCTAssertEqual(synth.status, 0, synth.all)
        let config = "retinanet(encoder=resnet18(width=0.25), neck=fpn(channels=16), head=retina(channels=16), size=64)"
        let r = try CLI.run(
            ["train", "--data", "data", "--config", config, "--epochs", "1", "--batch", "2", "--limit", "2", "--threads", "1", "--freeze-bn", "off", "-o", "run"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let lines = r.stdout.split(separator: "\n").filter { $0.contains("threads:") }
        XCTAssertEqual(lines.count, 1, r.stdout)
        XCTAssertTrue(lines.first?.hasPrefix("processes: 1 (plain start), threads: 1, BLAS kernels: ") == true, r.stdout)
    }

    /// `zoo verify` of a name that is no entry is the usage error `zoo info` and `zoo fetch`
    /// give (64, with the nearest name), not a `FAILED` line and exit status 1.
    func testZooVerifyOfAnUnknownNameNamesTheNearest() throws {
        let r = try CLI.run(["zoo", "verify", "retinanet-r34-rsnak"])
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains("no zoo entry named 'retinanet-r34-rsnak'; did you mean 'retinanet-r34-rsna1k'?"), r.stderr)
        XCTAssertFalse(r.all.contains("FAILED"), r.all)
    }

    /// `detect`'s inputs (a usage error, 64) and `import`'s source (a data error, 1) where
    /// nothing is say what was expected and name the nearest entry beside them.
    func testDetectAndImportNameTheNearestInput() throws {
        let dir = try CLI.tempDir("fifth-detect-import-input")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("scans"), withIntermediateDirectories: true)
        try Data("x".utf8).write(to: dir.appendingPathComponent("w.safetensors"))
        let detect = try CLI.run(["detect", "scnas", "-o", "found"], in: dir)
        XCTAssertEqual(detect.status, 64, detect.all)
        XCTAssertTrue(detect.stderr.contains("scnas: no such file or folder; expected an image file (DICOM, PNG, JPEG) or a folder of them (did you mean 'scans'?)"), detect.stderr)
        let importing = try CLI.run(["import", "w.safetensor", "--encoder", "resnet18", "-o", "r.opb"], in: dir)
        XCTAssertEqual(importing.status, 1, importing.all)
        XCTAssertTrue(
            importing.stderr.contains("import w.safetensor: no such file; expected a safetensors file (timm's weights) (did you mean 'w.safetensors'?)"), importing.stderr)
        for leftover in ["found", "r.opb"] { XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent(leftover).path), leftover) }
    }
}
