import ArgumentParser
import Foundation
import Opacity

/// `opacity submit`.
struct SubmitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Write a Kaggle submission CSV (patientId,PredictionString) for a folder of test images.",
        discussion: """
            Each image's boxes are written as `conf x y w h` groups in the image's own pixels (1024 for the RSNA test set); the patientId is the file name without extension. One row per patientId: where a folder holds x.dcm and x.png, the DICOM is used (then PNG, then JPEG) and the others are listed as skipped. With --skip-unreadable, an image that cannot be read gets no row; it is listed, with the reason, on the terminal and in SUBMISSION.skipped.csv.

            Examples:
              opacity submit --images stage_2_test_images --model runs/fold0 --model runs/fold1 -o submission.csv
              opacity submit --images test --model retinanet-r34-composite --threshold 0.25 --shrink 0.875
            """)

    @Option(name: .long, help: "Folder of test images (DICOM or PNG).") var images: String
    @OptionGroup var model: ModelOptions
    @Option(name: .long, help: "Keep boxes scoring above this (default: the operating point stored with the first model, else 0.2).") var threshold: Float?
    @Option(name: [.short, .long], help: "The submission file.") var output: String = "submission.csv"
    @Option(name: .customLong("out"), help: ArgumentHelp("Deprecated spelling of -o/--output.", visibility: .hidden)) var deprecatedOut: String?
    @Flag(name: .long, help: "Leave out unreadable images (no row; listed in <output>.skipped.csv) instead of stopping.") var skipUnreadable = false
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if let threshold, !(threshold.isFinite && threshold >= 0 && threshold <= 1) {
            throw ValidationError("--threshold \(threshold) is not valid; expected a score in 0...1")
        }
    }

    func run() throws {
        runtime.apply()
        let out = try resolveOutput(output, deprecated: deprecatedOut, defaultValue: "submission.csv") ?? output
        let listed = try ImageFile.list(in: URL(fileURLWithPath: images))
        guard !listed.isEmpty else { throw ValidationError("\(images) holds no images (.dcm, .png, .jpg)") }
        let outURL = URL(fileURLWithPath: out)
        let skippedURL = outURL.deletingPathExtension().appendingPathExtension("skipped.csv")
        for o in [outURL, skippedURL] {
            do { try OutputPaths.refuseOverwriting(o, inputs: listed) } catch { throw ValidationError("\(error)") }
        }
        // one row per patientId (the file stem)
        let (files, duplicates) = OutputPaths.onePerID(listed)
        var skipped = SkippedInputs()
        for d in duplicates { skipped.add(d.file.path, "same patientId as \(d.keptInstead.lastPathComponent), which is used") }
        let registry = try CommandContext.registry()
        let (predictor, urls) = try model.predictor(registry: registry)
        let t = threshold ?? urls.compactMap(ModelReference.savedThreshold).first ?? 0.2
        predictor.filter = ConfidenceFilter(threshold: t)
        note(model.describe(urls, predictor) + String(format: ", threshold %.2f", t))
        var rows: [(patientId: String, detections: [Detection])] = []
        let bar = runtime.progressBar("submit")
        let t0 = Date()
        for (k, f) in files.enumerated() {
            let id = f.deletingPathExtension().lastPathComponent
            do {
                let img = try ImageFile.read(f)
                rows.append((id, predictor.detect([img])[0]))
            } catch {
                if !skipUnreadable { throw error }
                skipped.add(f.path, "\(error)")
            }
            bar?(ProgressUpdate(done: k + 1, total: files.count, elapsed: Date().timeIntervalSince(t0)))
        }
        let sub = Submission(rows: rows)
        try sub.write(to: outURL)
        if skipped.isEmpty {
            try? FileManager.default.removeItem(at: skippedURL)
        } else {
            try skipped.write(to: skippedURL)
            note(skipped.summary() + "\n(listed in \(skippedURL.path); they have no row in \(out))")
        }
        say("wrote \(out): \(rows.count) patients, \(rows.filter { !$0.detections.isEmpty }.count) with boxes, \(rows.reduce(0) { $0 + $1.detections.count }) boxes")
    }
}
