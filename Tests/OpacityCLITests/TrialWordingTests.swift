import Foundation
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
    }
}
