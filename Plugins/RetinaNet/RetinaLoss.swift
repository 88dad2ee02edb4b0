import Foundation
import OpacityCore
import OpacityTensor

/// The paper's loss: sigmoid focal loss over all anchors (normalised per image by
/// `max(1, positives)`; images without boxes are all-negative and count), smooth-L1 box
/// regression averaged over positive anchors x 4 coordinates, and `globalWeight` x NLL of
/// the global class; each term is the mean over the batch.
///
/// An image whose class the labels do not give (``DetectionTarget/imageClass`` `nil`, no
/// boxes: RSNA labels without the class-info file) is known only not to be "Lung Opacity";
/// its global term is the NLL of that event, `-log(p(Not Normal) + p(Normal))`, so it is
/// trained away from "Lung Opacity" and not towards either of the two classes it may be.
public struct RetinaLoss: Loss {
    public var alpha: Float = 0.25
    public var gamma: Float = 2
    public var matcher = AnchorMatcher()
    public var beta: Float = 1.0 / 9
    public var globalWeight: Float = 0.1
    public var coder = BoxCoder()

    public init(alpha: Float = 0.25, gamma: Float = 2, matcher: AnchorMatcher = AnchorMatcher(), beta: Float = 1.0 / 9,
                globalWeight: Float = 0.1, coder: BoxCoder = BoxCoder()) {
        self.alpha = alpha
        self.gamma = gamma
        self.matcher = matcher
        self.beta = beta
        self.globalWeight = globalWeight
        self.coder = coder
    }

    /// Separable (``Loss/isSeparable``): the focal term is a sum over anchors and the
    /// regression term over positive anchors, normalised by counts of the targets' matches, and
    /// the global term reads only the global output.
    public var isSeparable: Bool { true }

    public func loss(_ output: HeadOutput, targets: [DetectionTarget], anchors: AnchorSet) -> LossTerms {
        let n = targets.count
        precondition(output.classLogits.shape[0] == n, "RetinaLoss: \(output.classLogits.shape[0]) images but \(n) targets")
        let k = output.classLogits.shape[2], a = anchors.count
        var focal: Tensor?
        var regression: Tensor?
        for (i, t) in targets.enumerated() {
            let (labels, assigned) = matcher.match(anchors, boxes: t.boxes)
            let positives = labels.indices.filter { labels[$0] == 1 }
            // class targets: one-hot on class 0 for positives (single box class), 0 for negatives
            var tk = [Float](repeating: 0, count: a * k)
            for j in 0..<a {
                let l = labels[j]
                for c in 0..<k { tk[j * k + c] = l < 0 ? -1 : (l == 1 && c == 0 ? 1 : 0) }
            }
            let logits = output.classLogits.slice(axis: 0, i..<(i + 1)).reshaped([a, k])
            let fl = logits.sigmoidFocalLoss(targets: Tensor(shape: [a, k], scalars: tk), alpha: alpha, gamma: gamma)
                * (1 / Float(max(1, positives.count)))
            focal = focal.map { $0 + fl } ?? fl
            if !positives.isEmpty {
                var tr = [Float](); tr.reserveCapacity(positives.count * 4)
                for j in positives {
                    let anchor = (anchors.corners[4 * j], anchors.corners[4 * j + 1], anchors.corners[4 * j + 2], anchors.corners[4 * j + 3])
                    let d = coder.encode(t.boxes[Int(assigned[j])], anchor: anchor)
                    tr += [d.0, d.1, d.2, d.3]
                }
                let pred = output.boxDeltas.slice(axis: 0, i..<(i + 1)).reshaped([a, 4]).gatherRows(positives)
                let rl = pred.smoothL1Loss(target: Tensor(shape: [positives.count, 4], scalars: tr), beta: beta)
                    * (1 / Float(positives.count * 4))
                regression = regression.map { $0 + rl } ?? rl
            }
        }
        let inv = 1 / Float(max(1, n))
        let focalMean = focal! * inv
        var total = focalMean
        var terms: [(String, Float)] = [("focal", focalMean.scalar)]
        if let regression {
            let r = regression * inv
            total = total + r
            terms.append(("regression", r.scalar))
        } else {
            terms.append(("regression", 0))
        }
        if let g = output.globalLogProbs {
            let nll = Self.globalNLL(g, classes: targets.map(\.knownClass))
            total = total + nll * globalWeight
            terms.append(("global", nll.scalar))
        }
        return LossTerms(total: total, terms: [("total", total.scalar)] + terms)
    }
}

extension RetinaLoss {
    /// The global classifier's NLL, the mean over the batch: `-log p(class)` for an image of
    /// known class, `-log(p(Not Normal) + p(Normal))` for one of unknown class (`nil`: not
    /// "Lung Opacity", which of the other two not known).
    /// - Parameters:
    ///   - logProbs: `[N, 3]` log-probabilities in ``ImageClass`` order.
    ///   - classes: the `N` classes, `nil` where unknown.
    /// - Returns: a scalar, differentiable in `logProbs`.
    public static func globalNLL(_ logProbs: Tensor, classes: [ImageClass?]) -> Tensor {
        let known = classes.indices.filter { classes[$0] != nil }
        if known.count == classes.count { return logProbs.nllLoss(targets: classes.map { $0!.rawValue }) }
        let n = Float(classes.count)
        let unknown = classes.indices.filter { classes[$0] == nil }
        // log(p0 + p1) = v0 - logSoftmax(v)_0 over v = (log p0, log p1): stable for any logits
        let v = logProbs.gatherRows(unknown).slice(axis: 1, 0..<2)
        let zeros = [Int](repeating: 0, count: unknown.count)
        var sum = (v.nllLoss(targets: zeros) - v.logSoftmax().nllLoss(targets: zeros)) * Float(unknown.count)
        if !known.isEmpty {
            sum = sum + logProbs.gatherRows(known).nllLoss(targets: known.map { classes[$0]!.rawValue }) * Float(known.count)
        }
        return sum * (1 / n)
    }
}

/// Decodes anchors into boxes: keep anchors scoring above `candidateScore`, decode and clip,
/// class-agnostic NMS at `nmsIoU`, then optionally scale every box about its centre by
/// `shrink` and apply a ``ConfidenceFilter``.
public struct RetinaPostprocessor: Postprocessor {
    public var candidateScore: Float = 0.025
    public var nmsIoU: Float = 0.05
    /// At most this many candidates (best first) enter NMS.
    public var maxCandidates = 3000
    public var shrink: Float = 1
    public var filter: ConfidenceFilter?
    public var coder = BoxCoder()

    public init(candidateScore: Float = 0.025, nmsIoU: Float = 0.05, maxCandidates: Int = 3000, shrink: Float = 1,
                filter: ConfidenceFilter? = nil, coder: BoxCoder = BoxCoder()) {
        self.candidateScore = candidateScore
        self.nmsIoU = nmsIoU
        self.maxCandidates = maxCandidates
        self.shrink = shrink
        self.filter = filter
        self.coder = coder
    }

    public func detections(_ output: HeadOutput, anchors: AnchorSet, imageSize: (height: Int, width: Int)) -> [[Detection]] {
        let n = output.classLogits.shape[0], a = output.classLogits.shape[1], k = output.classLogits.shape[2]
        let logitCut = -Foundation.log(1 / candidateScore - 1)
        return output.classLogits.withUnsafeBufferPointer { logits in
            output.boxDeltas.withUnsafeBufferPointer { deltas in
                detections(logits: logits, deltas: deltas, n: n, a: a, k: k, logitCut: logitCut, anchors: anchors, imageSize: imageSize)
            }
        }
    }

    /// ``detections(_:anchors:imageSize:)`` on the raw `[N, A, K]` logits and `[N, A, 4]` deltas.
    private func detections(logits: UnsafeBufferPointer<Float>, deltas: UnsafeBufferPointer<Float>, n: Int, a: Int, k: Int,
                            logitCut: Float, anchors: AnchorSet, imageSize: (height: Int, width: Int)) -> [[Detection]] {
        var result: [[Detection]] = []
        for i in 0..<n {
            let lp = logits.baseAddress! + i * a * k
            let dp = deltas.baseAddress! + i * a * 4
            var cand: [(Int, Float)] = []
            for j in 0..<a {
                var m = lp[j * k]
                for c in 1..<max(1, k) { m = max(m, lp[j * k + c]) }
                if m > logitCut { cand.append((j, 1 / (1 + Foundation.exp(-m)))) }
            }
            if cand.count > maxCandidates {
                cand.sort { $0.1 > $1.1 }
                cand.removeLast(cand.count - maxCandidates)
            }
            // A box that is empty after clipping to the image (wholly outside it) or not
            // finite is dropped: it is never a detection with a negative or NaN size.
            var boxes: [BoundingBox] = []
            boxes.reserveCapacity(cand.count)
            cand = cand.filter { (j, _) in
                let anchor = (anchors.corners[4 * j], anchors.corners[4 * j + 1], anchors.corners[4 * j + 2], anchors.corners[4 * j + 3])
                let d = coder.decode((dp[4 * j], dp[4 * j + 1], dp[4 * j + 2], dp[4 * j + 3]), anchor: anchor)
                // (clipping would turn NaN corners into image edges: check before)
                guard d.x.isFinite, d.y.isFinite, d.x2.isFinite, d.y2.isFinite else { return false }
                let b = BoxCoder.clip(d, height: imageSize.height, width: imageSize.width)
                guard b.width > 0, b.height > 0 else { return false }
                boxes.append(b)
                return true
            }
            let keep = nonMaximumSuppression(boxes, scores: cand.map(\.1), iouThreshold: nmsIoU)
            var dets = keep.map { Detection(box: shrink == 1 ? boxes[$0] : boxes[$0].scaled(about: shrink), score: cand[$0].1) }
            if let filter { dets = filter.apply(dets) }
            result.append(dets)
        }
        return result
    }
}
