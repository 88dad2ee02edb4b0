import Foundation
import OpacityTensor
import XCTest

/// Adam, SGD, gradient clipping and ReduceLROnPlateau against sequences produced by
/// PyTorch 2.15 (torch.optim.Adam / SGD, torch.nn.utils.clip_grad_norm_,
/// torch.optim.lr_scheduler.ReduceLROnPlateau) on float32 parameters: the parameter
/// [1, -2, 3] receives the five gradients below (assigned to `p.grad`, then `step()`),
/// and the values after each step were printed with repr(float(v)) and pasted here.
final class OptimizerTests: XCTestCase {
    static let gradients: [[Float]] = [[0.1, -0.5, 2.0], [0.3, 0.2, -1.0], [-0.4, 0.0, 0.5], [0.05, 1.5, -2.0], [0.2, -0.1, 0.3]]

    /// Runs the five steps and compares the parameter after each with PyTorch's.
    func assertSequence(_ name: String, _ expected: [[Double]], file: StaticString = #filePath, line: UInt = #line,
                        _ make: ([(String, Parameter)]) -> Optimizer) {
        let p = Parameter(Tensor(shape: [3], scalars: [1, -2, 3]))
        let opt = make([("p", p)])
        for (step, g) in Self.gradients.enumerated() {
            p.grad = Tensor(shape: [3], scalars: g)
            opt.step()
            for i in 0..<3 {
                XCTAssertEqual(Double(p.value[flat: i]), expected[step][i], accuracy: 2e-6 * max(1, abs(expected[step][i])),
                               "\(name): step \(step + 1), element \(i)", file: file, line: line)
            }
        }
    }

    func testAdamMatchesPyTorch() {
        assertSequence("Adam lr 0.1", [
            [0.8999999761581421, -1.899999976158142, 2.9000000953674316],
            [0.8082218766212463, -1.8654394149780273, 2.873366355895996],
            [0.8143619894981384, -1.8387240171432495, 2.8393235206604004],
            [0.8136923313140869, -1.886042833328247, 2.856571674346924],
            [0.7933083772659302, -1.9225411415100098, 2.865718364715576],
        ]) { Adam($0, learningRate: 0.1) }
        assertSequence("Adam lr 0.01, betas (0.8, 0.99), eps 1e-6, weight decay 0.1", [
            [0.9900000691413879, -1.9900000095367432, 2.990000009536743],
            [0.9801745414733887, -1.9837100505828857, 2.9862704277038574],
            [0.9782633185386658, -1.9773844480514526, 2.9814624786376953],
            [0.9750592708587646, -1.9809386730194092, 2.9822051525115967],
            [0.9697113037109375, -1.9823812246322632, 2.981494426727295],
        ]) { Adam($0, learningRate: 0.01, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.1) }
    }

    func testSGDMatchesPyTorch() {
        assertSequence("SGD", [
            [0.9900000095367432, -1.9500000476837158, 2.799999952316284],
            [0.9599999785423279, -1.9700000286102295, 2.8999998569488525],
            [1.0, -1.9700000286102295, 2.8499999046325684],
            [0.9950000047683716, -2.120000123977661, 3.049999952316284],
            [0.9750000238418579, -2.1100001335144043, 3.0199999809265137],
        ]) { SGD($0, learningRate: 0.1) }
        assertSequence("SGD momentum 0.9", [
            [0.9900000095367432, -1.9500000476837158, 2.799999952316284],
            [0.9510000348091125, -1.9250000715255737, 2.7200000286102295],
            [0.9559000134468079, -1.902500033378601, 2.5980000495910645],
            [0.9553099870681763, -2.032249927520752, 2.688199996948242],
            [0.9347789883613586, -2.1390249729156494, 2.739380121231079],
        ]) { SGD($0, learningRate: 0.1, momentum: 0.9) }
        assertSequence("SGD Nesterov, weight decay 0.01", [
            [0.989549994468689, -1.950600028038025, 2.807149887084961],
            [0.9556549191474915, -1.9466869831085205, 2.817268133163452],
            [0.9761867523193359, -1.9331936836242676, 2.732461452484131],
            [0.9714180827140808, -2.062589168548584, 2.867307186126709],
            [0.9498926997184753, -2.1009554862976074, 2.8686740398406982],
        ]) { SGD($0, learningRate: 0.05, momentum: 0.9, weightDecay: 0.01, nesterov: true) }
        assertSequence("SGD momentum 0.5, dampening 0.3, weight decay 0.1", [
            [0.9800000190734863, -1.9299999475479126, 2.7699999809265137],
            [0.9421400427818298, -1.8954899311065674, 2.7056100368499756],
            [0.9446150660514832, -1.8649665117263794, 2.619475841522217],
            [0.9357402920722961, -1.9416500329971313, 2.6980724334716797],
            [0.9107527136802673, -1.9594002962112427, 2.697484254837036],
        ]) { SGD($0, learningRate: 0.1, momentum: 0.5, dampening: 0.3, weightDecay: 0.1) }
    }

    func testOptimizerSkipsFrozenAndGradientlessParameters() {
        let trained = Parameter(Tensor(shape: [2], scalars: [1, 1]))
        let frozen = Parameter(Tensor(shape: [2], scalars: [1, 1]))
        let untouched = Parameter(Tensor(shape: [2], scalars: [1, 1]))
        frozen.requiresGrad = false
        trained.grad = Tensor(shape: [2], scalars: [1, 1])
        frozen.grad = Tensor(shape: [2], scalars: [1, 1])
        let opt = Adam([("a", trained), ("b", frozen), ("c", untouched)], learningRate: 0.5)
        opt.step()
        XCTAssertEqual(trained.value.scalars, [0.5, 0.5])
        XCTAssertEqual(frozen.value.scalars, [1, 1])
        XCTAssertEqual(untouched.value.scalars, [1, 1])
        opt.zeroGrad()
        XCTAssertNil(trained.grad)
    }

    func testOptimizerStateRoundTrips() throws {
        let p = Parameter(Tensor(shape: [3], scalars: [1, -2, 3]))
        let q = Parameter(Tensor(shape: [3], scalars: [1, -2, 3]))
        let a = Adam([("p", p)], learningRate: 0.1), b = Adam([("p", q)], learningRate: 0.3)
        for g in Self.gradients.prefix(2) {
            p.grad = Tensor(shape: [3], scalars: g)
            a.step()
        }
        q.value = p.value
        try b.loadStateDict(a.stateDict())
        XCTAssertEqual(b.learningRate, 0.1)
        for g in Self.gradients.suffix(3) {
            p.grad = Tensor(shape: [3], scalars: g)
            q.grad = Tensor(shape: [3], scalars: g)
            a.step()
            b.step()
        }
        XCTAssertEqual(p.value.scalars, q.value.scalars, "a restored optimizer continues exactly")
        XCTAssertThrowsError(try Adam([("p", Parameter(.zeros([4])))]).loadStateDict(a.stateDict()))

        let s = SGD([("p", p)], learningRate: 0.1, momentum: 0.9)
        p.grad = Tensor(shape: [3], scalars: [1, 1, 1])
        s.step()
        let s2 = SGD([("p", p)], learningRate: 0.2, momentum: 0.9)
        try s2.loadStateDict(s.stateDict())
        XCTAssertEqual(s2.learningRate, 0.1)
        XCTAssertEqual(s2.stateDict()["momentum_buffer.p"]?.scalars, [1, 1, 1])
    }

    func testClipGradientNormMatchesPyTorch() {
        let a = Parameter(.zeros([3])), b = Parameter(.zeros([2, 2])), none = Parameter(.zeros([2]))
        a.grad = Tensor(shape: [3], scalars: [0.3, -1.2, 2.0])
        b.grad = Tensor(shape: [2, 2], scalars: [0.5, 0.0, -0.7, 1.1])
        let norm = clipGradientNorm([a, b, none], maxNorm: 1.5)
        XCTAssertEqual(Double(norm), 2.7349588871002197, accuracy: 1e-6)
        assertClose(a.grad!, [0.1645362377166748, -0.6581449508666992, 1.0969082117080688], absolute: 1e-7, relative: 1e-6, "clipped a")
        assertClose(b.grad!, [0.2742270529270172, 0.0, -0.3839178681373596, 0.6032995581626892], absolute: 1e-7, relative: 1e-6, "clipped b")
        XCTAssertNil(none.grad)
        // Below the limit nothing changes.
        a.grad = Tensor(shape: [3], scalars: [0.3, -0.2, 0.1])
        b.grad = Tensor(shape: [2, 2], scalars: [0.05, 0.0, -0.07, 0.1])
        XCTAssertEqual(Double(clipGradientNorm([a, b], maxNorm: 1.5)), 0.3967367112636566, accuracy: 1e-7)
        XCTAssertEqual(a.grad!.scalars, [0.3, -0.2, 0.1])
        XCTAssertEqual(b.grad!.scalars, [0.05, 0.0, -0.07, 0.1])
    }

    /// Large parameters (split over the threads, eight lanes at a time, odd tail): Adam and
    /// clipping against a plain scalar loop of PyTorch's update, the same bits for 1, 2 and 3
    /// threads; clipping scales the gradient in place (no copy of an unshared gradient).
    func testAdamAndClippingOnLargeParametersMatchScalarLoopsForEveryThreadCount() {
        let n = 100_003
        let start = uniform([n], seed: 41).scalars
        let grads = (0..<3).map { uniform([n], -2, 2, seed: 50 + UInt64($0)).scalars }
        let small = [Float](repeating: 0.5, count: 5)
        let (lr, b1, b2, eps, wd): (Float, Float, Float, Float, Float) = (0.01, 0.9, 0.999, 1e-8, 0.01)
        let saved = Compute.threads
        defer { Compute.threads = saved }
        var results: [(norms: [Float], value: [Float])] = []
        for threads in [1, 2, 3] {
            Compute.threads = threads
            let big = Parameter(Tensor(shape: [n], scalars: start)), other = Parameter(Tensor(shape: [5], scalars: small))
            other.requiresGrad = false
            let opt = Adam([("big", big), ("other", other)], learningRate: lr, weightDecay: wd)
            var norms: [Float] = []
            for g in grads {
                big.grad = Tensor(shape: [n], scalars: g)
                other.grad = Tensor(shape: [5], scalars: small)
                let before = big.grad!.withUnsafeBufferPointer { $0.baseAddress }
                norms.append(clipGradientNorm([big, other], maxNorm: 0.5))
                XCTAssertEqual(big.grad!.withUnsafeBufferPointer { $0.baseAddress }, before, "clipping copied the gradient, \(threads) threads")
                opt.step()
            }
            results.append((norms, big.value.scalars))
        }
        XCTAssertEqual(results[1].norms, results[0].norms, "norms, 2 threads")
        XCTAssertEqual(results[2].norms, results[0].norms, "norms, 3 threads")
        XCTAssertEqual(results[1].value, results[0].value, "Adam, 2 threads")
        XCTAssertEqual(results[2].value, results[0].value, "Adam, 3 threads")
        // The scalar reference: clip by the joint norm (checked against a double sum), then Adam.
        var p = start, m = [Float](repeating: 0, count: n), v = [Float](repeating: 0, count: n)
        for (t, g0) in grads.enumerated() {
            var total = 0.0
            for x in g0 + small { total += Double(x) * Double(x) }
            let norm = results[0].norms[t]
            XCTAssertEqual(Double(norm), total.squareRoot(), accuracy: 1e-6 * total.squareRoot(), "norm, step \(t + 1)")
            let coef = 0.5 / (norm + 1e-6)
            let bc1 = 1 - Foundation.pow(b1, Float(t + 1)), bc2 = 1 - Foundation.pow(b2, Float(t + 1))
            let stepSize = lr / bc1, bc2Sqrt = bc2.squareRoot()
            for j in 0..<n {
                let gj = g0[j] * coef + wd * p[j]
                m[j] = b1 * m[j] + (1 - b1) * gj
                v[j] = b2 * v[j] + (1 - b2) * gj * gj
                p[j] -= stepSize * m[j] / (v[j].squareRoot() / bc2Sqrt + eps)
            }
        }
        XCTAssertEqual(results[0].value, p, "Adam after clipping against the scalar loop")
    }

    func assertPlateau(_ scheduler: ReduceLROnPlateau, metrics: [Float], expected: [Double],
                       file: StaticString = #filePath, line: UInt = #line) {
        let opt = SGD([("p", Parameter(.zeros([1])))], learningRate: 1)
        for (i, m) in metrics.enumerated() {
            scheduler.step(m, optimizer: opt)
            XCTAssertEqual(Double(opt.learningRate), expected[i], accuracy: expected[i] * 1e-5,
                           "epoch \(i + 1), metric \(m)", file: file, line: line)
        }
    }

    func testReduceLROnPlateauMatchesPyTorch() {
        let falling: [Float] = [1.0, 0.9, 0.95, 0.92, 0.91, 0.899, 0.85, 0.86, 0.87, 0.88, 0.89, 0.9, 0.7, 0.71, 0.72, 0.73, 0.74,
                                0.75, 0.76, 0.77]
        assertPlateau(ReduceLROnPlateau(mode: .min, factor: 0.5, patience: 2, threshold: 0.01, thresholdMode: .rel, cooldown: 1,
                                        minLR: 0.1), metrics: falling,
                      expected: [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.125, 0.125,
                                 0.125, 0.125, 0.1])
        // Patience 0, threshold 0; the reduction stops once it would be smaller than eps (1e-8).
        assertPlateau(ReduceLROnPlateau(mode: .min, factor: 0.1, patience: 0, threshold: 0), metrics: falling,
                      expected: [1.0, 1.0, 0.1, 0.01, 0.001, 0.001, 0.001, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-8, 1e-8, 1e-8, 1e-8,
                                 1e-8, 1e-8, 1e-8, 1e-8])
        let rising: [Float] = [0.1, 0.2, 0.25, 0.26, 0.255, 0.3, 0.31, 0.305, 0.3, 0.29, 0.28, 0.27, 0.4, 0.41, 0.39]
        assertPlateau(ReduceLROnPlateau(mode: .max, factor: 0.3, patience: 1, threshold: 0.02, thresholdMode: .abs, cooldown: 2,
                                        minLR: 0.05), metrics: rising,
                      expected: [1.0, 1.0, 1.0, 1.0, 0.3, 0.3, 0.3, 0.3, 0.09, 0.09, 0.09, 0.09, 0.09, 0.09, 0.05])
    }

    func testReduceLROnPlateauStateIsCodable() throws {
        let s = ReduceLROnPlateau(mode: .min, factor: 0.5, patience: 1)
        let opt = SGD([("p", Parameter(.zeros([1])))], learningRate: 1)
        for m: Float in [1, 0.5, 0.6] { s.step(m, optimizer: opt) }
        let copy = try JSONDecoder().decode(ReduceLROnPlateau.self, from: JSONEncoder().encode(s))
        XCTAssertEqual(copy.best, s.best)
        XCTAssertEqual(copy.numBadEpochs, s.numBadEpochs)
        XCTAssertEqual(copy.lastEpoch, s.lastEpoch)
        let o1 = SGD([("p", Parameter(.zeros([1])))], learningRate: 1), o2 = SGD([("p", Parameter(.zeros([1])))], learningRate: 1)
        XCTAssertEqual(s.step(0.7, optimizer: o1), copy.step(0.7, optimizer: o2))
        XCTAssertEqual(o1.learningRate, o2.learningRate)
    }
}
