import Foundation
import OpacityCore
import XCTest

final class AnchorTests: XCTestCase {
    func testAnchorCounts() {
        XCTAssertEqual(AnchorGenerator(levels: 2...7).anchors(height: 512, width: 512).count, 196_560)
        XCTAssertEqual(AnchorGenerator(levels: 3...7).anchors(height: 512, width: 512).count, 49_104)
        XCTAssertEqual(AnchorGenerator(levels: 2...7).anchors(height: 512, width: 512).levelCounts,
                       [128 * 128 * 9, 64 * 64 * 9, 32 * 32 * 9, 16 * 16 * 9, 8 * 8 * 9, 4 * 4 * 9])
    }

    func testFirstAnchorsOfEachLevel() {
        let gen = AnchorGenerator(levels: 2...7)
        let set = gen.anchors(height: 512, width: 512)
        var offset = 0
        for (i, level) in (2...7).enumerated() {
            let stride = Float(1 << level), base = Float(1 << (level + 2))
            let c = stride / 2
            // anchor 0: ratio 0.5 (h/w), scale 1: w = base / sqrt(0.5), h = w * 0.5
            let w0 = base / Float(0.5).squareRoot(), h0 = w0 * 0.5
            let a0 = set.box(offset)
            XCTAssertEqual(a0.x, c - w0 / 2, accuracy: 1e-3); XCTAssertEqual(a0.y, c - h0 / 2, accuracy: 1e-3)
            XCTAssertEqual(a0.width, w0, accuracy: 1e-3); XCTAssertEqual(a0.height, h0, accuracy: 1e-3)
            // anchor 4: ratio 1, scale 2^(1/3)
            let a4 = set.box(offset + 4)
            XCTAssertEqual(a4.width, base * Float(pow(2.0, 1.0 / 3.0)), accuracy: 1e-3)
            XCTAssertEqual(a4.height, a4.width, accuracy: 1e-3)
            // anchor 9 is the next location to the right
            XCTAssertEqual(set.box(offset + 9).centerX - a0.centerX, stride, accuracy: 1e-4)
            offset += set.levelCounts[i]
        }
    }

    func testEncodeDecodeRoundTrip() {
        let coder = BoxCoder()
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let a = (Float.random(in: 0...400, using: &rng), Float.random(in: 0...400, using: &rng), Float(0), Float(0))
            let anchor = (a.0, a.1, a.0 + Float.random(in: 8...300, using: &rng), a.1 + Float.random(in: 8...300, using: &rng))
            let box = BoundingBox(x: Float.random(in: 0...400, using: &rng), y: Float.random(in: 0...400, using: &rng),
                                  width: Float.random(in: 2...400, using: &rng), height: Float.random(in: 2...400, using: &rng))
            let back = coder.decode(coder.encode(box, anchor: anchor), anchor: anchor)
            XCTAssertEqual(back.x, box.x, accuracy: 1e-2); XCTAssertEqual(back.y, box.y, accuracy: 1e-2)
            XCTAssertEqual(back.width, box.width, accuracy: 1e-2); XCTAssertEqual(back.height, box.height, accuracy: 1e-2)
        }
        // std (0.1, 0.1, 0.2, 0.2): a box shifted by one anchor width has dx = 10
        let d = coder.encode(BoundingBox(x: 10, y: 0, width: 10, height: 10), anchor: (0, 0, 10, 10))
        XCTAssertEqual(d.0, 10, accuracy: 1e-5); XCTAssertEqual(d.1, 0); XCTAssertEqual(d.2, 0, accuracy: 1e-6)
    }

    func testMatcherThresholds() {
        let set = AnchorSet(corners: [0, 0, 10, 10, 0, 0, 10, 20, 50, 50, 60, 60], levelCounts: [3], height: 64, width: 64)
        let (labels, assigned) = AnchorMatcher().match(set, boxes: [BoundingBox(x: 0, y: 0, width: 10, height: 14)])
        // IoU 100/140 = 0.71 -> positive; 140/200 = 0.7 -> positive; 0 -> negative
        XCTAssertEqual(labels, [1, 1, 0])
        XCTAssertEqual(assigned, [0, 0, 0])
        let mid = AnchorMatcher().match(set, boxes: [BoundingBox(x: 0, y: 0, width: 10, height: 22.5)])
        // IoU(anchor0) = 100/225 = 0.444 -> ignored
        XCTAssertEqual(mid.labels[0], -1)
        let empty = AnchorMatcher().match(set, boxes: [])
        XCTAssertEqual(empty.labels, [0, 0, 0])
    }
}

final class NMSTests: XCTestCase {
    /// The reference: repeatedly take the best remaining box, drop all that overlap it.
    func bruteForce(_ boxes: [BoundingBox], _ scores: [Float], _ t: Float) -> [Int] {
        var remaining = Array(boxes.indices)
        var kept: [Int] = []
        while !remaining.isEmpty {
            let best = remaining.max { scores[$0] < scores[$1] || (scores[$0] == scores[$1] && $0 > $1) }!
            kept.append(best)
            remaining = remaining.filter { $0 != best && boxes[best].iou(boxes[$0]) <= t }
        }
        return kept
    }

    func testMatchesBruteForce() {
        var rng = SystemRandomNumberGenerator()
        for trial in 0..<50 {
            let n = Int.random(in: 0...60, using: &rng)
            let boxes = (0..<n).map { _ in
                BoundingBox(x: Float.random(in: 0...200, using: &rng), y: Float.random(in: 0...200, using: &rng),
                            width: Float.random(in: 5...80, using: &rng), height: Float.random(in: 5...80, using: &rng))
            }
            let scores = (0..<n).map { _ in Float(Int.random(in: 0...20, using: &rng)) / 20 }  // with ties
            for t: Float in [0.05, 0.3, 0.5] {
                XCTAssertEqual(nonMaximumSuppression(boxes, scores: scores, iouThreshold: t), bruteForce(boxes, scores, t), "trial \(trial) t \(t)")
            }
        }
    }
}
