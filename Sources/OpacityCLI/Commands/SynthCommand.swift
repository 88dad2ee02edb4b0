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
              opacity synth --out synth --count 400 --size 512
              opacity synth --out composite --count 2000 --backgrounds ~/rsna/negatives --size 1024
            """)

    @Option(name: .long, help: "Output folder (created).") var out: String
    @Option(name: .long, help: "Number of images.") var count: Int = 200
    @Option(name: .long, help: "Image side in pixels (the RSNA images are 1024).") var size: Int = 1024
    @Option(name: .long, help: "Seed: the same seed and settings write the same files.") var seed: UInt64 = 0
    @Option(name: .long, help: "A folder of real chest films to composite opacities onto.") var backgrounds: String?
    @Option(name: .long, help: ArgumentHelp("Image format: png, dicom (uncompressed) or dicom-jpeg (like the RSNA files).", valueName: "format"))
    var format: String = "png"

    func validate() throws {
        guard ["png", "dicom", "dicom-jpeg"].contains(format) else {
            throw ValidationError("--format takes png, dicom or dicom-jpeg, not '\(format)'")
        }
    }

    func run() throws {
        let fmt: SyntheticConfig.ImageFormat = format == "png" ? .png : format == "dicom" ? .dicom : .dicomJPEG(quality: 90)
        let config = SyntheticConfig(count: count, size: size, seed: seed, backgroundFolder: backgrounds.map { URL(fileURLWithPath: $0) },
                                     format: fmt)
        let bar = TerminalProgressBar(label: "synth")
        let cases = try SyntheticChestXRay(config: config).write(to: URL(fileURLWithPath: out), progress: bar.handler)
        let counts = ImageClass.allCases.map { c in "\(cases.filter { $0.imageClass == c }.count) \(c.label)" }
        print("wrote \(cases.count) images to \(out): \(counts.joined(separator: ", ")); \(cases.reduce(0) { $0 + $1.boxes.count }) boxes")
    }
}
