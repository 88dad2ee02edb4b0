import Opacity
import OpacityTensor
import XCTest

/// ``Detector/trainingLosses(_:targets:parameterReady:willBackward:partDone:)``: a RetinaNet's
/// head differentiated stage by stage (the classification subnet, then the regression subnet
/// with the global classifier) gives the same loss terms and the same gradient of every
/// parameter as one forward pass, the loss and one backward pass (the oracle, ``Detector/losses(_:targets:)``
/// then ``Tensor/backward(_:)``), with both dropouts drawing masks; it frees the first stage's
/// maps before the second stage's exist; a loss that is not known to be separable is not staged.
final class StagedTrainingStepTests: XCTestCase {
    private let config = "retinanet(encoder=resnet18(width=0.25), neck=fpn(channels=32), head=retina(channels=32), size=96)"
    private var targets: [DetectionTarget] {
        [
            DetectionTarget(boxes: [BoundingBox(x: 14, y: 24, width: 29, height: 34), BoundingBox(x: 50, y: 40, width: 20, height: 30)],
                            imageClass: .lungOpacity),
            DetectionTarget(boxes: [], imageClass: nil),
        ]
    }

    private func detector(loss: (any Loss)? = nil) throws -> Detector {
        let d = try Initializer.withSeed(1) { try Registry.standard().makeDetector(config) }
        d.train()
        d.freezeBatchNorm(true)
        guard let loss else { return d }
        return Detector(config: d.config, encoder: d.encoder, neck: d.neck, head: d.head, loss: loss, postprocessor: d.postprocessor,
                        anchors: d.anchorGenerator, inputSize: d.inputSize)
    }

    private var images: Tensor {
        var rng = RandomGenerator(seed: 7)
        return Tensor.randomUniform([2, 1, 96, 96], 0, 1, using: &rng)
    }

    private func gradients(_ d: Detector) -> [String: [Float]] {
        Dictionary(uniqueKeysWithValues: d.namedParameters().map { ($0.0, $0.1.grad?.scalars ?? []) })
    }

    func testStagedStepEqualsOneBackwardPass() throws {
        try assertStagedEqualsOnePass(try detector(), try detector())
    }

    /// With the encoder in checkpoint segments, the last backward pass recomputes them.
    func testStagedStepWithCheckpointedEncoder() throws {
        let make = {
            let d = try Initializer.withSeed(1) { try Registry.standard().makeDetector(String(self.config.dropLast()) + ", grad_checkpointing=encoder)") }
            d.train()
            d.freezeBatchNorm(true)
            return d
        }
        try assertStagedEqualsOnePass(try make(), try make())
    }

    private func assertStagedEqualsOnePass(_ plain: Detector, _ staged: Detector) throws {
        let oracle = Autograd.recordingGradients { plain.losses(images, targets: targets) }
        oracle.total.backward()
        let expected = gradients(plain)

        var parts: [String] = []
        var ready: [ObjectIdentifier: Int] = [:]
        let terms = staged.trainingLosses(images, targets: targets, parameterReady: { ready[ObjectIdentifier($0), default: 0] += 1 },
                                          partDone: { parts.append($0) })
        XCTAssertEqual(parts, ["encoder", "neck", "head", "loss", "backward", "head", "loss", "backward", "backward"], "two head stages")
        XCTAssertFalse(terms.total.requiresGrad)
        XCTAssertEqual(terms.terms.map(\.name), oracle.terms.map(\.name))
        for (a, b) in zip(terms.terms, oracle.terms) {
            XCTAssertEqual(a.value, b.value, "loss term \(a.name): the last stage's loss reads every piece's real value")
        }
        let got = gradients(staged)
        XCTAssertEqual(Set(got.keys), Set(expected.keys))
        var exact = 0
        for (name, g) in expected.sorted(by: { $0.key < $1.key }) {
            let s = got[name]!
            XCTAssertFalse(g.isEmpty, "\(name) has a gradient")
            XCTAssertEqual(s.count, g.count, name)
            let scale = g.map(abs).max() ?? 0
            if let i = g.indices.first(where: { abs(s[$0] - g[$0]) > 1e-5 * abs(g[$0]) + 1e-6 * scale }) {
                XCTFail("gradient of \(name)[\(i)]: \(s[i]) staged, \(g[i]) in one pass")
            }
            if s == g { exact += 1 }
        }
        // the head's gradients are the same sums in the same order; only the pyramid's
        // gradients may be summed in another order
        for name in expected.keys where name.hasPrefix("head.") { XCTAssertEqual(got[name]!, expected[name]!, "\(name) bit for bit") }
        XCTAssertGreaterThan(exact, expected.count / 2)
        // parameterReady fires once for each parameter, in whichever stage completes it
        for (_, p) in staged.namedParameters() { XCTAssertEqual(ready[ObjectIdentifier(p)], 1, "parameterReady once") }
    }

    /// The classification subnet's maps are freed before the regression subnet runs: the most
    /// tensor storage alive during the staged step is lower than in one pass.
    func testStagedStepKeepsOneSubnetsMapsAtATime() throws {
        // wide subnets on a small encoder, as at 512 px, where the subnets' maps dominate
        let wide = "retinanet(encoder=resnet18(width=0.25), neck=fpn(channels=128), head=retina(channels=128), size=256)"
        let images = Tensor.randomUniform([2, 1, 256, 256], 0, 1, using: &RandomGenerator.test)
        func peak(_ run: (Detector) -> Void) throws -> Int {
            let d = try Initializer.withSeed(1) { try Registry.standard().makeDetector(wide) }
            d.train()
            d.freezeBatchNorm(true)
            run(d)  // warm-up (first-use kernel choices, pool)
            d.zeroGrad()
            TensorMemory.resetLivePeak()
            let before = TensorMemory.liveBytes
            run(d)
            return TensorMemory.livePeakBytes - before
        }
        let onePass = try peak { d in
            let t = Autograd.recordingGradients { d.losses(images, targets: targets) }
            t.total.backward()
        }
        let staged = try peak { d in _ = d.trainingLosses(images, targets: targets) }
        XCTAssertLessThan(Double(staged), 0.95 * Double(onePass), "staged peak \(staged) bytes vs one pass \(onePass)")
    }

    /// What `willBackward` throws ends the step before the last backward pass, with the loss terms it was given.
    func testWillBackwardSeesTheWholeLossAndCanStop() throws {
        struct Stop: Error { let total: Float }
        let oracle = Autograd.recordingGradients { try! detector().losses(images, targets: targets) }
        let d = try detector()
        var parts: [String] = []
        XCTAssertThrowsError(try d.trainingLosses(images, targets: targets, willBackward: { throw Stop(total: $0.total.scalar) },
                                                  partDone: { parts.append($0) })) { error in
            XCTAssertEqual((error as? Stop)?.total, oracle.total.scalar)
        }
        XCTAssertEqual(parts, ["encoder", "neck", "head", "loss", "backward", "head", "loss"], "stopped before the last stage's backward")
        XCTAssertNil(d.head.namedParameters().first { $0.0.hasPrefix("regressionModel") }?.1.grad, "no gradient for the last stage")
    }

    /// A loss that does not declare itself separable runs in one pass, with the same result.
    func testLossNotKnownSeparableIsNotStaged() throws {
        struct Opaque: Loss {
            let inner: any Loss
            func loss(_ output: HeadOutput, targets: [DetectionTarget], anchors: AnchorSet) -> LossTerms {
                inner.loss(output, targets: targets, anchors: anchors)
            }
        }
        let base = try detector()
        let d = try detector(loss: Opaque(inner: base.lossFunction))
        var parts: [String] = []
        let terms = d.trainingLosses(images, targets: targets, partDone: { parts.append($0) })
        XCTAssertEqual(parts, ["encoder", "neck", "head", "loss", "backward"])
        let oracle = Autograd.recordingGradients { base.losses(images, targets: targets) }
        oracle.total.backward()
        XCTAssertEqual(terms.total.scalar, oracle.total.scalar)
        XCTAssertEqual(gradients(d), gradients(base), "one pass either way: the same bits")
    }

    /// `grad_checkpointing=head` recomputes the classification subnet instead: not staged.
    func testHeadCheckpointingIsNotStaged() throws {
        let d = try Initializer.withSeed(1) { try Registry.standard().makeDetector(String(config.dropLast()) + ", grad_checkpointing=head)") }
        d.train()
        var parts: [String] = []
        _ = d.trainingLosses(images, targets: targets, partDone: { parts.append($0) })
        XCTAssertEqual(parts, ["encoder", "neck", "head", "loss", "backward"])
    }
}
