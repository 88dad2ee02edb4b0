import Foundation

/// Greedy non-maximum suppression over scored boxes, class-agnostic.
///
/// Boxes are taken in descending score order (ties keep input order); a box is dropped
/// when its IoU with an already kept box exceeds `iouThreshold`.
/// - Returns: indices of the kept boxes, best first.
public func nonMaximumSuppression(_ boxes: [BoundingBox], scores: [Float], iouThreshold: Float) -> [Int] {
    precondition(boxes.count == scores.count, "nonMaximumSuppression: \(boxes.count) boxes but \(scores.count) scores")
    let order = scores.indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
    var kept: [Int] = []
    var suppressed = [Bool](repeating: false, count: boxes.count)
    for (rank, i) in order.enumerated() where !suppressed[i] {
        kept.append(i)
        let b = boxes[i]
        for j in order[(rank + 1)...] where !suppressed[j] {
            if b.iou(boxes[j]) > iouThreshold { suppressed[j] = true }
        }
    }
    return kept
}
