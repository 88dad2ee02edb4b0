import Foundation
import OpacityCore
import OpacityPersistence
import OpacityTensor

/// Trains a detector the paper's way: Adam, gradient-norm clipping, ReduceLROnPlateau on
/// the validation regression loss, validation loss and challenge metric every epoch, a
/// checkpoint per epoch, a `best` link, an epoch log in JSON lines.
///
/// Run folder layout: `options.json`, `log.jsonl`, `checkpoints/epoch_NNN.opb`,
/// `checkpoints/interrupted.opb` (after a stop request), `best.opb` (a link to the best
/// epoch's checkpoint).
///
/// A run is deterministic for a seed and thread count: batches come in a fixed order per
/// epoch, augmentations are seeded per sample, dropout masks are reseeded per step, so
/// ``resume()`` continues to the same weights an uninterrupted run reaches.
public final class Trainer {
    public let options: TrainingOptions
    public let detector: Detector
    public let runDirectory: URL
    public weak var observer: TrainingObserver?
    /// Polled after every step; return true to stop after writing a checkpoint.
    public var shouldStop: () -> Bool = { false }
    /// Called after every epoch's files are written (e.g. to report images left out);
    /// throwing stops the run.
    public var afterEpoch: (() throws -> Void)?
    /// The run folder's lock, held as long as the trainer lives.
    public var lock: RunLock?
    /// The processes training this model together (data parallel): each builds its shard
    /// of every global batch, gradients are averaged across them, and only rank 0 writes
    /// the run folder. ``SingleProcess`` (the default) is a plain run.
    public var group: ProcessGroup = SingleProcess()
    /// Seconds this process waited for gradient communication after backward, in all.
    public private(set) var communicationWait: Double = 0
    private var reducer: GradientReducer?
    private var termNames: [String]?
    /// The run as it stood after its last completed step, for ``saveCheckpointNow()`` (`nil`
    /// when the newest checkpoint already holds it). Changed by the training thread only
    /// under `boundaryLock`, together with the weights and optimizer state it describes.
    private var boundary: TrainerState?
    /// The detector's buffers (batch-norm running statistics) at ``boundary``: the next
    /// step's forward changes the live ones.
    private var boundaryBuffers: [(String, Tensor)] = []
    private let boundaryLock = NSLock()
    private let namedParameterList: [(String, Parameter)]
    private let namedBufferList: [(String, Buffer)]

    let trainData: BatchSource
    let validationData: BatchSource
    let store: CheckpointStore
    let optimizer: Adam
    public private(set) var state: TrainerState
    private let dropouts: [Dropout]

    public init(options: TrainingOptions, detector: Detector, train: BatchSource, validation: BatchSource,
                runDirectory: URL, store: CheckpointStore) {
        self.options = options
        self.detector = detector
        self.trainData = train
        self.validationData = validation
        self.runDirectory = runDirectory
        self.store = store
        optimizer = Adam(detector.namedParameters().filter { $0.1.requiresGrad }, learningRate: Float(options.learningRate),
                         weightDecay: Float(options.weightDecay))
        state = TrainerState(learningRate: options.learningRate,
                             scheduler: ReduceLROnPlateau(mode: .min, factor: Float(options.plateauFactor), patience: options.plateauPatience,
                                                          minLR: Float(options.minLearningRate)))
        dropouts = detector.namedModules().compactMap { $0.1 as? Dropout }
        namedParameterList = detector.namedParameters()
        namedBufferList = detector.namedBuffers()
        if options.freezeBatchNorm { detector.freezeBatchNorm() }
    }

    // MARK: Files

    public var logURL: URL { runDirectory.appendingPathComponent("log.jsonl") }
    public var optionsURL: URL { runDirectory.appendingPathComponent("options.json") }
    public var checkpointsURL: URL { runDirectory.appendingPathComponent("checkpoints") }
    public var bestURL: URL { runDirectory.appendingPathComponent("best.opb") }
    public var interruptedURL: URL { checkpointsURL.appendingPathComponent("interrupted.opb") }
    public func checkpointURL(epoch: Int) -> URL { checkpointsURL.appendingPathComponent(String(format: "epoch_%03d.opb", epoch)) }

    /// Creates the run folder, removes temporary files a killed run left behind, and writes
    /// `options.json`.
    public func prepareRunDirectory() throws {
        try FileManager.default.createDirectory(at: checkpointsURL, withIntermediateDirectories: true)
        Self.removeTemporaryFiles(in: runDirectory)
        if Self.latestCheckpoint(in: runDirectory) == nil {
            // records of a run killed before its first checkpoint describe nothing that exists
            try? FileManager.default.removeItem(at: logURL)
            try? FileManager.default.removeItem(at: bestURL)
        }
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        try e.encode(options).write(to: optionsURL, options: .atomic)
    }

    /// The newest checkpoint of a run folder: the interrupted one if it is further along,
    /// else the last epoch's. (A run killed after an epoch's checkpoint and before it
    /// removed `interrupted.opb` leaves an interrupted checkpoint that is behind; it is
    /// passed over.)
    public static func latestCheckpoint(in runDirectory: URL) -> URL? {
        let dir = runDirectory.appendingPathComponent("checkpoints")
        guard let files = try? FileManager.default.contentsOfDirectory(atPath: dir.path) else { return nil }
        let epochs = files.compactMap { f -> Int? in
            guard f.hasPrefix("epoch_"), f.hasSuffix(".opb") else { return nil }
            return Int(f.dropFirst(6).dropLast(4))
        }
        let last = epochs.max().map { dir.appendingPathComponent(String(format: "epoch_%03d.opb", $0)) }
        if files.contains("interrupted.opb") {
            let interrupted = dir.appendingPathComponent("interrupted.opb")
            // the interrupted checkpoint is inside epoch (its epoch + 1)
            if let e = epochs.max(), let st = try? BundleReader(interrupted).info.metadata.extra(BundleCheckpointStore.trainerKey, as: TrainerState.self),
               st.epoch + 1 <= e {
                return last
            }
            return interrupted
        }
        return last
    }

    /// Removes the temporary files of writes a kill interrupted (`.NAME.tmp-*` beside
    /// checkpoints, `.best.opb.tmp`); the files they were to replace are untouched.
    public static func removeTemporaryFiles(in runDirectory: URL) {
        let fm = FileManager.default
        for dir in [runDirectory, runDirectory.appendingPathComponent("checkpoints")] {
            for f in (try? fm.contentsOfDirectory(atPath: dir.path)) ?? [] where f.hasPrefix(".") && f.contains(".tmp") {
                try? fm.removeItem(at: dir.appendingPathComponent(f))
            }
        }
    }

    /// Continues from the newest checkpoint in the run folder (weights, optimizer and
    /// scheduler state, position in the epoch). Log lines past it are dropped.
    /// - Returns: the checkpoint used, or `nil` when the run has none (it starts afresh).
    @discardableResult
    public func resume() throws -> URL? {
        guard let url = Self.latestCheckpoint(in: runDirectory) else { return nil }
        let st = try store.restore(into: detector, optimizer: optimizer, from: url)
        optimizer.learningRate = Float(st.learningRate)
        state = st
        if options.freezeBatchNorm { detector.freezeBatchNorm() }
        if group.isLeader { try repairRecords(upTo: st) }
        observer?.trainingMessage("resumed from \(url.lastPathComponent): \(Wording.count(st.epoch, "epoch")) done" + (st.step > 0 ? ", \(Wording.count(st.step, "step")) into epoch \(st.epoch + 1)" : ""))
        return url
    }

    /// Makes `log.jsonl` and `best.opb` agree with the checkpoints up to `st`: lines past it
    /// are dropped, a line a kill lost is taken back from its epoch's checkpoint (each
    /// checkpoint holds its epoch's line), and `best.opb` is pointed at the best epoch.
    func repairRecords(upTo st: TrainerState) throws {
        var byEpoch: [Int: EpochLog] = [:]
        if FileManager.default.fileExists(atPath: logURL.path) {
            for l in try EpochLog.read(logURL) where l.epoch <= st.epoch && byEpoch[l.epoch] == nil { byEpoch[l.epoch] = l }
        }
        if st.epoch > 0 {
            for e in 1...st.epoch where byEpoch[e] == nil {
                let u = checkpointURL(epoch: e)
                if let s = try? BundleReader(u).info.metadata.extra(BundleCheckpointStore.trainerKey, as: TrainerState.self), let l = s.epochLog {
                    byEpoch[e] = l
                    observer?.trainingMessage("log.jsonl: epoch \(e)'s line restored from \(u.lastPathComponent)")
                }
            }
        }
        let lines = try byEpoch.keys.sorted().map { try byEpoch[$0]!.jsonLine() + "\n" }.joined()
        if !lines.isEmpty || FileManager.default.fileExists(atPath: logURL.path) {
            try Data(lines.utf8).write(to: logURL, options: .atomic)
        }
        if let b = st.bestEpoch, FileManager.default.fileExists(atPath: checkpointURL(epoch: b).path) {
            try linkBest(to: checkpointURL(epoch: b))
        }
    }

    /// Changes the learning rate from the next step on (e.g. when resuming).
    public func setLearningRate(_ lr: Double) {
        optimizer.learningRate = Float(lr)
        state.learningRate = lr
    }

    // MARK: Running

    /// Trains until `options.epochs` epochs are complete.
    /// - Returns: the logs of the epochs run now.
    /// - Throws: ``RunError/nanLoss(epoch:step:terms:)`` (the last good checkpoint is kept),
    ///   ``RunError/interrupted(checkpoint:)`` after a stop request, or file errors.
    public func run() throws -> [EpochLog] {
        var logs: [EpochLog] = []
        while state.epoch < options.epochs {
            logs.append(try runEpoch(state.epoch + 1))
        }
        return logs
    }

    private func seedDropouts(epoch: Int, step: Int) {
        var g = RandomGenerator(seed: options.seed, stream: UInt64(epoch) << 32 | UInt64(step))
        for d in dropouts { d.reseed(g.next()) }
    }

    private func runEpoch(_ epoch: Int) throws -> EpochLog {
        let steps = trainData.batchCount
        let start = state.step
        observer?.trainingWillStartEpoch(epoch, of: options.epochs, steps: steps, startingAt: start)
        var sums = state.partial
        var images = state.partialImages
        var seconds = state.partialSeconds
        var step = start
        let t0 = Date()
        let startSeconds = seconds
        if group.isDistributed { _ = group.takeCommunicationCounters() }
        for result in trainData.batches(epoch: epoch, from: start) {
            let batch = try result.get()
            seedDropouts(epoch: epoch, step: step)
            detector.train()
            let termValues: [(name: String, value: Float)], n: Int, weighted: [(String, Double)]
            if group.isDistributed {
                (termValues, n, weighted) = try distributedStep(batch, epoch: epoch, step: step)
            } else {
                optimizer.zeroGrad()
                // forward, loss and backward; a loss that is not finite stops the run before the
                // backward pass that follows it (the head's stages before it are differentiated
                // already, but no gradient is applied)
                let terms = try detector.trainingLosses(batch.images, targets: batch.targets, willBackward: { terms in
                    if !terms.total.scalar.isFinite {
                        throw RunError.nanLoss(epoch: epoch, step: step + 1, terms: terms.terms.map { "\($0.name) \($0.value)" }.joined(separator: ", "))
                    }
                })
                clipGradientNorm(optimizer.parameters.map(\.1), maxNorm: Float(options.clipNorm))
                n = batch.ids.count
                termValues = terms.terms
                weighted = terms.terms.map { ($0.name, Double($0.value) * Double(n)) }
            }
            // the update and the record of where the run stands change together, so that
            // saveCheckpointNow() (on another thread) sees the state before or after a step
            boundaryLock.lock()
            // a distributed step whose global batch had no readable image computed no gradient
            if !group.isDistributed || n > 0 { optimizer.step() }
            // the gradients are spent: freeing them now keeps them out of the next forward
            // pass's memory peak (one more copy of the parameters)
            optimizer.zeroGrad()
            step += 1
            images += n
            for (name, v) in weighted { sums[name, default: 0] += v }
            seconds = startSeconds + Date().timeIntervalSince(t0)
            boundary = stateInEpoch(step: step, sums: sums, images: images, seconds: seconds)
            boundaryBuffers = namedBufferList.map { ($0.0, $0.1.value) }
            boundaryLock.unlock()
            observer?.trainingDidStep(step, of: steps, terms: termValues, imagesPerSecond: Double(images) / max(seconds, 1e-9))
            let stop = group.isDistributed ? try group.sum([shouldStop() ? 1 : 0])[0] > 0 : shouldStop()
            if stop && step < steps {
                try boundaryLock.withLock {
                    state = stateInEpoch(step: step, sums: sums, images: images, seconds: seconds)
                    if group.isLeader {
                        try store.save(detector: detector, optimizer: optimizer, state: state, options: options,
                                       metrics: [:], to: interruptedURL)
                    }
                    boundary = nil
                }
                throw RunError.interrupted(checkpoint: interruptedURL.path)
            }
        }
        let counters = group.isDistributed ? group.takeCommunicationCounters() : nil
        let trainSummary = summary(sums, images: images)
        let (valSummary, metric) = try validate(epoch)
        if group.isDistributed { try checkWeightsAgree(epoch: epoch) }
        let communication = try counters.map { try communicationFigures($0, stepSeconds: seconds - startSeconds) }
        let log = try boundaryLock.withLock {
            try finishEpoch(epoch, seconds: seconds, images: images, train: trainSummary, val: valSummary, metric: metric,
                            communication: communication)
        }
        guard group.isLeader else { return log }
        observer?.trainingDidFinishEpoch(log)
        try afterEpoch?()
        return log
    }

    /// The trainer state `step` steps into the current epoch, with the epoch's running sums.
    private func stateInEpoch(step: Int, sums: [String: Double], images: Int, seconds: Double) -> TrainerState {
        var st = state
        st.step = step
        st.partial = sums
        st.partialImages = images
        st.partialSeconds = seconds
        st.learningRate = Double(optimizer.learningRate)
        return st
    }

    /// The end of an epoch (under `boundaryLock`): the scheduler step, the state, and on
    /// rank 0 the checkpoint, the `best` link and the log line.
    private func finishEpoch(_ epoch: Int, seconds: Double, images: Int, train trainSummary: LossSummary, val valSummary: LossSummary,
                             metric: MetricSummary, communication: CommunicationFigures?) throws -> EpochLog {
        // the scheduler follows the validation regression loss, as the paper does
        let lrUsed = Double(optimizer.learningRate)
        state.scheduler.step(Float(valSummary.regression), optimizer: optimizer)
        let value = options.bestBy == "loss" ? valSummary.total : metric.best
        let better = state.bestValue.map { options.bestBy == "loss" ? value < $0 : value > $0 } ?? true
        if better {
            state.bestValue = value
            state.bestEpoch = epoch
        }
        state.epoch = epoch
        state.step = 0
        state.partial = [:]
        state.partialImages = 0
        state.partialSeconds = 0
        state.learningRate = Double(optimizer.learningRate)
        let ckpt = checkpointURL(epoch: epoch)
        var log = EpochLog(epoch: epoch, time: ISO8601DateFormatter().string(from: Date()), seconds: seconds, lr: lrUsed,
                           train: trainSummary, val: valSummary, metric: metric, imagesPerSecond: Double(images) / max(seconds, 1e-9),
                           trainImages: images, valImages: validationData.imageCount,
                           checkpoint: "checkpoints/" + ckpt.lastPathComponent, best: better,
                           processes: group.size, globalBatch: options.batchSize)
        log.communication = communication
        log.threads = Compute.threads
        boundary = nil
        guard group.isLeader else { return log }
        // The checkpoint (written atomically) is the record: it holds the epoch's log line
        // and the best epoch, so a kill before the two lines below is repaired by resume().
        state.epochLog = log
        try store.save(detector: detector, optimizer: optimizer, state: state, options: options,
                       metrics: ["val_total": valSummary.total, "val_regression": valSummary.regression, "metric": metric.best,
                                 "metric_threshold": Double(metric.threshold), "epoch": Double(epoch)], to: ckpt)
        state.epochLog = nil
        try? FileManager.default.removeItem(at: interruptedURL)
        if better { try linkBest(to: ckpt) }
        try appendLog(log)
        return log
    }

    /// Writes `checkpoints/interrupted.opb` with the run as it stood after its last
    /// completed step, while ``run()`` goes on computing the next one on another thread
    /// (that step is not waited for and not kept). For a stop that cannot wait for the step
    /// in flight: under `mpirun` a signal reaches the ranks as SIGTERM, followed by SIGKILL
    /// one second later. Call it on the rank that writes the run folder (rank 0).
    ///
    /// Waits while the training thread applies an update or writes a checkpoint, so the
    /// weights, optimizer state, batch-norm statistics and position in the epoch written
    /// belong to the same step; ``resume()`` continues from there exactly.
    /// - Returns: the newest checkpoint: the file written, or the one already holding the
    ///   last completed step (`written` false); `nil` when no step has completed and there is
    ///   no checkpoint.
    /// - Throws: file errors (an earlier checkpoint is left as it was).
    public func saveCheckpointNow() throws -> (url: URL, written: Bool)? {
        try boundaryLock.withLock {
            guard let st = boundary else { return Self.latestCheckpoint(in: runDirectory).map { ($0, false) } }
            let tensors = namedParameterList.map { ($0.0, $0.1.value) } + boundaryBuffers
            // zstd's fast level -5 (about 10% larger than level 1, faster): the time to the
            // launcher's SIGKILL is short
            try store.save(detector: detector, tensors: tensors, optimizer: optimizer, state: st, options: options, metrics: [:],
                           to: interruptedURL, compressionLevel: -5)
            boundary = nil
            return (interruptedURL, true)
        }
    }

    private func summary(_ sums: [String: Double], images: Int) -> LossSummary {
        let n = Double(max(1, images))
        return LossSummary(total: (sums["total"] ?? 0) / n, focal: (sums["focal"] ?? 0) / n,
                           regression: (sums["regression"] ?? 0) / n, global: sums["global"].map { $0 / n })
    }

    /// Validation loss terms (the training code, in evaluation mode) and the metric sweep.
    public func validate(_ epoch: Int) throws -> (LossSummary, MetricSummary) {
        detector.eval()
        defer { detector.train() }
        var sums: [String: Double] = [:]
        var images = 0
        var truth: [[BoundingBox]] = []
        var detections: [[Detection]] = []
        // Sharded: each process takes a contiguous block of whole batches (the batches one
        // process would build), and the per-batch sums are added in batch order afterwards.
        let mine = group.block(validationData.batchCount)
        // the observer hears the whole fold's batch count (rank 0 alone shows progress, and its
        // own share may be empty when there are fewer batches than processes)
        observer?.trainingWillValidate(epoch, batches: validationData.batchCount)
        let batches = mine.count
        var b = 0
        var perBatch: [[String: Double]] = []
        let source = group.isDistributed ? validationData.batches(epoch: 0, indices: mine) : validationData.batches(epoch: 0, from: 0)
        for result in source {
            let batch = try result.get()
            if batch.ids.isEmpty {
                perBatch.append([:])
                continue
            }
            Autograd.inference {
                let out = detector.forward(batch.images)
                let anchors = detector.anchors(height: batch.images.shape[2], width: batch.images.shape[3])
                let terms = detector.lossFunction.loss(out, targets: batch.targets, anchors: anchors)
                var these: [String: Double] = [:]
                for (name, v) in terms.terms { these[name] = Double(v) * Double(batch.ids.count) }
                perBatch.append(these)
                detections += detector.postprocessor.detections(out, anchors: anchors, imageSize: (batch.images.shape[2], batch.images.shape[3]))
            }
            truth += batch.targets.map(\.boxes)
            images += batch.ids.count
            b += 1
            observer?.trainingDidValidate(batch: b, of: batches)
        }
        if group.isDistributed {
            struct Shard: Codable { var terms: [[String: Double]]; var images: Int; var truth: Data; var detections: Data }
            let all = try group.allGather(JSONEncoder().encode(Shard(terms: perBatch, images: images, truth: DetectionWire.encode(truth),
                                                                     detections: DetectionWire.encode(detections))))
            let shards = try all.map { try JSONDecoder().decode(Shard.self, from: $0) }
            perBatch = shards.flatMap(\.terms)
            images = shards.reduce(0) { $0 + $1.images }
            truth = shards.flatMap { DetectionWire.decodeBoxes($0.truth) }
            detections = shards.flatMap { DetectionWire.decode($0.detections) }
        }
        for these in perBatch {
            for (name, v) in these { sums[name, default: 0] += v }
        }
        let sweep = ThresholdSweep(truth: truth, detections: detections)
        let metric = MetricSummary(best: sweep.bestScore, threshold: sweep.bestThreshold,
                                   sweep: zip(sweep.thresholds, sweep.scores).map { [Double($0), $1] })
        return (summary(sums, images: images), metric)
    }

    private func linkBest(to checkpoint: URL) throws {
        let fm = FileManager.default
        let tmp = runDirectory.appendingPathComponent(".best.opb.tmp")
        try? fm.removeItem(at: tmp)
        try fm.createSymbolicLink(atPath: tmp.path, withDestinationPath: "checkpoints/" + checkpoint.lastPathComponent)
        if rename(tmp.path, bestURL.path) != 0 {
            let code = errno
            throw RunError.incompatible("cannot update \(bestURL.path): \(String(cString: strerror(code)))")
        }
    }

    private func appendLog(_ log: EpochLog) throws {
        let line = try log.jsonLine() + "\n"
        if !FileManager.default.fileExists(atPath: logURL.path) { _ = FileManager.default.createFile(atPath: logURL.path, contents: nil) }
        let h = try FileHandle(forWritingTo: logURL)
        defer { try? h.close() }
        try h.seekToEnd()
        try h.write(contentsOf: Data(line.utf8))
        try h.synchronize()
    }
}

extension Trainer {
    /// One data-parallel step: this process's shard forward and backward, gradients
    /// averaged across processes (weighted by shard size) while backward runs, then
    /// clipped; the caller applies the Adam step (the same on every process) when the
    /// global batch had images.
    /// - Returns: the global batch's mean loss terms, its image count, and the terms'
    ///   image-weighted sums.
    func distributedStep(_ batch: TrainingBatch, epoch: Int, step: Int) throws -> ([(name: String, value: Float)], Int, [(String, Double)]) {
        let reducer = self.reducer ?? group.makeGradientReducer(parameters: optimizer.parameters.map(\.1))
        if self.reducer == nil {
            self.reducer = reducer
            if !options.freezeBatchNorm, let sync = group as? any BatchStatisticsReducer {
                // a recomputed segment would exchange the batch statistics a second time
                guard detector.gradientCheckpointing == .none else {
                    throw RunError.incompatible(
                        "\(detector.config): grad_checkpointing=\(detector.gradientCheckpointing.rawValue) cannot be used with synchronised batch norm (data-parallel training with --freeze-bn off); freeze batch norm or use grad_checkpointing=none")
                }
                for (_, m) in detector.namedModules() { (m as? BatchNorm2d)?.synchronizer = sync }
            }
        }
        let n = batch.ids.count
        if n == 0 && !options.freezeBatchNorm {
            throw RunError.incompatible("rank \(group.rank): no readable image in its part of step \(step + 1) of epoch \(epoch); with --freeze-bn off every process needs at least one image per step (batch statistics are computed together)")
        }
        // each process's dropout masks are its samples' masks in the whole batch
        let globalBatch = min(options.batchSize, trainData.imageCount)
        for d in dropouts { d.batchShard = (globalBatch * group.rank / group.size, globalBatch) }
        // The global batch's image count first: each process's gradients are weighted by its
        // share as backward hands them to the reducer.
        let total = Int(try group.sum([Double(n)])[0])
        guard total > 0 else { return ((termNames ?? []).map { (name: $0, value: 0) }, 0, []) }
        optimizer.zeroGrad()
        reducer.begin(weight: Float(Double(n) / Double(total)))
        (group as? any BatchStatisticsReducer)?.gradientShare = Double(n) / Double(total)
        let local = n > 0 ? detector.trainingLosses(batch.images, targets: batch.targets, parameterReady: { reducer.parameterReady($0) }) : nil
        communicationWait += try reducer.finish()
        if termNames == nil {
            // the loss's term names, from any process with images (a shard may be empty)
            let all = try group.allGather(JSONEncoder().encode(local?.terms.map(\.name) ?? []))
            termNames = try all.map { try JSONDecoder().decode([String].self, from: $0) }.first { !$0.isEmpty } ?? []
        }
        let names = termNames ?? []
        let s = try group.sum(names.map { name in local?.terms.first { $0.name == name }.map { Double($0.value) * Double(n) } ?? 0 })
        let terms = names.enumerated().map { (name: $1, value: Float(s[$0] / Double(total))) }
        // a loss that is not finite on any process stops every process (its gradients, reduced
        // already, are not applied)
        if s.contains(where: { !$0.isFinite }) {
            throw RunError.nanLoss(epoch: epoch, step: step + 1, terms: terms.map { "\($0.name) \($0.value)" }.joined(separator: ", "))
        }
        clipGradientNorm(optimizer.parameters.map(\.1), maxNorm: Float(options.clipNorm))
        return (terms, total, names.enumerated().map { ($1, s[$0]) })
    }

    /// Every process's communication counters and step time, gathered (in rank order) into
    /// the epoch's ``CommunicationFigures``.
    /// - Throws: a transport error.
    func communicationFigures(_ mine: CommunicationCounters, stepSeconds: Double) throws -> CommunicationFigures {
        struct Counted: Codable { var counters: CommunicationCounters; var seconds: Double }
        let all = try group.allGather(JSONEncoder().encode(Counted(counters: mine, seconds: stepSeconds)))
            .map { try JSONDecoder().decode(Counted.self, from: $0) }
        return CommunicationFigures(counters: all.map(\.counters), stepSeconds: all.map(\.seconds))
    }

    /// SHA-256 of every parameter and buffer (names, shapes and values, in module order).
    public func weightsDigest() -> String {
        var h = SHA256()
        for (name, t) in detector.stateDict() {
            h.update(Array(name.utf8) + t.shape.flatMap { withUnsafeBytes(of: Int64($0).littleEndian, Array.init) })
            t.withUnsafeBufferPointer { h.update(UnsafeRawBufferPointer($0)) }
        }
        return h.finalize().hex
    }

    /// Compares the weights' digest across processes; they must be identical.
    /// - Throws: ``RunError/incompatible(_:)`` naming the ranks whose weights differ.
    func checkWeightsAgree(epoch: Int) throws {
        let mine = weightsDigest()
        let all = try group.allGather(Data(mine.utf8)).map { String(decoding: $0, as: UTF8.self) }
        let differ = all.indices.filter { all[$0] != all[0] }
        guard differ.isEmpty else {
            throw RunError.incompatible("after epoch \(epoch) the weights of rank(s) \(differ.map(String.init).joined(separator: ", ")) differ from rank 0's (sha256 \(all[0].prefix(16)) vs \(differ.map { all[$0].prefix(16) }.joined(separator: ", ")))")
        }
        observer?.trainingMessage("epoch \(epoch): weights identical on all \(group.size) processes (sha256 \(mine.prefix(16)))")
    }
}
