import ArgumentParser
import Foundation
import Opacity

/// `opacity submit`.
struct SubmitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Write a Kaggle submission CSV (patientId,PredictionString) for a folder of test images.",
        discussion: """
            Each image's boxes are written as `conf x y w h` groups in the image's own pixels (1024 for the RSNA test set); the patientId is the file name without extension.

            Examples:
              opacity submit --images stage_2_test_images --model runs/fold0 --model runs/fold1 --out submission.csv
              opacity submit --images test --model retinanet-r34-composite --threshold 0.25 --shrink 0.875
            """)

    @Option(name: .long, help: "Folder of test images (DICOM or PNG).") var images: String
    @OptionGroup var model: ModelOptions
    @Option(name: .long, help: "Keep boxes scoring above this (default: the threshold saved with the first model, else 0.2).") var threshold: Float?
    @Option(name: .long, help: "The submission file.") var out: String = "submission.csv"
    @Flag(name: .long, help: "Leave out unreadable images with a warning instead of stopping.") var skipUnreadable = false
    @Option(name: .long, help: "Compute threads.") var threads: Int?

    func run() throws {
        if let threads { Compute.threads = threads }
        let files = try ImageFile.list(in: URL(fileURLWithPath: images))
        guard !files.isEmpty else { throw ValidationError("\(images) holds no images (.dcm, .png, .jpg)") }
        let registry = try Registry.standard()
        let (predictor, urls) = try model.predictor(registry: registry)
        let t = threshold ?? urls.compactMap(ModelReference.savedThreshold).first ?? 0.2
        predictor.filter = ConfidenceFilter(threshold: t)
        note(model.describe(urls, predictor) + String(format: ", threshold %.2f", t))
        var rows: [(patientId: String, detections: [Detection])] = []
        let bar = TerminalProgressBar(label: "submit")
        let t0 = Date()
        var failed: [String] = []
        for (k, f) in files.enumerated() {
            let id = f.deletingPathExtension().lastPathComponent
            do {
                let img = try ImageFile.read(f)
                rows.append((id, predictor.detect([img])[0]))
            } catch {
                if !skipUnreadable { throw error }
                failed.append("\(f.lastPathComponent): \(error)")
                rows.append((id, []))
            }
            bar.update(ProgressUpdate(done: k + 1, total: files.count, elapsed: Date().timeIntervalSince(t0)))
        }
        let sub = Submission(rows: rows)
        try sub.write(to: URL(fileURLWithPath: out))
        if !failed.isEmpty { note("\(failed.count) unreadable images written without boxes:\n  " + failed.joined(separator: "\n  ")) }
        say("wrote \(out): \(rows.count) patients, \(rows.filter { !$0.detections.isEmpty }.count) with boxes, \(rows.reduce(0) { $0 + $1.detections.count }) boxes")
    }
}

/// `opacity score`.
struct ScoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Score a submission CSV against an RSNA labels CSV with the challenge metric.",
        discussion: """
            This is how out-of-fold predictions are scored. Patients in the labels but missing from the submission count as predicted empty; patients not in the labels are ignored (both reported).

            Example:
              opacity submit --images oof_images --model runs/fold0 --out oof.csv
              opacity score oof.csv --labels stage_2_train_labels.csv --per-image scores.csv
            """)

    @Argument(help: "The submission CSV.") var submission: String
    @Option(name: .long, help: "The labels CSV (patientId,x,y,width,height,Target).") var labels: String
    @Flag(name: .long, help: "Only score patients present in the submission.") var onlySubmitted = false
    @Option(name: .long, help: "Write per-image scores to this CSV.") var perImage: String?

    func run() throws {
        let sub = try Submission(contentsOf: URL(fileURLWithPath: submission))
        let l = try RSNALabels.load(labels: URL(fileURLWithPath: labels), classInfo: nil)
        var truth: [String: [BoundingBox]] = [:]
        for p in l.patients { truth[p.id] = p.boxes }
        if onlySubmitted {
            let ids = Set(sub.rows.map(\.patientId))
            truth = truth.filter { ids.contains($0.key) }
        }
        let s = SubmissionScore(submission: sub, truth: truth)
        if let perImage {
            var csv = "patientId,score\n"
            for (id, v) in s.perImage { csv += "\(id),\(v.map { String(format: "%.6f", $0) } ?? "")\n" }
            try Data(csv.utf8).write(to: URL(fileURLWithPath: perImage), options: .atomic)
            say("wrote \(perImage)")
        }
        if !s.missing.isEmpty { note("\(s.missing.count) labelled patients are not in the submission (scored as no boxes)") }
        if !s.unknown.isEmpty { note("\(s.unknown.count) submitted patients are not in the labels (ignored)") }
        let counted = s.perImage.filter { $0.score != nil }.count
        say(String(format: "metric %.4f over %d images (%d without truth or predictions left out)", s.score, counted, s.perImage.count - counted))
    }
}

/// `opacity compare`.
struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Overlay several runs' validation-loss and metric curves in PNGs, with the numbers as CSV.",
        discussion: """
            Runs whose options differ only in the seed are drawn as their mean with a band (lowest to highest). This is the paper's encoder comparison figure.

            Example:
              opacity compare runs/r34_* runs/seresnext50_* --out compare
            """)

    @Argument(help: "Run folders.") var runs: [String]
    @Option(name: .long, help: "Output folder.") var out: String = "compare"

    func run() throws {
        guard !runs.isEmpty else { throw ValidationError("name at least one run folder") }
        let cmp = try RunComparison(folders: runs.map { URL(fileURLWithPath: $0) })
        let outURL = URL(fileURLWithPath: out)
        try FileManager.default.createDirectory(at: outURL, withIntermediateDirectories: true)
        var written: [String] = []
        for (q, name) in [("val_total", "val_loss.png"), ("val_regression", "val_regression.png"), ("metric", "metric.png"), ("train_total", "train_loss.png")] {
            let u = outURL.appendingPathComponent(name)
            try writePNG(cmp.chart(q).render(), to: u)
            written.append(u.path)
        }
        let csv = outURL.appendingPathComponent("curves.csv")
        try Data(cmp.csv.utf8).write(to: csv, options: .atomic)
        for g in cmp.groups {
            let last = g.runs.compactMap { $0.logs.last }
            let best = g.runs.flatMap(\.logs).map(\.metric.best).max() ?? 0
            let val = last.map(\.val.total).reduce(0, +) / Double(max(1, last.count))
            say(String(format: "%@: %d run(s), final val loss %.4f, best metric %.4f", g.label, g.runs.count, val, best))
        }
        say("wrote " + (written + [csv.path]).joined(separator: ", "))
    }
}
