import Foundation
import Opacity
import XCTest

/// The first zoo entry ships in zoo/ and is usable by name, as the README shows.
final class ZooModelTests: XCTestCase {
    let entryName = "retinanet-r34-composite"
    let realdata = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/realdata")

    func testEntryIsVerifiedAndLoadsByName() throws {
        let zoo = try Zoo.standard()
        _ = try zoo.item(entryName)
        let detector = try Zoo.load(entryName, registry: try Registry.standard())
        XCTAssertEqual(detector.inputSize, 256)
        XCTAssertTrue(detector.config.contains("resnet34") || !detector.config.contains("encoder="), detector.config)
        let url = try zoo.verifiedFile(entryName)
        let attributes = try FileManager.default.attributesOfItem(atPath: url.path)
        XCTAssertLessThan((attributes[.size] as! NSNumber).intValue, 32 << 20, "the shipped bundle must stay under 32 MB")
        var r = try CLI.run(["zoo", "verify", entryName])
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(["zoo", "info", entryName])
        XCTAssertEqual(r.status, 0, r.all)
        for field in ["intended use:", "not for:", "input:", "DICOM:", "outputs:", "training data:", "recipe:", "metrics:",
                      "operating threshold: 0.07", "license:", "changelog:"] {
            XCTAssertTrue(r.stdout.contains(field), "zoo info lacks '\(field)':\n\(r.stdout)")
        }
    }

    func testDetectsOnARealRSNADicomByName() throws {
        // a positive RSNA image with two labelled opacities
        let file = realdata.appendingPathComponent("rsna/stage_1_train_images/00436515-870c-4b36-a041-de91049b9ab4.dcm")
        let dir = try CLI.tempDir("zoo-detect")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try CLI.run(["detect", file.path, "--model", entryName, "--out", "found", "--threshold", "0.05"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let found = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("found/detections.json"))) as! [[String: Any]]
        XCTAssertEqual(found.first?["width"] as? Int, 1024)
        for b in found.first?["boxes"] as? [[String: Any]] ?? [] {
            let x = b["x"] as! Double, w = b["width"] as! Double
            XCTAssertGreaterThanOrEqual(x, 0); XCTAssertLessThanOrEqual(x + w, 1024.5)
        }
        XCTAssertNoThrow(try PNG.read(dir.appendingPathComponent("found/00436515-870c-4b36-a041-de91049b9ab4.overlay.png")))
    }
}
