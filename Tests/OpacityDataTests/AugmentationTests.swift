import Foundation
import OpacityCore
import OpacityData
import OpacityTensor
import XCTest

final class AugmentationTests: XCTestCase {
    func assertBox(_ a: BoundingBox, _ b: BoundingBox, accuracy: Float = 1e-3, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.x, b.x, accuracy: accuracy, "x: \(a) vs \(b)", file: file, line: line)
        XCTAssertEqual(a.y, b.y, accuracy: accuracy, "y: \(a) vs \(b)", file: file, line: line)
        XCTAssertEqual(a.width, b.width, accuracy: accuracy, "w: \(a) vs \(b)", file: file, line: line)
        XCTAssertEqual(a.height, b.height, accuracy: accuracy, "h: \(a) vs \(b)", file: file, line: line)
    }

    func boxMap(_ g: GeometricParameters, size: Int = 1024, source: Int = 1024, rule: BoxMappingRule = .eightPoint,
                _ box: BoundingBox) -> BoundingBox {
        var cfg = AugmentationConfig.none
        cfg.boxRule = rule
        let aug = Augmenter(config: cfg, outputSize: size)
        return aug.outputToSource(g, sourceWidth: source, sourceHeight: source).inverse.map(box, rule: rule)
    }

    let box = BoundingBox(x: 100, y: 200, width: 50, height: 80)

    /// Plain resize 1024 -> 512 halves every coordinate.
    func testResizeMapsBoxes() {
        assertBox(boxMap(GeometricParameters(), size: 512, box), BoundingBox(x: 50, y: 100, width: 25, height: 40))
    }

    /// Flip: x' = 1024 - (x + w) = 874; y unchanged.
    func testFlipMapsBoxes() {
        assertBox(boxMap(GeometricParameters(flip: true), box), BoundingBox(x: 874, y: 200, width: 50, height: 80))
        // Flip + resize to 512: x' = 512 - 75 = 437.
        assertBox(boxMap(GeometricParameters(flip: true), size: 512, box), BoundingBox(x: 437, y: 100, width: 25, height: 40))
    }

    /// Rotation by 90 degrees about the centre: out = (y, 1024 - x); box (200, 874, 80, 50),
    /// the same under both rules.
    func testRotation90MapsBoxes() {
        let expected = BoundingBox(x: 200, y: 874, width: 80, height: 50)
        assertBox(boxMap(GeometricParameters(rotation: 90), rule: .eightPoint, box), expected)
        assertBox(boxMap(GeometricParameters(rotation: 90), rule: .corners, box), expected)
    }

    /// A 300x300 box at the centre rotated 45 degrees: corners give a 300*sqrt(2) = 424.26
    /// box; the 8 points (+-150, +-50) give (150 + 50)/sqrt(2) * 2 = 282.84.
    func testRotation45EightPointIsTighter() {
        let b = BoundingBox(x: 362, y: 362, width: 300, height: 300)
        let c = boxMap(GeometricParameters(rotation: 45), rule: .corners, b)
        let e = boxMap(GeometricParameters(rotation: 45), rule: .eightPoint, b)
        assertBox(c, BoundingBox(x: 512 - 212.132, y: 512 - 212.132, width: 424.264, height: 424.264), accuracy: 0.01)
        assertBox(e, BoundingBox(x: 512 - 141.421, y: 512 - 141.421, width: 282.843, height: 282.843), accuracy: 0.01)
    }

    /// Per-axis scale 2 on x about the centre (source 1024, output 1024): x' = 2(x - 512) + 512.
    func testScaleMapsBoxes() {
        let b = BoundingBox(x: 412, y: 462, width: 200, height: 100)
        assertBox(boxMap(GeometricParameters(scaleX: 2), b), BoundingBox(x: 312, y: 462, width: 400, height: 100))
        // Shift the centre by +32 px in x: everything moves 32 px left (before scale).
        assertBox(boxMap(GeometricParameters(shiftX: 32, scaleX: 2), b), BoundingBox(x: 248, y: 462, width: 400, height: 100))
        // Scale 0.5 in y to a 512 output: y' = (y - 512) * 0.25 + 256.
        assertBox(boxMap(GeometricParameters(scaleY: 0.5), size: 512, b),
                  BoundingBox(x: 206, y: (462 - 512) * 0.25 + 256, width: 100, height: 25))
    }

    /// The 8-point box lies inside the 4-corner box for random transforms and boxes.
    func testEightPointNeverLargerThanCorners() {
        var rng = RandomGenerator(seed: 5)
        let aug = Augmenter(config: .heavy, outputSize: 512)
        for _ in 0..<2000 {
            let g = aug.drawGeometry(sourceWidth: 1024, using: &rng)
            var g2 = g
            g2.rotation *= 5  // also large angles
            g2.shear *= 3
            let t = aug.outputToSource(g2, sourceWidth: 1024, sourceHeight: 1024).inverse
            let b = BoundingBox(x: rng.uniform(0, 900), y: rng.uniform(0, 900), width: rng.uniform(10, 500), height: rng.uniform(10, 900))
            let e = t.map(b, rule: .eightPoint), c = t.map(b, rule: .corners)
            XCTAssertGreaterThanOrEqual(e.x, c.x - 1e-3)
            XCTAssertGreaterThanOrEqual(e.y, c.y - 1e-3)
            XCTAssertLessThanOrEqual(e.x2, c.x2 + 1e-3)
            XCTAssertLessThanOrEqual(e.y2, c.y2 + 1e-3)
            XCTAssertLessThanOrEqual(e.area, c.area + 1e-2)
        }
    }

    /// The flip really mirrors the pixels, and the plain 2x resize is a 2x2 mean.
    func testPixelsFlipAndResize() {
        let w = 64
        var px = [UInt8](repeating: 0, count: w * w)
        for y in 0..<w { for x in 0..<w { px[y * w + x] = UInt8((x * 4 + y) % 256) } }
        let img = GrayImage(width: w, height: w, pixels: px)
        var rng = RandomGenerator(seed: 1)
        let same = Augmenter(config: .none, outputSize: w)
        let flipped = same.apply(img, boxes: [], geometry: GeometricParameters(flip: true), using: &rng).image
        for y in 0..<w { for x in 0..<w { XCTAssertEqual(flipped.pixels[y * w + x], Float(px[y * w + (w - 1 - x)]) / 255, accuracy: 1e-6) } }
        let plain = same.apply(img, boxes: [], geometry: GeometricParameters(), using: &rng).image
        XCTAssertEqual(plain.to8Bit(), img)
        let half = Augmenter(config: .none, outputSize: w / 2).apply(img, boxes: [], using: &rng).image
        for y in 0..<(w / 2) {
            for x in 0..<(w / 2) {
                let m = (Float(px[2 * y * w + 2 * x]) + Float(px[2 * y * w + 2 * x + 1]) + Float(px[(2 * y + 1) * w + 2 * x])
                    + Float(px[(2 * y + 1) * w + 2 * x + 1])) / 4 / 255
                XCTAssertEqual(half.pixels[y * (w / 2) + x], m, accuracy: 1e-5)
            }
        }
        let resized = GrayImage(width: w, height: w, pixels: px).toFloat().resized(width: w / 2, height: w / 2)
        XCTAssertLessThan(zip(half.pixels, resized.pixels).map { abs($0 - $1) }.max()!, 1e-5)
    }

    /// Seeded per sample: the same generator gives the same output; values stay in [0, 1].
    func testDeterministicAndInRange() throws {
        let img = try DICOM.readGray(rsnaImages.appendingPathComponent("00436515-870c-4b36-a041-de91049b9ab4.dcm"))
        let boxes = [BoundingBox(x: 264, y: 152, width: 213, height: 379)]
        var cfg = AugmentationConfig.heavy
        cfg.blurProbability = 1
        cfg.noiseProbability = 1
        cfg.saltPepperProbability = 1
        let aug = Augmenter(config: cfg, outputSize: 256)
        var r1 = RandomGenerator(seed: 9, stream: 3), r2 = RandomGenerator(seed: 9, stream: 3), r3 = RandomGenerator(seed: 9, stream: 4)
        let a = aug.apply(img, boxes: boxes, using: &r1), b = aug.apply(img, boxes: boxes, using: &r2)
        let c = aug.apply(img, boxes: boxes, using: &r3)
        XCTAssertEqual(a.image, b.image)
        XCTAssertEqual(a.boxes, b.boxes)
        XCTAssertNotEqual(a.image, c.image)
        XCTAssertTrue(a.image.pixels.allSatisfy { $0 >= 0 && $0 <= 1 })
        XCTAssertEqual(a.image.width, 256)
    }

    /// Over many draws the flip happens about half the time for heavy, never for light,
    /// and the drawn parameters have the configured spread.
    func testParameterDistributions() {
        var rng = RandomGenerator(seed: 11)
        let heavy = Augmenter(config: .heavy, outputSize: 512), light = Augmenter(config: .light, outputSize: 512)
        var flips = 0, rot: [Double] = [], sx: [Double] = [], shifts: [Double] = []
        for _ in 0..<4000 {
            let g = heavy.drawGeometry(sourceWidth: 1024, using: &rng)
            if g.flip { flips += 1 }
            rot.append(g.rotation)
            sx.append(log2(g.scaleX))
            shifts.append(g.shiftX)
            XCTAssertFalse(light.drawGeometry(sourceWidth: 1024, using: &rng).flip)
        }
        func std(_ v: [Double]) -> Double {
            let m = v.reduce(0, +) / Double(v.count)
            return (v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count)).squareRoot()
        }
        XCTAssertEqual(Double(flips) / 4000, 0.5, accuracy: 0.04)
        XCTAssertEqual(std(rot), 6, accuracy: 0.4)
        XCTAssertEqual(std(sx), 0.15, accuracy: 0.01)
        XCTAssertLessThanOrEqual(shifts.map(abs).max()!, 32)
        XCTAssertGreaterThan(shifts.map(abs).max()!, 30)
    }

    /// Presets by name, overrides, and clear errors for unknown names.
    func testPresetParsing() throws {
        XCTAssertEqual(try AugmentationConfig(parsing: "heavy"), .heavy)
        XCTAssertEqual(try AugmentationConfig(parsing: "heavy_custom_rotation"), .heavy)
        XCTAssertEqual(try AugmentationConfig(parsing: "heavy_norotation").rotationSigma, 0)
        XCTAssertEqual(try AugmentationConfig(parsing: "light_basic_rotation").boxRule, .corners)
        let c = try AugmentationConfig(parsing: "heavy, rotation=3, boxes=corners, flip=0")
        XCTAssertEqual(c.rotationSigma, 3)
        XCTAssertEqual(c.boxRule, .corners)
        XCTAssertEqual(c.flipProbability, 0)
        XCTAssertEqual(c.scaleSigma, 0.15)
        XCTAssertEqual(try AugmentationConfig(parsing: c.description), c)
        XCTAssertEqual(AugmentationConfig.light.gammaSigma, 0.2)
        XCTAssertEqual(AugmentationConfig.heavy.gammaSigma, 0.25)
        assertThrows(try AugmentationConfig(parsing: "hevy"), containing: ["hevy", "did you mean 'heavy'"])
        assertThrows(try AugmentationConfig(parsing: "heavy,rotaton=3"), containing: ["rotaton", "did you mean 'rotation'"])
        assertThrows(try AugmentationConfig(parsing: "heavy,flip=2"), containing: ["flip", "0...1"])
        assertThrows(try AugmentationConfig(parsing: "heavy,boxes=8points"), containing: ["boxes", "did you mean '8point'"])
        assertThrows(try AugmentationConfig(parsing: "heavy,scale=-1"), containing: ["scale", "0...1"])
    }

    /// Drawing and the preview grid produce the expected pixels.
    func testDrawingAndPreview() throws {
        var img = RGBImage(width: 40, height: 30)
        img.drawBox(BoundingBox(x: 5, y: 5, width: 10, height: 10), color: .red, thickness: 1)
        XCTAssertEqual(Array(img.pixels[3 * (5 * 40 + 5)..<(3 * (5 * 40 + 5) + 3)]), [255, 40, 40])
        XCTAssertEqual(Array(img.pixels[3 * (10 * 40 + 10)..<(3 * (10 * 40 + 10) + 3)]), [0, 0, 0])
        img.drawText("0.95", x: 0, y: 20, color: .white, scale: 1)
        XCTAssertTrue(img.pixels.contains(255))
        img.drawBox(BoundingBox(x: -50, y: -50, width: 500, height: 500), color: .green)  // clipped, no crash
        // Detections: a green box and its score on a green label above it.
        let gray = GrayImage(width: 300, height: 200, value: 100)
        let over = gray.overlay(truth: [BoundingBox(x: 10, y: 10, width: 50, height: 50)],
                                detections: [Detection(box: BoundingBox(x: 100, y: 60, width: 80, height: 90), score: 0.87)])
        func px(_ x: Int, _ y: Int) -> [UInt8] { Array(over.pixels[3 * (y * 300 + x)..<(3 * (y * 300 + x) + 3)]) }
        XCTAssertEqual(px(10, 30), [255, 40, 40])
        XCTAssertEqual(px(100, 100), [40, 230, 60])
        XCTAssertEqual(px(140, 100), [100, 100, 100])
        var labelDots = 0
        for y in 40..<60 { for x in 100..<130 where px(x, y) == [0, 0, 0] { labelDots += 1 } }
        XCTAssertGreaterThan(labelDots, 10)  // black "0.87" on the green label
        let ds = try RSNADataset.load(root: rsnaFolder, options: .init(
            labelsFile: rsnaFolder.appendingPathComponent("example_train_labels.csv"),
            classInfoFile: rsnaFolder.appendingPathComponent("example_detailed_class_info.csv")))
        let positives = DetectionDataset(records: ds.records.filter { !$0.boxes.isEmpty })
        let grid = try PreviewGrid.augmentations(of: positives, augmenter: Augmenter(config: .heavy, outputSize: 128),
                                                 count: 6, columns: 3, seed: 1)
        XCTAssertEqual(grid.width, 3 * 128 + 4 * 4)
        XCTAssertEqual(grid.height, 2 * 128 + 3 * 4)
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        try PNG.write(grid, to: dir.appendingPathComponent("grid.png"))
        guard case .rgb = try PNG.read(dir.appendingPathComponent("grid.png")) else { return XCTFail("grid is RGB") }
        // Red box pixels are present.
        var red = 0
        for i in stride(from: 0, to: grid.pixels.count, by: 3) where grid.pixels[i] == 255 && grid.pixels[i + 1] == 40 { red += 1 }
        XCTAssertGreaterThan(red, 100)
    }
}
