import Foundation
import Opacity

/// One grouped 3x3 convolution (padding 1) of an encoder.
struct GroupedConvSpec: Hashable {
    var inChannels: Int
    var outChannels: Int
    var groups: Int
    var stride: Int
    var height: Int
    var width: Int

    var outHeight: Int { (height + 2 - 3) / stride + 1 }
    var outWidth: Int { (width + 2 - 3) / stride + 1 }
    /// Floating-point operations of one image's forward pass (a multiply-add counts two).
    var flops: Double { 2 * Double(outChannels * (inChannels / groups) * 9) * Double(outHeight * outWidth) }
    var label: String { "3x3\(stride > 1 ? "/\(stride)" : "") \(inChannels)->\(outChannels) g\(groups) @\(height)x\(width)" }
}

extension BenchSection {
    /// The grouped 3x3 convolutions of SE-ResNeXt and DPN: forward, and forward+backward with
    /// the per-group backward tasks (``ConvolutionSettings/groupedTasks``) and without, against
    /// PyTorch.
    static let grouped = BenchSection(
        name: "grouped",
        summary: "grouped 3x3 convolutions of seresnext50/101 and dpn92 (forward, forward+backward) vs PyTorch",
        runsByDefault: false
    ) { context in
        let size = context.options.imageSize, reps = context.options.repetitions
        let encoders = ["seresnext50_32x4d", "seresnext101_32x4d", "dpn92"]
        var distinct: [GroupedConvSpec] = []
        var uses: [String: [GroupedConvSpec: Int]] = [:]
        do {
            let registry = try Registry.standard()
            for name in encoders {
                let encoder = try Initializer.withSeed(1) { try registry.makeEncoder("\(name)(in_channels=3)") }
                encoder.eval()
                let trace = OpTrace()
                Autograd.inference { _ = trace.run { encoder.features(Tensor.zeros([1, 3, size, size])) } }
                for op in trace.ops where op.op == "conv2d" && op.inputs.count >= 2 {
                    guard case .int(let groups)? = op.attributes["groups"], groups > 1, case .ints(let stride)? = op.attributes["stride"]
                    else { continue }
                    let x = op.inputs[0].shape, w = op.inputs[1].shape
                    guard w[2] == 3, w[3] == 3, x[1] != groups else { continue }
                    let s = GroupedConvSpec(inChannels: x[1], outChannels: w[0], groups: groups, stride: stride[0], height: x[2], width: x[3])
                    if !distinct.contains(s) { distinct.append(s) }
                    uses[name, default: [:]][s, default: 0] += 1
                }
            }
        } catch {
            print("== grouped: cannot build the encoders: \(error)\n")
            return
        }
        let batch = 1
        let torch = pytorchGroupedFigures(distinct, batch: batch, options: context.options)
        print("== grouped: grouped 3x3 convolutions of \(encoders.joined(separator: ", ")) at \(size)x\(size), batch \(batch), \(Compute.threads) threads")
        var header = "  \(pad("convolution", 34)) | fwd ms  GFLOP/s  fwd+bwd ms | without group tasks: fwd  fwd+bwd"
        if torch != nil { header += " | torch fwd  fwd+bwd | ours/torch fwd  fwd+bwd" }
        print(header)
        var rng = RandomGenerator(seed: 12)
        var times: [GroupedConvSpec: (tasks: (Double, Double), splits: (Double, Double))] = [:]
        let saved = ConvolutionSettings.groupedTasks
        defer { ConvolutionSettings.groupedTasks = saved }
        for s in distinct {
            let x = Tensor.randomUniform([batch, s.inChannels, s.height, s.width], -1, 1, using: &rng)
            let w = Tensor.randomNormal(
                [s.outChannels, s.inChannels / s.groups, 3, 3], std: (2 / Float(s.inChannels / s.groups * 9)).squareRoot(), using: &rng)
            let xg = x.requiringGrad(), wg = w.requiringGrad()
            let seed = Tensor(shape: [batch, s.outChannels, s.outHeight, s.outWidth], repeating: 1)
            var pair: [(Double, Double)] = []
            for tasks in [true, false] {
                ConvolutionSettings.groupedTasks = tasks
                let fwd = measure(repetitions: reps, warmup: 2) {
                    Autograd.inference { _ = x.conv2d(w, stride: (s.stride, s.stride), padding: (1, 1), groups: s.groups) }
                }
                let both = measure(repetitions: reps, warmup: 1) {
                    xg.conv2d(wg, stride: (s.stride, s.stride), padding: (1, 1), groups: s.groups).backward(seed)
                }
                pair.append((fwd.median, both.median))
            }
            times[s] = (pair[0], pair[1])
            var line = "  \(pad(s.label, 34)) | \(fmt(pair[0].0 * 1e3, 3, width: 6)) \(fmt(s.flops * Double(batch) / pair[0].0 * 1e-9, 1, width: 8))"
            line += " \(fmt(pair[0].1 * 1e3, 3, width: 11)) | \(fmt(pair[1].0 * 1e3, 3, width: 25)) \(fmt(pair[1].1 * 1e3, 3, width: 8))"
            if let t = torch?[s] {
                line += " | \(fmt(t.0 * 1e3, 3, width: 9)) \(fmt(t.1 * 1e3, 3, width: 8)) | \(fmt(pair[0].0 / t.0, 2, width: 14)) \(fmt(pair[0].1 / t.1, 2, width: 8))"
            }
            print(line)
        }
        // Per encoder: all its grouped convolutions of one forward pass (and forward+backward).
        for name in encoders {
            guard let u = uses[name] else { continue }
            var d = (0.0, 0.0), i = (0.0, 0.0), t = (0.0, 0.0), haveTorch = torch != nil
            for (s, count) in u {
                let c = Double(count)
                d.0 += c * times[s]!.tasks.0
                d.1 += c * times[s]!.tasks.1
                i.0 += c * times[s]!.splits.0
                i.1 += c * times[s]!.splits.1
                if let f = torch?[s] {
                    t.0 += c * f.0
                    t.1 += c * f.1
                } else {
                    haveTorch = false
                }
            }
            var line = "  \(name), all \(u.values.reduce(0, +)) grouped convolutions: \(fmt(d.0 * 1e3, 1)) ms fwd, \(fmt(d.1 * 1e3, 1)) ms fwd+bwd;"
            line += " without group tasks \(fmt(i.0 * 1e3, 1)) / \(fmt(i.1 * 1e3, 1)) ms"
            if haveTorch { line += "; torch \(fmt(t.0 * 1e3, 1)) / \(fmt(t.1 * 1e3, 1)) ms; ours/torch \(fmt(d.0 / t.0, 2)) / \(fmt(d.1 / t.1, 2))" }
            print(line)
        }
        print("")
    }

    /// PyTorch's forward and forward+backward seconds per shape, from scripts/bench_grouped_pytorch.py.
    static func pytorchGroupedFigures(_ specs: [GroupedConvSpec], batch: Int, options: BenchOptions) -> [GroupedConvSpec: (Double, Double)]? {
        let python: String
        switch options.pytorch {
        case .off, .file:
            return nil
        case .python(let p):
            python = p
        case .auto:
            guard let p = PyTorchFigures.findPython() else {
                print("  (PyTorch comparison skipped: no Python with torch found; set OPACITY_PYTHON or pass --python)")
                return nil
            }
            python = p
        }
        struct File: Decodable {
            struct Result: Decodable {
                var shape: [Int]
                var forward_s: Double
                var forward_backward_s: Double
            }
            var results: [Result]
        }
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-bench-grouped-\(getpid()).json")
        defer { try? FileManager.default.removeItem(at: out) }
        let shapes = "[" + specs.map { "[\($0.inChannels),\($0.outChannels),\($0.groups),\($0.stride),\($0.height),\($0.width)]" }.joined(separator: ",") + "]"
        let script = PyTorchFigures.packageRoot.appendingPathComponent("scripts/bench_grouped_pytorch.py").path
        print("  running PyTorch reference: \(python) scripts/bench_grouped_pytorch.py --threads \(Compute.threads) ...")
        do {
            let status = try PyTorchFigures.runProcess(
                python,
                [
                    script, "--threads", "\(Compute.threads)", "--batch", "\(batch)", "--repeat", "\(options.repetitions)",
                    "--clock", options.clock.rawValue, "--shapes", shapes, "--out", out.path,
                ], quiet: false)
            guard status == 0 else {
                print("  (PyTorch comparison skipped: the script exited with status \(status))")
                return nil
            }
            let f = try JSONDecoder().decode(File.self, from: Data(contentsOf: out))
            var r: [GroupedConvSpec: (Double, Double)] = [:]
            for x in f.results where x.shape.count == 6 {
                let s = GroupedConvSpec(
                    inChannels: x.shape[0], outChannels: x.shape[1], groups: x.shape[2], stride: x.shape[3], height: x.shape[4], width: x.shape[5])
                r[s] = (x.forward_s, x.forward_backward_s)
            }
            return r
        } catch {
            print("  (PyTorch comparison skipped: \(error))")
            return nil
        }
    }
}
