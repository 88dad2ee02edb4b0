import Foundation
import OpacityTensor
import OpacityCore

/// A training checkpoint: a detector bundle that also holds optimizer state (group
/// `optimizer`), scheduler state (JSON under metadata extra `scheduler`) and any other
/// tensor groups, so a run resumes exactly.
///
/// ```swift
/// // after an epoch
/// var meta = BundleMetadata(provenance: Provenance(data: "rsna", fold: 0, epoch: epoch, seed: seed),
///                           metrics: ["val_loss": valLoss, "map": map])
/// try Checkpoint.save(detector, optimizer: adam, scheduler: plateau, metadata: meta, to: url)
///
/// // resuming
/// let ckpt = try Checkpoint.load(from: url, registry: registry)
/// let adam = Adam(ckpt.detector.namedParameters())
/// try ckpt.restore(optimizer: adam)
/// let plateau = try ckpt.scheduler(as: ReduceLROnPlateau.self)
/// ckpt.detector.train()
/// ```
/// A checkpoint is an ordinary detector bundle: ``Detector/load(from:registry:options:)``
/// and the zoo read it and skip the optimizer state.
public struct Checkpoint {
    /// The metadata key under which the scheduler's JSON is stored.
    public static let schedulerKey = "scheduler"
    /// The metadata key under which the optimizer's type name is stored.
    public static let optimizerKey = "optimizer"

    /// The detector with its weights loaded, in evaluation mode.
    public let detector: Detector
    /// What the strict load of the detector did.
    public let report: LoadReport
    /// The bundle's header, metadata and table.
    public let info: BundleInfo
    /// Tensor groups other than `model` (e.g. `optimizer`), by group and name.
    public let groups: [String: [String: Tensor]]

    /// The metadata (config, provenance, metrics, extras).
    public var metadata: BundleMetadata { info.metadata }

    /// The optimizer state saved with the checkpoint (empty when none was).
    public var optimizerState: [String: Tensor] { groups[WeightBundle.optimizerGroup] ?? [:] }

    /// Saves a detector with optional optimizer and scheduler state in one bundle.
    ///
    /// - Parameters:
    ///   - detector: the model; its config string is stored.
    ///   - optimizer: its ``Optimizer/stateDict()`` is stored exactly (f32) as group `optimizer`.
    ///   - scheduler: any `Encodable` scheduler (e.g. `ReduceLROnPlateau`), stored as JSON.
    ///   - metadata: provenance, metrics and other extras.
    ///   - storage: the policy for the model's weights (optimizer state is always f32).
    ///   - extraGroups: further tensor groups to keep (e.g. EMA weights).
    ///   - tensors: the weights and buffers to store instead of `detector.stateDict()`
    ///     (same names and order), e.g. a snapshot taken while the detector keeps training.
    ///   - url: the file, written atomically.
    /// - Returns: what was written.
    /// - Throws: ``BundleError``.
    @discardableResult
    public static func save(_ detector: Detector, optimizer: (any Optimizer)? = nil, scheduler: (any Encodable)? = nil,
                            metadata: BundleMetadata = BundleMetadata(), storage: StoragePolicy = .fp32,
                            extraGroups: [TensorGroup] = [], tensors: [(String, Tensor)]? = nil, to url: URL,
                            compressionLevel: Int = 3) throws -> BundleSummary {
        var m = metadata
        m.kind = .detector
        m.config = detector.config
        if let scheduler {
            do { m.extra[schedulerKey] = try JSONValue(encoding: scheduler) } catch {
                throw BundleError.extraValue(file: url.path, key: schedulerKey, reason: "cannot encode \(type(of: scheduler)): \(error)")
            }
        }
        var groups = [TensorGroup(WeightBundle.modelGroup, tensors ?? detector.stateDict(), storage: storage)]
        if let optimizer {
            m.extra[optimizerKey] = .object(["type": .string(String(describing: type(of: optimizer)))])
            groups.append(TensorGroup(WeightBundle.optimizerGroup, optimizer.stateDict().sorted { $0.key < $1.key }, storage: .fp32))
        }
        groups += extraGroups
        return try WeightBundle.write(to: url, metadata: m, groups: groups, compressionLevel: compressionLevel)
    }

    /// Loads a checkpoint: builds the detector from the stored config, loads it strictly
    /// and reads every other tensor group.
    /// - Throws: ``BundleError`` as ``Detector/load(from:registry:options:)`` does.
    public static func load(from url: URL, registry: Registry, options: LoadOptions = .strict) throws -> Checkpoint {
        let reader = try BundleReader(url)
        let info = reader.info
        guard info.metadata.kind == .detector else {
            throw BundleError.wrongKind(file: url.path, expected: "detector", found: info.metadata.kind.rawValue)
        }
        let detector = try Detector.checkedBuild(info, registry: registry, options: options, file: url.path)
        var groups = try reader.tensors()
        let state = groups.removeValue(forKey: WeightBundle.modelGroup) ?? [:]
        let report: LoadReport
        do { report = try detector.load(state, options: options) } catch let e as LoadError {
            throw BundleError.doesNotFit(file: url.path, report: e.report)
        }
        detector.eval()
        return Checkpoint(detector: detector, report: report, info: info, groups: groups)
    }

    /// Loads a checkpoint into an existing detector (e.g. to resume a run) without building
    /// another one: the stored config must equal `detector.config`, the weights load strictly,
    /// and every other tensor group is read.
    /// - Returns: the checkpoint, whose ``detector`` is `detector` (its mode is unchanged).
    /// - Throws: ``BundleError/configMismatch(file:bundle:model:)``, ``BundleError/doesNotFit(file:report:)``
    ///   (nothing loaded), or a file error.
    public static func load(from url: URL, into detector: Detector, options: LoadOptions = .strict) throws -> Checkpoint {
        let reader = try BundleReader(url)
        let info = reader.info
        guard info.metadata.kind == .detector else {
            throw BundleError.wrongKind(file: url.path, expected: "detector", found: info.metadata.kind.rawValue)
        }
        guard Detector.strippingEncoderWeights(info.metadata.config) == detector.config else {
            throw BundleError.configMismatch(file: url.path, bundle: info.metadata.config, model: detector.config)
        }
        try Detector.checkTable(info, against: detector, options: options, file: url.path)
        var groups = try reader.tensors()
        let state = groups.removeValue(forKey: WeightBundle.modelGroup) ?? [:]
        let report: LoadReport
        do { report = try detector.load(state, options: options) } catch let e as LoadError {
            throw BundleError.doesNotFit(file: url.path, report: e.report)
        }
        return Checkpoint(detector: detector, report: report, info: info, groups: groups)
    }

    /// Restores the saved optimizer state into `optimizer` (built over the same named
    /// parameters, e.g. `Adam(checkpoint.detector.namedParameters())`).
    /// - Throws: ``BundleError/missingGroup(file:group:available:)`` when the checkpoint has
    ///   no optimizer state, ``BundleError/extraValue(file:key:reason:)`` when it was saved
    ///   from another optimizer type, or the optimizer's own error for mis-shaped state.
    public func restore(optimizer: any Optimizer) throws {
        guard let state = groups[WeightBundle.optimizerGroup] else {
            throw BundleError.missingGroup(file: info.url.path, group: WeightBundle.optimizerGroup, available: info.groups)
        }
        let want = String(describing: type(of: optimizer))
        if case .object(let o)? = metadata.extra[Checkpoint.optimizerKey], case .string(let saved)? = o["type"], saved != want {
            throw BundleError.extraValue(file: info.url.path, key: Checkpoint.optimizerKey,
                                         reason: "the checkpoint holds \(saved) state, which cannot be restored into \(want)")
        }
        try optimizer.loadStateDict(state)
    }

    /// Decodes the saved scheduler state, or `nil` if none was saved.
    /// - Throws: ``BundleError/extraValue(file:key:reason:)`` when it does not decode as `T`.
    public func scheduler<T: Decodable>(as type: T.Type) throws -> T? {
        do { return try metadata.extra(Checkpoint.schedulerKey, as: type) } catch BundleError.extraValue(_, let key, let reason) {
            throw BundleError.extraValue(file: info.url.path, key: key, reason: reason)
        }
    }
}
