import Foundation
import OpacityCore
import OpacityPersistence
import OpacityTensor

/// Checkpoints as weight bundles: the detector's weights, the optimizer state (group
/// `optimizer`), and the trainer state and recipe as JSON in the metadata, with the
/// provenance (data, fold, epoch, seed) and the epoch's metrics.
public struct BundleCheckpointStore: CheckpointStore {
    public static let trainerKey = "trainer"
    public static let recipeKey = "training"
    public let registry: Registry

    public init(registry: Registry) { self.registry = registry }

    public func save(detector: Detector, optimizer: any Optimizer, state: TrainerState, options: TrainingOptions,
                     metrics: [String: Double], to url: URL) throws {
        try write(detector: detector, tensors: nil, optimizer: optimizer, state: state, options: options, metrics: metrics, to: url,
                 compressionLevel: 3)
    }

    public func save(detector: Detector, tensors: [(String, Tensor)], optimizer: any Optimizer, state: TrainerState,
                     options: TrainingOptions, metrics: [String: Double], to url: URL, compressionLevel: Int) throws {
        try write(detector: detector, tensors: tensors, optimizer: optimizer, state: state, options: options, metrics: metrics,
                 to: url, compressionLevel: compressionLevel)
    }

    private func write(detector: Detector, tensors: [(String, Tensor)]?, optimizer: any Optimizer, state: TrainerState,
                      options: TrainingOptions, metrics: [String: Double], to url: URL, compressionLevel: Int) throws {
        var meta = BundleMetadata(provenance: Provenance(data: options.data, fold: options.fold, folds: options.folds,
                                                        epoch: state.epoch, seed: options.seed),
                                  metrics: metrics)
        meta.extra[Self.trainerKey] = try JSONValue(encoding: state)
        meta.extra[Self.recipeKey] = try JSONValue(encoding: options)
        try Checkpoint.save(detector, optimizer: optimizer, scheduler: state.scheduler, metadata: meta, tensors: tensors, to: url,
                            compressionLevel: compressionLevel)
    }

    public func restore(into detector: Detector, optimizer: any Optimizer, from url: URL) throws -> TrainerState {
        let ckpt = try Checkpoint.load(from: url, registry: registry)
        guard ckpt.detector.config == detector.config else {
            throw RunError.incompatible("\(url.path) holds \(ckpt.detector.config), but this run trains \(detector.config)")
        }
        try detector.load(Dictionary(uniqueKeysWithValues: ckpt.detector.stateDict()))
        try ckpt.restore(optimizer: optimizer)
        guard let state = try ckpt.metadata.extra(Self.trainerKey, as: TrainerState.self) else {
            throw RunError.incompatible("\(url.path) is a detector bundle without trainer state; it cannot resume a run")
        }
        return state
    }

    /// The training recipe stored in a checkpoint, if any.
    public static func recipe(of url: URL) throws -> TrainingOptions? {
        try BundleReader(url).info.metadata.extra(recipeKey, as: TrainingOptions.self)
    }
}
