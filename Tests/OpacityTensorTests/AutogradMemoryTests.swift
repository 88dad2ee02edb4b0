import OpacityTensor
import XCTest

/// What the tape keeps alive: every tensor an operation saved for backward is freed as soon as
/// backward has passed that operation, not when the graph's output goes away.
final class AutogradMemoryTests: XCTestCase {
    func testSavedActivationsAreFreedByBackward() {
        var rng = RandomGenerator(seed: 3)
        let w1 = Parameter(Tensor.randomNormal([16, 16, 3, 3], std: 0.1, using: &rng))
        let w2 = Parameter(Tensor.randomNormal([16, 16, 3, 3], std: 0.1, using: &rng))
        let gamma = Parameter(Tensor.ones([16])), beta = Parameter(Tensor.zeros([16]))
        let x = Tensor.randomUniform([2, 16, 64, 64], using: &rng)  // 512 KiB, as each activation
        let before = TensorMemory.liveBytes
        let (loss, saved) = Autograd.measuringSavedTensors { () -> Tensor in
            var y = x.conv2d(w1.tensor, padding: (1, 1))
            y = y.batchNorm2dTraining(weight: gamma.tensor, bias: beta.tensor).0.relu()
            var masks = RandomGenerator(seed: 5)
            y = y.dropout(0.25, using: &masks)
            y = y.conv2d(w2.tensor, padding: (1, 1)).maxPool2d(kernel: (2, 2))
            let l = (y * y).sum()
            l.backward()
            return l
        }
        // The loss (and through it the graph's nodes) is still alive; what it saved is not.
        // (less the most recent Winograd weight transform, kept for a next use of its weight)
        let after = TensorMemory.liveBytes - TensorMemory.derivedRecentBytes
        let gradients = [w1, w2, gamma, beta].reduce(0) { $0 + ($1.grad?.count ?? 0) * 4 }
        XCTAssertEqual(gradients, (2 * 16 * 16 * 9 + 32) * 4)
        XCTAssertLessThanOrEqual(
            after - before, gradients + 1024,
            "after backward only the parameters' gradients and the loss may stay alive: \(after - before - gradients) bytes more")
        withExtendedLifetime(loss) {}
        // Each kind released its saved tensors when backward passed it.
        for op in ["conv2d", "batchNorm2d(train)", "relu"] {
            XCTAssertGreaterThanOrEqual(saved[op]?.bytes ?? 0, 64 << 10, "\(op) saved activations: \(saved)")
        }
        // Dropout keeps no mask: backward draws it again from the generator's saved state.
        XCTAssertEqual(saved["dropout"]?.nodes, 1)
        XCTAssertEqual(saved["dropout"]?.bytes, 0, "dropout saved: \(saved)")
    }

    /// A convolution whose input is written again for its backward (kept without its zeros
    /// after a ReLU, or recomputed from a frozen norm's recipe) releases that map after the
    /// weight gradient, before it allocates the input gradient, which does not read it: one map
    /// alive at a time, not two (a RetinaNet head's P2 convolutions set the step's peak so).
    func testConvolutionBackwardReleasesItsRewrittenInputBeforeTheInputGradient() {
        let map = 64 * 64 * 64 * 4  // 1 MiB: pooled blocks, above any scratch of a 1x1 conv
        let x = uniform([1, 64, 64, 64], seed: 21), w = uniform([4, 64, 1, 1], -0.3, 0.3, seed: 22)
        let scale = uniform([64], 0.5, 1.5, seed: 23), shift = uniform([64], -0.2, 0.2, seed: 24)
        let mean = uniform([64], -0.1, 0.1, seed: 25), variance = uniform([64], 0.5, 1.5, seed: 26)
        for packed in [true, false] {
            let saved = Autograd.sparseActivations
            Autograd.sparseActivations = packed
            defer { Autograd.sparseActivations = saved }
            let ps = [x, w].map { $0.requiringGrad() }
            // The probe's backward runs right after the convolution's: the peak so far is the
            // convolution's backward's (the seed is a sixteenth of a map).
            var peakInConvolution = 0
            Autograd.recordingGradients {
                let a = packed ? ps[0].relu() : ps[0].batchNorm2d(weight: scale, bias: shift, mean: mean, variance: variance, relu: true)
                let probed = Autograd.record("probe", a, inputs: [a]) { g in
                    peakInConvolution = TensorMemory.livePeakBytes
                    return [g]
                }
                let y = probed.conv2d(ps[1])
                let seed = Tensor.ones(y.shape)
                let before = TensorMemory.liveBytes
                TensorMemory.resetLivePeak()
                y.backward(seed)
                XCTAssertGreaterThan(peakInConvolution - before, map, packed ? "packed" : "recipe")
                XCTAssertLessThan(peakInConvolution - before, map + map / 4, packed ? "packed" : "recipe")
            }
            XCTAssertNotNil(ps[1].grad)
        }
    }
}
