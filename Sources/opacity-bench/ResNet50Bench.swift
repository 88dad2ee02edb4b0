import Foundation
import Opacity

extension BenchSection {
    /// Forward and forward+backward time of the ResNet plugin's ResNet-50, vs PyTorch.
    static let resnet50 = BenchSection(
        name: "resnet50", summary: "forward and forward+backward time of ResNet-50 (the ResNet plugin's) with its classifier, vs PyTorch",
        runsByDefault: true
    ) { context in
        let size = context.options.imageSize, reps = context.options.repetitions
        let torch = context.pytorchFigures()
        let net: ResNet
        do { net = try BenchNetwork.resnet50() } catch {
            print("== resnet50: cannot build \(BenchNetwork.resnet50Config): \(error)\n")
            return
        }
        net.eval()  // batch norm on running statistics; its affine parameters still train
        let flops = BenchNetwork.convolutions(of: net, imageSize: size).reduce(0) { $0 + $1.flops }
        print(
            "== resnet50: ResNet-50 of the ResNet plugin, \(BenchNetwork.resnet50Config) (\(net.parameterCount) parameters, \(fmt(flops * 1e-9, 1)) GFLOP of convolution per image) at \(size)x\(size), \(Compute.threads) threads"
        )
        print("   eval-mode batch norm (running statistics, affine parameters train), fused with ReLU: bn(x, relu: true)")
        if let torch { print("   PyTorch figures \(torch.source), torch \(torch.torchVersion), \(torch.clock) clock") }
        print("   clock: \(benchClock == .wall ? "elapsed (wall) time" : "process CPU time / threads (--clock cpu)"); load average now \(loadAverage())")
        print("   targets: forward <= 1.5x PyTorch, forward+backward <= 2x PyTorch")
        var rng = RandomGenerator(seed: 3)
        for batch in context.options.batches {
            let x = Tensor.randomUniform([batch, 3, size, size], -1, 1, using: &rng)
            let fwd = measure(repetitions: reps) {
                Autograd.inference { _ = net.classify(x) }
            }
            // One training step's worth of work: gradients for every parameter, none for the input.
            var stepTimes: [Double] = []
            for i in 0...reps {
                net.zeroGrad()
                let start = clockNow()
                net.classify(x).sum().backward()
                let s = clockNow() - start
                if i > 0 { stepTimes.append(s) }  // the first is warm-up
            }
            let both = Timing(seconds: stepTimes)
            var line = "  batch \(batch): forward \(fmt(fwd.median * 1e3, 1)) ms (\(fmt(flops * Double(batch) / fwd.median * 1e-9, 1)) GFLOP/s)"
            line += ", forward+backward \(fmt(both.median * 1e3, 1)) ms"
            print(line)
            if let tf = torch?.forward[batch], let tb = torch?.forwardBackward[batch] {
                let rf = fwd.median / tf, rb = both.median / tb
                print("           PyTorch: forward \(fmt(tf * 1e3, 1)) ms, forward+backward \(fmt(tb * 1e3, 1)) ms")
                print(
                    "           ours/PyTorch: forward \(fmt(rf, 2))x \(rf <= 1.5 ? "(target met)" : "(target 1.5x MISSED)"), forward+backward \(fmt(rb, 2))x \(rb <= 2 ? "(target met)" : "(target 2x MISSED)")"
                )
            }
        }
        print("")
    }
}
