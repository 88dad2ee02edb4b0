import Foundation
import OpacityCore

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
///   over all of them.
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

    enum CodingKeys: String, CodingKey {
        case epoch, time, seconds, lr, train, val, metric
        case imagesPerSecond = "images_per_second"
        case trainImages = "train_images"
        case valImages = "val_images"
        case checkpoint, best, processes
        case globalBatch = "global_batch"
    }

    /// The JSON line (no trailing newline), keys sorted.
    public func jsonLine() throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: try e.encode(self), as: UTF8.self)
    }

    /// Reads every line of a `log.jsonl`.
    /// - Throws: ``RunError`` naming the file and line of a malformed record.
    public static func read(_ url: URL) throws -> [EpochLog] {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else {
            throw RunError.missingFile(url.path, "the run's epoch log")
        }
        var out: [EpochLog] = []
        for (i, line) in text.split(separator: "\n").enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            do { out.append(try JSONDecoder().decode(EpochLog.self, from: Data(line.utf8))) } catch {
                throw RunError.malformed(url.path, line: i + 1, "\(error)")
            }
        }
        return out
    }
}

/// Problems with run folders and their files.
public enum RunError: Error, CustomStringConvertible, Equatable, Sendable {
    case missingFile(String, String)
    case malformed(String, line: Int, String)
    case notARun(String)
    case nanLoss(epoch: Int, step: Int, terms: String)
    case interrupted(checkpoint: String)
    case incompatible(String)
    /// A recipe value out of its range.
    case invalidOption(name: String, value: String, expected: String)
    /// Another process holds the run folder's lock.
    case locked(path: String, holder: String)
    /// Too many images of the data set were missing or unreadable to go on.
    case tooManySkipped(skipped: Int, total: Int, limit: Double, examples: [String])

    public var description: String {
        switch self {
        case let .missingFile(path, what): return "\(path): missing (\(what))"
        case let .malformed(path, line, why): return "\(path):\(line): malformed record: \(why)"
        case let .notARun(path): return "\(path) is not a run folder (no log.jsonl or options.json)"
        case let .nanLoss(epoch, step, terms):
            return "the loss is not finite at epoch \(epoch), step \(step) (\(terms)); training stopped and the last good checkpoint is kept. Lower the learning rate or check the data."
        case let .interrupted(checkpoint): return "interrupted; state saved to \(checkpoint). Continue with --resume."
        case let .incompatible(why): return why
        case let .invalidOption(name, value, expected): return "--\(name) \(value) is not valid; expected \(expected)"
        case let .locked(path, holder):
            return "\(path) is in use by another training run (\(holder)); wait for it to finish, or choose another -o/--output"
        case let .tooManySkipped(skipped, total, limit, examples):
            return "\(skipped) of \(total) images are missing or unreadable, more than \(Int(limit * 100))% "
                + "(the most --skip-unreadable leaves out); e.g. \(examples.prefix(3).map { InputLimits.quoted($0, limit: 200) }.joined(separator: "; ")). "
                + "Check the data paths"
        }
    }
}
