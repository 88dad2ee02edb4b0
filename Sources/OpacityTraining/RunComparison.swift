import Foundation
import OpacityCore
import OpacityData

/// Overlays several runs' validation-loss and metric curves (the paper's encoder
/// comparison figure). Runs whose options differ only in the seed form one group, drawn as
/// the mean with a band from the lowest to the highest run.
public struct RunComparison {
    /// One run folder's options and epoch logs.
    public struct Run {
        public var folder: URL
        public var options: TrainingOptions?
        public var logs: [EpochLog]
        /// A short label: the folder name.
        public var label: String { folder.lastPathComponent }
    }

    /// Runs grouped by everything but the seed.
    public struct Group {
        /// The run's folder name, or for several runs their names' common prefix with the
        /// count, e.g. `r34 (3 runs)`.
        public var label: String
        public var runs: [Run]
    }

    public var groups: [Group]
    /// One line per `log.jsonl` whose epochs repeat or go backwards, naming the file, the
    /// lines and the epochs, and what was kept (see ``orderedEpochs(_:path:)``).
    public var warnings: [String] = []

    /// Reads run folders: each `log.jsonl` line by line with a limit on a line's length
    /// (``EpochLog/readNumbered(_:)``), each `options.json` with a limit on its size
    /// (``TrainingSetup/optionsFileBytes``). A log whose epochs repeat or go backwards keeps
    /// the last line of each epoch, in epoch order, and adds to ``warnings``.
    /// - Throws: ``RunError`` naming a folder that does not exist (``RunError/noSuchFolder(_:)``) or one without a log, a malformed or over-long line
    ///   (with its file and line), or an `options.json` that is too large or cannot be read.
    public init(folders: [URL]) throws {
        var runs: [Run] = []
        var warnings: [String] = []
        for f in folders {
            let log = f.appendingPathComponent("log.jsonl")
            guard FileManager.default.fileExists(atPath: f.path) else { throw RunError.noSuchFolder(f.path) }
            guard FileManager.default.fileExists(atPath: log.path) else { throw RunError.notARun(f.path) }
            let (logs, warning) = Self.orderedEpochs(try EpochLog.readNumbered(log), path: log.path)
            if let warning { warnings.append(warning) }
            // refused by size (16 MiB) before it is loaded; one that does not decode leaves the run ungrouped
            let opts = try TrainingSetup.optionsData(at: f.appendingPathComponent("options.json"))
                .flatMap { try? JSONDecoder().decode(TrainingOptions.self, from: $0) }
            runs.append(Run(folder: f, options: opts, logs: logs))
        }
        var groups: [Group] = []
        var keyed: [String: Int] = [:]
        for r in runs {
            guard var o = r.options else {
                groups.append(Group(label: r.label, runs: [r]))
                continue
            }
            o.seed = 0
            let key = String(decoding: (try? JSONEncoder.sorted.encode(o)) ?? Data(), as: UTF8.self)
            if let i = keyed[key] { groups[i].runs.append(r) } else {
                keyed[key] = groups.count
                groups.append(Group(label: r.label, runs: [r]))
            }
        }
        for i in groups.indices where groups[i].runs.count > 1 {
            let names = groups[i].runs.map(\.label)
            groups[i].label = Self.commonPrefix(names).trimmingCharacters(in: CharacterSet(charactersIn: "_-.")) + " (\(names.count) runs)"
        }
        self.groups = groups
        self.warnings = warnings
    }

    /// One record per epoch, in epoch order, from a log's lines in file order. A log written
    /// by one run (with or without `--resume`) counts its epochs up one line at a time; one
    /// whose epochs repeat or go backwards (two runs' logs joined, a copy appended to another)
    /// keeps the last line of each epoch, the newest record of it, and says so.
    /// - Parameters:
    ///   - lines: the records with their line numbers (``EpochLog/readNumbered(_:)``).
    ///   - path: the file, named in the warning.
    /// - Returns: the records kept, and a warning naming the file, the first lines where an
    ///   epoch repeats or goes backwards with their epochs, and what was kept; `nil` when
    ///   the epochs only go up.
    public static func orderedEpochs(_ lines: [(line: Int, log: EpochLog)], path: String) -> (logs: [EpochLog], warning: String?) {
        var issues: [String] = []
        var last: [Int: (line: Int, log: EpochLog)] = [:]
        var previous: (line: Int, epoch: Int)?
        for l in lines {
            if let p = previous, l.log.epoch <= p.epoch || last[l.log.epoch] != nil {
                let what = last[l.log.epoch].map { "epoch \(l.log.epoch) again (first on line \($0.line))" } ?? "epoch \(l.log.epoch)"
                issues.append("line \(l.line) has \(what) after epoch \(p.epoch) on line \(p.line)")
            }
            last[l.log.epoch] = l
            previous = (l.line, l.log.epoch)
        }
        let kept = last.keys.sorted().map { last[$0]!.log }
        guard !issues.isEmpty else { return (kept, nil) }
        var s = "\(path): its epochs repeat or go backwards: " + issues.prefix(3).joined(separator: "; ")
        if issues.count > 3 { s += "; and \(issues.count - 3) more" }
        let range = kept.isEmpty ? "" : " (\(kept.first!.epoch)...\(kept.last!.epoch))"
        s += ". Two runs' logs in one file? Compared: the last line of each epoch, in epoch order, \(kept.count) epoch\(kept.count == 1 ? "" : "s")\(range) of \(lines.count) lines"
        return (kept, s)
    }

    static func commonPrefix(_ s: [String]) -> String {
        guard var p = s.first else { return "" }
        for x in s.dropFirst() { while !x.hasPrefix(p) { p.removeLast() } }
        return p.isEmpty ? s[0] : p
    }

    /// Mean and range of a value per epoch over a group's runs.
    func curve(_ g: Group, _ value: (EpochLog) -> Double) -> (mean: [(x: Double, y: Double)], band: [(x: Double, low: Double, high: Double)]) {
        var byEpoch: [Int: [Double]] = [:]
        for r in g.runs { for l in r.logs { byEpoch[l.epoch, default: []].append(value(l)) } }
        let epochs = byEpoch.keys.sorted()
        let mean = epochs.map { e in (Double(e), byEpoch[e]!.reduce(0, +) / Double(byEpoch[e]!.count)) }
        let band = epochs.map { e in (Double(e), byEpoch[e]!.min()!, byEpoch[e]!.max()!) }
        return (mean, band)
    }

    /// The chart of one quantity per epoch (`val_total`, `val_regression`, `metric`, ...).
    public func chart(_ quantity: String) -> LineChart {
        let pick: (EpochLog) -> Double
        let label: String
        switch quantity {
        case "val_regression": pick = { $0.val.regression }; label = "validation regression loss"
        case "val_focal": pick = { $0.val.focal }; label = "validation focal loss"
        case "train_total": pick = { $0.train.total }; label = "training loss"
        case "metric": pick = { $0.metric.best }; label = "validation metric (best threshold)"
        default: pick = { $0.val.total }; label = "validation loss"
        }
        let series = groups.enumerated().map { i, g -> LineChart.Series in
            let c = curve(g, pick)
            return LineChart.Series(name: g.label, points: c.mean, band: g.runs.count > 1 ? c.band : nil,
                                    color: LineChart.palette[i % LineChart.palette.count])
        }
        return LineChart(title: label + " per epoch", xLabel: "epoch", yLabel: label, series: series)
    }

    /// The label and column of a charted quantity.
    static func describe(_ quantity: String) -> (label: String, column: String) {
        switch quantity {
        case "val_regression": return ("validation regression loss", "val_regression")
        case "val_focal": return ("validation focal loss", "val_focal")
        case "train_total": return ("training loss", "train_total")
        case "metric": return ("validation metric (best threshold)", "metric")
        default: return ("validation loss", "val_total")
        }
    }

    /// The chart of one quantity per epoch from the CSV that ``csv`` writes (`compare`'s
    /// `curves.csv`), so committed figures can be redrawn without the run folders: groups in
    /// order of first appearance, each drawn as its mean with a band when it has several runs.
    /// - Throws: the CSV reader's error, or ``RunError/incompatible(_:)`` naming a missing
    ///   column or a value that is not a number (with its line).
    public static func chart(curvesCSV url: URL, quantity: String) throws -> LineChart {
        let table = try CSVTable(contentsOf: url)
        let (label, column) = describe(quantity)
        guard let gi = table.column(["group"]), let ri = table.column(["run"]), let ei = table.column(["epoch"]), let vi = table.column([column]) else {
            throw RunError.incompatible("\(url.path): expected the columns run, group, epoch and \(column) (as `opacity compare` writes curves.csv); found \(table.header.joined(separator: ","))")
        }
        var order: [String] = []
        var values: [String: [Int: [Double]]] = [:]
        var runs: [String: Set<String>] = [:]
        for row in table.rows {
            let f = row.fields
            guard f.count > max(gi, ri, ei, vi) else {
                throw RunError.incompatible("'\(url.path)' line \(row.line): \(f.count) fields; expected \(table.header.count)")
            }
            // located as every CSV error is: 'file' line N, column 'name'
            guard let e = Int(f[ei]) else {
                throw RunError.incompatible("'\(url.path)' line \(row.line), column 'epoch': '\(InputLimits.quoted(f[ei]))' is not valid; expected a whole number")
            }
            guard let v = Double(f[vi]) else {
                throw RunError.incompatible("'\(url.path)' line \(row.line), column '\(column)': '\(InputLimits.quoted(f[vi]))' is not valid; expected a number")
            }
            if values[f[gi]] == nil { order.append(f[gi]) }
            values[f[gi], default: [:]][e, default: []].append(v)
            runs[f[gi], default: []].insert(f[ri])
        }
        let series = order.enumerated().map { i, g -> LineChart.Series in
            let byEpoch = values[g]!
            let epochs = byEpoch.keys.sorted()
            let mean = epochs.map { e in (x: Double(e), y: byEpoch[e]!.reduce(0, +) / Double(byEpoch[e]!.count)) }
            let band = epochs.map { e in (x: Double(e), low: byEpoch[e]!.min()!, high: byEpoch[e]!.max()!) }
            return LineChart.Series(name: g, points: mean, band: (runs[g]?.count ?? 1) > 1 ? band : nil, color: LineChart.palette[i % LineChart.palette.count])
        }
        return LineChart(title: label + " per epoch", xLabel: "epoch", yLabel: label, series: series)
    }

    /// The numbers behind the charts: one row per run and epoch.
    public var csv: String {
        var rows: [[String]] = []
        for g in groups {
            for r in g.runs {
                for l in r.logs {
                    rows.append([r.label, g.label, "\(l.epoch)", "\(l.train.total)", "\(l.val.total)", "\(l.val.focal)", "\(l.val.regression)",
                                 l.val.global.map { "\($0)" } ?? "", "\(l.metric.best)", "\(l.metric.threshold)", "\(l.lr)"])
                }
            }
        }
        return CSVTable.render(header: ["run", "group", "epoch", "train_total", "val_total", "val_focal", "val_regression", "val_global",
                                        "metric", "threshold", "lr"], rows: rows)
    }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}
