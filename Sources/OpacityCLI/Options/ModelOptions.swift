import ArgumentParser
import Foundation
import Opacity

/// The zoo entry used when no --model is given.
let defaultModelName = Zoo.defaultModelName

/// Refuses a model reference that names nothing: a path (it has a `/` or ends in `.opb`) that
/// does not exist, or a name the zoo does not know (`NAME` or `zoo:NAME`, the form `train
/// --init-weights` takes: always the zoo's entry, never a file or folder). Other problems (a
/// zoo that does not load, a bundle that does not parse) are left to loading, which reports
/// them (exit status 1).
/// - Parameters:
///   - reference: a bundle, a run folder or a zoo name (`NAME` or `zoo:NAME`), as given.
///   - option: what named it, for the message (`--model`).
/// - Throws: `ValidationError` naming the option and the reference, what was expected, the
///   nearest valid value if any (a zoo name, or a bundle or run folder near the reference:
///   ``localModels(near:)``), and where the zoo's names are listed.
func requireModelReference(_ reference: String, option: String) throws {
    let hint = "`opacity zoo list` lists the zoo's names"
    if let name = Zoo.entryName(inReference: reference) {
        // the zoo's entry only: its nearest zoo names, never a local model
        guard let zoo = try? Zoo.standard() else { return }
        do { _ = try zoo.item(name) } catch let error as ZooError {
            throw ValidationError("\(option) \(reference): \(error); \(hint)")
        }
        return
    }
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: reference, isDirectory: &isDirectory) {
        if !isDirectory.boolValue, let message = notABundleInRunFolder(reference, option: option) { throw ValidationError(message) }
        return
    }
    guard let zoo = try? Zoo.standard() else { return }
    let names = zoo.items.map(\.entry.name)
    let isPath = reference.contains("/") || reference.hasSuffix(".opb")
    if !isPath, names.contains(reference) { return }
    // the nearest of the local models and the zoo's names (a local one first on a tie): new-user
    // trial, `--model r1` for the run folder runs/r1 was offered only zoo names
    let local = localModels(near: reference)
    let typed = reference.hasSuffix(".opb") ? String(splitPath(reference).leaf.dropLast(4)) : splitPath(reference).leaf
    let nearest = nearestMatch(typed, in: local.map(\.name) + names)
    let nearLocal = nearest.flatMap { n in local.first { $0.name == n } }
    let localHint = nearLocal.map { " (did you mean \($0.kind) '\($0.path)'?)" } ?? ""
    if isPath {
        let zooHint = nearLocal == nil ? nearest.map { " (did you mean the zoo's '\($0)'?)" } ?? "" : ""
        throw ValidationError(
            "\(option) \(reference): no such file or folder; expected a bundle (.opb), a run folder (its best.opb) or a zoo name"
                + localHint + zooHint + "; \(hint)")
    }
    if nearLocal != nil {
        let error = ZooError.unknownEntry(name: reference, nearest: nil, known: names)
        throw ValidationError("\(option) \(reference): not a file or folder\(localHint), and \(error); \(hint)")
    }
    do { _ = try zoo.item(reference) } catch let error as ZooError {
        throw ValidationError("\(option) \(reference): not a file or folder, and \(error); \(hint)")
    }
}

/// The models beside `reference` that a user may have meant by it: the bundles (`.opb`, named
/// without the extension) and run folders (holding `best.opb`, `options.json` or `log.jsonl`)
/// in its folder (the current folder for a bare name), and, for a bare name, the run folders
/// in `runs/`, where `opacity train` puts them by default. Each with its name (what is
/// compared with the reference), its path as it would be typed and its kind, for a message.
/// Folders of more than 10,000 entries are not listed.
func localModels(near reference: String) -> [(name: String, path: String, kind: String)] {
    let fm = FileManager.default
    let parent = splitPath(reference).parent
    func models(in folder: String) -> [(name: String, path: String, kind: String)] {
        func inside(_ name: String) -> String { folder.isEmpty ? name : folder.hasSuffix("/") ? folder + name : folder + "/" + name }
        guard let entries = try? fm.contentsOfDirectory(atPath: folder.isEmpty ? "." : folder), entries.count <= 10_000 else { return [] }
        return entries.sorted().compactMap { entry in
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: inside(entry), isDirectory: &isDirectory) else { return nil }
            if isDirectory.boolValue {
                let isRun = ["best.opb", "options.json", "log.jsonl"].contains { fm.fileExists(atPath: inside(entry) + "/" + $0) }
                return isRun ? (entry, inside(entry), "the run folder") : nil
            }
            return entry.hasSuffix(".opb") && entry.count > 4 ? (String(entry.dropLast(4)), inside(entry), "the bundle") : nil
        }
    }
    return models(in: parent) + (parent.isEmpty ? models(in: "runs") : [])
}

/// `OPTION FILE: not an Opacity bundle; pass the run folder RUN or RUN/best.opb` when `file`
/// (an existing file) does not start with the bundle magic bytes and lies in a run folder (one
/// holding `options.json`, `log.jsonl` or `best.opb`): the run's log or options given for its
/// model (new-user trial: `detect --model runs/t1/log.jsonl` said only "not an Opacity bundle
/// (first bytes ...)"). `nil` for a bundle, a file outside a run folder or one that cannot be
/// read (loading says what is wrong with those).
func notABundleInRunFolder(_ file: String, option: String) -> String? {
    guard let handle = FileHandle(forReadingAtPath: file) else { return nil }
    defer { try? handle.close() }
    guard let head = try? handle.read(upToCount: BundleFormat.magic.count), Array(head) != BundleFormat.magic else { return nil }
    let folder = splitPath(file).parent
    let run = folder.isEmpty ? "." : folder
    func inRun(_ name: String) -> String { run.hasSuffix("/") ? run + name : run + "/" + name }
    let fm = FileManager.default
    guard ["options.json", "log.jsonl", "best.opb"].contains(where: { fm.fileExists(atPath: inRun($0)) }) else { return nil }
    let best = fm.fileExists(atPath: inRun("best.opb")) ? " or \(inRun("best.opb"))" : " (it has no best.opb yet: no epoch has finished)"
    return "\(option) \(file): not an Opacity bundle; pass the run folder \(run)\(best)"
}

/// Options naming one model or an ensemble.
struct ModelOptions: ParsableArguments {
    @Option(
        name: .customLong("model"),
        help: ArgumentHelp(
            "A bundle (.opb), a run folder (its best.opb) or a zoo name (NAME or zoo:NAME); repeat for an ensemble (folds x checkpoints). Default: the zoo's \(defaultModelName).",
            valueName: "model"))
    var models: [String] = []

    @Option(
        name: .long,
        help:
            "How an ensemble combines models: per anchor before NMS by percentile (mean scores and centres; sizes p20 - s x (p80 - p20)) or mean (mean of everything; then boxes x 0.875 unless --shrink); or their boxes after NMS by wbf (Weighted Boxes Fusion, see --wbf-*). Default: a zoo ensemble entry's own rule, else percentile."
    )
    var ensemble: EnsembleChoice?

    @Option(name: .long, parsing: .unconditional, help: "WBF: boxes with IoU above this are fused (ensemble-boxes' iou_thr).")
    var wbfIou: Double = 0.55

    @Option(name: .long, parsing: .unconditional, help: "WBF: boxes scoring below this are ignored (skip_box_thr).")
    var wbfSkip: Double = 0.0

    @Option(name: .long, help: "WBF: how a fused box is scored (ensemble-boxes' conf_type).")
    var wbfConf: WBFConfidenceChoice = .avg

    @Option(name: .long, help: ArgumentHelp("WBF: one weight per --model, colon-separated (default all 1).", valueName: "w:w:..."))
    var modelWeights: String?

    @Option(
        name: .long, help: ArgumentHelp("Test-time augmentation: flip and/or extra input scales, e.g. flip,scale=0.9:1.1 (every combination is run).", valueName: "flip,scale=F:F"))
    var tta: String?

    @Option(name: .long, help: "How TTA views are merged: wbf (boxes, with the --wbf-* settings) or anchors (per-anchor average by the ensemble rule; flip only).")
    var ttaMerge: TTAMergeChoice = .wbf

    @Option(name: .long, parsing: .unconditional, help: "The s of the percentile rule (the paper tuned 1.6).")
    var sizeScale: Float = 1.6

    @Option(name: .long, parsing: .unconditional, help: "Scale every box about its centre (the paper's alternative: 0.875).")
    var shrink: Float?

    @Flag(name: .long, help: "Download zoo models that are not in the cache yet (the only time Opacity uses the network).")
    var fetch = false

    @Flag(name: .long, help: "Accept models whose weights hold NaN or infinity (refused by default, naming the tensor).")
    var allowNonfinite = false

    func validate() throws {
        // open bounds have no nearest valid value: the usual setting instead
        guard wbfIou > 0 && wbfIou < 1 else { throw outOfRange("--wbf-iou", Wording.plainNumber(wbfIou), expected: "a number in (0, 1), e.g. 0.55") }
        guard wbfSkip >= 0 && wbfSkip < 1 else {
            throw outOfRange("--wbf-skip", Wording.plainNumber(wbfSkip), expected: "a number in [0, 1), e.g. 0.02", nearest: wbfSkip < 0 ? "0" : nil)
        }
        if let tta { _ = try parsedTTA(tta) }
        if let w = modelWeights {
            let n = max(1, models.count)
            guard ensemble == .wbf else {
                // the rule in force and the way on (trial: "--model-weights applies to --ensemble wbf" said neither)
                if let ensemble {
                    throw ValidationError(
                        "--model-weights weighs the models of --ensemble wbf only, not --ensemble \(ensemble.rawValue); use --ensemble wbf, or leave out --model-weights")
                }
                throw ValidationError(
                    "--model-weights weighs the models of --ensemble wbf only, and no --ensemble was given (the default rule is percentile); add --ensemble wbf, or leave out --model-weights"
                )
            }
            guard let ws = parsedWeights(w), ws.count == n, ws.allSatisfy({ $0 > 0 && $0.isFinite }) else {
                // one number per model, counted in words that agree (trial: "expected 1 positive numbers")
                let example = Array(repeating: "1", count: n).joined(separator: ":")
                let numbers = n == 1 ? "1 positive number" : "\(n) positive numbers separated by ':'"
                throw ValidationError(
                    "--model-weights '\(w)': expected \(numbers), one per --model (\(Wording.count(n, "model")) given), e.g. \(example)")
            }
        }
        if let shrink, !(shrink.isFinite && shrink > 0.1 && shrink <= 2) {
            throw outOfRange("--shrink", Wording.plainNumber(shrink), expected: "a number in (0.1, 2], e.g. 0.875 (the paper's)", nearest: shrink > 2 ? "2" : nil)
        }
        try requireRange("--size-scale", sizeScale, 0, 10)
    }

    /// Refuses a --model that names nothing (a path that does not exist, an unknown zoo
    /// name) as a usage error (exit status 64) before anything loads; run by
    /// ``hashedPredictor(registry:)`` and by commands that load models later (`serve`).
    /// - Throws: `ValidationError` from ``requireModelReference(_:option:)``.
    func requireReferences() throws {
        for m in models { try requireModelReference(m, option: "--model") }
    }

    /// Loads the models and builds the predictor.
    func predictor(registry: Registry) throws -> (Predictor, [URL]) {
        let (p, urls, _) = try hashedPredictor(registry: registry)
        return (p, urls)
    }

    /// ``predictor(registry:)`` with the SHA-256 of the bytes each model was built from
    /// (read once: what `detect` and `serve` report is what they run).
    func hashedPredictor(registry: Registry) throws -> (Predictor, [URL], [String]) {
        try requireReferences()
        // zoo ensemble entries expand into their members; the entry's rule applies unless
        // --ensemble is given
        let (refs, rule) = try ModelReference.expand(models.isEmpty ? [defaultModelName] : models)
        let ensemble = self.ensemble ?? (rule.flatMap(EnsembleChoice.init(rawValue:)) ?? .percentile)
        var detectors: [Detector] = [], urls: [URL] = [], digests: [String] = []
        for r in refs {
            let (d, u, h) = try ModelReference.loadHashed(r, registry: registry, allowFetch: fetch, allowNonFinite: allowNonfinite)
            detectors.append(d)
            urls.append(u)
            digests.append(h)
        }
        let method: EnsembleMethod
        switch ensemble {
        case .mean: method = .meanShrink(shrink == nil ? 0.875 : 1)
        case .wbf: method = .wbf(fusion, weights: modelWeights.flatMap(parsedWeights))
        case .percentile: method = .percentile(scale: sizeScale)
        }
        // the models named, not only their configs (trial: the message gave two config strings
        // and left the user to find which --model each came from)
        let p = try Predictor(detectors: detectors, method: method, tta: try tta.map(parsedTTA), names: refs.map { "--model \($0)" })
        if let shrink { p.shrink = shrink }
        return (p, urls, digests)
    }

    /// The WBF settings from the --wbf-* options.
    var fusion: WeightedBoxesFusion {
        WeightedBoxesFusion(
            iouThreshold: wbfIou, skipBoxThreshold: wbfSkip,
            confidence: WeightedBoxesFusion.ConfidenceRule(rawValue: wbfConf.rawValue) ?? .avg)
    }

    /// `2:1:1` as numbers; `nil` when a part is not a number.
    func parsedWeights(_ s: String) -> [Double]? {
        let parts = s.split(separator: ":", omittingEmptySubsequences: false).map { Double($0) }
        return parts.contains(where: { $0 == nil }) ? nil : parts.compactMap { $0 }
    }

    /// The --tta views with the --tta-merge rule.
    func parsedTTA(_ s: String) throws -> TestTimeAugmentation {
        do { return try TestTimeAugmentation.parse(s, merge: ttaMerge == .anchors ? .anchors : .wbf(fusion)) } catch {
            throw ValidationError("\(error)")
        }
    }

    /// Where the score threshold of `detect` and `submit` comes from, for their model line, and
    /// a note when a model's operating point is passed over because it was picked where the
    /// validation metric was 0 at every threshold.
    ///
    /// A checkpoint stores the threshold where its validation metric peaked
    /// (`metrics.metric_threshold`); a model that found nothing on validation yet (a run of an
    /// epoch or two) scores 0 at every threshold, and the lowest swept, 0.01, is stored
    /// (new-user trial: `detect --model RUN` used 0.01). Such a point is no operating point
    /// (``OperatingPoint/pickedAtZeroMetric``): the default is used, as for a model that stores
    /// none, or in an ensemble the next model's operating point (``OperatingPoint/threshold(for:fallback:)``),
    /// said in the same note (``zeroMetricNote(given:urls:consequence:)``).
    /// - Parameters:
    ///   - given: `--threshold`, if given.
    ///   - urls: the models' bundle files, in order (the first that stores one to use gives it).
    /// - Returns: words to add after the threshold (empty for `--threshold`) and the note, if any.
    static func thresholdSource(given: Float?, urls: [URL]) -> (words: String, warning: String?) {
        if given != nil { return ("", nil) }
        let points = urls.compactMap(OperatingPoint.read)
        let note = zeroMetricNote(given: given, urls: urls, consequence: "using the default \(thresholdText(OperatingPoint.defaultThreshold))")
        if points.contains(where: { !$0.pickedAtZeroMetric }) { return (" (the model's operating point)", note) }
        if points.isEmpty { return (" (the default: the model stores no operating point)", nil) }
        return (" (the default)", note)
    }

    /// The note said once when a model's operating point is passed over
    /// (``OperatingPoint/pickedAtZeroMetric``): why, and `consequence` (what is used
    /// instead, e.g. "using the default 0.20").
    /// - Parameter model: the model's file name, said in an ensemble (nil: "the model's").
    static func zeroMetricNote(_ point: OperatingPoint, model: String? = nil, consequence: String) -> String {
        let whose = model.map { "the operating point of \($0) (the ensemble's first model that stores one)" } ?? "the model's operating point"
        return "note: \(whose) was picked where its validation metric was 0 at every threshold; \(consequence) "
            + "(it stores \(thresholdText(point.threshold)), the lowest threshold swept: the model found no opacity on its validation images yet; "
            + "give --threshold to choose one)"
    }

    /// The note for the models in `urls` when the first that stores an operating point picked
    /// it at metric 0; `nil` otherwise or when `given`. In an ensemble whose later model
    /// stores one to use, that one is used (``OperatingPoint/threshold(for:fallback:)``) and
    /// the note says so; else `consequence` (what is used instead, e.g. "using the default 0.20").
    static func zeroMetricNote(given: Float?, urls: [URL], consequence: String) -> String? {
        guard given == nil, let first = urls.firstIndex(where: { OperatingPoint.read($0) != nil }),
            let zero = OperatingPoint.read(urls[first]), zero.pickedAtZeroMetric
        else { return nil }
        let model = urls.count > 1 ? urls[first].lastPathComponent : nil
        guard let next = urls.firstIndex(where: { OperatingPoint.usable($0) != nil }), let used = OperatingPoint.usable(urls[next]) else {
            return zeroMetricNote(zero, model: model, consequence: consequence)
        }
        let instead = "using the operating point of \(urls[next].lastPathComponent), \(thresholdText(used.threshold)), instead"
        return zeroMetricNote(zero, model: model, consequence: instead)
    }

    /// The description printed before results.
    func describe(_ urls: [URL], _ p: Predictor) -> String {
        let tta = p.tta.map { ", TTA \($0)" } ?? ""
        if urls.count == 1 { return "model: \(urls[0].path) \(p.detectors[0].config)" + tta }
        return "ensemble of \(Wording.count(urls.count, "model")) (\(p.method)): " + urls.map(\.lastPathComponent).joined(separator: ", ") + tta
    }
}
