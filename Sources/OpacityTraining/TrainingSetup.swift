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
    /// The canonical config stored with the bundle `reference` names (a path or `zoo:NAME`),
    /// or `nil` when it cannot be read (the load error already says why).
    static func bundleConfig(_ reference: String, registry: Registry) -> String? {
        let config: String?
        if let name = Zoo.entryName(inReference: reference) {
            config = try? Zoo.standard().item(name).entry.config
        } else {
            config = try? BundleReader(URL(fileURLWithPath: reference)).info.metadata.config
        }
        return config.flatMap { try? registry.canonical($0) }
    }

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
    /// The processes training together (data parallel); `options.batchSize` is the global
    /// batch, split into one shard per process. Only rank 0 writes files.
    public var group: ProcessGroup = SingleProcess()

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
        /// Images per optimizer step over all processes as the loader builds them:
        /// `options.batchSize`, at most `trainImages`.
        public var batchSize: Int
        public var resumedFrom: URL?
        /// What the run folder held before this setup wrote into it: a run that fails before
        /// its first checkpoint takes back what it wrote with ``RunFolderSnapshot/takeBack()``
        /// (`nil` on ranks that write nothing).
        public var before: RunFolderSnapshot?
    }

    /// The largest fraction of the data set's images that `skipProblemImages` may leave
    /// out (10%); above it the run stops with ``RunError/tooManySkipped(skipped:total:limit:examples:list:)``,
    /// since a run that loses most of its data is almost always a wrong path.
    public static let maximumSkippedFraction = 0.10

    /// How many of the images that cannot be read a run that does not skip them names when it
    /// refuses to start (``RunError/unreadableImages(count:total:examples:)``); the count gives the rest.
    public static let listedUnreadableImages = 10

    /// The setup of an existing run folder, from its `options.json`: the recipe, the data
    /// location, limits, skipping and folds it was started with, so that resuming needs no
    /// data options again.
    /// - Throws: ``RunError/notARun(_:)`` when the folder has no `options.json`,
    ///   ``RunError/noSuchFolder(_:)`` when it does not exist;
    ///   ``RunError/incompatible(_:)`` when it was written by a version that did not record
    ///   where the data is, or the recorded data no longer exists (then name the data again).
    public static func resuming(runDirectory: URL) throws -> TrainingSetup {
        guard let saved = try savedOptions(in: runDirectory) else {
            throw FileManager.default.fileExists(atPath: runDirectory.path) ? RunError.notARun(runDirectory.path) : RunError.noSuchFolder(runDirectory.path)
        }
        let data: DataLocation
        let file = runDirectory.appendingPathComponent("options.json").path
        let nameIt = "name where the data is now: --data DIR (RSNA layout) or --labels CSV --images DIR"
        func gone(_ path: String, _ key: String, _ what: String) -> RunError {
            .incompatible("\(file) records the data \(what) as \"\(key)\": \"\(InputLimits.quoted(path, limit: 300))\", which no longer exists; \(nameIt)")
        }
        let fm = FileManager.default
        if let root = saved.dataRoot {
            guard fm.fileExists(atPath: root) else { throw gone(root, "dataRoot", "folder") }
            data = .rsna(URL(fileURLWithPath: root))
        } else if let l = saved.labelsPath, let i = saved.imagesPath {
            guard fm.fileExists(atPath: l) else { throw gone(l, "labelsPath", "labels CSV") }
            guard fm.fileExists(atPath: i) else { throw gone(i, "imagesPath", "image folder") }
            data = .csv(labels: URL(fileURLWithPath: l), images: URL(fileURLWithPath: i))
        } else if saved.data.hasPrefix("/") {
            // older versions recorded only "data", then the folder's full path
            guard fm.fileExists(atPath: saved.data) else { throw gone(saved.data, "data", "folder (an older run, without \"dataRoot\")") }
            data = .rsna(URL(fileURLWithPath: saved.data))
        } else {
            throw RunError.incompatible("\(file) records the data only by its name, \"data\": \"\(InputLimits.quoted(saved.data, limit: 300))\", "
                                        + "not where it is (an older run, without \"dataRoot\"); \(nameIt)")
        }
        var setup = TrainingSetup(options: saved, data: data, runDirectory: runDirectory)
        setup.limitTrain = saved.limitTrain
        setup.limitValidation = saved.limitValidation
        setup.skipProblemImages = saved.skipProblemImages ?? false
        setup.foldsFile = saved.foldsFile.map { URL(fileURLWithPath: $0) }
        if let s = saved.foldSeed { setup.foldSeed = s }
        return setup
    }

    /// The largest `options.json` read, in bytes (16 MiB): a recipe is about a kilobyte.
    public static let optionsFileBytes = 16 << 20

    /// The recipe saved in a run folder (`options.json`), if any.
    /// - Throws: ``RunError/malformed(_:line:_:)`` when it does not decode or is out of range;
    ///   ``RunError/incompatible(_:)`` as ``optionsData(at:)``.
    public static func savedOptions(in runDirectory: URL) throws -> TrainingOptions? {
        let url = runDirectory.appendingPathComponent("options.json")
        guard let data = try optionsData(at: url) else { return nil }
        do {
            let options = try JSONDecoder().decode(TrainingOptions.self, from: data)
            try options.validate()
            return options
        } catch let e as RunError { throw e } catch {
            throw RunError.malformed(url.path, line: 1, InputLimits.quoted("\(error)", limit: 300))
        }
    }

    /// The bytes of an `options.json`, or `nil` when there is none: read once, refused by its
    /// size over ``optionsFileBytes`` before it is loaded, and by its nesting depth (over
    /// `InputLimits.nestingDepth`) before a decoder sees it.
    /// - Throws: ``RunError/incompatible(_:)`` naming the file when it cannot be read, is a
    ///   folder or is too large; ``RunError/malformed(_:line:_:)`` when it is nested too deep.
    package static func optionsData(at url: URL) throws -> Data? {
        let data: Data
        do {
            data = try BoundedRead.data(of: url, limit: optionsFileBytes, what: "a run's options (options.json)") { _ in }
        } catch DataError.missingFile(_, _) {
            return nil
        } catch let DataError.unreadableFile(path, reason) {
            throw RunError.incompatible("cannot read '\(path)': \(reason)")
        }
        guard InputLimits.jsonDepth(data) <= InputLimits.nestingDepth else {
            throw RunError.malformed(url.path, line: 1, "JSON nested deeper than \(InputLimits.nestingDepth) levels")
        }
        return data
    }

    /// Loads the data, splits the fold, builds the detector and loaders, and (with
    /// `resume`) restores the newest checkpoint of the run folder.
    /// - Throws: data errors naming files and lines, config errors, ``RunError``.
    public func makeTrainer(registry: Registry, resume: Bool = false, observer: TrainingObserver? = nil) throws -> (Trainer, Summary) {
        let canonical = try registry.canonical(options.config)
        var options = self.options
        options.config = canonical
        // everything that shapes the run goes into options.json, so --resume restores it
        switch data {
        case .rsna(let root):
            options.dataRoot = root.standardizedFileURL.path
            options.labelsPath = nil
            options.imagesPath = nil
        case .csv(let labels, let images):
            options.dataRoot = nil
            options.labelsPath = labels.standardizedFileURL.path
            options.imagesPath = images.standardizedFileURL.path
        }
        options.limitTrain = limitTrain
        options.limitValidation = limitValidation
        options.skipProblemImages = skipProblemImages
        options.foldsFile = foldsFile?.standardizedFileURL.path
        options.foldSeed = foldSeed
        try options.validate()
        let augmentation = try AugmentationConfig(parsing: options.augmentation)
        // one run at a time per folder: the lock is taken before anything is written there
        // (under MPI rank 0 holds it for the job: only rank 0 writes the run folder)
        let foldsURL = foldsFile ?? runDirectory.appendingPathComponent("folds.csv")
        let before = group.isLeader ? RunFolderSnapshot(runDirectory: runDirectory, foldsFile: foldsURL) : nil
        let lock = group.isLeader ? try RunLock(runDirectory: runDirectory) : nil
        if let old = lock?.takenOverFrom { observer?.trainingMessage("note: took over the stale lock of a run that is gone (\(old))") }
        return try withExtendedLifetime(lock) {
            do {
                return try build(registry: registry, resume: resume, observer: observer, options: options, canonical: canonical,
                                 augmentation: augmentation, foldsURL: foldsURL, lock: lock, before: before)
            } catch {
                // nothing half-made stays behind (under the lock, so no other run's files are touched)
                before?.takeBack()
                throw error
            }
        }
    }

    private func build(registry: Registry, resume: Bool, observer: TrainingObserver?, options: TrainingOptions, canonical: String,
                             augmentation: AugmentationConfig, foldsURL: URL, lock: RunLock?, before: RunFolderSnapshot?) throws -> (Trainer, Summary) {
        if resume, let saved = try Self.savedOptions(in: runDirectory), saved.dataRoot != nil || saved.labelsPath != nil,
           saved.limitValidation != options.limitValidation
            || saved.limitTrain != options.limitTrain || saved.skipProblemImages.map({ $0 != skipProblemImages }) ?? false {
            throw RunError.incompatible("the run in \(runDirectory.path) was started with other limits or skipping "
                                        + "(limit-train \(saved.limitTrain.map(String.init) ?? "none"), limit-val \(saved.limitValidation.map(String.init) ?? "none"), "
                                        + "skip-unreadable \(saved.skipProblemImages ?? false)); resume it with the same ones, or without naming them")
        }
        // every image is decoded once here, so that files that cannot be read are found before
        // any training, not met batch by batch (on a full data set, hours into the first epoch):
        // with skipping they are listed and counted against the limit; without, the run does
        // not start, and the error names the first few with their reasons
        let dataset = try data.load(skipProblemImages: true, checkImages: true)
        let problems = dataset.report.missingImages.count + dataset.report.unreadableImages.count
        if !skipProblemImages && problems > 0 {
            let listed = dataset.report.missingImages.map { ($0, "missing") } + dataset.report.unreadableImages.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
            throw RunError.unreadableImages(count: problems, total: dataset.report.patients,
                                            examples: listed.prefix(Self.listedUnreadableImages).map { "\(InputLimits.quoted($0.0, limit: 200)): \(InputLimits.quoted($0.1, limit: 1000))" })
        }
        if group.isLeader { try writeSkipped(dataset.report) }
        // folds: reuse the run's file so a resumed run sees the same split
        let folds: Folds
        if FileManager.default.fileExists(atPath: foldsURL.path) {
            folds = try Folds.read(from: foldsURL, expectedCount: options.folds)
        } else {
            folds = try Folds.stratified(dataset, count: options.folds, seed: foldSeed)
            if group.isLeader { try folds.write(to: foldsURL) }
        }
        var (train, validation) = try folds.split(dataset, validationFold: options.fold)
        if let n = limitTrain { train = DetectionDataset(records: Array(train.records.prefix(n)), report: train.report) }
        if let n = limitValidation { validation = DetectionDataset(records: Array(validation.records.prefix(n)), report: validation.report) }
        guard !train.records.isEmpty else { throw RunError.incompatible("fold \(options.fold) leaves no training images in \(data.description)") }
        guard !validation.records.isEmpty else { throw RunError.incompatible("fold \(options.fold) has no validation images in \(data.description)") }

        let detector = try Initializer.withSeed(options.seed) { try registry.makeDetector(canonical) }
        if let w = options.initWeights, !resume || Trainer.latestCheckpoint(in: runDirectory) == nil {
            let report: LoadReport
            do { report = try detector.loadWeights(reference: w) } catch let error as BundleError {
                // a transfer needs the bundle's architecture: say which config that is
                guard case .doesNotFit = error, let theirs = Self.bundleConfig(w, registry: registry), theirs != canonical else { throw error }
                throw RunError.incompatible("\(error)\n--init-weights \(w) holds the model \(theirs), this run builds \(canonical); "
                    + "--init-weights starts every weight from a model of the same architecture: train with --config \"\(theirs)\" (or use --encoder-weights for the encoder alone)")
            }
            observer?.trainingMessage("initial weights from \(w): \(Wording.count(report.loaded.count, "tensor"))")
        }
        if let w = options.encoderWeights, !resume || Trainer.latestCheckpoint(in: runDirectory) == nil {
            let report = try detector.loadEncoderWeights(reference: w)
            observer?.trainingMessage("encoder weights from \(w): \(Wording.count(report.loaded.count, "tensor"))")
        }
        let batch = min(options.batchSize, train.records.count)
        guard batch >= group.size else {
            throw RunError.incompatible("--batch \(options.batchSize) is the global batch (images per step over all processes) and must be at least the \(group.size) processes (each needs an image); use --batch \(group.size) or more")
        }
        let trainSource = try LoaderBatchSource(dataset: train, config: LoaderConfig(
            batchSize: batch, imageSize: detector.inputSize, augmentation: augmentation, shuffle: true, dropLast: true,
            seed: options.seed, workers: workers, prefetch: max(2, workers * 2), skipUnreadable: skipProblemImages,
            shardIndex: group.rank, shardCount: group.size))
        let validationSource = try LoaderBatchSource(dataset: validation, config: LoaderConfig(
            batchSize: options.batchSize, imageSize: detector.inputSize, augmentation: .none, shuffle: false, dropLast: false,
            seed: options.seed, workers: workers, prefetch: max(2, workers * 2), skipUnreadable: skipProblemImages))
        let trainer = Trainer(options: options, detector: detector, train: trainSource, validation: validationSource,
                              runDirectory: runDirectory, store: BundleCheckpointStore(registry: registry))
        trainer.observer = observer
        trainer.lock = lock
        trainer.group = group
        // images the loaders leave out while decoding are announced as they are met (the first
        // few by name), join skipped.csv and count towards the limit
        let setup = self, report = dataset.report
        let announcer = LateSkipAnnouncer(
            known: Set(report.missingImages).union(report.unreadableImages.keys), list: runDirectory.appendingPathComponent("skipped.csv"),
            observer: group.isLeader ? observer : nil)
        trainSource.onSkip = announcer.note
        validationSource.onSkip = announcer.note
        trainer.afterEpoch = { [trainSource, validationSource] in
            announcer.endEpoch()
            let late = trainSource.skipped + validationSource.skipped
            guard !late.isEmpty, setup.group.isLeader else { return }
            var r = report
            for s in late where r.unreadableImages[s.id] == nil { r.unreadableImages[s.id] = s.reason }
            try setup.writeSkipped(r)
        }
        if group.isLeader { try trainer.prepareRunDirectory() }
        var resumed: URL?
        if resume { resumed = try trainer.resume() }
        return (trainer, Summary(dataset: dataset.report, trainImages: train.records.count, validationImages: validation.records.count, batchSize: batch,
                                 resumedFrom: resumed, before: before))
    }

    /// Lists the images the data set left out in `skipped.csv` in the run folder (nothing
    /// when none was), and stops when they are more than ``maximumSkippedFraction``.
    func writeSkipped(_ report: DatasetReport) throws {
        let rows = report.missingImages.map { [$0, "missing"] } + report.unreadableImages.sorted { $0.key < $1.key }.map { [$0.key, $0.value] }
        let url = runDirectory.appendingPathComponent("skipped.csv")
        if rows.isEmpty {
            try? FileManager.default.removeItem(at: url)
            return
        }
        try Data(CSVTable.render(header: ["id", "reason"], rows: rows).utf8).write(to: url, options: .atomic)
        let total = report.patients
        if Double(rows.count) > Self.maximumSkippedFraction * Double(max(total, 1)) {
            throw RunError.tooManySkipped(skipped: rows.count, total: total, limit: Self.maximumSkippedFraction,
                                          examples: rows.prefix(3).map { "\(InputLimits.quoted($0[0], limit: 200)) (\(InputLimits.quoted($0[1], limit: 1000)))" },
                                          list: url.path)
        }
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

/// What a run folder held before a training command wrote into it (the folder itself,
/// `options.json`, the folds file, `checkpoints/`, `log.jsonl`, `best.opb`), so that a run
/// that fails before its first checkpoint leaves nothing half-made: ``takeBack()`` removes
/// what was not there before. `skipped.csv` is kept (the report of what the data lacks).
public struct RunFolderSnapshot: Sendable {
    public let runDirectory: URL
    /// The files this snapshot watches that existed.
    let existed: Set<String>
    let watched: [URL]
    let checkpointsExisted: Bool

    /// Records what exists now.
    public init(runDirectory: URL, foldsFile: URL) {
        self.runDirectory = runDirectory
        let fm = FileManager.default
        watched = [runDirectory.appendingPathComponent("options.json"), foldsFile, runDirectory.appendingPathComponent("log.jsonl"),
                   runDirectory.appendingPathComponent("best.opb")]
        existed = Set(watched.filter { fm.fileExists(atPath: $0.path) || (try? fm.destinationOfSymbolicLink(atPath: $0.path)) != nil }.map(\.path))
        checkpointsExisted = fm.fileExists(atPath: runDirectory.appendingPathComponent("checkpoints").path)
    }

    /// Removes the watched files that did not exist when the snapshot was taken, and an empty
    /// `checkpoints/` that did not, unless the run folder now holds a checkpoint (then it is
    /// a run to resume). The folder itself is removed by the ``RunLock`` that created it,
    /// when it is released with nothing in it.
    public func takeBack() {
        guard Trainer.latestCheckpoint(in: runDirectory) == nil else { return }
        let fm = FileManager.default
        for url in watched where !existed.contains(url.path) { try? fm.removeItem(at: url) }
        let checkpoints = runDirectory.appendingPathComponent("checkpoints")
        if !checkpointsExisted, (try? fm.contentsOfDirectory(atPath: checkpoints.path)) == [] { try? fm.removeItem(at: checkpoints) }
    }
}

/// Tells the user about images that could not be read during training (after the data set's
/// first scan): the first ``shownByName`` by name with the reason, the rest as a count at the
/// end of each epoch, each image once; every line names the file that lists them all.
final class LateSkipAnnouncer: @unchecked Sendable {
    /// How many late images are named one by one (a run with many gets counts instead).
    static let shownByName = 5

    private let lock = NSLock()
    private var seen: Set<String>
    private var named = 0
    private var unnamed = 0
    let list: URL
    let observer: TrainingObserver?

    /// - Parameters:
    ///   - known: the images the first scan already left out (reported with the run's start).
    ///   - list: the file that lists every image left out (the run folder's `skipped.csv`).
    ///   - observer: where the lines go (`nil`: nowhere, as on the ranks that do not report).
    init(known: Set<String>, list: URL, observer: TrainingObserver?) {
        seen = known
        self.list = list
        self.observer = observer
    }

    /// Announces the images in `skipped` not seen before.
    func note(_ skipped: [SkippedImage]) {
        var lines: [String] = []
        lock.lock()
        for s in skipped where seen.insert(s.id).inserted {
            if named < Self.shownByName {
                named += 1
                lines.append(
                    "warning: left out image \(InputLimits.quoted(s.id, limit: 200)): \(InputLimits.quoted(s.reason, limit: 500)) "
                        + "(listed in \(list.path) at the end of the epoch)")
                if named == Self.shownByName { lines.append("warning: further images left out are counted at the end of each epoch") }
            } else {
                unnamed += 1
            }
        }
        lock.unlock()
        for l in lines { observer?.trainingMessage(l) }
    }

    /// Announces how many images were left out since the last count without being named.
    func endEpoch() {
        lock.lock()
        let n = unnamed
        unnamed = 0
        lock.unlock()
        if n > 0 { observer?.trainingMessage("warning: \(Wording.count(n, "more image", plural: "more images")) could not be read and were left out; all are listed, with the reason, in \(list.path)") }
    }
}
