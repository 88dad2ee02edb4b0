import ArgumentParser
import Foundation
import Opacity

/// `opacity synth`: writes a synthetic chest X-ray set in the RSNA layout.
struct SynthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract: "Write a synthetic chest X-ray set in the Kaggle RSNA layout (images and both CSVs).",
        discussion: """
            The images show a body outline, lungs, ribs, heart, spine and noise. "Lung Opacity" images carry 1-4 fuzzy opacities inside the lungs, each boxed, with the real set's box statistics; "No Lung Opacity / Not Normal" images carry unboxed findings; "Normal" images are clean. With --backgrounds, opacities are composited onto real films instead. The folder trains with `opacity train --data DIR` like the real one.

            Examples:
              opacity synth -o synth --count 400 --size 512
              opacity synth -o composite --count 2000 --backgrounds ~/rsna/negatives \\
                  --size 1024
              opacity synth -o patchy --count 2000 --backgrounds ~/rsna/negatives \\
                  --opacity-style patchy
            """)

    @Option(name: [.short, .long], help: "Output folder (created); required.") var output: String?
    @Option(name: .customLong("out"), help: ArgumentHelp("Deprecated spelling of -o/--output.", visibility: .hidden)) var deprecatedOut: String?
    @Option(name: .long, parsing: .unconditional, help: "Number of images.") var count: Int = 200
    @Option(name: .long, parsing: .unconditional, help: "Image side in pixels (the RSNA images are 1024).") var size: Int = 1024
    @Option(name: .long, parsing: .unconditional, help: "Seed: the same seed and settings write the same files.") var seed: UInt64 = 0
    @Option(name: .long, help: "A folder of real chest films to composite opacities onto.") var backgrounds: String?
    @Option(name: .long, help: "Image format: png, dicom (uncompressed) or dicom-jpeg (like the RSNA files).")
    var format: SyntheticFormat = .png
    @Option(
        name: .long,
        help:
            "How opacities look: ovals (smooth, sharp-edged; the composite zoo model's data) or patchy (ill-defined, lower-zone, often bilateral, air bronchograms; boxed around each visible region)."
    )
    var opacityStyle: SyntheticOpacityStyle = .ovals
    @Option(name: .long, parsing: .unconditional, help: "With --opacity-style patchy: the probability (0 to 1) that a region shows air bronchograms.")
    var airBronchograms: Double = 0.35
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if output == nil && deprecatedOut == nil { throw ValidationError("name the output folder: -o/--output DIR") }
        // the generator's own limits, said as every other number out of range is (its own
        // words quoted the number: `--count '0' is not valid`)
        try requireAtLeast("--count", count, 1)
        try requireAtLeast("--size", size, SyntheticChestXRay.minimumSize, noun: "a number of pixels")
        try requireRange("--air-bronchograms", airBronchograms, 0, 1)
        if airBronchograms != 0.35, opacityStyle != .patchy {
            throw ValidationError("--air-bronchograms needs --opacity-style patchy (ovals have no air bronchograms)")
        }
    }

    func run() throws {
        runtime.apply()
        guard let out = try resolveOutput(output, deprecated: deprecatedOut) else { throw ValidationError("name the output folder: -o/--output DIR") }
        try requireOutputFolder(out, option: "-o/--output", for: "the dataset in the RSNA layout")
        let fmt = format.format
        let config = SyntheticConfig(
            count: count, size: size, seed: seed, backgroundFolder: backgrounds.map { URL(fileURLWithPath: $0) },
            format: fmt, opacityStyle: opacityStyle, airBronchogramRate: airBronchograms)
        // the generator checks its numbers, under its own names for them
        let generator: SyntheticChestXRay
        do { generator = try SyntheticChestXRay(config: config) } catch {
            throw namingOption(error, ["count": "--count", "size": "--size", "airBronchogramRate": "--air-bronchograms"])
        }
        let cases = try generator.write(to: URL(fileURLWithPath: out), progress: runtime.progressBar("synth"))
        let counts = ImageClass.allCases.map { c in "\(cases.filter { $0.imageClass == c }.count) \(c.label)" }
        say(
            "wrote \(Wording.count(cases.count, "image")) to \(shownPath(out)): \(counts.joined(separator: ", ")); \(Wording.count(cases.reduce(0) { $0 + $1.boxes.count }, "box", plural: "boxes"))"
        )
    }
}
