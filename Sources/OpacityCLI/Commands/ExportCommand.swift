import ArgumentParser
import Foundation
import Opacity

/// What `opacity export` writes.
enum ExportFormat: String, CaseIterable, ExpressibleByArgument {
    case bundle, onnx
}

/// `opacity export`: a weights-only bundle in the storage of your choice, or an ONNX model.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a model's weights (no optimizer state) to a new bundle, e.g. int8 for a 4x smaller file, or to ONNX.",
        discussion: """
            The new bundle keeps the config string, provenance and metrics; metrics given with --metric are added. Loading always yields fp32 weights.

            --format onnx writes an ONNX model (opset 17, IR 8) for ONNX Runtime and other runtimes: input images [N, 1, S, S] in [0, 1]; outputs class_logits, box_deltas, global_log_probs and anchors. --postprocess adds box decoding, NMS and the confidence filter (outputs boxes, scores, batch_index). See Documentation/Export.md.

            Every exported bundle carries a model card (Documentation/Zoo.md, Model cards): the one given with --card, else the source bundle's, else one drawn up from what the bundle records (config, provenance, metrics, operating point) with the project's research-only intended use; --card-version and --card-change add a changelog line.

            The model is the first argument or --model (as in the other commands); without either, the zoo's \(defaultModelName), like detect and serve. An existing -o/--output file (an earlier export) is not replaced without --overwrite.

            Examples:
              opacity export runs/r34 --storage int8 -o r34-int8.opb
              opacity export runs/r34/checkpoints/epoch_008.opb --storage fp16 -o r34.opb \\
                  --metric heldout_metric=0.71
              opacity export retinanet-r34-composite --format onnx --postprocess \\
                  -o r34.onnx
              opacity export runs/r34 -o r34.opb --card card.json
            """)

    @Argument(help: "A bundle, a run folder (its best.opb) or a zoo name (default: the zoo's \(defaultModelName)).") var model: String?
    @Option(name: .customLong("model"), help: ArgumentHelp("The model, as the first argument (the spelling the other commands use).", valueName: "model"))
    var modelOption: String?
    @Option(name: [.short, .long], help: "The bundle or ONNX file to write.") var output: String
    @Flag(name: .long, help: "Replace the -o/--output file of an earlier export.") var overwrite = false
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Storage (int8: per-output-channel scales for weight tensors). Default: the source bundle's (a zoo model's int8 stays int8), fp32 where the source's is not one of these.",
            valueName: "storage"))
    var storage: StorageChoice?
    @Option(name: .long, help: ArgumentHelp("A metric to record, name=value (repeatable).", valueName: "name=value")) var metric: [String] = []
    @Option(name: .long, help: "A note to record in the provenance.") var notes: String?
    @Option(name: .long, help: "What to write: a bundle (.opb) or an ONNX model.") var format = ExportFormat.bundle
    @Flag(name: .long, help: "ONNX: add box decoding, NMS and the confidence filter to the graph.") var postprocess = false
    @Option(
        name: .long, parsing: .unconditional,
        help: "ONNX with --postprocess: keep boxes scoring above this (default: the threshold saved with the model, else 0.2, as opacity detect).") var threshold: Float?
    @Option(name: .customLong("data"), help: "Replace the provenance's description of the training data (e.g. to drop a machine's folder name).")
    var dataDescription: String?
    @Option(name: .long, help: ArgumentHelp("A model card (JSON, Documentation/Zoo.md) to store in the bundle.", valueName: "card.json")) var card: String?
    @Option(name: .long, help: "The version this export gets in its card's changelog.") var cardVersion: String?
    @Option(name: .long, help: "What changed in this version (with --card-version).") var cardChange: String?

    @OptionGroup var pluginOptions: PluginOptions

    func validate() throws {
        if let model, let modelOption, model != modelOption {
            throw ValidationError("the first argument (\(model)) and --model \(modelOption) name different models; give one")
        }
        if format == .onnx {
            // Name the options given (trial: `--storage fp16` alone was told about four options).
            let given = [
                ("--storage", storage != nil && storage?.type != .f32), ("--metric", !metric.isEmpty), ("--notes", notes != nil),
                ("--data", dataDescription != nil), ("--card", card != nil), ("--card-version", cardVersion != nil),
                ("--card-change", cardChange != nil),
            ].filter(\.1).map(\.0)
            if !given.isEmpty {
                let list = given.count == 1 ? given[0] : given.dropLast().joined(separator: ", ") + " and " + given.last!
                let weights = given.contains("--storage") ? "; ONNX weights are fp32" : ""
                throw ValidationError("\(list) \(given.count == 1 ? "applies" : "apply") to bundles (--format bundle), not to --format onnx\(weights)")
            }
        } else if postprocess || threshold != nil {
            throw ValidationError("--postprocess and --threshold apply to --format onnx")
        }
        try requireRange("--threshold", threshold, 0, 1)
        // new-user trial: `export MODEL -o model.onnx` without --format wrote an Opacity bundle
        // under the ONNX name, which ONNX Runtime then refused.
        let ext = URL(fileURLWithPath: output).pathExtension.lowercased()
        if format == .bundle && ext == "onnx" {
            throw ValidationError(
                "-o \(output) names an ONNX file, but --format is bundle (the default), which writes an Opacity bundle; add --format onnx for an ONNX model, or name the bundle .opb"
            )
        }
        if format == .onnx && ext == "opb" {
            throw ValidationError(
                "-o \(output) names an Opacity bundle (.opb), but --format onnx writes an ONNX model; name it .onnx, or leave out --format onnx for a bundle")
        }
        for m in metric {
            let kv = m.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, Double(kv[1]) != nil else { throw ValidationError("--metric takes name=number, not '\(m)'") }
        }
    }

    func run() throws {
        try requireOutputFile(output, option: "-o/--output", for: format == .onnx ? "the ONNX model" : "the bundle")
        if let model { try requireModelReference(model, option: "the model argument") }
        if let modelOption { try requireModelReference(modelOption, option: "--model") }
        let registry = try pluginOptions.registry()
        let reference = model ?? modelOption ?? defaultModelName
        if model == nil && modelOption == nil { note("no model named: exporting the zoo's \(defaultModelName) (name another as the first argument or --model)") }
        let url = try ModelReference.resolve(reference)
        // before the model loads: the output is not the input, and the card reads
        if OutputPaths.sameFile(URL(fileURLWithPath: output), url) {
            throw ValidationError(
                "-o \(output) is the model being exported; name a new file (e.g. \(url.deletingPathExtension().lastPathComponent)\(format == .onnx ? ".onnx" : "-export.opb"))")
        }
        try refuseEarlierResults(
            [output], overwrite: overwrite, replacing: format == .onnx ? "the earlier ONNX model" : "the earlier bundle", otherwise: "name another file with -o/--output")
        var givenCard: ModelCard?
        if let card {
            try requireExistingPath("--card", card, directory: false, expected: "a model card (JSON, see Documentation/Zoo.md, Model cards)")
            do { givenCard = try JSONDecoder().decode(ModelCard.self, from: Data(contentsOf: URL(fileURLWithPath: card))) } catch {
                throw ValidationError("--card \(card): not a model card (\(error)); see Documentation/Zoo.md, Model cards")
            }
        }
        let loaded = try Detector.loadWithReport(from: url, registry: registry)
        if format == .onnx {
            try exportONNX(loaded.detector, bundle: url)
            return
        }
        var meta = BundleMetadata(provenance: loaded.info.metadata.provenance, metrics: loaded.info.metadata.metrics)
        for m in metric {
            let kv = m.split(separator: "=", maxSplits: 1)
            meta.metrics[String(kv[0])] = Double(kv[1])!
        }
        if let notes { meta.provenance.notes = notes }
        if let dataDescription { meta.provenance.data = dataDescription }
        if let op = loaded.info.metadata.extra[OperatingPoint.key] { meta.extra[OperatingPoint.key] = op }
        var modelCard: ModelCard
        if let givenCard {
            modelCard = givenCard
        } else if let existing = ModelCard(metadata: loaded.info.metadata) {
            modelCard = existing
        } else {
            modelCard = ModelCard.drawnUp(from: meta, inputSize: loaded.detector.inputSize)
            note("no model card given: drew one up from the bundle's metadata (pass --card card.json to give your own)")
            if let zero = OperatingPoint(metadata: meta), zero.pickedAtZeroMetric {
                let consequence = "the card gives none (detect, submit and serve use the default \(thresholdText(OperatingPoint.defaultThreshold)))"
                note(ModelOptions.zeroMetricNote(zero, consequence: consequence))
            }
        }
        let policy = exportStorage(source: loaded.info.metadata.storage)
        if let v = cardVersion {
            let date = String(ISO8601DateFormatter().string(from: Date()).prefix(10))
            modelCard.version = v
            modelCard.changelog.insert(ModelCard.Change(version: v, date: date, changes: cardChange ?? "exported with storage \(policy.name)"), at: 0)
        }
        do { try modelCard.validate(file: card ?? output, field: "model_card") } catch { throw ValidationError("\(error)") }
        meta.extra[ModelCard.metadataKey] = modelCard.jsonValue
        try createParentFolder(of: URL(fileURLWithPath: output), option: "-o/--output")
        let summary = try loaded.detector.save(to: URL(fileURLWithPath: output), storage: policy, metadata: meta)
        say("\(url.path) -> \(shownPath(output))")
        say(summary.description)
    }

    /// The storage of the new bundle: `--storage`, else the source bundle's own (`source`, the
    /// policy name its metadata records), else fp32 with a note saying why.
    private func exportStorage(source: String) -> StoragePolicy {
        if let storage { return .uniform(storage.type) }
        if let kept = StoragePolicy(name: source) {
            note("storage: \(kept.name), as the source bundle's (pass --storage to choose another)")
            return kept
        }
        note("storage: fp32: the source bundle's storage '\(source)' is not one of \(StorageType.userNames.joined(separator: ", ")) (pass --storage to choose)")
        return .fp32
    }

    /// Writes the ONNX model with the config string, the bundle's sha256 and the framework
    /// version in its metadata.
    private func exportONNX(_ detector: Detector, bundle url: URL) throws {
        let target = URL(fileURLWithPath: output)
        guard target.resolvingSymlinksInPath().standardizedFileURL != url.resolvingSymlinksInPath().standardizedFileURL else {
            throw ValidationError("-o \(output) is the model being exported; name a new file (e.g. \(url.deletingPathExtension().lastPathComponent).onnx)")
        }
        let digest = SHA256.hash(Array(try Data(contentsOf: url, options: .mappedIfSafe))).hex
        var options = ONNXExportOptions(metadata: [
            ("framework_version", FrameworkVersion.current), ("bundle_sha256", digest),
            ("bundle", url.lastPathComponent),
        ])
        if postprocess {
            let t = threshold ?? ModelReference.savedThreshold(url) ?? OperatingPoint.defaultThreshold
            let consequence = "post-processing uses the default \(thresholdText(OperatingPoint.defaultThreshold))"
            if let n = ModelOptions.zeroMetricNote(given: threshold, urls: [url], consequence: consequence) { note(n) }
            options.postprocess = try ONNXPostprocess.matching(detector, threshold: t)
        }
        try createParentFolder(of: target, option: "-o/--output")
        let model = try ONNXExporter.write(detector, to: target, options: options)
        say("\(url.path) -> \(shownPath(output))")
        say(
            "ONNX opset \(ONNXModel.opsetVersion), IR \(ONNXModel.irVersion): \(model.nodes.count) nodes, \(model.initializers.count) initializers; outputs "
                + model.outputs.map(\.name).joined(separator: ", "))
        if let p = options.postprocess {
            say(
                String(
                    format: "post-processing: candidate score %g, NMS IoU %g, at most %d candidates, shrink %g, threshold %g, half-max cut %g",
                    p.candidateScore, p.nmsIoU, p.maxCandidates, p.shrink, p.threshold, p.relativeToMax))
        }
    }
}
