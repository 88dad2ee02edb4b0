import Foundation
import OpacityCore
import OpacityData
import XCTest

final class SyntheticTests: XCTestCase {
    /// A small set in the RSNA layout: the RSNA loader reads it, counts match the request,
    /// boxes match the generator's and lie inside the lungs, and the batch loader reads it.
    func testSyntheticSetRoundTrip() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = SyntheticConfig(count: 40, size: 256, seed: 3, threads: 2)
        let gen = try SyntheticChestXRay(config: config)
        let updates = UpdateLog()
        let cases = try gen.write(to: dir, progress: { updates.append($0) })
        XCTAssertEqual(cases.count, 40)
        XCTAssertEqual(updates.count, 40)
        let ds = try RSNADataset.load(root: dir, options: .init(imageCheck: .decode))
        XCTAssertEqual(ds.count, 40)
        // 0.225, 0.443, 0.332 of 40 -> 9, 18, 13.
        XCTAssertEqual(ds.classCounts[ImageClass.lungOpacity.rawValue], 9)
        XCTAssertEqual(ds.classCounts[ImageClass.notNormal.rawValue], 18)
        XCTAssertEqual(ds.classCounts[ImageClass.normal.rawValue], 13)
        for (r, c) in zip(ds.records, cases) {
            XCTAssertEqual(r.id, c.id)
            XCTAssertEqual(r.imageClass, c.imageClass)
            XCTAssertEqual(r.boxes.count, c.boxes.count)
            XCTAssertEqual(r.boxes.isEmpty, r.imageClass != .lungOpacity)
            for (a, b) in zip(r.boxes, c.boxes) {
                XCTAssertEqual(a.x, b.x, accuracy: 0.051)
                XCTAssertEqual(a.height, b.height, accuracy: 0.051)
            }
            for b in c.boxes { assertInsideLung(b, c.lungs) }
            let img = try PNG.readGray(r.imageURL!)
            XCTAssertEqual(img.width, 256)
        }
        let loader = try BatchLoader(dataset: ds, config: LoaderConfig(batchSize: 8, imageSize: 128, augmentation: .light, workers: 2))
        let it = loader.epoch(0)
        var seen = 0
        while let b = try it.next() {
            XCTAssertEqual(b.images.shape[1...], [1, 128, 128])
            seen += b.ids.count
        }
        XCTAssertEqual(seen, 40)
    }

    func assertInsideLung(_ b: BoundingBox, _ lungs: [LungRegion], file: StaticString = #filePath, line: UInt = #line) {
        let ok = lungs.contains { l in
            let bb = l.boundingBox
            return b.x >= bb.x - 0.01 && b.y >= bb.y - 0.01 && b.x2 <= bb.x2 + 0.01 && b.y2 <= bb.y2 + 0.01
                && l.contains(x: b.centerX, y: b.centerY)
        }
        XCTAssertTrue(ok, "box \(b) is not inside a lung \(lungs)", file: file, line: line)
    }

    /// Box statistics at the 1024 scale are close to the RSNA ones (median 217 x 298,
    /// min 40 x 45; mostly 1-2 boxes per image).
    func testBoxStatistics() throws {
        let gen = try SyntheticChestXRay(config: SyntheticConfig(count: 1200, size: 128, seed: 5,
                                                                 classFractions: (1, 0, 0)))
        var widths: [Float] = [], heights: [Float] = [], perImage = [Int: Int]()
        for i in 0..<400 {
            let c = try gen.generate(index: i)
            perImage[c.boxes.count, default: 0] += 1
            for b in c.boxes {
                widths.append(b.width * 8)
                heights.append(b.height * 8)
                assertInsideLung(b, c.lungs)
            }
        }
        widths.sort()
        heights.sort()
        let mw = widths[widths.count / 2], mh = heights[heights.count / 2]
        XCTAssertEqual(mw, 217, accuracy: 30, "median width")
        XCTAssertEqual(mh, 298, accuracy: 40, "median height")
        XCTAssertGreaterThanOrEqual(widths.first!, 39)
        XCTAssertGreaterThanOrEqual(heights.first!, 44)
        XCTAssertLessThanOrEqual(widths.last!, 528)
        XCTAssertLessThanOrEqual(heights.last!, 942)
        XCTAssertEqual(Double(perImage[1, default: 0]) / 400, 0.435, accuracy: 0.08)
        XCTAssertEqual(Double(perImage[2, default: 0]) / 400, 0.543, accuracy: 0.08)
        XCTAssertEqual(perImage[0, default: 0], 0)
    }

    /// Same seed, same files; another seed, other files. Opacities brighten their box.
    func testDeterminismAndContent() throws {
        let config = SyntheticConfig(count: 6, size: 128, seed: 11, classFractions: (1, 1, 1), threads: 2)
        let a = try SyntheticChestXRay(config: config), b = try SyntheticChestXRay(config: config)
        for i in 0..<6 {
            let x = try a.generate(index: i), y = try b.generate(index: i)
            XCTAssertEqual(x.id, y.id)
            XCTAssertEqual(x.image, y.image)
            XCTAssertEqual(x.boxes, y.boxes)
        }
        var other = config
        other.seed = 12
        XCTAssertNotEqual(try SyntheticChestXRay(config: other).generate(index: 0).image, try a.generate(index: 0).image)
        // Each class appears twice; findings only on "not normal".
        let cases = try (0..<6).map { try a.generate(index: $0) }
        XCTAssertEqual(cases.filter { $0.imageClass == .notNormal }.count, 2)
        XCTAssertTrue(cases.allSatisfy { ($0.imageClass == .notNormal) == !$0.findings.isEmpty })
        // Lungs are darker than the spine; an opacity brightens its box relative to the
        // same box drawn without it (same seed, normal class).
        let c = try SyntheticChestXRay(config: SyntheticConfig(count: 1, size: 256, seed: 2, classFractions: (1, 0, 0))).generate(index: 0)
        let n = try SyntheticChestXRay(config: SyntheticConfig(count: 1, size: 256, seed: 2, classFractions: (0, 0, 1))).generate(index: 0)
        func mean(_ img: GrayImage, _ b: BoundingBox) -> Double {
            var s = 0.0, k = 0
            for y in Int(b.y)..<Int(b.y2) { for x in Int(b.x)..<Int(b.x2) { s += Double(img[x, y]); k += 1 } }
            return s / Double(k)
        }
        let box = c.boxes[0]
        XCTAssertGreaterThan(mean(c.image, box), mean(n.image, box) + 10)
        let lung = c.lungs[0]
        XCTAssertLessThan(mean(n.image, BoundingBox(x: lung.centerX - 5, y: lung.centerY - 5, width: 10, height: 10)),
                          mean(n.image, BoundingBox(x: 124, y: 100, width: 8, height: 20)))
    }

    /// Composite mode: opacities on real backgrounds (the NIH films), written as JPEG
    /// DICOMs like the RSNA files.
    func testCompositeOnRealBackgroundsAsDICOM() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = SyntheticConfig(count: 6, size: 256, seed: 4, classFractions: (2, 1, 0),
                                     backgroundFolder: realdata.appendingPathComponent("nih"), format: .dicomJPEG(quality: 92), threads: 2)
        let cases = try SyntheticChestXRay(config: config).write(to: dir)
        let ds = try RSNADataset.load(root: dir, options: .init(imageCheck: .decode))
        XCTAssertEqual(ds.count, 6)
        XCTAssertEqual(ds.classCounts, [2, 0, 4])
        XCTAssertTrue(ds.records.allSatisfy { $0.imageURL!.pathExtension == "dcm" })
        for c in cases { for b in c.boxes { assertInsideLung(b, c.lungs) } }
        let header = try DICOM.readHeader(ds.records[0].imageURL!)
        XCTAssertEqual(header.transferSyntax, .jpegBaseline)
        XCTAssertEqual(header.rows, 256)
    }

    /// Bad settings fail clearly.
    func testErrors() throws {
        assertThrows(try SyntheticChestXRay(config: SyntheticConfig(count: 0)), containing: ["count", "at least 1"])
        assertThrows(try SyntheticChestXRay(config: SyntheticConfig(size: 10)), containing: ["size", "64"])
        assertThrows(try SyntheticChestXRay(config: SyntheticConfig(classFractions: (0, 0, 0))), containing: ["classFractions"])
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        assertThrows(try SyntheticChestXRay(config: SyntheticConfig(backgroundFolder: dir)), containing: [dir.path, "background"])
        assertThrows(try SyntheticChestXRay(config: SyntheticConfig(backgroundFolder: dir.appendingPathComponent("x"))),
                     containing: ["x", "folder"])
    }

    /// Writes a preview of full-size synthetic images when OPACITY_PREVIEW_DIR is set
    /// (for looking at them; not a check).
    func testWritePreviewWhenAsked() throws {
        guard let out = ProcessInfo.processInfo.environment["OPACITY_PREVIEW_DIR"] else { return }
        let gen = try SyntheticChestXRay(config: SyntheticConfig(count: 12, size: 1024, seed: 1, classFractions: (1, 1, 1)))
        let tiles = try (0..<9).map { i -> PreviewTile in
            let c = try gen.generate(index: i)
            return PreviewTile(image: c.image, boxes: c.boxes, caption: c.imageClass.shortName + " " + c.findings.joined(separator: " "))
        }
        try PNG.write(PreviewGrid.render(tiles, columns: 3, tileSize: 512), to: URL(fileURLWithPath: out).appendingPathComponent("synthetic.png"))
        let comp = try SyntheticChestXRay(config: SyntheticConfig(count: 4, size: 512, seed: 1, classFractions: (1, 0, 0),
                                                                  backgroundFolder: realdata.appendingPathComponent("nih")))
        let t2 = try (0..<4).map { i -> PreviewTile in
            let c = try comp.generate(index: i)
            return PreviewTile(image: c.image, boxes: c.boxes, caption: "COMPOSITE")
        }
        try PNG.write(PreviewGrid.render(t2, columns: 2, tileSize: 512), to: URL(fileURLWithPath: out).appendingPathComponent("composite.png"))
    }
}

/// Thread-safe log of progress updates.
final class UpdateLog: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [ProgressUpdate] = []
    func append(_ u: ProgressUpdate) {
        lock.lock()
        items.append(u)
        lock.unlock()
    }
    var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return items.count
    }
}
