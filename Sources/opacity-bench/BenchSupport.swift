import Foundation
import Opacity

// MARK: - Options

/// The settings of one run, from the command line (Commands.swift); sections read them.
struct BenchOptions: Sendable {
    var threads: Int?
    /// Timed repetitions per measurement (after warm-up).
    var repetitions = 5
    /// Input side for the convolution and network sections.
    var imageSize = 512
    /// Batch sizes for the network section.
    var batches = [1, 2]
    /// Only convolutions whose label contains this text (conv section).
    var convFilter: String?
    /// Skip the backward timings of the conv section.
    var convBackward = true
    /// Where PyTorch's reference figures come from.
    var pytorch: PyTorchSource = .auto
    /// Detector config strings for the detector section (default: every encoder of the registry).
    var detectorConfigs: [String] = []
    /// Whether the detector section's training step freezes batch norm (`--freeze-bn`).
    var freezeBatchNorm = false
    var clock = BenchClock.wall
    /// Process counts of the scaling section (the allreduce section uses the largest).
    var ranks = [1, 2]
    /// Images per step over all ranks in the scaling section (default: the most ranks).
    var globalBatch: Int?
    /// Gradient bucket size of the scaling section.
    var bucketMiB: Double = 25
    /// Largest buffer of the allreduce section.
    var maxMiB = 256
    /// The detector of the scaling section.
    var scalingConfig = "retinanet(encoder=resnet50, size=512)"
    /// Where the scaling section also writes `scaling.csv` and `scaling.png` (none: print only).
    var scalingOut: String?

    enum PyTorchSource: Sendable, Equatable {
        /// Run scripts/bench_pytorch.py if a Python with torch is found.
        case auto
        /// Read figures written earlier by scripts/bench_pytorch.py.
        case file(String)
        /// Use this Python interpreter to run the script.
        case python(String)
        case off
    }
}

// MARK: - Shared state

/// Figures that later sections reuse, and the report's formatting.
struct BenchContext {
    let options: BenchOptions
    /// The sgemm rate at 2048 (GFLOP/s), once the blas section has run.
    var sgemmGFLOPS: Double?
    /// PyTorch's figures, loaded once.
    var pytorch: PyTorchFigures??

    init(options: BenchOptions) { self.options = options }

    func printHeader() {
        let host = ProcessInfo.processInfo
        print("opacity-bench")
        print("  cpu: \(cpuModel()), \(host.activeProcessorCount) cores; threads: \(Compute.threads); clock: \(options.clock.rawValue); load average: \(loadAverage())")
        let k = BLAS.kernels
        print(
            "  OpenBLAS kernels: \(k.active) (OpenBLAS chose \(k.initial); \(k.reason); largest relative error of its GEMM against a plain reference: \(String(format: "%.1e", k.selfCheckError)))"
        )
        print("")
    }

    /// The sgemm figure, measuring it if the blas section did not run.
    mutating func sgemmFigure() -> Double {
        if let s = sgemmGFLOPS { return s }
        let s = measureSgemm(n: 2048, repetitions: options.repetitions).gflops
        sgemmGFLOPS = s
        return s
    }

    /// PyTorch's figures for the network section, if they can be had.
    mutating func pytorchFigures() -> PyTorchFigures? {
        if let p = pytorch { return p }
        let p = PyTorchFigures.obtain(options: options)
        pytorch = .some(p)
        return p
    }
}

// MARK: - Timing

/// Times of repeated runs of one piece of work.
struct Timing {
    var seconds: [Double]
    var median: Double {
        let s = seconds.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : 0.5 * (s[s.count / 2 - 1] + s[s.count / 2])
    }
    var best: Double { seconds.min() ?? .nan }
}

/// How measurements read time.
enum BenchClock: String, Sendable, CaseIterable {
    /// Elapsed time (the default).
    case wall
    /// Process CPU time (user + system) divided by the thread count: an estimate of the
    /// elapsed time on an otherwise idle machine, for shared machines where other jobs
    /// take turns on the cores. Counts time our threads spend spinning as work.
    case cpu
}

nonisolated(unsafe) var benchClock = BenchClock.wall

/// Seconds on the selected clock.
func clockNow() -> Double {
    switch benchClock {
    case .wall:
        return Double(DispatchTime.now().uptimeNanoseconds) * 1e-9
    case .cpu:
        var u = rusage()
        #if os(Linux)
            getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u)
        #else
            getrusage(RUSAGE_SELF, &u)
        #endif
        let cpu = Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6
        return cpu / Double(Compute.threads)
    }
}

/// Runs `body` `warmup` times untimed, then `repetitions` times timed.
func measure(repetitions: Int, warmup: Int = 1, _ body: () -> Void) -> Timing {
    for _ in 0..<warmup { body() }
    var t: [Double] = []
    for _ in 0..<repetitions {
        let start = clockNow()
        body()
        t.append(clockNow() - start)
    }
    return Timing(seconds: t)
}

/// The 1-minute load average (other jobs on the machine distort wall-clock timings).
func loadAverage() -> String {
    guard let s = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return "unknown" }
    return String(s.split(separator: " ").first ?? "unknown")
}

func cpuModel() -> String {
    guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
        let line = info.split(separator: "\n").first(where: { $0.hasPrefix("model name") }),
        let colon = line.firstIndex(of: ":")
    else { return "unknown CPU" }
    return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
}

/// `value` formatted with `digits` decimals, right-aligned in `width` columns.
func fmt(_ value: Double, _ digits: Int = 1, width: Int = 0) -> String {
    let s = String(format: "%.\(digits)f", value)
    return s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
}

/// `s` padded on the right to `width` columns.
func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}

/// A section's failure, printed as `failed: <description>`.
struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
