import Foundation
import Opacity

/// PyTorch's figures for the same work, from scripts/bench_pytorch.py.
struct PyTorchFigures {
    /// Where the figures came from, for the report.
    var source: String
    var torchVersion: String
    var threads: Int
    var size: Int
    /// `wall` or `cpu` (see ``BenchClock``).
    var clock: String
    var sgemmGFLOPS: Double?
    /// Batch size -> seconds.
    var forward: [Int: Double] = [:]
    var forwardBackward: [Int: Double] = [:]
    /// Forward seconds of each distinct convolution at batch 1.
    var convs: [ConvSpec: Double] = [:]

    /// The JSON that scripts/bench_pytorch.py writes.
    private struct File: Decodable {
        struct Network: Decodable {
            var batch: Int
            var forward_s: Double
            var forward_backward_s: Double
        }
        struct Conv: Decodable {
            var `in`: Int
            var out: Int
            var kernel: Int
            var stride: Int
            var padding: Int
            var height: Int
            var width: Int
            var forward_s: Double
        }
        var torch_version: String
        var threads: Int
        var clock: String?
        var size: Int
        var sgemm_2048_gflops: Double?
        var network: [Network]
        var convs: [Conv]
    }

    /// Reads figures from `path`.
    static func read(_ path: String, source: String) throws -> PyTorchFigures {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let f = try JSONDecoder().decode(File.self, from: data)
        var p = PyTorchFigures(
            source: source, torchVersion: f.torch_version, threads: f.threads, size: f.size,
            clock: f.clock ?? "wall", sgemmGFLOPS: f.sgemm_2048_gflops)
        for n in f.network {
            p.forward[n.batch] = n.forward_s
            p.forwardBackward[n.batch] = n.forward_backward_s
        }
        for c in f.convs {
            let spec = ConvSpec(
                inChannels: c.in, outChannels: c.out, kernel: c.kernel, stride: c.stride, padding: c.padding,
                height: c.height, width: c.width)
            p.convs[spec] = c.forward_s
        }
        return p
    }

    /// Figures by the options: read a file, or run the script with a Python that has torch.
    /// Prints why when there are none.
    static func obtain(options: BenchOptions) -> PyTorchFigures? {
        let figures: PyTorchFigures?
        switch options.pytorch {
        case .off:
            return nil
        case .file(let path):
            do {
                figures = try read(path, source: "read from \(path)")
            } catch {
                print("  (PyTorch comparison skipped: cannot read \(path): \(error))")
                return nil
            }
        case .python(let python):
            figures = run(python: python, options: options)
        case .auto:
            guard let python = findPython() else {
                print("  (PyTorch comparison skipped: no Python with torch found; set OPACITY_PYTHON or pass --python)")
                return nil
            }
            figures = run(python: python, options: options)
        }
        if let f = figures, f.threads != Compute.threads || f.size != options.imageSize || f.clock != options.clock.rawValue {
            print(
                "  warning: PyTorch figures are for \(f.threads) threads at \(f.size)px on the \(f.clock) clock; this run uses \(Compute.threads) threads at \(options.imageSize)px on the \(options.clock.rawValue) clock"
            )
        }
        return figures
    }

    /// The package root, found from this source file's location (or the working directory).
    static var packageRoot: URL {
        let fromSource = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        if FileManager.default.fileExists(atPath: fromSource.appendingPathComponent("scripts/bench_pytorch.py").path) {
            return fromSource
        }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    }

    static var script: URL { packageRoot.appendingPathComponent("scripts/bench_pytorch.py") }

    /// The first interpreter that can import torch.
    static func findPython() -> String? {
        let env = ProcessInfo.processInfo.environment
        var candidates: [String] = []
        if let p = env["OPACITY_PYTHON"] { candidates.append(p) }
        if let v = env["VIRTUAL_ENV"] { candidates.append(v + "/bin/python") }
        // The tests' virtual environment (scripts/torch-venv.sh makes it).
        let torchVenv = env["OPACITY_TORCH_VENV"] ?? FileManager.default.homeDirectoryForCurrentUser.path + "/.cache/opacity-torch-venv"
        candidates.append(torchVenv + "/bin/python")
        candidates.append(packageRoot.appendingPathComponent(".venv/bin/python").path)
        candidates.append(packageRoot.deletingLastPathComponent().appendingPathComponent("venv/bin/python").path)
        candidates.append("python3")
        for c in candidates where c == "python3" || FileManager.default.isExecutableFile(atPath: c) {
            if (try? runProcess(c, ["-c", "import torch"], quiet: true)) == 0 { return c }
        }
        return nil
    }

    static func run(python: String, options: BenchOptions) -> PyTorchFigures? {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-bench-torch-\(getpid()).json")
        defer { try? FileManager.default.removeItem(at: out) }
        let args = [
            script.path, "--threads", "\(Compute.threads)", "--size", "\(options.imageSize)",
            "--batches", options.batches.map(String.init).joined(separator: ","),
            "--repeat", "\(options.repetitions)", "--clock", options.clock.rawValue, "--out", out.path,
        ]
        print("  running PyTorch reference: \(python) scripts/bench_pytorch.py --threads \(Compute.threads) ...")
        do {
            let status = try runProcess(python, args, quiet: false)
            // Let the system reclaim the interpreter's memory before our own timings start.
            Thread.sleep(forTimeInterval: 2)
            guard status == 0 else {
                print("  (PyTorch comparison skipped: the script exited with status \(status))")
                return nil
            }
            return try read(out.path, source: "measured now with \(python) (torch, \(Compute.threads) threads)")
        } catch {
            print("  (PyTorch comparison skipped: \(error))")
            return nil
        }
    }

    /// Runs a program (looked up on PATH when not a path) and waits for it.
    static func runProcess(_ program: String, _ args: [String], quiet: Bool) throws -> Int32 {
        let p = Process()
        if program.contains("/") {
            p.executableURL = URL(fileURLWithPath: program)
            p.arguments = args
        } else {
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = [program] + args
        }
        if quiet {
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
        }
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }
}
