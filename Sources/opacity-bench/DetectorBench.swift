import Foundation
import Opacity
import OpacityTensor

#if canImport(Glibc)
    import Glibc
#endif

// MARK: - detector section

extension BenchSection {
    /// Forward (batch 1) and training step (batch 2) of real detectors built from config
    /// strings, part by part, with peak resident memory, against PyTorch's time for the same
    /// detector shape (scripts/bench_detector_pytorch.py).
    static let detector = BenchSection(
        name: "detector",
        summary: "forward and training step of real detectors (--config, default every encoder) by part, vs PyTorch",
        runsByDefault: false
    ) { context in
        DetectorBench.run(context.options)
    }
}

/// The parts timed by the detector section, in report order.
private let forwardParts = ["encoder", "neck", "head", "post", "total"]
private let trainParts = ["encoder", "neck", "head", "loss", "backward", "optimizer", "total"]

/// Seconds per part (medians over repetitions) and the peak resident memory of one phase.
struct PhaseFigures {
    var seconds: [String: Double] = [:]
    /// Peak resident set size during the phase, bytes (`VmHWM` after resetting it), or nil.
    var peakBytes: Double?
    /// Bytes of fresh pages the tensor storage mapped in a measured repetition, the median over
    /// them (the pool's blocks and the kernels' scratch; 0 when every block was reused), or nil
    /// (PyTorch).
    var freshBytesPerRun: Double?
    /// The kernel of each distinct convolution in the last repetition, with its call count
    /// and the wall seconds of its calls.
    var kernels: [(entry: ConvolutionKernelLog.Entry, count: Int, seconds: Double)] = []
}

/// The seconds of consecutive parts of one run on the bench clock: each `end(part)` ends the
/// part that began at the previous `end` (or at `init`); a part that ends several times (the
/// stages of a staged head) adds up.
struct PartTimer {
    private let start: Double
    private var last: Double
    private var parts: [String: Double] = [:]
    /// The parts in order, each with the most tensor storage alive so far when it ended
    /// (``TensorMemory/livePeakBytes``): the part in which that figure reached its last value
    /// is where the pass peaked.
    private(set) var peaksSoFar: [(part: String, bytes: Int)] = []

    init() {
        start = clockNow()
        last = start
    }

    /// Ends the part named `part` now.
    mutating func end(_ part: String) {
        let now = clockNow()
        parts[part, default: 0] += now - last
        last = now
        peaksSoFar.append((part, TensorMemory.livePeakBytes))
    }

    /// The part during which the tensors alive peaked (since the last
    /// ``TensorMemory/resetLivePeak()``), or nil before any part ended.
    var peakPart: String? { peaksSoFar.last.flatMap { final in peaksSoFar.first { $0.bytes == final.bytes }?.part } }

    /// Every part's seconds, and `total` from `init` to the last `end`.
    var seconds: [String: Double] { parts.merging(["total": last - start]) { a, _ in a } }
}

enum DetectorBench {
    static func run(_ options: BenchOptions) {
        let registry: Registry
        do { registry = try Registry.standard() } catch {
            print("  (detector section skipped: cannot build the registry: \(error))")
            return
        }
        let size = options.imageSize, reps = options.repetitions
        let configs =
            options.detectorConfigs.isEmpty
            ? registry.names(.encoder).map { "retinanet(encoder=\($0), size=\(size))" }
            : options.detectorConfigs
        print(
            "== detector: forward (batch 1, eval mode, no graph) and training step (batch 2 with boxes, train mode\(options.freezeBatchNorm ? " with frozen batch norm" : ", batch norm on batch statistics"): forward, loss, backward (a RetinaNet's head stage by stage, as the trainer), gradient-norm clipping, Adam), \(Compute.threads) threads"
        )
        print(
            "   times are medians of \(reps) runs after one warm-up (\(benchClock == .wall ? "wall" : "cpu") clock); peak = resident-set high-water mark of the phase (VmHWM after reset)"
        )
        print("   load average now \(loadAverage())")
        print(
            "   weight transforms kept between passes: up to \(TensorMemory.derivedCacheLimitBytes >> 20) MiB (OPACITY_DERIVED_CACHE_MB);"
                + " compute threads look for the next region \(ComputePool.spinMicroseconds) us (OPACITY_SPIN_US);"
                + " fresh MiB = pages newly mapped in a run (median)")
        let mode = ConvolutionKernelChoice.effectiveMode
        var convolutions = "   convolution kernels: \(mode.rawValue) (OPACITY_CONV=\(ConvolutionKernelChoice.mode.rawValue)"
        if ConvolutionKernelChoice.deterministic { convolutions += ", OPACITY_DETERMINISTIC=1" }
        convolutions += ")"
        if mode != .cpu {
            convolutions += "; oneDNN weight reorders cached per weight version: \(ConvolutionKernelChoice.oneDNNWeightCache.rawValue)"
        }
        if mode == .auto {
            convolutions +=
                "; auto keeps oneDNN when \(fmt(ConvolutionKernelChoice.margin * 100, 0))% faster (best of \(ConvolutionKernelChoice.timedRounds) timed runs)"
            if let file = ConvolutionKernelChoice.choicesFile { convolutions += ", choices file \(file)" }
        }
        print(convolutions)
        ConvolutionKernelLog.clock = { clockNow() }
        // A config that cannot be built is a usage error: say so before measuring anything.
        let invalid = configs.compactMap { text -> String? in
            do { _ = try registry.checkDetector(text) } catch { return "opacity-bench: --config \(text): \(error)" }
            return nil
        }
        if !invalid.isEmpty {
            FileHandle.standardError.write(Data((invalid.joined(separator: "\n") + "\n").utf8))
            exit(64)
        }
        let python = pythonForDetector(options)
        var summary: [(String, PhaseFigures, PhaseFigures, TorchDetectorFigures?)] = []
        var failed = false
        for text in configs {
            // each detector starts as in a fresh process (as the PyTorch script does): the pool
            // lets go of the blocks cached for the previous one
            let poolLimit = TensorMemory.poolLimitBytes
            TensorMemory.poolLimitBytes = 0
            TensorMemory.poolLimitBytes = poolLimit
            let resolved: ResolvedConfig
            let detector: Detector
            do {
                resolved = try registry.checkDetector(text)
                detector = try Initializer.withSeed(1) { try registry.makeDetector(text) }
            } catch {
                print("  \(text): cannot build: \(error)")
                failed = true
                continue
            }
            let s = detector.inputSize
            let encoderName = resolved.component("encoder").name
            print("  \(detector.config) (\(detector.parameterCount) parameters, \(s)x\(s))")
            print(
                "    gradient checkpointing in the training step: \(checkpointingNote(detector.gradientCheckpointing))"
                    + (python == nil ? "" : "; the PyTorch reference keeps every activation")
                    + (detector.gradientCheckpointing == .none
                        ? "" : "; the recomputation's time is in the backward row, its convolutions in the forward pass of the by-pass table"))
            ConvolutionKernelChoice.resetReport()
            let fwd = forward(detector, size: s, repetitions: reps)
            let train = trainingStep(detector, size: s, repetitions: reps, freezeBatchNorm: options.freezeBatchNorm)
            var torch: TorchDetectorFigures?
            if let python {
                torch = TorchDetectorFigures.run(
                    python: python, resolved: resolved, size: s, repetitions: reps, clock: options.clock, freezeBatchNorm: options.freezeBatchNorm)
            }
            printTable(fwd: fwd, train: train, torch: torch)
            printKernels(fwd: fwd, train: train)
            printChoices()
            let mode = detector.gradientCheckpointing
            summary.append((mode == .none ? encoderName : "\(encoderName) (grad_checkpointing=\(mode.rawValue))", fwd, train, torch))
        }
        guard !summary.isEmpty else {
            if failed { exit(1) }
            return
        }
        print("  summary, ours / PyTorch (forward batch 1 | training step batch 2 | peak memory forward, training):")
        for (name, f, t, torch) in summary {
            guard let torch else {
                let peaks = [f.peakBytes, t.peakBytes].map { $0.map { fmt($0 / 1_048_576, 0) } ?? "?" }
                print(
                    "    \(pad(name, 20)) forward \(fmt(f.seconds["total"]! * 1e3, 1)) ms, step \(fmt(t.seconds["total"]! * 1e3, 1)) ms, peak memory \(peaks[0]), \(peaks[1]) MiB (no PyTorch figures)"
                )
                continue
            }
            var line = "    \(pad(name, 20)) forward \(ratio(f.seconds["total"], torch.forward.seconds["total"]))"
            line += "  step \(ratio(t.seconds["total"], torch.train.seconds["total"]))"
            line += "  memory \(ratio(f.peakBytes, torch.forward.peakBytes)), \(ratio(t.peakBytes, torch.train.peakBytes))"
            print(line)
        }
        print("")
        if failed { exit(1) }  // a detector that checked but did not build
    }

    /// What `grad_checkpointing` recomputes, for the report.
    static func checkpointingNote(_ mode: GradientCheckpointing) -> String {
        checkpointingModeNote(mode) + (Autograd.sparseActivations ? "; ReLU outputs and frozen norms' inputs kept without their zeros" : "")
    }

    private static func checkpointingModeNote(_ mode: GradientCheckpointing) -> String {
        switch mode {
        case .none:
            !Autograd.selectiveRecomputation
                ? "none (grad_checkpointing=none: every activation kept for backward; OPACITY_SELECTIVE_RECOMPUTATION=0: batch norm outputs kept too)"
                : Autograd.convolutionRecomputation
                    ? "none (grad_checkpointing=none: every activation kept for backward, but a batch norm's output recomputed for the convolution or product after it, a channel-doubling 1x1 convolution's output for the norm after it, a depthwise convolution's for the pointwise one after it, an FPN merge for the convolution after it)"
                    : "none (grad_checkpointing=none: every activation kept for backward, a batch norm's output recomputed for the convolution or product after it; OPACITY_SELECTIVE_RECOMPUTATION=1: 1x1 and depthwise convolution outputs and FPN merges kept)"
        case .head: "head (grad_checkpointing=head: each level of the classification subnet recomputed in backward)"
        case .encoder: "encoder (grad_checkpointing=encoder: the encoder recomputed in backward, block by block where it has blocks)"
        case .all: "all (grad_checkpointing=all: encoder, neck and head recomputed in backward)"
        }
    }

    /// The interpreter for the PyTorch reference, or nil (with the reason printed).
    static func pythonForDetector(_ options: BenchOptions) -> String? {
        switch options.pytorch {
        case .off: return nil
        case .file:
            print("  (--pytorch-json holds the resnet50 section's figures; the detector section runs the script itself: pass --python P)")
            return nil
        case .python(let p): return p
        case .auto:
            guard let p = PyTorchFigures.findPython() else {
                print("  (PyTorch comparison skipped: no Python with torch found; set OPACITY_PYTHON or pass --python)")
                return nil
            }
            return p
        }
    }

    /// Deterministic input images `[N, 1, S, S]` in `[0, 1]`.
    static func images(batch: Int, size: Int) -> Tensor {
        var rng = RandomGenerator(seed: 7)
        return Tensor.randomUniform([batch, 1, size, size], 0, 1, using: &rng)
    }

    /// Two lung-opacity boxes on the first image, none on the second (a "Normal" image).
    static func targets(size: Int) -> [DetectionTarget] {
        let s = Float(size)
        return [
            DetectionTarget(
                boxes: [
                    BoundingBox(x: 0.15 * s, y: 0.25 * s, width: 0.2 * s, height: 0.3 * s),
                    BoundingBox(x: 0.6 * s, y: 0.3 * s, width: 0.25 * s, height: 0.35 * s),
                ],
                imageClass: .lungOpacity),
            DetectionTarget(boxes: [], imageClass: .normal),
        ]
    }

    /// Forward at batch 1 in evaluation mode with no graph: encoder, neck, head, post-processing.
    static func forward(_ detector: Detector, size: Int, repetitions: Int) -> PhaseFigures {
        detector.eval()
        let x = images(batch: 1, size: size)
        var start: Double?
        var liveBefore = 0
        var peakPart: String?
        let tailsBefore = TensorStorage.tailBytesReleased
        let figures = measure(repetitions: repetitions) { last in
            if MemoryProbe.enabled && start == nil { start = currentResident() }
            if MemoryProbe.enabled && last {
                liveBefore = TensorMemory.liveBytes
                TensorMemory.resetLivePeak()
            }
            return Autograd.inference {
                var parts = PartTimer()
                let out = network(detector, x, &parts)
                let found = detector.postprocessor.detections(
                    out, anchors: detector.anchors(height: size, width: size),
                    imageSize: (size, size))
                parts.end("post")
                precondition(found.count == 1)
                if last { peakPart = parts.peakPart }
                return parts.seconds
            }
        }
        if MemoryProbe.enabled {
            func mib(_ b: Double?) -> String { b.map { fmt($0 / 1_048_576, 1) } ?? "?" }
            let peak = Double(TensorMemory.livePeakBytes)
            print(
                "    forward memory (OPACITY_MEMORY_REPORT; MiB): resident \(mib(start)) at the phase's start (after the trim, before the warm-up), \(mib(figures.peakBytes)) at its peak (every pass); the last pass: tensor storage alive \(mib(Double(liveBefore))) before it, at most \(mib(peak)) during it (a working set of \(mib(peak - Double(liveBefore))), at its peak in the \(peakPart ?? "?")); after it the pool caches \(mib(Double(TensorMemory.pooledBytes))) and \(mib(Double(TensorMemory.derivedRecentBytes))) of transforms are kept; the pool gave back \(mib(Double(TensorStorage.tailBytesReleased - tailsBefore) / Double(repetitions + 1))) of tail pages per pass (OPACITY_POOL_TAIL_AGE)"
            )
        }
        return figures
    }

    /// One training step at batch 2 in training mode: forward with graph, loss, backward,
    /// gradient-norm clipping and Adam; batch norm on batch statistics, or frozen (fixed
    /// statistics, trained scale and shift, the trainer's default) with `freezeBatchNorm`.
    /// With `OPACITY_MEMORY_REPORT=1` the last repetition is also measured by a
    /// ``MemoryProbe``, whose report follows.
    static func trainingStep(_ detector: Detector, size: Int, repetitions: Int, freezeBatchNorm: Bool = false) -> PhaseFigures {
        detector.train()
        detector.freezeBatchNorm(freezeBatchNorm)
        defer {
            detector.freezeBatchNorm(false)
            detector.eval()
        }
        let x = images(batch: 2, size: size)
        let targets = targets(size: size)
        let optimizer = Adam(detector.namedParameters().filter { $0.1.requiresGrad }, learningRate: 1e-5)
        var probe: MemoryProbe?
        let figures = measure(repetitions: repetitions) { last in
            probe = MemoryProbe.enabled && last ? MemoryProbe() : nil
            var parts = PartTimer()
            optimizer.zeroGrad()
            // As the trainer: forward, loss and backward in one call, the head stage by stage
            // where it has stages (each stage's parts end in turn; the times add up per part).
            var losses = 0, previous = ""
            let step = {
                _ = detector.trainingLosses(
                    x, targets: targets,
                    partDone: { part in
                        parts.end(part)
                        if let probe {
                            if part == "loss" {
                                losses += 1
                                probe.mark(losses == 1 ? "forward and loss" : "head stage \(losses) and loss")
                            } else if part == "backward" {
                                probe.mark(previous == "backward" ? "backward of the rest" : losses == 1 ? "backward" : "backward of stage \(losses)")
                            }
                        }
                        previous = part
                    })
            }
            if let probe { probe.saved = Autograd.measuringSavedTensors(step).saved } else { step() }
            clipGradientNorm(optimizer.parameters.map(\.1), maxNorm: 0.05)
            probe?.mark("clipping")
            optimizer.step()
            optimizer.zeroGrad()  // as the trainer: spent gradients stay out of the next forward pass
            probe?.mark("optimizer")
            parts.end("optimizer")
            return parts.seconds
        }
        probe?.report(parameters: optimizer.parameters.map(\.1), optimizerState: optimizer.stateDict(), checkpointing: detector.gradientCheckpointing)
        return figures
    }

    /// Encoder, neck and head on `x` (``Detector/forward(_:partDone:)``), each ending its part
    /// on `parts`: the head's outputs.
    static func network(_ detector: Detector, _ x: Tensor, _ parts: inout PartTimer) -> HeadOutput {
        detector.forward(x) { parts.end($0) }
    }

    /// Runs `run(last)` once as a warm-up and `repetitions` times measured, the last of them
    /// (`last` true) under the convolution kernel log, after resetting the resident-set peak:
    /// the median seconds of each part `run` returns, the peak of the phase and the kernels
    /// of the last run.
    static func measure(repetitions: Int, _ run: (_ last: Bool) -> [String: Double]) -> PhaseFigures {
        var times: [String: [Double]] = [:]
        var kernels: [(entry: ConvolutionKernelLog.Entry, count: Int, seconds: Double)] = []
        resetPeak()
        var fresh: [Double] = []
        for rep in 0...repetitions {
            let mapped = TensorStorage.mappedBytes
            defer { if rep > 0 { fresh.append(Double(TensorStorage.mappedBytes - mapped)) } }
            let t: [String: Double]
            if rep == repetitions { (t, kernels) = ConvolutionKernelLog.record { run(true) } } else { t = run(false) }
            if rep > 0 { for (k, v) in t { times[k, default: []].append(v) } }
        }
        return PhaseFigures(
            seconds: times.mapValues { Timing(seconds: $0).median }, peakBytes: peakResident(),
            freshBytesPerRun: fresh.isEmpty ? nil : Timing(seconds: fresh).median, kernels: kernels)
    }

    /// One line per distinct convolution geometry: the kernel of the forward pass at batch 1,
    /// and of the training step's forward pass, input gradient and weight gradient at batch 2,
    /// with the milliseconds of each (all calls of the last repetition); then the training
    /// step's convolution time summed by pass and kernel.
    static func printKernels(fwd: PhaseFigures, train: PhaseFigures) {
        struct Row {
            var kernels: [String: String] = [:]
            var ms: [String: Double] = [:]
            var uses = 0
        }
        var rows: [String: Row] = [:]
        var order: [String] = []
        func add(_ list: [(entry: ConvolutionKernelLog.Entry, count: Int, seconds: Double)], _ column: (String) -> String) {
            for (e, count, seconds) in list {
                let key = e.geometry
                if rows[key] == nil {
                    rows[key] = Row()
                    order.append(key)
                }
                rows[key]!.kernels[column(e.pass)] = e.kernel
                rows[key]!.ms[column(e.pass)] = seconds * 1e3
                if column(e.pass) == "fwd1" { rows[key]!.uses += count }
            }
        }
        add(fwd.kernels) { _ in "fwd1" }
        add(train.kernels) { $0 == "forward" ? "fwd2" : $0 == "input gradient" ? "dx" : "dw" }
        guard !order.isEmpty else { return }
        print("    kernels (forward batch 1 | training step batch 2: forward, input gradient, weight gradient; ms of all calls):")
        for key in order {
            let r = rows[key]!
            let k = { (c: String) in r.kernels[c].map { "\($0) \(fmt(r.ms[c] ?? 0, 1))" } ?? "-" }
            let uses = r.uses > 0 ? " (x\(r.uses))" : ""
            print("      \(pad(key + uses, 40)) \(k("fwd1")) | \(k("fwd2")), \(k("dx")), \(k("dw"))")
        }
        var byKind: [String: (ms: Double, calls: Int)] = [:]
        for (e, count, seconds) in train.kernels {
            let kind = "\(e.pass): \(e.kernel)"
            byKind[kind] = ((byKind[kind]?.ms ?? 0) + seconds * 1e3, (byKind[kind]?.calls ?? 0) + count)
        }
        let total = byKind.values.reduce(0) { $0 + $1.ms }
        print("    training step convolutions by pass and kernel (\(fmt(total, 1)) ms in all):")
        for (kind, v) in byKind.sorted(by: { $0.value.ms > $1.value.ms }) {
            print("      \(pad(kind, 44)) \(fmt(v.ms, 1, width: 8)) ms  \(v.calls) calls")
        }
    }

    /// In `auto` mode, the measured choice of each shape and direction this detector used:
    /// both candidates' best times (wall clock, at first use) and the kernel kept.
    static func printChoices() {
        let measured = ConvolutionKernelChoice.report().filter { !$0.timings.isEmpty }
        guard !measured.isEmpty else { return }
        print("    auto choices (best timed run at first use, wall clock ms: cpu / dnnl, kept; oneDNN needs to be faster by the margin):")
        for r in measured {
            let cpu = r.timings["cpu"].map { fmt($0 * 1e3, 2) } ?? "-"
            let dnnl = r.timings["dnnl"].map { fmt($0 * 1e3, 2) } ?? "-"
            print("      \(pad(r.direction, 16)) \(pad(r.shape, 44)) \(cpu) / \(dnnl) -> \(r.kernel)")
        }
    }

    static func printTable(fwd: PhaseFigures, train: PhaseFigures, torch: TorchDetectorFigures?) {
        func rows(_ title: String, _ parts: [String], _ ours: PhaseFigures, _ theirs: PhaseFigures?) {
            print("    \(title)")
            print("      \(pad("part", 10)) \(fmt0("ours ms")) \(fmt0("torch ms")) \(fmt0("ours/torch"))")
            for p in parts {
                guard let o = ours.seconds[p] else { continue }
                let t = theirs?.seconds[p]
                print("      \(pad(p, 10)) \(fmt(o * 1e3, 1, width: 10)) \(t.map { fmt($0 * 1e3, 1, width: 10) } ?? fmt0("-")) \(t.map { fmt(o / $0, 2, width: 10) } ?? fmt0("-"))")
            }
            let om = ours.peakBytes.map { fmt($0 / 1048576, 0) } ?? "?"
            let tm = theirs?.peakBytes.map { fmt($0 / 1048576, 0) } ?? "-"
            print("      \(pad("peak MiB", 10)) \(fmt0(om)) \(fmt0(tm)) \(fmt0(ratio(ours.peakBytes, theirs?.peakBytes)))")
            if let f = ours.freshBytesPerRun { print("      \(pad("fresh MiB", 10)) \(fmt(f / 1048576, 1, width: 10))  (median of the runs)") }
        }
        rows("forward, batch 1", forwardParts, fwd, torch?.forward)
        rows("training step, batch 2 (encoder/neck/head = forward with graph)", trainParts, train, torch?.train)
    }

    private static func fmt0(_ s: String) -> String { String(repeating: " ", count: max(0, 10 - s.count)) + s }

    static func ratio(_ a: Double?, _ b: Double?) -> String {
        guard let a, let b, b > 0 else { return "-" }
        return fmt(a / b, 2) + "x"
    }
}

// MARK: - Peak resident memory

/// Resets the process's resident-set high-water mark (Linux: `5` to /proc/self/clear_refs),
/// after handing back to the system what earlier phases left cached: the tensor pool's free
/// blocks and the C heap's free pages (`malloc_trim`). The PyTorch reference runs each detector
/// in a process of its own; this section runs every config in one, so without the trim a
/// phase's peak would count the blocks an earlier detector's training step freed.
func resetPeak() {
    let limit = TensorMemory.poolLimitBytes
    TensorMemory.poolLimitBytes = 0
    TensorMemory.poolLimitBytes = limit
    // The pool keeps freed blocks up to the most it ever had in use. A fresh process, as
    // PyTorch's runs, starts from none. Measured without this reset (ab9baff dropped it by
    // mistake): after seresnext50's training step (2.6 GiB) xception's forward pass at 512 px
    // kept 194 MiB of blocks cached instead of 85, and peaked at 421 MiB against 338 alone.
    TensorStorage.resetPoolHighWaterMark()
    #if canImport(Glibc)
        // glibc's `malloc_trim` (malloc.h, not in the Glibc module), looked up at run time.
        if let sym = dlsym(dlopen(nil, RTLD_NOW), "malloc_trim") {
            _ = unsafeBitCast(sym, to: (@convention(c) (Int) -> Int32).self)(0)
        }
    #endif
    try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
}

/// The resident-set high-water mark (`VmHWM`) in bytes, or nil where /proc is missing.
func peakResident() -> Double? {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
        let kb = Double(line.split(separator: " ").dropFirst().first ?? "")
    else { return nil }
    return kb * 1024
}

// MARK: - PyTorch reference

/// PyTorch's figures for one detector, from scripts/bench_detector_pytorch.py.
struct TorchDetectorFigures {
    var forward = PhaseFigures()
    var train = PhaseFigures()

    private struct File: Decodable {
        struct Phase: Decodable {
            var seconds: [String: Double]
            var peak_bytes: Double?
        }
        var forward: Phase
        var train: Phase
    }

    static var script: URL { PyTorchFigures.packageRoot.appendingPathComponent("scripts/bench_detector_pytorch.py") }

    /// Runs the script for the detector shape of `resolved`; nil (reason printed) when it fails
    /// or the encoder has no reference there (exit status 3).
    static func run(python: String, resolved: ResolvedConfig, size: Int, repetitions: Int, clock: BenchClock, freezeBatchNorm: Bool)
        -> TorchDetectorFigures?
    {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-bench-detector-\(getpid()).json")
        defer { try? FileManager.default.removeItem(at: out) }
        let levels = resolved.range("levels")
        let global = resolved.bool("global")
        let args =
            [
                script.path, "--encoder", resolved.component("encoder").name, "--size", "\(size)",
                "--levels", "\(levels.lowerBound)-\(levels.upperBound)",
                "--neck-channels", "\(resolved.component("neck").int("channels"))",
                "--head-channels", "\(resolved.component("head").int("channels"))",
                "--dropout", "\(resolved.double("dropout"))", "--global", global ? "1" : "0",
                "--global-dropout", "\(resolved.double("global_dropout"))",
                "--threads", "\(Compute.threads)", "--repeat", "\(repetitions)", "--clock", clock.rawValue,
                "--out", out.path,
            ] + (freezeBatchNorm ? ["--freeze-bn"] : [])
        do {
            let status = try PyTorchFigures.runProcess(python, args, quiet: false)
            Thread.sleep(forTimeInterval: 1)
            guard status == 0 else {
                print("    (PyTorch comparison skipped: the script exited with status \(status))")
                return nil
            }
            let f = try JSONDecoder().decode(File.self, from: Data(contentsOf: out))
            return TorchDetectorFigures(
                forward: PhaseFigures(seconds: f.forward.seconds, peakBytes: f.forward.peak_bytes),
                train: PhaseFigures(seconds: f.train.seconds, peakBytes: f.train.peak_bytes))
        } catch {
            print("    (PyTorch comparison skipped: \(error))")
            return nil
        }
    }
}
