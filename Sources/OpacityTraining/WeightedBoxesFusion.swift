import Foundation
import OpacityCore

/// Weighted Boxes Fusion (Solovyev, Wang and Gabruseva, 2019), the box ensemble the chest
/// X-ray detection winners after 2018 used: boxes of several models (folds, checkpoints,
/// test-time views) that overlap are averaged, weighted by their scores, instead of being
/// suppressed as NMS would.
///
/// This follows `ensemble_boxes.weighted_boxes_fusion` (ensemble-boxes 1.0.9) step by step,
/// and is tested against its outputs (Tests/OpacityTrainingTests/Fixtures/wbf.json):
/// 1. Every box scoring below ``skipBoxThreshold`` is dropped; corners are put in order and
///    clamped to `[0, 1]`; zero-area boxes are dropped; a box's score is multiplied by its
///    model's weight.
/// 2. Per label, boxes are taken by descending weighted score; each joins the fused box of
///    its label with the highest IoU if that IoU exceeds ``iouThreshold`` (else it starts a
///    new cluster), and the fused box becomes the score-weighted mean of its members.
/// 3. The fused score is rescaled by ``confidence`` (see ``ConfidenceRule``).
public struct WeightedBoxesFusion: Sendable, Hashable {
    /// How a cluster's score is computed, as `conf_type` in ensemble-boxes.
    ///
    /// With `n` boxes in a cluster, weighted scores `s_i = score_i * w_model(i)`, the
    /// cluster's weight sum `W_c`, all model weights `w` and `M` models:
    public enum ConfidenceRule: String, Sendable, Hashable, CaseIterable, Codable {
        /// `mean(s_i) * min(M, n) / sum(w)` (or `* n / sum(w)` with
        /// ``WeightedBoxesFusion/allowsOverflow``): clusters that not every model found
        /// score lower.
        case avg
        /// `max(s_i) / max(w)`.
        case max
        /// `mean(s_i) * n / W_c * (sum of the weights of the distinct models in the
        /// cluster) / sum(w)`.
        case boxAndModelAvg = "box_and_model_avg"
        /// `mean(s_i) * n / (W_c + sum of the weights of the models absent from the
        /// cluster)`.
        case absentModelAwareAvg = "absent_model_aware_avg"
    }

    /// A box with corners in normalised coordinates (`[0, 1]` of the image's width and
    /// height), a score and a label.
    public struct Box: Sendable, Hashable, Codable {
        public var x1: Double
        public var y1: Double
        public var x2: Double
        public var y2: Double
        public var score: Double
        public var label: Int

        /// A box from its corners, score and label.
        public init(x1: Double, y1: Double, x2: Double, y2: Double, score: Double, label: Int = 0) {
            self.x1 = x1
            self.y1 = y1
            self.x2 = x2
            self.y2 = y2
            self.score = score
            self.label = label
        }
    }

    /// Boxes overlap enough to fuse when their IoU is above this (ensemble-boxes: `iou_thr`,
    /// default 0.55).
    public var iouThreshold: Double
    /// Boxes scoring below this are ignored (`skip_box_thr`, default 0).
    public var skipBoxThreshold: Double
    /// How a fused box's score is computed (`conf_type`).
    public var confidence: ConfidenceRule
    /// Whether an `avg` score may exceed 1 (`allows_overflow`).
    public var allowsOverflow: Bool

    /// The fusion rule with ensemble-boxes' defaults unless given.
    public init(iouThreshold: Double = 0.55, skipBoxThreshold: Double = 0, confidence: ConfidenceRule = .avg,
                allowsOverflow: Bool = false) {
        self.iouThreshold = iouThreshold
        self.skipBoxThreshold = skipBoxThreshold
        self.confidence = confidence
        self.allowsOverflow = allowsOverflow
    }

    /// Fuses the boxes of several models.
    ///
    /// - Parameters:
    ///   - models: per model (or view), its boxes in normalised coordinates.
    ///   - weights: one weight per model; `nil` weighs every model 1.
    /// - Returns: the fused boxes, highest score first.
    /// - Throws: ``EvaluationError/invalidArgument(_:)`` when the weights do not match the
    ///   models or are not positive and finite.
    public func fuse(_ models: [[Box]], weights: [Double]? = nil) throws -> [Box] {
        let w = weights ?? [Double](repeating: 1, count: models.count)
        guard w.count == models.count else {
            throw EvaluationError.invalidArgument("WBF: \(w.count) weights for \(models.count) models; give one weight per model")
        }
        guard w.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw EvaluationError.invalidArgument("WBF: weights must be positive and finite, got \(w)")
        }
        return fuseChecked(models, weights: w)
    }

    /// ``fuse(_:weights:)`` with weights already checked (one per model, positive).
    func fuseChecked(_ models: [[Box]], weights w: [Double]) -> [Box] {
        let weightSum = w.reduce(0, +), weightMax = w.max() ?? 1
        var byLabel: [Int: [Entry]] = [:]
        var labelOrder: [Int] = []
        for (m, boxes) in models.enumerated() {
            for b in boxes {
                if b.score < skipBoxThreshold { continue }
                var (x1, y1, x2, y2) = (b.x1, b.y1, b.x2, b.y2)
                if x2 < x1 { swap(&x1, &x2) }
                if y2 < y1 { swap(&y1, &y2) }
                x1 = min(max(x1, 0), 1); x2 = min(max(x2, 0), 1)
                y1 = min(max(y1, 0), 1); y2 = min(max(y2, 0), 1)
                if (x2 - x1) * (y2 - y1) == 0 { continue }
                if byLabel[b.label] == nil { labelOrder.append(b.label) }
                byLabel[b.label, default: []].append(Entry(label: b.label, score: b.score * w[m], weight: w[m], model: m, c: (x1, y1, x2, y2)))
            }
        }
        var out: [Box] = []
        for label in labelOrder {
            // descending score; the reference reverses an ascending sort, so ties come last-first
            let entries = byLabel[label]!.enumerated().sorted {
                $0.element.score > $1.element.score || ($0.element.score == $1.element.score && $0.offset > $1.offset)
            }.map(\.element)
            var clusters: [[Entry]] = []
            var fused: [Entry] = []
            for e in entries {
                var best = -1, bestIoU = iouThreshold
                for (k, f) in fused.enumerated() {
                    let v = Self.iou(f.c, e.c)
                    if v > bestIoU { bestIoU = v; best = k }
                }
                if best >= 0 {
                    clusters[best].append(e)
                    fused[best] = Self.weightedBox(clusters[best], confidence: confidence)
                } else {
                    clusters.append([e])
                    fused.append(e)
                }
            }
            for (k, cluster) in clusters.enumerated() {
                var s = fused[k].score
                let n = Double(cluster.count)
                switch confidence {
                case .boxAndModelAvg:
                    s = s * n / fused[k].weight
                    var seen = Set<Int>(), distinct = 0.0
                    for e in cluster where seen.insert(e.model).inserted { distinct += e.weight }
                    s = s * distinct / weightSum
                case .absentModelAwareAvg:
                    let present = Set(cluster.map(\.model))
                    let absent = w.enumerated().filter { !present.contains($0.offset) }.map(\.element).reduce(0, +)
                    s = s * n / (fused[k].weight + absent)
                case .max:
                    s /= weightMax
                case .avg:
                    s = allowsOverflow ? s * n / weightSum : s * min(Double(w.count), n) / weightSum
                }
                let c = fused[k].c
                out.append(Box(x1: c.0, y1: c.1, x2: c.2, y2: c.3, score: s, label: label))
            }
        }
        // final order: descending score, ties last-first like the reference's reversed argsort
        return out.enumerated().sorted { $0.element.score > $1.element.score || ($0.element.score == $1.element.score && $0.offset > $1.offset) }
            .map(\.element)
    }

    /// Fuses detections in image pixels: each is normalised by the image size, fused, and
    /// mapped back (one label).
    ///
    /// - Parameters:
    ///   - detections: per model or view, its detections in pixels of a `width x height` image.
    ///   - weights: one per model; `nil` weighs every model 1.
    /// - Returns: fused detections in the same pixels, highest score first.
    /// - Throws: ``EvaluationError/invalidArgument(_:)`` for bad weights or an empty image.
    public func fuse(_ detections: [[Detection]], width: Int, height: Int, weights: [Double]? = nil) throws -> [Detection] {
        guard width > 0, height > 0 else { throw EvaluationError.invalidArgument("WBF: image size \(width) x \(height) is empty") }
        let w = weights ?? [Double](repeating: 1, count: detections.count)
        _ = try fuse(detections.map { _ in [Box]() }, weights: w)  // checks the weights
        return fuseChecked(detections, width: width, height: height, weights: w)
    }

    /// ``fuse(_:width:height:weights:)`` with weights already checked; an empty image gives
    /// no boxes.
    func fuseChecked(_ detections: [[Detection]], width: Int, height: Int, weights: [Double]) -> [Detection] {
        guard width > 0, height > 0 else { return [] }
        let sx = Double(width), sy = Double(height)
        let boxes = detections.map { ds in
            ds.map { Box(x1: Double($0.box.x) / sx, y1: Double($0.box.y) / sy, x2: Double($0.box.x2) / sx, y2: Double($0.box.y2) / sy,
                         score: Double($0.score)) }
        }
        return fuseChecked(boxes, weights: weights).map {
            Detection(box: BoundingBox(x1: Float($0.x1 * sx), y1: Float($0.y1 * sy), x2: Float($0.x2 * sx), y2: Float($0.y2 * sy)),
                      score: Float($0.score))
        }
    }

    /// One box inside the fusion: `[label, weighted score, weight, model, x1, y1, x2, y2]`
    /// as in the reference.
    private struct Entry {
        var label: Int
        var score: Double
        var weight: Double
        var model: Int
        var c: (Double, Double, Double, Double)
    }

    /// The score-weighted mean box of a cluster; its score is the mean (or max) of the
    /// members' weighted scores and its weight their weight sum. Rounded to single precision
    /// like the reference's `get_weighted_box`.
    private static func weightedBox(_ boxes: [Entry], confidence: ConfidenceRule) -> Entry {
        var c: (Float, Float, Float, Float) = (0, 0, 0, 0)
        var conf = 0.0, top = -Double.infinity, w = 0.0
        for b in boxes {
            c.0 = Float(Double(c.0) + b.score * b.c.0)
            c.1 = Float(Double(c.1) + b.score * b.c.1)
            c.2 = Float(Double(c.2) + b.score * b.c.2)
            c.3 = Float(Double(c.3) + b.score * b.c.3)
            conf += b.score
            top = Swift.max(top, b.score)
            w += b.weight
        }
        let score = confidence == .max ? Double(Float(top)) : Double(Float(conf / Double(boxes.count)))
        let corners = (Double(Float(Double(c.0) / conf)), Double(Float(Double(c.1) / conf)),
                       Double(Float(Double(c.2) / conf)), Double(Float(Double(c.3) / conf)))
        return Entry(label: boxes[0].label, score: score, weight: Double(Float(w)), model: -1, c: corners)
    }

    /// IoU of corner boxes `(x1, y1, x2, y2)` as the reference computes it (no `+1`).
    static func iou(_ a: (Double, Double, Double, Double), _ b: (Double, Double, Double, Double)) -> Double {
        let iw = Swift.max(Swift.min(a.2, b.2) - Swift.max(a.0, b.0), 0)
        let ih = Swift.max(Swift.min(a.3, b.3) - Swift.max(a.1, b.1), 0)
        let inter = iw * ih
        let union = (a.2 - a.0) * (a.3 - a.1) + (b.2 - b.0) * (b.3 - b.1) - inter
        return union > 0 ? inter / union : 0
    }
}
