import Foundation
import Opacity
import OpacityDistributed

// Data-parallel sections. Started plainly, a section launches itself under `mpirun` (one
// job per process count) and reports what rank 0 measured; started by mpirun or srun it is
// one rank of that job.

extension BenchSection {
    /// MPI allreduce time and bandwidth for 1 to `--max-mib` MiB of floats.
    static let allreduce = BenchSection(
        name: "allreduce", summary: "MPI allreduce of 1-256 MiB of gradients on this machine (rank-ordered sum vs MPI_Allreduce), 2 ranks",
        runsByDefault: false
    ) { context in
        if LaunchEnvironment.detect() != nil {
            allreduceRank(context.options)
            return
        }
        let np = context.options.ranks.last ?? 2
        print("== allreduce: \(np) ranks on this machine (mpirun, shared memory and loopback), 1 thread each")
        let out = launchUnderMPI(np: np, threads: 1, section: "allreduce", options: context.options)
        print(out.text, terminator: "")
        if out.status != 0 { print("  failed: mpirun exited with \(out.status)") }
        print("")
    }

    /// One training step of a ResNet-50 RetinaNet at 512 on 1 rank x all threads against
    /// P ranks x (threads / P): step time, time waiting on communication, efficiency.
    static let scaling = BenchSection(
        name: "scaling", summary: "training step of a ResNet-50 RetinaNet at 512: 1 rank x 2 threads vs 2 ranks x 1 thread, communication wait, efficiency",
        runsByDefault: false
    ) { context in
        if LaunchEnvironment.detect() != nil {
            scalingRank(context.options)
            return
        }
        let o = context.options
        let cores = o.threads ?? ProcessInfo.processInfo.activeProcessorCount
        let globalBatch = o.globalBatch ?? (o.ranks.max() ?? 2)
        print("== scaling: \(o.scalingConfig) training step (frozen batch norm, Adam, clip), global batch \(globalBatch), \(cores) cores in all")
        print("   each process count is one mpirun job; threads per rank = \(cores) / ranks; gradients in \(fmt(o.bucketMiB, 0)) MiB buckets")
        print("   step = forward + backward + gradient allreduce + clipped Adam (median of \(o.repetitions) after one warm-up); wait = time blocked on")
        print("   communication after backward; efficiency = 1-rank step time / P-rank step time (same cores, same global batch);")
        print("   cpu = process CPU seconds per step summed over the ranks (a thread spinning in MPI counts), cpu eff. = 1-rank cpu / P-rank")
        print("   cpu: unlike the step time, hardly affected by other jobs on the machine; load = 1-minute load average after the job")
        print("   ranks  threads/rank  images/rank  step (s)  wait (s)  wait %  images/s  efficiency   cpu (s)  cpu eff.   load")
        var base: Double?, cpuBase: Double?
        var rows: [ScalingRow] = []
        for np in o.ranks {
            guard globalBatch >= np else {
                print("   \(np): skipped (global batch \(globalBatch) < \(np) ranks; use --global-batch)")
                continue
            }
            let threads = max(1, cores / np)
            let out = launchUnderMPI(np: np, threads: threads, section: "scaling", options: o, extra: ["--global-batch", "\(globalBatch)"])
            guard out.status == 0, let line = out.text.split(separator: "\n").first(where: { $0.hasPrefix("SCALING ") }) else {
                print("   \(np): failed (mpirun exited with \(out.status))")
                print(out.text.split(separator: "\n").suffix(8).map { "     " + $0 }.joined(separator: "\n"))
                continue
            }
            var f: [String: Double] = [:]
            for kv in line.dropFirst(8).split(separator: " ") {
                let p = kv.split(separator: "=")
                if p.count == 2, let v = Double(p[1]) { f[String(p[0])] = v }
            }
            let step = f["step"] ?? .nan, wait = f["wait"] ?? .nan, cpu = f["cpu"] ?? .nan
            if np == 1 {
                base = base ?? step
                cpuBase = cpuBase ?? cpu
            }
            let eff = base.map { $0 / step }, cpuEff = cpuBase.map { $0 / cpu }
            let perRank = "\(globalBatch / np)" + (globalBatch % np == 0 ? "" : "-\((globalBatch + np - 1) / np)")
            let load = loadAverage()
            rows.append(
                ScalingRow(
                    ranks: np, threads: threads, imagesPerRank: perRank, step: step, wait: wait, imagesPerSecond: Double(globalBatch) / step,
                    efficiency: eff, cpu: cpu, cpuEfficiency: cpuEff, load: load))
            print(
                String(
                    format: "   %5d  %12d  %@  %8.2f  %8.3f  %5.1f%%  %8.2f  %@  %8.2f  %@  %@", np, threads, padLeft(perRank, 11), step, wait, 100 * wait / step,
                    Double(globalBatch) / step, padLeft(eff.map { String(format: "%.1f%%", 100 * $0) } ?? "-", 10), cpu,
                    padLeft(cpuEff.map { String(format: "%.1f%%", 100 * $0) } ?? "-", 8), padLeft(load, 5)))
        }
        if let dir = o.scalingOut {
            do {
                let written = try writeScaling(rows, title: "global batch \(globalBatch), \(cores) cores", to: URL(fileURLWithPath: dir))
                print("   wrote " + written.map(\.path).joined(separator: ", "))
            } catch { print("   cannot write into \(dir): \(error)") }
        }
        print("")
    }
}

/// `text` right-aligned in `width` columns (`%11@` does not pad on Linux).
private func padLeft(_ text: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - text.count)) + text }

/// One process count of the scaling section.
struct ScalingRow {
    var ranks: Int, threads: Int, imagesPerRank: String
    var step: Double, wait: Double, imagesPerSecond: Double
    var efficiency: Double?
    var cpu: Double
    var cpuEfficiency: Double?
    var load: String
}

/// `scaling.csv` (one row per process count) and `scaling.png` (step and CPU efficiency and
/// the communication wait, in percent, against the process count on a log-2 axis).
/// - Returns: the files written.
/// - Throws: file errors.
func writeScaling(_ rows: [ScalingRow], title: String, to dir: URL) throws -> [URL] {
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    func pct(_ v: Double?) -> String { v.map { String(format: "%.2f", 100 * $0) } ?? "" }
    var csv = "ranks,threads_per_rank,images_per_rank,step_s,wait_s,wait_pct,images_per_s,efficiency_pct,cpu_s,cpu_efficiency_pct,load_1min\n"
    for r in rows {
        csv +=
            [
                "\(r.ranks)", "\(r.threads)", r.imagesPerRank, String(format: "%.4f", r.step), String(format: "%.4f", r.wait),
                String(format: "%.2f", 100 * r.wait / r.step), String(format: "%.4f", r.imagesPerSecond), pct(r.efficiency),
                String(format: "%.4f", r.cpu), pct(r.cpuEfficiency), r.load,
            ].joined(separator: ",") + "\n"
    }
    let csvURL = dir.appendingPathComponent("scaling.csv"), pngURL = dir.appendingPathComponent("scaling.png")
    try Data(csv.utf8).write(to: csvURL, options: .atomic)
    func series(_ name: String, _ values: [(Int, Double?)], _ color: Int, dashed: Bool = false) -> LineChart.Series {
        LineChart.Series(
            name: name, points: values.compactMap { n, v in v.map { (x: Double(n), y: 100 * $0) } },
            color: LineChart.palette[color], dashed: dashed)
    }
    var chart = LineChart(
        title: "scaling, " + title, xLabel: "processes", yLabel: "percent",
        series: [
            series("step efficiency", rows.map { ($0.ranks, $0.efficiency) }, 0),
            series("CPU efficiency", rows.map { ($0.ranks, $0.cpuEfficiency) }, 1),
            series("wait, % of step", rows.map { ($0.ranks, $0.wait / $0.step) }, 3, dashed: true),
        ])
    chart.logX = rows.count > 1
    let top = rows.flatMap { [$0.efficiency ?? 0, $0.cpuEfficiency ?? 0, $0.wait / $0.step] }.max() ?? 1
    chart.yRange = 0...max(110, 100 * top * 1.05)
    try chart.write(png: pngURL)
    return [csvURL, pngURL]
}

/// Launches `opacity-bench <section>` as `np` ranks of one mpirun job and returns rank 0's
/// output (the other ranks print nothing).
func launchUnderMPI(np: Int, threads: Int, section: String, options: BenchOptions, extra: [String] = []) -> (status: Int32, text: String) {
    let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }
    guard let mpirun else { return (127, "  mpirun not found: install Open MPI (scripts/install-deps.sh)\n") }
    var args = ["--oversubscribe", "-np", "\(np)"]
    if getuid() == 0 { args.append("--allow-run-as-root") }
    // one thread per rank: pin each to a core; several: leave placement to the kernel
    args += threads > 1 ? ["--bind-to", "none"] : ["--bind-to", "core"]
    args +=
        [
            CommandLine.arguments[0], section, "--threads", "\(threads)", "--repeat", "\(options.repetitions)",
            "--bucket-mib", "\(options.bucketMiB)", "--max-mib", "\(options.maxMiB)", "--scaling-config", options.scalingConfig,
        ] + extra
    let p = Process()
    p.executableURL = URL(fileURLWithPath: mpirun)
    p.arguments = args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    do { try p.run() } catch { return (127, "  cannot start \(mpirun): \(error)\n") }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

private func rankWorld() -> MPIProcessGroup {
    do { return MPIProcessGroup(world: try MPIRuntime.initialize()) } catch {
        FileHandle.standardError.write(Data("opacity-bench: MPI did not start: \(error)\n".utf8))
        exit(1)
    }
}

/// One rank of the allreduce job; rank 0 prints the table.
private func allreduceRank(_ o: BenchOptions) {
    let group = rankWorld()
    let comm = group.world
    let p = comm.size
    if comm.rank == 0 {
        print("  \(MPIRuntime.libraryVersion)")
        print("  bus bandwidth = 2 (P-1)/P x bytes / time (what each rank sends and receives); median of up to 10 runs")
        print("     MiB   rank-ordered (ms)   GB/s bus   MPI_Allreduce (ms)   GB/s bus   ordered/MPI")
    }
    var mib = 1
    while mib <= o.maxMiB {
        let count = mib * 262_144
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: count)
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: count + p)
        defer { buf.deallocate(); scratch.deallocate() }
        for i in 0..<count { buf[i] = Float(i % 1000) * 1e-3 }
        let reps = max(3, min(10, 256 / mib))
        func time(_ body: () throws -> Void) -> Double {
            var t: [Double] = []
            for r in 0...reps {
                try? comm.barrier()
                let s = DispatchTime.now().uptimeNanoseconds
                try? body()
                let e = Double(DispatchTime.now().uptimeNanoseconds - s) / 1e9
                if r > 0 { t.append(e) }
            }
            return t.sorted()[t.count / 2]
        }
        let ordered = time { try comm.orderedSum(buf, count: count, scratch: scratch) }
        let library = time { try comm.allreduceSum(buf, count: count) }
        if comm.rank == 0 {
            let bytes = Double(count * 4) * 2 * Double(p - 1) / Double(p)
            print(
                String(
                    format: "  %6d   %17.2f   %8.2f   %18.2f   %8.2f   %10.2f", mib, ordered * 1e3, bytes / ordered / 1e9,
                    library * 1e3, bytes / library / 1e9, ordered / library))
        }
        mib *= 2
    }
}

/// One rank of a scaling job: times training steps on its shard; rank 0 prints `SCALING ...`.
private func scalingRank(_ o: BenchOptions) {
    let group = rankWorld()
    group.bucketBytes = max(1, Int(o.bucketMiB * 1_048_576))
    let registry: Registry
    let detector: Detector
    do {
        registry = try Registry(plugins: builtinPlugins)
        detector = try Initializer.withSeed(1) { try registry.makeDetector(o.scalingConfig) }
    } catch {
        group.abort("opacity-bench scaling: rank \(group.rank): \(error)")
    }
    detector.freezeBatchNorm()
    detector.train()
    let params = detector.namedParameters().filter { $0.1.requiresGrad }
    let adam = Adam(params, learningRate: 1e-5)
    let globalBatch = o.globalBatch ?? 2
    let mine = group.block(globalBatch)
    let n = mine.count, s = detector.inputSize
    var rng = RandomGenerator(seed: 7 &+ UInt64(group.rank))
    let images = Tensor.randomUniform([n, 1, s, s], 0, 1, using: &rng)
    let targets = (0..<n).map { i in
        DetectionTarget(
            boxes: [BoundingBox(x: Float(s) * 0.2 + Float(i * 7), y: Float(s) * 0.3, width: Float(s) * 0.25, height: Float(s) * 0.3)],
            imageClass: .lungOpacity)
    }
    let reducer = group.makeGradientReducer(parameters: params.map(\.1))
    var steps: [Double] = [], waits: [Double] = [], cpus: [Double] = []
    for r in 0...o.repetitions {
        try? group.world.barrier()
        let t0 = DispatchTime.now().uptimeNanoseconds, c0 = processCPUSeconds()
        adam.zeroGrad()
        reducer.begin(weight: Float(n) / Float(globalBatch))
        // as the trainer: forward, loss and backward (the head stage by stage)
        _ = detector.trainingLosses(images, targets: targets, parameterReady: { reducer.parameterReady($0) })
        let wait: Double
        do { wait = try reducer.finish() } catch { group.abort("opacity-bench scaling: rank \(group.rank): \(error)") }
        _ = clipGradientNorm(params.map(\.1), maxNorm: 0.05)
        adam.step()
        let t = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        if r > 0 {
            steps.append(t)
            waits.append(wait)
            cpus.append(processCPUSeconds() - c0)
        }
    }
    // the step of the job is the slowest rank's: rank-wise maxima of the medians; CPU: the sum
    let med = { (v: [Double]) in v.sorted()[v.count / 2] }
    let all = (try? group.world.allGather(Data("\(med(steps)) \(med(waits)) \(med(cpus))".utf8))) ?? []
    let rows = all.map { String(decoding: $0, as: UTF8.self).split(separator: " ").compactMap { Double($0) } }
    if group.rank == 0 {
        let step = rows.map { $0[0] }.max() ?? .nan, wait = rows.map { $0[1] }.max() ?? .nan, cpu = rows.map { $0[2] }.reduce(0, +)
        print("SCALING ranks=\(group.size) threads=\(Compute.threads) step=\(step) wait=\(wait) cpu=\(cpu)")
    }
}

/// User + system CPU seconds of this process so far (all its threads).
func processCPUSeconds() -> Double {
    var u = rusage()
    #if os(Linux)
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u)
    #else
        getrusage(RUSAGE_SELF, &u)
    #endif
    return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6
}
