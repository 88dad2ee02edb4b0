import Foundation
import Opacity
import XCTest

/// The robustness cases (../shared/cases) through the real `opacity` command: option
/// values out of range, outputs over inputs, duplicate ids, partial failures, run folders.
final class CLIRobustnessTests: XCTestCase {
    /// Case csv-100mb-line-echoed for submissions: the submission reader checks the lines in
    /// pieces before loading the file, as the labels reader does (`opacity score` refuses a
    /// file with an over-long line without holding the file in memory).
    func testSubmissionWithAnOverLongLineIsRefusedBeforeLoading() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sub-long-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let bad = dir.appendingPathComponent("sub.csv")
        var data = Data("patientId,PredictionString\n".utf8)
        data.append(Data(repeating: UInt8(ascii: "b"), count: 4 * InputLimits.csvLineBytes))
        try data.write(to: bad)
        XCTAssertThrowsError(try Submission(contentsOf: bad)) { e in
            let message = "\(e)"
            XCTAssertTrue(message.contains("line 2") && message.contains("more than \(InputLimits.csvLineBytes) bytes"), message)
        }
    }

    /// Case csv-100mb-line-echoed through `opacity score`: an over-long line of the labels or
    /// of the submission is said in plain words (the file, the line, the limit, the fields
    /// found and those expected), in one short line, without echoing any of it.
    func testScoreSaysAnOverLongCSVLineInPlainWords() throws {
        let dir = try CLI.tempDir("csv-long")
        defer { try? FileManager.default.removeItem(at: dir) }
        let long = Data(repeating: UInt8(ascii: "b"), count: 2 * InputLimits.csvLineBytes)
        var labels = Data("patientId,x,y,width,height,Target\n".utf8)
        labels.append(long)
        try labels.write(to: dir.appendingPathComponent("labels.csv"))
        try Data("patientId,PredictionString\nX,\n".utf8).write(to: dir.appendingPathComponent("sub.csv"))
        var sub = Data("patientId,PredictionString\n".utf8)
        sub.append(long)
        try sub.write(to: dir.appendingPathComponent("long.csv"))
        try Data("patientId,x,y,width,height,Target\nX,,,,,0\n".utf8).write(to: dir.appendingPathComponent("ok.csv"))
        for (args, file, fields) in [(["score", "sub.csv", "--labels", "labels.csv"], "labels.csv", 6), (["score", "long.csv", "--labels", "ok.csv"], "long.csv", 2)] {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 1, "\(args): \(r.all)")
            XCTAssertLessThan(r.all.utf8.count, 1000, "\(args): \(r.all)")
            XCTAssertFalse(r.stderr.contains("bbbb"), "\(args): \(r.stderr)")
            XCTAssertTrue(
                r.stderr.contains(
                    "\(file)' line 2: too long: more than 1048576 bytes (1 MiB, the most one line may have), with 1 field in its first 1048576 bytes; "
                        + "expected a row of \(fields) fields separated by commas, like the header on line 1\n"), "\(args): \(r.stderr)")
        }
    }

    static let tiny = "retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=16), head=retina(channels=16), size=64)"

    func sha(_ url: URL) throws -> String {
        var h = SHA256()
        h.update([UInt8](try Data(contentsOf: url)))
        return h.finalize().hex
    }

    /// cli-window-nan, train-factor-precondition, aug-scale-200-crash: refused with the range,
    /// never a trap, and an over-long value is not echoed whole.
    func testOptionValuesOutOfRangeAreRefused() throws {
        let dir = try CLI.tempDir("options")
        defer { try? FileManager.default.removeItem(at: dir) }
        let long = String(repeating: "7", count: 5000)
        let cases: [([String], String)] = [
            (["convert", "small8.dcm", "out.png", "--window", "nan,400"], "finite"),
            (["convert", "small8.dcm", "out.png", "--window", "40,inf"], "finite"),
            (["train", "--data", "x", "--factor", "1.5"], "(0, 1)"),
            (["train", "--data", "x", "--factor", "nan"], "(0, 1)"),
            (["train", "--data", "x", "--clip", "-1"], "--clip"),
            (["train", "--data", "x", "--lr", "inf"], "--lr"),
            (["train", "--data", "x", "--aug", "heavy,rotation=1e19"], "0...180"),
            (["train", "--data", "x", "--aug", "heavy,scale=" + long], "…"),
            (["preview", "--augmentation", "heavy,scale=200", "--count", "2", "--size", "64", "-o", "p.png"], "0...1"),
            (["preview", "--augmentation", "heavy,blur_sigma=1e30", "--count", "2", "--size", "64", "-o", "p.png"], "0...16"),
            (["detect", "x.png", "--threshold", "nan"], "--threshold"),
            (["detect", "x.png", "--shrink", "nan"], "--shrink"),
            (["train", "--data", "x", "--config", "retinanet(encoder=" + String(repeating: "resnet18(width=", count: 200) + "1" + String(repeating: ")", count: 201)], "nested"),
        ]
        for (args, expected) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertNotEqual(r.status, 0, "\(args.prefix(4)) should fail")
            XCTAssertTrue(r.all.contains(expected), "\(args.prefix(4)): expected '\(expected)' in:\n\(r.all.prefix(2000))")
            XCTAssertFalse(r.all.contains("Fatal error") || r.all.contains("crashed"), "\(args.prefix(4)) crashed:\n\(r.all.prefix(2000))")
            XCTAssertLessThan(r.all.utf8.count, 4000, "\(args.prefix(4)) echoes too much")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("p.png").path))
    }

    /// convert-overwrites-input and the a.dcm + a.dicom collision; detect-out-overwrites-input.
    func testOutputsNeverReplaceInputs() throws {
        let dir = try CLI.tempDir("outputs")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["synth", "-o", "data", "--count", "3", "--size", "64", "--seed", "1", "--format", "dicom"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let dcm = try ImageFile.list(in: dir.appendingPathComponent("data/stage_2_train_images"))
        // a DICOM named scan.png converted onto itself, even with --overwrite
        let scan = dir.appendingPathComponent("scan.png")
        try FileManager.default.copyItem(at: dcm[0], to: scan)
        let before = try sha(scan)
        r = try CLI.run(["convert", "scan.png", "scan.png", "--overwrite"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertTrue(r.all.contains("never overwritten"), r.all)
        XCTAssertEqual(try sha(scan), before)
        // a.dcm and a.dicom both map to a.png: one is converted, the other is a failure naming both
        let pair = dir.appendingPathComponent("pair")
        try FileManager.default.createDirectory(at: pair, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: dcm[0], to: pair.appendingPathComponent("a.dcm"))
        try FileManager.default.copyItem(at: dcm[1], to: pair.appendingPathComponent("a.dicom"))
        r = try CLI.run(["convert", "pair", "pngs"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertTrue(r.all.contains("1 converted"), r.all)
        XCTAssertTrue(r.all.contains("a.dicom") && r.all.contains("also the output of"), r.all)
        // detect --out into the input folder that holds x.png and x.overlay.png
        let input = dir.appendingPathComponent("in")
        try FileManager.default.createDirectory(at: input, withIntermediateDirectories: true)
        let img = GrayImage(width: 64, height: 64, pixels: (0..<4096).map { UInt8($0 % 200) })
        try PNG.write(img, to: input.appendingPathComponent("x.png"))
        try PNG.write(img, to: input.appendingPathComponent("x.overlay.png"))
        let overlayBefore = try sha(input.appendingPathComponent("x.overlay.png"))
        r = try CLI.run(["detect", "in", "-o", "in"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertTrue(r.all.contains("x.overlay.png") && r.all.contains("would replace the input"), r.all)
        // both named: the input whose output it is (x.png) and the input it would replace
        XCTAssertTrue(r.stderr.contains("the overlay of the input '") && r.stderr.contains("/in/x.png' would replace the input '"), r.all)
        XCTAssertTrue(r.stderr.contains("/in/x.overlay.png'; choose another"), r.all)
        XCTAssertEqual(try sha(input.appendingPathComponent("x.overlay.png")), overlayBefore)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: input.path).sorted(), ["x.overlay.png", "x.png"])
    }

    /// With --skip-unreadable, an unreadable file of a patientId that another readable file
    /// shares is replaced by that file, not left out (new-user trial: a garbage p9.dcm beside
    /// p9.png gave no row for p9); both the file used and the one skipped are said.
    func testSubmitFallsBackToAReadableFileOfTheSamePatient() throws {
        let dir = try CLI.tempDir("fallback")
        defer { try? FileManager.default.removeItem(at: dir) }
        let test = dir.appendingPathComponent("test")
        try FileManager.default.createDirectory(at: test, withIntermediateDirectories: true)
        try Data("not a DICOM".utf8).write(to: test.appendingPathComponent("p9.dcm"))
        try PNG.write(GrayImage(width: 64, height: 64, value: 90), to: test.appendingPathComponent("p9.png"))
        try PNG.write(GrayImage(width: 64, height: 64, value: 40), to: test.appendingPathComponent("p1.png"))
        let model = dir.appendingPathComponent("tiny.opb")
        try Initializer.withSeed(1) { try Registry.standard().makeDetector(Self.tiny) }.save(to: model)
        var r = try CLI.run(["submit", "--images", "test", "--model", "tiny.opb", "-o", "sub.csv"], in: dir)
        XCTAssertNotEqual(r.status, 0, "without --skip-unreadable the unreadable file stops submit: \(r.all)")
        r = try CLI.run(["submit", "--images", "test", "--model", "tiny.opb", "-o", "sub.csv", "--skip-unreadable", "--overwrite"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let sub = try Submission(contentsOf: dir.appendingPathComponent("sub.csv"))
        XCTAssertEqual(sub.rows.map(\.patientId).sorted(), ["p1", "p9"], r.all)
        let skipped = try CSVTable(contentsOf: dir.appendingPathComponent("sub.skipped.csv"))
        XCTAssertEqual(skipped.rows.map { URL(fileURLWithPath: $0.fields[0]).lastPathComponent }, ["p9.dcm"])
        XCTAssertTrue(skipped.rows[0].fields[1].hasSuffix("; p9.png (the same patientId) is used instead"), "\(skipped.rows)")
    }

    /// submit-duplicate-ids / submit-duplicate-patientid, and partial failures of submit and
    /// detect: one row per patientId, unreadable files get no row, and everything left out
    /// is listed in the output and in a skipped CSV.
    func testSubmitAndDetectReportWhatTheySkip() throws {
        let dir = try CLI.tempDir("skips")
        defer { try? FileManager.default.removeItem(at: dir) }
        let test = dir.appendingPathComponent("test")
        try FileManager.default.createDirectory(at: test, withIntermediateDirectories: true)
        var r = try CLI.run(["synth", "-o", "data", "--count", "2", "--size", "64", "--seed", "1", "--format", "dicom"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let dcm = try ImageFile.list(in: dir.appendingPathComponent("data/stage_2_train_images"))
        try FileManager.default.copyItem(at: dcm[0], to: test.appendingPathComponent("p1.dcm"))
        try PNG.write(GrayImage(width: 64, height: 64, value: 90), to: test.appendingPathComponent("p1.png"))
        try Data("not an image".utf8).write(to: test.appendingPathComponent("broken.png"))
        // a model small and fast: a tiny untrained detector
        let model = dir.appendingPathComponent("tiny.opb")
        try Initializer.withSeed(1) { try Registry.standard().makeDetector(Self.tiny) }.save(to: model)
        r = try CLI.run(["submit", "--images", "test", "--model", "tiny.opb", "-o", "sub.csv"], in: dir)
        XCTAssertNotEqual(r.status, 0, "an unreadable image stops submit without --skip-unreadable")
        r = try CLI.run(["submit", "--images", "test", "--model", "tiny.opb", "-o", "sub.csv", "--skip-unreadable"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let sub = try Submission(contentsOf: dir.appendingPathComponent("sub.csv"))
        XCTAssertEqual(sub.rows.map(\.patientId), ["p1"], "one row for p1, none for the unreadable file")
        XCTAssertTrue(r.all.contains("2 inputs skipped"), r.all)
        let skipped = try CSVTable(contentsOf: dir.appendingPathComponent("sub.skipped.csv"))
        XCTAssertEqual(skipped.header, ["file", "reason"])
        XCTAssertEqual(Set(skipped.rows.map { URL(fileURLWithPath: $0.fields[0]).lastPathComponent }), ["p1.png", "broken.png"])
        // our own scorer accepts the file
        try Data("patientId,x,y,width,height,Target\np1,,,,,0\n".utf8).write(to: dir.appendingPathComponent("labels.csv"))
        r = try CLI.run(["score", "sub.csv", "--labels", "labels.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        // detect: same inputs; the a.dcm/a.png pair gets two distinct overlays
        r = try CLI.run(["detect", "test", "--model", "tiny.opb", "-o", "found"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        r = try CLI.run(["detect", "test", "--model", "tiny.opb", "-o", "found", "--skip-unreadable"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let names = Set(try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("found").path))
        XCTAssertEqual(names, ["detections.json", "skipped.csv", "p1.dcm.overlay.png", "p1.png.overlay.png"])
        XCTAssertTrue(r.all.contains("broken.png"), r.all)
    }

    /// quoted-submission and metric-tie-order through `opacity score`.
    func testScoreReadsQuotedSubmissionsAndOrdersTiesAsTheReferences() throws {
        let dir = try CLI.tempDir("score")
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data("patientId,x,y,width,height,Target\nA,100,100,200,200,1\nB,,,,,0\n".utf8).write(to: dir.appendingPathComponent("labels.csv"))
        let files: [String: [UInt8]] = [
            "unquoted.csv": Array("patientId,PredictionString\nA,0.9 100 100 200 200\nB,\n".utf8),
            "quoted_field.csv": Array("patientId,PredictionString\nA,\"0.9 100 100 200 200\"\nB,\n".utf8),
            "excel_style.csv": [0xEF, 0xBB, 0xBF] + Array("\"patientId\",\"PredictionString\"\r\n\"A\",\"0.9 100 100 200 200\"\r\n\"B\",\"\"\r\n".utf8),
        ]
        for (name, bytes) in files {
            try Data(bytes).write(to: dir.appendingPathComponent(name))
            let r = try CLI.run(["score", name, "--labels", "labels.csv"], in: dir)
            XCTAssertEqual(r.status, 0, "\(name): \(r.all)")
            XCTAssertTrue(r.stdout.contains("metric 1.0000 over 1 image ("), "\(name): \(r.all)")
        }
        try Data("patientId,x,y,width,height,Target\nT,0,0,100,100,1\nT,40,0,100,100,1\n".utf8).write(to: dir.appendingPathComponent("tl.csv"))
        try Data("patientId,PredictionString\nT,0.500 30 0 100 100 0.500 0 0 100 100\n".utf8).write(to: dir.appendingPathComponent("tie.csv"))
        let r = try CLI.run(["score", "tie.csv", "--labels", "tl.csv"], in: dir)
        XCTAssertTrue(r.stdout.contains("metric 1.0000"), r.all)
    }

    /// On negatives-only labels the metric is a mean over nothing (all left empty: undefined,
    /// not 0) or over the false positives (0); the reference vectors' both_empty (null:
    /// excluded) and fp_only (0) cases, through `opacity score`.
    func testScoreOnNegativesOnlyExplainsTheMetric() throws {
        let dir = try CLI.tempDir("score-negatives")
        defer { try? FileManager.default.removeItem(at: dir) }
        struct Vectors: Decodable {
            struct Case: Decodable { var name: String; var gt: [[Double]]; var prediction_string: String; var expected: Double? }
            var edge_cases: [Case]
        }
        let vectors = try JSONDecoder().decode(Vectors.self, from: Data(contentsOf: CLI.realdata.appendingPathComponent("metric/metric_edge_cases.json")))
        let bothEmpty = try XCTUnwrap(vectors.edge_cases.first { $0.name == "both_empty" })
        let fpOnly = try XCTUnwrap(vectors.edge_cases.first { $0.name == "fp_only" })
        XCTAssertTrue(bothEmpty.gt.isEmpty && fpOnly.gt.isEmpty)
        XCTAssertNil(bothEmpty.expected)
        XCTAssertEqual(fpOnly.expected, 0)
        try Data("patientId,x,y,width,height,Target\nE,,,,,0\nF,,,,,0\n".utf8).write(to: dir.appendingPathComponent("labels.csv"))
        try Data("patientId,PredictionString\nE,\(bothEmpty.prediction_string)\nF,\n".utf8).write(to: dir.appendingPathComponent("empty.csv"))
        var r = try CLI.run(["score", "empty.csv", "--labels", "labels.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("metric undefined: none of the 2 images counts"), r.all)
        XCTAssertTrue(r.stdout.contains("left out of the mean"), r.all)
        XCTAssertTrue(r.stdout.contains("negatives predicted empty (correct): 2 of 2 (100.0%)"), r.all)
        XCTAssertFalse(r.stdout.contains("0.0000"), r.all)

        try Data("patientId,PredictionString\nE,\nF,\(fpOnly.prediction_string)\n".utf8).write(to: dir.appendingPathComponent("fp.csv"))
        r = try CLI.run(["score", "fp.csv", "--labels", "labels.csv", "--per-image", "per.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("metric 0.0000 over 1 image (1 without truth or predictions left out)"), r.all)
        XCTAssertTrue(r.stdout.contains("all 2 labelled images are negatives"), r.all)
        XCTAssertTrue(r.stdout.contains("negatives predicted empty (correct): 1 of 2 (50.0%)"), r.all)
        let perImage = try String(contentsOf: dir.appendingPathComponent("per.csv"), encoding: .utf8)
        XCTAssertEqual(perImage, "patientId,score\nE,\nF,0.000000\n")

        // a partial submission: the negatives left out are counted as empty, and said to be unsubmitted
        try Data("patientId,PredictionString\nE,\n".utf8).write(to: dir.appendingPathComponent("partial.csv"))
        r = try CLI.run(["score", "partial.csv", "--labels", "labels.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("negatives predicted empty (correct): 2 of 2 (100.0%), 1 of them not in the submission"), r.all)
        XCTAssertTrue(r.all.contains("1 labelled patient is not in the submission (scored as no boxes): F; --only-submitted"), r.all)
    }

    /// `convert -q` prints no progress, only its result line when every file converts; a file
    /// that fails is in that line and sets the exit status (ThirdTrialTests: -q keeps results).
    func testConvertQuietPrintsNoProgress() throws {
        let dir = try CLI.tempDir("convert-quiet")
        defer { try? FileManager.default.removeItem(at: dir) }
        let dcm = CLI.realdata.appendingPathComponent("rsna/stage_1_train_images/0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm")
        var r = try CLI.run(["convert", dcm.path, "-o", "one.png", "--size", "64", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertEqual(r.all, "1 converted, 0 skipped (output exists), 0 failed\nwrote \(dir.standardizedFileURL.path)/one.png\n", "convert -q printed more than its result")
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("one.png").path))
        r = try CLI.run(["convert", dcm.path, "-o", "two.png", "--size", "64"], in: dir)
        XCTAssertTrue(r.stdout.contains("1 converted"), r.all)

        let folder = dir.appendingPathComponent("in")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: dcm, to: folder.appendingPathComponent("good.dcm"))
        try Data("not a dicom".utf8).write(to: folder.appendingPathComponent("bad.dcm"))
        r = try CLI.run(["convert", "in", "-o", "out", "--size", "64", "-q"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertEqual(r.stderr, "", r.all)
        XCTAssertTrue(r.stdout.contains("bad.dcm") && r.stdout.contains("1 converted"), r.all)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("out/good.png").path))
    }

    /// New-user findings: `--resume` on a folder whose log records epochs but whose checkpoints
    /// are gone is refused and leaves the folder alone; `detect` on a folder stops at an
    /// unreadable file and says how to go on; `serve` on a port in use names the port.
    func testResumeWithoutCheckpointsDetectHintAndBusyPort() throws {
        let dir = try CLI.tempDir("newuser")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "-o", "data", "--count", "8", "--size", "64", "--seed", "3", "-q"], in: dir).status, 0)
        var r = try CLI.run(["train", "--data", "data", "--config", Self.tiny, "--epochs", "1", "--batch", "4", "-o", "run", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        try Data(contentsOf: dir.appendingPathComponent("run/best.opb")).write(to: dir.appendingPathComponent("model.opb"))
        try FileManager.default.removeItem(at: dir.appendingPathComponent("run/checkpoints"))
        let log = try Data(contentsOf: dir.appendingPathComponent("run/log.jsonl"))
        r = try CLI.run(["train", "-o", "run", "--resume"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stderr.contains("no checkpoint to continue from") && r.stderr.contains("records 1 epoch"), r.all)
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("run/log.jsonl")), log, "the log was changed")

        let folder = dir.appendingPathComponent("in")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try Data("not an image".utf8).write(to: folder.appendingPathComponent("a.dcm"))
        try FileManager.default.copyItem(
            at: dir.appendingPathComponent("data/stage_2_train_images").appendingPathComponent(
                try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("data/stage_2_train_images").path).sorted()[0]),
            to: folder.appendingPathComponent("b.png"))
        r = try CLI.run(["detect", "in", "--model", "model.opb", "-o", "det", "-q"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("a.dcm") && r.stderr.contains("--skip-unreadable"), r.all)

        // a port in use: hold one with a listening socket of our own
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        XCTAssertEqual(listen(fd, 1), 0)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        let port = Int(UInt16(bigEndian: addr.sin_port))
        r = try CLI.run(["serve", "--model", "model.opb", "--port", "\(port)"], in: dir, timeout: 120)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("127.0.0.1:\(port)") && r.stderr.contains("--port"), r.all)
        // one clear line: the address, that the port is in use, what to do; not the socket's own text
        let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") || $0.contains("bind(") || $0.contains("errno") }
        XCTAssertEqual(errors, ["Error: cannot listen on 127.0.0.1:\(port): port \(port) is in use by another program; choose another --port (--port 0 picks a free one)"], r.all)
    }
}
