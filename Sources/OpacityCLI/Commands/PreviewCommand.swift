import ArgumentParser
import Foundation
import Opacity

/// `opacity preview`: a grid of augmented samples with their boxes, as one PNG.
struct AugmentPreviewCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preview",
        abstract: "Write a grid of augmented training samples with their boxes as one PNG.",
        discussion: """
            DATA is an RSNA folder (stage_2_train_labels.csv, stage_2_detailed_class_info.csv, \
            stage_2_train_images/), or a folder of images with --boxes-csv. Without DATA a small \
            synthetic set is generated. Boxes are drawn in red after the same mapping training \
            uses; tiles of flipped samples say FLIP. Each image is shown once: with fewer images than \
            --count (e.g. with --positives-only), the grid has one tile per image and says so. An existing -o/--output PNG is \
            not replaced without --overwrite.

            Augmentation presets (paper levels): none, minimal (1), light (10), \
            light_norotation (11), light_basic_rotation, medium (15), heavy (20, also \
            heavy_custom_rotation), heavy_norotation (21), heavy_basic_rotation. Override any \
            value, e.g. --aug heavy,rotation=3,boxes=corners,flip=0.5 (as train's --aug); the keys: \(AugmentationConfig.parameterNames.joined(separator: ", ")).

            Example:
              opacity preview ~/rsna --aug heavy --count 16 --columns 4 \\
                  -o preview.png
            """)

    @Argument(help: "An RSNA folder or a folder of images (with --boxes-csv). Omit for a synthetic set.")
    var data: String?

    @Option(name: .long, help: "A CSV of boxes for DATA (columns image,x,y,width,height[,class]).")
    var boxesCSV: String?

    @Option(name: .long, help: ArgumentHelp("Augmentation preset and overrides, e.g. heavy,rotation=3. (default: heavy)", valueName: "preset"))
    var aug: String?

    @Option(name: .customLong("augmentation"), help: ArgumentHelp("Older spelling of --aug.", valueName: "preset", visibility: .hidden))
    var deprecatedAugmentation: String?

    @Option(name: .long, parsing: .unconditional, help: "Tile side in pixels (the training input size).")
    var size: Int = 512

    @Option(name: .long, parsing: .unconditional, help: "Number of tiles (at most one per image).")
    var count: Int = 12

    @Option(name: .long, parsing: .unconditional, help: "Tiles per row.")
    var columns: Int = 4

    @Option(name: .long, parsing: .unconditional, help: "Seed for the augmentations (and the synthetic set).")
    var seed: UInt64 = 0

    @Flag(name: .long, help: "Only images with boxes.")
    var positivesOnly = false

    @Flag(name: .long, help: "Leave out missing or unreadable images (they are reported) instead of failing.")
    var skipUnreadable = false

    @Flag(name: .customLong("skip-bad-images"), help: ArgumentHelp("Deprecated spelling of --skip-unreadable.", visibility: .hidden))
    var deprecatedSkipBadImages = false

    @Option(name: [.short, .long], help: "Output PNG.")
    var output: String = "preview.png"

    @Flag(name: .long, help: "Replace an existing -o/--output PNG.")
    var overwrite = false

    func validate() throws {
        try requireAtLeast("--size", size, 16, noun: "a number of pixels")
        try requireAtLeast("--count", count, 1)
        try requireAtLeast("--columns", columns, 1)
        if let deprecatedAugmentation, let aug, aug != deprecatedAugmentation {
            throw ValidationError("--aug \(aug) and --augmentation \(deprecatedAugmentation) name different augmentations; give --aug only")
        }
        // said as the option the user typed (--augmentation in an older script)
        do { _ = try AugmentationConfig(parsing: augmentation) } catch {
            throw namingOption(error, ["augmentation": augmentationOption], keysOf: augmentationOption)
        }
    }

    /// The augmentation asked for: `--aug`, or its older spelling `--augmentation`; `heavy` by default.
    var augmentation: String { aug ?? deprecatedAugmentation ?? "heavy" }

    /// The option that gave ``augmentation``, as the user typed it.
    var augmentationOption: String { aug == nil && deprecatedAugmentation != nil ? "--augmentation" : "--aug" }

    func run() throws {
        try requireOutputFile(output, option: "-o/--output", for: "the preview PNG")
        // the preview PNG never replaces a CSV or an image it is drawn from; said before an
        // earlier result is, whose advice (--overwrite) would be refused then
        if let data {
            let root = URL(fileURLWithPath: data)
            try refuseOverwritingDataInputs(
                output, option: "-o/--output", folders: boxesCSV == nil ? rsnaInputFolders(root) : [root], files: boxesCSV.map { [URL(fileURLWithPath: $0)] } ?? [])
        }
        try refuseEarlierResults([output], overwrite: overwrite, replacing: "the earlier preview", otherwise: "name another file with -o/--output")
        let config = try AugmentationConfig(parsing: augmentation)
        if deprecatedAugmentation != nil { note("warning: --augmentation is deprecated; use --aug (as train)") }
        if deprecatedSkipBadImages { note("warning: --skip-bad-images is deprecated; use --skip-unreadable (as train, eval, detect and submit)") }
        let policy: ProblemImagePolicy = skipUnreadable || deprecatedSkipBadImages ? .skip : .fail
        var dataset: DetectionDataset
        var cleanup: URL?
        if let data {
            let root = URL(fileURLWithPath: data)
            if let boxesCSV {
                dataset = try BoxesCSV.load(
                    csv: URL(fileURLWithPath: boxesCSV), imageFolder: root,
                    options: .init(problemImages: policy))
            } else {
                dataset = try RSNADataset.load(root: root, options: .init(problemImages: policy))
            }
        } else {
            let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-preview-\(ProcessInfo.processInfo.processIdentifier)")
            cleanup = tmp
            let n = max(count, 8)
            try SyntheticChestXRay(config: SyntheticConfig(count: n, size: 1024, seed: seed, classFractions: (0.5, 0.25, 0.25)))
                .write(to: tmp, progress: TerminalProgressBar(label: "synthetic").handler)
            dataset = try RSNADataset.load(root: tmp)
        }
        defer { if let cleanup { try? FileManager.default.removeItem(at: cleanup) } }
        try refuseOverwritingDataInputs(output, option: "-o/--output", images: dataset.records.compactMap(\.imageURL))
        if !dataset.report.missingImages.isEmpty || !dataset.report.unreadableImages.isEmpty {
            StandardStreams.writeError("warning: \(dataset.report)\n")
        }
        if positivesOnly { dataset.records = dataset.records.filter { !$0.boxes.isEmpty } }
        guard !dataset.records.isEmpty else {
            throw ValidationError(positivesOnly ? "no images with boxes in \(data ?? "the data")" : "no images in \(data ?? "the data")")
        }
        // each image once: fewer images than --count make fewer tiles, not repeated ones
        let tiles = min(count, dataset.records.count)
        if tiles < count {
            let which = Wording.count(tiles, "image") + (positivesOnly ? " with boxes" : "")
            note("note: \(data ?? "the synthetic set") has only \(which); showing each once (\(Wording.count(tiles, "tile")), not --count \(count))")
        }
        let grid = try PreviewGrid.augmentations(
            of: dataset, augmenter: Augmenter(config: config, outputSize: size),
            count: tiles, columns: columns, seed: seed)
        let outURL = URL(fileURLWithPath: output)
        try PNG.write(grid, to: outURL)
        // named absolute, as the other commands name what they wrote
        say("wrote \(shownPath(output)) (\(grid.width)x\(grid.height), \(Wording.count(tiles, "sample")), augmentation \(config))")
    }
}
