import Foundation
import OpacityCore
import OpacityTensor

/// One batch for training or validation.
public struct TrainingBatch {
    /// `[N, 1, S, S]` images in `[0, 1]`.
    public var images: Tensor
    /// Boxes in the pixels of `images`, and image classes.
    public var targets: [DetectionTarget]
    /// The record ids (patient ids) of the images.
    public var ids: [String]

    public init(images: Tensor, targets: [DetectionTarget], ids: [String]) {
        self.images = images
        self.targets = targets
        self.ids = ids
    }
}

/// Batches for an epoch in a fixed order for a seed, so that a resumed run sees exactly
/// the batches an uninterrupted one would.
public protocol BatchSource {
    /// Images in one epoch.
    var imageCount: Int { get }
    /// Batches in one epoch.
    var batchCount: Int { get }
    /// The batches of `epoch` from batch index `start` on; a batch that cannot be built
    /// (an unreadable image when skipping is off) comes as a failure, and the run stops with it.
    func batches(epoch: Int, from start: Int) -> AnyIterator<Result<TrainingBatch, Error>>
    /// Exactly the batches `indices` of `epoch`, one element per index (a batch whose images
    /// were all skipped comes empty): the part of a sharded validation a process owns.
    func batches(epoch: Int, indices: Range<Int>) -> AnyIterator<Result<TrainingBatch, Error>>
}

extension BatchSource {
    /// Batches `indices` taken from ``batches(epoch:from:)`` (a source that drops empty
    /// batches should provide its own).
    public func batches(epoch: Int, indices: Range<Int>) -> AnyIterator<Result<TrainingBatch, Error>> {
        let it = batches(epoch: epoch, from: indices.lowerBound)
        var left = indices.count
        return AnyIterator {
            guard left > 0 else { return nil }
            left -= 1
            return it.next()
        }
    }
}

/// The recipe of a training run. Defaults follow the paper.
public struct TrainingOptions: Codable, Sendable, Equatable {
    /// The detector config string.
    public var config: String
    public var epochs = 16
    public var batchSize = 4
    /// Adam's learning rate (the paper: 1e-5, with ImageNet-pretrained encoders).
    public var learningRate: Double = 1e-5
    public var weightDecay: Double = 0
    /// Gradient-norm clip (the paper: 0.05).
    public var clipNorm: Double = 0.05
    /// ReduceLROnPlateau on the validation regression loss (the paper: patience 4, factor 0.2).
    public var plateauPatience = 4
    public var plateauFactor: Double = 0.2
    public var minLearningRate: Double = 0
    /// Keep batch-norm statistics fixed (the paper freezes them; with an encoder trained
    /// from scratch they are better left to train).
    public var freezeBatchNorm = true
    public var seed: UInt64 = 1234
    /// Which epoch's checkpoint `best` points to: `metric` (validation metric) or `loss`
    /// (validation total loss).
    public var bestBy = "metric"
    /// Free-form provenance: data folder, fold, augmentation.
    public var data: String = ""
    public var fold = 0
    public var folds = 4
    public var augmentation = "heavy"
    /// Encoder bundle to start from (transfer), if any.
    public var encoderWeights: String?
    /// A whole detector bundle (or `zoo:NAME`) of the same architecture to start every
    /// weight from (transfer from another detector), if any.
    public var initWeights: String?

    // Everything else that shapes a run, saved so that `--resume` needs none of it again
    // (absent in run folders of older versions).

    /// The data: an RSNA-layout folder (absolute path), or a boxes CSV with its image folder.
    public var dataRoot: String?
    public var labelsPath: String?
    public var imagesPath: String?
    /// At most this many training / validation images of the fold.
    public var limitTrain: Int?
    public var limitValidation: Int?
    /// Whether missing or unreadable images were left out.
    public var skipProblemImages: Bool?
    /// The folds file and the seed of the fold split.
    public var foldsFile: String?
    public var foldSeed: UInt64?

    public init(config: String) { self.config = config }

    /// The largest batch, epoch count and patience a run may ask for.
    public static let maximumBatchSize = 4096, maximumEpochs = 100_000, maximumPatience = 10_000

    /// Checks every number of the recipe (finite, in range) before anything is built.
    /// - Throws: ``RunError/invalidOption(name:value:expected:)`` naming the option, its valid
    ///   range and, where one exists, the nearest valid value (an integer or a closed range's
    ///   bound; for an open range or a non-finite value, the usual setting).
    public func validate() throws {
        func check(_ ok: Bool, _ name: String, _ value: String, _ expected: String, nearest: String? = nil) throws {
            let hint = nearest.map { " (nearest valid: \($0))" } ?? ""
            if !ok { throw RunError.invalidOption(name: name, value: InputLimits.quoted(value), expected: expected + hint) }
        }
        // a whole number as typed (`--clip 0`, not `0.0`)
        let plain: (Double) -> String = Wording.plainNumber
        func clamp(_ v: Int, _ r: ClosedRange<Int>) -> String { "\(min(max(v, r.lowerBound), r.upperBound))" }
        func clamp(_ v: Double, _ lo: Double, _ hi: Double) -> String { v.isNaN ? "\(lo)" : "\(min(max(v, lo), hi))" }
        try check(epochs >= 1 && epochs <= Self.maximumEpochs, "epochs", "\(epochs)", "an integer in 1...\(Self.maximumEpochs)",
                  nearest: clamp(epochs, 1...Self.maximumEpochs))
        try check(batchSize >= 1 && batchSize <= Self.maximumBatchSize, "batch", "\(batchSize)", "an integer in 1...\(Self.maximumBatchSize)",
                  nearest: clamp(batchSize, 1...Self.maximumBatchSize))
        // (no nearest positive number: the paper's rate instead)
        try check(learningRate.isFinite && learningRate > 0, "lr", plain(learningRate), "a finite positive number, e.g. 1e-5 (the paper's)")
        try check(weightDecay.isFinite && weightDecay >= 0 && weightDecay <= 1, "weight-decay", plain(weightDecay), "a number in [0, 1]",
                  nearest: weightDecay.isInfinite || weightDecay.isNaN ? nil : clamp(weightDecay, 0, 1))
        try check(clipNorm.isFinite && clipNorm > 0 && clipNorm <= 1e6, "clip", plain(clipNorm),
                  "a number in (0, 1e6]" + (clipNorm > 1e6 ? "" : ", e.g. 0.05 (the paper's)"),
                  nearest: clipNorm > 1e6 ? "1e6" : nil)
        try check(plateauPatience >= 0 && plateauPatience <= Self.maximumPatience, "patience", "\(plateauPatience)",
                  "an integer in 0...\(Self.maximumPatience)", nearest: clamp(plateauPatience, 0...Self.maximumPatience))
        try check(plateauFactor.isFinite && plateauFactor > 0 && plateauFactor < 1, "factor", plain(plateauFactor), "a number in (0, 1), e.g. 0.2")
        try check(minLearningRate.isFinite && minLearningRate >= 0 && minLearningRate <= learningRate, "min-lr", plain(minLearningRate),
                  "a number in [0, lr]", nearest: minLearningRate.isNaN ? nil : clamp(minLearningRate, 0, learningRate))
        try check(folds >= 2 && folds <= 100, "folds", "\(folds)", "an integer in 2...100", nearest: clamp(folds, 2...100))
        try check(fold >= 0 && fold < folds, "fold", "\(fold)", "an integer in 0...\(folds - 1)", nearest: clamp(fold, 0...max(0, folds - 1)))
        try check(bestBy == "metric" || bestBy == "loss", "best-by", bestBy, "metric or loss")
        if let n = limitTrain { try check(n >= 1, "limit-train", "\(n)", "a positive integer") }
        if let n = limitValidation { try check(n >= 1, "limit-val", "\(n)", "a positive integer") }
    }
}

/// Everything a trainer needs to continue: saved in every checkpoint.
public struct TrainerState: Codable, Equatable {
    /// Epochs completed.
    public var epoch = 0
    /// Steps completed in the current (unfinished) epoch; 0 at epoch boundaries.
    public var step = 0
    public var learningRate: Double
    public var bestValue: Double?
    public var bestEpoch: Int?
    public var scheduler: ReduceLROnPlateau
    /// Running sums of the unfinished epoch's training terms.
    public var partial: [String: Double] = [:]
    public var partialImages = 0
    public var partialSeconds: Double = 0
    /// The log line of the epoch this checkpoint ends, kept in the checkpoint so that a run
    /// killed after the checkpoint and before its log line was written gets it back on resume.
    public var epochLog: EpochLog?

    public static func == (a: TrainerState, b: TrainerState) -> Bool {
        a.epoch == b.epoch && a.step == b.step && a.learningRate == b.learningRate && a.bestEpoch == b.bestEpoch
    }
}

/// What a trainer reports while it runs.
public protocol TrainingObserver: AnyObject {
    func trainingWillStartEpoch(_ epoch: Int, of epochs: Int, steps: Int, startingAt step: Int)
    func trainingDidStep(_ step: Int, of steps: Int, terms: [(name: String, value: Float)], imagesPerSecond: Double)
    func trainingWillValidate(_ epoch: Int, batches: Int)
    func trainingDidValidate(batch: Int, of batches: Int)
    func trainingDidFinishEpoch(_ log: EpochLog)
    func trainingMessage(_ text: String)
}

extension TrainingObserver {
    public func trainingWillStartEpoch(_ epoch: Int, of epochs: Int, steps: Int, startingAt step: Int) {}
    public func trainingDidStep(_ step: Int, of steps: Int, terms: [(name: String, value: Float)], imagesPerSecond: Double) {}
    public func trainingWillValidate(_ epoch: Int, batches: Int) {}
    public func trainingDidValidate(batch: Int, of batches: Int) {}
    public func trainingDidFinishEpoch(_ log: EpochLog) {}
    public func trainingMessage(_ text: String) {}
}

/// Saves and restores training checkpoints (model, optimizer and trainer state).
public protocol CheckpointStore {
    /// Writes a checkpoint atomically.
    func save(detector: Detector, optimizer: any Optimizer, state: TrainerState, options: TrainingOptions,
              metrics: [String: Double], to url: URL) throws
    /// Writes a checkpoint atomically with `tensors` (the names and order of
    /// `detector.stateDict()`) as the detector's weights and buffers, at a zstd
    /// `compressionLevel` (1 to 19, or zstd's faster negative levels).
    func save(detector: Detector, tensors: [(String, Tensor)], optimizer: any Optimizer, state: TrainerState, options: TrainingOptions,
              metrics: [String: Double], to url: URL, compressionLevel: Int) throws
    /// Reads a checkpoint written by ``save(detector:optimizer:state:options:metrics:to:)``
    /// into `detector` and `optimizer`, and returns the trainer state.
    func restore(into detector: Detector, optimizer: any Optimizer, from url: URL) throws -> TrainerState
}
