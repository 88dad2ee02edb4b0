import Foundation
import XCTest

/// CSV inputs from a pipe through the real `opacity` command (`cat labels.csv | opacity score
/// sub.csv --labels /dev/stdin`), inputs that are read twice refusing one by saying so, and
/// `compare` refusing an over-long `log.jsonl` line with its file and line.
final class StreamInputCLITests: XCTestCase {
    static let labels = """
        patientId,x,y,width,height,Target
        a,100.0,200.0,50.0,60.0,1
        b,,,,,0
        c,300.0,300.0,100.0,100.0,1
        c,500.0,300.0,100.0,100.0,1

        """
    static let submission = """
        patientId,PredictionString
        a,0.9 100.0 200.0 50.0 60.0
        b,
        c,0.8 300.0 300.0 100.0 100.0

        """

    /// The labels or the submission from standard input score as the same files do.
    func testScoreReadsLabelsAndSubmissionFromStandardInput() throws {
        let dir = try CLI.tempDir("stdin-score")
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(Self.labels.utf8).write(to: dir.appendingPathComponent("labels.csv"))
        try Data(Self.submission.utf8).write(to: dir.appendingPathComponent("sub.csv"))
        let files = try CLI.run(["score", "sub.csv", "--labels", "labels.csv"], in: dir)
        XCTAssertEqual(files.status, 0, files.all)
        XCTAssertTrue(files.stdout.contains("metric "), files.all)
        let labels = try CLI.run(["score", "sub.csv", "--labels", "/dev/stdin"], in: dir, stdin: Data(Self.labels.utf8))
        XCTAssertEqual(labels.status, 0, labels.all)
        XCTAssertEqual(labels.stdout, files.stdout)
        let submission = try CLI.run(["score", "/dev/stdin", "--labels", "labels.csv"], in: dir, stdin: Data(Self.submission.utf8))
        XCTAssertEqual(submission.status, 0, submission.all)
        XCTAssertEqual(submission.stdout, files.stdout)
    }

    /// A folder or `/dev/null` as the labels: an error that says what it is, not "permission".
    func testFolderAndDevNullAsLabelsSayWhatTheyAre() throws {
        let dir = try CLI.tempDir("stdin-errors")
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(Self.submission.utf8).write(to: dir.appendingPathComponent("sub.csv"))
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("folder"), withIntermediateDirectories: true)
        let cases: [([String], String)] = [
            (["score", "sub.csv", "--labels", "folder"], "--labels folder is a folder; expected a CSV file of boxes"),
            (["score", "sub.csv", "--labels", "/dev/null"], "'/dev/null' line 1: empty file; expected the header 'patientId,"),
            (["score", "folder", "--labels", "/dev/null"], "it is a folder; expected a submission CSV"),
        ]
        for (args, expected) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.stderr.contains(expected), "\(args): expected '\(expected)' in:\n\(r.all)")
            XCTAssertFalse(r.all.lowercased().contains("permission"), "\(args):\n\(r.all)")
        }
    }

    /// `train` reads its labels again on --resume and its folds file twice: a pipe is refused,
    /// saying it is one and that the input is read twice, before anything is loaded.
    func testTrainRefusesAPipeForInputsItReadsTwice() throws {
        let dir = try CLI.tempDir("stdin-train")
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [([String], String)] = [
            (["train", "--labels", "/dev/stdin", "--images", "pngs"], "--labels /dev/stdin is a pipe; this input is read twice"),
            (["train", "--data", "rsna", "--folds-file", "/dev/stdin"], "--folds-file /dev/stdin is a pipe; this input is read twice"),
        ]
        for (args, expected) in cases {
            let r = try CLI.run(args, in: dir, stdin: Data(Self.labels.utf8))
            XCTAssertEqual(r.status, 64, "\(args):\n\(r.all)")
            XCTAssertTrue(r.stderr.contains(expected) && r.stderr.contains("give a regular file"), "\(args): expected '\(expected)' in:\n\(r.all)")
        }
        // a folder: a usage error too, which does not offer a pipe
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("folder"), withIntermediateDirectories: true)
        let r = try CLI.run(["train", "--labels", "folder", "--images", "pngs"], in: dir)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains("--labels folder is a folder; expected a CSV file (a regular file)"), r.all)
    }

    /// `compare` of a run whose `log.jsonl` has a 100 MB line (sparse) names the file and line;
    /// the same run with a normal log compares.
    func testCompareRefusesAnOverLongLogLineWithItsLine() throws {
        let dir = try CLI.tempDir("compare-long")
        defer { try? FileManager.default.removeItem(at: dir) }
        let run = dir.appendingPathComponent("run")
        try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
        let record = """
            {"best":true,"checkpoint":"checkpoints/epoch-1.opb","epoch":1,"images_per_second":10,"lr":0.001,\
            "metric":{"best":0.2,"sweep":[[0.5,0.2]],"threshold":0.5},"seconds":1,"time":"2026-01-01T00:00:00Z",\
            "train":{"focal":1,"regression":1,"total":2},"train_images":10,"val":{"focal":1,"regression":1,"total":1.5},"val_images":5}

            """
        let log = run.appendingPathComponent("log.jsonl")
        try Data(record.utf8).write(to: log)
        let ok = try CLI.run(["compare", "run", "-o", "cmp"], in: dir)
        XCTAssertEqual(ok.status, 0, ok.all)
        let h = try FileHandle(forWritingTo: log)
        try h.truncate(atOffset: 100_000_000)
        try h.close()
        let r = try CLI.run(["compare", "run", "-o", "cmp2"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("log.jsonl' line 2: malformed record: a line of more than 1 MiB"), r.all)
        XCTAssertLessThan(r.all.utf8.count, 1000, r.all)
    }
}
