import Foundation

/// The RSNA Pneumonia Detection Challenge metric.
///
/// Per image: the mean over IoU thresholds 0.40, 0.45, ..., 0.75 of `TP / (TP + FP + FN)`,
/// where predictions are taken by descending confidence and each ground-truth box (in its
/// order) is matched to the first unused prediction with IoU >= t. Equal confidences are
/// ordered as the reference implementations order them (`np.argsort(scores)[::-1]`: the
/// prediction listed later comes first), so a tie gives the same score as Kaggle's. An image with no ground
/// truth and no predictions is left out; predictions on an image without ground truth
/// score 0. The dataset score is the mean over the images that count.
public enum RSNAMetric {
    /// The literal thresholds of the challenge.
    public static let thresholds: [Double] = [0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75]

    /// The score of one image, or `nil` when it does not count.
    public static func imageScore(truth: [BoundingBox], predictions: [Detection]) -> Double? {
        if truth.isEmpty && predictions.isEmpty { return nil }
        if truth.isEmpty || predictions.isEmpty { return 0 }
        // The reversed stable ascending order of the references (np.argsort(scores)[::-1]):
        // descending by score, and among equal scores the later prediction first.
        let preds = predictions.enumerated().sorted { $0.element.score > $1.element.score || ($0.element.score == $1.element.score && $0.offset > $1.offset) }.map(\.element.box)
        var ious = [[Double]](repeating: [], count: truth.count)
        for (g, t) in truth.enumerated() { ious[g] = preds.map { iou(t, $0) } }
        var total: Double = 0
        for t in thresholds {
            var used = [Bool](repeating: false, count: preds.count)
            var tp = 0
            for g in 0..<truth.count {
                for p in 0..<preds.count where !used[p] && ious[g][p] >= t {
                    used[p] = true
                    tp += 1
                    break
                }
            }
            let fp = preds.count - tp, fn = truth.count - tp
            total += Double(tp) / Double(tp + fp + fn)
        }
        return total / Double(thresholds.count)
    }

    /// IoU in double precision on `(x, y, w, h)` boxes, so that exact ratios such as 0.7
    /// meet the literal thresholds as in the reference.
    public static func iou(_ a: BoundingBox, _ b: BoundingBox) -> Double {
        let (ax, ay, aw, ah) = (Double(a.x), Double(a.y), Double(a.width), Double(a.height))
        let (bx, by, bw, bh) = (Double(b.x), Double(b.y), Double(b.width), Double(b.height))
        if aw <= 0 || ah <= 0 || bw <= 0 || bh <= 0 { return 0 }
        let l = max(ax, bx), r = min(ax + aw, bx + bw), t = max(ay, by), btm = min(ay + ah, by + bh)
        if r <= l || btm <= t { return 0 }
        let inter = (r - l) * (btm - t)
        return inter / (aw * ah + bw * bh - inter)
    }

    /// The mean over images that count, or `nil` when none does.
    public static func score(_ images: [(truth: [BoundingBox], predictions: [Detection])]) -> Double? {
        let s = images.compactMap { imageScore(truth: $0.truth, predictions: $0.predictions) }
        return s.isEmpty ? nil : s.reduce(0, +) / Double(s.count)
    }
}

/// How raw detections become the boxes that are scored or submitted.
public struct ConfidenceFilter: Sendable, Hashable {
    /// Zero every score below this fraction of the image's top score (the reference uses 0.5;
    /// 0 switches it off).
    public var relativeToMax: Float = 0.5
    /// Keep boxes with score above this.
    public var threshold: Float

    public init(threshold: Float, relativeToMax: Float = 0.5) {
        self.threshold = threshold
        self.relativeToMax = relativeToMax
    }

    public func apply(_ d: [Detection]) -> [Detection] {
        guard let top = d.map(\.score).max() else { return [] }
        return d.filter { $0.score >= relativeToMax * top && $0.score > threshold }
    }

    /// The default sweep of score thresholds (the reference sweeps score x 5 over
    /// 0.05 ... 1.0, i.e. raw scores 0.01 ... 0.2; this extends it to 0.6).
    public static let sweep: [Float] = stride(from: 0.01, through: 0.6, by: 0.01).map { Float($0) }
}

/// The metric at each threshold of a sweep, and the best one.
public struct ThresholdSweep: Sendable, Codable {
    public var thresholds: [Float]
    public var scores: [Double]
    public var bestThreshold: Float
    public var bestScore: Double

    /// Scores detections (already NMS-ed) against ground truth at every threshold.
    public init(truth: [[BoundingBox]], detections: [[Detection]], thresholds: [Float] = ConfidenceFilter.sweep,
                relativeToMax: Float = 0.5) {
        precondition(truth.count == detections.count)
        self.thresholds = thresholds
        scores = thresholds.map { t in
            let f = ConfidenceFilter(threshold: t, relativeToMax: relativeToMax)
            return RSNAMetric.score(zip(truth, detections).map { ($0, f.apply($1)) }) ?? 0
        }
        let sc = scores
        let i = sc.indices.max { sc[$0] < sc[$1] } ?? 0
        bestThreshold = thresholds.isEmpty ? 0 : thresholds[i]
        bestScore = sc.isEmpty ? 0 : sc[i]
    }
}
