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

    /// Bad rows read as every CSV error does (DataError's format): `'file' line N, column
    /// 'name': what is wrong; expected what` (new-user trial: two formats existed).
    func testErrorsNameLineAndField() throws {
        func message(_ text: String) -> String {
            do { _ = try Submission(csv: text, file: "s.csv") } catch { return "\(error)" }
            return "no error"
        }
        XCTAssertEqual(message("id,pred\n"), "'s.csv' line 1: header is 'id,pred'; expected 'patientId,PredictionString'")
        XCTAssertEqual(message("patientId,PredictionString\na,0.5 1 2 3\n"),
                       "'s.csv' line 2, column 'PredictionString': 4 numbers; expected groups of 5 (conf x y w h)")
        XCTAssertEqual(message("patientId,PredictionString\na,0.5 1 2 x 4\n"),
                       "'s.csv' line 2, column 'PredictionString': 'x' is not a number (group 1, field w)")
        XCTAssertEqual(message("patientId,PredictionString\na,\na,\n"), "'s.csv' line 3, column 'patientId': 'a' appears twice")
        // an impossible box (trial: `0.5 10 10 -5 20` scored silently); a zero width still reads
        XCTAssertEqual(message("patientId,PredictionString\na,0.9 1 2 3 4 0.5 10 10 -5 20\n"),
                       "'s.csv' line 2, column 'PredictionString': w is -5 in group 2; expected a width of 0 or more pixels (nearest valid: 0)")
        XCTAssertEqual(message("patientId,PredictionString\na,0.5 10 10 4 -1.5\n"),
                       "'s.csv' line 2, column 'PredictionString': h is -1.5 in group 1; expected a height of 0 or more pixels (nearest valid: 0)")
        XCTAssertEqual(message("patientId,PredictionString\na,0.5 10 10 0.0 4\n"), "no error")
        XCTAssertEqual(message("patientId,PredictionString\n ,\n"), "'s.csv' line 2, column 'patientId': empty; expected a patient id")
        XCTAssertEqual(message("patientId,PredictionString\na,1,2\n"), "'s.csv' line 2: expected 2 fields (patientId,PredictionString)")
        // the same location format as the labels reader's
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("csv-errors-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let write = { (text: String, name: String) throws -> URL in
            let url = dir.appendingPathComponent(name)
            try Data(text.utf8).write(to: url)
            return url
        }
        let labels = try write("patientId,x,y,width,height,Target\np1,1,2,3,4,7\n", "labels.csv")
        XCTAssertThrowsError(try RSNALabels.load(labels: labels, classInfo: nil)) { e in
            XCTAssertTrue("\(e)".hasPrefix("'\(labels.path)' line 2, column 'Target': "), "\(e)")
        }
        // a whole row has no column to name
        let short = try write("patientId,x,y,width,height,Target\np1,1,2\n", "short.csv")
        XCTAssertThrowsError(try RSNALabels.load(labels: short, classInfo: nil)) { e in
            XCTAssertTrue("\(e)".hasPrefix("'\(short.path)' line 2: 'p1,1,2' is not valid; expected 6 fields"), "\(e)")
        }
        // and compare's curves.csv reader
        let curves = try write("run,group,epoch,val_total\nr,g,1,0.5\nr,g,2,abc\n", "curves.csv")
        XCTAssertThrowsError(try RunComparison.chart(curvesCSV: curves, quantity: "val_total")) { e in
            XCTAssertEqual("\(e)", "'\(curves.path)' line 3, column 'val_total': 'abc' is not valid; expected a number")
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
