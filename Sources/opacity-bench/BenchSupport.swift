import Foundation
import Opacity

// MARK: - Options

/// Command-line options shared by all sections.
struct BenchOptions: Sendable {
    var sections: [BenchSection] = BenchSection.all.filter(\.runsByDefault)
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
    /// The network section runs batch norm + ReLU fused (`bn(x, relu: true)`).
    var fuseBatchNormReLU = true
    /// Where PyTorch's reference figures come from.
    var pytorch: PyTorchSource = .auto
    /// Detector config strings for the detector section (default: every encoder of the registry).
    var detectorConfigs: [String] = []
    var clock = BenchClock.wall
    var help = false
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

    enum PyTorchSource: Sendable, Equatable {
        /// Run scripts/bench_pytorch.py if a Python with torch is found.
        case auto
        /// Read figures written earlier by scripts/bench_pytorch.py.
        case file(String)
        /// Use this Python interpreter to run the script.
        case python(String)
        case off
    }

    struct UsageError: Error, CustomStringConvertible {
        let description: String
    }

    static var usage: String {
        let names = BenchSection.all.map { "  \($0.name.padding(toLength: 10, withPad: " ", startingAt: 0)) \($0.summary)" }
        return """
            usage: opacity-bench [section ...] [options]

            sections (default: all):
            \(names.joined(separator: "\n"))

            options:
              --threads N         compute threads for our kernels, OpenBLAS and PyTorch (default: all cores
                                  or OPACITY_THREADS)
              --repeat N          timed repetitions per measurement, after warm-up (default 5)
              --size S            image side for conv and network sections (default 512)
              --batches 1,2       batch sizes for the network section (default 1,2)
              --only TEXT         conv section: only convolutions whose label contains TEXT (e.g. 7x7)
              --forward-only      conv section: skip the forward+backward timings
              --config STRING     detector section: a detector config (repeatable; default every encoder
                                  as retinanet(encoder=NAME, size=S))
              --unfused           resnet50 section: batch norm then a separate ReLU (default: fused)
              --pytorch-json F    read PyTorch figures from F (written by scripts/bench_pytorch.py)
              --python P          run scripts/bench_pytorch.py with interpreter P
              --no-pytorch        skip the PyTorch comparison
              --ranks 1,2         scaling: process counts, one mpirun job each (allreduce: the largest)
              --global-batch B    scaling: images per step over all ranks (default: the most ranks)
              --bucket-mib M      scaling: gradient bucket size (default 25)
              --max-mib M         allreduce: largest buffer (default 256)
              --scaling-config C  scaling: the detector (default retinanet(encoder=resnet50, size=512))
              --clock wall|cpu    wall: elapsed time (default); cpu: process CPU time / threads, an
                                  estimate for an idle machine when other jobs share the cores
            By default the PyTorch comparison runs scripts/bench_pytorch.py with the first of
            $OPACITY_PYTHON, $VIRTUAL_ENV/bin/python, <package>/.venv, <package>/../venv and python3
            that can import torch. OPACITY_BLAS_CORE=keep|SkylakeX|Haswell|... forces OpenBLAS kernels.
            """
    }

    static func parse(_ args: [String]) throws -> BenchOptions {
        var o = BenchOptions()
        var named: [BenchSection] = []
        var i = 0
        func value() throws -> String {
            i += 1
            guard i < args.count else { throw UsageError(description: "\(args[i - 1]) needs a value") }
            return args[i]
        }
        func positiveInt(_ s: String, _ flag: String) throws -> Int {
            guard let v = Int(s), v > 0 else { throw UsageError(description: "\(flag) expects a positive integer, got '\(s)'") }
            return v
        }
        while i < args.count {
            let a = args[i]
            switch a {
            case "-h", "--help": o.help = true
            case "--threads": o.threads = try positiveInt(try value(), a)
            case "--repeat": o.repetitions = try positiveInt(try value(), a)
            case "--size": o.imageSize = try positiveInt(try value(), a)
            case "--batches":
                o.batches = try value().split(separator: ",").map { try positiveInt(String($0), a) }
            case "--only": o.convFilter = try value()
            case "--ranks": o.ranks = try value().split(separator: ",").map { try positiveInt(String($0), a) }
            case "--global-batch": o.globalBatch = try positiveInt(try value(), a)
            case "--max-mib": o.maxMiB = try positiveInt(try value(), a)
            case "--scaling-config": o.scalingConfig = try value()
            case "--bucket-mib":
                let v = try value()
                guard let m = Double(v), m > 0 else { throw UsageError(description: "--bucket-mib expects a positive number, got '\(v)'") }
                o.bucketMiB = m
            case "--forward-only": o.convBackward = false
            case "--unfused": o.fuseBatchNormReLU = false
            case "--config": o.detectorConfigs.append(try value())
            case "--pytorch-json": o.pytorch = .file(try value())
            case "--python": o.pytorch = .python(try value())
            case "--no-pytorch": o.pytorch = .off
            case "--clock":
                let v = try value()
                guard let c = BenchClock(rawValue: v) else { throw UsageError(description: "--clock expects wall or cpu, got '\(v)'") }
                o.clock = c
            case "all": named += BenchSection.all
            default:
                if let s = BenchSection.named(a) {
                    named.append(s)
                } else {
                    let known = BenchSection.all.map(\.name).joined(separator: ", ")
                    throw UsageError(description: "unknown section or option '\(a)' (sections: \(known))")
                }
            }
            i += 1
        }
        if !named.isEmpty { o.sections = named }
        return o
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
        print("  OpenBLAS kernels: \(k.active) (OpenBLAS chose \(k.initial); \(k.reason); self-check error \(String(format: "%.1e", k.selfCheckError)))")
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
enum BenchClock: String, Sendable {
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
