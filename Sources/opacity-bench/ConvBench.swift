import Foundation
import Opacity

extension BenchSection {
    /// Each distinct ResNet-50 convolution at the benchmark size, batch 1, against sgemm.
    static let conv = BenchSection(
        name: "conv", summary: "GFLOP/s of each distinct ResNet-50 convolution (batch 1) as a fraction of sgemm",
        runsByDefault: true
    ) { context in
        let size = context.options.imageSize, reps = context.options.repetitions
        let sgemm = context.sgemmFigure()
        let all: [ConvSpec]
        do { all = BenchNetwork.convolutions(of: try BenchNetwork.resnet50(), imageSize: size) } catch {
            print("== conv: cannot build \(BenchNetwork.resnet50Config): \(error)\n")
            return
        }
        var distinct: [ConvSpec] = []
        var uses: [ConvSpec: Int] = [:]
        for s in all {
            if let only = context.options.convFilter, !s.label.contains(only) { continue }
            if uses[s] == nil { distinct.append(s) }
            uses[s, default: 0] += 1
        }
        let torch = context.pytorchFigures()
        print("== conv: distinct ResNet-50 convolutions at \(size)x\(size), batch 1, \(Compute.threads) threads")
        print("   sgemm figure: \(fmt(sgemm)) GFLOP/s; target: forward >= 60% of it")
        var header = "  \(pad("convolution", 28)) uses  fwd ms  GFLOP/s  of sgemm | fwd+bwd ms  bwd GFLOP/s"
        if torch?.convs.isEmpty == false { header += " | torch fwd ms  ours/torch" }
        print(header)
        var rng = RandomGenerator(seed: 11)
        var worst = Double.infinity
        var reached = 0
        var totalFlops = 0.0, totalSeconds = 0.0
        for s in distinct {
            let x = Tensor.randomUniform([1, s.inChannels, s.height, s.width], -1, 1, using: &rng)
            let w = Tensor.randomNormal(
                [s.outChannels, s.inChannels, s.kernel, s.kernel],
                std: (2 / Float(s.inChannels * s.kernel * s.kernel)).squareRoot(), using: &rng)
            let stride = (s.stride, s.stride), padding = (s.padding, s.padding)
            let fwd = measure(repetitions: reps, warmup: 2) {
                Autograd.inference { _ = x.conv2d(w, stride: stride, padding: padding) }
            }
            // Backward as in training: gradient for the weight, and for the input except at the stem.
            let needInput = s.inChannels != 3
            let xg = needInput ? x.requiringGrad() : x
            let wg = w.requiringGrad()
            let seed = Tensor(shape: [1, s.outChannels, s.outHeight, s.outWidth], repeating: 1)
            let both =
                context.options.convBackward
                ? measure(repetitions: reps) {
                    let y = xg.conv2d(wg, stride: stride, padding: padding)
                    y.backward(seed)
                } : Timing(seconds: [.nan])
            let rate = s.flops / fwd.median * 1e-9
            let frac = rate / sgemm
            worst = min(worst, frac)
            if frac >= 0.6 { reached += 1 }
            let n = Double(uses[s]!)
            totalFlops += n * s.flops
            totalSeconds += n * fwd.median
            let bwdSeconds = max(both.median - fwd.median, 1e-9)
            let bwdFlops = s.flops * (needInput ? 2 : 1)
            var line = "  \(pad(s.label, 28)) \(fmt(n, 0, width: 4)) \(fmt(fwd.median * 1e3, 2, width: 7)) \(fmt(rate, 1, width: 8))"
            line += "  \(fmt(frac * 100, 0, width: 6))% | \(fmt(both.median * 1e3, 2, width: 10)) \(fmt(bwdFlops / bwdSeconds * 1e-9, 1, width: 12))"
            if let t = torch?.convs[s] {
                line += " | \(fmt(t * 1e3, 2, width: 12)) \(fmt(fwd.median / t, 2, width: 11))"
            }
            print(line)
        }
        print("  \(reached) of \(distinct.count) distinct convolutions reach 60% of sgemm; lowest \(fmt(worst * 100, 0))%")
        print(
            "  all \(all.count) convolutions of one forward pass: \(fmt(totalSeconds * 1e3, 1)) ms, \(fmt(totalFlops / totalSeconds * 1e-9, 1)) GFLOP/s (\(fmt(totalFlops / totalSeconds * 1e-9 / sgemm * 100, 0))% of sgemm)"
        )
        print("")
    }
}
