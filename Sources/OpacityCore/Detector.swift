import Foundation

/// A single-shot detector composed of an encoder, a neck, a head, a loss and a
/// post-processor, built from one config string.
///
/// Parameter paths start with `encoder.`, `neck.` and `head.`; the encoder's part equals
/// timm's `state_dict` names after that prefix.
public final class Detector: Module {
    /// The canonical config string (defaults elided, keys sorted).
    public let config: String
    public let encoder: any Encoder
    public let neck: any Neck
    public let head: any Head
    /// Not a module: has no parameters.
    public let lossFunction: any Loss
    public let postprocessor: any Postprocessor
    public let anchorGenerator: AnchorGenerator
    /// The square training and inference size in pixels.
    public let inputSize: Int
    /// Which parts run as checkpoint segments when the forward pass records (training);
    /// the config key `grad_checkpointing`. No effect on values or on inference.
    public let gradientCheckpointing: GradientCheckpointing

    private let anchorCache = AnchorCache()

    public init(config: String, encoder: any Encoder, neck: any Neck, head: any Head, loss: any Loss,
                postprocessor: any Postprocessor, anchors: AnchorGenerator, inputSize: Int,
                gradientCheckpointing: GradientCheckpointing = .none) {
        self.config = config
        self.encoder = encoder
        self.neck = neck
        self.head = head
        self.lossFunction = loss
        self.postprocessor = postprocessor
        self.anchorGenerator = anchors
        self.inputSize = inputSize
        self.gradientCheckpointing = gradientCheckpointing
    }

    /// The anchors for an input size (computed once per size).
    public func anchors(height: Int, width: Int) -> AnchorSet {
        anchorCache.get(height: height, width: width) { anchorGenerator.anchors(height: height, width: width) }
    }

    /// Runs encoder, neck and head on `[N, 1, H, W]` images in `[0, 1]`; `partDone` is called
    /// with `"encoder"`, `"neck"` and `"head"` as each part ends (for timing by part).
    public func forward(_ images: Tensor, partDone: (String) -> Void = { _ in }) -> HeadOutput {
        let (pyramid, deepest) = pyramid(images, partDone: partDone)
        return predict(pyramid: pyramid, deepest: deepest, images: images, partDone: partDone)
    }

    /// The head in one piece (in checkpoint segments with `grad_checkpointing=head` or `all`
    /// while recording), its anchor count checked against the layout for `images`.
    private func predict(pyramid: [Tensor], deepest: Tensor, images: Tensor, partDone: (String) -> Void) -> HeadOutput {
        let recompute = Autograd.isRecording ? gradientCheckpointing : .none
        let out = recompute.head ? head.checkpointedPredict(pyramid: pyramid, deepest: deepest) : head.predict(pyramid: pyramid, deepest: deepest)
        TensorMemory.releaseTransientDerivedValues()
        partDone("head")
        checkAnchorCount(out.classLogits, images)
        return out
    }

    private func checkAnchorCount(_ classLogits: Tensor, _ images: Tensor) {
        let a = anchors(height: images.shape[2], width: images.shape[3])
        precondition(classLogits.shape[1] == a.count,
                     "Detector.forward: head predicts \(classLogits.shape[1]) anchors but the anchor layout has \(a.count) for \(images.shape[2])x\(images.shape[3])")
    }

    /// The encoder and the neck: the pyramid and the encoder's deepest map.
    private func pyramid(_ images: Tensor, partDone: (String) -> Void) -> (pyramid: [Tensor], deepest: Tensor) {
        precondition(images.rank == 4 && images.shape[1] == 1, "Detector.forward: expects [N, 1, H, W] images, got \(describe(images.shape))")
        // Between parts, the transient weight transforms go: no weight is used in two parts.
        let recompute = Autograd.isRecording ? gradientCheckpointing : .none
        let features = recompute.encoder ? encoder.checkpointedFeatures(images) : encoder.features(images)
        TensorMemory.releaseTransientDerivedValues()
        partDone("encoder")
        let deepest = features[features.count - 1]
        let pyramid: [Tensor]
        if recompute.neck {
            let neck = self.neck
            pyramid = Autograd.checkpoint(features) { neck.pyramid($0) }
        } else {
            pyramid = neck.pyramid(consume features)  // the neck may free each map once used
        }
        TensorMemory.releaseTransientDerivedValues()
        partDone("neck")
        return (pyramid, deepest)
    }

    /// The loss terms for a batch (`targets` in input pixels).
    public func losses(_ images: Tensor, targets: [DetectionTarget]) -> LossTerms {
        let out = forward(images)
        return lossFunction.loss(out, targets: targets, anchors: anchors(height: images.shape[2], width: images.shape[3]))
    }

    /// One training batch's forward pass, loss and backward pass: the loss terms, with every
    /// parameter's gradient accumulated into ``Parameter/grad`` (the returned total no longer
    /// requires gradients).
    ///
    /// With a separable loss (``Loss/isSeparable``) and a head that splits into stages
    /// (``Head/trainingStages(pyramid:deepest:)``), the head runs stage by stage, each stage's
    /// backward right after its forward pass and its loss (the other pieces of the output held
    /// at their values, or zeros before they exist, which a separable loss's gradient for the
    /// stage's pieces does not depend on). The gradients reaching the pyramid are summed over the
    /// stages, then the neck and the encoder are differentiated once. One stage's activations
    /// are then freed before the next stage's exist: a RetinaNet's classification subnet's maps
    /// are gone before its regression subnet runs. The same loss values and gradients as
    /// ``losses(_:targets:)`` and one backward pass, up to the order of the sums into the
    /// pyramid's gradients; no extra forward work, one more evaluation of the loss per stage.
    /// With `grad_checkpointing=head` or `all` the head is not staged.
    ///
    /// - Parameters:
    ///   - images: `[N, 1, H, W]` in `[0, 1]`.
    ///   - targets: `N` targets in input pixels.
    ///   - parameterReady: called for each parameter once its gradient is complete, as in
    ///     ``Tensor/backward(_:parameterReady:)``.
    ///   - willBackward: called with the complete loss terms before the backward pass that
    ///     follows them (with stages: before the last stage's, after the earlier stages'); what
    ///     it throws ends the step with the gradients incomplete.
    ///   - partDone: called as each part ends: `encoder`, `neck`, `head`, `loss` and `backward`
    ///     (with stages, each stage ends `head`, `loss` and `backward` in turn).
    /// - Returns: the loss terms of the whole batch.
    public func trainingLosses(_ images: Tensor, targets: [DetectionTarget], parameterReady: ((Parameter) -> Void)? = nil,
                               willBackward: (LossTerms) throws -> Void,
                               partDone: (String) -> Void = { _ in }) rethrows -> LossTerms {
        try Autograd.recordingGradients {
            let a = anchors(height: images.shape[2], width: images.shape[3])
            let (pyramid, deepest) = pyramid(images, partDone: partDone)
            let stages = lossFunction.isSeparable && !gradientCheckpointing.head ? head.trainingStages(pyramid: pyramid, deepest: deepest) : []
            guard !stages.isEmpty else {
                let out = predict(pyramid: pyramid, deepest: deepest, images: images, partDone: partDone)
                let terms = lossFunction.loss(out, targets: targets, anchors: a)
                partDone("loss")
                try willBackward(terms)
                if terms.total.requiresGrad { terms.total.backward(nil, parameterReady: parameterReady) }
                partDone("backward")
                return LossTerms(total: terms.total.detached(), terms: terms.terms)
            }
            return try stagedLosses(stages, pyramid: pyramid, deepest: deepest, images: images, targets: targets, anchors: a,
                                    parameterReady: parameterReady, willBackward: willBackward, partDone: partDone)
        }
    }

    /// ``trainingLosses(_:targets:parameterReady:willBackward:partDone:)`` with nothing to check
    /// before backward.
    public func trainingLosses(_ images: Tensor, targets: [DetectionTarget], parameterReady: ((Parameter) -> Void)? = nil,
                               partDone: (String) -> Void = { _ in }) -> LossTerms {
        trainingLosses(images, targets: targets, parameterReady: parameterReady, willBackward: { _ in }, partDone: partDone)
    }

    /// ``trainingLosses(_:targets:parameterReady:willBackward:partDone:)`` with the head in stages.
    private func stagedLosses(_ stages: [HeadStage], pyramid: [Tensor], deepest: Tensor, images: Tensor, targets: [DetectionTarget],
                              anchors a: AnchorSet, parameterReady: ((Parameter) -> Void)?,
                              willBackward: (LossTerms) throws -> Void, partDone: (String) -> Void) rethrows -> LossTerms {
        // Every piece's shape, and which output exists.
        var shapes: [HeadStage.Piece: [Int]] = [:]
        for stage in stages {
            for (piece, shape) in zip(stage.pieces, stage.shapes) {
                precondition(shapes.updateValue(shape, forKey: piece) == nil, "Detector: two head stages compute the \(piece)")
            }
        }
        let order = shapes.keys.sorted { ($0.output, $0.level) < ($1.output, $1.level) }
        precondition(order.contains { $0.output == .classLogits } && order.contains { $0.output == .boxDeltas },
                     "Detector: the head's stages compute no class logits or no box deltas")
        // The stages read leaves that stand for the pyramid and the deepest map: their backward
        // passes stop there, and the gradients arriving sum up until the neck's backward.
        let inputs = pyramid + [deepest]
        let leaves = inputs.map { $0.requiresGrad ? $0.requiringGrad() : $0 }
        var values: [HeadStage.Piece: Tensor] = [:]
        var terms: LossTerms?
        for (s, stage) in stages.enumerated() {
            let outs = stage.run(Array(leaves.dropLast()), leaves[leaves.count - 1])
            precondition(outs.count == stage.pieces.count, "Detector: a head stage returned \(outs.count) tensors for \(stage.pieces.count) pieces")
            var current: [HeadStage.Piece: Tensor] = [:]
            for (piece, o) in zip(stage.pieces, outs) {
                precondition(o.shape == shapes[piece]!, "Detector: a head stage computed the \(piece) in shape \(describe(o.shape)), declared \(describe(shapes[piece]!))")
                current[piece] = o
            }
            TensorMemory.releaseTransientDerivedValues()
            partDone("head")
            func field(_ output: HeadStage.Piece.Output) -> Tensor? {
                let parts = order.filter { $0.output == output }.map { p in
                    current[p] ?? values[p] ?? Tensor(shape: shapes[p]!, repeating: 0)
                }
                return parts.isEmpty ? nil : parts.count == 1 ? parts[0] : Tensor.concat(parts, axis: 1)
            }
            let out = HeadOutput(classLogits: field(.classLogits)!, boxDeltas: field(.boxDeltas)!, globalLogProbs: field(.globalLogProbs))
            if s == 0 { checkAnchorCount(out.classLogits, images) }
            let stageTerms = lossFunction.loss(out, targets: targets, anchors: a)
            partDone("loss")
            if s == stages.count - 1 { try willBackward(stageTerms) }
            if stageTerms.total.requiresGrad { stageTerms.total.backward(nil, parameterReady: parameterReady) }
            TensorMemory.releaseTransientDerivedValues()
            partDone("backward")
            for (p, o) in current { values[p] = o.detached() }
            terms = stageTerms
        }
        Autograd.backward(inputs, takingGradientsOf: leaves, parameterReady: parameterReady)
        partDone("backward")
        return LossTerms(total: terms!.total.detached(), terms: terms!.terms)
    }

    /// Scored boxes per image in input pixels, after decoding and NMS (no thresholding
    /// beyond the post-processor's own).
    public func detect(_ images: Tensor) -> [[Detection]] {
        Autograd.inference {
            let out = forward(images)
            return postprocessor.detections(out, anchors: anchors(height: images.shape[2], width: images.shape[3]),
                                            imageSize: (images.shape[2], images.shape[3]))
        }
    }
}

/// Which parts of a detector run as checkpoint segments in training (activation
/// checkpointing, ``Autograd/checkpoint(_:_:)``): a segment keeps only its inputs for
/// backward and runs again when its gradients are needed, trading a second forward pass of
/// the part for the memory of its activations. Values, gradients and inference are the same
/// whichever is chosen. The detector config key `grad_checkpointing` (timm's term), e.g.
/// `retinanet(encoder=resnet34, grad_checkpointing=all)`.
public enum GradientCheckpointing: String, CaseIterable, Sendable, Codable {
    /// Everything is kept for backward (the default).
    case none
    /// The head: the RetinaNet head recomputes its classification subnet level by level (most
    /// of the activations at 512 px are the subnets' four 256-channel maps per level); other
    /// heads run as one segment (``Head/checkpointedPredict(pyramid:deepest:)``).
    case head
    /// The encoder: a segment per residual block (ResNet-50+, SE-ResNeXt, Xception), dual-path
    /// block (DPN) or cell (NASNet), per stage of basic blocks (ResNet-18/34); an encoder without
    /// its own ``Encoder/checkpointedFeatures(_:)`` runs as one segment.
    case encoder
    /// The encoder, the neck (one segment) and the head.
    case all

    /// Whether the encoder runs in segments.
    public var encoder: Bool { self == .encoder || self == .all }
    /// Whether the neck runs as a segment.
    public var neck: Bool { self == .all }
    /// Whether the head runs in segments.
    public var head: Bool { self == .head || self == .all }
}

final class AnchorCache: @unchecked Sendable {
    private let lock = NSLock()
    private var cache: [Int: AnchorSet] = [:]
    func get(height: Int, width: Int, make: () -> AnchorSet) -> AnchorSet {
        let key = height << 20 | width
        lock.lock()
        defer { lock.unlock() }
        if let a = cache[key] { return a }
        let a = make()
        cache[key] = a
        return a
    }
}
