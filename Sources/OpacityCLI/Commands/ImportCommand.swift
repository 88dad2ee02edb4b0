import ArgumentParser
import Foundation
import Opacity

/// `opacity import`: safetensors weights (timm, Hugging Face) -> an encoder bundle.
struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Import ImageNet weights from a safetensors file into an encoder bundle.",
        discussion: """
            Reads a safetensors file as published by timm or Hugging Face (e.g. the \
            model.safetensors of timm/resnet34.a1_in1k), maps its names one to one onto an \
            Opacity encoder, sums a 3-channel stem into the 1-channel X-ray stem, drops the \
            ImageNet classifier and writes an encoder bundle (an existing one is not replaced \
            without --overwrite). Start training a detector from it with:
              opacity train --config "retinanet(encoder=resnet34)" \\
                  --encoder-weights resnet34_in1k.opb ...

            Key maps: timm (names unchanged), cadene (Cadene pretrainedmodels se_resnext*, \
            = timm legacy_seresnext*), timm-seresnext (timm's current seresnext*_32x4d: trained with \
            a padded stem pool, so refused unless --allow-different-numerics). Each encoder's \
            plugin registers the key maps it accepts.

            Cadene .pth files are pickles: convert them first with:
              python -c "import torch, safetensors.torch as s; \\
                  s.save_file(torch.load('x.pth'), 'x.safetensors')"
            """)

    @Argument(help: "The safetensors file.")
    var source: String

    @Option(name: .long, help: "The encoder config, e.g. resnet34 or seresnext50_32x4d (see `opacity plugins --kind encoder`).")
    var encoder: String

    @Option(name: [.short, .long], help: "The bundle to write (default: the source's name with .opb, in the current folder).")
    var output: String?

    @Option(name: .long, help: "Key map: timm (every encoder), or one the encoder's plugin registers (seresnext*: cadene, timm-seresnext).")
    var keyMap: String = "timm"

    @Option(name: .long, help: "Storage: fp32, fp16, bf16 or int8.")
    var storage: String = "fp32"

    @Flag(name: .long, help: "Keep initial values for encoder tensors the file lacks.")
    var allowMissing = false

    @Flag(name: .long, help: "Ignore tensors the encoder has no place for (besides the classifier).")
    var allowUnexpected = false

    @Flag(name: .long, help: "Import a checkpoint the encoder's plugin marks as trained for other numerics (e.g. timm's padded-pool seresnext into the ceil-mode stem).")
    var allowDifferentNumerics = false

    @Flag(name: .long, help: "Replace an existing bundle at -o/--output (or the default path).")
    var overwrite = false

    @Flag(name: .long, help: "Check the mapping and print the report without writing.")
    var dryRun = false

    @Flag(name: .shortAndLong, help: "List every mapped tensor.")
    var verbose = false

    @OptionGroup var pluginOptions: PluginOptions

    func validate() throws {
        guard StoragePolicy(name: storage) != nil else {
            throw ValidationError(
                "--storage '\(InputLimits.quoted(storage))' is not valid; expected one of \(StorageType.userNames.joined(separator: ", "))"
                    + (nearestValue(storage, in: StorageType.userNames).map { " (nearest valid: '\($0)')" } ?? ""))
        }
    }

    func run() throws {
        if let output, !dryRun { try requireOutputFile(output, option: "-o/--output", for: "the encoder bundle") }
        let registry = try pluginOptions.registry()
        // errors in --encoder (a config string) and --key-map are usage errors (64), checked
        // before the source is read
        _ = try commandLineConfig(encoder, option: "--encoder", as: .encoder, registry: registry)
        let map: KeyMap
        do { map = try registry.keyMap(keyMap, encoder: encoder) } catch let error as CheckpointError {
            throw ValidationError("--key-map: \(error)")
        }
        let src = URL(fileURLWithPath: source)
        let out = dryRun ? nil : URL(fileURLWithPath: output ?? src.deletingPathExtension().lastPathComponent + "." + BundleFormat.fileExtension)
        if let out {
            // the bundle never replaces the safetensors file it is imported from
            try refuseOverwritingInput(out, inputs: [src], option: "-o/--output")
            try refuseEarlierResults(
                [output ?? out.lastPathComponent], overwrite: overwrite, replacing: "the earlier bundle", otherwise: "name another file with -o/--output")
            try createParentFolder(of: out, option: "-o/--output")
        }
        // a data error (1), as other missing inputs, with the nearest file beside it
        guard FileManager.default.fileExists(atPath: source) else {
            throw MissingInput(message: "import \(source): no such file; expected a safetensors file (timm's weights)" + nearestEntryHint(source))
        }
        let report = try WeightImport.importEncoder(
            from: src, encoder: encoder, registry: registry, keyMap: map, to: out,
            storage: StoragePolicy(name: storage)!, allowMissing: allowMissing,
            allowUnexpected: allowUnexpected, allowDifferentNumerics: allowDifferentNumerics)
        say("\(report)")
        if verbose { say(report.details) }
        if let out {
            say("start training a detector from it with: --config \"retinanet(encoder=\(report.encoder))\" --encoder-weights \(out.path)")
        } else {
            say("dry run: nothing written")
        }
    }
}
