import Foundation
import XCTest

/// What a twenty-third new-user trial met.
final class SessionTwentyThreeTrialTests: XCTestCase {
    /// `detect`, `convert` and `preview` take their inputs as arguments; a user who learnt
    /// `--data` from `train`, `folds` and `eval` typed `opacity detect --data scans` and was
    /// asked "Did you mean '--tta'?" (preview: '--aug', convert: '--depth'), the parser's
    /// nearest spelling, which names nothing like an input. The error now gives the command
    /// line meant.
    func testAnInputOptionOfACommandThatTakesItsInputsAsArgumentsGetsTheLineMeant() throws {
        let cases: [([String], String)] = [
            (["detect", "--data", "scans"], "`opacity detect scans`"),
            (["detect", "--images", "scans", "-o", "found"], "`opacity detect scans -o found`"),
            (["preview", "--data", "rsna", "-o", "p.png"], "`opacity preview rsna -o p.png`"),
            (["convert", "--data", "dcm", "-o", "png"], "`opacity convert dcm -o png`"),
        ]
        for (arguments, meant) in cases {
            let r = try CLI.run(arguments)
            XCTAssertEqual(r.status, 64, "\(arguments): \(r.all)")
            let first = r.stderr.split(separator: "\n").first.map(String.init) ?? ""
            XCTAssertTrue(first.hasPrefix("Error: Unknown option '\(arguments[1])'"), "\(arguments): \(r.stderr)")
            XCTAssertTrue(first.contains("`opacity \(arguments[0])` takes its inputs as arguments"), "\(arguments): \(r.stderr)")
            XCTAssertTrue(first.contains("did you mean \(meant)?"), "\(arguments): \(r.stderr)")
            XCTAssertFalse(first.contains("Did you mean '--"), "\(arguments): \(r.stderr)")
        }
    }

    /// `opacity folds --data D -o D/stage_2_train_labels.csv` (the labels it reads) was answered
    /// "exists (an earlier run's); add --overwrite to replace the earlier folds file", and with
    /// --overwrite it was then refused as an input: the first answer sent the user the wrong
    /// way. `preview -o` over one of its images likewise. Both now say at once that the output
    /// is an input, as `submit` does.
    func testAnOutputThatIsAnInputIsSaidSoBeforeAnyEarlierResult() throws {
        let dir = try CLI.tempDir("t23-output-is-input")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["synth", "-o", "data", "--count", "8", "--size", "64", "--seed", "1", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let image = try XCTUnwrap(
            try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("data/stage_2_train_images").path).sorted().first)
        let cases: [[String]] = [
            ["folds", "--data", "data", "-o", "data/stage_2_train_labels.csv"],
            ["folds", "--data", "data", "-o", "data/stage_2_train_images/\(image)"],
            ["folds", "--labels", "data/stage_2_train_labels.csv", "--images", "data/stage_2_train_images", "-o", "data/stage_2_train_labels.csv"],
            ["preview", "data", "-o", "data/stage_2_train_images/\(image)", "--count", "2", "--size", "64"],
            ["preview", "data", "-o", "data/stage_2_detailed_class_info.csv", "--count", "2", "--size", "64"],
        ]
        for arguments in cases {
            r = try CLI.run(arguments, in: dir)
            XCTAssertEqual(r.status, 64, "\(arguments): \(r.all)")
            XCTAssertTrue(r.stderr.contains("would replace the input"), "\(arguments): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("choose another -o/--output"), "\(arguments): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("an earlier run's"), "\(arguments): \(r.stderr)")
        }
    }

    /// `train --batch 100` on a fold of 6 training images said "batch: 100 images per step" and
    /// trained on 6 per step (the loader takes at most the fold's images): the line now says
    /// the batch used and why.
    func testABatchLargerThanTheTrainingImagesIsSaidAsTheBatchUsed() throws {
        let dir = try CLI.tempDir("t23-batch")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["synth", "-o", "data", "--count", "8", "--size", "64", "--seed", "1", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(
            [
                "train", "--data", "data", "-o", "run", "--epochs", "1", "--batch", "100", "--workers", "1", "-q",
                "--config", "retinanet(encoder=resnet18(width=0.25), neck=fpn(channels=16), head=retina(channels=16), size=64)",
            ], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let line = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.hasPrefix("batch: ") }, r.all)
        XCTAssertEqual(
            String(line),
            "batch: 6 images per step in all (--batch 100 is more than the fold's 6 training images); per process 6 x 1 process", r.all)
    }

    /// `opacity convert x.dcm -o x.png` said "1 converted, 0 skipped (output exists), 0 failed"
    /// and nowhere what it wrote, where every other writer names its output absolute (CLI.md).
    func testConvertNamesWhatItWroteAbsolute() throws {
        let dir = try CLI.tempDir("t23-convert-names")
        defer { try? FileManager.default.removeItem(at: dir) }
        let dcm = CLI.realdata.appendingPathComponent("rsna/stage_1_train_images/0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm")
        let shown = dir.standardizedFileURL.path
        var r = try CLI.run(["convert", dcm.path, "-o", "./one.png", "--size", "64", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertEqual(r.stdout, "1 converted, 0 skipped (output exists), 0 failed\nwrote \(shown)/one.png\n", r.all)
        let folder = dir.appendingPathComponent("in")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: dcm, to: folder.appendingPathComponent("a.dcm"))
        try FileManager.default.copyItem(at: dcm, to: folder.appendingPathComponent("b.dcm"))
        r = try CLI.run(["convert", "in", "-o", "out/", "--size", "64", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertEqual(r.stdout, "2 converted, 0 skipped (output exists), 0 failed\nwrote 2 PNGs in \(shown)/out\n", r.all)
        // nothing converted, nothing said to be written
        r = try CLI.run(["convert", "in", "-o", "out", "--size", "64", "-q"], in: dir)
        XCTAssertEqual(r.stdout, "0 converted, 2 skipped (output exists), 0 failed\n", r.all)
    }
}
