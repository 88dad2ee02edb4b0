import Foundation
import Opacity

extension BenchSection {
    static let detect = BenchSection(
        name: "detect",
        summary: "`opacity detect` on one RSNA DICOM with the default zoo model: process start to detections.json written, and its peak memory",
        runsByDefault: true
    ) { context in
        print("== detect: `opacity detect` on one RSNA DICOM with the default zoo model, process start to exit (JSON written)")
        do {
            try DetectProcessBench.run(threads: Compute.threads, repetitions: max(1, context.options.repetitions))
        } catch {
            print("  failed: \(error)")
        }
        print("")
    }
}

/// Times the `opacity` executable as a user runs it: `opacity detect FILE -o DIR`, from the
/// process's start to its exit with `detections.json` written (wall clock; `--clock` does not
/// apply, a process's life is elapsed time), with and without the overlay PNG, and the
/// process's peak resident memory (`ru_maxrss` of the finished child). The model is the one
/// `opacity detect` uses by default (the zoo's `retinanet-r34-rsna1k`, read from `zoo/`); the
/// image is the first DICOM of `rsna/stage_1_train_images` under `$OPACITY_REALDATA` or
/// `../shared/realdata`. For comparison it also times the same model's `detect` inside this
/// process on an input of the model's size, so the difference is what a process adds: start-up,
/// loading the bundle, reading and decoding the DICOM, writing the files.
enum DetectProcessBench {
    static func run(threads: Int, repetitions: Int) throws {
        let opacity = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("opacity")
        guard FileManager.default.isExecutableFile(atPath: opacity.path) else {
            throw BenchError("no opacity executable at \(opacity.path); build it with `swift build -c release --product opacity`")
        }
        let folder = BenchSection.realdata.appendingPathComponent("rsna/stage_1_train_images")
        guard let image = try? ImageFile.list(in: folder).first else {
            throw BenchError("no RSNA DICOM in \(folder.path) (set OPACITY_REALDATA)")
        }
        print("  \(opacity.path) detect \(image.lastPathComponent) --threads \(threads); median of \(repetitions) runs after one warm-up; load average \(loadAverage())")
        print("  " + pad("what", 34) + pad("median ms", 11) + pad("best ms", 9) + "peak MiB")
        for (label, extra) in [("JSON and overlay PNG", [String]()), ("JSON only (--no-overlays)", ["--no-overlays"])] {
            var times: [Double] = []
            var peak = 0
            for run in 0...repetitions {
                let (seconds, maxRSS) = try timeProcess(opacity, image: image, threads: threads, extra: extra)
                if run > 0 {
                    times.append(seconds)
                    peak = max(peak, maxRSS)
                }
            }
            let t = Timing(seconds: times)
            print("  " + pad(label, 34) + pad(fmt(t.median * 1000, 1), 11) + pad(fmt(t.best * 1000, 1), 9) + "\(peak >> 20)")
        }
        // The same model's detect inside this process, on an input of the model's size.
        let detector = try Zoo.load(Zoo.defaultModelName, registry: Registry.standard())
        detector.eval()
        var rng = RandomGenerator(seed: 1)
        let x = Tensor.randomUniform([1, 1, detector.inputSize, detector.inputSize], 0, 1, using: &rng)
        let saved = benchClock
        benchClock = .wall
        let inProcess = measure(repetitions: repetitions, warmup: 1) { _ = detector.detect(x) }
        benchClock = saved
        print("  " + pad("in-process detect, \(detector.inputSize) px", 34) + pad(fmt(inProcess.median * 1000, 1), 11) + pad(fmt(inProcess.best * 1000, 1), 9) + "-")
    }

    /// Runs `opacity detect` once into a fresh folder; returns elapsed seconds and the child's
    /// own peak resident bytes (`wait4`'s `ru_maxrss` of that child, not `RUSAGE_CHILDREN`,
    /// which is the largest of every child so far, PyTorch's included in a `report` run).
    /// Throws when it fails or writes no `detections.json`.
    static func timeProcess(_ opacity: URL, image: URL, threads: Int, extra: [String]) throws -> (Double, Int) {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-bench-detect-\(getpid())-\(UUID().uuidString)")
        let log = out.path + ".stderr"
        defer {
            try? FileManager.default.removeItem(at: out)
            try? FileManager.default.removeItem(atPath: log)
        }
        let arguments = [opacity.path, "detect", image.path, "-o", out.path, "--threads", "\(threads)"] + extra
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, log, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let start = DispatchTime.now().uptimeNanoseconds
        let spawned = posix_spawn(&pid, opacity.path, &actions, nil, &argv, environ)
        guard spawned == 0 else { throw BenchError("cannot start \(opacity.path): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        let exited = status & 0x7f == 0, code = (status >> 8) & 0xff
        guard exited, code == 0, FileManager.default.fileExists(atPath: out.appendingPathComponent("detections.json").path) else {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw BenchError("opacity detect failed (\(exited ? "exit \(code)" : "signal \(status & 0x7f)")): \(text.prefix(400))")
        }
        return (seconds, Int(usage.ru_maxrss) * 1024)
    }
}
