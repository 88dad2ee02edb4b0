import Foundation

/// One feature map an encoder or neck produces: its channel count and its stride
/// (input pixels per feature pixel).
public struct FeatureLevel: Hashable, Codable, Sendable, CustomStringConvertible {
    public var channels: Int
    public var stride: Int
    public init(channels: Int, stride: Int) {
        self.channels = channels
        self.stride = stride
    }
    public var description: String { "\(channels)ch/s\(stride)" }
}

/// The typed contract between an encoder, a neck and a head: the feature maps, in order.
public struct FeatureSpec: Hashable, Codable, Sendable, CustomStringConvertible {
    public var levels: [FeatureLevel]
    public init(_ levels: [FeatureLevel]) { self.levels = levels }
    public var description: String { "[" + levels.map(\.description).joined(separator: ", ") + "]" }
    public var channels: [Int] { levels.map(\.channels) }
    public var strides: [Int] { levels.map(\.stride) }
}

/// An image encoder (backbone): `[N, 1, H, W]` X-rays in `[0, 1]` -> feature maps C2..C5
/// at strides 4, 8, 16 and 32.
///
/// Parameter paths follow timm's `state_dict` for the model of the same name, so ImageNet
/// weights import one to one.
public protocol Encoder: Module {
    /// Channels and strides of the maps ``features(_:)`` returns.
    var featureSpec: FeatureSpec { get }
    /// The feature maps, shallowest first.
    func features(_ images: Tensor) -> [Tensor]
    /// The same maps as ``features(_:)``, computed in checkpoint segments
    /// (``Autograd/checkpoint(_:_:)``) so that training keeps only the segments' boundaries
    /// for backward and recomputes the rest (``GradientCheckpointing``). The default runs the
    /// whole encoder as one segment; an encoder made of stages of blocks does better with one
    /// segment per block. The same values and gradients as ``features(_:)``.
    func checkpointedFeatures(_ images: Tensor) -> [Tensor]
}

extension Encoder {
    /// One segment for the whole encoder: the maps and the images are kept, everything
    /// inside is recomputed in backward.
    public func checkpointedFeatures(_ images: Tensor) -> [Tensor] {
        Autograd.checkpoint([images]) { self.features($0[0]) }
    }
}

/// A neck: encoder features -> a pyramid (FPN P2/P3..P7).
public protocol Neck: Module {
    /// The pyramid's levels.
    var outputSpec: FeatureSpec { get }
    /// Builds the pyramid from the encoder's maps.
    ///
    /// Takes the maps over (`consuming`), so that a neck may let each one go once it is used:
    /// in inference the callers hold no other reference (``Detector/forward(_:)`` keeps only
    /// the deepest map, for the head). A conformance may declare the parameter without
    /// `consuming` too.
    func pyramid(_ features: consuming [Tensor]) -> [Tensor]
}

/// What a detection head predicts for a batch.
public struct HeadOutput {
    /// Per-anchor class logits `[N, A, K]` (before the sigmoid).
    public var classLogits: Tensor
    /// Per-anchor box deltas `[N, A, 4]` in std-normalised units `(dx, dy, dw, dh)`.
    public var boxDeltas: Tensor
    /// Image-level class log-probabilities `[N, 3]`, if the head has a global classifier.
    public var globalLogProbs: Tensor?

    public init(classLogits: Tensor, boxDeltas: Tensor, globalLogProbs: Tensor?) {
        self.classLogits = classLogits
        self.boxDeltas = boxDeltas
        self.globalLogProbs = globalLogProbs
    }
}

/// A detection head: pyramid (plus the encoder's deepest map for a global classifier)
/// -> per-anchor predictions.
public protocol Head: Module {
    /// Anchors per pyramid location.
    var anchorsPerLocation: Int { get }
    /// Predicts for every anchor of every level, level-major then row-major then anchor.
    func predict(pyramid: [Tensor], deepest: Tensor) -> HeadOutput
    /// The same output as ``predict(pyramid:deepest:)``, computed in checkpoint segments
    /// (``Autograd/checkpoint(_:_:)``; see ``GradientCheckpointing``). The default runs the
    /// whole head as one segment; a head whose subnets run level by level does better with a
    /// segment per level and subnet.
    func checkpointedPredict(pyramid: [Tensor], deepest: Tensor) -> HeadOutput
    /// The head's forward pass as stages that a training step runs and differentiates one
    /// after the other (``Detector/trainingLosses(_:targets:parameterReady:willBackward:partDone:)``),
    /// so that one stage's activations are freed before the next stage's exist. Each stage
    /// computes some pieces of ``HeadOutput`` (an output's rows for some pyramid levels) from
    /// the pyramid and the deepest map; together the stages compute every piece once, and their
    /// pieces are the same values ``predict(pyramid:deepest:)`` gives.
    ///
    /// Used only when the loss is ``Loss/isSeparable``. The default, `[]`, means the head has no
    /// such split and runs as one piece.
    func trainingStages(pyramid: [Tensor], deepest: Tensor) -> [HeadStage]
}

extension Head {
    /// One segment for the whole head.
    public func checkpointedPredict(pyramid: [Tensor], deepest: Tensor) -> HeadOutput {
        let outs = Autograd.checkpoint(pyramid + [deepest]) { t in
            let o = self.predict(pyramid: Array(t.dropLast()), deepest: t[t.count - 1])
            return [o.classLogits, o.boxDeltas] + (o.globalLogProbs.map { [$0] } ?? [])
        }
        return HeadOutput(classLogits: outs[0], boxDeltas: outs[1], globalLogProbs: outs.count > 2 ? outs[2] : nil)
    }

    /// No stages: the head runs as one piece.
    public func trainingStages(pyramid: [Tensor], deepest: Tensor) -> [HeadStage] { [] }
}

/// One stage of a head's forward pass in a training step (``Head/trainingStages(pyramid:deepest:)``):
/// a function of the pyramid and the deepest map that computes some pieces of the head's output.
public struct HeadStage {
    /// A piece of ``HeadOutput``: one output's rows for one pyramid level.
    public struct Piece: Hashable, Sendable, CustomStringConvertible {
        /// Which output of ``HeadOutput``.
        public enum Output: Int, Hashable, Sendable, Comparable {
            case classLogits, boxDeltas, globalLogProbs
            public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
        }
        public let output: Output
        /// The pyramid level (index into the pyramid) whose anchors' rows the piece holds:
        /// `[N, H_l W_l A, K]`, concatenated over the levels along axis 1 in level order. 0 for
        /// ``Output/globalLogProbs`` (`[N, 3]`, one piece).
        public let level: Int

        public init(_ output: Output, level: Int = 0) {
            self.output = output
            self.level = level
        }

        public var description: String { output == .globalLogProbs ? "globalLogProbs" : "\(output == .classLogits ? "classLogits" : "boxDeltas") of level \(level)" }
    }

    /// The pieces the stage computes, in the order ``run`` returns them.
    public let pieces: [Piece]
    /// Each piece's shape.
    public let shapes: [[Int]]
    /// Computes the pieces from the pyramid and the deepest map (recording, in training).
    public let run: ([Tensor], Tensor) -> [Tensor]

    /// - Precondition: one shape per piece.
    public init(pieces: [Piece], shapes: [[Int]], run: @escaping ([Tensor], Tensor) -> [Tensor]) {
        precondition(pieces.count == shapes.count, "HeadStage: \(pieces.count) pieces but \(shapes.count) shapes")
        self.pieces = pieces
        self.shapes = shapes
        self.run = run
    }
}

/// Named loss terms and their weighted total.
public struct LossTerms {
    /// The differentiable total.
    public var total: Tensor
    /// Every term's value (`focal`, `regression`, `global`, ...), unweighted.
    public var terms: [(name: String, value: Float)]

    public init(total: Tensor, terms: [(name: String, value: Float)]) {
        self.total = total
        self.terms = terms
    }

    public subscript(name: String) -> Float? { terms.first { $0.name == name }?.value }
}

/// A detection loss: head output + targets -> named terms.
public protocol Loss: Sendable {
    func loss(_ output: HeadOutput, targets: [DetectionTarget], anchors: AnchorSet) -> LossTerms
    /// Whether the total is a sum of terms each of which reads one anchor's row of one output,
    /// or only the global output, with weights and targets that do not depend on the outputs:
    /// then the gradient for one piece of the output (``HeadStage/Piece``) does not depend on
    /// the other pieces' values, and a training step may differentiate the head stage by stage
    /// (``Head/trainingStages(pyramid:deepest:)``). Default `false`.
    var isSeparable: Bool { get }
}

extension Loss {
    /// Not known to be separable.
    public var isSeparable: Bool { false }
}

/// Post-processing: head output -> scored boxes per image, in network-input pixels.
public protocol Postprocessor: Sendable {
    func detections(_ output: HeadOutput, anchors: AnchorSet, imageSize: (height: Int, width: Int)) -> [[Detection]]
}
