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
        return try CLI.run(
            args, in: cwd,
            launcher: [
                launcher, "--oversubscribe", "--allow-run-as-root", "--mca", "btl", "self,vader,tcp",
                "-np", "\(np)",
            ])
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
            let common = [
                "train", "--data", "data", "--config", Self.tiny, "--epochs", "2", "--batch", "4", "--lr", "1e-4", "--seed", "11",
                "--threads", "1", "--freeze-bn", freeze,
            ]
            var r = try CLI.run(common + ["--output", "one-\(freeze)"], in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            r = try Self.mpirun(2, common + ["--output", "two-\(freeze)"], in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            XCTAssertTrue(r.stdout.contains("batch: 4 images per step in all (global batch, --batch); per process 2 x 2 processes"), r.all)
            for e in 1...2 { XCTAssertTrue(r.all.contains("epoch \(e): weights identical on all 2 processes"), r.all) }
            let ckpt = "checkpoints/epoch_002.opb"
            let rel = try Self.relativeDifference(dir.appendingPathComponent("one-\(freeze)/\(ckpt)"), dir.appendingPathComponent("two-\(freeze)/\(ckpt)"))
            XCTAssertLessThanOrEqual(rel, 1e-5, "freeze-bn \(freeze): 2 ranks differ from 1 rank by \(rel)")
            XCTAssertGreaterThan(
                try Self.relativeDifference(
                    dir.appendingPathComponent("one-\(freeze)/checkpoints/epoch_001.opb"),
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
        let common = [
            "train", "--data", "data", "--config", Self.tiny, "--epochs", "1", "--batch", "2", "--lr", "1e-3", "--threads", "1",
            "--validate-only",
        ]
        var r = try CLI.run(
            [
                "train", "--data", "data", "--config", Self.tiny, "--epochs", "1", "--batch", "2", "--lr", "1e-3",
                "--threads", "1", "--output", "run",
            ], in: dir)
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
        let r = try Self.mpirun(
            2,
            [
                "train", "--data", "data", "--config", Self.tiny, "--epochs", "1", "--batch", "4", "--threads", "1",
                "--output", "run",
            ], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        // (the images are read before the first step: the file is named on a line of its own)
        XCTAssertNotNil(
            r.stderr.range(of: #"opacity train: rank [01] of 2 failed, stopping all ranks: [\s\S]*"# + bad.lastPathComponent, options: .regularExpression), r.all)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run/checkpoints/epoch_001.opb").path))
    }

    /// `mpirun ... opacity args...` started in `cwd` without waiting; its standard error goes
    /// to `stderr`.
    static func startMpirun(_ np: Int, _ args: [String], in cwd: URL, stderr: URL) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/mpirun")
        p.arguments = ["--oversubscribe", "--allow-run-as-root", "--mca", "btl", "self,vader,tcp", "-np", "\(np)", CLI.executable.path] + args
        p.currentDirectoryURL = cwd
        _ = FileManager.default.createFile(atPath: stderr.path, contents: nil)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = try FileHandle(forWritingTo: stderr)
        try p.run()
        return p
    }

    /// The processes whose parent is `pid` (mpirun's ranks on this machine).
    static func children(of pid: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { child in
            guard let stat = try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return false }
            // fields after the command: state, ppid, ...
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == pid
        }
    }

    /// Ctrl-C on `mpirun` (which sends every rank SIGTERM, then SIGKILL a second later) and
    /// SIGTERM to every rank (what Slurm does at a time limit) stop a 2-rank run within
    /// seconds: rank 0 writes the checkpoint of the last completed step, no temporary file
    /// is left, every rank exits, and `--resume` reaches the uninterrupted run's weights bit
    /// for bit (synchronised batch norm, so the running statistics must be the step's too).
    /// The uninterrupted run's log holds sane communication figures for every epoch.
    func testSignalsStopTheJobWithACheckpointAndResumeContinues() throws {
        let dir = try CLI.tempDir("mpi-signal")
        defer { try? FileManager.default.removeItem(at: dir) }
        // 480 images (360 for training: 90 steps an epoch), so that on an idle machine the rest
        // of the run after the signal point outlasts the second mpirun leaves between its
        // SIGCONT and SIGTERM (with 48 images an idle machine finished the run in that second)
        XCTAssertEqual(try CLI.run(["synth", "--output", "data", "--count", "480", "--size", "128", "--seed", "9"], in: dir).status, 0)
        let common = [
            "train", "--data", "data", "--config", Self.tiny, "--epochs", "3", "--batch", "4", "--lr", "1e-4", "--seed", "11",
            "--threads", "1", "--freeze-bn", "off", "--limit-val", "12",
        ]
        // buckets of 0.25 MiB: about 4 per step (the sums do not depend on the bucketing)
        let r = try Self.mpirun(2, common + ["--output", "ref", "--bucket-mib", "0.25"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("communication: waited"), r.all)
        let parameters = try XCTUnwrap(
            r.stdout.range(of: #"\((\d+) parameters\)"#, options: .regularExpression).flatMap {
                Int(r.stdout[$0].dropFirst().prefix { $0.isNumber })
            })
        let log = try EpochLog.read(dir.appendingPathComponent("ref/log.jsonl"))
        XCTAssertEqual(log.count, 3)
        for e in log {
            let c = try XCTUnwrap(e.communication, "epoch \(e.epoch) has no communication figures")
            // 360 training images, 4 per step: 90 steps, each reducing every gradient and one flag per tensor
            let perStep = c.gradientBytes / 90 / 4
            XCTAssertGreaterThan(perStep, Double(parameters), "\(c)")
            XCTAssertLessThan(perStep, Double(parameters + 1000), "\(c)")
            XCTAssertEqual(c.sentBytes, c.gradientBytes, "2 ranks send one whole bucket each: half in the reduce-scatter, half in the allgather")
            XCTAssertGreaterThanOrEqual(c.buckets, 3, "\(c)")
            XCTAssertGreaterThan(c.stepSeconds, 0)
            XCTAssertGreaterThan(c.allreduceSeconds, 0)
            XCTAssertGreaterThan(c.collectiveSeconds, 0, "synchronised batch norm reduces statistics on the training thread")
            XCTAssertGreaterThanOrEqual(c.gradientWaitSeconds, 0)
            XCTAssertLessThanOrEqual(c.gradientWaitSeconds, c.gradientWaitMaxSeconds)
            XCTAssertLessThanOrEqual(c.gradientWaitMaxSeconds + c.collectiveSeconds, c.stepSeconds * 2.5, "\(c)")
            XCTAssertTrue((0...1).contains(c.overlap) && (0...1).contains(c.waitFraction), "\(c)")
            XCTAssertEqual(c.waitFraction, (c.gradientWaitSeconds + c.collectiveSeconds) / c.stepSeconds, accuracy: 1e-9)
        }

        for (name, signal, toRanks) in [("ctrl-c", SIGINT, false), ("term", SIGTERM, true)] {
            let err = dir.appendingPathComponent("\(name).err")
            let p = try Self.startMpirun(2, common + ["--output", name], in: dir, stderr: err)
            // mid-way through epoch 2: its progress has begun
            let deadline = Date().addingTimeInterval(300)
            while p.isRunning && Date() < deadline {
                let text = (try? String(contentsOf: err, encoding: .utf8)) ?? ""
                if let e2 = text.range(of: "epoch 2/3"), text[e2.upperBound...].contains("step ") { break }
                usleep(20_000)
            }
            XCTAssertTrue(p.isRunning, "\(name): the run ended before the signal")
            let t0 = Date()
            if toRanks {
                let ranks = Self.children(of: p.processIdentifier)
                XCTAssertEqual(ranks.count, 2)
                for pid in ranks { kill(pid, signal) }
            } else {
                kill(p.processIdentifier, signal)
            }
            p.waitUntilExit()
            let seconds = Date().timeIntervalSince(t0)
            let text = try String(contentsOf: err, encoding: .utf8)
            // mpirun answers its own Ctrl-C with 1; a rank's status (128 + SIGTERM) comes through otherwise
            XCTAssertEqual(p.terminationStatus, toRanks ? 143 : 1, text)
            XCTAssertLessThan(seconds, 15, "\(name): the job took \(seconds) s to stop")
            // the ranks see SIGTERM in both cases; the step in flight is dropped (under mpirun
            // rank 0 writes at the SIGCONT that comes a second before, and on a fast machine
            // epoch 2 may be complete by then)
            XCTAssertNotNil(
                text.range(
                    of: #"SIGTERM: stopping all ranks; (wrote \S+/interrupted.opb in [0-9.]+ s|\S+/(interrupted|epoch_00[12]).opb already holds)"#,
                    options: .regularExpression), text)
            let run = dir.appendingPathComponent(name)
            for folder in [run, run.appendingPathComponent("checkpoints")] {
                XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: folder.path).contains { $0.contains(".tmp") }, "\(name): a temporary file is left")
            }
            let latest = try XCTUnwrap(Trainer.latestCheckpoint(in: run))
            let resumed = try Self.mpirun(2, ["train", "--output", name, "--resume", "--threads", "1"], in: dir)
            XCTAssertEqual(resumed.status, 0, resumed.all)
            XCTAssertTrue(resumed.all.contains("resumed from \(latest.lastPathComponent)"), resumed.all)
            XCTAssertEqual(try EpochLog.read(run.appendingPathComponent("log.jsonl")).map(\.epoch), [1, 2, 3])
            XCTAssertEqual(
                try Self.weights(run.appendingPathComponent("checkpoints/epoch_003.opb")),
                try Self.weights(dir.appendingPathComponent("ref/checkpoints/epoch_003.opb")), "\(name): resumed weights differ")
        }
    }
}
