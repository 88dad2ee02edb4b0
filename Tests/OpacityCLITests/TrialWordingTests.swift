import Foundation
import Opacity
import XCTest

/// Messages a new user met in a trial that did not say what to type instead: a labels file
/// that is not there, a data folder given bare, `preview`'s augmentation option spelled as
/// `train`'s, and a frame a file lacks in `convert`.
final class TrialWordingTests: XCTestCase {
    static let labels = """
        patientId,x,y,width,height,Target
        a,100.0,200.0,50.0,60.0,1
        b,,,,,0

        """
    static let submission = """
        patientId,PredictionString
        a,0.9 100.0 200.0 50.0 60.0
        b,

        """

    /// `score --labels` naming no file: the option, the path, that it does not exist, and the
    /// nearest file beside it when one is close; a data error (1), as a missing submission is.
    func testScoreNamesAMissingLabelsFileAndTheNearestFile() throws {
        let dir = try CLI.tempDir("score-labels")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("data"), withIntermediateDirectories: true)
        try Data(Self.labels.utf8).write(to: dir.appendingPathComponent("data/stage_2_train_labels.csv"))
        try Data(Self.submission.utf8).write(to: dir.appendingPathComponent("sub.csv"))
        let cases: [(String, String?)] = [
            ("data/stage_2_train_label.csv", "data/stage_2_train_labels.csv"),
            ("data/stage_2_train_lables.csv", "data/stage_2_train_labels.csv"),
            ("missing.csv", nil),
        ]
        for (labels, nearest) in cases {
            let r = try CLI.run(["score", "sub.csv", "--labels", labels], in: dir)
            XCTAssertEqual(r.status, 1, "\(labels): \(r.all)")
            XCTAssertTrue(
                r.stderr.contains("--labels \(labels): no such file; expected the RSNA labels CSV (patientId,x,y,width,height,Target)"),
                "\(labels): \(r.stderr)")
            if let nearest {
                XCTAssertTrue(r.stderr.contains("(did you mean '\(nearest)'?)"), "\(labels): \(r.stderr)")
            } else {
                XCTAssertFalse(r.stderr.contains("did you mean"), "\(labels): \(r.stderr)")
            }
        }
        let right = try CLI.run(["score", "sub.csv", "--labels", "data/stage_2_train_labels.csv"], in: dir)
        XCTAssertEqual(right.status, 0, right.all)
        // --folds-file the same way (new-user trial, session 16)
        try Data("patientId,fold\n".utf8).write(to: dir.appendingPathComponent("folds.csv"))
        let folds = try CLI.run(["score", "sub.csv", "--labels", "data/stage_2_train_labels.csv", "--folds-file", "fold.csv"], in: dir)
        XCTAssertEqual(folds.status, 1, folds.all)
        XCTAssertTrue(folds.stderr.contains("--folds-file fold.csv: no such file; expected a folds CSV (opacity folds writes one) (did you mean 'folds.csv'?)"), folds.stderr)
    }

    /// A temporary folder holding the folders the bare-argument tests name: `rsna`, `my data`
    /// and a run folder `runs/r34` (with an `options.json`).
    static func bareArgumentFolders(_ name: String) throws -> URL {
        let dir = try CLI.tempDir(name)
        for folder in ["rsna", "my data", "runs/r34"] {
            try FileManager.default.createDirectory(at: dir.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
        try Data("{}".utf8).write(to: dir.appendingPathComponent("runs/r34/options.json"))
        return dir
    }

    /// A data folder (or run folder, or bundle) given bare to a command that names it with an
    /// option: the parser's "Unexpected argument" with the command line that was meant.
    func testABareDataFolderSaysWhichOptionNamesIt() throws {
        let dir = try Self.bareArgumentFolders("bare")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        let cases: [([String], String)] = [
            (["folds", "rsna", "-o", "folds.csv"], "Error: Unexpected argument 'rsna'; did you mean `opacity folds --data rsna -o folds.csv`?"),
            (["folds", "-o", "folds.csv", "my data"], "did you mean `opacity folds -o folds.csv --data 'my data'`?"),
            (["folds", "labels.csv", "-o", "folds.csv"], "did you mean `opacity folds --labels labels.csv -o folds.csv`?"),
            (["train", "rsna", "--epochs", "2"], "did you mean `opacity train --data rsna --epochs 2`?"),
            (["eval", "rsna", "--all"], "did you mean `opacity eval --data rsna --all`?"),
            (["eval", "runs/r34", "--data", "rsna"], "did you mean `opacity eval --model runs/r34 --data rsna`?"),
        ]
        for (args, message) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): expected '\(message)' in \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("Usage: opacity \(args[0])"), "\(args): \(r.stderr)")
        }
        // an error found first (no -o) keeps its line; the bare first argument gets its own
        let noOutput = try CLI.run(["folds", "rsna"], in: dir)
        XCTAssertEqual(noOutput.status, 64, noOutput.all)
        XCTAssertTrue(noOutput.stderr.contains("'rsna' is no argument of `opacity folds`; did you mean `opacity folds --data rsna`?"), noOutput.stderr)
        XCTAssertFalse(fm.fileExists(atPath: dir.appendingPathComponent("folds.csv").path))
        // the suggestion runs as printed
        let meant = try CLI.run(["synth", "-o", "rsna", "--count", "8", "--size", "64", "--seed", "1", "-q"], in: dir)
        XCTAssertEqual(meant.status, 0, meant.all)
        let folds = try CLI.run(["folds", "--data", "rsna", "-o", "folds.csv"], in: dir)
        XCTAssertEqual(folds.status, 0, folds.all)
    }

    /// Several bare arguments (new-user trial: `opacity train rsna1k extra`): the parser's line
    /// names them all, and the line meant gives each that looks like a path its option, as for
    /// one, leaving out the others and a second value for one option, and saying so.
    func testSeveralBareArgumentsAreNamedAllWithTheLineMeant() throws {
        let dir = try Self.bareArgumentFolders("bare-several")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        let cases: [([String], String)] = [
            (
                ["train", "rsna", "extra", "--epochs", "2"],
                "Error: 2 unexpected arguments: 'rsna', 'extra'; did you mean `opacity train --data rsna --epochs 2`? (left out: 'extra', which names no file or folder)"
            ),
            (["eval", "runs/r34", "rsna", "--all"], "Error: 2 unexpected arguments: 'runs/r34', 'rsna'; did you mean `opacity eval --model runs/r34 --data rsna --all`?"),
            (
                ["train", "rsna", "-o", "run", "my data", "extra"],
                "Error: 3 unexpected arguments: 'rsna', 'my data', 'extra'; did you mean `opacity train --data rsna -o run`? "
                    + "(left out: 'my data', which would be a second --data; 'extra', which names no file or folder)"
            ),
            (
                ["folds", "one", "two", "-o", "folds.csv"],
                "Error: 2 unexpected arguments: 'one', 'two'; `opacity folds` takes no bare arguments, and none of these names a file or folder: "
                    + "name the inputs with their options (`opacity folds --help` lists them)"
            ),
        ]
        for (args, message) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains(message + "\n"), "\(args): expected '\(message)' in \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("Usage: opacity \(args[0])"), "\(args): \(r.stderr)")
        }
        // an error found first (no -o) keeps its line; the bare arguments before any option get theirs
        let noOutput = try CLI.run(["folds", "rsna", "labels.csv"], in: dir)
        XCTAssertEqual(noOutput.status, 64, noOutput.all)
        XCTAssertTrue(
            noOutput.stderr.contains("\n'rsna', 'labels.csv' are no arguments of `opacity folds`; did you mean `opacity folds --data rsna --labels labels.csv`?\n"),
            noOutput.stderr)
        XCTAssertFalse(fm.fileExists(atPath: dir.appendingPathComponent("folds.csv").path))
    }

    /// `preview` takes `train`'s spelling `--aug`, and its older `--augmentation` still works
    /// (hidden from help, with a deprecation warning); errors name the option typed.
    func testPreviewTakesAugAndNamesTheOptionTyped() throws {
        let dir = try CLI.tempDir("preview-aug")
        defer { try? FileManager.default.removeItem(at: dir) }
        let refused: [([String], String)] = [
            (["preview", "--aug", "ligth", "-o", "p.png"], "Error: --aug 'ligth' is not valid; expected one of "),
            (["preview", "--aug", "ligth", "-o", "p.png"], "(did you mean 'light'?)"),
            (["preview", "--aug", "heavy,rotaton=3", "-o", "p.png"], "Error: --aug: key 'rotaton' = '3' is not valid; expected one of "),
            (["preview", "--augmentation", "ligth", "-o", "p.png"], "Error: --augmentation 'ligth' is not valid; expected one of "),
            (["preview", "--augmentation", "heavy,rotaton=3", "-o", "p.png"], "Error: --augmentation: key 'rotaton' = '3' is not valid"),
            (["preview", "--aug", "light", "--augmentation", "medium", "-o", "p.png"], "--aug light and --augmentation medium name different augmentations; give --aug only"),
            // the default's own name given with the older spelling is a conflict too (review)
            (["preview", "--aug", "heavy", "--augmentation", "light", "-o", "p.png"], "--aug heavy and --augmentation light name different augmentations; give --aug only"),
        ]
        for (args, message) in refused {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): expected '\(message)' in \(r.stderr)")
        }
        let synth = try CLI.run(["synth", "-o", "data", "--count", "4", "--size", "64", "--seed", "1", "-q"], in: dir)
        XCTAssertEqual(synth.status, 0, synth.all)
        for (option, file) in [("--aug", "a.png"), ("--augmentation", "b.png")] {
            let r = try CLI.run(["preview", "data", option, "light", "--count", "2", "--size", "16", "-o", file], in: dir)
            XCTAssertEqual(r.status, 0, "\(option): \(r.all)")
            XCTAssertTrue(r.stdout.contains("wrote \(dir.appendingPathComponent(file).path)") && r.stdout.contains("augmentation light"), "\(option): \(r.stdout)")
            XCTAssertEqual(r.stderr.contains("warning: --augmentation is deprecated; use --aug"), option == "--augmentation", "\(option): \(r.stderr)")
        }
        let help = try CLI.run(["preview", "--help"], environment: ["COLUMNS": "1000"])
        XCTAssertTrue(help.stdout.contains("--aug <preset>"), help.stdout)
        XCTAssertFalse(help.stdout.contains("--augmentation"), help.stdout)
    }

    /// An 8-bit MONOCHROME2 explicit VR little-endian DICOM of `frames` 4x4 frames.
    static func dicom(frames: Int) -> Data {
        var d = Data(count: 128)
        d.append(contentsOf: Array("DICM".utf8))
        func element(_ g: UInt16, _ e: UInt16, _ vr: String, _ value: [UInt8], into data: inout Data) {
            var v = value
            if v.count % 2 == 1 { v.append(vr == "UI" || vr == "OB" ? 0 : 0x20) }
            for x in [g, e] { data.append(contentsOf: [UInt8(x & 0xFF), UInt8(x >> 8)]) }
            data.append(contentsOf: Array(vr.utf8))
            if vr == "OB" {
                data.append(contentsOf: [0, 0] + (0..<4).map { UInt8((v.count >> (8 * $0)) & 0xFF) })
            } else {
                data.append(contentsOf: [UInt8(v.count & 0xFF), UInt8(v.count >> 8)])
            }
            data.append(contentsOf: v)
        }
        func us(_ e: UInt16, _ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
        var meta = Data()
        element(0x0002, 0x0001, "OB", [0, 1], into: &meta)
        element(0x0002, 0x0010, "UI", Array("1.2.840.10008.1.2.1".utf8), into: &meta)
        element(0x0002, 0x0000, "UL", [UInt8(meta.count & 0xFF), UInt8(meta.count >> 8), 0, 0], into: &d)
        d.append(meta)
        element(0x0010, 0x0020, "LO", Array("frames".utf8), into: &d)
        element(0x0028, 0x0002, "US", us(0, 1), into: &d)
        element(0x0028, 0x0004, "CS", Array("MONOCHROME2".utf8), into: &d)
        element(0x0028, 0x0008, "IS", Array("\(frames)".utf8), into: &d)
        element(0x0028, 0x0010, "US", us(0, 4), into: &d)
        element(0x0028, 0x0011, "US", us(0, 4), into: &d)
        element(0x0028, 0x0100, "US", us(0, 8), into: &d)
        element(0x0028, 0x0101, "US", us(0, 8), into: &d)
        element(0x0028, 0x0102, "US", us(0, 7), into: &d)
        element(0x0028, 0x0103, "US", us(0, 0), into: &d)
        element(0x7FE0, 0x0010, "OB", (0..<(16 * frames)).map { UInt8($0 * 13 % 251) }, into: &d)
        return d
    }

    /// `convert --frame N` past a file's frames: the failure names `--frame`, the file, its
    /// number of frames (from 1) and the nearest valid frame, not the library's "parameter
    /// 'frame'"; the other files convert and the status is 1 (some items failed).
    func testConvertSaysAFrameTheFileLacksAsTheOption() throws {
        let dir = try CLI.tempDir("convert-frame")
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("dcm")
        try FileManager.default.createDirectory(at: input, withIntermediateDirectories: true)
        try Self.dicom(frames: 3).write(to: input.appendingPathComponent("three.dcm"))
        try Self.dicom(frames: 1).write(to: input.appendingPathComponent("one.dcm"))
        let one = input.appendingPathComponent("one.dcm").path, three = input.appendingPathComponent("three.dcm").path
        let cases: [([String], [String], Int)] = [
            (["--frame", "3"], ["--frame 3 is not valid for \(one): it has one frame (nearest valid: 1)"], 1),
            (
                ["--frame", "5"],
                [
                    "--frame 5 is not valid for \(one): it has one frame (nearest valid: 1)",
                    "--frame 5 is not valid for \(three): it has 3 frames, numbered 1...3 (nearest valid: 3)",
                ], 0
            ),
        ]
        for (quiet, stream) in [([String](), "stdout"), (["-q"], "stdout-q")] {
            for (frame, messages, converted) in cases {
                let out = "png-\(frame[1])-\(stream)"
                let r = try CLI.run(["convert", input.path, "-o", out] + frame + quiet, in: dir)
                XCTAssertEqual(r.status, 1, "\(frame): \(r.all)")
                let text = r.stdout
                for message in messages { XCTAssertTrue(text.contains(message), "\(frame): expected '\(message)' in \(r.all)") }
                XCTAssertFalse(r.all.contains("parameter 'frame'"), "\(frame): \(r.all)")
                XCTAssertTrue(r.stdout.contains("\(converted) converted"), "\(frame): \(r.stdout)")
                XCTAssertEqual(FileManager.default.fileExists(atPath: dir.appendingPathComponent("\(out)/three.png").path), converted == 1, "\(frame)")
            }
        }
    }

    /// `compare` naming a folder that does not exist says "no such folder", with the nearest
    /// folder beside it, as a usage error (64); an existing folder without a run is still "not
    /// a run folder" (1) (new-user trial: `compare runs/nonexist` was told "not a run folder").
    /// The library says the same (``RunError/noSuchFolder(_:)``).
    func testCompareSaysAFolderDoesNotExist() throws {
        let dir = try CLI.tempDir("compare-missing")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("runs/r34"), withIntermediateDirectories: true)
        var r = try CLI.run(["compare", "runs/nonexist"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains("compare runs/nonexist: no such folder; expected a run folder (with log.jsonl)"), r.all)
        XCTAssertFalse(r.stderr.contains("not a run folder"), r.all)
        r = try CLI.run(["compare", "runs/r35"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains("runs/r35: no such folder; expected a run folder (with log.jsonl) (did you mean 'runs/r34'?)"), r.all)
        r = try CLI.run(["compare", "runs/r34"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stderr.contains("runs/r34 is not a run folder (no log.jsonl or options.json)"), r.all)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("compare").path), "an output folder was left")
        // the library
        let missing = dir.appendingPathComponent("runs/nonexist")
        XCTAssertThrowsError(try RunComparison(folders: [missing])) { XCTAssertEqual($0 as? RunError, .noSuchFolder(missing.path)) }
        XCTAssertThrowsError(try TrainingSetup.resuming(runDirectory: missing)) { XCTAssertEqual($0 as? RunError, .noSuchFolder(missing.path)) }
        let empty = dir.appendingPathComponent("runs/r34")
        XCTAssertThrowsError(try RunComparison(folders: [empty])) { XCTAssertEqual($0 as? RunError, .notARun(empty.path)) }
        XCTAssertThrowsError(try TrainingSetup.resuming(runDirectory: empty)) { XCTAssertEqual($0 as? RunError, .notARun(empty.path)) }
    }

    /// `detect --skip-unreadable` names each file it leaves out once, with the reason (new-user
    /// trial: every path was named twice, "x.png: 'x.png': unknown image format"); a reason
    /// that does not name the file gets it in front; skipped.csv lists file and reason.
    func testSkippedFilesAreNamedOnce() throws {
        let dir = try CLI.tempDir("skip-once")
        defer { try? FileManager.default.removeItem(at: dir) }
        let images = dir.appendingPathComponent("images")
        try FileManager.default.createDirectory(at: images, withIntermediateDirectories: true)
        try PNG.write(GrayImage(width: 64, height: 64, value: 90), to: images.appendingPathComponent("good.png"))
        try Data("not an image".utf8).write(to: images.appendingPathComponent("broken.png"))
        try Data("not a DICOM file either".utf8).write(to: images.appendingPathComponent("broken.dcm"))
        let model = dir.appendingPathComponent("tiny.opb")
        try Initializer.withSeed(1) { try Registry.standard().makeDetector(CLIRobustnessTests.tiny) }.save(to: model)
        let r = try CLI.run(["detect", "images", "--model", "tiny.opb", "-o", "found", "--skip-unreadable"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("2 inputs skipped:"), r.stderr)
        for name in ["broken.png", "broken.dcm"] {
            XCTAssertEqual(r.stderr.components(separatedBy: name).count - 1, 1, "\(name) is not named once: \(r.stderr)")
        }
        let skipped = try CSVTable(contentsOf: dir.appendingPathComponent("found/skipped.csv"))
        XCTAssertEqual(Set(skipped.rows.map { URL(fileURLWithPath: $0.fields[0]).lastPathComponent }), ["broken.png", "broken.dcm"])
        // a reason without the file's name: the name first
        var list = SkippedInputs()
        list.add("a.png", "cannot be read")
        list.add("b.png", "'b.png': unknown image format")
        XCTAssertEqual(list.summary(), "2 inputs skipped:\n  a.png: cannot be read\n  'b.png': unknown image format")
        list = SkippedInputs()
        list.add("a.png", "cannot be read")
        XCTAssertEqual(list.summary(), "1 input skipped:\n  a.png: cannot be read")
    }

    /// A count printed with its noun is in the right number (new-user trial: `opacity demo`
    /// printed "(1 images)"): a demo whose validation fold holds one image says "1 image".
    func testCountsAgreeWithTheirNouns() throws {
        let dir = try CLI.tempDir("plural")
        defer { try? FileManager.default.removeItem(at: dir) }
        // 4 images in 4 folds: one validation image
        let r = try CLI.run(["demo", "-o", "dm", "--count", "4", "--epochs", "1", "--config", CLIRobustnessTests.tiny], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("3 training and 1 validation image; "), r.stdout)
        XCTAssertTrue(r.stdout.contains("(1 image)"), r.stdout)
        XCTAssertTrue(r.stderr.contains("epoch 1/1: 1 step\n"), r.stderr)
        XCTAssertTrue(r.stderr.contains("validating (1 batch)"), r.stderr)
        XCTAssertNil(r.all.range(of: #"\b1 (images|steps|batches|boxes|validation images)\b"#, options: .regularExpression), r.all)
        XCTAssertEqual(Wording.count(1, "image"), "1 image")
        XCTAssertEqual(Wording.count(0, "box", plural: "boxes"), "0 boxes")
        XCTAssertEqual(Wording.count(2, "patient"), "2 patients")
    }

    /// A command name that is none (`opacity trian --data rsna`, `opacity zoo lst`): the word,
    /// the group it is no command of, the nearest command for a typo and the list; not the
    /// parser's `Unknown option '--data'`, which blames an option the meant command takes.
    func testAMisspelledCommandNamesTheNearestCommand() throws {
        let cases: [([String], String)] = [
            (["trian", "--data", "rsna"], "Error: 'trian' is not a command of `opacity`; did you mean `opacity train`? The commands: demo, synth, train,"),
            (["detcet", "x.dcm"], "Error: 'detcet' is not a command of `opacity`; did you mean `opacity detect`?"),
            (["zoo", "lst"], "Error: 'lst' is not a command of `opacity zoo`; did you mean `opacity zoo list`? The commands: list, info, fetch, verify, add"),
            (["zoo", "check", "name"], "Error: 'check' is not a command of `opacity zoo`. The commands: list, info, fetch, verify, add"),
        ]
        for (args, expected) in cases {
            let r = try CLI.run(args)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.hasPrefix(expected), "\(args): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("Unknown option"), "\(args): \(r.stderr)")
        }
        // a command's own arguments are not command names
        let r = try CLI.run(["folds", "rsna-missing", "-o", "f.csv"])
        XCTAssertTrue(r.stderr.contains("did you mean `opacity folds --data rsna-missing -o f.csv`?"), r.stderr)
    }

    /// An input that is there but is not what was expected (a file given as `submit --images`,
    /// a folder without DICOM files given to `convert`) is said to be a file or a folder, never
    /// said not to exist.
    func testAnExistingInputOfTheWrongKindIsNotSaidToBeMissing() throws {
        let dir = try CLI.tempDir("wrong-kind")
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(Self.labels.utf8).write(to: dir.appendingPathComponent("labels.csv"))
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("empty"), withIntermediateDirectories: true)
        let submit = try CLI.run(["submit", "--images", "labels.csv", "-o", "sub.csv"], in: dir)
        XCTAssertEqual(submit.status, 1, submit.all)
        XCTAssertTrue(submit.stderr.contains("labels.csv' is a file; expected a folder of images (.dcm, .png, .jpg)"), submit.stderr)
        let convert = try CLI.run(["convert", "empty", "-o", "pngs"], in: dir)
        XCTAssertEqual(convert.status, 1, convert.all)
        XCTAssertTrue(convert.stderr.contains("empty' is a folder; expected a folder containing .dcm files"), convert.stderr)
        for r in [submit, convert] { XCTAssertFalse(r.stderr.contains("does not exist"), r.stderr) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("sub.csv").path))
    }

    /// `detect` that stops on an input it cannot read (without --skip-unreadable) leaves none of
    /// its outputs: no overlay PNG of the images before it without the detections file.
    func testDetectStoppedByAnUnreadableInputLeavesNoOverlays() throws {
        let dir = try CLI.tempDir("detect-stops")
        defer { try? FileManager.default.removeItem(at: dir) }
        let images = dir.appendingPathComponent("images")
        try FileManager.default.createDirectory(at: images, withIntermediateDirectories: true)
        // a.png is read first; b.dcm is JPEG Extended, which the reader refuses
        try FileManager.default.copyItem(at: CLI.realdata.appendingPathComponent("nih/00000001_000.png"), to: images.appendingPathComponent("a.png"))
        try FileManager.default.copyItem(at: CLI.realdata.appendingPathComponent("dicom_conformance/JPGExtended.dcm"), to: images.appendingPathComponent("b.dcm"))
        let r = try CLI.run(["detect", "images", "-o", "out", "--threads", "1"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stderr.contains("b.dcm': transfer syntax 1.2.840.10008.1.2.4.51"), r.stderr)
        let left = (try? FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("out").path)) ?? []
        XCTAssertEqual(left, [], "left in out/: \(left)")
        // with --skip-unreadable the same run writes the overlay and the detections file
        let skipping = try CLI.run(["detect", "images", "-o", "out", "--threads", "1", "--skip-unreadable"], in: dir)
        XCTAssertEqual(skipping.status, 0, skipping.all)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("out/a.overlay.png").path))
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("out/detections.json").path))
    }
}
