import ArgumentParser
import Foundation
import Opacity

/// The `opacity-bench` command line: one subcommand per section, and `report` (the default)
/// for several sections in one run.
struct OpacityBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "opacity-bench",
        abstract: "Measures Opacity: the tensor engine, real detectors, the data loader, bundles, ONNX Runtime, MPI.",
        discussion: """
            Each section is a subcommand (`opacity-bench conv --only 7x7`); `opacity-bench` alone, or `opacity-bench report [SECTION ...]`, runs several sections in one report (default: \(BenchSection.all.filter(\.runsByDefault).map(\.name).joined(separator: " "))). Times are medians of --repeat runs after warm-up; the header prints the load average, since other jobs on the machine distort wall-clock timings. Documentation/Benchmarks.md describes every section and the measured numbers.
            """,
        subcommands: [
            Report.self, BLASCommand.self, ConvCommand.self, GroupedCommand.self, TailsCommand.self, ResNet50Command.self, DetectorCommand.self, DetectCommand.self,
            LoaderCommand.self,
            BundleCommand.self, ONNXCommand.self, AllreduceCommand.self, ScalingCommand.self,
        ],
        defaultSubcommand: Report.self)
}

// MARK: - Option groups

/// Options every section takes: threads, repetitions, clock.
struct CommonOptions: ParsableArguments {
    @Option(help: "Compute threads for our kernels, OpenBLAS and PyTorch (default: all cores, or OPACITY_THREADS).")
    var threads: Int?

    @Option(name: .customLong("repeat"), help: "Timed repetitions per measurement, after warm-up.")
    var repetitions = 5

    @Option(
        help: """
            wall: elapsed time; cpu: process CPU time / threads, an estimate for an idle machine when other jobs share the cores.
            """)
    var clock = BenchClock.wall

    func validate() throws {
        if let threads, !Compute.validThreadCounts.contains(threads) { throw ValidationError("--threads \(threads) is not valid; expected \(Compute.validThreadCounts), e.g. 2") }
        if repetitions < 1 { throw ValidationError("--repeat \(repetitions) is not valid; expected a positive count, e.g. 5") }
    }

    func apply(to o: inout BenchOptions) {
        o.threads = threads
        o.repetitions = repetitions
        o.clock = clock
    }
}

/// The image side of the convolution and network sections.
struct SizeOptions: ParsableArguments {
    @Option(help: "Image side in pixels for the sections that build networks (conv, tails, resnet50, detector).")
    var size = 512

    func validate() throws {
        if size < 32 { throw ValidationError("--size \(size) is too small; expected at least 32, e.g. 512") }
    }
}

/// Where PyTorch's reference figures come from.
struct PyTorchOptions: ParsableArguments {
    @Option(name: .customLong("pytorch-json"), help: ArgumentHelp("Read PyTorch figures written earlier by scripts/bench_pytorch.py.", valueName: "file"))
    var pytorchJSON: String?

    @Option(help: ArgumentHelp("Run the PyTorch reference scripts with this interpreter.", valueName: "path"))
    var python: String?

    @Flag(name: .customLong("no-pytorch"), help: "Skip the PyTorch comparison.")
    var noPyTorch = false

    func validate() throws {
        let given = [pytorchJSON != nil, python != nil, noPyTorch].filter { $0 }.count
        if given > 1 { throw ValidationError("--pytorch-json, --python and --no-pytorch exclude each other; give one") }
    }

    var source: BenchOptions.PyTorchSource {
        if noPyTorch { return .off }
        if let pytorchJSON { return .file(pytorchJSON) }
        if let python { return .python(python) }
        return .auto
    }
}

/// Options of the conv section.
struct ConvOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Only convolutions whose label contains this text (e.g. 7x7, 3x3/2).", valueName: "text"))
    var only: String?

    @Flag(name: .customLong("forward-only"), help: "Skip the forward+backward timings.")
    var forwardOnly = false
}

/// Options of the resnet50 section.
struct NetworkOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Batch sizes, comma-separated.", valueName: "list"))
    var batches = "1,2"

    func parsed() throws -> [Int] { try positiveList(batches, "--batches", example: "1,2") }
}

/// Options of the detector section.
struct DetectorOptions: ParsableArguments {
    @Option(
        name: .customLong("config"),
        help: ArgumentHelp(
            "A detector config (repeatable; default every encoder as retinanet(encoder=NAME, size=S), each with a PyTorch run: long, an hour or more at 512 px on 2 cores).",
            valueName: "config"))
    var configs: [String] = []

    @Flag(
        name: .customLong("freeze-bn"),
        help: "Train with frozen batch norm (fixed statistics, trained scale and shift), as `opacity train` does by default; both frameworks.")
    var freezeBatchNorm = false
}

/// Options of the allreduce and scaling sections.
struct MPIOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Process counts, comma-separated: one mpirun job each (allreduce: the largest).", valueName: "list"))
    var ranks = "1,2"

    @Option(name: .customLong("global-batch"), help: ArgumentHelp("scaling: images per step over all ranks (default: the most ranks).", valueName: "n"))
    var globalBatch: Int?

    @Option(name: .customLong("bucket-mib"), help: ArgumentHelp("scaling: gradient bucket size in MiB.", valueName: "MiB"))
    var bucketMiB: Double = 25

    @Option(name: .customLong("max-mib"), help: ArgumentHelp("allreduce: largest buffer in MiB (from 1, doubling).", valueName: "MiB"))
    var maxMiB = 256

    @Option(name: .customLong("scaling-config"), help: ArgumentHelp("scaling: the detector.", valueName: "config"))
    var scalingConfig = "retinanet(encoder=resnet50, size=512)"

    @Option(
        name: .customLong("scaling-out"),
        help: ArgumentHelp("scaling: also write the table as scaling.csv and the efficiency curve as scaling.png into this folder.", valueName: "dir"))
    var scalingOut: String?

    func validate() throws {
        _ = try positiveList(ranks, "--ranks", example: "1,2")
        if let globalBatch, globalBatch < 1 { throw ValidationError("--global-batch \(globalBatch) is not valid; expected a positive count, e.g. 2") }
        if !(bucketMiB > 0) { throw ValidationError("--bucket-mib \(bucketMiB) is not valid; expected a positive size, e.g. 25") }
        if maxMiB < 1 { throw ValidationError("--max-mib \(maxMiB) is not valid; expected at least 1, e.g. 256") }
    }

    func apply(to o: inout BenchOptions) throws {
        o.ranks = try positiveList(ranks, "--ranks", example: "1,2")
        o.globalBatch = globalBatch
        o.bucketMiB = bucketMiB
        o.maxMiB = maxMiB
        o.scalingConfig = scalingConfig
        o.scalingOut = scalingOut
    }
}

/// `"1,2,4"` as positive integers, or a usage error naming the option.
func positiveList(_ text: String, _ flag: String, example: String) throws -> [Int] {
    let parts = text.split(separator: ",", omittingEmptySubsequences: false)
    let values = parts.compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }.filter { $0 > 0 }
    guard !parts.isEmpty, values.count == parts.count else {
        throw ValidationError("\(flag) '\(text)' is not valid; expected positive integers separated by commas, e.g. \(example)")
    }
    return values
}

extension BenchClock: ExpressibleByArgument {}

// MARK: - Running sections

/// Sets the engine up from `options`, prints the report header and runs `sections` in order.
func runReport(_ sections: [BenchSection], _ options: BenchOptions) {
    for warning in Compute.tuningVariableWarnings { FileHandle.standardError.write(Data((warning + "\n").utf8)) }
    if options.threads == nil, let warning = Compute.threadsVariableWarning {
        // as opacity says it: the engine ignores the variable, and a benchmark names its thread count
        FileHandle.standardError.write(Data((warning + "\n").utf8))
    }
    Compute.threads = options.threads ?? Compute.threads
    benchClock = options.clock
    var context = BenchContext(options: options)
    context.printHeader()
    for section in sections {
        section.run(&context)
    }
}

/// A subcommand that runs one section.
protocol SectionCommand: ParsableCommand {
    static var section: BenchSection { get }
    /// The options this command was given, over the defaults of the rest.
    func options() throws -> BenchOptions
}

/// A section that takes only the shared options.
protocol CommonOnlySectionCommand: SectionCommand {
    var common: CommonOptions { get }
}

extension CommonOnlySectionCommand {
    func options() throws -> BenchOptions {
        var o = BenchOptions()
        common.apply(to: &o)
        return o
    }
}

extension SectionCommand {
    static func describing(_ section: BenchSection, discussion: String = "") -> CommandConfiguration {
        CommandConfiguration(commandName: section.name, abstract: section.summary, discussion: discussion)
    }

    func run() throws {
        runReport([Self.section], try options())
    }
}

// MARK: - Commands

/// Several sections in one report.
struct Report: ParsableCommand {
    /// A section name on the command line, or `all`.
    enum Name: String, CaseIterable, ExpressibleByArgument {
        case blas, conv, grouped, tails, resnet50, detector, detect, loader, bundle, onnx, allreduce, scaling, all
    }

    static let configuration = CommandConfiguration(
        abstract: "Runs several sections in one report (the default command).",
        discussion: """
            Sections run in the order given; without any, the default ones (\(BenchSection.all.filter(\.runsByDefault).map(\.name).joined(separator: " "))); `all` names every section. Every section's options are accepted here.
            """)

    @Argument(help: ArgumentHelp("Sections to run, in order.", valueName: "section"))
    var sections: [Name] = []

    @OptionGroup var common: CommonOptions
    @OptionGroup var size: SizeOptions
    @OptionGroup var pytorch: PyTorchOptions
    @OptionGroup var conv: ConvOptions
    @OptionGroup var network: NetworkOptions
    @OptionGroup var detector: DetectorOptions
    @OptionGroup var mpi: MPIOptions

    func run() throws {
        var o = BenchOptions()
        common.apply(to: &o)
        o.imageSize = size.size
        o.pytorch = pytorch.source
        o.convFilter = conv.only
        o.convBackward = !conv.forwardOnly
        o.batches = try network.parsed()
        o.detectorConfigs = detector.configs
        o.freezeBatchNorm = detector.freezeBatchNorm
        try mpi.apply(to: &o)
        var chosen: [BenchSection] = []
        for name in sections {
            if name == .all {
                chosen += BenchSection.all
            } else if let s = BenchSection.named(name.rawValue) {
                chosen.append(s)
            }
        }
        runReport(chosen.isEmpty ? BenchSection.all.filter(\.runsByDefault) : chosen, o)
    }
}

struct BLASCommand: CommonOnlySectionCommand {
    static let section = BenchSection.blas
    static let configuration = describing(section)
    @OptionGroup var common: CommonOptions
}

struct ConvCommand: SectionCommand {
    static let section = BenchSection.conv
    static let configuration = describing(
        section,
        discussion: "The convolutions are read from one traced forward pass of the ResNet plugin's resnet50 (3 input channels, as torchvision's).")
    @OptionGroup var common: CommonOptions
    @OptionGroup var size: SizeOptions
    @OptionGroup var conv: ConvOptions
    @OptionGroup var pytorch: PyTorchOptions

    func options() throws -> BenchOptions {
        var o = BenchOptions()
        common.apply(to: &o)
        o.imageSize = size.size
        o.convFilter = conv.only
        o.convBackward = !conv.forwardOnly
        o.pytorch = pytorch.source
        return o
    }
}

struct TailsCommand: SectionCommand {
    static let section = BenchSection.tails
    static let configuration = describing(
        section,
        discussion:
            "The stage outputs of a ResNet-50-shaped encoder (256 channels at a quarter of --size, up to 2048 at a 32nd); the separate and the fused variant alternate in one process."
    )
    @OptionGroup var common: CommonOptions
    @OptionGroup var size: SizeOptions

    func options() throws -> BenchOptions {
        var o = BenchOptions()
        common.apply(to: &o)
        o.imageSize = size.size
        return o
    }
}

struct GroupedCommand: SectionCommand {
    static let section = BenchSection.grouped
    static let configuration = describing(
        section,
        discussion: """
            The convolutions are read from one traced forward pass of each encoder; forward+backward is timed with the per-group backward tasks and without (ConvolutionSettings.groupedTasks), and scripts/bench_grouped_pytorch.py times the same shapes in PyTorch (run it with OMP_WAIT_POLICY=PASSIVE for --clock cpu on a shared machine).
            """)
    @OptionGroup var common: CommonOptions
    @OptionGroup var size: SizeOptions
    @OptionGroup var pytorch: PyTorchOptions

    func options() throws -> BenchOptions {
        var o = BenchOptions()
        common.apply(to: &o)
        o.imageSize = size.size
        o.pytorch = pytorch.source
        return o
    }
}

struct ResNet50Command: SectionCommand {
    static let section = BenchSection.resnet50
    static let configuration = describing(
        section,
        discussion: """
            The network is the ResNet plugin's encoder built from the registry as `\(BenchNetwork.resnet50Config)` (timm/torchvision layout with the 1000-way classifier), in eval mode with batch norm fused with ReLU; scripts/bench_pytorch.py builds the same network in PyTorch.
            """)
    @OptionGroup var common: CommonOptions
    @OptionGroup var size: SizeOptions
    @OptionGroup var network: NetworkOptions
    @OptionGroup var pytorch: PyTorchOptions

    func options() throws -> BenchOptions {
        var o = BenchOptions()
        common.apply(to: &o)
        o.imageSize = size.size
        o.batches = try network.parsed()
        o.pytorch = pytorch.source
        return o
    }
}

struct DetectorCommand: SectionCommand {
    static let section = BenchSection.detector
    static let configuration = describing(section)
    @OptionGroup var common: CommonOptions
    @OptionGroup var size: SizeOptions
    @OptionGroup var detector: DetectorOptions
    @OptionGroup var pytorch: PyTorchOptions

    func options() throws -> BenchOptions {
        var o = BenchOptions()
        common.apply(to: &o)
        o.imageSize = size.size
        o.detectorConfigs = detector.configs
        o.freezeBatchNorm = detector.freezeBatchNorm
        o.pytorch = pytorch.source
        return o
    }
}

struct DetectCommand: CommonOnlySectionCommand {
    static let section = BenchSection.detect
    static let configuration = describing(
        section,
        discussion:
            "Runs the opacity executable beside this one (swift build -c release --product opacity) on the first DICOM of $OPACITY_REALDATA or ../shared/realdata; wall clock whatever --clock says."
    )
    @OptionGroup var common: CommonOptions
}

struct LoaderCommand: CommonOnlySectionCommand {
    static let section = BenchSection.loader
    static let configuration = describing(section, discussion: "Reads the RSNA DICOMs from $OPACITY_REALDATA or ../shared/realdata beside the checkout.")
    @OptionGroup var common: CommonOptions
}

struct BundleCommand: CommonOnlySectionCommand {
    static let section = BenchSection.bundle
    static let configuration = describing(section)
    @OptionGroup var common: CommonOptions
}

struct ONNXCommand: CommonOnlySectionCommand {
    static let section = BenchSection.onnx
    static let configuration = describing(
        section, discussion: "Needs the ONNX test oracle's virtual environment: scripts/onnx-venv.sh makes it, OPACITY_ONNX_VENV overrides where it lives.")
    @OptionGroup var common: CommonOptions
}

struct AllreduceCommand: SectionCommand {
    static let section = BenchSection.allreduce
    static let configuration = describing(
        section,
        discussion: """
            Started plainly it launches itself under mpirun (Open MPI, --oversubscribe) with the largest of --ranks processes, one thread each, and prints what rank 0 measured; started by mpirun or srun it is one rank of that job.
            """)
    @OptionGroup var common: CommonOptions
    @OptionGroup var mpi: MPIOptions

    func options() throws -> BenchOptions {
        var o = BenchOptions()
        common.apply(to: &o)
        try mpi.apply(to: &o)
        return o
    }
}

struct ScalingCommand: SectionCommand {
    static let section = BenchSection.scaling
    static let configuration = describing(
        section,
        discussion: """
            One mpirun job per process count P in --ranks, each rank with --threads / P threads (default: all cores / P), the same global batch for every count; prints step time, the time blocked on gradient communication after backward, and the scaling efficiency (1-rank step time / P-rank step time).
            """)
    @OptionGroup var common: CommonOptions
    @OptionGroup var mpi: MPIOptions

    func options() throws -> BenchOptions {
        var o = BenchOptions()
        common.apply(to: &o)
        try mpi.apply(to: &o)
        return o
    }
}
