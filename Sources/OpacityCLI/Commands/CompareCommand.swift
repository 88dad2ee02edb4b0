import ArgumentParser
import Foundation
import Opacity

/// `opacity compare`.
struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Overlay several runs' validation-loss and metric curves in PNGs, with the numbers as CSV.",
        discussion: """
            Runs whose options differ only in the seed are drawn as their mean with a band (lowest to highest). This is the paper's encoder comparison figure. Each PNG gets an SVG beside it. A log.jsonl whose epochs repeat or go backwards (two runs' logs in one file) is compared by the last line of each epoch, in epoch order, with a warning naming its lines. --from-csv redraws the figures from a curves.csv written earlier (no run folders needed). Figures and a curves.csv of an earlier run in -o/--output are not replaced without --overwrite.

            Examples:
              opacity compare runs/r34_* runs/seresnext50_* -o compare
              opacity compare --from-csv Documentation/encoders-comparison.csv -o compare
            """)

    @Argument(help: "Run folders.") var runs: [String] = []
    @Option(name: .long, help: ArgumentHelp("Redraw from a curves.csv that compare wrote, instead of run folders.", valueName: "curves.csv")) var fromCsv: String?
    @Option(name: [.short, .long], help: "Output folder.") var output: String = "compare"
    @Option(name: .customLong("out"), help: ArgumentHelp("Deprecated spelling of -o/--output.", visibility: .hidden)) var deprecatedOut: String?
    @Flag(name: .long, help: "Replace the figures and curves.csv of an earlier run in -o/--output.") var overwrite = false

    /// The figures, by the quantity each draws.
    static let figures = [("val_total", "val_loss.png"), ("val_regression", "val_regression.png"), ("metric", "metric.png"), ("train_total", "train_loss.png")]

    /// Refuses an earlier run's figures (and, from run folders, its curves.csv) in `out`.
    private func refuseEarlier(in out: String, curves: Bool) throws {
        let names = Self.figures.flatMap { [$0.1, ($0.1 as NSString).deletingPathExtension + ".svg"] } + (curves ? ["curves.csv"] : [])
        try refuseEarlierResults(
            names.map { (out as NSString).appendingPathComponent($0) }, overwrite: overwrite, replacing: "the earlier figures" + (curves ? " and curves.csv" : ""),
            otherwise: "name another folder with -o/--output")
    }

    /// Every run folder named is training and has finished no epoch yet (exit status 1, as a
    /// folder without a run).
    struct StillTraining: Error, CustomStringConvertible {
        let description: String
    }

    /// The process in a lock file's holder line, `pid N` (`pid N on HOST, started TIME`), or
    /// the line as it is when it says no process id.
    static func process(_ holder: String) -> String {
        let words = holder.split(separator: " ")
        guard words.count >= 2, words[0] == "pid", Int32(words[1].trimmingCharacters(in: .punctuationCharacters)) != nil else { return holder }
        return "pid " + words[1].trimmingCharacters(in: .punctuationCharacters)
    }

    func run() throws {
        if let fromCsv {
            guard runs.isEmpty else { throw ValidationError("give run folders or --from-csv, not both") }
            let out = try resolveOutput(output, deprecated: deprecatedOut, defaultValue: "compare") ?? output
            try requireOutputFolder(out, option: "-o/--output", for: "the comparison charts")
            try refuseEarlier(in: out, curves: false)
            var written: [String] = []
            for (q, name) in Self.figures {
                let u = URL(fileURLWithPath: out).appendingPathComponent(name)
                try RunComparison.chart(curvesCSV: URL(fileURLWithPath: fromCsv), quantity: q).write(png: u)
                written.append(u.path)
            }
            say("wrote " + written.joined(separator: ", ") + " (each with an SVG)")
            return
        }
        guard !runs.isEmpty else { throw ValidationError("name at least one run folder (or --from-csv curves.csv)") }
        // the output before the runs are read
        let out = try resolveOutput(output, deprecated: deprecatedOut, defaultValue: "compare") ?? output
        try requireOutputFolder(out, option: "-o/--output", for: "the comparison charts")
        try refuseEarlier(in: out, curves: true)
        // a run folder that does not exist is said so, with the nearest one beside it (new-user
        // trial: `compare runs/nonexist` was told "not a run folder"); an existing folder without
        // a run is RunComparison's "not a run folder"
        for run in runs where !FileManager.default.fileExists(atPath: run) {
            throw ValidationError(noSuchPathMessage("compare", run, directory: true, expected: "a run folder (with log.jsonl)"))
        }
        // a file is no run folder: a file of a run (its log.jsonl, options.json or a checkpoint)
        // names the run folder to pass, as --model and zoo add do (new-user trial: `compare
        // run1/log.jsonl` was told "not a run folder (no log.jsonl or options.json)", exit 1)
        for run in runs {
            var isFolder: ObjCBool = false
            guard FileManager.default.fileExists(atPath: run, isDirectory: &isFolder), !isFolder.boolValue else { continue }
            throw ValidationError(Self.fileGivenAsRun(run))
        }
        // a run that a training process holds (a live run.lock; a killed run's is stale) is
        // drawn as far as its log goes, and said so (new-user trial: no hint that it was training)
        // a run that has finished no epoch yet has no curves: left out, and said so
        let training = runs.compactMap { run in RunLock.liveHolder(of: URL(fileURLWithPath: run)).map { (run: run, holder: Self.process($0)) } }
        let starting = training.filter { !FileManager.default.fileExists(atPath: ($0.run as NSString).appendingPathComponent("log.jsonl")) }
        let drawn = runs.filter { run in !starting.contains { $0.run == run } }
        for t in starting {
            note("note: \(t.run) is still training (\(t.holder)) and has finished no epoch yet, so it has no curves" + (drawn.isEmpty ? "" : "; left out"))
        }
        guard !drawn.isEmpty else {
            let one = starting.count == 1
            throw StillTraining(
                description: "no run to compare: \(starting.map(\.run).joined(separator: ", ")) \(one ? "is" : "are") still training and "
                    + "\(one ? "has" : "have") finished no epoch yet; compare after the first epoch (its line in log.jsonl)")
        }
        let cmp = try RunComparison(folders: drawn.map { URL(fileURLWithPath: $0) })
        for w in cmp.warnings { note("warning: " + w) }
        for t in training where drawn.contains(t.run) {
            let run = cmp.groups.flatMap(\.runs).first { $0.folder.path == URL(fileURLWithPath: t.run).path }
            let of = run?.options.map { " of \($0.epochs)" } ?? ""
            let end = run?.logs.last.map { "its curves end at epoch \($0.epoch)\(of)" } ?? "it has finished no epoch yet"
            note("note: \(t.run) is still training (\(t.holder)); \(end)")
        }
        let outURL = URL(fileURLWithPath: out)
        try OutputFolders.create(outURL)
        var written: [String] = []
        for (q, name) in Self.figures {
            let u = outURL.appendingPathComponent(name)
            try cmp.chart(q).write(png: u)
            written.append(u.path)
        }
        let csv = outURL.appendingPathComponent("curves.csv")
        try Data(cmp.csv.utf8).write(to: csv, options: .atomic)
        for g in cmp.groups {
            let last = g.runs.compactMap { $0.logs.last }
            let best = g.runs.flatMap(\.logs).map(\.metric.best).max() ?? 0
            let val = last.map(\.val.total).reduce(0, +) / Double(max(1, last.count))
            // a group of several runs has its count in its label ("r34 (3 runs)"): said once
            let count = g.runs.count == 1 ? "1 run, " : ""
            say(String(format: "%@: %@final val loss %.4f, best metric %.4f", g.label, count, val, best))
        }
        // every figure is written as PNG and SVG (trial: the line named the PNGs only)
        say("wrote " + (written + [csv.path]).joined(separator: ", ") + " (each figure with an SVG)")
    }

    /// What a file given as a run says: the run folder it lies in (the folder above it, or above
    /// `checkpoints/`) when that holds a run's `log.jsonl` or `options.json`.
    static func fileGivenAsRun(_ file: String) -> String {
        var folder = splitPath(file).parent
        if folder.isEmpty { folder = "." }
        if splitPath(folder).leaf == "checkpoints" {
            let above = splitPath(folder).parent
            folder = above.isEmpty ? "." : above
        }
        let isRun = ["log.jsonl", "options.json"].contains { FileManager.default.fileExists(atPath: folder + (folder.hasSuffix("/") ? "" : "/") + $0) }
        return isRun
            ? "compare \(file): a file of the run folder \(folder), not a run folder; pass the run folder \(folder)"
            : "compare \(file): a file, not a run folder; expected a run folder (with log.jsonl)"
    }
}
