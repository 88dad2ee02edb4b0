import ArgumentParser
import Foundation
import Opacity

/// `opacity convert`: DICOM to 8-bit PNG for one file or a whole folder.
struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert DICOM files (one file or a whole folder) to 8-bit PNG.",
        discussion: """
            Reads Implicit/Explicit VR Little Endian, Explicit VR Big Endian, Deflated, JPEG Baseline \
            (the RSNA files), JPEG Lossless, JPEG 2000 and RLE Lossless, 8- to 16-bit grayscale; \
            rescale, then the file's window (else the full range; 8-bit files keep their values), \
            MONOCHROME1 inverted; written as 8-bit PNG, or 16-bit with --depth 16. Files that \
            cannot be converted are listed at the end; the rest go on (see Documentation/DICOM.md).

            Examples:
              opacity convert stage_2_train_images/ -o train_png/ --size 512
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

    @Flag(name: .long, help: "Replace existing PNG files (they are skipped by default).")
    var overwrite = false

    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if let size, !(1...65_536).contains(size) { throw ValidationError("--size \(size) is not valid; expected a number of pixels in 1...65536, e.g. 512") }
        guard depth == 8 || depth == 16 else { throw ValidationError("--depth \(depth) is not valid; expected 8 or 16") }
        guard frame >= 1 else { throw ValidationError("--frame must be 1 or more (frames count from 1), e.g. --frame 1") }
        _ = try parseWindow(window)
        _ = try outputPath()
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
        var inputIsFolder: ObjCBool = false
        if FileManager.default.fileExists(atPath: input, isDirectory: &inputIsFolder), inputIsFolder.boolValue {
            try requireOutputFolder(try outputPath(), option: "-o/--output", for: "one PNG per DICOM file of the folder \(input)")
        } else if URL(fileURLWithPath: try outputPath()).pathExtension.lowercased() == "png" {
            try requireOutputFile(try outputPath(), option: "-o/--output", for: "the PNG of \(input)")
        } else {
            try requireOutputFolder(try outputPath(), option: "-o/--output", for: "the PNG of \(input), named after it")
        }
        var options = ImageConversion.Options(
            size: size, window: try parseWindow(window), overwrite: overwrite,
            threads: runtime.threads ?? ProcessInfo.processInfo.activeProcessorCount)
        options.depth = depth
        options.frame = frame
        let summary = try ImageConversion.convert(
            input: URL(fileURLWithPath: input), output: URL(fileURLWithPath: try outputPath()),
            options: options, progress: runtime.progressBar("convert"))
        if !runtime.quiet {
            print(summary)
        } else if !summary.failures.isEmpty {
            // -q: no counts, but the files that failed are errors and still print
            note(summary.failures.map { $0.reason.contains($0.path) ? $0.reason : "\($0.path): \($0.reason)" }.joined(separator: "\n"))
        }
        if !summary.failures.isEmpty { throw ExitStatus.dataError.code }
    }
}

/// Parses `auto`, `minmax` or `CENTER,WIDTH`.
func parseWindow(_ text: String) throws -> WindowSetting {
    switch text.lowercased() {
    case "auto", "automatic": return .automatic
    case "minmax", "min-max", "full": return .minMax
    default:
        let parts = text.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, let c = parts[0], let w = parts[1] else {
            // a word: the nearest of the named settings; numbers: the form they need
            let near = text.contains(where: \.isLetter) ? nearestValue(text, in: ["auto", "minmax"]).map { " (nearest valid: '\($0)')" } ?? "" : ""
            throw ValidationError("--window '\(InputLimits.quoted(text))' is not valid; expected auto, minmax, or CENTER,WIDTH such as 40,400" + near)
        }
        do { return try WindowSetting.fixed(center: c, width: w).validated() } catch {
            throw ValidationError("--window '\(InputLimits.quoted(text))': \(error) (e.g. 40,400)")
        }
    }
}
