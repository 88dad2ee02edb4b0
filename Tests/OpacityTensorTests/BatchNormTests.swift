import Foundation
import OpacityTensor
import XCTest

/// Batch normalisation in evaluation, frozen and training modes.
final class BatchNormTests: XCTestCase {
    func testEvalForwardMatchesFormula() {
        let x = uniform([2, 3, 4, 5], seed: 1)
        let w = uniform([3], 0.5, 1.5, seed: 2), b = uniform([3], seed: 3)
        let mean = uniform([3], -0.5, 0.5, seed: 4), variance = uniform([3], 0.5, 2, seed: 5)
        let y = x.batchNorm2d(weight: w, bias: b, mean: mean, variance: variance, eps: 1e-3)
        var expected: [Double] = []
        for i in 0..<x.count {
            let c = (i / 20) % 3
            expected.append((Double(x[flat: i]) - Double(mean[flat: c])) / (Double(variance[flat: c]) + 1e-3).squareRoot()
                            * Double(w[flat: c]) + Double(b[flat: c]))
        }
        assertClose(y, expected, absolute: 1e-5, relative: 1e-5, "eval batch norm")
    }

    func testTrainingForwardMatchesBatchStatistics() {
        let x = uniform([3, 2, 4, 3], -2, 3, seed: 6)
        let w = uniform([2], 0.5, 1.5, seed: 7), b = uniform([2], seed: 8)
        let (y, mean, variance) = x.batchNorm2dTraining(weight: w, bias: b, eps: 1e-5)
        for c in 0..<2 {
            var values: [Double] = []
            for n in 0..<3 { for j in 0..<12 { values.append(Double(x[flat: (n * 2 + c) * 12 + j])) } }
            let mu = values.reduce(0, +) / 36
            let v = values.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / 36
            XCTAssertEqual(Double(mean[c]), mu, accuracy: 1e-5)
            XCTAssertEqual(Double(variance[c]), v, accuracy: 1e-5)
            for n in 0..<3 {
                for j in 0..<12 {
                    let i = (n * 2 + c) * 12 + j
                    let e = (Double(x[flat: i]) - mu) / (v + 1e-5).squareRoot() * Double(w[flat: c]) + Double(b[flat: c])
                    XCTAssertEqual(Double(y[flat: i]), e, accuracy: 1e-5)
                }
            }
        }
    }

    func testGradients() {
        let x = uniform([2, 3, 4, 5], seed: 10)
        let w = uniform([3], 0.5, 1.5, seed: 11), b = uniform([3], seed: 12)
        let mean = uniform([3], -0.5, 0.5, seed: 13), variance = uniform([3], 0.5, 2, seed: 14)
        checkGradients("batchNorm2d eval", [x, w, b]) {
            $0[0].batchNorm2d(weight: $0[1], bias: $0[2], mean: mean, variance: variance)
        }
        checkGradients("batchNorm2d training", [x, w, b], eps: 1e-2) {
            $0[0].batchNorm2dTraining(weight: $0[1], bias: $0[2]).0
        }
        checkGradients("batchNorm2d training, [N, C] input", [uniform([6, 4], seed: 15), uniform([4], 0.5, 1.5, seed: 16),
                                                               uniform([4], seed: 17)]) {
            $0[0].batchNorm2dTraining(weight: $0[1], bias: $0[2]).0
        }
        checkGradients("batchNorm2d eval, [N, C] input", [uniform([5, 3], seed: 18), w, b]) {
            $0[0].batchNorm2d(weight: $0[1], bias: $0[2], mean: mean, variance: variance)
        }
        // Fused ReLU: inputs chosen so no output lands within eps of the kink.
        let xr = awayFromZero([2, 3, 4, 5], minMagnitude: 0.2, seed: 19)
        let unit = Tensor.ones([3]), zero = Tensor.zeros([3]), noShift = Tensor.zeros([3]), unitVar = Tensor(shape: [3], repeating: 1 - 1e-5)
        checkGradients("batchNorm2d eval + fused relu", [xr, unit, zero]) {
            $0[0].batchNorm2d(weight: $0[1], bias: $0[2], mean: noShift, variance: unitVar, relu: true)
        }
    }

    func testFusedReLUMatchesSeparateReLU() {
        let x = uniform([2, 4, 6, 7], -2, 2, seed: 30)
        let w = uniform([4], 0.5, 1.5, seed: 31), b = uniform([4], seed: 32)
        let mean = uniform([4], -0.5, 0.5, seed: 33), variance = uniform([4], 0.5, 2, seed: 34)
        let fused = x.batchNorm2d(weight: w, bias: b, mean: mean, variance: variance, relu: true)
        let separate = x.batchNorm2d(weight: w, bias: b, mean: mean, variance: variance).relu()
        XCTAssertEqual(fused.scalars, separate.scalars)
        // Gradients agree too (same seed gradient).
        let r = uniform(x.shape, seed: 35)
        let (x1, w1, b1) = (x.requiringGrad(), w.requiringGrad(), b.requiringGrad())
        x1.batchNorm2d(weight: w1, bias: b1, mean: mean, variance: variance, relu: true).backward(r)
        let (x2, w2, b2) = (x.requiringGrad(), w.requiringGrad(), b.requiringGrad())
        x2.batchNorm2d(weight: w2, bias: b2, mean: mean, variance: variance).relu().backward(r)
        assertClose(x1.grad!, x2.grad!, absolute: 1e-6, relative: 1e-6, "input gradient")
        assertClose(w1.grad!, w2.grad!, absolute: 1e-5, relative: 1e-5, "weight gradient")
        assertClose(b1.grad!, b2.grad!, absolute: 1e-5, relative: 1e-5, "bias gradient")
        // The layer: fused in every mode (training mode's values come from the batch alone).
        let bn = BatchNorm2d(4)
        bn.eval()
        XCTAssertEqual(bn(x, relu: true).scalars, bn(x).relu().scalars)
        bn.train()
        let before = bn.runningMean.value.scalars
        let y = bn(x, relu: true)
        XCTAssertEqual(y.scalars, bn(x).relu().scalars)
        XCTAssertNotEqual(bn.runningMean.value.scalars, before)
    }

    func testTrainingGradientsOnLargePlanesMatchTheFormula() {
        let x = uniform([3, 4, 30, 45], -1, 3, seed: 50)
        let w = uniform([4], 0.5, 1.5, seed: 51), b = uniform([4], seed: 52), r = uniform(x.shape, seed: 53)
        let (xg, wg, bg) = (x.requiringGrad(), w.requiringGrad(), b.requiringGrad())
        xg.batchNorm2dTraining(weight: wg, bias: bg, eps: 1e-5).0.backward(r)
        let hw = 30 * 45, m = Double(3 * hw)
        var expectedX = [Double](repeating: 0, count: x.count)
        for c in 0..<4 {
            var idx: [Int] = []
            for n in 0..<3 { for j in 0..<hw { idx.append((n * 4 + c) * hw + j) } }
            let mu = idx.map { Double(x[flat: $0]) }.reduce(0, +) / m
            let v = idx.map { (Double(x[flat: $0]) - mu) * (Double(x[flat: $0]) - mu) }.reduce(0, +) / m
            let istd = 1 / (v + 1e-5).squareRoot()
            let xhat = idx.map { (Double(x[flat: $0]) - mu) * istd }
            let g = idx.map { Double(r[flat: $0]) }
            let sg = g.reduce(0, +), sgx = zip(g, xhat).map { $0 * $1 }.reduce(0, +)
            XCTAssertEqual(Double(bg.grad![flat: c]), sg, accuracy: 1e-3 * max(1, abs(sg)))
            XCTAssertEqual(Double(wg.grad![flat: c]), sgx, accuracy: 1e-3 * max(1, abs(sgx)))
            let k = Double(w[flat: c]) * istd / m
            for (t, i) in idx.enumerated() { expectedX[i] = k * (m * g[t] - sg - xhat[t] * sgx) }
        }
        assertClose(xg.grad!, expectedX, absolute: 1e-4, relative: 1e-3, "training input gradient")
    }

    func testLargePlanesStatisticsAndGradients() {
        // Planes larger than the vector blocks, with an offset mean (cancellation-prone).
        let x = uniform([2, 3, 70, 90], 9, 11, seed: 40)
        let (_, mean, variance) = x.batchNorm2dTraining(weight: .ones([3]), bias: .zeros([3]))
        for c in 0..<3 {
            var values: [Double] = []
            for n in 0..<2 { for j in 0..<6300 { values.append(Double(x[flat: (n * 3 + c) * 6300 + j])) } }
            let mu = values.reduce(0, +) / Double(values.count)
            let v = values.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / Double(values.count)
            XCTAssertEqual(Double(mean[c]), mu, accuracy: 1e-5)
            XCTAssertEqual(Double(variance[c]), v, accuracy: 1e-5)
        }
        let w = uniform([3], 0.5, 1.5, seed: 41), b = uniform([3], seed: 42)
        let m = Tensor(shape: [3], scalars: [10, 10.1, 9.9]), vv = Tensor(shape: [3], scalars: [0.3, 0.4, 0.35])
        let r = uniform(x.shape, seed: 43)
        let (wg, bg) = (w.requiringGrad(), b.requiringGrad())
        x.batchNorm2d(weight: wg, bias: bg, mean: m, variance: vv).backward(r)
        for c in 0..<3 {
            var sw = 0.0, sb = 0.0
            let istd = 1 / (Double(vv[flat: c]) + 1e-5).squareRoot()
            for n in 0..<2 {
                for j in 0..<6300 {
                    let i = (n * 3 + c) * 6300 + j
                    sb += Double(r[flat: i])
                    sw += Double(r[flat: i]) * (Double(x[flat: i]) - Double(m[flat: c])) * istd
                }
            }
            XCTAssertEqual(Double(wg.grad![flat: c]), sw, accuracy: 1e-3 * max(1, abs(sw)))
            XCTAssertEqual(Double(bg.grad![flat: c]), sb, accuracy: 1e-3 * max(1, abs(sb)))
        }
    }

    func testLayerModesAndRunningStatistics() {
        let bn = BatchNorm2d(2, momentum: 0.1)
        XCTAssertEqual(bn.namedParameters().map(\.0), ["weight", "bias"])
        XCTAssertEqual(bn.namedBuffers().map(\.0), ["running_mean", "running_var"])
        let x = uniform([2, 2, 3, 3], -1, 3, seed: 20)
        let (_, mean, variance) = x.batchNorm2dTraining(weight: .ones([2]), bias: .zeros([2]))
        _ = bn(x)  // training mode: batch statistics, running statistics move
        for c in 0..<2 {
            XCTAssertEqual(bn.runningMean.value[flat: c], 0.1 * mean[c], accuracy: 1e-6)
            // PyTorch keeps the unbiased variance: n / (n - 1) with n = 18 values per channel.
            XCTAssertEqual(bn.runningVar.value[flat: c], 0.9 + 0.1 * variance[c] * 18 / 17, accuracy: 1e-6)
        }
        // Frozen: training mode, but running statistics fixed and used; affine parameters train.
        let savedMean = bn.runningMean.value.scalars, savedVar = bn.runningVar.value.scalars
        bn.freezeBatchNorm()
        XCTAssertTrue(bn.isTraining)
        let y = bn(x)
        XCTAssertEqual(bn.runningMean.value.scalars, savedMean)
        XCTAssertEqual(bn.runningVar.value.scalars, savedVar)
        let expected = x.batchNorm2d(weight: bn.weight.value, bias: bn.bias.value, mean: bn.runningMean.value,
                                     variance: bn.runningVar.value)
        XCTAssertEqual(y.scalars, expected.scalars)
        y.sum().backward()
        XCTAssertNotNil(bn.weight.grad, "frozen batch norm still trains its weight")
        XCTAssertNotNil(bn.bias.grad, "frozen batch norm still trains its bias")
        // Frozen gradients against finite differences, through the layer.
        let frozenInputs = [x, bn.weight.value, bn.bias.value]
        checkGradients("frozen batch norm layer", frozenInputs) { t in
            t[0].batchNorm2d(weight: t[1], bias: t[2], mean: bn.runningMean.value, variance: bn.runningVar.value)
        }
        // Eval mode: running statistics, nothing updated.
        bn.freezeBatchNorm(false)
        bn.eval()
        let z = bn(x)
        XCTAssertEqual(z.scalars, expected.scalars)
        XCTAssertEqual(bn.runningMean.value.scalars, savedMean)
    }
}
