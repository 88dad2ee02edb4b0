import Foundation
import OpacityCore
import OpacityTensor

/// How an ensemble combines several models: per anchor before NMS (the paper's rules), or
/// their boxes after NMS by Weighted Boxes Fusion.
public enum EnsembleMethod: Sendable, Equatable, CustomStringConvertible {
    /// The paper's rule: mean of class probabilities, global probabilities and centre
    /// offsets; size offsets `p20 - s * (p80 - p20)` over the models (numpy's linear
    /// percentiles), which shrinks boxes more where the models disagree. The paper tuned
    /// `s` to 1.6.
    case percentile(scale: Float)
    /// Mean of every output, then every box scaled about its centre by `shrink`
    /// (the paper's alternative: 0.875).
    case meanShrink(Float)
    /// Each model's boxes after NMS, fused by Weighted Boxes Fusion (the Kaggle chest X-ray
    /// winners' rule), with optional per-model weights (`nil`: all 1).
    case wbf(WeightedBoxesFusion, weights: [Double]?)

    public static let paper = EnsembleMethod.percentile(scale: 1.6)

    public var description: String {
        switch self {
        case .percentile(let s): return "percentile(p20 - \(s) x (p80 - p20))"
        case .meanShrink(let f): return "mean, boxes x \(f)"
        case .wbf(let w, let weights):
            return String(format: "WBF iou %.2f skip %.2f conf %@", w.iouThreshold, w.skipBoxThreshold, w.confidence.rawValue)
                + (weights.map { ", weights " + $0.map { String(format: "%g", $0) }.joined(separator: ":") } ?? "")
        }
    }
}

/// Combines head outputs of several models that share one anchor layout.
public enum EnsembleCombiner {
    /// numpy's default (`linear`) percentile of `values` (sorted in place).
    public static func percentile(_ values: inout [Float], _ q: Float) -> Float {
        values.sort()
        let pos = q / 100 * Float(values.count - 1)
        let lo = Int(pos.rounded(.down)), hi = min(lo + 1, values.count - 1)
        return values[lo] + (values[hi] - values[lo]) * (pos - Float(lo))
    }

    /// One head output whose class logits are the logit of the mean probability, so the
    /// usual post-processor applies. `.wbf` (which fuses boxes, not anchors) averages
    /// everything here, as `.meanShrink` does.
    /// - Precondition: every output has the same shape.
    public static func combine(_ outputs: [HeadOutput], method: EnsembleMethod) -> HeadOutput {
        precondition(!outputs.isEmpty, "EnsembleCombiner: no outputs")
        if outputs.count == 1, case .percentile = method { return outputs[0] }
        let shape = outputs[0].classLogits.shape, dshape = outputs[0].boxDeltas.shape
        for o in outputs {
            precondition(o.classLogits.shape == shape && o.boxDeltas.shape == dshape,
                         "EnsembleCombiner: models disagree on the anchor layout (\(describe(o.classLogits.shape)) vs \(describe(shape)))")
        }
        let m = Float(outputs.count)
        // class probabilities: mean, back to logits
        var probs = [Float](repeating: 0, count: shape.elementCount)
        for o in outputs {
            o.classLogits.withUnsafeBufferPointer { p in for i in 0..<p.count { probs[i] += 1 / (1 + exp(-p[i])) } }
        }
        let logits = probs.map { v -> Float in
            let p = min(max(v / m, 1e-7), 1 - 1e-7)
            return log(p / (1 - p))
        }
        // deltas
        let count = dshape.elementCount
        var deltas = [Float](repeating: 0, count: count)
        let sources = outputs.map { $0.boxDeltas.scalars }
        var column = [Float](repeating: 0, count: outputs.count)
        for i in 0..<count {
            let isSize = i % 4 >= 2
            if case .percentile(let s) = method, isSize {
                for (k, src) in sources.enumerated() { column[k] = src[i] }
                let p20 = percentile(&column, 20), p80 = percentile(&column, 80)
                deltas[i] = p20 - s * (p80 - p20)
            } else {
                var sum: Float = 0
                for src in sources { sum += src[i] }
                deltas[i] = sum / m
            }
        }
        var global: Tensor?
        if let g0 = outputs[0].globalLogProbs {
            var p = [Float](repeating: 0, count: g0.count)
            for o in outputs { if let g = o.globalLogProbs { for (i, v) in g.scalars.enumerated() { p[i] += exp(v) / m } } }
            global = Tensor(shape: g0.shape, scalars: p.map { log(max($0, 1e-12)) })
        }
        return HeadOutput(classLogits: Tensor(shape: shape, scalars: logits), boxDeltas: Tensor(shape: dshape, scalars: deltas),
                          globalLogProbs: global)
    }
}
