import Foundation
import OpacityTensor
import XCTest

/// Log-softmax, NLL / cross entropy, sigmoid focal loss, smooth L1 and dropout:
/// values against the formulas, gradients against finite differences.
final class LossTests: XCTestCase {
    func testLogSoftmaxAndCrossEntropyValues() {
        let x = Tensor(shape: [2, 3], scalars: [1, 2, 3, -1, 0, 50])
        let ls = x.logSoftmax()
        for r in 0..<2 {
            let row = (0..<3).map { Double(x[flat: r * 3 + $0]) }
            let m = row.max()!
            let lse = m + Foundation.log(row.map { Foundation.exp($0 - m) }.reduce(0, +))
            for i in 0..<3 { XCTAssertEqual(Double(ls[flat: r * 3 + i]), row[i] - lse, accuracy: 1e-5) }
        }
        let targets = [2, 0]
        let ce = x.crossEntropy(targets: targets).scalar
        XCTAssertEqual(Double(ce), -(Double(ls[flat: 2]) + Double(ls[flat: 3])) / 2, accuracy: 1e-5)
        XCTAssertEqual(ls.nllLoss(targets: targets).scalar, ce)
    }

    func testClassificationGradients() {
        let x = uniform([4, 5], -2, 2, seed: 1)
        checkGradients("logSoftmax", [x]) { $0[0].logSoftmax() }
        checkGradients("logSoftmax rank 3", [uniform([2, 3, 4], seed: 2)]) { $0[0].logSoftmax() }
        checkGradients("nllLoss", [x]) { $0[0].nllLoss(targets: [0, 4, 2, 2]) }
        checkGradients("crossEntropy", [x]) { $0[0].crossEntropy(targets: [1, 3, 0, 4]) }
    }

    func focalReference(_ x: Tensor, _ t: Tensor, alpha: Double, gamma: Double) -> Double {
        var s = 0.0
        for i in 0..<x.count {
            let p = 1 / (1 + Foundation.exp(-Double(x[flat: i])))
            switch t[flat: i] {
            case 1: s += -alpha * Foundation.pow(1 - p, gamma) * Foundation.log(p)
            case 0: s += -(1 - alpha) * Foundation.pow(p, gamma) * Foundation.log(1 - p)
            default: break
            }
        }
        return s
    }

    func testSigmoidFocalLoss() {
        let x = uniform([3, 40], -4, 4, seed: 3)
        var rng = RandomGenerator(seed: 4)
        let targets = Tensor(shape: [3, 40], scalars: (0..<120).map { _ in [Float(1), 0, -1][rng.nextInt(3)] })
        for (alpha, gamma) in [(0.25, 2.0), (0.5, 0.0), (0.75, 1.5)] {
            let loss = x.sigmoidFocalLoss(targets: targets, alpha: Float(alpha), gamma: Float(gamma))
            XCTAssertEqual(Double(loss.scalar), focalReference(x, targets, alpha: alpha, gamma: gamma), accuracy: 1e-4)
            checkGradients("sigmoidFocalLoss alpha \(alpha) gamma \(gamma)", [x], eps: 1e-3) {
                $0[0].sigmoidFocalLoss(targets: targets, alpha: Float(alpha), gamma: Float(gamma))
            }
        }
        // Ignored anchors (-1) contribute neither loss nor gradient.
        let ignored = Tensor(shape: [2], scalars: [-1, -1])
        let xi = uniform([2], seed: 5).requiringGrad()
        let li = xi.sigmoidFocalLoss(targets: ignored)
        XCTAssertEqual(li.scalar, 0)
        li.backward()
        XCTAssertEqual(xi.grad!.scalars, [0, 0])
        // Extreme logits stay finite.
        let extreme = Tensor(shape: [4], scalars: [-80, 80, -80, 80])
        let le = extreme.sigmoidFocalLoss(targets: Tensor(shape: [4], scalars: [1, 0, 0, 1]))
        XCTAssertTrue(le.scalar.isFinite)
        // A large input takes the parallel path and agrees with the reference.
        let big = uniform([300_000], -3, 3, seed: 6)
        let bigTargets = Tensor(shape: [300_000], scalars: (0..<300_000).map { Float($0 % 3) - 1 })
        XCTAssertEqual(Double(big.sigmoidFocalLoss(targets: bigTargets).scalar),
                       focalReference(big, bigTargets, alpha: 0.25, gamma: 2), accuracy: 1e-2)
    }

    func testSmoothL1Loss() {
        // Differences kept away from the kink at |d| = beta.
        var rng = RandomGenerator(seed: 7)
        let target = uniform([30], seed: 8)
        let d = (0..<30).map { i -> Float in
            let m = i % 2 == 0 ? rng.uniform(0, 0.08) : rng.uniform(0.15, 1)
            return rng.nextUniform() < 0.5 ? -m : m
        }
        let x = Tensor(shape: [30], scalars: (0..<30).map { target[flat: $0] + d[$0] })
        let beta: Float = 1.0 / 9
        let loss = x.smoothL1Loss(target: target, beta: beta)
        let expected = (0..<30).map { i -> Double in
            let a = abs(Double(x[flat: i]) - Double(target[flat: i]))
            return a < Double(beta) ? 0.5 * a * a / Double(beta) : a - 0.5 * Double(beta)
        }.reduce(0, +)
        XCTAssertEqual(Double(loss.scalar), expected, accuracy: 1e-5)
        checkGradients("smoothL1Loss", [x, target], eps: 5e-3) { $0[0].smoothL1Loss(target: $0[1], beta: beta) }
        checkGradients("smoothL1Loss beta 1", [x, target], eps: 5e-3) { $0[0].smoothL1Loss(target: $0[1], beta: 1) }
    }

    func testDropout() {
        let x = uniform([4, 50], seed: 9)
        // The same generator state gives the same mask, so the op is a fixed function.
        checkGradients("dropout with a fixed mask", [x]) { t in
            var rng = RandomGenerator(seed: 10)
            return t[0].dropout(0.3, using: &rng)
        }
        var rng = RandomGenerator(seed: 11)
        let ones = Tensor.ones([100_000])
        let y = ones.dropout(0.25, using: &rng)
        let kept = y.scalars.filter { $0 != 0 }
        XCTAssertEqual(Double(kept.count) / 100_000, 0.75, accuracy: 0.01)
        XCTAssertTrue(kept.allSatisfy { abs($0 - 1 / 0.75) < 1e-6 }, "kept elements scale by 1 / (1 - p)")
        // Backward draws the same mask again: d sum(dropout(x)) / dx is the mask itself, and
        // the generator moves on as if the mask were drawn once.
        var r1 = RandomGenerator(seed: 12), r2 = RandomGenerator(seed: 12)
        let leaf = x.requiringGrad()
        leaf.dropout(0.4, using: &r1).sum().backward()
        XCTAssertEqual(leaf.grad?.scalars, Tensor.ones(x.shape).dropout(0.4, using: &r2).scalars)
        XCTAssertEqual(r1.next(), r2.next())
        var r0 = RandomGenerator(seed: 1)
        XCTAssertEqual(x.dropout(0, using: &r0).scalars, x.scalars)
        // The layer: active in training, identity in evaluation, seeded masks.
        let a = Dropout(0.5, seed: 3), b = Dropout(0.5, seed: 3)
        XCTAssertEqual(a(x).scalars, b(x).scalars)
        a.eval()
        XCTAssertEqual(a(x).scalars, x.scalars)
    }
}
