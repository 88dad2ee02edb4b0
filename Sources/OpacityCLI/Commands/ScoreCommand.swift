import ArgumentParser
import Foundation
import Opacity

/// `opacity score`.
struct ScoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Score a submission CSV against an RSNA labels CSV with the challenge metric.",
        discussion: """
            This is how out-of-fold predictions are scored. Patients in the labels but missing from the submission count as predicted empty; patients not in the labels are ignored (both reported).

            Example:
              opacity submit --images oof_images --model runs/fold0 -o oof.csv
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
            let out = URL(fileURLWithPath: perImage)
            for input in [URL(fileURLWithPath: submission), URL(fileURLWithPath: labels)] where OutputPaths.sameFile(out, input) {
                throw ValidationError("--per-image \(perImage) is an input of this command; choose another file")
            }
            let csv = CSVTable.render(header: ["patientId", "score"], rows: s.perImage.map { [$0.patientId, $0.score.map { String(format: "%.6f", $0) } ?? ""] })
            try Data(csv.utf8).write(to: out, options: .atomic)
            say("wrote \(perImage)")
        }
        if !s.missing.isEmpty { note("\(s.missing.count) labelled patients are not in the submission (scored as no boxes)") }
        if !s.unknown.isEmpty { note("\(s.unknown.count) submitted patients are not in the labels (ignored)") }
        let counted = s.perImage.filter { $0.score != nil }.count
        say(String(format: "metric %.4f over %d images (%d without truth or predictions left out)", s.score, counted, s.perImage.count - counted))
    }
}
