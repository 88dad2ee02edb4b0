import Foundation
import OpacityCore
import XCTest

/// The repository root, found from this file's path.
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let realdata = repoRoot.deletingLastPathComponent().appendingPathComponent("shared/realdata")

final class MetricTests: XCTestCase {
    struct Vectors: Decodable {
        struct Case: Decodable {
            let name: String
            let gt: [[Double]]
            let pred: [[Double]]
            let expected: Double?
        }
        let edge_cases: [Case]
    }

    func testAgreesWithReferenceVectors() throws {
        let url = realdata.appendingPathComponent("metric/metric_edge_cases.json")
        let v = try JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
        XCTAssertEqual(v.edge_cases.count, 19)
        for c in v.edge_cases {
            let truth = c.gt.map { BoundingBox(x: Float($0[0]), y: Float($0[1]), width: Float($0[2]), height: Float($0[3])) }
            let preds = c.pred.map { Detection(box: BoundingBox(x: Float($0[1]), y: Float($0[2]), width: Float($0[3]), height: Float($0[4])), score: Float($0[0])) }
            let got = RSNAMetric.imageScore(truth: truth, predictions: preds)
            if let e = c.expected {
                XCTAssertNotNil(got, c.name)
                XCTAssertEqual(got ?? -1, e, accuracy: 1e-9, c.name)
            } else {
                XCTAssertNil(got, c.name)
            }
        }
    }

    func testDatasetMeanSkipsExcludedImages() {
        let b = BoundingBox(x: 0, y: 0, width: 10, height: 10)
        let s = RSNAMetric.score([([b], [Detection(box: b, score: 1)]), ([], []), ([b], [])])
        XCTAssertEqual(s ?? -1, 0.5, accuracy: 1e-12)
        XCTAssertNil(RSNAMetric.score([([], [])]))
    }

    func testThresholdSweepPicksBest() {
        let b = BoundingBox(x: 0, y: 0, width: 10, height: 10)
        let far = BoundingBox(x: 50, y: 50, width: 10, height: 10)
        // a true box at 0.9 and a false one at 0.3: thresholds above 0.3 are perfect
        let sweep = ThresholdSweep(truth: [[b]], detections: [[Detection(box: b, score: 0.9), Detection(box: far, score: 0.5)]],
                                   thresholds: [0.1, 0.6], relativeToMax: 0)
        XCTAssertEqual(sweep.scores, [0.5, 1.0])
        XCTAssertEqual(sweep.bestThreshold, 0.6)
    }
}

/// Case `metric-tie-order`: the public reference metrics sort with `np.argsort(scores)[::-1]`,
/// so among equal confidences the prediction listed later is matched first. Their value on
/// these boxes is 1.0 with the tie and 0.8333 without it (the case's README).
final class MetricTieOrderTests: XCTestCase {
    let truth = [BoundingBox(x: 0, y: 0, width: 100, height: 100), BoundingBox(x: 40, y: 0, width: 100, height: 100)]

    func testTiedScoresPutTheLaterPredictionFirst() {
        let tie = [Detection(box: BoundingBox(x: 30, y: 0, width: 100, height: 100), score: 0.5),
                   Detection(box: BoundingBox(x: 0, y: 0, width: 100, height: 100), score: 0.5)]
        XCTAssertEqual(RSNAMetric.imageScore(truth: truth, predictions: tie) ?? -1, 1.0, accuracy: 1e-12)
    }

    func testUntiedScoresKeepTheirOrder() {
        let notie = [Detection(box: BoundingBox(x: 30, y: 0, width: 100, height: 100), score: 0.501),
                     Detection(box: BoundingBox(x: 0, y: 0, width: 100, height: 100), score: 0.5)]
        XCTAssertEqual(RSNAMetric.imageScore(truth: truth, predictions: notie) ?? -1, 5.0 / 6.0, accuracy: 1e-12)
    }
}
