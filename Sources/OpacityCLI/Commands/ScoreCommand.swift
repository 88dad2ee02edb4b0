import ArgumentParser
import Foundation
import Opacity

/// `opacity score`.
struct ScoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Score a submission CSV against an RSNA labels CSV with the challenge metric.",
        discussion: """
            This is how out-of-fold predictions are scored. Patients in the labels but missing from the submission count as predicted empty; patients not in the labels are ignored (both reported). The metric is defined per image and averaged: an image with neither truth nor predicted boxes is left out of the mean (as in the challenge's reference), so on negatives only it is 0 (false positives) or undefined (all left empty); how many negatives were left empty is printed too. With --folds-file naming a folds CSV with a view column (`opacity folds --stratify view` writes one), the metric is also given per view (AP, PA, ...): RSNA's positives are mostly AP films. An existing --per-image file is not replaced without --overwrite.

            Example:
              opacity submit --images oof_images --model runs/fold0 -o oof.csv
              opacity score oof.csv --labels stage_2_train_labels.csv \\
                  --per-image scores.csv
              opacity score oof.csv --labels stage_2_train_labels.csv \\
                  --folds-file folds.csv
            """)

    @Argument(help: "The submission CSV.") var submission: String
    @Option(name: .long, help: "The labels CSV (patientId,x,y,width,height,Target).") var labels: String
    @Flag(name: .long, help: "Only score patients present in the submission.") var onlySubmitted = false
    @Option(name: .long, help: "Write per-image scores to this CSV.") var perImage: String?
    @Flag(name: .long, help: "Replace an existing --per-image file.") var overwrite = false
    @Option(
        name: .long,
        help: ArgumentHelp(
            "A folds CSV with a view column (patientId,class,fold,view, as `opacity folds --stratify view` writes it): also score per view.",
            valueName: "csv"))
    var foldsFile: String?

    /// ", N of them not in the submission" when N > 0: an empty prediction made by leaving a
    /// patient out is no finding of the model's.
    func unsubmittedNote(_ count: Int) -> String {
        count > 0 ? ", \(count) of them not in the submission" : ""
    }

    /// The patient ids a note is about, for the user to look up (trial: "1 submitted patient is
    /// not in the labels (ignored)" named none): `: a` for one, `: a, b, c` for up to three,
    /// `, e.g. a, b, c` for more, in the order given.
    static func named(_ ids: [String]) -> String {
        let shown = ids.prefix(3).map { InputLimits.quoted($0) }.joined(separator: ", ")
        return ids.count <= 3 ? ": " + shown : ", e.g. " + shown
    }

    func run() throws {
        if let perImage {
            // before anything is read: the output path is checked first
            try requireOutputFile(perImage, option: "--per-image", for: "the per-image scores CSV")
            let out = URL(fileURLWithPath: perImage)
            for input in [submission, labels] + (foldsFile.map { [$0] } ?? []) where OutputPaths.sameFile(out, URL(fileURLWithPath: input)) {
                throw ValidationError("--per-image \(perImage) is an input of this command; choose another file")
            }
            try refuseEarlierResults(
                [perImage], overwrite: overwrite, replacing: "the earlier per-image scores", otherwise: "name another file with --per-image")
        }
        let sub = try Submission(contentsOf: URL(fileURLWithPath: submission))
        // a folds file that is not there: named as --folds-file, with the nearest file beside it (exit 1)
        if let foldsFile { try requireExistingDataFile("--folds-file", foldsFile, expected: "a folds CSV (opacity folds writes one)") }
        let folds = try foldsFile.map { try Folds.read(from: URL(fileURLWithPath: $0)) }
        if let foldsFile, folds?.views.isEmpty == true {
            // a data problem (exit 1): the file is there but lacks the column
            throw WithHint(
                DataError.csvHeader(path: foldsFile, found: Folds.header, expected: Folds.header + ["view"]),
                "hint: `opacity folds --stratify view` writes the view column from the DICOM headers")
        }
        // a folder: the option, what it takes, and the labels CSV in it (trial: `--labels few`
        // said only "cannot read '.../few': it is a folder")
        try requireNotAFolder(
            "--labels", labels, expected: "a CSV file of boxes (patientId,x,y,width,height,Target), e.g. stage_2_train_labels.csv")
        // a labels file that is not there: named as --labels, with the nearest file beside it (exit 1, a data error)
        try requireExistingDataFile("--labels", labels, expected: "the RSNA labels CSV (patientId,x,y,width,height,Target)")
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
            let csv = CSVTable.render(header: ["patientId", "score"], rows: s.perImage.map { [$0.patientId, $0.score.map { String(format: "%.6f", $0) } ?? ""] })
            try createParentFolder(of: out, option: "--per-image")
            try Data(csv.utf8).write(to: out, options: .atomic)
            say("wrote \(shownPath(perImage))")
        }
        if !s.missing.isEmpty {
            note(
                "\(s.missing.count) labelled patient\(s.missing.count == 1 ? " is" : "s are") not in the submission (scored as no boxes)"
                    + Self.named(s.missing) + "; --only-submitted scores only the patients it names")
        }
        if !s.unknown.isEmpty {
            note("\(s.unknown.count) submitted patient\(s.unknown.count == 1 ? " is" : "s are") not in the labels (ignored)" + Self.named(s.unknown))
        }
        let total = s.perImage.count, counted = s.counted, left = total - counted
        let negatives =
            String(format: "negatives predicted empty (correct): %d of %d", s.emptyNegatives, s.negatives)
            + (s.negatives > 0 ? String(format: " (%.1f%%)", 100 * Double(s.emptyNegatives) / Double(s.negatives)) : "")
            + unsubmittedNote(s.missing.filter { truth[$0]?.isEmpty ?? false }.count)
        guard let metric = s.metric else {
            // the RSNA metric is a mean of per-image scores that leaves out images with neither truth
            // nor predicted boxes (the reference map_iou returns None for them): nothing to average
            say("metric undefined: " + (total == 1 ? "the one image does not count" : "none of the \(total) images counts"))
            say(
                "(the RSNA metric is the mean of per-image scores; an image with no truth box and no predicted box is left out of the mean, "
                    + "so a submission that leaves every negative empty has no metric; it is right on all of them)")
            say(negatives)
            return
        }
        say(String(format: "metric %.4f over %@ (%d without truth or predictions left out)", metric, Wording.count(counted, "image"), left))
        if s.negatives == total {
            say(
                "(all \(total) labelled images are negatives: only the \(counted) with predicted boxes count, each scoring 0 as a false positive; "
                    + "the \(left) left empty are left out of the mean)")
        }
        if s.negatives > 0 { say(negatives) }
        if let folds, let foldsFile { sayByView(s.byView(folds.views, truth: truth), source: "the view column of \(foldsFile)") }
    }

    /// One line per view, the first naming the source.
    func sayByView(_ views: [EvaluationReport.ByView.View], source: String) {
        guard !views.isEmpty else { return say("by view: none of the scored patients is in \(source)") }
        let head = "by view (\(source)): "
        for (i, r) in views.enumerated() {
            var line = (i == 0 ? head : String(repeating: " ", count: head.count)) + "\(r.view): \(Wording.count(r.images, "image")), \(r.imagesWithOpacity) with opacity"
            if let m = r.metric {
                line += String(format: "; metric %.4f over ", m) + Wording.count(r.scoredImages ?? 0, "counted image")
            } else {
                line += "; metric undefined: no image counts (all \(r.images) negatives predicted empty, correct)"
            }
            say(line)
        }
    }
}
