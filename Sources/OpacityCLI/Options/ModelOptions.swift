import ArgumentParser
import Foundation
import Opacity

/// The zoo entry used when no --model is given.
let defaultModelName = "retinanet-r34-rsna1k"

/// Options naming one model or an ensemble.
struct ModelOptions: ParsableArguments {
    @Option(name: .customLong("model"), help: ArgumentHelp(
        "A bundle (.opb), a run folder (its best.opb) or a zoo name; repeat for an ensemble (folds x checkpoints). Default: the zoo's \(defaultModelName).",
        valueName: "model"))
    var models: [String] = []

    @Option(name: .long, help: "How an ensemble combines models per anchor before NMS: percentile (mean scores and centres; sizes p20 - s x (p80 - p20)) or mean (mean of everything; then boxes x 0.875 unless --shrink).")
    var ensemble: EnsembleChoice = .percentile

    @Option(name: .long, help: "The s of the percentile rule (the paper tuned 1.6).")
    var sizeScale: Float = 1.6

    @Option(name: .long, help: "Scale every box about its centre (the paper's alternative: 0.875).")
    var shrink: Float?

    @Flag(name: .long, help: "Download zoo models that are not in the cache yet (the only time Opacity uses the network).")
    var fetch = false

    @Flag(name: .long, help: "Accept models whose weights hold NaN or infinity (refused by default, naming the tensor).")
    var allowNonfinite = false

    func validate() throws {
        if let shrink, !(shrink.isFinite && shrink > 0.1 && shrink <= 2) { throw ValidationError("--shrink must be in (0.1, 2], e.g. 0.875") }
        guard sizeScale.isFinite && sizeScale >= 0 && sizeScale <= 10 else { throw ValidationError("--size-scale must be in 0...10") }
    }

    /// Loads the models and builds the predictor.
    func predictor(registry: Registry) throws -> (Predictor, [URL]) {
        // zoo ensemble entries expand into their members; the entry's rule applies unless
        // --ensemble names another one than the default
        let (refs, rule) = try ModelReference.expand(models.isEmpty ? [defaultModelName] : models)
        let ensemble = (rule == "mean" && self.ensemble == .percentile) ? .mean : self.ensemble
        var detectors: [Detector] = [], urls: [URL] = []
        for r in refs {
            let (d, u) = try ModelReference.load(r, registry: registry, allowFetch: fetch, allowNonFinite: allowNonfinite)
            detectors.append(d)
            urls.append(u)
        }
        let method: EnsembleMethod = ensemble == .mean ? .meanShrink(shrink == nil ? 0.875 : 1) : .percentile(scale: sizeScale)
        let p = try Predictor(detectors: detectors, method: method)
        if let shrink { p.shrink = shrink }
        return (p, urls)
    }

    /// The description printed before results.
    func describe(_ urls: [URL], _ p: Predictor) -> String {
        if urls.count == 1 { return "model: \(urls[0].path) \(p.detectors[0].config)" }
        return "ensemble of \(urls.count) models (\(p.method)): " + urls.map(\.lastPathComponent).joined(separator: ", ")
    }
}
