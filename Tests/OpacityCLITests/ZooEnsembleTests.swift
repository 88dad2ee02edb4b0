import Foundation
import Opacity
import XCTest

/// A zoo entry of kind `ensemble` loads its member bundles by one name with its rule, and
/// gives what naming the members one by one gives.
final class ZooEnsembleTests: XCTestCase {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    var dicom: URL {
        repo.deletingLastPathComponent().appendingPathComponent("shared/realdata/rsna/stage_1_train_images/00436515-870c-4b36-a041-de91049b9ab4.dcm")
    }

    /// Writes a user manifest with two detector entries (copies of the shipped bundle) and
    /// an ensemble of them; returns the manifest and the members' hash.
    func makeManifest(in dir: URL, rule: String, pin: String? = nil) throws -> URL {
        let shipped = repo.appendingPathComponent("zoo/retinanet-r34-composite.opb")
        let hash = try Zoo.sha256(of: shipped)
        let size = try (FileManager.default.attributesOfItem(atPath: shipped.path)[.size] as! NSNumber).int64Value
        let config = try BundleReader(shipped).info.metadata.config
        for n in ["a", "b"] {
            let target = dir.appendingPathComponent("m-\(n).opb")
            if !FileManager.default.fileExists(atPath: target.path) { try FileManager.default.copyItem(at: shipped, to: target) }
        }
        func member(_ n: String) -> [String: Any] {
            ["name": "m-\(n)", "kind": "detector", "config": config, "file": "m-\(n).opb", "sha256": hash, "size": size,
             "parameters": 1, "data": "test copy", "licence": "CC-BY-4.0"]
        }
        let ensemble: [String: Any] = [
            "name": "m-folds", "kind": "ensemble", "config": config, "members": ["m-a", "m-b"], "ensemble": rule,
            "sha256": pin ?? ZooEntry.ensembleDigest(memberHashes: [hash, hash]), "size": 2 * size, "parameters": 2,
            "data": "test", "licence": "CC-BY-4.0"]
        let manifest: [String: Any] = ["format": "opacity-zoo", "version": 1, "entries": [member("a"), member("b"), ensemble]]
        let url = dir.appendingPathComponent("zoo.json")
        try JSONSerialization.data(withJSONObject: manifest, options: [.prettyPrinted]).write(to: url)
        return url
    }

    func testEnsembleEntryEqualsItsMembersNamedOneByOne() throws {
        let dir = try CLI.tempDir("zoo-ensemble")
        defer { try? FileManager.default.removeItem(at: dir) }
        let env = ["OPACITY_USER_MANIFEST": try makeManifest(in: dir, rule: "mean").path]
        let byName = try CLI.run(["detect", dicom.path, "--model", "m-folds", "-o", "byname", "--threshold", "0.01"], in: dir, environment: env)
        XCTAssertEqual(byName.status, 0, byName.all)
        XCTAssertTrue(byName.all.contains("ensemble of 2 models"), byName.all)
        let listed = try CLI.run(["detect", dicom.path, "--model", "m-a", "--model", "m-b", "--ensemble", "mean", "-o", "listed",
                                  "--threshold", "0.01"], in: dir, environment: env)
        XCTAssertEqual(listed.status, 0, listed.all)
        // the same boxes, scores and class probabilities (the reports' timing and model paths differ)
        func results(_ folder: String) throws -> [String] {
            let data = try Data(contentsOf: dir.appendingPathComponent("\(folder)/detections.json"))
            let images = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [[String: Any]])
            return try images.map { image in
                let kept = ["boxes": image["boxes"] ?? [], "globalProbabilities": image["globalProbabilities"] ?? []]
                return String(decoding: try JSONSerialization.data(withJSONObject: kept, options: [.sortedKeys]), as: UTF8.self)
            }
        }
        let a = try results("byname"), b = try results("listed")
        XCTAssertFalse(a.isEmpty)
        XCTAssertEqual(a, b)
        // the rule matters: the default percentile rule gives other boxes than the mean rule's shrink
        let percentile = try CLI.run(["detect", dicom.path, "--model", "m-a", "--model", "m-b", "-o", "pct", "--threshold", "0.01"],
                                     in: dir, environment: env)
        XCTAssertEqual(percentile.status, 0, percentile.all)
        XCTAssertTrue(a[0].contains("\"width\""), "the ensemble finds boxes to compare: \(a[0])")
        XCTAssertNotEqual(try results("pct"), a, "the entry's mean rule (boxes x 0.875) was not applied")
        // --ensemble given, even as the default percentile, overrides the entry's rule
        let overridden = try CLI.run(["detect", dicom.path, "--model", "m-folds", "--ensemble", "percentile", "-o", "override",
                                      "--threshold", "0.01"], in: dir, environment: env)
        XCTAssertEqual(overridden.status, 0, overridden.all)
        XCTAssertTrue(overridden.all.contains("percentile("), overridden.all)
        XCTAssertEqual(try results("override"), try results("pct"), "--ensemble percentile did not override the entry's mean rule")
    }

    func testEnsembleEntryThatDoesNotPinItsMembersIsRefused() throws {
        let dir = try CLI.tempDir("zoo-ensemble-pin")
        defer { try? FileManager.default.removeItem(at: dir) }
        let env = ["OPACITY_USER_MANIFEST": try makeManifest(in: dir, rule: "percentile", pin: String(repeating: "0", count: 64)).path]
        let r = try CLI.run(["detect", dicom.path, "--model", "m-folds", "-o", "x"], in: dir, environment: env)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.all.contains("does not pin the members' hashes"), r.all)
    }

    func testManifestRulesForEnsembles() throws {
        func manifest(_ entry: String) -> String {
            #"{"format":"opacity-zoo","version":1,"entries":[{"name":"e","kind":"ensemble","config":"retinanet","sha256":"\#(String(repeating: "a", count: 64))","size":0,"parameters":0,"data":"d","licence":"l",\#(entry)}]}"#
        }
        let dir = try CLI.tempDir("zoo-ensemble-rules")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("m.json")
        for (entry, expected) in [(#""members":["x"]"#, "at least 2"), (#""members":["x","y"],"ensemble":"median""#, "percentile, mean"),
                                  (#""members":["x","y"],"file":"f.opb""#, "no file or url")] {
            try manifest(entry).write(to: url, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try ZooManifest.read(url)) { XCTAssertTrue("\($0)".contains(expected), "\($0)") }
        }
    }
}
