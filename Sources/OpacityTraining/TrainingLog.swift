import Foundation
import OpacityCore
import OpacityData

/// Loss terms averaged over an epoch's images.
public struct LossSummary: Codable, Sendable, Equatable {
    public var total: Double
    public var focal: Double
    public var regression: Double
    public var global: Double?

    public init(total: Double, focal: Double, regression: Double, global: Double?) {
        self.total = total
        self.focal = focal
        self.regression = regression
        self.global = global
    }
}

/// The challenge metric over a sweep of score thresholds.
public struct MetricSummary: Codable, Sendable, Equatable {
    /// The best score over the sweep.
    public var best: Double
    /// The score threshold that gave it.
    public var threshold: Float
    /// Every `[threshold, score]` pair of the sweep.
    public var sweep: [[Double]]

    public init(best: Double, threshold: Float, sweep: [[Double]]) {
        self.best = best
        self.threshold = threshold
        self.sweep = sweep
    }
}

/// One line of a run's `log.jsonl`: everything measured in one epoch.
///
/// Schema (all keys always present unless marked optional):
/// - `epoch` (int, from 1), `time` (ISO 8601 end time), `seconds` (epoch wall time),
/// - `lr` (learning rate used in the epoch),
/// - `train` / `val`: `{total, focal, regression, global?}` mean loss terms (same code for both),
/// - `metric`: `{best, threshold, sweep: [[threshold, score], ...]}` on the validation images,
/// - `images_per_second` (training throughput), `train_images`, `val_images`,
/// - `checkpoint` (path of the epoch's bundle, relative to the run folder), `best` (bool: this
///   epoch is the best so far),
/// - `processes` and `global_batch` (optional): data-parallel processes and images per step
///   over all of them,
/// - `communication` (optional, data-parallel runs only): ``CommunicationFigures``.
/// - `threads` (optional): compute threads per process.
public struct EpochLog: Codable, Sendable, Equatable {
    public var epoch: Int
    public var time: String
    public var seconds: Double
    public var lr: Double
    public var train: LossSummary
    public var val: LossSummary
    public var metric: MetricSummary
    public var imagesPerSecond: Double
    public var trainImages: Int
    public var valImages: Int
    public var checkpoint: String
    public var best: Bool
    /// Processes that trained the epoch (absent in logs from before data parallelism: 1).
    public var processes: Int?
    /// Images per optimizer step over all processes (`--batch`); each process builds
    /// `globalBatch / processes` of them (absent in older logs).
    public var globalBatch: Int?
    /// What the processes spent on communication in the epoch's training steps (absent in
    /// one-process runs and older logs).
    public var communication: CommunicationFigures?
    /// Compute threads per process that trained the epoch (absent in older logs). Sums run in
    /// another order with another count, so `--resume` says when it differs from the run's.
    public var threads: Int?

    enum CodingKeys: String, CodingKey {
        case epoch, time, seconds, lr, train, val, metric
        case imagesPerSecond = "images_per_second"
        case trainImages = "train_images"
        case valImages = "val_images"
        case checkpoint, best, processes
        case globalBatch = "global_batch"
        case communication, threads
    }

    /// The JSON line (no trailing newline), keys sorted.
    public func jsonLine() throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: try e.encode(self), as: UTF8.self)
    }

    /// The longest line of a `log.jsonl`, in bytes (1 MiB): one epoch's record is a few
    /// kilobytes (its threshold sweep the most of it).
    public static let lineBytes = 1 << 20
    /// The largest `log.jsonl`, in bytes (256 MiB): tens of thousands of epochs.
    public static let logBytes = 256 << 20

    /// Reads every line of a `log.jsonl`, once, in pieces of 1 MiB: each line is decoded when
    /// its end is read, so the file is never held whole, and a line longer than
    /// ``lineBytes`` is refused after reading at most that much of it (a 100 MB line is not
    /// loaded); a record nested deeper than `InputLimits.nestingDepth` is refused before it
    /// is decoded. Blank lines are skipped; lines are counted from 1, blank ones included.
    /// - Throws: ``RunError/malformed(_:line:_:)`` naming the file and line of a malformed or
    ///   over-long record; ``RunError/missingFile(_:_:)`` when there is no such file;
    ///   ``RunError/incompatible(_:)`` when it cannot be read, is a folder or holds more than
    ///   ``logBytes``.
    public static func read(_ url: URL) throws -> [EpochLog] {
        try readNumbered(url).map(\.log)
    }

    /// Reads every line of a `log.jsonl` as ``read(_:)`` does, each record with its line
    /// number in the file (from 1, blank lines counted), in file order.
    /// - Throws: as ``read(_:)``.
    public static func readNumbered(_ url: URL) throws -> [(line: Int, log: EpochLog)] {
        let path = url.path
        var out: [(line: Int, log: EpochLog)] = []
        var line = 1
        var current: [UInt8] = []
        func endLine() throws {
            defer {
                current.removeAll(keepingCapacity: true)
                line += 1
            }
            guard current.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) else { return }
            guard InputLimits.jsonDepth(current) <= InputLimits.nestingDepth else {
                throw RunError.malformed(path, line: line, "JSON nested deeper than \(InputLimits.nestingDepth) levels")
            }
            do { out.append((line, try JSONDecoder().decode(EpochLog.self, from: Data(current)))) } catch {
                throw RunError.malformed(path, line: line, InputLimits.quoted("\(error)", limit: 300))
            }
        }
        func add(_ bytes: UnsafeBufferPointer<UInt8>) throws {
            guard current.count + bytes.count <= lineBytes else {
                let limit = BoundedRead.describe(bytes: lineBytes)
                throw RunError.malformed(path, line: line, "a line of more than \(limit); expected one epoch's JSON record of at most \(limit)")
            }
            current.append(contentsOf: bytes)
        }
        do {
            try BoundedRead.pieces(of: url, limit: logBytes, what: "the run's epoch log (log.jsonl)") { piece in
                var start = 0
                for i in 0..<piece.count where piece[i] == UInt8(ascii: "\n") {
                    try add(UnsafeBufferPointer(rebasing: piece[start..<i]))
                    try endLine()
                    start = i + 1
                }
                try add(UnsafeBufferPointer(rebasing: piece[start..<piece.count]))
            }
            // a last line without a line end
            try endLine()
        } catch DataError.missingFile(_, _) {
            throw RunError.missingFile(path, "the run's epoch log")
        } catch let DataError.unreadableFile(_, reason) {
            throw RunError.incompatible("cannot read '\(path)': \(reason)")
        }
        return out
    }
}

/// Communication of data-parallel training over one epoch's training steps (those this
/// invocation ran: after a resume in mid-epoch, the steps after it), over all processes.
/// Seconds are means over the processes (`_max`: the largest), bytes are per process.
///
/// JSON (in `log.jsonl` under `communication`): `step_seconds`, `gradient_wait_seconds`,
/// `gradient_wait_max_seconds`, `allreduce_seconds`, `collective_seconds`, `wait_fraction`,
/// `overlap`, `gradient_bytes`, `sent_bytes`, `buckets`.
public struct CommunicationFigures: Codable, Sendable, Equatable {
    /// Wall-clock seconds of the training steps these figures cover (mean over processes).
    public var stepSeconds: Double
    /// Seconds a training thread waited after its backward for the gradient buckets still
    /// being reduced: the communication that did not overlap computation, plus any lag of a
    /// slower process (mean over processes).
    public var gradientWaitSeconds: Double
    /// The largest of the processes' ``gradientWaitSeconds``.
    public var gradientWaitMaxSeconds: Double
    /// Seconds spent reducing gradient buckets (on the communication thread, while backward
    /// ran): waiting for every process to arrive, then the rank-ordered sum (mean).
    public var allreduceSeconds: Double
    /// Seconds a training thread spent in the other collectives of a step: the sum of the
    /// loss terms, synchronised batch norm (`--freeze-bn off`), the stop check (mean).
    public var collectiveSeconds: Double
    /// `(gradientWaitSeconds + collectiveSeconds) / stepSeconds`: the share of the step time
    /// the training thread spent waiting on communication.
    public var waitFraction: Double
    /// `1 - gradientWaitSeconds / allreduceSeconds`, in 0...1: the share of the gradient
    /// reduction hidden behind backward (1 when there was none to hide).
    public var overlap: Double
    /// Bytes of gradients (and their per-parameter flags) each process reduced: the bucket
    /// sizes times the steps.
    public var gradientBytes: Double
    /// Bytes each process sent to reduce them (the rank-ordered sum sends `2 (P-1)/P` of a
    /// bucket, as a ring allreduce does).
    public var sentBytes: Double
    /// Gradient buckets reduced per step.
    public var buckets: Int

    enum CodingKeys: String, CodingKey {
        case stepSeconds = "step_seconds"
        case gradientWaitSeconds = "gradient_wait_seconds"
        case gradientWaitMaxSeconds = "gradient_wait_max_seconds"
        case allreduceSeconds = "allreduce_seconds"
        case collectiveSeconds = "collective_seconds"
        case waitFraction = "wait_fraction"
        case overlap
        case gradientBytes = "gradient_bytes"
        case sentBytes = "sent_bytes"
        case buckets
    }

    /// Figures from the processes' own counters (one per rank, in rank order) and their
    /// training seconds.
    public init(counters: [CommunicationCounters], stepSeconds: [Double]) {
        let n = Double(max(1, counters.count))
        func mean(_ f: (CommunicationCounters) -> Double) -> Double { counters.map(f).reduce(0, +) / n }
        self.stepSeconds = stepSeconds.reduce(0, +) / Double(max(1, stepSeconds.count))
        gradientWaitSeconds = mean(\.gradientWaitSeconds)
        gradientWaitMaxSeconds = counters.map(\.gradientWaitSeconds).max() ?? 0
        allreduceSeconds = mean(\.allreduceSeconds)
        collectiveSeconds = mean(\.collectiveSeconds)
        gradientBytes = mean(\.gradientBytes)
        sentBytes = mean(\.sentBytes)
        buckets = counters.map(\.buckets).max() ?? 0
        waitFraction = 0
        overlap = 1
        derive()
    }

    private mutating func derive() {
        waitFraction = stepSeconds > 0 ? (gradientWaitSeconds + collectiveSeconds) / stepSeconds : 0
        overlap = allreduceSeconds > 0 ? min(1, max(0, 1 - gradientWaitSeconds / allreduceSeconds)) : 1
    }

    /// The figures of several epochs together (seconds and bytes added; the largest wait is
    /// the largest epoch's).
    public static func total(_ epochs: [CommunicationFigures]) -> CommunicationFigures? {
        guard var t = epochs.first else { return nil }
        for e in epochs.dropFirst() {
            t.stepSeconds += e.stepSeconds
            t.gradientWaitSeconds += e.gradientWaitSeconds
            t.gradientWaitMaxSeconds = max(t.gradientWaitMaxSeconds, e.gradientWaitMaxSeconds)
            t.allreduceSeconds += e.allreduceSeconds
            t.collectiveSeconds += e.collectiveSeconds
            t.gradientBytes += e.gradientBytes
            t.sentBytes += e.sentBytes
            t.buckets = max(t.buckets, e.buckets)
        }
        t.derive()
        return t
    }

    /// One line for a terminal, e.g. `communication: waited 1.2 s of 40.1 s of steps (3.0%:
    /// gradients 1.0 s, other collectives 0.2 s), gradient reduction 95% overlapped with
    /// backward, 12.3 GB of gradients reduced per process (12.3 GB sent)`.
    public var summary: String {
        String(format: "communication: waited %.2f s of %.2f s of steps (%.1f%%: gradients %.2f s, at most %.2f s on one process; other collectives %.2f s), gradient reduction %.0f%% overlapped with backward, %@ of gradients reduced per process in %d buckets per step (%@ sent)",
               gradientWaitSeconds + collectiveSeconds, stepSeconds, 100 * waitFraction, gradientWaitSeconds, gradientWaitMaxSeconds,
               collectiveSeconds, 100 * overlap, Self.bytes(gradientBytes), buckets, Self.bytes(sentBytes))
    }

    static func bytes(_ b: Double) -> String {
        b >= 1e9 ? String(format: "%.2f GB", b / 1e9) : b >= 1e6 ? String(format: "%.1f MB", b / 1e6) : String(format: "%.0f kB", b / 1e3)
    }
}

/// One process's communication counters since they were last taken
/// (``ProcessGroup/takeCommunicationCounters()``); see ``CommunicationFigures``.
public struct CommunicationCounters: Codable, Sendable, Equatable {
    /// Seconds the training thread waited for gradient buckets after backward.
    public var gradientWaitSeconds: Double = 0
    /// Seconds spent reducing gradient buckets (waiting for all ranks, then summing).
    public var allreduceSeconds: Double = 0
    /// Seconds the training thread spent in other collectives.
    public var collectiveSeconds: Double = 0
    /// Gradient bytes reduced.
    public var gradientBytes: Double = 0
    /// Bytes sent to reduce them.
    public var sentBytes: Double = 0
    /// Gradient buckets per step.
    public var buckets = 0

    /// Zero counters.
    public init() {}
}

/// Problems with run folders and their files.
public enum RunError: Error, CustomStringConvertible, Equatable, Sendable {
    case missingFile(String, String)
    case malformed(String, line: Int, String)
    /// An existing folder (or file) that holds no run: no `log.jsonl` or `options.json`.
    case notARun(String)
    /// A run folder named that does not exist at all.
    case noSuchFolder(String)
    case nanLoss(epoch: Int, step: Int, terms: String)
    case interrupted(checkpoint: String)
    case incompatible(String)
    /// A recipe value out of its range.
    case invalidOption(name: String, value: String, expected: String)
    /// Another process holds the run folder's lock.
    case locked(path: String, holder: String)
    /// Too many images of the data set were missing or unreadable to go on; `examples` are
    /// shown whole (each already bounded: the id and the reason quoted by ``TrainingSetup``);
    /// `list` is the path of the file that lists every one (the run folder's `skipped.csv`).
    case tooManySkipped(skipped: Int, total: Int, limit: Double, examples: [String], list: String)
    /// Images of the data set that are missing or cannot be decoded, found by the check that
    /// every run makes before its first step, when they are not to be skipped: the run does
    /// not start. `examples` are the first few (each the id and the reason, already bounded),
    /// of `count` out of `total` images.
    case unreadableImages(count: Int, total: Int, examples: [String])

    public var description: String {
        switch self {
        case let .missingFile(path, what): return "\(path): missing (\(what))"
        case let .malformed(path, line, why): return "'\(path)' line \(line): malformed record: \(why)"
        case let .notARun(path): return "\(path) is not a run folder (no log.jsonl or options.json)"
        case let .noSuchFolder(path): return "\(path): no such folder; expected a run folder (with log.jsonl and options.json)"
        case let .nanLoss(epoch, step, terms):
            return "the loss is not finite at epoch \(epoch), step \(step) (\(terms)); training stopped and the last good checkpoint is kept. Lower the learning rate or check the data."
        case let .interrupted(checkpoint): return "interrupted; state saved to \(checkpoint). Continue with --resume."
        case let .incompatible(why): return why
        case let .invalidOption(name, value, expected): return "--\(name) \(value) is not valid; expected \(expected)"
        case let .locked(path, holder):
            return "\(path) is in use by another training run (\(holder)); wait for it to finish, or choose another -o/--output"
        case let .tooManySkipped(skipped, total, limit, examples, list):
            return "\(skipped) of \(total) images are missing or unreadable, more than \(Int(limit * 100))% "
                + "(the most --skip-unreadable leaves out); e.g. \(examples.prefix(3).joined(separator: "; ")). "
                + "All \(skipped) are listed, with the reason, in \(list). Check the data paths"
        case let .unreadableImages(count, total, examples):
            var s = "\(count) of \(total) images are missing or cannot be read (every image is read once before training); training did not start:"
            for e in examples { s += "\n  " + e }
            if count > examples.count { s += "\n  ... and \(count - examples.count) more" }
            return s + "\nto train without them, add --skip-unreadable (they are then listed in skipped.csv in the run folder, "
                + "and the run stops when they are more than \(Int(TrainingSetup.maximumSkippedFraction * 100))% of the images); or fix the files or the data paths"
        }
    }
}
