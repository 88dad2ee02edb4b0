import Foundation
import Opacity
import XCTest

final class EnsembleTests: XCTestCase {
    func testNumpyLinearPercentiles() {
        var v: [Float] = [3, 1, 4, 1, 5]
        // numpy.percentile([3,1,4,1,5], 20) = 1.0, 80 -> 4.2, 50 -> 3
        XCTAssertEqual(EnsembleCombiner.percentile(&v, 20), 1.0, accuracy: 1e-6)
        XCTAssertEqual(EnsembleCombiner.percentile(&v, 80), 4.2, accuracy: 1e-6)
        XCTAssertEqual(EnsembleCombiner.percentile(&v, 50), 3.0, accuracy: 1e-6)
        var two: [Float] = [0, 10]
        XCTAssertEqual(EnsembleCombiner.percentile(&two, 20), 2, accuracy: 1e-6)
    }

    func output(_ logit: Float, _ d: [Float], _ g: [Float]) -> HeadOutput {
        HeadOutput(classLogits: Tensor(shape: [1, 1, 1], scalars: [logit]), boxDeltas: Tensor(shape: [1, 1, 4], scalars: d),
                   globalLogProbs: Tensor(shape: [1, 3], scalars: g.map { log($0) }))
    }

    func testPaperRuleMeansScoresAndCentresShrinksSizes() {
        let outs = [output(0, [1, 2, 0.0, 1.0], [0.2, 0.3, 0.5]), output(log(3), [3, 4, 1.0, 2.0], [0.4, 0.3, 0.3])]
        let c = EnsembleCombiner.combine(outs, method: .percentile(scale: 1.6))
        // mean probability of 0.5 and 0.75 is 0.625
        XCTAssertEqual(1 / (1 + exp(-c.classLogits.scalar)), 0.625, accuracy: 1e-5)
        let d = c.boxDeltas.scalars
        XCTAssertEqual(d[0], 2, accuracy: 1e-6); XCTAssertEqual(d[1], 3, accuracy: 1e-6)
        // sizes: p20 = a + 0.2 (b - a), p80 = a + 0.8 (b - a); p20 - 1.6 (p80 - p20)
        XCTAssertEqual(d[2], 0.2 - 1.6 * 0.6, accuracy: 1e-5)
        XCTAssertEqual(d[3], 1.2 - 1.6 * 0.6, accuracy: 1e-5)
        assertClose(c.globalLogProbs!.scalars.map { exp($0) }, [0.3, 0.3, 0.4], accuracy: 1e-6)
    }

    func testMeanShrinkAveragesEverything() {
        let outs = [output(0, [1, 2, 0.0, 1.0], [0.2, 0.3, 0.5]), output(0, [3, 4, 1.0, 2.0], [0.4, 0.3, 0.3])]
        let c = EnsembleCombiner.combine(outs, method: .meanShrink(0.875))
        XCTAssertEqual(c.boxDeltas.scalars, [2, 3, 0.5, 1.5])
    }
}

extension XCTestCase {
    func assertClose(_ a: [Float], _ b: [Float], accuracy: Float, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, file: file, line: line)
        for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: accuracy, file: file, line: line) }
    }
}

final class SubmissionTests: XCTestCase {
    func testRoundTripAndFormat() throws {
        let s = Submission(rows: [("a", [Detection(box: BoundingBox(x: 10, y: 20.25, width: 30, height: 40), score: 0.91234)]), ("b", [])])
        XCTAssertEqual(s.csv, "patientId,PredictionString\na,0.912 10.0 20.2 30.0 40.0\nb,\n")
        let back = try Submission(csv: s.csv)
        XCTAssertEqual(back.rows.count, 2)
        XCTAssertEqual(back.rows[0].detections[0].box.width, 30)
        XCTAssertEqual(back.rows[1].detections, [])
    }

    func testErrorsNameLineAndField() {
        XCTAssertThrowsError(try Submission(csv: "id,pred\n", file: "s.csv")) { XCTAssertTrue("\($0)".contains("s.csv:1"), "\($0)") }
        XCTAssertThrowsError(try Submission(csv: "patientId,PredictionString\na,0.5 1 2 3\n", file: "s.csv")) {
            XCTAssertTrue("\($0)".contains("s.csv:2") && "\($0)".contains("groups of 5"), "\($0)")
        }
        XCTAssertThrowsError(try Submission(csv: "patientId,PredictionString\na,0.5 1 2 x 4\n", file: "s.csv")) {
            XCTAssertTrue("\($0)".contains("field w"), "\($0)")
        }
        XCTAssertThrowsError(try Submission(csv: "patientId,PredictionString\na,\na,\n", file: "s.csv")) {
            XCTAssertTrue("\($0)".contains("twice"), "\($0)")
        }
    }

    func testScoreAgainstTruth() throws {
        let b = BoundingBox(x: 0, y: 0, width: 100, height: 100)
        let s = try Submission(csv: "patientId,PredictionString\np1,0.9 0 0 100 100\np2,\np3,0.5 0 0 10 10\nzz,\n")
        let score = SubmissionScore(submission: s, truth: ["p1": [b], "p2": [], "p3": [], "p4": [b]])
        // p1 = 1, p2 excluded, p3 = 0 (false positive), p4 = 0 (missing)
        XCTAssertEqual(score.score, 1.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(score.missing, ["p4"])
        XCTAssertEqual(score.unknown, ["zz"])
    }
}
