import Foundation
import OpacityCore
import OpacityData
import OpacityTensor

/// Test-time augmentation: the detector also sees the image flipped left-right and/or at
/// other input sizes, and the views' predictions are merged.
///
/// The views are every combination of {as is, flipped} (with ``flip``) and {1, ``scales``}:
/// `flip,scale=0.9:1.1` gives six forward passes per model and image.
public struct TestTimeAugmentation: Sendable, Hashable, CustomStringConvertible {
    /// How the views are merged.
    public enum Merge: Sendable, Hashable {
        /// Each view's boxes (after NMS, mapped back to the image) are fused by Weighted Boxes
        /// Fusion, every view weighing 1.
        case wbf(WeightedBoxesFusion)
        /// The flipped view's head outputs are mapped back onto the original anchors (left
        /// and right swapped, `dx` negated) and combined with the original per anchor by the
        /// ensemble's rule. Flip only: other scales have other anchors.
        case anchors
    }

    /// One view: flipped or not, and the input size as a multiple of the model's.
    public struct View: Sendable, Hashable {
        public var flip: Bool
        public var scale: Float
        public init(flip: Bool, scale: Float) {
            self.flip = flip
            self.scale = scale
        }
    }

    /// Whether to add left-right flipped views.
    public var flip: Bool
    /// Input sizes besides the model's, as factors (e.g. `[0.9, 1.1]`).
    public var scales: [Float]
    /// How the views are merged.
    public var merge: Merge

    /// - Throws: ``EvaluationError/invalidArgument(_:)`` for a scale outside `[0.25, 4]`, or
    ///   anchor merging with scales.
    public init(flip: Bool, scales: [Float] = [], merge: Merge = .wbf(WeightedBoxesFusion())) throws {
        for s in scales where !(s >= 0.25 && s <= 4) {
            let nearest = s.isNaN ? "" : " (nearest valid: \(String(format: "%g", min(max(s, 0.25), 4))))"
            throw EvaluationError.invalidArgument("TTA scale \(s) is outside 0.25...4\(nearest)")
        }
        if case .anchors = merge, !scales.isEmpty {
            throw EvaluationError.invalidArgument("TTA anchor averaging works for flip only (views at other scales have other anchors); merge scales by wbf")
        }
        self.flip = flip
        self.scales = scales.filter { $0 != 1 }
        self.merge = merge
    }

    /// Parses `flip`, `scale=0.9:1.1` or both, comma-separated (the `--tta` option).
    /// - Throws: ``EvaluationError/invalidSpecification(option:value:reason:)`` naming the
    ///   part that does not parse and what is expected.
    public static func parse(_ text: String, merge: Merge = .wbf(WeightedBoxesFusion())) throws -> TestTimeAugmentation {
        var flip = false, scales: [Float] = []
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !part.isEmpty {
            if part == "flip" { flip = true; continue }
            if part.hasPrefix("scale=") {
                for v in part.dropFirst(6).split(separator: ":", omittingEmptySubsequences: false) {
                    guard let f = Float(v), f.isFinite else {
                        throw EvaluationError.invalidSpecification(option: "--tta", value: text, reason: "'\(v)' in '\(part)' is not a number; expected e.g. scale=0.9:1.1")
                    }
                    scales.append(f)
                }
                continue
            }
            let near = nearestValue(String(part.prefix(while: { $0 != "=" })), in: ["flip", "scale"]).map { " (did you mean '\($0)'?)" } ?? ""
            throw EvaluationError.invalidSpecification(option: "--tta", value: text, reason: "unknown view '\(part)'\(near); expected flip and/or scale=F:F...")
        }
        guard flip || !scales.isEmpty else {
            throw EvaluationError.invalidSpecification(option: "--tta", value: text, reason: "no view; expected flip and/or scale=F:F..., e.g. flip,scale=0.9:1.1")
        }
        do { return try TestTimeAugmentation(flip: flip, scales: scales, merge: merge) } catch let EvaluationError.invalidArgument(m) {
            throw EvaluationError.invalidSpecification(option: "--tta", value: text, reason: m)
        }
    }

    /// Every view, the plain one first.
    public var views: [View] {
        var v: [View] = []
        for s in [Float(1)] + scales {
            v.append(View(flip: false, scale: s))
            if flip { v.append(View(flip: true, scale: s)) }
        }
        return v
    }

    public var description: String {
        var parts: [String] = []
        if flip { parts.append("flip") }
        if !scales.isEmpty { parts.append("scale=" + scales.map { String(format: "%g", $0) }.joined(separator: ":")) }
        switch merge {
        case .anchors: return parts.joined(separator: ",") + " (anchor averaging)"
        case .wbf: return parts.joined(separator: ",") + " (WBF)"
        }
    }

    /// The input size of a view: the model's own size at scale 1, else the model's size times
    /// the scale, rounded to a multiple of 32.
    public static func inputSize(_ base: Int, scale: Float) -> Int {
        scale == 1 ? base : max(32, Int((Float(base) * scale / 32).rounded()) * 32)
    }

    /// A `[N, 1, H, W]` batch mirrored left-right.
    public static func flipped(_ images: Tensor) -> Tensor {
        let (n, c, h, w) = (images.shape[0], images.shape[1], images.shape[2], images.shape[3])
        let src = images.scalars
        var out = [Float](repeating: 0, count: src.count)
        for row in 0..<(n * c * h) {
            let base = row * w
            for x in 0..<w { out[base + x] = src[base + w - 1 - x] }
        }
        return Tensor(shape: images.shape, scalars: out)
    }

    /// Maps the head output of a flipped `height x width` batch back onto the original
    /// anchors: location `(i, j)` of a level takes the flipped `(i, gw - 1 - j)`, and `dx` is
    /// negated. Exact when `width` is a multiple of the coarsest stride (anchor centres are
    /// then symmetric).
    /// - Throws: ``EvaluationError/invalidArgument(_:)`` when it is not.
    public static func unflip(_ out: HeadOutput, anchors: AnchorGenerator, height: Int, width: Int) throws -> HeadOutput {
        let coarsest = 1 << anchors.levels.upperBound
        guard width % coarsest == 0 else {
            throw EvaluationError.invalidArgument("TTA flip by anchor averaging needs an input width that is a multiple of \(coarsest) (got \(width)); use --tta-merge wbf")
        }
        let a = anchors.perLocation
        var perm: [Int] = []  // perm[dest] = source anchor
        for level in anchors.levels {
            let gh = AnchorGenerator.gridSize(height, level: level), gw = AnchorGenerator.gridSize(width, level: level)
            let offset = perm.count
            for i in 0..<gh { for j in 0..<gw { for k in 0..<a { perm.append(offset + (i * gw + (gw - 1 - j)) * a + k) } } }
        }
        let shape = out.classLogits.shape, dshape = out.boxDeltas.shape
        guard shape[1] == perm.count else {
            throw EvaluationError.invalidArgument("TTA flip: the head predicts \(shape[1]) anchors but the layout has \(perm.count)")
        }
        let n = shape[0], kc = shape[2], anchorsCount = shape[1]
        let logits = out.classLogits.scalars, deltas = out.boxDeltas.scalars
        var l2 = [Float](repeating: 0, count: logits.count), d2 = [Float](repeating: 0, count: deltas.count)
        for b in 0..<n {
            for (dst, src) in perm.enumerated() {
                for k in 0..<kc { l2[(b * anchorsCount + dst) * kc + k] = logits[(b * anchorsCount + src) * kc + k] }
                let s = (b * anchorsCount + src) * 4, d = (b * anchorsCount + dst) * 4
                d2[d] = -deltas[s]; d2[d + 1] = deltas[s + 1]; d2[d + 2] = deltas[s + 2]; d2[d + 3] = deltas[s + 3]
            }
        }
        return HeadOutput(classLogits: Tensor(shape: shape, scalars: l2), boxDeltas: Tensor(shape: dshape, scalars: d2),
                          globalLogProbs: out.globalLogProbs)
    }
}
