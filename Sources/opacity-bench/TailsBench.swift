import Foundation
import Opacity

extension BenchSection {
    /// The tails of residual blocks, one fused pass (``Tensor/sumReLU(_:)``,
    /// ``Tensor/scaledSumReLU(scale:residual:)``) against the separate operations it replaces,
    /// on the stage outputs of a ResNet-50-shaped encoder: inference at batch 1, and forward
    /// and backward with ReLU outputs packed (as training records them) at batch 2. The two
    /// variants alternate within one process, so that both see the same machine.
    static let tails = BenchSection(
        name: "tails",
        summary: "residual and squeeze-and-excitation block tails: one fused pass against the separate ops",
        runsByDefault: false
    ) { context in
        let size = context.options.imageSize, reps = max(3, context.options.repetitions)
        print("== tails: block tails at the stage outputs of a \(size) px image, \(Compute.threads) threads, medians of \(reps) alternating runs")
        print("   residual: (y + r).relu() against y.sumReLU(r); excitation: ((y * s) + r).relu() against y.scaledSumReLU(scale: s, residual: r)")
        print("   infer = forward at batch 1 without a graph; train = forward and backward at batch 2, ReLU output packed; fused/separate under 1 means the fused pass is faster")
        print("  \(pad("map", 26)) \(pad("pass", 18)) \(pad("separate ms", 12)) \(pad("fused ms", 9)) fused/separate")
        var rng = RandomGenerator(seed: 5)
        var totals: [String: (separate: Double, fused: Double)] = [:]
        for (channels, stride) in [(256, 4), (512, 8), (1024, 16), (2048, 32)] where size / stride >= 1 {
            let side = size / stride
            for batch in [1, 2] {
                let shape = [batch, channels, side, side]
                let y = Tensor.randomUniform(shape, -1, 1, using: &rng), r = Tensor.randomUniform(shape, -1, 1, using: &rng)
                let s = Tensor.randomUniform([batch, channels, 1, 1], 0, 1, using: &rng)
                let seed = Tensor.randomUniform(shape, -1, 1, using: &rng)
                let training = batch == 2
                let (yg, rg, sg) = training ? (y.requiringGrad(), r.requiringGrad(), s.requiringGrad()) : (y, r, s)
                func run(_ body: () -> Tensor) {
                    if training {
                        Autograd.recordingGradients(body).backward(seed)
                    } else {
                        _ = Autograd.inference(body)
                    }
                }
                let cases: [(String, () -> Void, () -> Void)] = [
                    ("residual", { run { (yg + rg).relu() } }, { run { yg.sumReLU(rg) } }),
                    ("excitation", { run { ((yg * sg) + rg).relu() } }, { run { yg.scaledSumReLU(scale: sg, residual: rg) } }),
                ]
                for (name, separate, fused) in cases {
                    separate()
                    fused()
                    var a: [Double] = [], b: [Double] = []
                    for _ in 0..<reps {
                        var start = clockNow()
                        separate()
                        a.append(clockNow() - start)
                        start = clockNow()
                        fused()
                        b.append(clockNow() - start)
                    }
                    let ta = Timing(seconds: a).median, tb = Timing(seconds: b).median
                    let pass = training ? "\(name), train" : "\(name), infer"
                    totals[pass, default: (0, 0)].separate += ta
                    totals[pass, default: (0, 0)].fused += tb
                    print("  \(pad(describe(shape), 26)) \(pad(pass, 18)) \(pad(fmt(ta * 1e3, 2), 12)) \(pad(fmt(tb * 1e3, 2), 9)) \(fmt(tb / ta, 2))")
                }
            }
        }
        for (pass, t) in totals.sorted(by: { $0.key < $1.key }) {
            print("  all four stages, \(pad(pass, 18)) \(fmt(t.separate * 1e3, 1)) ms separate, \(fmt(t.fused * 1e3, 1)) ms fused (\(fmt(t.fused / t.separate, 2)))")
        }
        print("")
    }
}
