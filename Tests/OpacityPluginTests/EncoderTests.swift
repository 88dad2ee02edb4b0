import Opacity
import XCTest

/// The paper's encoders as plugins: names, parameter counts, feature shapes, and training
/// through a RetinaNet built from a config string.
final class EncoderTests: XCTestCase {
    /// Every encoder the paper names, with its C2..C5 channels.
    static let encoders: [(name: String, channels: [Int])] = [
        ("resnet34", [64, 128, 256, 512]), ("resnet50", [256, 512, 1024, 2048]), ("resnet101", [256, 512, 1024, 2048]),
        ("seresnext50_32x4d", [256, 512, 1024, 2048]), ("seresnext101_32x4d", [256, 512, 1024, 2048]),
        ("xception", [128, 256, 728, 2048]), ("dpn92", [336, 704, 1552, 2688]), ("nasnetamobile", [44, 264, 528, 1056]),
    ]

    func testRegisteredWithTheirFeatureSpecs() throws {
        let reg = try Registry.standard()
        for (name, channels) in Self.encoders {
            let spec = try reg.encoderSpec(name)
            XCTAssertEqual(spec.channels, channels, name)
            XCTAssertEqual(spec.strides, [4, 8, 16, 32], name)
            XCTAssertNoThrow(try reg.checkDetector("retinanet(encoder=\(name))"), name)
        }
        XCTAssertEqual(try reg.canonical("retinanet(encoder=dpn92(classes=0, in_channels=1))"), "retinanet(encoder=dpn92)")
        XCTAssertEqual(try reg.canonical("retinanet(encoder=xception(in_channels=3))"), "retinanet(encoder=xception(in_channels=3))")
        XCTAssertThrowsError(try reg.makeEncoder("nasnetamobile(width=0.5)")) { e in
            XCTAssertTrue("\(e)".contains("classes, in_channels") || "\(e)".contains("in_channels, classes"), "\(e)")
        }
        XCTAssertThrowsError(try reg.makeEncoder("seresnext50")) { e in
            XCTAssertTrue("\(e)".contains("seresnext50_32x4d"), "\(e)")
        }
    }

    /// With a 3-channel stem and the 1000-way classifier, counts equal timm's (pretrainedmodels'
    /// for NASNet-A-Mobile): scripts/parity/reference.py prints them.
    func testParameterCountsEqualTheReferences() {
        XCTAssertEqual(SEResNeXt(.seresnext50, inChannels: 3, classes: 1000).parameterCount, 27_559_896)
        XCTAssertEqual(SEResNeXt(.seresnext101, inChannels: 3, classes: 1000).parameterCount, 48_955_416)
        XCTAssertEqual(Xception(inChannels: 3, classes: 1000).parameterCount, 22_855_952)
        XCTAssertEqual(DPN(inChannels: 3, classes: 1000).parameterCount, 37_668_392)
        XCTAssertEqual(NASNetAMobile(inChannels: 3, classes: 1000).parameterCount, 5_289_978)
        // As the detector builds them: one-channel stem, no classifier (Documentation/Encoders.md).
        let reg = try! Registry.standard()
        let xray: [(String, Int)] = [("resnet34", 21_278_400), ("resnet50", 23_501_760), ("resnet101", 42_493_888),
                                     ("seresnext50_32x4d", 25_504_624), ("seresnext101_32x4d", 46_900_144),
                                     ("xception", 20_806_376), ("dpn92", 34_973_120), ("nasnetamobile", 4_232_402)]
        for (name, count) in xray { XCTAssertEqual(try reg.makeEncoder(name).parameterCount, count, name) }
    }

    func testReferenceParameterNames() {
        func names(_ m: Module) -> Set<String> { Set(m.stateDict().map(\.0)) }
        let expected: [(Module, [String])] = [
            (SEResNeXt(.seresnext50, classes: 10), ["layer0.conv1.weight", "layer0.bn1.running_var", "layer1.0.se_module.fc1.bias",
                                                     "layer2.0.downsample.0.weight", "layer4.2.bn3.weight", "last_linear.weight"]),
            (Xception(classes: 10), ["conv1.weight", "block1.rep.0.conv1.weight", "block1.rep.0.pointwise.weight", "block1.rep.4.running_mean",
                                     "block2.rep.1.conv1.weight", "block12.skipbn.bias", "conv4.pointwise.weight", "bn4.bias", "fc.bias"]),
            (DPN(classes: 10), ["features.conv1_1.conv.weight", "features.conv2_1.c1x1_w_s1.bn.weight", "features.conv3_1.c1x1_w_s2.conv.weight",
                                "features.conv4_20.c3x3_b.conv.weight", "features.conv5_bn_ac.bn.running_mean", "classifier.bias"]),
            (NASNetAMobile(classes: 10), ["conv0.conv.weight", "cell_stem_0.comb_iter_0_right.separable_1.depthwise_conv2d.weight",
                                          "cell_stem_1.path_2.conv.weight", "cell_6.final_path_bn.running_var", "reduction_cell_1.conv_prev_1x1.bn.bias",
                                          "cell_15.comb_iter_4_left.bn_sep_2.weight", "last_linear.weight"]),
        ]
        for (model, wanted) in expected {
            let have = names(model)
            for n in wanted { XCTAssertTrue(have.contains(n), "\(type(of: model)) lacks \(n)") }
        }
    }

    /// C2..C5 sit at the spec's strides (sizes rounded up), for sizes that are and are not
    /// multiples of 32: any size for Xception and DPN-92, multiples of 4 for SE-ResNeXt (its
    /// ceil-mode stem pool), multiples of 32 for NASNet-A-Mobile (as its reference).
    /// No child is forgotten: every parameter and buffer reachable from a detector through
    /// stored properties (wrapped, optional, in arrays, held as existentials) is one the
    /// module tree names, and so is saved, loaded and trained; and every name is unique.
    func testEveryTensorReachableByReflectionIsNamed() throws {
        let reg = try Registry.standard()
        for encoder in ["resnet18(width=0.25)", "resnet50(width=0.25)", "seresnext50_32x4d", "xception", "dpn92", "nasnetamobile"] {
            let d = try reg.makeDetector("retinanet(encoder=\(encoder), neck=fpn(channels=16), head=retina(channels=16), size=64)")
            var reachable = Set<ObjectIdentifier>(), visited = Set<ObjectIdentifier>()
            func walk(_ value: Any) {
                var target = value
                switch value {  // (the casts unwrap optionals)
                case let p as Parameter: reachable.insert(ObjectIdentifier(p)); return
                case let b as Buffer: reachable.insert(ObjectIdentifier(b)); return
                case is Tensor, is String: return
                case let m as Module:
                    guard visited.insert(ObjectIdentifier(m)).inserted else { return }
                    target = m
                default: break
                }
                var mirror: Mirror? = Mirror(reflecting: target)
                while let cur = mirror {
                    for child in cur.children { walk(child.value) }
                    mirror = cur.superclassMirror
                }
            }
            walk(d)
            let named = d.namedParameters().map { ObjectIdentifier($0.1) } + d.namedBuffers().map { ObjectIdentifier($0.1) }
            XCTAssertEqual(Set(named).count, named.count, "\(encoder): a tensor is named twice")
            let unnamed = reachable.subtracting(named).count
            let unreached = (d.namedParameters().map { ($0.0, ObjectIdentifier($0.1)) } + d.namedBuffers().map { ($0.0, ObjectIdentifier($0.1)) })
                .filter { !reachable.contains($0.1) }.map(\.0)
            XCTAssertEqual(unnamed, 0, "\(encoder): \(unnamed) reachable tensors have no name")
            XCTAssertEqual(unreached, [], "\(encoder): named but not found by the walk")
            let names = d.stateDict().map(\.0)
            XCTAssertEqual(Set(names).count, names.count, "\(encoder): two tensors share a name")
        }
    }

    func testFeatureShapesFollowTheSpec() throws {
        let reg = try Registry.standard()
        let sizes = ["seresnext50_32x4d": [64, 80, 68], "seresnext101_32x4d": [64], "nasnetamobile": [64, 96]]
        for (name, _) in Self.encoders where !name.hasPrefix("resnet") {
            let enc = try reg.makeEncoder(name)
            enc.eval()
            for size in sizes[name] ?? [64, 80, 66, 75] {
                let f = Autograd.inference { enc.features(Tensor.zeros([1, 1, size, size])) }
                XCTAssertEqual(f.map { $0.shape[1] }, enc.featureSpec.channels, "\(name) at \(size)")
                XCTAssertEqual(f.map { $0.shape[2] }, enc.featureSpec.strides.map { (size + $0 - 1) / $0 }, "\(name) at \(size)")
                XCTAssertEqual(f.map { $0.shape[3] }, enc.featureSpec.strides.map { (size + $0 - 1) / $0 }, "\(name) at \(size)")
            }
        }
    }

    /// The gradient with respect to the input equals central finite differences, for a
    /// fixed linear read-out of C2..C5 in eval mode: backward is right through every operation
    /// each encoder uses (grouped and depthwise convolutions, ceil-mode and asymmetric pools,
    /// channel slices and concatenations, squeeze and excitation).
    func testInputGradientsMatchFiniteDifferences() throws {
        let reg = try Registry.standard()
        for (name, size) in [("seresnext50_32x4d", 32), ("xception", 32), ("dpn92", 32), ("nasnetamobile", 32)] {
            let enc = try reg.makeEncoder(name)
            try ParityFiller.fill(enc, stem: enc.namedParameters()[0].0)
            enc.eval()
            let spec = enc.featureSpec.levels
            let readout = spec.enumerated().map { k, l in
                ParityFiller.image([1, l.channels, (size + l.stride - 1) / l.stride, (size + l.stride - 1) / l.stride]) - Float(0.5 + 0.1 * Double(k))
            }
            func objective(_ x: Tensor) -> Tensor {
                zip(enc.features(x), readout).map { ($0 * $1).sum() }.reduce(Tensor(0)) { $0 + $1 }
            }
            let image = ParityFiller.image([1, 1, size, size])
            let x = image.requiringGrad()
            let loss = Autograd.recordingGradients { objective(x) }
            loss.backward()
            let grad = try XCTUnwrap(x.grad, name).scalars
            let scale = grad.map { abs($0) }.reduce(0, +) / Float(grad.count)
            // Two step sizes: a ReLU or max-pool kink within one step spoils that difference
            // only (float32 noise rules out much smaller steps).
            var worst: Float = 0
            for p in stride(from: 37, to: size * size, by: 97) {
                let error = [Float(1e-3), 3e-4].map { h -> Float in
                    var plus = image.scalars, minus = image.scalars
                    plus[p] += h
                    minus[p] -= h
                    let (lp, lm) = Autograd.inference {
                        (objective(Tensor(shape: image.shape, scalars: plus)).scalar,
                         objective(Tensor(shape: image.shape, scalars: minus)).scalar)
                    }
                    return abs((lp - lm) / (2 * h) - grad[p]) / scale
                }.min()!
                worst = max(worst, error)
            }
            XCTAssertLessThan(worst, 0.05, "\(name): input gradient off by \(worst) of its mean magnitude \(scale)")
        }
    }

    /// Each new encoder trains inside a RetinaNet built from a config string: the loss is
    /// finite, every encoder parameter gets a gradient, and an Adam step changes the weights.
    func testTrainsInARetinaNet() throws {
        let reg = try Registry.standard()
        let target = DetectionTarget(boxes: [BoundingBox(x1: 16, y1: 12, x2: 40, y2: 44)], imageClass: .lungOpacity)
        for name in ["seresnext50_32x4d", "xception", "dpn92", "nasnetamobile"] {
            let detector = try Initializer.withSeed(7) {
                try reg.makeDetector("retinanet(encoder=\(name), size=64, neck=fpn(channels=16), head=retina(channels=16))")
            }
            detector.train()
            detector.freezeBatchNorm()
            let images = Tensor(shape: [1, 1, 64, 64], scalars: (0..<4096).map { Float($0 % 64) / 64 })
            let optimizer = Adam(detector.namedParameters(), learningRate: 1e-4)
            let stem = detector.encoder.namedParameters()[0].1
            let before = stem.value.scalars
            let loss = Autograd.recordingGradients { detector.losses(images, targets: [target]) }
            XCTAssertTrue(loss.total.scalar.isFinite, "\(name): loss \(loss.total.scalar)")
            loss.total.backward()
            let missing = detector.encoder.namedParameters().filter { $0.1.grad == nil }.map(\.0)
            XCTAssertEqual(missing, [], "\(name): parameters without a gradient")
            optimizer.step()
            XCTAssertNotEqual(stem.value.scalars, before, "\(name): the stem did not move")
        }
    }
}
