import Foundation
import Opacity
import XCTest

/// The backbone contract's input sizes: every registered encoder, at every size from 88 to 100
/// and at three sizes below 64 (33, 50, 63: not multiples of 32) that the registry accepts, runs inside a RetinaNet with maps of exactly `ceil(size / stride)`;
/// every size it refuses is refused before anything is allocated, naming the key and the
/// nearest valid size; and for encoders that do not trap at a refused size, the maps there
/// are indeed off the anchor grid (so the rule is not stricter than needed).
final class InputSizeTests: XCTestCase {
    static let sizes = Array(88...100) + [33, 50, 63]

    func config(_ encoder: String, size: Int) -> String {
        "retinanet(encoder=\(encoder), neck=fpn(channels=16), head=retina(channels=16), size=\(size))"
    }

    func testEveryEncoderAtEverySizeTheRegistryAccepts() throws {
        let registry = try Registry.standard()
        var accepted: [String: [Int]] = [:]
        for name in registry.names(.encoder) {
            let started = Date()
            defer { print("input sizes \(name): \(accepted[name]?.count ?? 0) accepted in \(Self.sizes), \(String(format: "%.1f", Date().timeIntervalSince(started))) s") }
            // one set of weights per encoder (size is not a weight shape): built at the
            // first accepted size and shared by a detector per size
            var base: Detector?
            for size in Self.sizes {
                let text = config(name, size: size)
                let factory = try registry.encoderFactory(name)
                do {
                    _ = try registry.checkDetector(text)
                } catch let ConfigError.invalidValue(component, key, value, expected) {
                    XCTAssertEqual(component, "retinanet")
                    XCTAssertEqual(key, "size", "\(name) \(size)")
                    XCTAssertEqual(value, "\(size)")
                    XCTAssertFalse(factory.inputSizes.accepts(size), "\(name) \(size)")
                    let nearest = try XCTUnwrap(factory.inputSizes.nearest(to: size, in: 32...2048))
                    XCTAssertTrue(expected.contains("nearest valid size: \(nearest)"), expected)
                    XCTAssertTrue(abs(nearest - size) <= 16, "\(name) \(size) -> \(nearest)")
                    XCTAssertNoThrow(try registry.checkDetector(config(name, size: nearest)), "\(name) \(nearest)")
                    if name != "nasnetamobile" {
                        // runs, but the maps miss the anchor grid
                        let d = try XCTUnwrap(base, "\(name): a refused size before any accepted one")
                        let maps = Autograd.inference { d.encoder.features(Tensor.zeros([1, 1, size, size])) }
                        XCTAssertNotEqual(maps.map { $0.shape[2] }, d.encoder.featureSpec.strides.map { (size + $0 - 1) / $0 },
                                          "\(name) refuses \(size) although its maps fit")
                    }
                    continue
                }
                accepted[name, default: []].append(size)
                if base == nil { base = try Initializer.withSeed(1) { try registry.makeDetector(text) } }
                let b = try XCTUnwrap(base)
                b.eval()
                let d = Detector(config: text, encoder: b.encoder, neck: b.neck, head: b.head, loss: b.lossFunction,
                                 postprocessor: b.postprocessor, anchors: b.anchorGenerator, inputSize: size)
                var rng = RandomGenerator(seed: UInt64(size))
                let x = Tensor.randomUniform([1, 1, size, size], using: &rng)
                let maps = Autograd.inference { d.encoder.features(x) }
                XCTAssertEqual(maps.map { [$0.shape[2], $0.shape[3]] }, d.encoder.featureSpec.strides.map { [(size + $0 - 1) / $0, (size + $0 - 1) / $0] },
                               "\(name) at \(size)")
                // the rest of Detector.forward on those maps: neck, head, anchors
                let out = Autograd.inference { d.head.predict(pyramid: d.neck.pyramid(maps), deepest: maps[maps.count - 1]) }
                XCTAssertEqual(out.classLogits.shape[1], d.anchors(height: size, width: size).count)
                XCTAssertTrue(out.classLogits.scalars.allSatisfy(\.isFinite), "\(name) at \(size)")
            }
        }
        // what the rules say, measured over the range
        XCTAssertEqual(accepted["nasnetamobile"], [95, 96, 63])
        XCTAssertEqual(accepted["seresnext50_32x4d"], Self.sizes.filter { $0 % 4 == 0 || $0 % 4 == 3 })
        for name in ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "xception", "dpn92"] {
            XCTAssertEqual(accepted[name], Self.sizes, name)
        }
    }

    /// The issue's case: NASNet at 100 used to pass the check and trap inside a cell.
    func testNASNetAt100IsRefusedWithTheNearestSize() throws {
        let registry = try Registry.standard()
        XCTAssertThrowsError(try registry.makeDetector("retinanet(encoder=nasnetamobile, size=100)")) { e in
            XCTAssertEqual("\(e)", "retinanet: size=100 is invalid; expected a size encoder nasnetamobile accepts (multiples of 32 and one less, e.g. 96, 127, 128); nearest valid size: 96")
        }
        XCTAssertThrowsError(try registry.checkDetector("retinanet(encoder=seresnext101_32x4d, size=509)")) { e in
            XCTAssertTrue("\(e)".hasSuffix("nearest valid size: 508"), "\(e)")
        }
        XCTAssertNoThrow(try registry.checkDetector("retinanet(encoder=nasnetamobile, size=512)"))
        XCTAssertEqual(InputSizeRule.any.nearest(to: 7, in: 32...64), 32)
        XCTAssertEqual(NASNetAMobile.inputSizes.nearest(to: 79, in: 32...2048), 64)  // 15 below, 16 above: 95
    }
}

/// The pyramid's deepest levels at sizes that are not multiples of their stride: P7 has
/// stride 128, so a 100 px input gives a 1x1 P7 (and 2x2 P6), exactly the anchor grid
/// `ceil(size / stride)`. Every level's map must match its anchors at every size the key
/// admits, from its lower bound 32 up, so the detector needs no size rule of its own.
final class PyramidGridTests: XCTestCase {
    static let sizes = [32, 33, 40, 50, 63, 64, 65, 96, 100, 127, 128, 130]

    func testEveryLevelMatchesItsAnchorGridAtSizesOffTheDeepestStride() throws {
        let registry = try Registry.standard()
        for levels in ["2-7", "3-7", "3-6"] {
            let config = { (size: Int) in
                "retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=16), head=retina(channels=16), levels=\(levels), size=\(size))"
            }
            let base = try Initializer.withSeed(7) { try registry.makeDetector(config(128)) }
            for size in Self.sizes {
                XCTAssertNoThrow(try registry.checkDetector(config(size)), "levels \(levels) size \(size)")
                let d = Detector(config: config(size), encoder: base.encoder, neck: base.neck, head: base.head, loss: base.lossFunction,
                                 postprocessor: base.postprocessor, anchors: base.anchorGenerator, inputSize: size)
                var rng = RandomGenerator(seed: UInt64(size))
                let x = Tensor.randomUniform([1, 1, size, size], using: &rng)
                let pyramid = Autograd.inference { d.neck.pyramid(d.encoder.features(x)) }
                let anchors = d.anchors(height: size, width: size)
                let grids = d.anchorGenerator.levels.map { AnchorGenerator.gridSize(size, level: $0) }
                XCTAssertEqual(pyramid.map { [$0.shape[2], $0.shape[3]] }, grids.map { [$0, $0] }, "levels \(levels) size \(size)")
                XCTAssertEqual(anchors.levelCounts, grids.map { $0 * $0 * d.anchorGenerator.perLocation }, "levels \(levels) size \(size)")
                if levels == "2-7", size == 100 { XCTAssertEqual(grids.suffix(2), [2, 1]) }  // P6 2x2, P7 1x1
                // a training forward pass: finite losses with a box that matches anchors
                let box = BoundingBox(x: Float(size) / 4, y: Float(size) / 4, width: Float(size) / 3, height: Float(size) / 3)
                d.train()
                let terms = d.losses(x, targets: [DetectionTarget(boxes: [box], imageClass: .lungOpacity)])
                XCTAssertTrue(terms.total.scalars.allSatisfy(\.isFinite), "levels \(levels) size \(size)")
                d.eval()
                let found = d.detect(x)
                XCTAssertEqual(found.count, 1)
            }
        }
    }
}
