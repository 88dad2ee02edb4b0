import Foundation
import Opacity
import XCTest

/// What the session-24 new-user trial reported and left: `score` names the patients its notes
/// are about, and an ensemble of models of two input sizes names the two `--model`s.
final class SessionTwentyFourTests: XCTestCase {
    /// `score` named no patient in "1 submitted patient is not in the labels (ignored)"; now it
    /// names up to three, and gives three as examples when there are more.
    func testScoreNamesThePatientsOfItsNotes() throws {
        let dir = try CLI.tempDir("score-named")
        defer { try? FileManager.default.removeItem(at: dir) }
        let labels = "patientId,x,y,width,height,Target\na,100,200,50,60,1\nb,,,,,0\nc,,,,,0\n"
        try Data(labels.utf8).write(to: dir.appendingPathComponent("labels.csv"))
        let sub = "patientId,PredictionString\na,0.9 100 200 50 60\nzz1,\nzz2,\nzz3,\nzz4,\n"
        try Data(sub.utf8).write(to: dir.appendingPathComponent("sub.csv"))
        var r = try CLI.run(["score", "sub.csv", "--labels", "labels.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("2 labelled patients are not in the submission (scored as no boxes): b, c; --only-submitted"), r.all)
        XCTAssertTrue(r.stderr.contains("4 submitted patients are not in the labels (ignored), e.g. zz1, zz2, zz3"), r.all)
        try Data("patientId,PredictionString\na,0.9 100 200 50 60\nb,\nc,\nzz9,\n".utf8).write(to: dir.appendingPathComponent("one.csv"))
        r = try CLI.run(["score", "one.csv", "--labels", "labels.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("1 submitted patient is not in the labels (ignored): zz9"), r.all)
    }

    /// Models of two input sizes cannot be ensembled; the error names each `--model` with its
    /// config (it gave the two configs only).
    func testAnEnsembleOfTwoSizesNamesTheModels() throws {
        let dir = try CLI.tempDir("ensemble-sizes")
        defer { try? FileManager.default.removeItem(at: dir) }
        let small = CLIRobustnessTests.tiny
        let large = small.replacingOccurrences(of: "size=64", with: "size=128")
        XCTAssertNotEqual(small, large)
        try Initializer.withSeed(1) { try Registry.standard().makeDetector(small) }.save(to: dir.appendingPathComponent("m64.opb"))
        try Initializer.withSeed(1) { try Registry.standard().makeDetector(large) }.save(to: dir.appendingPathComponent("m128.opb"))
        try PNG.write(GrayImage(width: 64, height: 64, value: 90), to: dir.appendingPathComponent("x.png"))
        let r = try CLI.run(["detect", "x.png", "--model", "m64.opb", "--model", "m128.opb", "-o", "out"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stderr.contains("an ensemble needs one input size and anchor layout: --model m64.opb is "), r.all)
        XCTAssertTrue(r.stderr.contains(", --model m128.opb is "), r.all)
        XCTAssertTrue(r.stderr.contains("size=128"), r.all)
    }
}
