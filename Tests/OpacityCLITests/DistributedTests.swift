import Foundation
import Opacity
import XCTest

/// Data-parallel training and sharded inference under Open MPI's `mpirun` on this machine
/// (loopback), against one plain process as the oracle.
final class DistributedTests: XCTestCase {
    static let tiny = "retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=16), head=retina(channels=16), size=64)"

    /// `mpirun --oversubscribe --allow-run-as-root -np N opacity args...` in `cwd`.
    static func mpirun(_ np: Int, _ args: [String], in cwd: URL) throws -> CLI.Result {
        let candidates = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"]
        guard let launcher = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            XCTFail("mpirun not found: install Open MPI (scripts/install-deps.sh installs openmpi-bin)")
            throw CocoaError(.fileNoSuchFile)
        }
        return try CLI.run(args, in: cwd, launcher: [launcher, "--oversubscribe", "--allow-run-as-root", "--mca", "btl", "self,vader,tcp",
                                                     "-np", "\(np)"])
    }

    /// Relative L2 difference of two checkpoints' weights and buffers.
    static func relativeDifference(_ a: URL, _ b: URL) throws -> Double {
        let registry = try Registry.standard()
        let sa = try Detector.load(from: a, registry: registry).stateDict()
        let sb = try Detector.load(from: b, registry: registry).stateDict()
        XCTAssertEqual(sa.map(\.0), sb.map(\.0))
        var diff = 0.0, norm = 0.0
        for ((_, x), (_, y)) in zip(sa, sb) {
            for (u, v) in zip(x.scalars, y.scalars) {
                diff += Double(u - v) * Double(u - v)
                norm += Double(u) * Double(u)
            }
        }
        return (diff / max(norm, 1e-30)).squareRoot()
    }

    static func weights(_ url: URL) throws -> [[Float]] {
        try Detector.load(from: url, registry: Registry.standard()).stateDict().map(\.1.scalars)
    }

    /// 2 ranks x 2 images reach the weights of 1 rank x 4 images after 8 steps (frozen and
    /// synchronised batch norm, dropout on; at a learning rate of 1e-3 Adam's first steps
    /// turn rounding noise in near-zero gradients into whole steps, so 1e-4 is used); a fixed process count repeats bit for bit; every epoch
    /// checks the weights are identical on all ranks; resuming works across process counts
    /// in both directions; the log names the processes and the global batch.
    func testTwoRanksMatchOneRankWithTheSameGlobalBatch() throws {
        let dir = try CLI.tempDir("mpi-train")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "--output", "data", "--count", "24", "--size", "128", "--seed", "9"], in: dir).status, 0)
        for freeze in ["on", "off"] {
            let common = ["train", "--data", "data", "--config", Self.tiny, "--epochs", "2", "--batch", "4", "--lr", "1e-4", "--seed", "11",
                          "--threads", "1", "--freeze-bn", freeze]
            var r = try CLI.run(common + ["--output", "one-\(freeze)"], in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            r = try Self.mpirun(2, common + ["--output", "two-\(freeze)"], in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            XCTAssertTrue(r.stdout.contains("batch: 4 images per step in all (global batch, --batch); per process 2 x 2 processes"), r.all)
            for e in 1...2 { XCTAssertTrue(r.all.contains("epoch \(e): weights identical on all 2 processes"), r.all) }
            let ckpt = "checkpoints/epoch_002.opb"
            let rel = try Self.relativeDifference(dir.appendingPathComponent("one-\(freeze)/\(ckpt)"), dir.appendingPathComponent("two-\(freeze)/\(ckpt)"))
            XCTAssertLessThanOrEqual(rel, 1e-5, "freeze-bn \(freeze): 2 ranks differ from 1 rank by \(rel)")
            XCTAssertGreaterThan(try Self.relativeDifference(dir.appendingPathComponent("one-\(freeze)/checkpoints/epoch_001.opb"),
                                                             dir.appendingPathComponent("one-\(freeze)/\(ckpt)")), 1e-4, "the weights must move")
            let log = try EpochLog.read(dir.appendingPathComponent("two-\(freeze)/log.jsonl"))
            XCTAssertEqual(log.map(\.processes), [2, 2])
            XCTAssertEqual(log.map(\.globalBatch), [4, 4])
            XCTAssertEqual(log.map(\.trainImages), try EpochLog.read(dir.appendingPathComponent("one-\(freeze)/log.jsonl")).map(\.trainImages))
            if freeze == "on" {
                // a fixed process count repeats bit for bit
                r = try Self.mpirun(2, common + ["--output", "two-again"], in: dir)
                XCTAssertEqual(r.status, 0, r.all)
                XCTAssertEqual(try Self.weights(dir.appendingPathComponent("two-on/\(ckpt)")), try Self.weights(dir.appendingPathComponent("two-again/\(ckpt)")))
                // resume across process counts: stop 2 ranks, go on with 1; stop 1, go on with 2
                r = try Self.mpirun(2, common + ["--output", "two-then-one", "--stop-after", "3"], in: dir)
                XCTAssertEqual(r.status, 130, r.all)
                r = try CLI.run(["train", "--data", "data", "--output", "two-then-one", "--resume", "--threads", "1"], in: dir)
                XCTAssertEqual(r.status, 0, r.all)
                r = try CLI.run(common + ["--output", "one-then-two", "--stop-after", "5"], in: dir)
                XCTAssertEqual(r.status, 130, r.all)
                r = try Self.mpirun(2, ["train", "--data", "data", "--output", "one-then-two", "--resume", "--threads", "1"], in: dir)
                XCTAssertEqual(r.status, 0, r.all)
                for run in ["two-then-one", "one-then-two"] {
                    let rel = try Self.relativeDifference(dir.appendingPathComponent("one-on/\(ckpt)"), dir.appendingPathComponent("\(run)/\(ckpt)"))
                    XCTAssertLessThanOrEqual(rel, 1e-5, "\(run) differs from the 1-rank run by \(rel)")
                }
                XCTAssertEqual(try EpochLog.read(dir.appendingPathComponent("one-then-two/log.jsonl")).map(\.processes), [1, 2])
            }
        }
    }

    /// Sharded validation gives exactly one process's loss terms and metric; sharded eval,
    /// submit and detect write byte-identical files to one process.
    func testShardedInferenceWritesTheSameFiles() throws {
        let dir = try CLI.tempDir("mpi-infer")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "--output", "data", "--count", "6", "--size", "128", "--seed", "5"], in: dir).status, 0)
        // the zoo model finds boxes on these films, so the files hold real rows
        let model = "retinanet-r34-composite"
        let images = "data/stage_2_train_images"
        for (np, suffix) in [(1, "1"), (2, "2")] {
            let runs: [[String]] = [
                ["eval", "--model", model, "--data", "data", "--all", "--output", "eval\(suffix)", "--threads", "1"],
                ["submit", "--images", images, "--model", model, "--output", "sub\(suffix).csv", "--threads", "1", "--threshold", "0.05"],
                ["detect", images, "--model", model, "--output", "det\(suffix)", "--threads", "1", "--threshold", "0.05", "--format", "csv"],
            ]
            for args in runs {
                let r = np == 1 ? try CLI.run(args, in: dir) : try Self.mpirun(np, args, in: dir)
                XCTAssertEqual(r.status, 0, r.all)
            }
        }
        let files = ["eval1/per_image.csv", "eval1/sweep.csv", "eval1/metric_vs_threshold.png", "sub1.csv", "det1/detections.csv"]
        for f in files {
            let a = try Data(contentsOf: dir.appendingPathComponent(f))
            let b = try Data(contentsOf: dir.appendingPathComponent(f.replacingOccurrences(of: "1", with: "2")))
            XCTAssertEqual(a, b, "\(f) differs between 1 and 2 processes")
        }
        let sub = try String(contentsOf: dir.appendingPathComponent("sub1.csv"), encoding: .utf8)
        XCTAssertEqual(sub.split(separator: "\n").count, 7)
        XCTAssertTrue(sub.split(separator: "\n").dropFirst().contains { !$0.hasSuffix(",") }, "the model should find boxes: \(sub)")
        let overlays = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("det2").path).filter { $0.hasSuffix(".overlay.png") }
        XCTAssertEqual(overlays.count, 6)

        // sharded validation inside training equals one process's, on the same weights
        let common = ["train", "--data", "data", "--config", Self.tiny, "--epochs", "1", "--batch", "2", "--lr", "1e-3", "--threads", "1",
                      "--validate-only"]
        var r = try CLI.run(["train", "--data", "data", "--config", Self.tiny, "--epochs", "1", "--batch", "2", "--lr", "1e-3",
                             "--threads", "1", "--output", "run"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(common + ["--output", "run", "--resume"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let one = r.stdout.split(separator: "\n").filter { $0.hasPrefix("validation:") }
        r = try Self.mpirun(2, common + ["--output", "run", "--resume"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let two = r.stdout.split(separator: "\n").filter { $0.hasPrefix("validation:") }
        XCTAssertEqual(one.count, 1, r.all)
        XCTAssertEqual(one, two)
    }

    /// A rank that cannot read its image stops every rank, naming itself and the file; no
    /// checkpoint is written.
    func testFailingRankStopsTheJob() throws {
        let dir = try CLI.tempDir("mpi-fail")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "--output", "data", "--count", "16", "--size", "128", "--seed", "4"], in: dir).status, 0)
        let bad = try ImageFile.list(in: dir.appendingPathComponent("data/stage_2_train_images"))[0]
        try Data("not an image".utf8).write(to: bad)
        let r = try Self.mpirun(2, ["train", "--data", "data", "--config", Self.tiny, "--epochs", "1", "--batch", "4", "--threads", "1",
                                    "--output", "run"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertNotNil(r.stderr.range(of: #"opacity train: rank [01] of 2 failed, stopping all ranks: .*"# + bad.lastPathComponent, options: .regularExpression), r.all)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run/checkpoints/epoch_001.opb").path))
    }
}
