import Foundation
import OpacityCore
import OpacityPersistence
import OpacityData
import OpacityTensor

/// Everything needed to start or resume a training run: recipe, data, folds, run folder.
///
/// ```swift
/// var setup = TrainingSetup(options: TrainingOptions(config: "retinanet(encoder=resnet34, size=256)"),
///                           data: .rsna(URL(fileURLWithPath: "rsna")), runDirectory: URL(fileURLWithPath: "runs/r34"))
/// let trainer = try setup.makeTrainer(registry: try Registry.standard())
/// try trainer.run()
/// ```
public struct TrainingSetup {
    public var options: TrainingOptions
    public var data: DataLocation
    public var runDirectory: URL
    /// Leave out missing or unreadable images (reported) instead of failing.
    public var skipProblemImages = false
    /// Background loader threads.
    public var workers = 2
    /// Use at most this many training / validation images (the first ones of the fold).
    public var limitTrain: Int?
    public var limitValidation: Int?
    /// A folds CSV to use; by default `folds.csv` in the run folder, made on first use.
    public var foldsFile: URL?
    /// The seed of the fold split (42, as the paper's split).
    public var foldSeed: UInt64 = 42

    public init(options: TrainingOptions, data: DataLocation, runDirectory: URL) {
        self.options = options
        self.data = data
        self.runDirectory = runDirectory
    }

    /// What the setup found, for messages.
    public struct Summary {
        public var dataset: DatasetReport
        public var trainImages: Int
        public var validationImages: Int
        public var resumedFrom: URL?
    }

    /// The recipe saved in a run folder (`options.json`), if any.
    public static func savedOptions(in runDirectory: URL) throws -> TrainingOptions? {
        let url = runDirectory.appendingPathComponent("options.json")
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        do { return try JSONDecoder().decode(TrainingOptions.self, from: Data(contentsOf: url)) } catch {
            throw RunError.malformed(url.path, line: 1, "\(error)")
        }
    }

    /// Loads the data, splits the fold, builds the detector and loaders, and (with
    /// `resume`) restores the newest checkpoint of the run folder.
    /// - Throws: data errors naming files and lines, config errors, ``RunError``.
    public func makeTrainer(registry: Registry, resume: Bool = false, observer: TrainingObserver? = nil) throws -> (Trainer, Summary) {
        let canonical = try registry.canonical(options.config)
        var options = self.options
        options.config = canonical
        guard options.fold >= 0 && options.fold < options.folds else {
            throw RunError.incompatible("fold \(options.fold) does not exist with \(options.folds) folds (expected 0...\(options.folds - 1))")
        }
        guard options.bestBy == "metric" || options.bestBy == "loss" else {
            throw RunError.incompatible("best-by '\(options.bestBy)' is not one of metric, loss")
        }
        let augmentation = try AugmentationConfig(parsing: options.augmentation)
        let dataset = try data.load(skipProblemImages: skipProblemImages)
        try FileManager.default.createDirectory(at: runDirectory, withIntermediateDirectories: true)
        // folds: reuse the run's file so a resumed run sees the same split
        let foldsURL = foldsFile ?? runDirectory.appendingPathComponent("folds.csv")
        let folds: Folds
        if FileManager.default.fileExists(atPath: foldsURL.path) {
            folds = try Folds.read(from: foldsURL, expectedCount: options.folds)
        } else {
            folds = try Folds.stratified(dataset, count: options.folds, seed: foldSeed)
            try folds.write(to: foldsURL)
        }
        var (train, validation) = try folds.split(dataset, validationFold: options.fold)
        if let n = limitTrain { train = DetectionDataset(records: Array(train.records.prefix(n)), report: train.report) }
        if let n = limitValidation { validation = DetectionDataset(records: Array(validation.records.prefix(n)), report: validation.report) }
        guard !train.records.isEmpty else { throw RunError.incompatible("fold \(options.fold) leaves no training images in \(data.description)") }
        guard !validation.records.isEmpty else { throw RunError.incompatible("fold \(options.fold) has no validation images in \(data.description)") }

        let detector = try Initializer.withSeed(options.seed) { try registry.makeDetector(canonical) }
        if let w = options.encoderWeights, !resume || Trainer.latestCheckpoint(in: runDirectory) == nil {
            let report = try detector.loadEncoderWeights(reference: w)
            observer?.trainingMessage("encoder weights from \(w): \(report.loaded.count) tensors")
        }
        let batch = min(options.batchSize, train.records.count)
        let trainSource = try LoaderBatchSource(dataset: train, config: LoaderConfig(
            batchSize: batch, imageSize: detector.inputSize, augmentation: augmentation, shuffle: true, dropLast: true,
            seed: options.seed, workers: workers, prefetch: max(2, workers * 2), skipUnreadable: skipProblemImages))
        let validationSource = try LoaderBatchSource(dataset: validation, config: LoaderConfig(
            batchSize: options.batchSize, imageSize: detector.inputSize, augmentation: .none, shuffle: false, dropLast: false,
            seed: options.seed, workers: workers, prefetch: max(2, workers * 2), skipUnreadable: skipProblemImages))
        let trainer = Trainer(options: options, detector: detector, train: trainSource, validation: validationSource,
                              runDirectory: runDirectory, store: BundleCheckpointStore(registry: registry))
        trainer.observer = observer
        try trainer.prepareRunDirectory()
        var resumed: URL?
        if resume { resumed = try trainer.resume() }
        return (trainer, Summary(dataset: dataset.report, trainImages: train.records.count, validationImages: validation.records.count,
                                 resumedFrom: resumed))
    }

    /// A run folder name from the canonical config, fold and seed, e.g.
    /// `retinanet-encoder-resnet50-size-256_fold0_seed1234`.
    public static func runName(canonical: String, fold: Int, seed: UInt64) -> String {
        var s = ""
        for ch in canonical {
            if ch.isLetter || ch.isNumber || ch == "." || ch == "_" { s.append(ch) } else if s.last != "-" { s.append("-") }
        }
        while s.hasSuffix("-") { s.removeLast() }
        return "\(s)_fold\(fold)_seed\(seed)"
    }
}
