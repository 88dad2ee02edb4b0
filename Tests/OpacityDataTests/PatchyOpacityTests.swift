import Foundation
import OpacityCore
import OpacityData
import OpacityTensor
import XCTest

/// The patchy opacity style (``SyntheticOpacityStyle/patchy``): deterministic, boxed the way
/// the RSNA readers boxed (each visible region inside a box), inside the lungs, lower-zone
/// and often bilateral, and its settings checked.
final class PatchyOpacityTests: XCTestCase {
    static let size = 192

    func inBox(_ b: BoundingBox, _ x: Float, _ y: Float) -> Bool { x >= b.x && x <= b.x2 && y >= b.y && y <= b.y2 }

    func generator(seed: UInt64 = 11, count: Int = 64, style: SyntheticOpacityStyle = .patchy, bronchi: Double = 0.35) throws
        -> SyntheticChestXRay
    {
        try SyntheticChestXRay(config: SyntheticConfig(count: count, size: Self.size, seed: seed, classFractions: (1, 0, 0), threads: 1,
                                                       opacityStyle: style, airBronchogramRate: bronchi))
    }

    /// The same seed gives the same pixels and boxes; another seed or the other style differs.
    func testDeterministicFromTheSeed() throws {
        let a = try generator().generate(index: 5), b = try generator().generate(index: 5)
        XCTAssertEqual(a.image, b.image)
        XCTAssertEqual(a.boxes, b.boxes)
        XCTAssertEqual(a.id, b.id)
        let c = try generator(seed: 12).generate(index: 5)
        XCTAssertNotEqual(a.image, c.image)
        let d = try generator(style: .ovals).generate(index: 5)
        XCTAssertEqual(d.id, a.id, "the style changes the opacities, not the patient ids")
        XCTAssertNotEqual(d.image, a.image)
        // the default style is still the original ovals (the composite zoo model's data)
        XCTAssertEqual(SyntheticConfig().opacityStyle, .ovals)
        let e = try SyntheticChestXRay(config: SyntheticConfig(count: 64, size: Self.size, seed: 11, classFractions: (1, 0, 0), threads: 1))
            .generate(index: 5)
        XCTAssertEqual(e.image, d.image)
    }

    /// Drawn onto a flat image (no grain), the added density shows where the opacity is: the
    /// boxes hold nearly all of it, nothing clearly visible lies outside a box, every box holds
    /// a clearly visible opacity, and every trace of it lies inside a lung field.
    func testBoxesCoverTheOpacityInsideTheLungs() throws {
        let n = Self.size, s = Float(n)
        let gen = try generator()
        let lungs = [
            LungRegion(centerX: 0.31 * s, centerY: 0.47 * s, radiusX: 0.15 * s, radiusY: 0.28 * s),
            LungRegion(centerX: 0.69 * s, centerY: 0.47 * s, radiusX: 0.15 * s, radiusY: 0.28 * s),
        ]
        var inside = 0.0, total = 0.0, boxCount = 0
        var peaks: [Float] = []
        for k in 0..<40 {
            var image = FloatImage(width: n, height: n, pixels: [Float](repeating: 0.3, count: n * n))
            var rng = RandomGenerator(seed: 99, stream: UInt64(k))
            let boxes = gen.addOpacities(to: &image, lungs: lungs, rng: &rng)
            XCTAssertFalse(boxes.isEmpty, "draw \(k) has no box")
            boxCount += boxes.count
            var peak = [Float](repeating: 0, count: boxes.count)
            for y in 0..<n {
                for x in 0..<n {
                    let added = image.pixels[y * n + x] - 0.3
                    XCTAssertGreaterThanOrEqual(added, 0)
                    if added <= 0.002 { continue }
                    let fx = Float(x) + 0.5, fy = Float(y) + 0.5
                    let lungDistance = lungs.map { $0.distance(x: fx, y: fy) }.min()!
                    XCTAssertLessThan(lungDistance, 1, "draw \(k): density \(added) outside the lungs at (\(x), \(y))")
                    let owners = boxes.indices.filter { inBox(boxes[$0], fx, fy) }
                    total += Double(added)
                    if owners.isEmpty {
                        XCTAssertLessThan(added, 0.11, "draw \(k): visible density \(added) outside every box at (\(x), \(y))")
                    } else {
                        inside += Double(added)
                        for o in owners { peak[o] = max(peak[o], added) }
                    }
                }
            }
            for (b, p) in zip(boxes, peak) {
                // at least the faintest visible opacity: amplitude 0.12 x envelope 0.3 x texture 0.35 x 0.82
                XCTAssertGreaterThan(p, 0.01, "draw \(k): box \(b) holds no visible opacity")
                peaks.append(p)
                let ok = lungs.contains { l in
                    let bb = l.boundingBox
                    return b.x >= bb.x - 1 && b.y >= bb.y - 1 && b.x2 <= bb.x2 + 1 && b.y2 <= bb.y2 + 1
                }
                XCTAssertTrue(ok, "draw \(k): box \(b) is not within a lung field")
            }
        }
        XCTAssertGreaterThan(inside / total, 0.8, "the boxes hold \(inside / total) of the added density")
        XCTAssertGreaterThanOrEqual(boxCount, 40)
        XCTAssertGreaterThan(peaks.sorted()[peaks.count / 2], 0.1, "median peak density in a box")
    }

    /// Over many images: opacities sit low in the lungs and two-region images are mostly
    /// bilateral; box sides are at least the smallest RSNA ones; ids and classes are the
    /// same as with ovals.
    func testLowerZoneAndBilateral() throws {
        let gen = try generator(count: 120)
        var lower = 0, all = 0, pairs = 0, bilateral = 0
        for i in 0..<120 {
            let c = try gen.generate(index: i)
            XCTAssertEqual(c.imageClass, .lungOpacity)
            XCTAssertFalse(c.boxes.isEmpty)
            let owner = c.boxes.map { b in c.lungs.indices.min { c.lungs[$0].distance(x: b.centerX, y: b.centerY) < c.lungs[$1].distance(x: b.centerX, y: b.centerY) }! }
            for (b, l) in zip(c.boxes, owner) {
                all += 1
                if b.centerY > c.lungs[l].centerY { lower += 1 }
                XCTAssertGreaterThanOrEqual(min(b.width, b.height), 0.045 * Float(Self.size) - 0.01)
            }
            if c.boxes.count == 2 {
                pairs += 1
                if owner[0] != owner[1] { bilateral += 1 }
            }
        }
        XCTAssertGreaterThan(Double(lower) / Double(all), 0.6, "\(lower) of \(all) boxes below the lung centre")
        XCTAssertGreaterThan(pairs, 10)
        XCTAssertGreaterThan(Double(bilateral) / Double(pairs), 0.7, "\(bilateral) of \(pairs) two-box images bilateral")
    }

    /// Air bronchograms are lucent lines inside the consolidation: drawn on flat films, the
    /// added density has many more narrow valleys (a pixel well below both neighbours 3 pixels
    /// away, across a line) with rate 1 than with rate 0, and none reach outside the opacity.
    func testAirBronchogramsAreDarkerLinesInsideTheOpacity() throws {
        let n = 256, s = Float(n)
        let lungs = [
            LungRegion(centerX: 0.31 * s, centerY: 0.47 * s, radiusX: 0.15 * s, radiusY: 0.28 * s),
            LungRegion(centerX: 0.69 * s, centerY: 0.47 * s, radiusX: 0.15 * s, radiusY: 0.28 * s),
        ]
        func valleys(rate: Double) throws -> Int {
            let gen = try SyntheticChestXRay(config: SyntheticConfig(count: 1, size: n, threads: 1, opacityStyle: .patchy, airBronchogramRate: rate))
            var count = 0
            for k in 0..<12 {
                var image = FloatImage(width: n, height: n, pixels: [Float](repeating: 0.3, count: n * n))
                var rng = RandomGenerator(seed: 5, stream: UInt64(k))
                _ = gen.addOpacities(to: &image, lungs: lungs, rng: &rng)
                let a = image.pixels.map { $0 - 0.3 }
                for y in 3..<(n - 3) {
                    for x in 3..<(n - 3) {
                        let v = a[y * n + x]
                        guard min(a[y * n + x - 3], a[y * n + x + 3]) > 0.08 || min(a[(y - 3) * n + x], a[(y + 3) * n + x]) > 0.08 else { continue }
                        if v < 0.5 * min(a[y * n + x - 3], a[y * n + x + 3]) || v < 0.5 * min(a[(y - 3) * n + x], a[(y + 3) * n + x]) { count += 1 }
                    }
                }
            }
            return count
        }
        let with = try valleys(rate: 1), without = try valleys(rate: 0)
        XCTAssertGreaterThan(with, 3 * max(without, 10), "valley pixels: \(with) with air bronchograms, \(without) without")
    }

    /// A rate outside 0...1 (or NaN) is refused, naming the field and the valid range.
    func testBadBronchogramRateIsRefused() {
        for bad in [-0.1, 1.5, Double.nan] {
            XCTAssertThrowsError(try SyntheticChestXRay(config: SyntheticConfig(count: 4, airBronchogramRate: bad))) { error in
                guard case let DataError.invalidParameter(name, _, expected, _) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(name, "airBronchogramRate")
                XCTAssertTrue(expected.contains("0 to 1"), expected)
                XCTAssertTrue("\(error)".contains("airBronchogramRate"), "\(error)")
            }
        }
    }
}
