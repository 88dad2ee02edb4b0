import Opacity
import XCTest

/// The template plugin of Examples/TinyBackbone, compiled into this test target from the same
/// file (EncoderTemplate+TinyBackbone.swift links to it): registered next to the built-in
/// plugins, used by config string, its feature spec checked, and trained through the public
/// API only. `scripts/check-example.sh` builds and runs the example package itself.
final class EncoderTemplateTests: XCTestCase {
    static let config = "retinanet(encoder=tiny_backbone, size=64, neck=fpn(channels=16), head=retina(channels=16))"

    func testRegistersNextToTheBuiltinPlugins() throws {
        let registry = try Registry(plugins: builtinPlugins + [TinyBackbonePlugin.self])
        XCTAssertEqual(registry.plugins.last, "TinyBackbone")
        let info = try registry.info(.encoder, "tiny_backbone")
        XCTAssertEqual(info.parameters.map(\.name), ["in_channels", "width"])
        XCTAssertEqual(try registry.canonical("retinanet(encoder=tiny_backbone(width=16, in_channels=1))"), "retinanet(encoder=tiny_backbone)")
        XCTAssertEqual(try registry.encoderSpec("tiny_backbone(width=8)").channels, [8, 16, 32, 64])
        // Without the plugin the name is unknown, and the error says what is known.
        XCTAssertThrowsError(try Registry.standard().makeDetector(Self.config)) { e in
            XCTAssertTrue("\(e)".contains("unknown encoder 'tiny_backbone'"), "\(e)")
        }
        // Registering it twice is refused.
        XCTAssertThrowsError(try Registry(plugins: builtinPlugins + [TinyBackbonePlugin.self, TinyBackbonePlugin.self]))
    }

    func testFeatureMapsFollowTheSpec() throws {
        let registry = try Registry(plugins: builtinPlugins + [TinyBackbonePlugin.self])
        for (config, size) in [("tiny_backbone", 64), ("tiny_backbone(width=4)", 96), ("tiny_backbone(width=4)", 100)] {
            let encoder = try registry.makeEncoder(config)
            let declared = try registry.encoderSpec(config)
            XCTAssertEqual(encoder.featureSpec, declared, config)
            let maps = Autograd.inference { encoder.features(Tensor.zeros([2, 1, size, size])) }
            XCTAssertEqual(maps.map { Array($0.shape[1...]) },
                           declared.levels.map { [$0.channels, (size + $0.stride - 1) / $0.stride, (size + $0.stride - 1) / $0.stride] },
                           "\(config) at \(size)")
        }
    }

    func testTrainsARetinaNetThroughThePublicAPI() throws {
        let registry = try Registry(plugins: builtinPlugins + [TinyBackbonePlugin.self])
        let detector = try Initializer.withSeed(1) { try registry.makeDetector(Self.config) }
        XCTAssertTrue(detector.encoder is TinyBackbone)
        XCTAssertTrue(detector.namedParameters().contains { $0.0 == "encoder.stages.3.block.conv.weight" })
        detector.train()
        detector.freezeBatchNorm()
        let optimizer = Adam(detector.namedParameters(), learningRate: 1e-3)
        var losses: [Float] = []
        for step in 0..<12 {
            var pixels = [Float](repeating: 0.1, count: 2 * 64 * 64)
            var targets: [DetectionTarget] = []
            for b in 0..<2 {
                let i = step * 2 + b, x0 = 8 + (i * 7) % 24, y0 = 10 + (i * 5) % 20
                for y in y0..<(y0 + 20) { for x in x0..<(x0 + 20) { pixels[b * 4096 + y * 64 + x] = 0.9 } }
                targets.append(DetectionTarget(boxes: [BoundingBox(x1: Float(x0), y1: Float(y0), x2: Float(x0 + 20), y2: Float(y0 + 20))],
                                               imageClass: .lungOpacity))
            }
            optimizer.zeroGrad()
            let terms = Autograd.recordingGradients {
                detector.losses(Tensor(shape: [2, 1, 64, 64], scalars: pixels), targets: targets)
            }
            terms.total.backward()
            optimizer.step()
            losses.append(terms.total.scalar)
        }
        XCTAssertTrue(losses.allSatisfy(\.isFinite), "\(losses)")
        XCTAssertLessThan(losses.suffix(3).reduce(0, +), losses.prefix(3).reduce(0, +), "\(losses)")
        let found = detector.detect(Tensor.zeros([1, 1, 64, 64]))
        XCTAssertEqual(found.count, 1)
    }
}
