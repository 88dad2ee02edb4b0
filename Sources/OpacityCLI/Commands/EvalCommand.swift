import ArgumentParser
import Foundation
import Opacity
import OpacityDistributed

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `opacity eval`.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Score a model or ensemble with the challenge metric on a fold or a labelled folder.",
        discussion: """
            Sweeps the score threshold and prints the best metric (the operating point); also measures COCO-style AP@[.50:.95], AP50, AP75 and AR@100 for the opacity boxes, the FROC (sensitivity at 1/8 ... 8 false positives per image) and, when the model has a global classifier, its 3x3 confusion matrix and the ROC AUC of Lung Opacity against the rest. When the images' view positions are known (the DICOM ViewPosition, else the view column of --folds-file), the metric, counts and ROC AUC are also given per view (AP, PA, ...): RSNA's positives are mostly AP films. Writes report.json (schema: Documentation/Evaluation.md), summary.md, per-image scores (CSV), the sweep (CSV), and PNG + SVG figures: metric against threshold, precision-recall, FROC. An earlier run's report in -o/--output, and an existing --operating-point-out file, are not replaced without --overwrite.

            Examples:
              opacity eval --model runs/r34 --data synth --fold 0
              opacity eval --model fold0.opb --model fold1.opb --data rsna --fold 0 \\
                  --ensemble mean
              opacity eval --model retinanet-r34-composite --labels boxes.csv \\
                  --images pngs --all
              opacity eval --model f0.opb --model f1.opb --ensemble wbf --tta flip \\
                  --data rsna --fold 0
              opacity eval --model runs/r34 --data synth --fold 0 \\
                  --operating-point-out r34-op.opb
            """)

    @OptionGroup var model: ModelOptions
    @OptionGroup var dataOptions: DataOptions
    @Option(
        name: .long, parsing: .unconditional,
        help:
            "The fold to score (its patients); the run's folds.csv if --model is a run folder (default: the run's validation fold), else the stratified split with --folds and seed 42 (default 0)."
    )
    var fold: Int?
    @Flag(name: .long, help: "Score a fold other than a run folder's validation fold (its training images: the score is not a held-out one).")
    var allowTrainingFold = false
    @Option(name: .long, parsing: .unconditional, help: "Number of folds.") var folds: Int = 4
    @Option(
        name: .long,
        help:
            "A folds CSV (patientId,class,fold, optionally view as `opacity folds --stratify view` writes it): the fold to score, and the view of images that are not DICOM (with --all: the views only)."
    )
    var foldsFile: String?
    @Flag(name: .long, help: "Score every image, not one fold.") var all = false
    @Option(name: .long, parsing: .unconditional, help: "Score at most this many images.") var limit: Int?
    @Option(name: [.short, .long], help: "Output folder for the report, CSVs and figures.") var output: String = "eval"
    @Option(name: .customLong("out"), help: ArgumentHelp("Deprecated spelling of -o/--output.", visibility: .hidden)) var deprecatedOut: String?
    @Flag(name: .long, help: "Replace the report, CSVs and figures of an earlier run in -o/--output, and an existing --operating-point-out file.")
    var overwrite = false
    @OptionGroup var windowOption: ModelWindowOption
    @OptionGroup var runtime: RuntimeOptions
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Write a copy of the (single) model's bundle with the best threshold stored as its operating point; detect, submit and serve then use it by default. The input bundle is never changed.",
            valueName: "bundle.opb"))
    var operatingPointOut: String?

    @OptionGroup var pluginOptions: PluginOptions

    func validate() throws {
        try requireAtLeast("--limit", limit, 1)
        try requireRange("--folds", folds, 2, Folds.maximumCount)
        try requireAtLeast("--fold", fold, 0)
        if operatingPointOut != nil && model.models.count > 1 { throw ValidationError("--operating-point-out needs a single --model (an ensemble has no one bundle)") }
    }

    @OptionGroup var distributedOptions: DistributedOptions

    /// The files eval writes in -o/--output (skipped.csv aside: it is replaced or removed with each run).
    static let reportFiles = [
        "report.json", "summary.md", "per_image.csv", "sweep.csv", "metric_vs_threshold.png", "metric_vs_threshold.svg", "precision_recall.png",
        "precision_recall.svg", "froc.png", "froc.svg",
    ]

    func run() throws {
        let group = try distributedOptions.makeGroup(threads: runtime.threads)
        try runCollectively(group, command: "eval") { try evaluate(group) }
    }

    /// What `--folds-file` names, for a path where nothing is (`eval` and `train`).
    static let foldsFileExpected = "a folds CSV (patientId,class,fold), as `opacity folds` writes"

    private func evaluate(_ group: ProcessGroup) throws {
        let out = try resolveOutput(output, deprecated: deprecatedOut, defaultValue: "eval") ?? output
        try requireOutputFolder(out, option: "-o/--output", for: "the report, CSVs and figures")
        // an earlier run's report is kept unless asked, before the model and the data load
        try refuseEarlierResults(
            Self.reportFiles.map { (out as NSString).appendingPathComponent($0) }, overwrite: overwrite,
            replacing: "the earlier report, CSVs and figures", otherwise: "name another folder with -o/--output")
        // a data error (1) that names the option and the nearest file, as score --labels
        if let foldsFile { try requireExistingDataFile("--folds-file", foldsFile, expected: Self.foldsFileExpected) }
        if group.size > 1 {
            // one process reads a pipe; the others would find it empty
            let reason = "every one of the \(group.size) processes reads it"
            if let labels = dataOptions.labels { try requireRereadable(labels, option: "--labels", reason: reason) }
            if let foldsFile { try requireRereadable(foldsFile, option: "--folds-file", reason: reason) }
        }
        if let opOut = operatingPointOut {
            try requireOutputFile(opOut, option: "--operating-point-out", for: "the bundle with its operating point")
            // a zoo ensemble entry is one name for several bundles (--model twice is refused in validate)
            if let m = model.models.first, let members = try? ModelReference.expand([m]).references, members.count > 1 {
                throw ValidationError(
                    "--operating-point-out needs a single model; \(m) is a zoo ensemble of \(members.count) models (an ensemble has no one bundle)")
            }
            // the input bundle (a run folder's best.opb or latest checkpoint, a zoo entry's file)
            // is never replaced: refused now, not after scoring (a zoo name was refused only then)
            if let m = model.models.first {
                var isDirectory: ObjCBool = false
                let exists = FileManager.default.fileExists(atPath: m, isDirectory: &isDirectory)
                let input =
                    (try? ModelReference.resolve(m))
                    ?? (exists && isDirectory.boolValue ? URL(fileURLWithPath: m).appendingPathComponent("best.opb") : URL(fileURLWithPath: m))
                if OutputPaths.sameFile(URL(fileURLWithPath: opOut), input) {
                    throw ValidationError(
                        "--operating-point-out \(opOut) is the input bundle (\(m)); name a new file, e.g. \(input.deletingPathExtension().lastPathComponent)-op.opb")
                }
            }
            try refuseEarlierResults(
                [opOut], overwrite: overwrite, replacing: "the earlier bundle with its operating point", otherwise: "name another file with --operating-point-out")
        }
        // a folds file read for the fold or, with --all, for its view column only
        var readFolds: (folds: Folds, path: String)?
        // a single zoo entry that lists its held-out images
        let references = model.models.isEmpty ? [defaultModelName] : model.models
        var zooHeldOut: (name: String, ids: Set<String>)?
        // and the images it lists as trained on
        var zooTrained: (name: String, ids: Set<String>)?
        if references.count == 1, let reference = references.first, let name = ModelReference.zooName(reference),
            let entry = try? Zoo.standard().item(name).entry
        {
            zooHeldOut = entry.heldOut.map { (name, Set($0)) }
            zooTrained = entry.trainedOn.map { (name, Set($0)) }
        }
        // the fold and its folds file, checked before the model and the data load (which take
        // minutes on a large set): a fold out of range is refused at once
        var fold = self.fold ?? 0
        var foldsURL = foldsFile.map { URL(fileURLWithPath: $0) }
        if !all {
            if foldsURL == nil, let m = model.models.first, let u = Optional(URL(fileURLWithPath: m)),
                FileManager.default.fileExists(atPath: u.appendingPathComponent("folds.csv").path)
            {
                foldsURL = u.appendingPathComponent("folds.csv")
            }
            // a run trained with --folds-file keeps no folds.csv of its own: its options name the file
            if foldsURL == nil, let m = model.models.first, let saved = try? TrainingSetup.savedOptions(in: URL(fileURLWithPath: m)),
                let file = saved.foldsFile
            {
                foldsURL = URL(fileURLWithPath: file)
            }
            // the fold asked for is checked against the folds first (new-user trial: --fold 7 of 4
            // was told to pass --allow-training-fold, then that fold 7 does not exist)
            let foldCount: Int
            if let foldsURL {
                let f = try Folds.read(from: foldsURL)
                readFolds = (f, foldsURL.path)
                foldCount = f.count
            } else {
                foldCount = folds
            }
            if let asked = self.fold, !(0..<foldCount).contains(asked) {
                let among = foldsURL.map { " in \($0.path)" } ?? " with --folds \(folds)"
                throw ValidationError(
                    "--fold \(asked) does not exist\(among); expected 0...\(foldCount - 1) (nearest valid: \(min(max(asked, 0), foldCount - 1)))"
                        + (foldsURL == nil ? " (or more folds with --folds)" : ""))
            }
            // a run folder's validation fold: another fold holds the images it trained on
            for m in model.models {
                guard let saved = try? TrainingSetup.savedOptions(in: URL(fileURLWithPath: m)) else { continue }
                guard let asked = self.fold else { fold = saved.fold; continue }
                if asked != saved.fold && !allowTrainingFold {
                    throw ValidationError(
                        "\(m) was validated on fold \(saved.fold); fold \(asked) holds images it trained on, so its score "
                            + "would not be a held-out one. Score fold \(saved.fold), or pass --allow-training-fold to score it anyway")
                }
                if asked != saved.fold { say("warning: \(m) trained on fold \(asked); this score is on its training images") }
            }
            guard fold < foldCount else { throw ValidationError("--fold \(fold) does not exist; expected 0...\(foldCount - 1)") }
        }
        // the data's paths, checked before the model loads (CLI.md: wrong paths are refused before
        // anything loads)
        let location = try dataOptions.location()
        let registry = try pluginOptions.registry()
        let (predictor, urls) = try model.predictor(registry: registry)
        say(model.describe(urls, predictor))
        let dataset = try location.load(skipProblemImages: dataOptions.skipUnreadable)
        var records = dataset.records
        var scoredFold: Int?
        var foldLine: String?
        if !all {
            if foldsURL == nil, self.fold == nil, let (name, heldOut) = zooHeldOut, records.contains(where: { heldOut.contains($0.id) }) {
                // the zoo entry's own validation images: what it was not trained on
                records = records.filter { heldOut.contains($0.id) }
                foldLine = "scoring the \(Wording.count(records.count, "image")) \(name) held out from its training (listed in its zoo entry)"
            } else {
                let f: Folds
                do { f = try readFolds?.folds ?? Folds.stratified(dataset, count: folds) } catch { throw foldCountAsOption(error) }
                guard fold >= 0 && fold < f.count else { throw ValidationError("--fold \(fold) does not exist; expected 0...\(f.count - 1)") }
                let ids = Set(f.ids(inFold: fold))
                records = records.filter { ids.contains($0.id) }
                scoredFold = fold
                let source = foldsURL.map { "folds file \($0.path)" } ?? "stratified split, \(f.count) folds, seed 42"
                foldLine = "scoring fold \(fold) of \(f.count) (\(source))"
            }
        }
        if readFolds == nil, let foldsFile { readFolds = (try Folds.read(from: URL(fileURLWithPath: foldsFile)), foldsFile) }
        let selected = records.count
        if let limit { records = Array(records.prefix(limit)) }
        if let foldLine {
            let chosen = limit.map { " (the first \($0) of the \(selected) chosen: --limit \($0))" } ?? ""
            say("\(foldLine): \(records.count) of \(Wording.count(dataset.records.count, "image"))\(chosen); --all scores every image")
        }
        if let (name, heldOut) = zooHeldOut, dataset.records.contains(where: { heldOut.contains($0.id) }) {
            // the data it trained on: every image of it outside the held-out list was a training image
            let seen = records.filter { !heldOut.contains($0.id) }.count
            if seen > 0 {
                say(
                    "warning: \(seen) of the \(records.count) images scored are ones \(name) trained on (not in the \(heldOut.count) "
                        + "it held out), so this score is not a held-out one; without --fold, --folds-file and --all eval scores the held-out images")
            }
        } else if let (name, trained) = zooTrained {
            // other data (converted PNGs, a subset): the entry's own list of training images
            let seen = records.filter { trained.contains($0.id) }.count
            if seen > 0 {
                say(
                    "warning: \(seen) of the \(records.count) images scored are ones \(name) trained on (its zoo entry lists "
                        + "the \(trained.count) it trained on), so this score is not a held-out one")
            }
        }
        // a run folder trained on other data (new-user trial: only the overlap was scored, silently)
        for m in model.models {
            if let warning = Self.otherDataWarning(run: m, location: location, scored: records, all: dataset.records, foldFromRun: !all && foldsFile == nil) {
                note(warning)
            }
        }
        guard !records.isEmpty else { throw ValidationError("no images to score") }
        let bar = outputSilenced ? nil : runtime.progressBar("eval")
        let t0 = Date()
        // under MPI each rank scores a block of whole batches; rank 0 gathers them in order
        let mine = shardedRange(records.count, chunk: predictor.batchSize, group: group)
        var ev = try Evaluation(
            predictor: predictor, records: Array(records[mine]), skipUnreadable: dataOptions.skipUnreadable, window: try windowOption.setting()
        ) { done, total in
            bar?(ProgressUpdate(done: done, total: total, elapsed: Date().timeIntervalSince(t0)))
        }
        if group.isDistributed {
            guard let results = try Evaluation.gather(ev.images, group: group) else { return }
            ev = Evaluation(results: results)
        }
        let outURL = URL(fileURLWithPath: out)
        try OutputFolders.create(outURL)
        let csvURL = outURL.appendingPathComponent("per_image.csv")
        try Data(ev.perImageCSV(threshold: ev.sweep.bestThreshold).utf8).write(to: csvURL, options: .atomic)
        let sweepCSV = CSVTable.render(
            header: ["threshold", "metric"],
            rows: zip(ev.sweep.thresholds, ev.sweep.scores).map { [String(format: "%.2f", $0), String(format: "%.6f", $1)] })
        try Data(sweepCSV.utf8).write(to: outURL.appendingPathComponent("sweep.csv"), options: .atomic)
        let source = dataOptions.data ?? dataOptions.labels ?? "data"
        let what = scoredFold.map { "\(source), fold \($0)" } ?? source
        // view positions: the DICOM header, else the folds file's view column
        let scoredIDs = Set(ev.images.map(\.id))
        let views = try ViewPositions.of(records.filter { scoredIDs.contains($0.id) }, folds: readFolds?.folds, foldsPath: readFolds?.path)
        var report = EvaluationReport(
            ev, models: urls.map(\.path), ensemble: predictor.method.description, tta: predictor.tta?.description, data: what, views: views)
        try report.write(to: outURL, metricChart: ev.chart(title: "RSNA metric on \(Wording.count(ev.images.count, "image"))"))
        if let m = report.challenge.bestMetric, let t = report.challenge.bestThreshold, let counted = report.challenge.countedImages {
            // as `opacity score` says it: the RSNA metric averages only the images with a truth box
            // or a box predicted at the threshold; the others are left out (report.json's
            // challenge.countedImages)
            say(
                String(
                    format: "metric %.4f at score threshold %.2f over %d of the %@ (%d without truth or predictions left out)",
                    m, t, counted, Wording.count(ev.images.count, "image"), ev.images.count - counted))
        } else {
            // as `opacity score` says it: on negatives only the metric is 0 or undefined, never a best
            say("metric undefined: " + (ev.images.count == 1 ? "the one image has no truth box" : "none of the \(ev.images.count) images has a truth box"))
            say("(" + EvaluationReport.negativesOnlyReason + ")")
            let top = ev.images.flatMap(\.detections).map(\.score).max()
            if let t = ev.sweep.thresholds.first(where: { t in top.map { $0 < t } ?? true }) {
                say(String(format: "negatives predicted empty (correct): all %d from score threshold %.2f up", ev.images.count, t))
            } else if let top {
                say(String(format: "negatives predicted empty (correct): not all at any swept threshold (highest box score %.3f)", top))
            }
        }
        for line in report.viewLines() { say(line) }
        func v(_ x: Double?) -> String { x.map { String(format: "%.4f", $0) } ?? "n/a" }
        say("COCO boxes: AP@[.50:.95] \(v(report.coco.ap)), AP50 \(v(report.coco.ap50)), AP75 \(v(report.coco.ap75)), AR@100 \(v(report.coco.ar100))")
        if let f = report.froc {
            say(
                "FROC sensitivity at " + zip(f.fpPerImage, f.sensitivity).map { String(format: "%g: %.3f", $0, $1) }.joined(separator: ", ")
                    + String(format: " FP/image (mean %.3f)", f.mean))
        }
        if let c = report.classifier {
            if let m = c.confusion {
                say(
                    "classifier: accuracy \(v(c.accuracy)), ROC AUC (Lung Opacity vs rest) \(v(c.rocAUCLungOpacity)); confusion (rows truth, columns predicted, "
                        + c.labels.joined(separator: " | ") + "): " + m.map { $0.map(String.init).joined(separator: " ") }.joined(separator: " / "))
                // a weak classifier ranks well (AUC, from the probability) while its arg-max seldom
                // says Lung Opacity: say why the two figures disagree
                if let lo = c.labels.firstIndex(of: "Lung Opacity"), lo < m.count, lo < m[lo].count {
                    let truthLO = m[lo].reduce(0, +)
                    let predictedLO = m.reduce(0) { $0 + ($1.count > lo ? $1[lo] : 0) }
                    if truthLO > 0, m[lo][lo] * 2 < truthLO {
                        say(
                            "  note: the arg-max says Lung Opacity for \(m[lo][lo]) of the \(truthLO) Lung Opacity images (\(predictedLO) in all), which the accuracy counts;"
                                + " the ROC AUC ranks by the Lung Opacity probability: threshold the probability or the box scores, not the arg-max")
                    }
                }
            } else {
                say("classifier: ROC AUC (Lung Opacity vs rest) \(v(c.rocAUCLungOpacity)); no 3x3 confusion matrix or accuracy:")
                say("  " + (c.threeClassUnavailable ?? "classes unknown"))
                say("  (give the classes: --data DIR with stage_2_detailed_class_info.csv beside the labels, or a class column in the --labels CSV)")
            }
        }
        if let opOut = operatingPointOut {
            guard let best = report.challenge.bestThreshold, let metric = report.challenge.bestMetric else {
                throw WithHint(
                    EvaluationError.noOperatingPoint(reason: "the challenge metric is undefined (\(report.challenge.undefinedReason ?? "no reason given"))"),
                    "hint: score images with opacities (a fold or folder with Target 1 patients) to find an operating point")
            }
            // a point picked where the metric is 0 everywhere is none: detect would pass it over
            guard metric > 0 else {
                throw WithHint(
                    EvaluationError.noOperatingPoint(reason: "the metric is 0 at every threshold: the model found no opacity on these images"),
                    "hint: train longer, or score images with opacities, to find an operating point")
            }
            let point = OperatingPoint(threshold: best, metric: metric, data: what, images: ev.images.count)
            try OperatingPoint.write(point, from: urls[0], to: URL(fileURLWithPath: opOut))
            say("wrote \(shownPath(opOut)) with operating point \(thresholdText(point.threshold))")
        }
        say("wrote \(outURL.appendingPathComponent("report.json").path), summary.md, per_image.csv, sweep.csv and figures (PNG + SVG) in \(outURL.path)")
        // a figure left out is said, with the file and why (new-user trial: no froc.png, no word)
        for line in report.figuresNotWritten() { say("  " + line) }
        // what was left out (--skip-unreadable): at loading, and while scoring
        var skipped = SkippedInputs()
        for id in dataset.report.missingImages { skipped.add(id, "missing") }
        for (id, why) in dataset.report.unreadableImages.sorted(by: { $0.key < $1.key }) { skipped.add(id, why) }
        for s in ev.skipped { skipped.add(s.id, s.reason) }
        let skippedURL = outURL.appendingPathComponent("skipped.csv")
        try reportSkipped(skipped, to: skippedURL)
    }
}

extension EvalCommand {
    /// The data a run was trained on, as `options.json` records it, in words and as the
    /// resolved paths it compares by; `nil` for a run of a version that did not record them.
    static func recordedData(_ saved: TrainingOptions) -> (words: String, paths: [String])? {
        if let root = saved.dataRoot { return ("\(root) (options.json \"dataRoot\")", [resolvedPath(root)]) }
        if let l = saved.labelsPath, let i = saved.imagesPath {
            return ("\(l) with \(i) (options.json \"labelsPath\", \"imagesPath\")", [resolvedPath(l), resolvedPath(i)])
        }
        return nil
    }

    /// The data this evaluation reads, in words and as resolved paths.
    static func evaluatedData(_ location: DataLocation) -> (words: String, paths: [String]) {
        switch location {
        case .rsna(let root): return ("\(root.standardizedFileURL.path) (--data)", [resolvedPath(root.path)])
        case .csv(let labels, let images):
            return ("\(labels.standardizedFileURL.path) with \(images.standardizedFileURL.path) (--labels, --images)", [resolvedPath(labels.path), resolvedPath(images.path)])
        }
    }

    /// `path` absolute, with its symbolic links resolved when it exists.
    static func resolvedPath(_ path: String) -> String {
        let standard = URL(fileURLWithPath: path).standardizedFileURL.path
        guard let real = realpath(standard, nil) else { return standard }
        defer { free(real) }
        return String(cString: real)
    }

    /// The warning for a run folder `run` trained on data other than `location`: both data
    /// locations, and how many of the `scored` images are in the run's data (its folds file
    /// lists every patient it had) and how many are not; with `foldFromRun` (the fold came
    /// from the run's folds file), how many images of `all` are in none of its folds and so
    /// are not scored. `nil` when `run` is not a run folder, does not record its data, or was
    /// trained on this very data.
    static func otherDataWarning(run: String, location: DataLocation, scored: [DatasetRecord], all: [DatasetRecord], foldFromRun: Bool) -> String? {
        let runURL = URL(fileURLWithPath: run)
        guard let saved = try? TrainingSetup.savedOptions(in: runURL), let theirs = recordedData(saved) else { return nil }
        let ours = evaluatedData(location)
        guard theirs.paths != ours.paths else { return nil }
        var text = "warning: \(run) was trained on other data: \(theirs.words), not \(ours.words)"
        let foldsURL = saved.foldsFile.map { URL(fileURLWithPath: $0) } ?? runURL.appendingPathComponent("folds.csv")
        guard let folds = try? Folds.read(from: foldsURL) else { return text + "; scoring anyway" }
        let known = Set(folds.fold.keys)
        let inRun = scored.filter { known.contains($0.id) }.count
        text +=
            "; of the \(Wording.count(scored.count, "image")) scored, \(inRun) \(inRun == 1 ? "is" : "are") in the run's data "
            + "(its folds file \(foldsURL.path)) and \(scored.count - inRun) \(scored.count - inRun == 1 ? "is" : "are") not"
        let outside = all.filter { !known.contains($0.id) }.count
        if foldFromRun && outside > 0 {
            text += "; \(outside) of the \(Wording.count(all.count, "image")) read are in none of the run's folds and are not scored (--all or --folds-file scores them)"
        }
        return text + "; scoring anyway"
    }
}
