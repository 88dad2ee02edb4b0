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
}
