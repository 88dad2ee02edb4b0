import Foundation
import OpacityCore
import OpacityPersistence

extension ModelCard {
    /// What every Opacity model is for unless its card says otherwise.
    public static let researchUse = "Research on lung-opacity (pneumonia) detection in frontal chest X-rays: comparing detectors, ensembles and training recipes; reproducing the RSNA Pneumonia Detection Challenge."
    /// What no Opacity model has been validated for.
    public static let notClinical = "Not a medical device: not for diagnosis, triage, screening or any decision about a patient; not validated on lateral views, children, CT or other modalities; scores are not calibrated probabilities."
    /// How the CLI and ``Predictor`` prepare images.
    public static let dicomHandling = "Rescale Slope/Intercept applied; the file's own window when it has one, else 8-bit unsigned data as stored (the RSNA films), else the minimum-to-maximum range, mapped to 8-bit grey; MONOCHROME1 inverted; the whole image resampled to the input size (no cropping)."

    /// A card drawn up from what a bundle records: config, provenance, metrics (measured on
    /// its validation data) and operating point (none for one picked where the validation
    /// metric was 0 at every threshold, ``OperatingPoint/pickedAtZeroMetric``), with the
    /// project's research-only use.
    /// - Parameters:
    ///   - metadata: the bundle's metadata.
    ///   - inputSize: the detector's square input side in pixels.
    public static func drawnUp(from metadata: BundleMetadata, inputSize: Int) -> ModelCard {
        let p = metadata.provenance
        var data = p.data ?? "not recorded"
        if let f = p.fold { data += ", fold \(f)" + (p.folds.map { " of \($0)" } ?? "") + " held out for validation" }
        var recipe = "config \(metadata.config)"
        if let e = p.epoch { recipe += "; weights after epoch \(e)" }
        if let s = p.seed { recipe += "; seed \(s)" }
        if let n = p.notes { recipe += "; \(n)" }
        let validation = p.data.map { "the validation split of \($0)" + (p.fold.map { " (fold \($0))" } ?? "") } ?? "the validation split"
        let metrics = metadata.metrics.sorted { $0.key < $1.key }.filter { $0.key != "epoch" && $0.key != "metric_threshold" }
            .map { Metric(name: $0.key, value: $0.value, data: validation) }
        let op = OperatingPoint(metadata: metadata).flatMap { $0.pickedAtZeroMetric ? nil : $0 }
        return ModelCard(
            version: "1.0.0", intendedUse: researchUse, outOfScope: notClinical,
            input: Input(channels: 1, size: inputSize, intensityRange: "[0, 1] (8-bit grey / 255)", dicom: dicomHandling),
            outputs: "Boxes (x, y, width, height in the image's own pixels) with opacity scores in [0, 1] after NMS; with a global head, probabilities of No Lung Opacity / Not Normal, Normal, Lung Opacity.",
            trainingData: data, recipe: recipe, metrics: metrics, operatingThreshold: op.map { Double($0.threshold) },
            license: "not recorded; state it with --card", changelog: [Change(version: "1.0.0", date: String(ISO8601DateFormatter().string(from: metadata.created).prefix(10)),
                                                          changes: "first export")])
    }
}
