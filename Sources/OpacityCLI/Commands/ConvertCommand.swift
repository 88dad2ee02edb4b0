import ArgumentParser
import Foundation
import Opacity

/// `opacity convert`: DICOM to 8-bit PNG for one file or a whole folder.
struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert DICOM files (one file or a whole folder) to 8-bit PNG.",
        // the generated line shows the required -o/--output as optional ("[--output <output>]"),
        // as it is an optional property (the older second argument also names the output);
        // written out, it is required as in export's and folds' lines, every option listed
        usage: """
            opacity convert <input> --output <output> [--size <size>] [--window <window>] [--depth <depth>] [--frame <frame>] \
            [--labels <csv>] [--labels-output <csv>] [--overwrite] [--threads <threads>] [--quiet]
            """,
        discussion: """
            Reads Implicit/Explicit VR Little Endian, Explicit VR Big Endian, Deflated, JPEG Baseline \
            (the RSNA files), JPEG Lossless, JPEG 2000 and RLE Lossless, 8- to 16-bit grayscale; \
            rescale, then the file's window (else the full range; 8-bit files keep their values), \
            MONOCHROME1 inverted; written as 8-bit PNG, or 16-bit with --depth 16. Files that \
            cannot be converted are listed at the end; the rest go on (see Documentation/DICOM.md).

            With --labels (a folder input only), the labels CSV is also written with each box \
            scaled into its converted image's pixels (x by output/source width, y by output/source \
            height; an image skipped because its PNG exists uses that PNG's size), to \
            OUTPUT/labels.csv or --labels-output. Rows whose image was not converted are left out \
            and listed; only files that fail to convert make the exit status 1. A labels output \
            that exists is left as it is when it already holds what this run writes (a rerun), \
            and otherwise refused (after the conversion) unless --overwrite is given.

            Examples:
              opacity convert stage_2_train_images/ -o train_png/ --size 512
              opacity convert dcm/ -o png/ --size 512 --labels stage_2_train_labels.csv
              opacity convert 0004cfab.dcm -o 0004cfab.png
            """)

    @Argument(help: "A .dcm file or a folder of .dcm files.")
    var input: String

    @Argument(help: ArgumentHelp("The output as a second argument (the older spelling of -o/--output).", visibility: .hidden))
    var positionalOutput: String?

    @Option(name: [.short, .long], help: "A .png path or a folder (created) for {name}.png; required.")
    var output: String?

    @Option(name: .long, parsing: .unconditional, help: "Resize so the longer side is this many pixels (aspect kept).")
    var size: Int?

    @Option(name: .long, help: "Windowing: auto, minmax, or CENTER,WIDTH in rescaled units.")
    var window: String = "auto"

    @Option(name: .long, parsing: .unconditional, help: "PNG bit depth: 8, or 16 to keep the full depth of 12- to 16-bit DICOM.")
    var depth: Int = 8

    @Option(name: .long, parsing: .unconditional, help: "The frame of multi-frame DICOM files, from 1.")
    var frame: Int = 1

    @Option(
        name: .long,
        help: ArgumentHelp(
            "A labels CSV in the input images' pixels (RSNA's patientId,x,y,width,height,Target, or image,x,y,width,height,...): also written scaled to the converted pixels.",
            valueName: "csv"))
    var labels: String?

    @Option(name: .long, help: ArgumentHelp("Where --labels' scaled copy goes (default: OUTPUT/labels.csv).", valueName: "csv"))
    var labelsOutput: String?

    @Flag(name: .long, help: "Replace existing PNG files (they are skipped by default) and an existing --labels-output.")
    var overwrite = false

    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        try requireRange("--size", size, 1, 65_536, noun: "a number of pixels")
        // the PNG depths written; 12 (a 12-bit film's depth), as near 8 as 16, is kept only by 16
        guard depth == 8 || depth == 16 else { throw outOfRange("--depth", "\(depth)", expected: "8 or 16 (bits per PNG sample)", nearest: depth < 12 ? "8" : "16") }
        try requireAtLeast("--frame", frame, 1, noun: "a frame number (frames count from 1)")
        _ = try parseWindow(window)
        _ = try outputPath()
        if labelsOutput != nil && labels == nil { throw ValidationError("--labels-output needs --labels: the labels CSV to scale") }
    }

    /// The scaled labels' path as given: --labels-output, or labels.csv in the output folder.
    func labelsOutputPath() throws -> String {
        try labelsOutput ?? (try outputPath() as NSString).appendingPathComponent("labels.csv")
    }

    /// Checks --labels and --labels-output and reads the labels, before anything is converted.
    /// An existing --labels-output is checked after the conversion (``writeLabels(_:summary:)``):
    /// only then is it known whether it holds what this run writes.
    func readLabels(inputIsFolder: Bool) throws -> CSVTable? {
        guard let labels else { return nil }
        // (an input that does not exist is the conversion's error, which names it)
        guard inputIsFolder || !FileManager.default.fileExists(atPath: input) else {
            throw ValidationError(
                "--labels needs a folder of DICOM files as the input; \(input) is not a folder "
                    + "(one image's labels need no file of their own: scale its boxes by the PNG's size over the DICOM's)")
        }
        let path = try labelsOutputPath()
        try requireOutputFile(path, option: "--labels-output", for: "the labels scaled to the converted pixels")
        if OutputPaths.sameFile(URL(fileURLWithPath: path), URL(fileURLWithPath: labels)) {
            throw ValidationError("--labels-output \(path) is the --labels file \(labels); inputs are never overwritten, choose another --labels-output")
        }
        let table = try CSVTable(contentsOf: URL(fileURLWithPath: labels))
        // every row checked now, so a bad value stops the command before any image is converted
        _ = try ImageConversion.scaleLabels(table, summary: ImageConversion.Summary())
        return table
    }

    /// -o/--output, or the second argument as before.
    func outputPath() throws -> String {
        switch (output, positionalOutput) {
        case (let o?, nil), (nil, let o?): return o
        case (let o?, let p?) where o == p: return o
        case (nil, nil): throw ValidationError("name the output: -o/--output PATH (a .png path or a folder)")
        case (let o?, let p?): throw ValidationError("-o/--output \(o) and the second argument \(p) name different outputs; give -o/--output only")
        }
    }

    func run() throws {
        runtime.apply()
        if positionalOutput != nil { note("warning: the output as a second argument is deprecated; use -o/--output") }
        var inputIsFolder: ObjCBool = false
        if FileManager.default.fileExists(atPath: input, isDirectory: &inputIsFolder), inputIsFolder.boolValue {
            try requireOutputFolder(try outputPath(), option: "-o/--output", for: "one PNG per DICOM file of the folder \(input)")
        } else if URL(fileURLWithPath: try outputPath()).pathExtension.lowercased() == "png" {
            try requireOutputFile(try outputPath(), option: "-o/--output", for: "the PNG of \(input)")
        } else {
            try requireOutputFolder(try outputPath(), option: "-o/--output", for: "the PNG of \(input), named after it")
        }
        let labelsTable = try readLabels(inputIsFolder: inputIsFolder.boolValue)
        var options = ImageConversion.Options(
            size: size, window: try parseWindow(window), overwrite: overwrite,
            threads: runtime.threads ?? ProcessInfo.processInfo.activeProcessorCount)
        options.depth = depth
        options.frame = frame
        options.measureSkipped = labelsTable != nil
        var summary = try ImageConversion.convert(
            input: URL(fileURLWithPath: input), output: URL(fileURLWithPath: try outputPath()),
            options: options, progress: runtime.progressBar("convert"))
        let errors = summary.failureErrors
        // a frame a file lacks is said as --frame, with the file's frame count (the library names
        // its parameter); an output that is an input, with the option that named it; the library's
        // sentences about a file's output ("its output ... is the input ...") after the file they
        // are about, as every other failure line (new-user trial: a DICOM scan.png converted onto
        // itself was "its output /x/scan.png is the input /x/scan.png, ...", naming no file first)
        summary.failures = summary.failures.map { f in
            var reason = errors[f.path].flatMap { frameNotInFile($0, path: f.path) } ?? f.reason
            if reason.hasSuffix("; choose another output") { reason = String(reason.dropLast("output".count)) + "-o/--output" }
            if reason.hasPrefix("its ") { reason = "\(f.path): " + reason }
            return (path: f.path, reason: reason)
        }
        // the result, under -q too: -q drops the progress bar only (CLI.md's runtime options)
        say("\(summary)")
        // what was written, named absolute as every writer names its results (CLI.md; trial: the
        // PNGs were named nowhere); nothing when nothing was converted
        if summary.converted > 0 {
            if inputIsFolder.boolValue {
                say("wrote \(Wording.count(summary.converted, "PNG")) in \(shownPath(try outputPath()))")
            } else if let written = summary.images.first(where: { !$0.existed }) {
                say("wrote \(shownPath(written.output.path))")
            }
        }
        // Rows of images that are not in the input are not failures (a subset converted with the
        // whole labels file); images that failed to convert already make the status 1.
        if let labelsTable { try writeLabels(labelsTable, summary: summary) }
        if !summary.failures.isEmpty { throw ExitStatus.dataError.code }
    }

    /// Writes the scaled labels and says what was left out. An existing --labels-output that
    /// holds these bytes already (a rerun) is left as it is; one that differs is refused
    /// without --overwrite.
    func writeLabels(_ table: CSVTable, summary: ImageConversion.Summary) throws {
        let scaled = try ImageConversion.scaleLabels(table, summary: summary)
        let path = try labelsOutputPath()
        let out = URL(fileURLWithPath: path)
        let rows = "\(scaled.table.rows.count) row\(scaled.table.rows.count == 1 ? "" : "s")"
        var written = true
        if !overwrite && FileManager.default.fileExists(atPath: path) {
            let bytes = Data(scaled.csv.utf8)
            // read only when the sizes agree: a large file that is not these labels is never loaded
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue
            guard size == bytes.count, (try? Data(contentsOf: out)) == bytes else {
                throw ValidationError(
                    "--labels-output \(path) exists and differs from the \(rows) scaled now; it is kept. "
                        + "Name another file with --labels-output (the PNGs written now are kept, so that rerun converts nothing again), "
                        + "delete \(path), or add --overwrite to replace it (--overwrite also converts again every PNG that exists)")
            }
            say("labels: \(shownPath(path)) already holds these \(rows), byte for byte; left as it is")
            written = false
        } else {
            try FileManager.default.createDirectory(at: out.deletingLastPathComponent(), withIntermediateDirectories: true)
            try scaled.write(to: out)
        }
        if written {
            let scales = Set(summary.images.flatMap { [$0.scaleX, $0.scaleY] })
            let by =
                scales.isEmpty || scales == [1]
                ? "unchanged: the PNGs have their sources' sizes"
                : (scales.count == 1 ? "times \(scales.first!)" : "times \(scales.min()!) to \(scales.max()!), per image")
                    + ": each image's output over source size"
            say("labels: \(scaled.table.rows.count) rows written to \(shownPath(path)) (boxes \(by))")
        }
        if !scaled.outside.isEmpty {
            var s =
                "warning: \(scaled.outside.count) label row\(scaled.outside.count == 1 ? "" : "s") of \(labels ?? "") "
                + "reach\(scaled.outside.count == 1 ? "es" : "") beyond \(scaled.outside.count == 1 ? "its image" : "their images") "
                + "(written scaled to \(shownPath(path)); train and eval will refuse them until they are fixed):"
            for d in scaled.outside.prefix(5) { s += "\n  line \(d.line): \(d.image): \(d.reason)" }
            if scaled.outside.count > 5 { s += "\n  ... and \(scaled.outside.count - 5) more" }
            note(s)
        }
        if !scaled.dropped.isEmpty {
            let images = Set(scaled.dropped.map(\.image)).count
            var s =
                "\(scaled.dropped.count) label row\(scaled.dropped.count == 1 ? "" : "s") (\(images) image\(images == 1 ? "" : "s")) "
                + "of \(labels ?? "") not written to \(shownPath(path)), as their images were not converted from \(input):"
            for d in scaled.dropped.prefix(5) { s += "\n  line \(d.line): \(d.image): \(InputLimits.quoted(d.reason, limit: 300))" }
            if scaled.dropped.count > 5 { s += "\n  ... and \(scaled.dropped.count - 5) more" }
            note(s)
        }
    }
}
