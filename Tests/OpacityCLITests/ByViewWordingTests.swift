import Foundation
import XCTest

/// What a new-user trial met: `eval` and `score --folds-file` said a view's metric was over
/// "1 counted images"; every other count of the command line is singular for one.
final class ByViewWordingTests: XCTestCase {
    func testOneCountedImageIsSingular() throws {
        let dir = try CLI.tempDir("by-view-wording")
        defer { try? FileManager.default.removeItem(at: dir) }
        let labels = "patientId,x,y,width,height,Target\nA,10,10,50,50,1\nB,20,20,40,40,1\nC,30,30,40,40,1\n"
        let folds = "patientId,class,fold,view\nA,Lung Opacity,0,AP\nB,Lung Opacity,0,PA\nC,Lung Opacity,1,PA\n"
        let submission = "patientId,PredictionString\nA,0.9 10 10 50 50\nB,0.8 20 20 40 40\nC,0.7 30 30 40 40\n"
        try Data(labels.utf8).write(to: dir.appendingPathComponent("labels.csv"))
        try Data(folds.utf8).write(to: dir.appendingPathComponent("folds.csv"))
        try Data(submission.utf8).write(to: dir.appendingPathComponent("sub.csv"))
        let r = try CLI.run(["score", "sub.csv", "--labels", "labels.csv", "--folds-file", "folds.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("AP: 1 image, 1 with opacity; metric 1.0000 over 1 counted image\n"), r.stdout)
        XCTAssertTrue(r.stdout.contains("PA: 2 images, 2 with opacity; metric 1.0000 over 2 counted images\n"), r.stdout)
    }
}
