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
        let out = recompute.head ? head.checkpointedPredict(pyramid: pyramid, deepest: deepest) : head.predict(pyramid: pyramid, deepest: deepest)
        TensorMemory.releaseTransientDerivedValues()
        partDone("head")
        let a = anchors(height: images.shape[2], width: images.shape[3])
        precondition(out.classLogits.shape[1] == a.count,
                     "Detector.forward: head predicts \(out.classLogits.shape[1]) anchors but the anchor layout has \(a.count) for \(images.shape[2])x\(images.shape[3])")
        return out
    }

    /// The loss terms for a batch (`targets` in input pixels).
    public func losses(_ images: Tensor, targets: [DetectionTarget]) -> LossTerms {
        let out = forward(images)
        return lossFunction.loss(out, targets: targets, anchors: anchors(height: images.shape[2], width: images.shape[3]))
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
