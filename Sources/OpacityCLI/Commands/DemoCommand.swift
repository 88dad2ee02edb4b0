import ArgumentParser
import Foundation
import Opacity

/// `opacity demo`: the whole workflow on the embedded synthetic set, in a few minutes.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Generate a synthetic chest X-ray set, train a small detector on it, evaluate it and draw what it finds.",
        discussion: """
            Everything lands in -o/--output: the data, the run (checkpoints, log.jsonl), the loss curves (curves.png), the metric against the score threshold (metric_vs_threshold.png) and validation images with the truth in red and the detections in green (overlays/).
            """)

    @Option(name: [.short, .long], help: "Output folder.") var output: String = "opacity-demo"
    @Option(name: .customLong("out"), help: ArgumentHelp("Deprecated spelling of -o/--output.", visibility: .hidden)) var deprecatedOut: String?
    @Option(name: .long, parsing: .unconditional, help: "Synthetic images to generate.") var count: Int = 400
    @Option(name: .long, parsing: .unconditional, help: "Training epochs.") var epochs: Int = 6
    @Option(name: .long, help: "The model.") var config: String = "retinanet(encoder=resnet18(width=0.5), neck=fpn(channels=64), head=retina(channels=64), size=160)"
    @Option(name: .long, parsing: .unconditional, help: "Adam learning rate (higher than the paper's 1e-5: this encoder starts from scratch).") var lr: Double = 1e-3
    @Option(name: .long, parsing: .unconditional, help: "Seed.") var seed: UInt64 = 1
    @OptionGroup var runtime: RuntimeOptions

    @OptionGroup var pluginOptions: PluginOptions

    func validate() throws {
        try requireAtLeast("--count", count, 1)
        try requireAtLeast("--epochs", epochs, 1)
        guard lr.isFinite && lr > 0 else { throw outOfRange("--lr", Wording.plainNumber(lr), expected: "a finite positive number, e.g. 1e-3") }
    }

    func run() throws {
        runtime.apply()
        let out = try resolveOutput(output, deprecated: deprecatedOut, defaultValue: "opacity-demo") ?? output
        try requireOutputFolder(out, option: "-o/--output", for: "the data, the run and the figures")
        let t0 = Date()
        let root = URL(fileURLWithPath: out)
        let data = root.appendingPathComponent("data")
        let runDir = root.appendingPathComponent("run")
        let registry = try pluginOptions.registry()
        // before the data is made: an error in --config is a usage error (64)
        let canonical = try commandLineConfig(config, option: "--config", registry: registry)
        // 1. data
        if !FileManager.default.fileExists(atPath: data.appendingPathComponent("stage_2_train_labels.csv").path) {
            say("1/4 generating \(count) synthetic chest X-rays in \(data.path)")
            _ = try SyntheticChestXRay(config: SyntheticConfig(count: count, size: 512, seed: seed)).write(to: data, progress: runtime.progressBar("synth"))
        } else {
            say("1/4 reusing the synthetic set in \(data.path)")
        }
        // 2. training
        say("2/4 training \(canonical) for \(epochs) epoch\(epochs == 1 ? "" : "s")")
        try? FileManager.default.removeItem(at: runDir)
        var options = TrainingOptions(config: config)
        options.epochs = epochs
        options.batchSize = 8
        options.learningRate = lr
        options.clipNorm = 1
        options.freezeBatchNorm = false
        options.seed = seed
        options.augmentation = "light"
        options.data = DataLocation.rsna(data).provenanceLabel
        var setup = TrainingSetup(options: options, data: .rsna(data), runDirectory: runDir)
        setup.workers = 1
        let progress = TrainingProgress(quiet: runtime.quiet)
        let (trainer, summary) = try setup.makeTrainer(registry: registry, observer: progress)
        say(
            "    \(summary.trainImages) training and \(Wording.count(summary.validationImages, "validation image")); \(Wording.count(trainer.detector.parameterCount, "parameter"))"
        )
        _ = try trainer.run()
        // 3. evaluation
        say("3/4 evaluating the best checkpoint on the validation fold")
        let best = trainer.bestURL.resolvingSymlinksInPath()
        let detector = try Detector.load(from: best, registry: registry)
        let predictor = try Predictor(detectors: [detector])
        let dataset = try DataLocation.rsna(data).load()
        let folds = try Folds.read(from: runDir.appendingPathComponent("folds.csv"))
        let ids = Set(folds.ids(inFold: options.fold))
        let records = dataset.records.filter { ids.contains($0.id) }
        let ev = try Evaluation(predictor: predictor, records: records)
        try ev.chart(title: "RSNA metric on \(records.count) validation images").write(png: root.appendingPathComponent("metric_vs_threshold.png"))
        try Data(ev.perImageCSV(threshold: ev.sweep.bestThreshold).utf8).write(to: root.appendingPathComponent("per_image.csv"), options: .atomic)
        let cmp = try RunComparison(folders: [runDir])
        var chart = cmp.chart("val_total")
        chart.title = "loss per epoch"
        chart.series = [cmp.chart("train_total").series[0], chart.series[0]]
        chart.series[0].name = "training"
        chart.series[1].name = "validation"
        chart.series[1].color = LineChart.palette[1]
        chart.yLabel = "loss"
        try chart.write(png: root.appendingPathComponent("curves.png"))
        // 4. pictures
        say("4/4 drawing detections on validation images")
        let overlays = root.appendingPathComponent("overlays")
        let filter = ConfidenceFilter(threshold: ev.sweep.bestThreshold)
        let shown = ev.images.filter { !$0.truth.isEmpty }.prefix(6) + ev.images.filter { $0.truth.isEmpty }.prefix(2)
        for r in shown {
            guard let rec = records.first(where: { $0.id == r.id }), let url = rec.imageURL else { continue }
            let img = try ImageFile.read(url)
            try writePNG(
                img.overlay(truth: r.truth, detections: filter.apply(r.detections), thickness: 3),
                to: overlays.appendingPathComponent("\(r.id).png"))
        }
        say(String(format: "\nvalidation metric %.4f at score threshold %.2f (%@)", ev.sweep.bestScore, ev.sweep.bestThreshold, Wording.count(records.count, "image")))
        say("curves:    \(root.appendingPathComponent("curves.png").path)")
        say("metric:    \(root.appendingPathComponent("metric_vs_threshold.png").path)")
        say("overlays:  \(overlays.path) (truth red, detections green)")
        say("model:     \(best.path)")
        say(
            String(
                format: "done in %.0f s. Try: opacity detect %@ --model %@", Date().timeIntervalSince(t0),
                records.first?.imageURL?.path ?? "image.png", runDir.path))
    }
}
