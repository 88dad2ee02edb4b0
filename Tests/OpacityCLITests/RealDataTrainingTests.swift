import Foundation
import XCTest

/// The real-data recipe's two tools: folds stratified by class and view from DICOM headers,
/// and transfer from a whole detector bundle (`train --init-weights`).
final class RealDataTrainingTests: XCTestCase {
    let rsna1k = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/realdata/rsna1k")

    func testFoldsCommandStratifiesByView() throws {
        let dir = try CLI.tempDir("folds-view")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try CLI.run(["folds", "--data", rsna1k.path, "--stratify", "view", "-o", "folds.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("OPACITY/AP"), r.stdout)
        XCTAssertTrue(r.stdout.contains("757 patients in 4 folds (stratified by class and view)"), r.stdout)
        let lines = try String(contentsOf: dir.appendingPathComponent("folds.csv"), encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 758)
        let bad = try CLI.run(["folds", "--data", rsna1k.path, "--stratify", "vieww", "-o", "x.csv"], in: dir)
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.all.contains("class") && bad.all.contains("view"), bad.all)
    }

    func testInitWeightsStartsFromADetectorAndRefusesAnotherArchitecture() throws {
        let dir = try CLI.tempDir("init-weights")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = "retinanet(head=retina(channels=64), neck=fpn(channels=64), size=256)"
        let r = try CLI.run(["train", "--data", rsna1k.path, "--config", config, "--init-weights", "zoo:retinanet-r34-composite",
                             "--epochs", "1", "--batch", "2", "--limit-train", "4", "--limit-val", "2", "--freeze-bn", "off",
                             "-o", "run"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.all.contains("initial weights from zoo:retinanet-r34-composite: 224 tensors"), r.all)
        XCTAssertFalse(r.all.contains("starts from scratch"), r.all)
        let other = try CLI.run(["train", "--data", rsna1k.path, "--config", "retinanet(encoder=resnet18, size=256)",
                                 "--init-weights", "zoo:retinanet-r34-composite", "--epochs", "1", "--limit-train", "2",
                                 "--limit-val", "2", "-o", "run18"], in: dir)
        XCTAssertNotEqual(other.status, 0)
        XCTAssertTrue(other.all.contains("retinanet-r34-composite"), other.all)
    }
}
