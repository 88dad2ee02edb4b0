import Foundation
import Opacity
import XCTest

/// Weighted Boxes Fusion and COCO AP/AR against the reference implementations' outputs
/// (ensemble-boxes and pycocotools, written by scripts/oracles/evaluation-fixtures.sh).
final class OracleTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    func json(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent(name))
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func testWeightedBoxesFusionMatchesEnsembleBoxes() throws {
        let cases = try XCTUnwrap(try json("wbf.json")["cases"] as? [[String: Any]])
        XCTAssertEqual(cases.count, 8)
        var rules = Set<String>()
        for (k, c) in cases.enumerated() {
            let s = try XCTUnwrap(c["settings"] as? [String: Any])
            let rule = try XCTUnwrap(WeightedBoxesFusion.ConfidenceRule(rawValue: try XCTUnwrap(s["conf_type"] as? String)))
            rules.insert(rule.rawValue)
            let wbf = WeightedBoxesFusion(iouThreshold: try XCTUnwrap(s["iou_thr"] as? Double),
                                          skipBoxThreshold: try XCTUnwrap(s["skip_box_thr"] as? Double),
                                          confidence: rule, allowsOverflow: (s["allows_overflow"] as? Bool) ?? false)
            let weights = (s["weights"] as? [NSNumber])?.map(\.doubleValue)
            let boxes = try XCTUnwrap(c["boxes"] as? [[[Double]]]), scores = try XCTUnwrap(c["scores"] as? [[Double]])
            let labels = try XCTUnwrap(c["labels"] as? [[Int]])
            let models = zip(zip(boxes, scores), labels).map { bs, ls in
                zip(zip(bs.0, bs.1), ls).map { b, l in
                    WeightedBoxesFusion.Box(x1: b.0[0], y1: b.0[1], x2: b.0[2], y2: b.0[3], score: b.1, label: l)
                }
            }
            let fused = try wbf.fuse(models, weights: weights)
            let e = try XCTUnwrap(c["expected"] as? [String: Any])
            let eb = try XCTUnwrap(e["boxes"] as? [[Double]]), es = try XCTUnwrap(e["scores"] as? [Double])
            let el = try XCTUnwrap(e["labels"] as? [Int])
            XCTAssertEqual(fused.count, es.count, "case \(k): box count")
            for (i, f) in fused.enumerated() where i < es.count {
                XCTAssertEqual(f.score, es[i], accuracy: 1e-5, "case \(k) box \(i) score")
                XCTAssertEqual(f.label, el[i], "case \(k) box \(i) label")
                for (a, b) in zip([f.x1, f.y1, f.x2, f.y2], eb[i]) { XCTAssertEqual(a, b, accuracy: 1e-5, "case \(k) box \(i) corners") }
            }
        }
        XCTAssertEqual(rules, Set(WeightedBoxesFusion.ConfidenceRule.allCases.map(\.rawValue)), "every confidence rule is covered")
    }

    func testWeightedBoxesFusionRejectsBadWeights() {
        let one = [[WeightedBoxesFusion.Box(x1: 0.1, y1: 0.1, x2: 0.2, y2: 0.2, score: 0.5)]]
        XCTAssertThrowsError(try WeightedBoxesFusion().fuse(one, weights: [1, 2]))
        XCTAssertThrowsError(try WeightedBoxesFusion().fuse(one, weights: [0]))
        XCTAssertThrowsError(try WeightedBoxesFusion().fuse([[Detection]](), width: 0, height: 10))
    }

    func testWeightedBoxesFusionInPixels() throws {
        // two views of one box: averaged by score; avg rule with 2 of 2 models keeps the mean score
        let a = Detection(box: BoundingBox(x: 100, y: 100, width: 200, height: 100), score: 0.8)
        let b = Detection(box: BoundingBox(x: 120, y: 100, width: 200, height: 100), score: 0.4)
        let f = try WeightedBoxesFusion().fuse([[a], [b]], width: 1024, height: 1024)
        XCTAssertEqual(f.count, 1)
        XCTAssertEqual(f[0].score, 0.6, accuracy: 1e-6)
        XCTAssertEqual(f[0].box.x, (100 * 0.8 + 120 * 0.4) / 1.2, accuracy: 1e-3)
        XCTAssertEqual(f[0].box.width, 200, accuracy: 1e-3)
        // one model alone: its score halves under avg (1 of 2 models)
        let g = try WeightedBoxesFusion().fuse([[a], []], width: 1024, height: 1024)
        XCTAssertEqual(g[0].score, 0.4, accuracy: 1e-6)
    }

    func testCocoAPMatchesPycocotools() throws {
        let cases = try XCTUnwrap(try json("coco.json")["cases"] as? [[String: Any]])
        XCTAssertEqual(cases.count, 4)
        for (k, c) in cases.enumerated() {
            let ids = try XCTUnwrap(c["images"] as? [Int])
            var truth = [Int: [BoundingBox]](), dets = [Int: [Detection]]()
            for t in try XCTUnwrap(c["truth"] as? [[String: Any]]) {
                let b = try XCTUnwrap(t["bbox"] as? [Double])
                truth[try XCTUnwrap(t["image_id"] as? Int), default: []].append(BoundingBox(x: Float(b[0]), y: Float(b[1]), width: Float(b[2]), height: Float(b[3])))
            }
            for d in try XCTUnwrap(c["detections"] as? [[String: Any]]) {
                let b = try XCTUnwrap(d["bbox"] as? [Double])
                dets[try XCTUnwrap(d["image_id"] as? Int), default: []].append(
                    Detection(box: BoundingBox(x: Float(b[0]), y: Float(b[1]), width: Float(b[2]), height: Float(b[3])),
                              score: Float(try XCTUnwrap(d["score"] as? Double))))
            }
            let ev = CocoEvaluation(truth: ids.map { truth[$0] ?? [] }, detections: ids.map { dets[$0] ?? [] })
            let e = try XCTUnwrap(c["expected"] as? [String: Double])
            XCTAssertEqual(try XCTUnwrap(ev.ap), e["ap"]!, accuracy: 1e-4, "case \(k) AP")
            XCTAssertEqual(try XCTUnwrap(ev.ap50), e["ap50"]!, accuracy: 1e-4, "case \(k) AP50")
            XCTAssertEqual(try XCTUnwrap(ev.ap75), e["ap75"]!, accuracy: 1e-4, "case \(k) AP75")
            XCTAssertEqual(try XCTUnwrap(ev.ar100), e["ar100"]!, accuracy: 1e-4, "case \(k) AR@100")
        }
    }

    func testFROCCountsFalsePositivesPerImage() throws {
        // 2 images, 2 truth boxes; detections: hit (0.9), miss (0.8), hit (0.7), miss (0.6)
        let t = [[BoundingBox(x: 0, y: 0, width: 10, height: 10)], [BoundingBox(x: 50, y: 50, width: 10, height: 10)]]
        let d = [[Detection(box: BoundingBox(x: 0, y: 0, width: 10, height: 10), score: 0.9),
                  Detection(box: BoundingBox(x: 30, y: 30, width: 10, height: 10), score: 0.8)],
                 [Detection(box: BoundingBox(x: 51, y: 50, width: 10, height: 10), score: 0.7),
                  Detection(box: BoundingBox(x: 0, y: 80, width: 10, height: 10), score: 0.6)]]
        let froc = try XCTUnwrap(FROCCurve(CocoEvaluation(truth: t, detections: d), images: 4))
        XCTAssertEqual(froc.points.map(\.fpPerImage), [0, 0.25, 0.25, 0.5])
        XCTAssertEqual(froc.points.map(\.sensitivity), [0.5, 0.5, 1, 1])
        XCTAssertEqual(froc.sensitivities, [0.5, 1, 1, 1, 1, 1, 1])
        XCTAssertNil(FROCCurve(CocoEvaluation(truth: [[]], detections: [[]]), images: 1))
    }
}
