import ArgumentParser
import Foundation
import Opacity
import OpacityDistributed
import OpacityServe

/// `opacity detect`.
struct DetectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "detect",
        abstract: "Find lung opacities on DICOM or PNG images: boxes with scores, and an overlay PNG per image.",
        discussion: """
            Boxes are in each image's own pixels (x, y of the top-left corner, width, height). Outputs never replace an input: an output folder that would overwrite one of the images is refused, and two inputs with one name stem (a.dcm, a.png) get overlays named after their whole file names (a.dcm.overlay.png); two inputs of one file name in different folders (a/x.dcm, b/x.dcm) are refused, as their outputs would share a name. With --skip-unreadable, images that cannot be read are left out and listed, with the reason, on the terminal and in skipped.csv in the output folder. In detections.json, boxes are also given in millimetres when the DICOM gives a pixel spacing (Pixel Spacing, else Imager Pixel Spacing); detections.csv gives pixels only. 12- to 16-bit DICOM reach the model at full depth. With --dicom-sr, a DICOM Structured Report (TID 1500 Measurement Report, one rectangle per box with its score, the model as observer device) is written per DICOM image; with --dicom-overlay, a Secondary Capture with the boxes burned in; both in the source's patient and study, in a new series (see Documentation/DICOM.md). detections.json follows Documentation/detections.schema.json, the same schema `opacity serve` answers with; detections.csv has one row per box and one row with empty box fields for each image without boxes. An existing detections.json or detections.csv in the output folder, an earlier run's in either format, is not replaced without --overwrite (which also removes the other format's file, so that what stays matches the overlays).

            Examples:
              opacity detect patient.dcm
              opacity detect scans/*.dcm --format csv -o found
              opacity detect x.png --model runs/r34 --threshold 0.3 --shrink 0.875
              opacity detect study/ --dicom-sr sr/ --dicom-overlay sc/
            """)

    @Argument(help: "Image files (DICOM, PNG, JPEG) or folders of them.") var inputs: [String]
    @OptionGroup var model: ModelOptions
    @Option(
        name: .long, parsing: .unconditional,
        help: "Keep boxes scoring above this (default: the operating point stored with the model, see `opacity eval --operating-point-out`, else 0.2).")
    var threshold: Float?
    @Option(name: .long, help: "Output format.") var format: DetectionFormat = .json
    @Option(name: [.short, .long], help: "Folder for detections and overlay PNGs.") var output: String = "detections"
    @Option(name: .customLong("out"), help: ArgumentHelp("Deprecated spelling of -o/--output.", visibility: .hidden)) var deprecatedOut: String?
    @Flag(name: .long, help: "Do not write overlay PNGs.") var noOverlays = false
    @Flag(name: .long, help: "Replace the detections file (and the overlay PNGs) of an earlier run in -o/--output.") var overwrite = false
    @Flag(name: .long, help: "Leave out images that cannot be read (listed in skipped.csv) instead of stopping.") var skipUnreadable = false
    @Option(name: .long, parsing: .unconditional, help: "The frame of multi-frame DICOM files, from 1.") var frame: Int = 1
    @OptionGroup var windowOption: ModelWindowOption
    @Option(name: .customLong("dicom-sr"), help: ArgumentHelp("Folder for a DICOM Structured Report per DICOM image (<name>.sr.dcm).", valueName: "dir"))
    var dicomSR: String?
    @Option(
        name: .customLong("dicom-overlay"),
        help: ArgumentHelp("Folder for a DICOM Secondary Capture with the boxes burned in per DICOM image (<name>.overlay.dcm).", valueName: "dir"))
    var dicomOverlay: String?
    @OptionGroup var runtime: RuntimeOptions

    @OptionGroup var pluginOptions: PluginOptions

    func validate() throws {
        guard !inputs.isEmpty else { throw ValidationError("name at least one image or folder") }
        try requireRange("--threshold", threshold, 0, 1)
        try requireAtLeast("--frame", frame, 1)
    }

    @OptionGroup var distributedOptions: DistributedOptions

    func run() throws {
        let group = try distributedOptions.makeGroup(threads: runtime.threads)
        try runCollectively(group, command: "detect") { try detect(group) }
    }

    private func detect(_ group: ProcessGroup) throws {
        let windowSetting = try windowOption.setting()
        let out = try resolveOutput(output, deprecated: deprecatedOut, defaultValue: "detections") ?? output
        try requireOutputFolder(out, option: "-o/--output", for: "the detections file and overlay PNGs")
        if let dicomSR { try requireOutputFolder(dicomSR, option: "--dicom-sr", for: "one DICOM SR per DICOM image") }
        if let dicomOverlay { try requireOutputFolder(dicomOverlay, option: "--dicom-overlay", for: "one DICOM overlay per DICOM image") }
        var files: [URL] = []
        for i in inputs {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: i, isDirectory: &isDir) else {
                throw ValidationError("\(i): no such file or folder; expected an image file (DICOM, PNG, JPEG) or a folder of them" + nearestEntryHint(i))
            }
            files += isDir.boolValue ? try ImageFile.list(in: URL(fileURLWithPath: i)) : [URL(fileURLWithPath: i)]
        }
        guard !files.isEmpty else {
            // a study kept as study/series/*.dcm: say that subfolders are not searched, and which hold images
            let hints = inputs.map { ImageFile.subfolderHint(in: URL(fileURLWithPath: $0), shown: $0) }.joined()
            throw ValidationError("no images (.dcm, .png, .jpg) in \(inputs.joined(separator: ", "))" + hints)
        }
        let outURL = URL(fileURLWithPath: out)
        // every output path, decided before anything is written: never an input, never shared
        let stems = Dictionary(grouping: files, by: { $0.deletingPathExtension().lastPathComponent })
        func overlayURL(_ f: URL) -> URL {
            let stem = f.deletingPathExtension().lastPathComponent
            return outURL.appendingPathComponent((stems[stem]!.count > 1 ? f.lastPathComponent : stem) + ".overlay.png")
        }
        let resultURL = outURL.appendingPathComponent(format == .json ? "detections.json" : "detections.csv")
        // each output with the input it is made from (none for the shared files) and its kind
        // and the option that names its folder (the message says which one to change)
        var outputs: [(url: URL, source: URL?, kind: String, option: String)] = [
            (resultURL, nil, "output", "-o/--output"), (outURL.appendingPathComponent("skipped.csv"), nil, "output", "-o/--output"),
        ]
        if !noOverlays { outputs += files.map { (overlayURL($0), $0, "overlay", "-o/--output") } }
        func dicomURL(_ dir: String, _ f: URL, _ suffix: String) -> URL {
            let stem = f.deletingPathExtension().lastPathComponent
            return URL(fileURLWithPath: dir).appendingPathComponent((stems[stem]!.count > 1 ? f.lastPathComponent : stem) + suffix)
        }
        if let dicomSR { outputs += files.map { (dicomURL(dicomSR, $0, ".sr.dcm"), $0, "DICOM SR", "--dicom-sr") } }
        if let dicomOverlay { outputs += files.map { (dicomURL(dicomOverlay, $0, ".overlay.dcm"), $0, "DICOM overlay", "--dicom-overlay") } }
        for o in outputs { try refuseOverwritingInput(o.url, inputs: files, source: o.source, kind: o.kind, option: o.option) }
        // two inputs of one file name in different folders get one output name (trial: `detect
        // a b` with a/x.dcm and b/x.dcm wrote one x.dcm.overlay.png and said "2 overlay PNGs")
        var writer: [String: URL] = [:]
        for o in outputs {
            guard let source = o.source?.standardizedFileURL else { continue }
            let key = o.url.standardizedFileURL.path
            if let first = writer[key], first.path != source.path {
                throw ValidationError(
                    "the inputs '\(first.path)' and '\(source.path)' would both write their \(o.kind) to '\(key)' (outputs are named after the input's file name); "
                        + "run them with different \(o.option) folders, or rename one")
            }
            writer[key] = source
        }
        // An earlier run's results (in either format) are kept unless asked, as `convert` keeps
        // its --labels-output: a run in the other format would replace the overlays and leave a
        // results file that no longer matches them.
        let resultNames = ["detections.json", "detections.csv"]
        let earlier = try refuseEarlierResults(
            resultNames.map { (out as NSString).appendingPathComponent($0) }, overwrite: overwrite,
            replacing: "the earlier results" + (noOverlays ? "" : " and the overlay PNGs"), otherwise: "name another folder with -o/--output")
        // Replacing: the earlier run's file in the other format goes, so that what stays matches.
        let stale = resultNames.filter { earlier.contains((out as NSString).appendingPathComponent($0)) }.map { outURL.appendingPathComponent($0) }
            .filter { $0 != resultURL }
        let registry = try pluginOptions.registry()
        let (predictor, urls, digests) = try model.hashedPredictor(registry: registry)
        let refs = model.models.isEmpty ? [defaultModelName] : model.models
        // the same engine `opacity serve` runs, so both give equal results
        let engine = try DetectionEngine(predictor: predictor, references: refs, files: urls, digests: digests, threshold: threshold)
        engine.softwareVersion = "opacity " + OpacityMain.version
        let device = engine.dicomDevice
        for dir in [dicomSR, dicomOverlay].compactMap({ $0 }) {
            try OutputFolders.create(URL(fileURLWithPath: dir))
        }
        // one new series per study and kind; its UID is derived from the study, the model and
        // the output folder so that every MPI rank names the same series
        func placement(_ kind: String, _ dir: String, _ img: DecodedImage, index: Int) throws -> DICOMSeriesPlacement {
            let study = try DetectionEngine.dicomSource(img).studyInstanceUID
            let folder = URL(fileURLWithPath: dir).standardizedFileURL.path
            let series = DICOMUID.derived(fromHash: SHA256.hash("opacity series|\(kind)|\(study)|\(device.uid)|\(folder)").bytes)
            return DICOMSeriesPlacement(seriesInstanceUID: series, seriesNumber: kind == "sr" ? 9901 : 9902, instanceNumber: index + 1)
        }
        let source = ModelOptions.thresholdSource(given: threshold, urls: urls)
        note(model.describe(urls, predictor) + ", threshold \(thresholdText(engine.defaultThreshold))" + source.words)
        if let warning = source.warning { note(warning) }
        try OutputFolders.create(outURL)
        var skipped = SkippedInputs()
        var all: [DetectionReport] = []
        var srWritten = 0, dicomOverlaysWritten = 0
        let bar = outputSilenced ? nil : runtime.progressBar("detect")
        let t0 = Date()
        // under MPI each rank takes a contiguous block of the files and writes their overlays;
        // rank 0 gathers the reports in order and writes the result file
        let mine = shardedRange(files.count, chunk: 1, group: group)
        // the files this run has written so far: a run that stops on an input (one it cannot
        // read without --skip-unreadable) removes them, so that no overlays are left without
        // the detections file (new-user trial: `detect` on a folder with one unsupported file)
        var written: [URL] = []
        do {
            for (k, f) in files[mine].enumerated() {
                let img: DecodedImage
                do { img = try DetectionEngine.read(f, frame: frame, window: windowSetting) } catch {
                    // a frame the file lacks is said as --frame, the option that asked for it, with
                    // the file's frame count in convert's words (frameNotInFile)
                    let error = frameNotInFile(error, path: f.path).map { ValidationError($0) } ?? namingOption(error, ["frame": "--frame"])
                    if !skipUnreadable {
                        if files.count > 1 { throw WithHint(error, "to leave out the files that cannot be read and go on, add --skip-unreadable (they are listed in skipped.csv)") }
                        throw error
                    }
                    skipped.add(f.path, "\(error)")
                    bar?(ProgressUpdate(done: k + 1, total: mine.count, elapsed: Date().timeIntervalSince(t0)))
                    continue
                }
                let report = engine.run([img])[0]
                all.append(report)
                if !noOverlays {
                    try writePNG(img.image.overlay(detections: report.detections, thickness: max(2, img.image.width / 300)), to: overlayURL(f))
                    written.append(overlayURL(f))
                }
                if dicomSR != nil || dicomOverlay != nil {
                    if img.format != .dicom {
                        note("\(f.path): no DICOM SR or overlay written (not a DICOM file)")
                    } else {
                        do {
                            let index = mine.lowerBound + k
                            if let dicomSR {
                                let sr = try engine.structuredReport(img, report, placement: try placement("sr", dicomSR, img, index: index))
                                try sr.write(to: dicomURL(dicomSR, f, ".sr.dcm"), options: .atomic)
                                written.append(dicomURL(dicomSR, f, ".sr.dcm"))
                                srWritten += 1
                            }
                            if let dicomOverlay {
                                let sc = try engine.secondaryCapture(img, report, placement: try placement("sc", dicomOverlay, img, index: index))
                                try sc.write(to: dicomURL(dicomOverlay, f, ".overlay.dcm"), options: .atomic)
                                written.append(dicomURL(dicomOverlay, f, ".overlay.dcm"))
                                dicomOverlaysWritten += 1
                            }
                        } catch {
                            if !skipUnreadable { throw error }
                            skipped.add(f.path, "\(error)")
                        }
                    }
                }
                bar?(ProgressUpdate(done: k + 1, total: mine.count, elapsed: Date().timeIntervalSince(t0)))
            }
        } catch {
            for url in written { try? FileManager.default.removeItem(at: url) }
            throw error
        }
        if group.isDistributed {
            struct Part: Codable { var reports: [DetectionReport]; var skipped: [[String]]; var written: [Int] }
            let part = Part(reports: all, skipped: skipped.entries.map { [$0.file, $0.reason] }, written: [srWritten, dicomOverlaysWritten])
            let gathered = try group.allGather(JSONEncoder().encode(part))
            guard group.isLeader else { return }
            let parts = try gathered.map { try JSONDecoder().decode(Part.self, from: $0) }
            all = parts.flatMap(\.reports)
            skipped = SkippedInputs()
            for p in parts { for e in p.skipped { skipped.add(e[0], e[1]) } }
            srWritten = parts.reduce(0) { $0 + $1.written[0] }
            dicomOverlaysWritten = parts.reduce(0) { $0 + $1.written[1] }
        }
        if format == .json {
            try DetectionReport.json(all).write(to: resultURL, options: .atomic)
        } else {
            try Data(DetectionReport.csv(all).utf8).write(to: resultURL, options: .atomic)
        }
        for f in all {
            say(
                "\(f.file): "
                    + (f.boxes.isEmpty
                        ? "no opacity" : f.boxes.map { String(format: "%.2f at (%.0f, %.0f, %.0f x %.0f)", $0.score, $0.x, $0.y, $0.width, $0.height) }.joined(separator: "; ")))
        }
        // every output written, in the order of the options
        for url in stale {
            try? FileManager.default.removeItem(at: url)
            say("removed \(url.path), an earlier run's results in the other format (--overwrite)")
        }
        var wrote = [resultURL.path]
        if !noOverlays { wrote.append("\(all.count) overlay PNG\(all.count == 1 ? "" : "s") in \(outURL.path)") }
        if let dicomSR { wrote.append("\(srWritten) DICOM SR\(srWritten == 1 ? "" : "s") (.sr.dcm) in \(shownPath(dicomSR))") }
        if let dicomOverlay {
            wrote.append("\(dicomOverlaysWritten) DICOM overlay\(dicomOverlaysWritten == 1 ? "" : "s") (.overlay.dcm) in \(shownPath(dicomOverlay))")
        }
        say("wrote " + (wrote.count == 1 ? wrote[0] : wrote.dropLast().joined(separator: ", ") + " and " + wrote.last!))
        let skippedURL = outURL.appendingPathComponent("skipped.csv")
        try reportSkipped(skipped, to: skippedURL)
    }
}
