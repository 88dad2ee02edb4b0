import Foundation
import Opacity

extension BenchSection {
    /// The zoo model exported to ONNX and run by ONNX Runtime (CPU, as many intra-op threads
    /// as ours) against our own forward pass and detection on the same input size.
    ///
    /// Needs the ONNX test oracle's virtual environment (scripts/onnx-venv.sh makes it;
    /// `OPACITY_ONNX_VENV` overrides where it lives); not run by default.
    static let onnx = BenchSection(
        name: "onnx", summary: "zoo model retinanet-r34-composite: ONNX Runtime (CPU) against our forward pass and detect",
        runsByDefault: false
    ) { context in
        print("== onnx: retinanet-r34-composite, ONNX Runtime CPU against Opacity, \(Compute.threads) threads each")
        do {
            try ONNXBench.run(repetitions: max(5, context.options.repetitions))
        } catch {
            print("  failed: \(error)")
        }
        print("")
    }
}

enum ONNXBench {
    static func run(repetitions: Int) throws {
        let entry = "retinanet-r34-composite"
        let detector = try Zoo.load(entry, registry: Registry.standard())
        detector.eval()
        let size = detector.inputSize
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-bench-onnx-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let raw = dir.appendingPathComponent("raw.onnx"), post = dir.appendingPathComponent("post.onnx")
        try ONNXExporter.write(detector, to: raw)
        try ONNXExporter.write(detector, to: post, options: ONNXExportOptions(postprocess: try ONNXPostprocess.matching(detector, threshold: 0.2)))
        let python = try venvPython()
        print("  input [B, 1, \(size), \(size)], median of \(repetitions) runs after warm-up; load average \(loadAverage())")
        print("  " + pad("batch", 6) + pad("what", 28) + pad("Opacity ms", 12) + pad("ONNX Runtime ms", 16))
        for batch in [1, 4] {
            var rng = RandomGenerator(seed: 1)
            let x = Tensor.randomUniform([batch, 1, size, size], 0, 1, using: &rng)
            let ours = measure(repetitions: repetitions, warmup: 2) { _ = Autograd.inference { detector.forward(x) } }
            let theirs = try ortMedian(python, raw, size: size, batch: batch, runs: repetitions)
            print("  " + pad("\(batch)", 6) + pad("forward (logits, deltas)", 28) + pad(fmt(ours.median * 1000), 12) + pad(fmt(theirs), 16))
            let oursDetect = measure(repetitions: repetitions, warmup: 2) { _ = detector.detect(x) }
            let theirsDetect = try ortMedian(python, post, size: size, batch: batch, runs: repetitions)
            print("  " + pad("\(batch)", 6) + pad("forward + post-processing", 28) + pad(fmt(oursDetect.median * 1000), 12) + pad(fmt(theirsDetect), 16))
        }
    }

    /// The virtual environment's python (made by scripts/onnx-venv.sh).
    static func venvPython() throws -> String {
        let env = ProcessInfo.processInfo.environment
        let venv = env["OPACITY_ONNX_VENV"] ?? (NSHomeDirectory() + "/.cache/opacity-onnx-venv")
        let python = venv + "/bin/python"
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw BenchError("no ONNX Runtime environment at \(venv); run scripts/onnx-venv.sh first")
        }
        return python
    }

    /// ONNX Runtime's median milliseconds (scripts/onnx_check.py bench).
    static func ortMedian(_ python: String, _ model: URL, size: Int, batch: Int, runs: Int) throws -> Double {
        let script = PyTorchFigures.packageRoot.appendingPathComponent("scripts/onnx_check.py")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = [script.path, "bench", model.path, "\(size)", "\(batch)", "\(runs)"]
        var env = ProcessInfo.processInfo.environment
        env["OMP_NUM_THREADS"] = "\(Compute.threads)"
        env["OPACITY_ORT_THREADS"] = "\(Compute.threads)"
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0,
            let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let ms = json["median_ms"] as? Double
        else {
            throw BenchError("onnx_check.py bench exited \(p.terminationStatus): \(String(decoding: data, as: UTF8.self))")
        }
        // Let the interpreter's memory go before our next timing.
        Thread.sleep(forTimeInterval: 1)
        return ms
    }
}
