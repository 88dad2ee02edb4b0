import ArgumentParser
import Foundation
import Opacity

/// `opacity export`: a weights-only bundle in the storage of your choice.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a model's weights (no optimizer state) to a new bundle, e.g. int8 for a 4x smaller file.",
        discussion: """
            The new bundle keeps the config string, provenance and metrics; metrics given with --metric are added. Loading always yields fp32 weights.

            Examples:
              opacity export runs/r34 --storage int8 -o r34-int8.opb
              opacity export runs/r34/checkpoints/epoch_008.opb --storage fp16 -o r34.opb --metric heldout_metric=0.71
            """)

    @Argument(help: "A bundle, a run folder (its best.opb) or a zoo name.") var model: String
    @Option(name: [.short, .long], help: "The bundle to write.") var output: String
    @Option(name: .long, help: "Storage (int8: per-output-channel scales for weight tensors).") var storage = StorageChoice(.f32)
    @Option(name: .long, help: ArgumentHelp("A metric to record, name=value (repeatable).", valueName: "name=value")) var metric: [String] = []
    @Option(name: .long, help: "A note to record in the provenance.") var notes: String?

    func validate() throws {
        for m in metric {
            let kv = m.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, Double(kv[1]) != nil else { throw ValidationError("--metric takes name=number, not '\(m)'") }
        }
    }

    func run() throws {
        let registry = try CommandContext.registry()
        let url = try ModelReference.resolve(model)
        let loaded = try Detector.loadWithReport(from: url, registry: registry)
        var meta = BundleMetadata(provenance: loaded.info.metadata.provenance, metrics: loaded.info.metadata.metrics)
        for m in metric {
            let kv = m.split(separator: "=", maxSplits: 1)
            meta.metrics[String(kv[0])] = Double(kv[1])!
        }
        if let notes { meta.provenance.notes = notes }
        let summary = try loaded.detector.save(to: URL(fileURLWithPath: output), storage: .uniform(storage.type), metadata: meta)
        say("\(url.path) -> \(output)")
        say(summary.description)
    }
}
