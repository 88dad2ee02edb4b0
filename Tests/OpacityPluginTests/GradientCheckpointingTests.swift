import Opacity
import OpacityTensor
import XCTest

/// `grad_checkpointing`: a real detector's training step gives the same losses, the same
/// gradients of every parameter and the same weights after Adam with each mode as without,
/// and the next step the same losses.
final class GradientCheckpointingTests: XCTestCase {
    private struct Step {
        var terms: [(name: String, value: Float)]
        var gradients: [String: [Float]]
        var weights: [String: [Float]]
    }

    /// Two training steps (forward, loss, backward, clipping, Adam) of a detector built from
    /// one seed, frozen batch norm as the trainer (or batch statistics when `frozen` is false).
    private func steps(_ config: String, frozen: Bool = true, size: Int = 96) throws -> [Step] {
        let registry = try Registry.standard()
        let detector = try Initializer.withSeed(1) { try registry.makeDetector(config) }
        detector.train()
        detector.freezeBatchNorm(frozen)
        var rng = RandomGenerator(seed: 7)
        let images = Tensor.randomUniform([2, 1, size, size], 0, 1, using: &rng)
        let s = Float(size)
        let targets = [
            DetectionTarget(boxes: [BoundingBox(x: 0.15 * s, y: 0.25 * s, width: 0.3 * s, height: 0.35 * s)], imageClass: .lungOpacity),
            DetectionTarget(boxes: [], imageClass: .normal),
        ]
        let optimizer = Adam(detector.namedParameters().filter { $0.1.requiresGrad }, learningRate: 1e-3)
        var out: [Step] = []
        for _ in 0..<2 {
            let terms = detector.losses(images, targets: targets)
            optimizer.zeroGrad()
            terms.total.backward()
            let grads = Dictionary(uniqueKeysWithValues: detector.namedParameters().map { ($0.0, $0.1.grad?.scalars ?? []) })
            clipGradientNorm(optimizer.parameters.map(\.1), maxNorm: 0.05)
            optimizer.step()
            let weights = Dictionary(uniqueKeysWithValues: detector.namedParameters().map { ($0.0, $0.1.value.scalars) })
            out.append(Step(terms: terms.terms, gradients: grads, weights: weights))
        }
        return out
    }

    /// Equal bit for bit, or within 1e-6 of the larger magnitude (a parameter read in several
    /// segments, the head's shared subnets, sums its contributions in another order).
    private func assertSame(_ a: [Float], _ b: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        guard a.count == b.count else { return }
        let scale = a.map(abs).max() ?? 0
        for i in a.indices where abs(a[i] - b[i]) > 1e-6 * max(abs(a[i]), abs(b[i])) + 1e-7 * scale {
            XCTFail("\(what)[\(i)]: \(a[i]) with checkpointing, \(b[i]) without", file: file, line: line)
            return
        }
    }

    private func compare(_ mode: String, encoder: String, frozen: Bool = true) throws {
        let base = "retinanet(encoder=\(encoder), neck=fpn(channels=32), head=retina(channels=32), size=96"
        let plain = try steps(base + ")", frozen: frozen)
        let checked = try steps(base + ", grad_checkpointing=\(mode))", frozen: frozen)
        for (k, (p, c)) in zip(plain, checked).enumerated() {
            XCTAssertEqual(p.terms.map(\.name), c.terms.map(\.name))
            for (a, b) in zip(c.terms, p.terms) {
                XCTAssertEqual(a.value, b.value, accuracy: (k == 0 ? 1e-6 : 1e-5) * max(1, abs(b.value)), "\(mode) \(encoder) step \(k): loss term \(a.name)")
            }
            // The second step starts from weights that may differ in the last bits (the head's
            // shared subnets sum their levels' gradients in another order), so it checks that the
            // state carried over (dropout stream, running statistics) by its loss only.
            guard k == 0 else { continue }
            XCTAssertEqual(Set(p.gradients.keys), Set(c.gradients.keys))
            for (name, g) in p.gradients.sorted(by: { $0.key < $1.key }) {
                XCTAssertFalse(g.isEmpty, "\(name) has a gradient")
                assertSame(c.gradients[name]!, g, "\(mode) \(encoder) step \(k): gradient of \(name)")
                assertSame(c.weights[name]!, p.weights[name]!, "\(mode) \(encoder) step \(k): \(name) after Adam")
            }
        }
    }

    func testEveryModeGivesTheSameStepOnResNet18() throws {
        for mode in ["head", "encoder", "all"] { try compare(mode, encoder: "resnet18(width=0.25)") }
    }

    func testBottleneckSegmentsOnResNet50() throws {
        // bottlenecks are one segment each (basic-block stages one segment per stage)
        try compare("all", encoder: "resnet50(width=0.125)")
    }

    func testCellSegmentsAndBatchStatistics() throws {
        // NASNet-A mobile: one segment per cell, each reading the two previous maps; batch
        // norm with batch statistics moves its running statistics once
        try compare("all", encoder: "nasnetamobile", frozen: false)
    }

    func testBlockSegmentsOnXceptionAndDPN() throws {
        // one segment per Xception block (the exit flow with the last one) and per dual-path
        // block (the final norm with the last one)
        try compare("encoder", encoder: "xception")
        try compare("encoder", encoder: "dpn92")
    }

    /// Selective recomputation (a convolution keeps a batch norm's recipe, not its output; at
    /// level 2 a norm also keeps a widening 1x1 convolution's recipe, not its input) gives a
    /// real detector's training step bit for bit, with frozen batch norm and with batch
    /// statistics, on encoders of each block kind (Xception's separable convolutions keep their
    /// depthwise halves' recipes, SE-ResNeXt's excitation products their norms'); so does keeping
    /// the ReLU outputs without their zeros (``SparseActivation``), with each level and without it.
    func testSelectiveRecomputationGivesTheSameBits() throws {
        let cases = [
            ("resnet50(width=0.125)", true), ("resnet50(width=0.125)", false), ("resnet18(width=0.25)", false), ("dpn92", true),
            ("xception", false), ("seresnext50_32x4d", true),
        ]
        for (encoder, frozen) in cases {
            let config = "retinanet(encoder=\(encoder), neck=fpn(channels=32), head=retina(channels=32), size=64)"
            func run(level: Int, sparse: Bool) throws -> [Step] {
                let before = (Autograd.selectiveRecomputation, Autograd.convolutionRecomputation, Autograd.sparseActivations)
                Autograd.selectiveRecomputation = level >= 1
                Autograd.convolutionRecomputation = level >= 2
                Autograd.sparseActivations = sparse
                defer { (Autograd.selectiveRecomputation, Autograd.convolutionRecomputation, Autograd.sparseActivations) = before }
                return try steps(config, frozen: frozen, size: 64)
            }
            // every map kept, against each level with the ReLU outputs packed
            // (``SparseActivation``), and the default level without packing
            let off = try run(level: 0, sparse: false)
            for (level, sparse) in [(1, true), (2, true), (2, false)] {
                for (k, (a, b)) in zip(try run(level: level, sparse: sparse), off).enumerated() {
                    let what = "\(encoder) \(frozen ? "frozen" : "batch statistics") level \(level)\(sparse ? " sparse" : "") step \(k)"
                    XCTAssertEqual(a.terms.map(\.value), b.terms.map(\.value), "\(what): losses")
                    XCTAssertEqual(a.gradients, b.gradients, "\(what): gradients")
                    XCTAssertEqual(a.weights, b.weights, "\(what): weights after Adam")
                }
            }
        }
    }

    /// Without a per-block override an encoder runs as one segment (the protocol's default).
    func testWholeEncoderSegmentByDefault() throws {
        final class Plain: Module, Encoder {
            let inner = ResNet(.resnet18, width: 0.125)
            var featureSpec: FeatureSpec { inner.featureSpec }
            func features(_ images: Tensor) -> [Tensor] { inner.features(images) }
        }
        let encoder = Plain()
        encoder.train()
        var rng = RandomGenerator(seed: 9)
        let x = Tensor.randomUniform([2, 1, 64, 64], 0, 1, using: &rng)
        func gradients(_ run: (Tensor) -> [Tensor]) -> [[Float]] {
            for (_, p) in encoder.namedParameters() { p.grad = nil }
            Autograd.recordingGradients { run(x).map { $0.sum() }.reduce(Tensor(0), +) }.backward()
            return encoder.namedParameters().map { $0.1.grad?.scalars ?? [] }
        }
        XCTAssertEqual(gradients { encoder.checkpointedFeatures($0) }, gradients { encoder.features($0) })
        // and it is one segment (the recomputation's own nodes are counted too, as backward frees them)
        let (_, saved) = Autograd.measuringSavedTensors { () -> Tensor in
            let l = Autograd.recordingGradients { encoder.checkpointedFeatures(x).map { $0.sum() }.reduce(Tensor(0), +) }
            l.backward()
            return l
        }
        XCTAssertEqual(saved["checkpoint"]?.nodes, 1, "\(saved)")
    }

    func testTheKeyIsCheckedAndCanonical() throws {
        let registry = try Registry.standard()
        XCTAssertEqual(try registry.canonical("retinanet(grad_checkpointing=none)"), "retinanet")
        XCTAssertEqual(try registry.canonical("retinanet(grad_checkpointing=all)"), "retinanet(grad_checkpointing=all)")
        XCTAssertThrowsError(try registry.canonical("retinanet(grad_checkpointing=heads)")) { error in
            XCTAssertTrue("\(error)".contains("did you mean 'head'"), "\(error)")
        }
        let d = try registry.makeDetector("retinanet(encoder=resnet18(width=0.125), size=64, grad_checkpointing=encoder)")
        XCTAssertEqual(d.gradientCheckpointing, .encoder)
        // inference is the same whatever the mode
        let plain = try Initializer.withSeed(3) { try registry.makeDetector("retinanet(encoder=resnet18(width=0.125), size=64)") }
        let checked = try Initializer.withSeed(3) { try registry.makeDetector("retinanet(encoder=resnet18(width=0.125), size=64, grad_checkpointing=all)") }
        var rng = RandomGenerator(seed: 4)
        let x = Tensor.randomUniform([1, 1, 64, 64], 0, 1, using: &rng)
        XCTAssertEqual(Autograd.inference { plain.forward(x).classLogits.scalars }, Autograd.inference { checked.forward(x).classLogits.scalars })
    }
}
