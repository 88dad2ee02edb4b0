import Foundation
import Opacity
import XCTest

/// What a fourth new-user trial met: an operating point picked where the validation metric
/// was 0 used as if it were one, a run's log given to --model, a folder given to
/// `score --labels`, a labels CSV naming many more images than its folder holds, and the zoo
/// saying "epoch 1" of a model trained for 3 epochs in two runs.
final class FourthTrialTests: XCTestCase {
    static let dcm = ThirdTrialTests.dcm
    static let why = "note: the model's operating point was picked where its validation metric was 0 at every threshold; "

    /// A bundle whose operating point was picked where the validation metric was 0 at every
    /// threshold (a run of an epoch or two stores 0.01) is used at the default threshold, as
    /// one that stores none, with one note saying why: in detect, submit, serve (the library's
    /// saved threshold) and export's drawn-up card; `--threshold` overrides it without a word.
    func testZeroMetricOperatingPointIsPassedOver() throws {
        let dir = try CLI.tempDir("zero-metric-point")
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = try CLI.zoo().verifiedFile("retinanet-r34-rsna1k")
        let zero = dir.appendingPathComponent("zero.opb")
        try OperatingPoint.write(OperatingPoint(threshold: 0.01, metric: 0, data: "validation", images: 4), from: source, to: zero)
        XCTAssertEqual(OperatingPoint.read(zero)?.pickedAtZeroMetric, true)
        XCTAssertNil(OperatingPoint.usable(zero))
        XCTAssertNil(ModelReference.savedThreshold(zero))
        XCTAssertEqual(OperatingPoint.threshold(for: [zero]), OperatingPoint.defaultThreshold)
        XCTAssertEqual(OperatingPoint.threshold(for: [zero, source]), 0.11, "the next model's operating point, as for a model that stores none")
        XCTAssertNil(ModelCard.drawnUp(from: try WeightBundle.info(zero).metadata, inputSize: 256).operatingThreshold)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("images"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.dcm, to: dir.appendingPathComponent("images/x.dcm"))
        let commands: [([String], String)] = [
            (["detect", "images/x.dcm", "-o", "d", "--no-overlays"], ", threshold 0.20 (the default)\n"),
            (["submit", "--images", "images", "-o", "s.csv"], ", threshold 0.20 (the default)\n"),
        ]
        for (command, line) in commands {
            var r = try CLI.run(command + ["--model", "zero.opb", "-q"], in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            XCTAssertTrue(r.stderr.contains(line), r.all)
            XCTAssertEqual(r.stderr.components(separatedBy: Self.why + "using the default 0.20 (it stores 0.01").count, 2, r.all)
            r = try CLI.run(command + ["--model", "zero.opb", "-q", "--threshold", "0.3", "--overwrite"], in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            XCTAssertFalse(r.stderr.contains("operating point"), r.all)
        }
        let r = try CLI.run(["export", "zero.opb", "-o", "e.opb"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains(Self.why + "the card gives none (detect, submit and serve use the default 0.20)"), r.all)
        let card = try XCTUnwrap(ModelCard(metadata: try WeightBundle.info(dir.appendingPathComponent("e.opb")).metadata))
        XCTAssertNil(card.operatingThreshold)
    }

    /// An ensemble whose first model to store an operating point picked it at metric 0 uses
    /// the next model's, and says so in the note detect and submit give for one such model (it
    /// said nothing, so the threshold came from another model without a word); the other
    /// order, or --threshold, gives no note.
    func testEnsembleSaysItsFirstModelsZeroMetricPointIsPassedOver() throws {
        let dir = try CLI.tempDir("zero-metric-ensemble")
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = try CLI.zoo().verifiedFile("retinanet-r34-rsna1k")
        try OperatingPoint.write(OperatingPoint(threshold: 0.01, metric: 0, data: "validation", images: 4), from: source, to: dir.appendingPathComponent("zero.opb"))
        try FileManager.default.copyItem(at: source, to: dir.appendingPathComponent("good.opb"))
        XCTAssertEqual(OperatingPoint.usable(dir.appendingPathComponent("good.opb"))?.threshold, 0.11)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("images"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.dcm, to: dir.appendingPathComponent("images/x.dcm"))
        let note =
            "note: the operating point of zero.opb (the ensemble's first model that stores one) was picked where its validation metric was 0 at every threshold; "
            + "using the operating point of good.opb, 0.11, instead (it stores 0.01, the lowest threshold swept"
        for command in [["detect", "images/x.dcm", "-o", "d", "--no-overlays"], ["submit", "--images", "images", "-o", "s.csv"]] {
            var r = try CLI.run(command + ["--model", "zero.opb", "--model", "good.opb", "-q"], in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            XCTAssertTrue(r.stderr.contains(", threshold 0.11 (the model's operating point)\n"), r.all)
            XCTAssertEqual(r.stderr.components(separatedBy: note).count, 2, r.all)
            r = try CLI.run(command + ["--model", "good.opb", "--model", "zero.opb", "-q", "--overwrite"], in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            XCTAssertTrue(r.stderr.contains(", threshold 0.11 (the model's operating point)\n"), r.all)
            XCTAssertFalse(r.stderr.contains("validation metric was 0"), r.all)
            r = try CLI.run(command + ["--model", "zero.opb", "--model", "good.opb", "-q", "--threshold", "0.3", "--overwrite"], in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            XCTAssertFalse(r.stderr.contains("operating point"), r.all)
        }
    }

    /// A file of a run folder that is no bundle (its log, its options) given to --model is a
    /// usage error that names the option and suggests the run folder or its best.opb (trial:
    /// `detect --model runs/t1/log.jsonl` said only "not an Opacity bundle (first bytes ...)").
    func testRunFileAsModelSuggestsTheRunFolder() throws {
        let dir = try CLI.tempDir("run-file-model")
        defer { try? FileManager.default.removeItem(at: dir) }
        let run = dir.appendingPathComponent("runs/t1")
        try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
        try Data("{\"epoch\":1}\n".utf8).write(to: run.appendingPathComponent("log.jsonl"))
        try Data("{}".utf8).write(to: run.appendingPathComponent("options.json"))
        var r = try CLI.run(["detect", Self.dcm.path, "-o", "d", "--model", "runs/t1/log.jsonl"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains("--model runs/t1/log.jsonl: not an Opacity bundle; pass the run folder runs/t1 (it has no best.opb yet"), r.all)
        try FileManager.default.copyItem(at: try CLI.zoo().verifiedFile("retinanet-r34-rsna1k"), to: run.appendingPathComponent("best.opb"))
        r = try CLI.run(["detect", Self.dcm.path, "-o", "d", "--model", "runs/t1/options.json"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains("--model runs/t1/options.json: not an Opacity bundle; pass the run folder runs/t1 or runs/t1/best.opb"), r.all)
        // a file outside a run folder keeps the loader's message
        try Data("not a bundle".utf8).write(to: dir.appendingPathComponent("x.opb"))
        r = try CLI.run(["detect", Self.dcm.path, "-o", "d", "--model", "x.opb"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertFalse(r.stderr.contains("pass the run folder"), r.all)
    }

    /// A folder given to `score --labels` names the option, what it takes, and the labels CSV
    /// in it when one stands out (trial: "cannot read '.../few': it is a folder").
    func testScoreLabelsFolderNamesTheOption() throws {
        let dir = try CLI.tempDir("score-labels-folder")
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data("patientId,PredictionString\na,\n".utf8).write(to: dir.appendingPathComponent("sub.csv"))
        let fm = FileManager.default
        for (folder, files) in [("few", ["stage_2_train_labels.csv", "other.csv"]), ("one", ["b.csv"]), ("two", ["b.csv", "c.csv"])] {
            try fm.createDirectory(at: dir.appendingPathComponent(folder), withIntermediateDirectories: true)
            for f in files { try Data("patientId,x,y,width,height,Target\n".utf8).write(to: dir.appendingPathComponent(folder + "/" + f)) }
        }
        let expected = "is a folder; expected a CSV file of boxes (patientId,x,y,width,height,Target), e.g. stage_2_train_labels.csv"
        let cases: [(String, String)] = [
            ("few", "--labels few \(expected) (did you mean 'few/stage_2_train_labels.csv'?)"),
            ("one", "--labels one \(expected) (did you mean 'one/b.csv'?)"),
            ("two", "--labels two \(expected)\n"),
        ]
        for (folder, message) in cases {
            let r = try CLI.run(["score", "sub.csv", "--labels", folder], in: dir)
            XCTAssertEqual(r.status, 64, r.all)
            XCTAssertTrue(r.stderr.contains(message), "expected '\(message)' in:\n\(r.all)")
        }
    }

    /// Images a labels CSV names but its folder lacks: the error says how many of them the
    /// folder lacks (trial: 757 named, 4 in the folder, and only "add --skip-unreadable").
    func testMissingImagesSayHowManyTheFolderLacks() throws {
        let dir = try CLI.tempDir("missing-many")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("dcm"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.dcm, to: dir.appendingPathComponent("dcm/0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm"))
        let rows = ["0004cfab-14fd-4e49-80ba-63a80b6bddd6", "gone-1", "gone-2", "gone-3"].map { "\($0),,,,,0" }
        try Data((["patientId,x,y,width,height,Target"] + rows).joined(separator: "\n").utf8).write(to: dir.appendingPathComponent("four.csv"))
        let r = try CLI.run(["eval", "--labels", "four.csv", "--images", "dcm", "--all"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stderr.contains("3 images missing and 0 unreadable (3 of the 4 images the labels name are not in "), r.all)
        XCTAssertTrue(r.stderr.contains("/dcm), e.g. gone-1 (missing)"), r.all)
        XCTAssertTrue(r.stderr.contains("add --skip-unreadable to go on without them"), r.all)
    }

    /// `zoo info` says which run's epoch a checkpoint's is and prints the bundle's notes, which
    /// tell a model trained in stages (trial: "epoch 1" beside a card that says 3 epochs, 2 + 1).
    func testZooInfoSaysWhoseEpoch() throws {
        let r = try CLI.run(["zoo", "info", "retinanet-r34-rsna1k"])
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("epoch 1 of the training run that wrote the weights (see notes)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("notes:       transfer from retinanet-r34-composite: 2 epochs at lr 1e-4"), r.stdout)
        XCTAssertFalse(r.stdout.contains(", epoch 1,"), r.stdout)
    }
}
