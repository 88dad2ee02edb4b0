import ArgumentParser
import Foundation
import Opacity
import OpacityDistributed

/// `opacity submit`.
struct SubmitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Write a Kaggle submission CSV (patientId,PredictionString) for a folder of test images.",
        discussion: """
            Each image's boxes are written as `conf x y w h` groups in the image's own pixels (1024 for the RSNA test set); the patientId is the file name without extension. One row per patientId: where a folder holds x.dcm and x.png, the DICOM is used (then PNG, then JPEG) and the others are listed as skipped. With --skip-unreadable, an image that cannot be read is replaced by the next file of its patientId that can (x.png for a broken x.dcm), or else its patientId gets no row; it is listed, with the reason, on the terminal and in SUBMISSION.skipped.csv. An existing submission file (an earlier run's) is not replaced without --overwrite.

            Examples:
              opacity submit --images stage_2_test_images --model runs/fold0 \\
                  --model runs/fold1 -o submission.csv
              opacity submit --images test --model retinanet-r34-composite \\
                  --threshold 0.25 --shrink 0.875
            """)

    @Option(name: .long, help: "Folder of test images (DICOM or PNG).") var images: String
    @OptionGroup var model: ModelOptions
    @Option(name: .long, parsing: .unconditional, help: "Keep boxes scoring above this (default: the operating point stored with the first model, else 0.2).") var threshold: Float?
    @Option(name: [.short, .long], help: "The submission file.") var output: String = "submission.csv"
    @Option(name: .customLong("out"), help: ArgumentHelp("Deprecated spelling of -o/--output.", visibility: .hidden)) var deprecatedOut: String?
    @Flag(name: .long, help: "Replace the submission file of an earlier run in -o/--output.") var overwrite = false
    @Flag(name: .long, help: "Leave out unreadable images (no row; listed in <output>.skipped.csv) instead of stopping.") var skipUnreadable = false
    @OptionGroup var windowOption: ModelWindowOption
    @OptionGroup var runtime: RuntimeOptions

    @OptionGroup var pluginOptions: PluginOptions

    func validate() throws {
        try requireRange("--threshold", threshold, 0, 1)
    }
    @OptionGroup var distributedOptions: DistributedOptions

    func run() throws {
        let group = try distributedOptions.makeGroup(threads: runtime.threads)
        try runCollectively(group, command: "submit") { try submit(group) }
    }

    private func submit(_ group: ProcessGroup) throws {
        let window = try windowOption.setting()
        let out = try resolveOutput(output, deprecated: deprecatedOut, defaultValue: "submission.csv") ?? output
        // before the model is loaded and every image run: a bad path would lose the whole run
        try requireOutputFile(out, option: "-o/--output", for: "the submission CSV")
        let listed = try ImageFile.list(in: URL(fileURLWithPath: images))
        guard !listed.isEmpty else {
            throw ValidationError("\(images) holds no images (.dcm, .png, .jpg)" + ImageFile.subfolderHint(in: URL(fileURLWithPath: images), shown: images))
        }
        let outURL = URL(fileURLWithPath: out)
        let skippedURL = outURL.deletingPathExtension().appendingPathExtension("skipped.csv")
        for o in [outURL, skippedURL] { try refuseOverwritingInput(o, inputs: listed, option: "-o/--output") }
        // an earlier submission is kept unless asked, before the model loads
        try refuseEarlierResults([out], overwrite: overwrite, replacing: "the earlier submission", otherwise: "name another file with -o/--output")
        // one row per patientId (the file stem)
        let (files, duplicates) = OutputPaths.onePerID(listed)
        // the other files of a patientId, in order: with --skip-unreadable, the next one stands in
        // for an unreadable first choice (new-user trial: a garbage p9.dcm beside a readable
        // p9.png left p9 out of the submission)
        var alternates: [String: [URL]] = [:]
        for d in duplicates { alternates[d.file.deletingPathExtension().lastPathComponent, default: []].append(d.file) }
        var skipped = SkippedInputs()
        let registry = try pluginOptions.registry()
        let (predictor, urls) = try model.predictor(registry: registry)
        let t = threshold ?? urls.compactMap(ModelReference.savedThreshold).first ?? OperatingPoint.defaultThreshold
        predictor.filter = ConfidenceFilter(threshold: t)
        let source = ModelOptions.thresholdSource(given: threshold, urls: urls)
        note(model.describe(urls, predictor) + ", threshold \(thresholdText(t))" + source.words)
        if let warning = source.warning { note(warning) }
        var rows: [(patientId: String, detections: [Detection])] = []
        let bar = outputSilenced ? nil : runtime.progressBar("submit")
        let t0 = Date()
        // under MPI each rank takes a contiguous block of the files; rank 0 gathers them in order
        let mine = shardedRange(files.count, chunk: 1, group: group)
        let before = skipped.count
        for (k, f) in files[mine].enumerated() {
            let id = f.deletingPathExtension().lastPathComponent
            let candidates = [f] + (alternates[id] ?? [])
            var unreadable: [(URL, Error)] = []
            var used: URL?
            for candidate in candidates {
                do {
                    let img = try ImageFile.readSource(candidate, window: window)
                    rows.append((id, predictor.detect([img])[0]))
                    used = candidate
                    break
                } catch {
                    if !skipUnreadable { throw error }
                    unreadable.append((candidate, error))
                }
            }
            for (file, error) in unreadable {
                skipped.add(file.path, "\(error)" + (used.map { "; \($0.lastPathComponent) (the same patientId) is used instead" } ?? ""))
            }
            // the candidates before the one used were unreadable; those after it were not tried
            if let used {
                for other in candidates.drop(while: { $0 != used }).dropFirst() {
                    skipped.add(other.path, "same patientId as \(used.lastPathComponent), which is used")
                }
            }
            bar?(ProgressUpdate(done: k + 1, total: mine.count, elapsed: Date().timeIntervalSince(t0)))
        }
        if group.isDistributed {
            struct Part: Codable { var ids: [String]; var detections: Data; var skipped: [[String]] }
            let part = Part(
                ids: rows.map(\.patientId), detections: DetectionWire.encode(rows.map(\.detections)),
                skipped: skipped.entries.dropFirst(before).map { [$0.file, $0.reason] })
            let all = try group.allGather(JSONEncoder().encode(part))
            guard group.isLeader else { return }
            let parts = try all.map { try JSONDecoder().decode(Part.self, from: $0) }
            rows = parts.flatMap { p in zip(p.ids, DetectionWire.decode(p.detections)).map { (patientId: $0, detections: $1) } }
            var merged = SkippedInputs()
            for e in skipped.entries.prefix(before) { merged.add(e.file, e.reason) }
            for p in parts { for e in p.skipped { merged.add(e[0], e[1]) } }
            skipped = merged
        }
        let sub = Submission(rows: rows)
        try createParentFolder(of: outURL, option: "-o/--output")
        try sub.write(to: outURL)
        // a file left out for another of its patientId (x.png beside x.dcm) leaves the patientId its row
        let rowIDs = Set(rows.map(\.patientId))
        let skippedIDs = Set(skipped.entries.map { URL(fileURLWithPath: $0.file).deletingPathExtension().lastPathComponent })
        let rowless = skippedIDs.subtracting(rowIDs).count
        // the submission named absolute, as the skipped list and the other commands' outputs are
        let shown = shownPath(out)
        let which =
            rowless == 0
            ? "; each of their patientIds has its row in \(shown), from the file used instead"
            : rowless == skippedIDs.count
                ? "; they have no row in \(shown)" : "; \(rowless) of their \(skippedIDs.count) patientIds have no row in \(shown)"
        try reportSkipped(skipped, to: skippedURL.standardizedFileURL, note: which)
        let boxCount = rows.reduce(0) { $0 + $1.detections.count }, withBoxes = rows.filter { !$0.detections.isEmpty }.count
        say("wrote \(shown): \(rows.count) patient\(rows.count == 1 ? "" : "s"), \(withBoxes) with boxes, \(boxCount) box\(boxCount == 1 ? "" : "es")")
    }
}
