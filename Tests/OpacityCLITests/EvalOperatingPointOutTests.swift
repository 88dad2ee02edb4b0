import Foundation
import Opacity
import XCTest

/// Every refusal of `eval --operating-point-out`: each is a usage error (64) said before the
/// model scores anything (no report, no bundle written, the input unchanged), or, when the
/// scores give no point to store, exit status 1 with nothing written.
final class EvalOperatingPointOutTests: XCTestCase {
    static let rsna1k = CLI.realdata.appendingPathComponent("rsna1k")
    static let images = rsna1k.appendingPathComponent("stage_2_train_images")

    /// A labels CSV of four real Target 0 films of rsna1k, each given a 10 x 10 px opacity in
    /// its corner, where the model finds none: the metric is 0 at every threshold.
    func writeMissedLabels(to url: URL) throws {
        let lines = try String(contentsOf: Self.rsna1k.appendingPathComponent("stage_2_train_labels.csv"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        let ids = lines.dropFirst().filter { $0.hasSuffix(",0") }.prefix(4).map { String($0.split(separator: ",")[0]) }
        XCTAssertEqual(ids.count, 4)
        try ([lines[0]] + ids.map { "\($0),0,0,10,10,1" }).joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
    }

    /// A user zoo manifest with two detector entries (copies of `bundle`) and an ensemble of them, `m-folds`.
    func writeEnsembleManifest(in dir: URL, bundle: URL) throws -> URL {
        let hash = try Zoo.sha256(of: bundle)
        let size = try (FileManager.default.attributesOfItem(atPath: bundle.path)[.size] as? NSNumber)?.int64Value ?? 0
        let config = try BundleReader(bundle).info.metadata.config
        var entries: [[String: Any]] = []
        for n in ["a", "b"] {
            try FileManager.default.copyItem(at: bundle, to: dir.appendingPathComponent("m-\(n).opb"))
            entries.append([
                "name": "m-\(n)", "kind": "detector", "config": config, "file": "m-\(n).opb", "sha256": hash, "size": size, "parameters": 1,
                "data": "test copy", "licence": "CC-BY-4.0",
            ])
        }
        entries.append([
            "name": "m-folds", "kind": "ensemble", "config": config, "members": ["m-a", "m-b"], "ensemble": "mean",
            "sha256": ZooEntry.ensembleDigest(memberHashes: [hash, hash]), "size": 2 * size, "parameters": 2, "data": "test", "licence": "CC-BY-4.0",
        ])
        let url = dir.appendingPathComponent("zoo.json")
        try JSONSerialization.data(withJSONObject: ["format": "opacity-zoo", "version": 1, "entries": entries]).write(to: url)
        return url
    }

    func testEachRefusalComesBeforeScoringAndWritesNothing() throws {
        let dir = try CLI.tempDir("eval-op-out-refusals")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        let zooFile = try CLI.zoo().verifiedFile("retinanet-r34-rsna1k")
        let zooBytes = try Data(contentsOf: zooFile)
        try writeMissedLabels(to: dir.appendingPathComponent("missed.csv"))
        try fm.copyItem(at: zooFile, to: dir.appendingPathComponent("m.opb"))
        try fm.createDirectory(at: dir.appendingPathComponent("run"), withIntermediateDirectories: true)
        try fm.copyItem(at: zooFile, to: dir.appendingPathComponent("run/best.opb"))
        try fm.createDirectory(at: dir.appendingPathComponent("partial/checkpoints"), withIntermediateDirectories: true)
        try fm.copyItem(at: zooFile, to: dir.appendingPathComponent("partial/checkpoints/epoch_001.opb"))
        try fm.createDirectory(at: dir.appendingPathComponent("adir"), withIntermediateDirectories: true)
        try Data("earlier".utf8).write(to: dir.appendingPathComponent("earlier.opb"))
        let manifest = try writeEnsembleManifest(in: dir, bundle: zooFile)
        let data = ["--labels", "missed.csv", "--images", Self.images.path, "--all"]
        let cases: [([String], String)] = [
            (["--model", "m.opb", "--model", "run", "--operating-point-out", "op.opb"], "--operating-point-out needs a single --model (an ensemble has no one bundle)"),
            (
                ["--model", "m-folds", "--operating-point-out", "op.opb"],
                "--operating-point-out needs a single model; m-folds is a zoo ensemble of 2 models (an ensemble has no one bundle)"
            ),
            (["--model", "m.opb", "--operating-point-out", "adir"], "--operating-point-out adir is a folder; expected a file path (for the bundle with its operating point)"),
            (["--model", "m.opb", "--operating-point-out", "new/"], "--operating-point-out new/ is a folder; expected a file path"),
            (["--model", "m.opb", "--operating-point-out", "m.opb/op.opb"], "--operating-point-out m.opb/op.opb lies under "),
            (["--model", "m.opb", "--operating-point-out", "m.opb", "--overwrite"], "--operating-point-out m.opb is the input bundle (m.opb); name a new file, e.g. m-op.opb"),
            (["--model", "run", "--operating-point-out", "run/best.opb", "--overwrite"], "--operating-point-out run/best.opb is the input bundle (run)"),
            (
                ["--model", "partial", "--operating-point-out", "partial/checkpoints/epoch_001.opb", "--overwrite"],
                "--operating-point-out partial/checkpoints/epoch_001.opb is the input bundle (partial); name a new file, e.g. epoch_001-op.opb"
            ),
            (
                ["--model", "retinanet-r34-rsna1k", "--operating-point-out", zooFile.path, "--overwrite"],
                "--operating-point-out \(zooFile.path) is the input bundle (retinanet-r34-rsna1k); name a new file, e.g. retinanet-r34-rsna1k-op.opb"
            ),
            (
                ["--model", "m.opb", "--operating-point-out", "earlier.opb"],
                "earlier.opb exists (an earlier run's); add --overwrite to replace the earlier bundle with its operating point, or name another file with --operating-point-out"
            ),
        ]
        // each in its own -o/--output folder, which none may make
        for (k, (args, expected)) in cases.enumerated() {
            let r = try CLI.run(["eval"] + data + ["-o", "ev\(k)"] + args, in: dir, environment: ["OPACITY_USER_MANIFEST": manifest.path])
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains(expected), "\(args): expected '\(expected)' in \(r.stderr)")
            XCTAssertFalse(fm.fileExists(atPath: dir.appendingPathComponent("ev\(k)").path), "\(args): eval scored before refusing")
        }
        XCTAssertFalse(fm.fileExists(atPath: dir.appendingPathComponent("op.opb").path))
        XCTAssertFalse(fm.fileExists(atPath: dir.appendingPathComponent("new").path))
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("earlier.opb")), Data("earlier".utf8))
        for input in ["m.opb", "run/best.opb", "partial/checkpoints/epoch_001.opb"] {
            XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent(input)), zooBytes, input)
        }
        XCTAssertEqual(try Data(contentsOf: zooFile), zooBytes)
    }

    /// A model that finds no opacity on images that have one scores 0 at every threshold: no
    /// point to store (detect would pass it over), exit status 1 with the reason and a hint,
    /// the report written and no bundle.
    func testAMetricOfZeroEverywhereStoresNoPoint() throws {
        let dir = try CLI.tempDir("eval-op-out-zero")
        defer { try? FileManager.default.removeItem(at: dir) }
        try writeMissedLabels(to: dir.appendingPathComponent("missed.csv"))
        let r = try CLI.run(
            [
                "eval", "--model", "retinanet-r34-rsna1k", "--labels", "missed.csv", "--images", Self.images.path, "--all", "-o", "ev",
                "--operating-point-out", "op.opb",
            ], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stderr.contains("no operating point to store"), r.all)
        XCTAssertTrue(r.stderr.contains("the metric is 0 at every threshold: the model found no opacity on these images"), r.all)
        // a metric of 0 is defined: the message does not call it undefined (it did, in brackets)
        XCTAssertFalse(r.stderr.contains("undefined"), r.all)
        XCTAssertTrue(r.stderr.contains("hint: train longer, or score images with opacities, to find an operating point"), r.all)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("op.opb").path))
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("ev/report.json").path))
    }
}
