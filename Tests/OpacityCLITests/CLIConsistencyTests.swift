import Foundation
import Opacity
import XCTest

/// The command line's shared conventions: one output spelling (the old one still works),
/// choices checked by the parser, the documented exit statuses, `--version`, and `train
/// --resume --epochs N` extending a run whatever N is.
final class CLIConsistencyTests: XCTestCase {
    /// The tiny detector the training tests train (64 px; an epoch takes seconds).
    static let tiny = CLIRobustnessTests.tiny

    /// A fresh folder named after `name` (the caller removes it) with `synth`'s data in
    /// `data/`: `count` images of 64 px from `seed`, in `format` (`png` or `dicom`).
    func syntheticData(_ name: String, count: Int, seed: Int, format: String = "png") throws -> URL {
        let dir = try CLI.tempDir(name)
        let r = try CLI.run(["synth", "-o", "data", "--count", "\(count)", "--size", "64", "--seed", "\(seed)", "--format", format, "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        return dir
    }

    /// `opacity train --data data --config <tiny>` and `arguments`, run in `dir`.
    func trainTiny(_ arguments: [String], in dir: URL) throws -> CLI.Result {
        try CLI.run(["train", "--data", "data", "--config", Self.tiny] + arguments, in: dir)
    }

    func testVersionPrintsAndExitsZero() throws {
        let r = try CLI.run(["--version"])
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertNotNil(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines).range(of: #"^\d+\.\d+\.\d+$"#, options: .regularExpression), r.all)
    }

    /// A value outside a choice is a usage error (64) that lists every valid value.
    /// `opacity-bench detector` checks every `--config` before measuring: one it cannot build
    /// (a bad value, an unknown encoder) ends the run with the usage status 64 and a message
    /// naming the config and the key, as `opacity train` does, not a report and status 0.
    func testBenchRefusesAConfigItCannotBuild() throws {
        for (config, expected) in [
            ("retinanet(encoder=resnet18, size=64, grad_checkpointing=maybe)", "expected one of none, head, encoder, all"),
            ("retinanet(encoder=resnet19, size=64)", "did you mean 'resnet18'?"),
        ] {
            let r = try CLI.run(
                [
                    "detector", "--threads", "2", "--size", "64", "--repeat", "1", "--no-pytorch", "--config", "retinanet(encoder=resnet18, size=64)",
                    "--config", config,
                ], program: "opacity-bench")
            XCTAssertEqual(r.status, 64, r.all)
            XCTAssertTrue(r.stderr.contains("--config \(config)") && r.stderr.contains(expected), r.stderr)
            XCTAssertFalse(r.stdout.contains("forward, batch 1"), "nothing measured before the check: \(r.stdout)")
        }
    }

    /// `opacity-bench detector --freeze-bn` trains with frozen batch norm, as `opacity train`
    /// does by default: the header says so and the tape holds eval-mode batch norms only.
    func testBenchFreezesBatchNormWhenAsked() throws {
        for frozen in [false, true] {
            let r = try CLI.run(
                ["detector", "--threads", "2", "--size", "64", "--repeat", "1", "--no-pytorch", "--config", "retinanet(encoder=resnet18(width=0.125), size=64)"]
                    + (frozen ? ["--freeze-bn"] : []),
                environment: ["OPACITY_MEMORY_REPORT": "1"], program: "opacity-bench")
            XCTAssertEqual(r.status, 0, r.all)
            XCTAssertEqual(r.stdout.contains("train mode with frozen batch norm"), frozen, r.stdout)
            XCTAssertEqual(r.stdout.contains("batchNorm2d(train)"), !frozen, r.stdout)
            XCTAssertEqual(r.stdout.contains("batchNorm2d(eval)"), frozen, r.stdout)
        }
    }

    /// Every command that writes results (an `-o/--output`, `--per-image`) offers `--overwrite`,
    /// without which it keeps what an earlier run wrote there (CLI.md, Outputs); `train` keeps
    /// another run's folder its own way (`--resume`), and `synth` and `demo` make a whole folder
    /// from a seed.
    func testEveryCommandThatWritesResultsOffersOverwrite() throws {
        let dump = try CLI.run(["--experimental-dump-help"])
        XCTAssertEqual(dump.status, 0, dump.all)
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any])
        var writers: [[String]] = [], lacking: [[String]] = []
        func walk(_ command: [String: Any], _ path: [String]) {
            let names = (command["arguments"] as? [[String: Any]] ?? []).compactMap { ($0["preferredName"] as? [String: Any])?["name"] as? String }
            if names.contains("output") || names.contains("per-image") {
                writers.append(path)
                if !names.contains("overwrite") && !["train", "synth", "demo"].contains(path.joined(separator: " ")) { lacking.append(path) }
            }
            for sub in command["subcommands"] as? [[String: Any]] ?? [] { walk(sub, path + [sub["commandName"] as? String ?? "?"]) }
        }
        walk(try XCTUnwrap(root["command"] as? [String: Any]), [])
        for command in ["detect", "convert", "submit", "eval", "export", "compare", "folds", "preview", "import", "score"] {
            XCTAssertTrue(writers.contains([command]), "\(command) writes no results? \(writers)")
        }
        XCTAssertEqual(lacking, [], "commands that write results without --overwrite")
    }

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

    /// Every option that takes one of a list of values (each one `--experimental-dump-help`
    /// lists, in every subcommand), given a value off the list, names the option, every
    /// accepted value and the nearest one (new-user trial: `detect --format xml` named no
    /// nearest value). The value given is the last accepted one with its last character
    /// doubled: one edit from it and farther from every other value.
    func testEveryChoiceOptionNamesTheNearestValue() throws {
        let dump = try CLI.run(["--experimental-dump-help"])
        XCTAssertEqual(dump.status, 0, dump.all)
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any])
        var found: [(path: [String], option: String, values: [String])] = []
        func walk(_ command: [String: Any], _ path: [String]) {
            for a in command["arguments"] as? [[String: Any]] ?? [] {
                guard let values = a["allValues"] as? [String], !values.isEmpty, a["kind"] as? String == "option",
                    let name = a["preferredName"] as? [String: Any], let n = name["name"] as? String, name["kind"] as? String == "long"
                else { continue }
                found.append((path, "--" + n, values))
            }
            for sub in command["subcommands"] as? [[String: Any]] ?? [] { walk(sub, path + [sub["commandName"] as? String ?? "?"]) }
        }
        walk(try XCTUnwrap(root["command"] as? [String: Any]), [])
        // detect --format, synth --format, eval --ensemble, export --storage, plugins --kind, ...
        XCTAssertGreaterThanOrEqual(found.count, 15, "\(found)")
        XCTAssertTrue(found.contains { $0.path == ["detect"] && $0.option == "--format" }, "\(found)")
        for (path, option, values) in found {
            let last = values[values.count - 1]
            let typo = last + String(last.suffix(1))
            let r = try CLI.run(path + [option, typo])
            XCTAssertEqual(r.status, 64, "\(path) \(option) \(typo): \(r.all)")
            XCTAssertTrue(r.stderr.contains("'\(typo)' is invalid for '\(option)"), "\(path) \(option): \(r.stderr)")
            for v in values { XCTAssertTrue(r.stderr.contains("'\(v)'"), "\(path) \(option) should list '\(v)': \(r.stderr)") }
            XCTAssertTrue(r.stderr.contains("(nearest valid: '\(values[values.count - 1])')"), "\(path) \(option) \(typo): \(r.stderr)")
        }
        // however far the value is, the nearest is named
        let far = try CLI.run(["detect", "x.png", "--format", "xml"])
        XCTAssertEqual(far.status, 64, far.all)
        XCTAssertTrue(far.stderr.contains("Please provide one of 'json' and 'csv' (nearest valid: 'csv')."), far.stderr)
        XCTAssertTrue(far.stderr.contains("Usage: opacity detect"), far.stderr)
        // the values the commands check themselves
        let checked: [([String], String, String)] = [
            (["import", "x.safetensors", "--encoder", "resnet34", "--storage", "fp3"], "--storage 'fp3'", "fp32"),
            (["import", "x.safetensors", "--encoder", "resnet34", "--storage", "int9"], "--storage 'int9'", "int8"),
            (["convert", "a.dcm", "-o", "a.png", "--window", "atuo"], "--window 'atuo'", "auto"),
            (["convert", "a.dcm", "-o", "a.png", "--window", "minmx"], "--window 'minmx'", "minmax"),
            (["detect", "x.dcm", "--window", "atuo"], "--window 'atuo'", "auto"),
            (["detect", "x.png", "--tta", "xyz"], "--tta 'xyz'", "flip"),
            (["preview", "--augmentation", "qqq"], "--augmentation", "none"),
            (["train", "--data", "d", "--aug", "qqq"], "--aug", "none"),
        ]
        for (args, named, nearest) in checked {
            let r = try CLI.run(args)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            // the libraries' own errors say "did you mean"
            XCTAssertTrue(
                r.stderr.contains(named) && (r.stderr.contains("(nearest valid: '\(nearest)')") || r.stderr.contains("(did you mean '\(nearest)'?)")),
                "\(args): \(r.stderr)")
        }
    }

    /// Folds, output paths and small input files are checked before a model or the data is
    /// loaded (new-user trial: `eval --fold 7` was refused only after the model had loaded).
    /// Each case's model is a bundle of random bytes and its data lacks its images: an error
    /// about either means the cheap check came too late.
    func testCheapArgumentsAreCheckedBeforeModelsAndData() throws {
        let dir = try CLI.tempDir("early")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        try fm.createDirectory(at: dir.appendingPathComponent("data/stage_2_train_images"), withIntermediateDirectories: true)
        try fm.createDirectory(at: dir.appendingPathComponent("run"), withIntermediateDirectories: true)
        let garbage = Data((0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) })
        try garbage.write(to: dir.appendingPathComponent("bad.opb"))
        try garbage.write(to: dir.appendingPathComponent("run/best.opb"))
        let folds = "patientId,class,fold\na,Normal,0\nb,Normal,1\n"
        try Data(folds.utf8).write(to: dir.appendingPathComponent("f.csv"))
        try Data(folds.utf8).write(to: dir.appendingPathComponent("run/folds.csv"))
        // the run validated on fold 0: a fold out of range is said before "fold N holds images it
        // trained on" (new-user trial: --fold 7 was sent to --allow-training-fold first)
        var runOptions = TrainingOptions(config: "retinanet")
        (runOptions.folds, runOptions.fold) = (2, 0)
        try JSONEncoder().encode(runOptions).write(to: dir.appendingPathComponent("run/options.json"))
        try Data("patientId,x,y,width,height,Target\na,,,,,0\nb,,,,,0\n".utf8).write(to: dir.appendingPathComponent("data/stage_2_train_labels.csv"))
        try Data("patientId,PredictionString\na,\n".utf8).write(to: dir.appendingPathComponent("sub.csv"))
        try Data("not,a,labels,file\n".utf8).write(to: dir.appendingPathComponent("labels.csv"))
        let cases: [([String], String)] = [
            (["eval", "--model", "bad.opb", "--data", "data", "--fold", "7"], "--fold 7 does not exist with --folds 4; expected 0...3"),
            (
                ["eval", "--model", "run", "--data", "data", "--fold", "3"],
                "--fold 3 does not exist in \(dir.appendingPathComponent("run/folds.csv").path); expected 0...1 (nearest valid: 1)"
            ),
            (["eval", "--model", "run", "--data", "data", "--fold", "1"], "run was validated on fold 0; fold 1 holds images it trained on"),
            (["eval", "--model", "bad.opb", "--data", "data", "--folds-file", "f.csv", "--fold", "2"], "--fold 2 does not exist in"),
            (
                ["train", "--data", "data", "--folds-file", "f.csv", "--fold", "3", "-o", "r", "--config", CLIRobustnessTests.tiny],
                "--fold 3 has no patients in f.csv; expected one of its folds: 0, 1"
            ),
            (["score", "sub.csv", "--labels", "labels.csv", "--per-image", "sub.csv"], "--per-image sub.csv is an input of this command"),
            // paths that name nothing: the option, what was expected, the nearest entry beside it
            (
                ["train", "--data", "dat", "-o", "r", "--config", CLIRobustnessTests.tiny],
                "--data dat: no such folder; expected a folder in the Kaggle RSNA layout (did you mean 'data'?)"
            ),
            (
                ["train", "--data", "data", "-o", "r", "--config", CLIRobustnessTests.tiny, "--init-weights", "nonexist.opb"],
                "--init-weights nonexist.opb: no such file; expected a bundle (.opb) or zoo:NAME"
            ),
            (
                ["train", "--labels", "label.csv", "--images", "data", "-o", "r", "--config", CLIRobustnessTests.tiny],
                "--labels label.csv: no such file; expected a CSV of boxes (did you mean 'labels.csv'?)"
            ),
            (["export", "bad.opb", "-o", "bad.opb"], "-o bad.opb is the model being exported"),
            (["export", "bad.opb", "-o", "x.opb", "--card", "nocard.json"], "--card nocard.json: no such file"),
            // bundle-only options with --format onnx: the ones given are named (trial: --storage alone named four)
            (
                ["export", "bad.opb", "-o", "x.onnx", "--format", "onnx", "--storage", "fp16"],
                "Error: --storage applies to bundles (--format bundle), not to --format onnx; ONNX weights are fp32"
            ),
            (
                ["export", "bad.opb", "-o", "x.onnx", "--format", "onnx", "--notes", "n", "--card-version", "2"],
                "Error: --notes and --card-version apply to bundles (--format bundle), not to --format onnx"
            ),
            (["compare", "run", "-o", "sub.csv"], "-o/--output sub.csv is a file; expected a folder"),
            (["eval", "--model", "bad.opb", "--data", "data", "--operating-point-out", "bad.opb"], "--operating-point-out bad.opb is the input bundle"),
            (["eval", "--model", "run", "--data", "data", "--operating-point-out", "run/best.opb"], "--operating-point-out run/best.opb is the input bundle"),
        ]
        for (args, expected) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains(expected), "\(args): expected '\(expected)' in \(r.stderr)")
        }
        XCTAssertFalse(fm.fileExists(atPath: dir.appendingPathComponent("r").path), "train made a run folder")
        XCTAssertFalse(fm.fileExists(atPath: dir.appendingPathComponent("eval").path), "eval made an output folder")
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("bad.opb")), garbage)
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

    /// The top-level help's exit statuses agree with ExitStatus (OpacityCLI) and with what `serve` does:
    /// every status is listed, and Ctrl-C (130) and SIGTERM (143) say that `serve` instead
    /// finishes what is queued and exits 0, as its own help says (new-user trial).
    func testTopLevelExitStatusesAgreeWithServe() throws {
        let r = try CLI.run(["--help"], environment: ["COLUMNS": "1000"])
        XCTAssertEqual(r.status, 0, r.all)
        let line = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.hasPrefix("Exit status:") }, r.stdout)
        for status in [0, 1, 64, 130, 141, 143] {  // OpacityCLI's ExitStatus cases
            XCTAssertTrue(line.contains(" \(status) "), "\(status) missing: \(line)")
        }
        XCTAssertTrue(line.contains("`serve` instead stops accepting, answers what is queued and exits 0"), String(line))
        let serve = try CLI.run(["serve", "--help"], environment: ["COLUMNS": "1000"])
        XCTAssertTrue(serve.stdout.contains("SIGTERM or SIGINT stops accepting, finishes what is queued and exits 0"), serve.stdout)
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

    /// `convert`'s older second argument still names the output and, as CLI.md says, warns;
    /// `-o` does not (new-user trial).
    func testConvertSecondArgumentWarns() throws {
        let dir = try syntheticData("convert-positional", count: 2, seed: 1, format: "dicom")
        defer { try? FileManager.default.removeItem(at: dir) }
        let image = try XCTUnwrap(FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("data/stage_2_train_images").path).sorted().first)
        let input = "data/stage_2_train_images/\(image)"
        let old = try CLI.run(["convert", input, "two.png"], in: dir)
        XCTAssertEqual(old.status, 0, old.all)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("two.png").path), old.all)
        XCTAssertTrue(old.stderr.contains("warning: the output as a second argument is deprecated; use -o/--output"), old.stderr)
        let new = try CLI.run(["convert", input, "-o", "one.png"], in: dir)
        XCTAssertEqual(new.status, 0, new.all)
        XCTAssertFalse(new.stderr.contains("deprecated"), new.stderr)
    }

    /// `--resume --epochs 16` extends a shorter run even though 16 is the default.
    func testResumeWithTheDefaultEpochCountExtendsAShorterRun() throws {
        let dir = try syntheticData("extend", count: 16, seed: 2)
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try trainTiny(["--epochs", "1", "--batch", "4", "-o", "run"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(["train", "--data", "data", "-o", "run", "--resume", "--epochs", "16", "--stop-after", "1"], in: dir)
        XCTAssertEqual(r.status, 130, r.all)
        XCTAssertTrue(r.stderr.contains("epoch 2/16"), r.all)
    }

    /// `--resume` on a run that has all its epochs says so, names its best epoch and the
    /// command that extends it, changes nothing and exits 0 (new-user trial: it printed
    /// "done: 0 epochs run"); that command then trains the next epoch.
    func testResumingAFinishedRunSaysHowToExtendIt() throws {
        let dir = try syntheticData("finished", count: 12, seed: 3)
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try trainTiny(["--epochs", "1", "--batch", "4", "-o", "run", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let run = dir.appendingPathComponent("run")
        let files = ["options.json", "log.jsonl", "checkpoints/epoch_001.opb"]
        let before = try files.map { try Data(contentsOf: run.appendingPathComponent($0)) }
        for extra in [[], ["--epochs", "1"]] {
            r = try CLI.run(["train", "-o", "run", "--resume"] + extra, in: dir)
            XCTAssertEqual(r.status, 0, "\(extra): \(r.all)")
            XCTAssertTrue(r.stdout.contains("run has already finished its 1 epoch (best epoch 1: \(run.appendingPathComponent("best.opb").path))"), "\(extra): \(r.all)")
            XCTAssertTrue(
                r.stdout.contains("nothing to train, nothing changed. To train it further, resume it with more epochs than 1: opacity train -o run --resume --epochs 2"),
                "\(extra): \(r.all)")
            XCTAssertFalse(r.all.contains("0 epochs run"), r.all)
            XCTAssertFalse(r.all.contains("resumed from"), "the data or the model was loaded: \(r.all)")
            XCTAssertEqual(try files.map { try Data(contentsOf: run.appendingPathComponent($0)) }, before, "\(extra) changed the run")
        }
        // the hinted command trains epoch 2
        r = try CLI.run(["train", "-o", "run", "--resume", "--epochs", "2", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertEqual(try EpochLog.read(run.appendingPathComponent("log.jsonl")).map(\.epoch), [1, 2], r.all)
        // fewer epochs than the run has: said so, nothing changed
        r = try CLI.run(["train", "-o", "run", "--resume", "--epochs", "1"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("run has already run 2 epochs, more than --epochs 1"), r.all)
        XCTAssertTrue(r.stdout.contains("opacity train -o run --resume --epochs 4"), r.all)
        XCTAssertEqual(try TrainingSetup.savedOptions(in: run)?.epochs, 2, "options.json was rewritten")
        // limits other than the run's own are still refused, as a usage error naming the option
        r = try CLI.run(["train", "-o", "run", "--resume", "--limit-val", "1"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains("--limit-val 1 cannot be given with --resume: run was started with no limits and without --skip-unreadable"), r.all)
    }

    /// Limits, skipping or recipe options (`--batch`, `--seed`, `--aug`, ...) other than the
    /// run's own, given with `--resume`, are a usage error (64) naming each option and its
    /// value, the run's own settings and the way on, before the data loads (new-user trials:
    /// `train --resume --limit 4` exited 1; `--resume --batch 8 --seed 9` was ignored without a
    /// word); the run's own values pass.
    func testOptionsRefusedWithResumeAreUsageErrors() throws {
        let dir = try syntheticData("resumelimits", count: 16, seed: 2)
        defer { try? FileManager.default.removeItem(at: dir) }
        // a recipe away from the defaults (batch 4, heavy, frozen batch norm, lr 1e-5)
        var r = try trainTiny(
            ["--epochs", "2", "--batch", "2", "--aug", "light", "--freeze-bn", "off", "--lr", "1e-4", "-o", "run", "--limit-val", "3", "--stop-after", "1", "-q"],
            in: dir)
        XCTAssertEqual(r.status, 130, r.all)
        let refused: [([String], String)] = [
            (
                ["--limit", "4"],
                "--limit 4 cannot be given with --resume: run was started with --limit-val 3, and --resume continues with the run's own; drop --limit to resume it"
            ),
            (["--limit-train", "5"], "--limit-train 5 cannot be given with --resume: run was started with --limit-val 3"),
            (["--limit-val", "2", "--skip-unreadable"], "--limit-val 2 and --skip-unreadable cannot be given with --resume"),
            (["--data", "data", "--limit", "4"], "--limit 4 cannot be given with --resume"),
            // recipe options other than the run's own (new-user trial: dropped without a word)
            (
                ["--batch", "8", "--seed", "9"],
                "--batch 8 and --seed 9 cannot be given with --resume: run was started with --batch 2 --seed 1234, and --resume continues with the run's own recipe; drop --batch and --seed to resume it"
            ),
            (["--aug", "medium"], "--aug medium cannot be given with --resume: run was started with --aug light"),
            (["--freeze-bn", "on", "--fold", "1"], "--freeze-bn on and --fold 1 cannot be given with --resume: run was started with --freeze-bn off --fold 0"),
            // given at the default value is still given (new-user trial: taken as not given,
            // so the run went on with its own value without a word)
            (["--batch", "4"], "--batch 4 cannot be given with --resume: run was started with --batch 2"),
            (["--aug", "heavy"], "--aug heavy cannot be given with --resume: run was started with --aug light"),
            (["--freeze-bn", "on"], "--freeze-bn on cannot be given with --resume: run was started with --freeze-bn off"),
        ]
        for (extra, message) in refused {
            r = try CLI.run(["train", "-o", "run", "--resume"] + extra, in: dir)
            XCTAssertEqual(r.status, 64, "\(extra): \(r.all)")
            XCTAssertTrue(r.stderr.contains(message), "\(extra): \(r.stderr)")
            XCTAssertFalse(r.all.contains("resumed from"), "\(extra): the run was loaded: \(r.all)")
        }
        // the run's own limit and recipe, named again, resume, defaults that are the run's own too;
        // --lr changes the rate from the checkpoint on, at the default value too
        r = try CLI.run(
            ["train", "-o", "run", "--resume", "--limit-val", "3", "--batch", "2", "--aug", "light", "--freeze-bn", "off", "--seed", "1234", "--fold", "0", "--lr", "1e-05"],
            in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.all.contains("learning rate set to 1e-05 from here on"), r.all)
    }

    /// A config string given on the command line that the registry refuses (an unknown
    /// encoder, parameter or name, a value out of range, a syntax error) is a usage error (64)
    /// in every command that takes one, with the registry's message (the nearest valid value)
    /// after the option's name, found before any data is made or read (new-user trial:
    /// `train --config "retinanet(encoder=resnet35)"` exited 1).
    func testConfigStringErrorsAreUsageErrors() throws {
        let dir = try CLI.tempDir("configusage")
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [([String], String)] = [
            (["train", "--data", "nodata", "--config", "retinanet(encoder=resnet35)"], "--config: unknown encoder 'resnet35'; did you mean 'resnet34'?"),
            (["train", "--data", "nodata", "--config", "retinanet(dropuot=0.5)"], "--config: retinanet has no parameter 'dropuot'; did you mean 'dropout'?"),
            (["train", "--data", "nodata", "--config", "retinanet(dropout=2)"], "--config: retinanet: dropout=2 is invalid; expected number in 0.0...0.95 (nearest valid: 0.95)"),
            (["train", "--data", "nodata", "--config", "retinanet(encoder=resnet34"], "--config: config syntax error at column 27"),
            (["train", "--data", "nodata", "--config", "retinanett"], "--config: unknown detector 'retinanett'; did you mean 'retinanet'?"),
            (["demo", "-o", "demo", "--count", "2", "--config", "retinanet(encoder=resnet35)"], "--config: unknown encoder 'resnet35'"),
            (["plugins", "--canonical", "retinanet(encoder=resnet35)"], "--canonical: unknown encoder 'resnet35'"),
            (["import", "none.safetensors", "--encoder", "resnet35", "--dry-run"], "--encoder: unknown encoder 'resnet35'; did you mean 'resnet34'?"),
            (["import", "none.safetensors", "--encoder", "resnet34(widht=2)", "--dry-run"], "--encoder: resnet34 has no parameter 'widht'; did you mean 'width'?"),
            (
                ["import", "none.safetensors", "--encoder", "resnet34", "--key-map", "timmm", "--dry-run"],
                "--key-map: encoder resnet34 has no key map 'timmm'; did you mean 'timm'?"
            ),
        ]
        for (args, expected) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains("Error: " + expected), "\(args): expected '\(expected)' in \(r.stderr)")
        }
        // nothing was made: no demo data, no run folder
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), [])
        // the same config from a run's own options.json is a data error (1): the command line is right
        let run = dir.appendingPathComponent("run")
        try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
        var options = TrainingOptions(config: "retinanet(encoder=resnet35)")
        options.dataRoot = run.path
        try JSONEncoder().encode(options).write(to: run.appendingPathComponent("options.json"))
        let r = try CLI.run(["train", "-o", "run", "--resume"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stderr.contains("unknown encoder 'resnet35'"), r.all)
    }

    /// convert's usage line lists every option its help shows, with the required -o/--output
    /// written as required (as in export's and folds' lines), not as "[--output <output>]";
    /// a usage error shows the same line (new-user trial).
    func testConvertUsageLineListsEveryOptionAndRequiresTheOutput() throws {
        let help = try CLI.run(["convert", "--help"])
        XCTAssertEqual(help.status, 0, help.all)
        let line = try XCTUnwrap(help.stdout.split(separator: "\n").first { $0.hasPrefix("USAGE: ") }, help.stdout)
        let usage = String(line.dropFirst("USAGE: ".count))
        XCTAssertTrue(usage.hasPrefix("opacity convert <input> --output <output> [--size <size>] "), usage)
        XCTAssertFalse(usage.contains("[--output"), usage)
        // every option and flag that --help lists (the hidden ones aside)
        let dump = try CLI.run(["--experimental-dump-help"])
        XCTAssertEqual(dump.status, 0, dump.all)
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any])
        let commands = try XCTUnwrap((root["command"] as? [String: Any])?["subcommands"] as? [[String: Any]])
        let convert = try XCTUnwrap(commands.first { $0["commandName"] as? String == "convert" })
        var names: [String] = []
        for a in convert["arguments"] as? [[String: Any]] ?? [] where a["shouldDisplay"] as? Bool ?? true && a["kind"] as? String != "positional" {
            guard let name = a["preferredName"] as? [String: Any], name["kind"] as? String == "long", let n = name["name"] as? String, !["help", "version"].contains(n) else {
                continue
            }
            names.append("--" + n)
        }
        XCTAssertGreaterThanOrEqual(names.count, 10, "\(names)")
        for n in names { XCTAssertTrue(usage.contains("[\(n)") || usage.contains(" \(n) "), "\(n) is missing from \(usage)") }
        let error = try CLI.run(["convert"])
        XCTAssertEqual(error.status, 64, error.all)
        XCTAssertTrue(error.stderr.contains("Usage: " + usage + "\n"), error.all)
    }

    /// A number out of a key's range, in any config string (`--config`, `--aug`, `--tta`), is
    /// answered with the range and the nearest valid value, never a spelling suggestion
    /// (new-user trial: `--aug heavy,rotation=-5` was answered "did you mean '0'?", and
    /// `sp_size_min=0` "did you mean '0'?", a value refused itself); where the range is open
    /// at the number's side no value is offered, as none is nearest.
    func testOutOfRangeConfigNumbersNameTheRangeAndTheNearestValidValue() throws {
        let dir = try CLI.tempDir("confignumbers")
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [([String], [String])] = [
            (
                ["train", "--data", "nodata", "--config", "retinanet(encoder=resnet18(width=-5))"],
                ["width=-5 is invalid", "0.03125...4.0", "(nearest valid: 0.03125)"]
            ),
            (["train", "--data", "nodata", "--aug", "heavy,rotation=-5"], ["'rotation' = '-5'", "0...180", "(nearest valid: 0)"]),
            (["train", "--data", "nodata", "--aug", "heavy,flip=2"], ["'flip' = '2'", "0...1", "(nearest valid: 1)"]),
            (["train", "--data", "nodata", "--aug", "heavy,sp_size_min=0"], ["'sp_size_min' = '0'", "(0, 1]"]),
            (["detect", "x.png", "--tta", "scale=9"], ["--tta", "outside 0.25...4", "(nearest valid: 4)"]),
        ]
        for (args, expected) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            for e in expected { XCTAssertTrue(r.stderr.contains(e), "\(args): expected '\(e)' in \(r.stderr)") }
            XCTAssertFalse(r.stderr.contains("did you mean"), "\(args): a number is not a spelling: \(r.stderr)")
        }
        // (0, 1] has no nearest valid value at 0: none is offered, and 0 is never suggested
        let open = try CLI.run(["train", "--data", "nodata", "--aug", "heavy,sp_size_min=-1"], in: dir)
        XCTAssertFalse(open.stderr.contains("nearest valid"), open.stderr)
    }

    /// `train --limit N` limits the training and the validation images as eval's `--limit`
    /// limits the scored ones; `--limit-train` and `--limit-val` override it for their part.
    func testTrainLimitLimitsBothParts() throws {
        let dir = try syntheticData("trainlimit", count: 16, seed: 2)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (extra, train, validation) in [(["--limit", "3"], 3, 3), (["--limit", "3", "--limit-val", "2"], 3, 2)] {
            let run = "run\(extra.count)"
            let r = try trainTiny(["--epochs", "1", "--batch", "1", "-o", run, "--stop-after", "1"] + extra, in: dir)
            XCTAssertEqual(r.status, 130, r.all)
            let saved = try XCTUnwrap(try TrainingSetup.savedOptions(in: dir.appendingPathComponent(run)))
            XCTAssertEqual(saved.limitTrain, train, "\(extra)")
            XCTAssertEqual(saved.limitValidation, validation, "\(extra)")
            // 3 training images (of the fold's 12) at batch 1: 3 steps an epoch
            XCTAssertTrue(r.stderr.contains("epoch 1/1: 3 steps"), r.all)
        }
        let zero = try CLI.run(["train", "--data", "data", "--limit", "0"], in: dir)
        XCTAssertEqual(zero.status, 64, zero.all)
        XCTAssertTrue(zero.stderr.contains("--limit 0 is not valid; expected an integer of at least 1 (nearest valid: 1)"), zero.stderr)
    }

    /// Leaving out unreadable images is `--skip-unreadable` in every command, preview included;
    /// preview's old `--skip-bad-images` still works, with a deprecation warning, and is hidden.
    func testSkipUnreadableIsOneSpelling() throws {
        let dir = try syntheticData("skipspelling", count: 4, seed: 5)
        defer { try? FileManager.default.removeItem(at: dir) }
        let images = dir.appendingPathComponent("data/stage_2_train_images")
        let first = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: images.path).sorted().first)
        try FileManager.default.removeItem(at: images.appendingPathComponent(first))
        let failed = try CLI.run(["preview", "data", "--count", "2", "--size", "16", "-o", "a.png"], in: dir)
        XCTAssertNotEqual(failed.status, 0, failed.all)
        let skipped = try CLI.run(["preview", "data", "--count", "2", "--size", "16", "-o", "b.png", "--skip-unreadable"], in: dir)
        XCTAssertEqual(skipped.status, 0, skipped.all)
        XCTAssertFalse(skipped.stderr.contains("deprecated"), skipped.stderr)
        let old = try CLI.run(["preview", "data", "--count", "2", "--size", "16", "-o", "c.png", "--skip-bad-images"], in: dir)
        XCTAssertEqual(old.status, 0, old.all)
        XCTAssertTrue(old.stderr.contains("--skip-bad-images is deprecated; use --skip-unreadable"), old.stderr)
        for command in ["preview", "train", "eval", "detect", "submit", "folds"] {
            let help = try CLI.run([command, "--help"])
            XCTAssertTrue(help.stdout.contains("--skip-unreadable"), "\(command) --help: \(help.stdout)")
            XCTAssertFalse(help.stdout.contains("skip-bad"), "\(command) --help: \(help.stdout)")
        }
    }

    /// `OPACITY_THREADS` that is not a thread count (0, abc, 5000) is not ignored silently: a
    /// warning names the variable, the valid range and what is used instead; `--threads`
    /// replaces it (no warning), and a valid or empty value says nothing.
    func testInvalidThreadsVariableIsReported() throws {
        let dir = try CLI.tempDir("threadsvar")
        defer { try? FileManager.default.removeItem(at: dir) }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        for value in ["0", "abc", "5000", "-2"] {
            let r = try CLI.run(["synth", "-o", "s\(value)", "--count", "2", "--size", "64", "-q"], in: dir, environment: ["OPACITY_THREADS": value])
            XCTAssertEqual(r.status, 0, r.all)
            XCTAssertTrue(
                r.stderr.contains("warning: OPACITY_THREADS=\(value) is not valid; expected 1...1024, e.g. 4; it is ignored: using all \(cores) cores"), r.stderr)
            let given = try CLI.run(["synth", "-o", "t\(value)", "--count", "2", "--size", "64", "-q", "--threads", "1"], in: dir, environment: ["OPACITY_THREADS": value])
            XCTAssertEqual(given.status, 0, given.all)
            XCTAssertFalse(given.stderr.contains("OPACITY_THREADS"), given.stderr)
        }
        for value in ["3", ""] {
            let r = try CLI.run(["synth", "-o", "v\(value)", "--count", "2", "--size", "64", "-q"], in: dir, environment: ["OPACITY_THREADS": value])
            XCTAssertEqual(r.status, 0, r.all)
            XCTAssertFalse(r.stderr.contains("OPACITY_THREADS"), r.stderr)
        }
        // a command without --threads (preview) warns too: the engine reads the variable in every command
        let p = try CLI.run(["preview", "--count", "1", "--size", "16", "-o", "p.png"], in: dir, environment: ["OPACITY_THREADS": "abc"])
        XCTAssertEqual(p.status, 0, p.all)
        XCTAssertTrue(p.stderr.contains("OPACITY_THREADS=abc is not valid"), p.stderr)
        // --threads 0 stays a usage error, worded alike
        let bad = try CLI.run(["synth", "-o", "w", "--threads", "0"], in: dir)
        XCTAssertEqual(bad.status, 64, bad.all)
        XCTAssertTrue(bad.stderr.contains("--threads 0 is not valid; expected an integer in 1...1024 (nearest valid: 1)"), bad.stderr)
    }

    /// `detect --window` is convert's option (Documentation/DICOM.md: the window is "the one
    /// asked for"): on a real RSNA DICOM a fixed window changes what the model sees, and so
    /// the scores; `auto` (the default) and an unchanged run agree; a bad value is the same
    /// usage error (64) in both commands, naming --window, the value and what is expected.
    func testDetectWindowIsConvertsOption() throws {
        let dir = try CLI.tempDir("detectwindow")
        defer { try? FileManager.default.removeItem(at: dir) }
        let dcm = CLI.realdata.appendingPathComponent("rsna1k/stage_2_train_images/0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm").path
        func scores(_ extra: [String], _ out: String) throws -> [Double] {
            let r = try CLI.run(["detect", dcm, "-o", out, "--threshold", "0", "--no-overlays", "-q"] + extra, in: dir)
            XCTAssertEqual(r.status, 0, "\(extra): \(r.all)")
            let reports = try XCTUnwrap(
                try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent(out + "/detections.json"))) as? [[String: Any]])
            let boxes = try XCTUnwrap(reports.first?["boxes"] as? [[String: Any]], "\(reports)")
            return boxes.compactMap { $0["score"] as? Double }
        }
        let automatic = try scores([], "a")
        XCTAssertFalse(automatic.isEmpty)
        XCTAssertEqual(try scores(["--window", "auto"], "b"), automatic)
        XCTAssertNotEqual(try scores(["--window", "40,60"], "c"), automatic, "--window 40,60 did not change what the model saw")
        for value in ["40", "40,0", "minmx"] {
            let d = try CLI.run(["detect", dcm, "-o", "d", "--window", value], in: dir)
            let c = try CLI.run(["convert", dcm, "-o", "c.png", "--window", value], in: dir)
            XCTAssertEqual(d.status, 64, "\(value): \(d.all)")
            XCTAssertEqual(c.status, 64, "\(value): \(c.all)")
            XCTAssertTrue(d.stderr.contains("--window '\(value)'"), "\(value): \(d.stderr)")
            let line = { (s: String) in s.split(separator: "\n").first { $0.contains("--window '") }.map(String.init) }
            XCTAssertEqual(line(d.stderr), line(c.stderr), "\(value): detect and convert say it differently")
        }
        let form = try CLI.run(["detect", dcm, "--window", "40"], in: dir)
        XCTAssertTrue(form.stderr.contains("--window '40' is not valid; expected auto, minmax, or CENTER,WIDTH such as 40,400"), form.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("d").path), "a refused run wrote its folder")
    }
}
