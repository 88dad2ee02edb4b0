import Foundation
import OpacityCore

/// COCO-style box AP and AR for one class (the opacity), as `pycocotools`' `COCOeval`
/// computes them with `iouType="bbox"`, area range "all" and at most 100 detections per
/// image; tested against it (Tests/OpacityTrainingTests/Fixtures/coco.json).
///
/// Per image and IoU threshold `t` in 0.50, 0.55, ..., 0.95: detections (best 100 by score)
/// are taken by descending score, each matched to the unmatched ground-truth box of highest
/// IoU at or above `t`. Over all images, detections are sorted by score (stable: image order,
/// then rank); precision is made monotone from the right and read at the 101 recall points
/// 0, 0.01, ..., 1 (the first detection reaching each recall; 0 beyond the last). AP is the
/// mean of those, AR@100 the final recall, each averaged over the IoU thresholds.
public struct CocoEvaluation: Sendable {
    /// The ten IoU thresholds 0.50 ... 0.95, computed as numpy's `linspace`.
    public static let iouThresholds: [Double] = (0..<10).map { (i: Int) -> Double in
        let step: Double = (0.95 - 0.5) / 9
        return i == 9 ? 0.95 : 0.5 + Double(i) * step
    }
    /// The 101 recall points 0, 0.01, ..., 1.
    public static let recallThresholds: [Double] = (0...100).map { (i: Int) -> Double in i == 100 ? 1 : Double(i) * 0.01 }

    /// AP averaged over IoU 0.50:0.95 (`stats[0]`); `nil` without ground-truth boxes.
    public var ap: Double?
    /// AP at IoU 0.50 (`stats[1]`).
    public var ap50: Double?
    /// AP at IoU 0.75 (`stats[2]`).
    public var ap75: Double?
    /// Recall with at most 100 detections per image, averaged over IoU 0.50:0.95 (`stats[8]`).
    public var ar100: Double?
    /// Per IoU threshold (same order as ``iouThresholds``): interpolated precision at the
    /// 101 ``recallThresholds``; empty without ground truth.
    public var precision: [[Double]]
    /// Ground-truth boxes counted.
    public var truthCount: Int
    /// Detections counted (after the per-image limit).
    public var detectionCount: Int
    /// Per IoU threshold, the cumulative true positives of the score-sorted detections
    /// (used by ``FROCCurve``).
    let cumulativeTP: [[Int]]

    /// Scores detections against ground truth, image by image.
    ///
    /// - Parameters:
    ///   - truth: per image, its ground-truth boxes (any pixels).
    ///   - detections: per image, its detections in the same pixels.
    ///   - maxDetections: the per-image limit (COCO: 100).
    /// - Precondition: `truth.count == detections.count`.
    public init(truth: [[BoundingBox]], detections: [[Detection]], maxDetections: Int = 100) {
        precondition(truth.count == detections.count, "CocoEvaluation: \(truth.count) truth lists for \(detections.count) detection lists")
        let thresholds = Self.iouThresholds
        let t = thresholds.count
        // (score, image, rank, matched per threshold)
        var all: [(score: Float, matched: [Bool])] = []
        var npig = 0
        for (gts, dets) in zip(truth, detections) {
            npig += gts.count
            let order = dets.indices.sorted { dets[$0].score > dets[$1].score || (dets[$0].score == dets[$1].score && $0 < $1) }
            let kept = order.prefix(maxDetections).map { dets[$0] }
            var matched = [[Bool]](repeating: [Bool](repeating: false, count: t), count: kept.count)
            if !gts.isEmpty {
                let ious = kept.map { d in gts.map { RSNAMetric.iou(d.box, $0) } }
                for (ti, thr) in thresholds.enumerated() {
                    var used = [Bool](repeating: false, count: gts.count)
                    for di in 0..<kept.count {
                        var best = min(thr, 1 - 1e-10), m = -1
                        for g in 0..<gts.count where !used[g] {
                            if ious[di][g] < best { continue }
                            best = ious[di][g]
                            m = g
                        }
                        if m >= 0 { used[m] = true; matched[di][ti] = true }
                    }
                }
            }
            for (d, m) in zip(kept, matched) { all.append((d.score, m)) }
        }
        // stable sort by descending score (mergesort on -score)
        let order = all.indices.sorted { all[$0].score > all[$1].score || (all[$0].score == all[$1].score && $0 < $1) }
        truthCount = npig
        detectionCount = all.count
        var cum: [[Int]] = []
        var precision: [[Double]] = [], apPerT: [Double] = [], recallPerT: [Double] = []
        for ti in 0..<t {
            var tp = 0, fp = 0
            var rc: [Double] = [], pr: [Double] = [], c: [Int] = []
            for i in order {
                if all[i].matched[ti] { tp += 1 } else { fp += 1 }
                c.append(tp)
                if npig > 0 {
                    rc.append(Double(tp) / Double(npig))
                    pr.append(Double(tp) / (Double(fp + tp) + Double.ulpOfOne))
                }
            }
            cum.append(c)
            guard npig > 0 else { continue }
            recallPerT.append(rc.last ?? 0)
            if pr.count > 1 { for i in stride(from: pr.count - 1, to: 0, by: -1) where pr[i] > pr[i - 1] { pr[i - 1] = pr[i] } }
            var q = [Double](repeating: 0, count: Self.recallThresholds.count)
            var pi = 0
            for (ri, r) in Self.recallThresholds.enumerated() {
                while pi < rc.count && rc[pi] < r { pi += 1 }  // searchsorted, side left
                if pi >= rc.count { break }
                q[ri] = pr[pi]
            }
            precision.append(q)
            apPerT.append(q.reduce(0, +) / Double(q.count))
        }
        cumulativeTP = cum
        self.precision = precision
        if npig > 0 {
            ap = apPerT.reduce(0, +) / Double(t)
            ap50 = apPerT[0]
            ap75 = apPerT[5]
            ar100 = recallPerT.reduce(0, +) / Double(t)
        }
        sortedScores = order.map { all[$0].score }
    }

    /// The scores of all counted detections, highest first.
    public let sortedScores: [Float]
}

/// The free-response ROC: lesion sensitivity against the mean number of false positives per
/// image, as detections are admitted by descending score. A detection is a true positive
/// when it matches an unmatched ground-truth box with IoU >= 0.5 (COCO's matching at 0.50,
/// best 100 per image).
public struct FROCCurve: Sendable {
    /// The false-positive rates the challenge-style summary reads: 1/8 ... 8 per image.
    public static let standardRates: [Double] = [0.125, 0.25, 0.5, 1, 2, 4, 8]

    /// `(mean false positives per image, sensitivity)` after each detection, best first.
    public var points: [(fpPerImage: Double, sensitivity: Double)]
    /// The sensitivity at each of ``standardRates``: the highest sensitivity reached with at
    /// most that many false positives per image (0 before any point qualifies).
    public var sensitivities: [Double]
    /// The mean of ``sensitivities`` (the CPM-style summary).
    public var meanSensitivity: Double
    /// Images counted in the per-image rate (every image, with or without truth).
    public var images: Int

    /// The FROC from a COCO evaluation of `images` images.
    /// - Returns: `nil` when there is no ground truth or no image.
    public init?(_ coco: CocoEvaluation, images: Int) {
        guard coco.truthCount > 0, images > 0, let tps = coco.cumulativeTP.first else { return nil }
        var pts: [(Double, Double)] = []
        for (i, tp) in tps.enumerated() {
            pts.append((Double(i + 1 - tp) / Double(images), Double(tp) / Double(coco.truthCount)))
        }
        points = pts
        sensitivities = Self.standardRates.map { rate in pts.filter { $0.0 <= rate }.map(\.1).max() ?? 0 }
        meanSensitivity = sensitivities.reduce(0, +) / Double(sensitivities.count)
        self.images = images
    }
}
