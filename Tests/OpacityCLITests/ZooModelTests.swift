import Foundation
import Opacity
import XCTest

/// The first zoo entry ships in zoo/ and is usable by name, as the README shows.
final class ZooModelTests: XCTestCase {
    let entryName = "retinanet-r34-composite"
    let realdata = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/realdata")

    func testEntryIsVerifiedAndLoadsByName() throws {
        let zoo = try CLI.zoo()
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
        for field in [
            "intended use:", "not for:", "input:", "DICOM:", "outputs:", "training data:", "recipe:", "metrics:",
            "operating threshold: 0.07", "license:", "changelog:",
        ] {
            XCTAssertTrue(r.stdout.contains(field), "zoo info lacks '\(field)':\n\(r.stdout)")
        }
        // metrics rounded to 4 decimals, whole numbers as they are (the manifest holds 0.8996710526315788)
        XCTAssertTrue(r.stdout.contains("metric=0.8997,") && r.stdout.contains("epoch=7,") && r.stdout.contains("metric_threshold=0.0700"), r.stdout)
        XCTAssertFalse(r.stdout.contains("0.89967"), r.stdout)
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

    /// A bundle published by a relative file: URL: `zoo add` stores it absolute, the
    /// not-fetched hint names the file by its path (not a file:// URL), and fetching works
    /// from another folder.
    func testFileURLsAreStoredAbsoluteAndShownAsPaths() throws {
        let dir = try CLI.tempDir("zoo-file-url")
        defer { try? FileManager.default.removeItem(at: dir) }
        let pub = dir.appendingPathComponent("pub")
        try FileManager.default.createDirectory(at: pub, withIntermediateDirectories: true)
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        try FileManager.default.copyItem(at: repo.appendingPathComponent("zoo/\(entryName).opb"), to: pub.appendingPathComponent("m.opb"))
        let env = [
            "OPACITY_USER_MANIFEST": dir.appendingPathComponent("manifest/zoo.json").path,
            "OPACITY_CACHE": dir.appendingPathComponent("cache").path,
        ]
        // outside the manifest's folder without --url: the hint names the URL to pass
        var r = try CLI.run(["zoo", "add", "m", "pub/m.opb", "--licence", "CC-BY-4.0"], in: dir, environment: env)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--url file://\(pub.standardizedFileURL.path)/m.opb"), r.all)
        for (name, url) in [("rel", "file:pub/m.opb"), ("slashes", "file://pub/m.opb")] {
            r = try CLI.run(["zoo", "add", name, "pub/m.opb", "--licence", "CC-BY-4.0", "--url", url], in: dir, environment: env)
            XCTAssertEqual(r.status, 0, r.all)
        }
        let manifest = try String(contentsOf: dir.appendingPathComponent("manifest/zoo.json"), encoding: .utf8)
        XCTAssertEqual(manifest.components(separatedBy: "\"file://\(pub.standardizedFileURL.path)/m.opb\"").count, 3, manifest)
        // not fetched: the hint shows the path it copies from
        r = try CLI.run(["detect", repo.appendingPathComponent("../shared/realdata/nih/00000001_000.png").path, "--model", "rel"], in: pub, environment: env)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("(copies \(pub.standardizedFileURL.path)/m.opb)"), r.all)
        XCTAssertTrue(r.stderr.contains("--fetch"), r.all)
        XCTAssertFalse(r.stderr.contains("file:"), r.all)
        // fetching from another folder finds the file
        r = try CLI.run(["zoo", "fetch", "rel", "slashes", "-q"], in: pub, environment: env)
        XCTAssertEqual(r.status, 0, r.all)
    }

    /// `zoo add` given a symbolic link (a run's best.opb, which moves to each new best epoch)
    /// records the file it points to, says so, and the entry stays valid when the link moves on
    /// or goes (new-user trial: the entry recorded the link's path); a file: URL naming a link
    /// likewise.
    func testZooAddRecordsTheTargetOfALink() throws {
        let dir = try CLI.tempDir("zoo-add-link")
        defer { try? FileManager.default.removeItem(at: dir) }
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let shelf = dir.appendingPathComponent("shelf")
        let checkpoints = shelf.appendingPathComponent("runs/x/checkpoints")
        try FileManager.default.createDirectory(at: checkpoints, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: repo.appendingPathComponent("zoo/\(entryName).opb"), to: checkpoints.appendingPathComponent("epoch_003.opb"))
        let best = shelf.appendingPathComponent("runs/x/best.opb")
        try FileManager.default.createSymbolicLink(atPath: best.path, withDestinationPath: "checkpoints/epoch_003.opb")
        let manifestURL = shelf.appendingPathComponent("zoo.json")
        let env = ["OPACITY_USER_MANIFEST": manifestURL.path, "OPACITY_CACHE": dir.appendingPathComponent("cache").path]
        var r = try CLI.run(["zoo", "add", "m", "shelf/runs/x/best.opb", "--licence", "CC-BY-4.0"], in: dir, environment: env)
        XCTAssertEqual(r.status, 0, r.all)
        let target = checkpoints.appendingPathComponent("epoch_003.opb").resolvingSymlinksInPath().path
        XCTAssertTrue(r.stderr.contains("note: shelf/runs/x/best.opb is a symbolic link; the entry records the file it points to, \(target)"), r.all)
        XCTAssertEqual(try ZooManifest.read(manifestURL).entries.first { $0.name == "m" }?.file, "runs/x/checkpoints/epoch_003.opb")
        // published elsewhere, named by a file: URL through the link: the URL names the target
        r = try CLI.run(["zoo", "add", "u", "shelf/runs/x/best.opb", "--licence", "CC-BY-4.0", "--url", "file:shelf/runs/x/best.opb"], in: dir, environment: env)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertEqual(try ZooManifest.read(manifestURL).entries.first { $0.name == "u" }?.url, URL(fileURLWithPath: target).absoluteString)
        // the link moves on (a new best epoch), then goes: the entry still verifies
        try FileManager.default.removeItem(at: best)
        try FileManager.default.createSymbolicLink(atPath: best.path, withDestinationPath: "checkpoints/epoch_004.opb")
        r = try CLI.run(["zoo", "verify", "m"], in: dir, environment: env)
        XCTAssertEqual(r.status, 0, r.all)
        try FileManager.default.removeItem(at: best)
        r = try CLI.run(["zoo", "verify", "m"], in: dir, environment: env)
        XCTAssertEqual(r.status, 0, r.all)
        // a plain file: no note
        r = try CLI.run(["zoo", "add", "p", "shelf/runs/x/checkpoints/epoch_003.opb", "--licence", "CC-BY-4.0"], in: dir, environment: env)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertFalse(r.stderr.contains("symbolic link"), r.all)
    }

    /// zoo add checks the manifest before reading and hashing the bundle: a name already taken,
    /// a manifest path that is a folder or lies under a file, and a manifest that does not read
    /// are refused first (the bundle named here does not even exist), and nothing is written.
    func testZooAddChecksTheManifestFirst() throws {
        let dir = try CLI.tempDir("zoo-add-first")
        defer { try? FileManager.default.removeItem(at: dir) }
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let shelf = dir.appendingPathComponent("shelf")
        try FileManager.default.createDirectory(at: shelf, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: repo.appendingPathComponent("zoo/\(entryName).opb"), to: shelf.appendingPathComponent("m.opb"))
        let env = ["OPACITY_USER_MANIFEST": shelf.appendingPathComponent("zoo.json").path]
        var r = try CLI.run(["zoo", "add", "m", "shelf/m.opb", "--licence", "CC-BY-4.0"], in: dir, environment: env)
        XCTAssertEqual(r.status, 0, r.all)
        let before = try Data(contentsOf: shelf.appendingPathComponent("zoo.json"))
        // the name is taken: said before the (missing) bundle is looked at
        r = try CLI.run(["zoo", "add", "m", "shelf/missing.opb", "--licence", "CC-BY-4.0"], in: dir, environment: env)
        XCTAssertEqual(r.status, 64, r.all)
        XCTAssertTrue(r.stderr.contains("already has an entry 'm'; pass --replace to replace it"), r.all)
        XCTAssertFalse(r.stderr.contains("missing.opb"), r.all)
        XCTAssertEqual(try Data(contentsOf: shelf.appendingPathComponent("zoo.json")), before)
        // manifests that cannot be written
        try Data("x".utf8).write(to: dir.appendingPathComponent("afile"))
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("afolder"), withIntermediateDirectories: true)
        try Data("{not json".utf8).write(to: dir.appendingPathComponent("broken.json"))
        let cases: [(String, String)] = [
            ("afolder", "--manifest afolder is a folder; expected a file path (for the zoo manifest, JSON)"),
            ("afile/zoo.json", "--manifest afile/zoo.json lies under \(dir.appendingPathComponent("afile").standardizedFileURL.path), which is a file"),
            ("broken.json", "broken.json"),
        ]
        for (manifest, message) in cases {
            r = try CLI.run(["zoo", "add", "n", "shelf/missing.opb", "--licence", "CC-BY-4.0", "--url", "https://example.org/m.opb", "--manifest", manifest], in: dir)
            XCTAssertNotEqual(r.status, 0, r.all)
            XCTAssertTrue(r.stderr.contains(message), "\(manifest): \(r.all)")
            XCTAssertFalse(r.stderr.contains("missing.opb"), "\(manifest): \(r.all)")
        }
        XCTAssertEqual(try String(contentsOf: dir.appendingPathComponent("broken.json"), encoding: .utf8), "{not json")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("afolder").path), [])
        // --replace replaces
        r = try CLI.run(["zoo", "add", "m", "shelf/m.opb", "--licence", "MIT", "--replace"], in: dir, environment: env)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(try String(contentsOf: shelf.appendingPathComponent("zoo.json"), encoding: .utf8).contains("\"MIT\""))
    }
}
