import Foundation
import Opacity
import XCTest

/// Run folders under kills, signals and a second run (cases train-kill-loses-log-and-best,
/// train-resume-needs-data, train-resume-drops-limit-val, train-same-out-concurrent,
/// train-skip-unreadable-*): every state a kill leaves resumes to the same weights and
/// complete records.
final class RunFolderTests: XCTestCase {
    static let tiny = CLIRobustnessTests.tiny
    static let workspace = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-runfolder-\(getpid())")

    /// Options of every run here: 12 short epochs, validation limited to 6 images.
    static let recipe = [
        "--config", tiny, "--epochs", "12", "--batch", "4", "--lr", "1e-3", "--seed", "7", "--freeze-bn", "off",
        "--limit-val", "6", "--workers", "1",
    ]

    override class func setUp() {
        try? FileManager.default.createDirectory(at: workspace, withIntermediateDirectories: true)
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(at: workspace)
    }

    /// The synthetic data and the uninterrupted reference run, made once.
    func reference() throws -> URL {
        let dir = Self.workspace
        if FileManager.default.fileExists(atPath: dir.appendingPathComponent("straight/checkpoints/epoch_012.opb").path) { return dir }
        var r = try CLI.run(["synth", "-o", "data", "--count", "32", "--size", "64", "--seed", "3"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(["train", "--data", "data", "-o", "straight"] + Self.recipe, in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        return dir
    }

    func weights(_ url: URL) throws -> [(String, [Float])] {
        try Detector.load(from: url, registry: Registry.standard()).stateDict().map { ($0.0, $0.1.scalars) }
    }

    func assertSameWeights(_ a: URL, _ b: URL, file: StaticString = #filePath, line: UInt = #line) throws {
        let wa = try weights(a), wb = try weights(b)
        XCTAssertEqual(wa.map(\.0), wb.map(\.0), file: file, line: line)
        for (x, y) in zip(wa, wb) where x.1 != y.1 { return XCTFail("\(x.0) differs", file: file, line: line) }
    }

    /// Starts `opacity args` in the background.
    func start(_ args: [String], in dir: URL) throws -> Process {
        let p = CLI.process(args, in: dir)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    func waitFor(_ what: () -> Bool, timeout: TimeInterval = 300) {
        let end = Date().addingTimeInterval(timeout)
        while !what() && Date() < end { usleep(20_000) }
    }

    /// SIGKILL at random moments, then `train --out RUN --resume` (no data options) until
    /// done: the final weights are bit-identical to the uninterrupted run's, and the log
    /// and best link are complete.
    func testRandomKillsResumeToIdenticalWeights() throws {
        let dir = try reference()
        let run = dir.appendingPathComponent("killed")
        try? FileManager.default.removeItem(at: run)
        var rng = RandomGenerator(seed: 2024)
        var p = try start(["train", "--data", "data", "-o", "killed"] + Self.recipe, in: dir)
        var kills = 0, resumes = 0
        while true {
            // kill within 0.05 ... 0.8 s of the start (startup, steps, validation, checkpoint
            // writes; short enough that an idle machine cannot finish the run between kills)
            let delay = 0.05 + Double(rng.nextUniform()) * 0.75
            let end = Date().addingTimeInterval(delay)
            while p.isRunning && Date() < end { usleep(10_000) }
            if p.isRunning {
                kill(p.processIdentifier, SIGKILL)
                p.waitUntilExit()
                kills += 1
            } else {
                p.waitUntilExit()
                if p.terminationStatus == 0 { break }
                XCTAssertEqual(p.terminationStatus, 0, "a resumed run failed")
                break
            }
            if kills >= 60 { break }  // the resume below finishes the run
            if FileManager.default.fileExists(atPath: run.appendingPathComponent("options.json").path) {
                p = try start(["train", "-o", "killed", "--resume", "--workers", "1"], in: dir)
                resumes += 1
            } else {
                // killed before the run recorded its options (a slow start under load): nothing
                // to resume, so the user starts the same command again on the same folder
                p = try start(["train", "--data", "data", "-o", "killed"] + Self.recipe, in: dir)
            }
        }
        XCTAssertGreaterThanOrEqual(kills, 3, "the run ended before it could be killed three times")
        let r = try CLI.run(["train", "-o", "killed", "--resume", "--workers", "1"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        try assertSameWeights(dir.appendingPathComponent("straight/checkpoints/epoch_012.opb"), run.appendingPathComponent("checkpoints/epoch_012.opb"))
        let a = try EpochLog.read(dir.appendingPathComponent("straight/log.jsonl")), b = try EpochLog.read(run.appendingPathComponent("log.jsonl"))
        XCTAssertEqual(b.map(\.epoch), Array(1...12))
        XCTAssertEqual(a.map(\.val), b.map(\.val))
        XCTAssertEqual(a.map(\.valImages), b.map(\.valImages))
        XCTAssertEqual(
            try FileManager.default.destinationOfSymbolicLink(atPath: run.appendingPathComponent("best.opb").path),
            try FileManager.default.destinationOfSymbolicLink(atPath: dir.appendingPathComponent("straight/best.opb").path))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: run.appendingPathComponent("checkpoints").path).filter { $0.hasPrefix(".") }
        XCTAssertEqual(leftovers, [])
        print("kill test: \(kills) kills, \(resumes) resumes")
    }

    /// A kill between the checkpoint and its records: the log line and best link come back
    /// from the checkpoint on resume, a stale interrupted checkpoint and temporary files
    /// are cleaned up.
    func testResumeRepairsRecordsAKillLost() throws {
        let dir = try reference()
        let run = dir.appendingPathComponent("repair")
        try? FileManager.default.removeItem(at: run)
        try FileManager.default.copyItem(at: dir.appendingPathComponent("straight"), to: run)
        try? FileManager.default.removeItem(at: run.appendingPathComponent("run.lock"))
        let log = run.appendingPathComponent("log.jsonl")
        let lines = try String(contentsOf: log, encoding: .utf8).split(separator: "\n")
        try Data((lines[0] + "\n").utf8).write(to: log)
        try FileManager.default.removeItem(at: run.appendingPathComponent("best.opb"))
        try Data("partial".utf8).write(to: run.appendingPathComponent("checkpoints/.epoch_004.opb.tmp-abc123"))
        try FileManager.default.copyItem(at: run.appendingPathComponent("checkpoints/epoch_001.opb"), to: run.appendingPathComponent("checkpoints/interrupted.opb"))
        let r = try CLI.run(["train", "-o", "repair", "--resume"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertEqual(try EpochLog.read(log).map(\.epoch), Array(1...12))
        XCTAssertEqual(try EpochLog.read(log), try EpochLog.read(dir.appendingPathComponent("straight/log.jsonl")))
        XCTAssertEqual(
            try FileManager.default.destinationOfSymbolicLink(atPath: run.appendingPathComponent("best.opb").path),
            try FileManager.default.destinationOfSymbolicLink(atPath: dir.appendingPathComponent("straight/best.opb").path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: run.appendingPathComponent("checkpoints/.epoch_004.opb.tmp-abc123").path))
    }

    /// SIGTERM (from `timeout` or a scheduler) saves a checkpoint like Ctrl-C; resume with
    /// only --out finishes with the uninterrupted weights.
    func testSIGTERMSavesACheckpointAndResumeNeedsOnlyOut() throws {
        let dir = try reference()
        let run = dir.appendingPathComponent("term")
        try? FileManager.default.removeItem(at: run)
        let p = try start(["train", "--data", "data", "-o", "term"] + Self.recipe, in: dir)
        waitFor { FileManager.default.fileExists(atPath: run.appendingPathComponent("checkpoints/epoch_001.opb").path) || !p.isRunning }
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 143)
        XCTAssertNotNil(Trainer.latestCheckpoint(in: run))
        let r = try CLI.run(["train", "-o", "term", "--resume"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.all.contains("resumed from"), r.all)
        try assertSameWeights(dir.appendingPathComponent("straight/checkpoints/epoch_012.opb"), run.appendingPathComponent("checkpoints/epoch_012.opb"))
        // the saved limits were used: 6 validation images every epoch
        XCTAssertEqual(Set(try EpochLog.read(run.appendingPathComponent("log.jsonl")).map(\.valImages)), [6])
        // naming another limit on resume is refused rather than silently changing the run
        let other = try CLI.run(["train", "-o", "term", "--resume", "--limit-val", "8", "--epochs", "4"], in: dir)
        XCTAssertNotEqual(other.status, 0, other.all)
        XCTAssertTrue(other.all.contains("limit-val 6"), other.all)
    }

    /// A second Ctrl-C quits at once, and says so (a run ending there must not look as if it
    /// vanished): exit status 130, the message names what is lost and how to go on.
    func testSecondCtrlCQuitsAndSaysSo() throws {
        let dir = try reference()
        let run = dir.appendingPathComponent("twice")
        try? FileManager.default.removeItem(at: run)
        let log = dir.appendingPathComponent("twice.stderr")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let p = Process()
        p.executableURL = CLI.executable
        // steps of a few seconds, so that the first Ctrl-C cannot end the run before the second
        p.arguments = [
            "train", "--data", "data", "-o", "twice", "--config", "retinanet(encoder=resnet18, size=256)", "--batch", "4",
            "--epochs", "5", "--workers", "1",
        ]
        p.currentDirectoryURL = dir
        p.standardOutput = FileHandle.nullDevice
        p.standardError = try FileHandle(forWritingTo: log)
        try p.run()
        let stderr = { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }
        waitFor { stderr().contains("epoch 1/") || !p.isRunning }
        usleep(300_000)
        kill(p.processIdentifier, SIGINT)
        waitFor { stderr().contains("stopping after this step") || !p.isRunning }
        usleep(200_000)
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 130, stderr())
        XCTAssertTrue(stderr().contains("Ctrl-C again: quitting now; the step in flight is lost"), stderr())
    }

    /// Two runs into one folder: the second is refused naming the holder; the lock of a
    /// killed run is stale and taken over.
    func testSecondRunIntoTheSameFolderIsRefused() throws {
        let dir = try reference()
        let run = dir.appendingPathComponent("locked")
        try? FileManager.default.removeItem(at: run)
        let p = try start(["train", "--data", "data", "-o", "locked"] + Self.recipe + ["--epochs", "200"], in: dir)
        let lockFile = run.appendingPathComponent("run.lock")
        waitFor { ((try? String(contentsOf: lockFile, encoding: .utf8)) ?? "").contains("pid") || !p.isRunning }
        // a usage error (64), as the other refusals of -o/--output (new-user trial: it exited 1),
        // naming the folder, the holding process and the way on; --resume likewise, once the
        // run has written its options (the lock comes before options.json: a kill in between,
        // in a fast suite, leaves nothing to resume)
        func refused(_ extra: [String]) throws {
            let r = try CLI.run(["train", "-o", "locked"] + extra, in: dir)
            XCTAssertEqual(r.status, 64, "\(extra): \(r.all)")
            XCTAssertTrue(r.stderr.contains("locked is in use by another training run (pid \(p.processIdentifier)"), "\(extra): \(r.all)")
            XCTAssertTrue(r.stderr.contains("wait for it to finish, or choose another -o/--output"), "\(extra): \(r.all)")
        }
        try refused(["--data", "data"] + Self.recipe)
        let options = run.appendingPathComponent("options.json")
        waitFor { FileManager.default.fileExists(atPath: options.path) || !p.isRunning }
        XCTAssertTrue(p.isRunning)
        try refused(["--resume"])
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        // one epoch past those the killed run finished (a fast machine finishes some before
        // the kill; resuming a finished run says so without taking the lock)
        let logged = ((try? String(contentsOf: run.appendingPathComponent("log.jsonl"), encoding: .utf8)) ?? "")
            .split(separator: "\n").count
        let again = try CLI.run(["train", "-o", "locked", "--resume", "--epochs", "\(logged + 1)"], in: dir)
        XCTAssertEqual(again.status, 0, again.all)
        XCTAssertTrue(again.all.contains("stale lock"), again.all)
    }

    /// `compare` on a run that a training process holds says, every time, that it is still
    /// training, and leaves the run as it was: `compare` takes no lock, so the run goes on,
    /// keeps its folder (a second run is still refused) and its holder line. Killed, the run
    /// leaves a stale lock file (it names a process that is gone), which `compare` does not
    /// take for a live run.
    func testCompareSeesALiveRunWithoutDisturbingIt() throws {
        let dir = try reference()
        let run = dir.appendingPathComponent("watched")
        try? FileManager.default.removeItem(at: run)
        let p = try start(["train", "--data", "data", "-o", "watched"] + Self.recipe + ["--epochs", "200"], in: dir)
        defer {
            if p.isRunning {
                kill(p.processIdentifier, SIGKILL)
                p.waitUntilExit()
            }
        }
        let log = run.appendingPathComponent("log.jsonl"), lockFile = run.appendingPathComponent("run.lock")
        func epochs() -> Int { ((try? String(contentsOf: log, encoding: .utf8)) ?? "").split(separator: "\n").count }
        waitFor { epochs() >= 1 || !p.isRunning }
        XCTAssertTrue(p.isRunning)
        let holder = try String(contentsOf: lockFile, encoding: .utf8)
        XCTAssertTrue(holder.hasPrefix("pid \(p.processIdentifier) on "), holder)
        for k in 0..<3 {
            let r = try CLI.run(["compare", "watched", "-o", "live\(k)"], in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            XCTAssertTrue(r.stderr.contains("note: watched is still training (pid \(p.processIdentifier)); its curves end at epoch "), r.all)
        }
        // undisturbed: it holds its folder under the same line and trains on
        XCTAssertTrue(p.isRunning)
        XCTAssertEqual(try String(contentsOf: lockFile, encoding: .utf8), holder)
        XCTAssertThrowsError(try RunLock(runDirectory: run))
        let seen = epochs()
        waitFor { epochs() > seen || !p.isRunning }
        XCTAssertGreaterThan(epochs(), seen, "the run stopped training")
        XCTAssertTrue(p.isRunning)
        // killed: its lock file stays, naming a process that is gone, and is stale
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        XCTAssertEqual(try String(contentsOf: lockFile, encoding: .utf8), holder)
        XCTAssertNil(RunLock.liveHolder(of: run))
        let r = try CLI.run(["compare", "watched", "-o", "killed"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertFalse(r.stderr.contains("still training"), r.all)
    }

    /// eval --fold K on a run validated on another fold is refused unless asked for.
    func testEvalOnTheRunsTrainingFoldIsRefused() throws {
        let dir = try reference()
        var r = try CLI.run(["eval", "--model", "straight", "--data", "data", "--fold", "1", "-o", "ev1"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertTrue(r.all.contains("validated on fold 0"), r.all)
        r = try CLI.run(["eval", "--model", "straight", "--data", "data", "-o", "ev0", "--limit", "4"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(["eval", "--model", "straight", "--data", "data", "--fold", "1", "--allow-training-fold", "-o", "ev1", "--limit", "4"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.all.contains("training images"), r.all)
    }

    /// train --skip-unreadable stops when more than 10% of the images are missing, and
    /// lists what it left out in skipped.csv either way.
    func testSkippingMostOfTheDataStops() throws {
        let dir = try CLI.tempDir("skipfraction")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "-o", "data", "--count", "20", "--size", "64", "--seed", "5"], in: dir).status, 0)
        let files = try ImageFile.list(in: dir.appendingPathComponent("data/stage_2_train_images"))
        try FileManager.default.removeItem(at: files[0])
        var r = try CLI.run(
            [
                "train", "--data", "data", "-o", "one", "--skip-unreadable", "--epochs", "1", "--config", Self.tiny,
                "--batch", "4", "--workers", "1",
            ], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let one = try CSVTable(contentsOf: dir.appendingPathComponent("one/skipped.csv"))
        XCTAssertEqual(one.rows.map { $0.fields[0] }, [files[0].deletingPathExtension().lastPathComponent])
        // a finished run leaves no run.lock behind (a failed one neither, below)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("one/run.lock").path))
        for f in files[1..<5] { try FileManager.default.removeItem(at: f) }
        r = try CLI.run(["train", "--data", "data", "-o", "five", "--skip-unreadable", "--epochs", "1", "--config", Self.tiny, "--batch", "4"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertTrue(r.all.contains("5 of 20 images are missing or unreadable, more than 10%"), r.all)
        // the error names the file that lists them all
        XCTAssertTrue(r.all.contains("listed, with the reason, in \(dir.appendingPathComponent("five/skipped.csv").path)"), r.all)
        XCTAssertEqual(try CSVTable(contentsOf: dir.appendingPathComponent("five/skipped.csv")).rows.count, 5)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("five/run.lock").path))
        // files that exist but cannot be decoded count too, before any training
        for f in files[5..<20] { try Data("not an image".utf8).write(to: f) }
        r = try CLI.run(["train", "--data", "data", "-o", "garbage", "--skip-unreadable", "--epochs", "1", "--config", Self.tiny, "--batch", "4"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertTrue(r.all.contains("20 of 20 images are missing or unreadable"), r.all)
        XCTAssertNil(Trainer.latestCheckpoint(in: dir.appendingPathComponent("garbage")), "nothing was trained")
    }

    /// Records what a trainer tells its observer.
    final class MessageLog: TrainingObserver, @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [String] = []
        var messages: [String] { lock.lock(); defer { lock.unlock() }; return lines }
        func trainingMessage(_ text: String) { lock.lock(); lines.append(text); lock.unlock() }
    }

    /// Images that become unreadable after the first scan (new-user trial: they joined
    /// skipped.csv without a word) are announced as they are met: the first five by name with
    /// the reason and where skipped.csv is, the rest counted at the end of the epoch; beyond
    /// 10% of the data the run stops with an error that names skipped.csv.
    func testImagesLeftOutDuringTrainingAreAnnounced() throws {
        let dir = try CLI.tempDir("lateskip")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "-o", "data", "--count", "20", "--size", "64", "--seed", "5", "-q"], in: dir).status, 0)
        let files = try ImageFile.list(in: dir.appendingPathComponent("data/stage_2_train_images"))
        func setup(_ name: String) -> TrainingSetup {
            var o = TrainingOptions(config: Self.tiny)
            o.epochs = 1
            // one image a step: every image is met in the epoch (no partial batch is dropped)
            o.batchSize = 1
            var s = TrainingSetup(options: o, data: .rsna(dir.appendingPathComponent("data")), runDirectory: dir.appendingPathComponent(name))
            s.skipProblemImages = true
            s.workers = 1
            return s
        }
        // one image gone after the scan: named once, with where it is listed
        let one = MessageLog()
        var (trainer, _) = try setup("one").makeTrainer(registry: try Registry.standard(), observer: one)
        let gone = files[3].deletingPathExtension().lastPathComponent
        try FileManager.default.removeItem(at: files[3])
        _ = try trainer.run()
        let csv = dir.appendingPathComponent("one/skipped.csv").path
        let named = one.messages.filter { $0.hasPrefix("warning: left out image") }
        XCTAssertEqual(named.count, 1, "\(one.messages)")
        XCTAssertTrue(named.first?.contains("image \(gone): ") == true && named.first?.contains(csv) == true, "\(one.messages)")
        XCTAssertEqual(try CSVTable(contentsOf: URL(fileURLWithPath: csv)).rows.map { $0.fields[0] }, [gone])
        // seven more (8 of 20, more than 10%): five named, then counted; the error names the list
        let many = MessageLog()
        (trainer, _) = try setup("many").makeTrainer(registry: try Registry.standard(), observer: many)
        for f in files[4..<11] { try FileManager.default.removeItem(at: f) }
        XCTAssertThrowsError(try trainer.run()) { e in
            XCTAssertTrue("\(e)".contains("8 of 20 images are missing or unreadable"), "\(e)")
            XCTAssertTrue("\(e)".contains(dir.appendingPathComponent("many/skipped.csv").path), "\(e)")
        }
        XCTAssertEqual(many.messages.filter { $0.hasPrefix("warning: left out image") }.count, 5, "\(many.messages)")
        XCTAssertTrue(many.messages.contains { $0.hasPrefix("warning: 2 more images could not be read") && $0.contains("many/skipped.csv") }, "\(many.messages)")
    }

    /// `dcm` with Rescale Slope (0028,1053) 'nan' inserted after Pixel Representation
    /// (0028,0103), as in the case train-skip-unreadable-nan-dicom.
    static func nanSlope(_ dcm: Data) throws -> Data {
        let pixelRepresentation: [UInt8] = [0x28, 0, 0x03, 0x01, 0x55, 0x53, 2, 0, 0, 0]
        let bytes = [UInt8](dcm)
        guard let at = (0...(bytes.count - pixelRepresentation.count)).first(where: { bytes[$0..<$0 + pixelRepresentation.count].elementsEqual(pixelRepresentation) })
        else { throw CocoaError(.fileReadCorruptFile) }
        let slope: [UInt8] = [0x28, 0, 0x53, 0x10, 0x44, 0x53, 4, 0] + Array("nan ".utf8)
        let end = at + pixelRepresentation.count
        return Data(bytes[..<end] + slope + bytes[end...])
    }

    /// New-user findings with one DICOM whose Rescale Slope is 'nan': without --skip-unreadable
    /// the error names it and --skip-unreadable before training starts and leaves no run folder; with it,
    /// train says how many images it left out and where they are listed; more than 10% left
    /// out shows each reason whole, even under a long path.
    func testUnreadableDICOMIsReportedAndAFailedFirstEpochLeavesNothing() throws {
        let dir = try CLI.tempDir("nanslope")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = String(repeating: "a-long-folder-name-", count: 8) + "data"
        XCTAssertEqual(try CLI.run(["synth", "-o", data, "--count", "20", "--size", "64", "--seed", "5", "--format", "dicom", "-q"], in: dir).status, 0)
        let files = try ImageFile.list(in: dir.appendingPathComponent(data + "/stage_2_train_images"))
        try Self.nanSlope(try Data(contentsOf: files[0])).write(to: files[0])
        let train = ["train", "--data", data, "--epochs", "1", "--config", Self.tiny, "--batch", "4", "--workers", "1"]
        var r = try CLI.run(train + ["-o", "strict"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stderr.contains("RescaleSlope (0028,1053) is 'nan'") && r.stderr.contains("add --skip-unreadable"), r.all)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("strict").path), "a half-made run folder is left")
        r = try CLI.run(train + ["-o", "lenient", "--skip-unreadable"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("1 image skipped") && r.stderr.contains("lenient/skipped.csv"), r.all)
        // 3 of 20: more than 10%; the reasons are shown whole
        for f in files[1..<3] { try Self.nanSlope(try Data(contentsOf: f)).write(to: f) }
        r = try CLI.run(train + ["-o", "many", "--skip-unreadable"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("3 of 20 images are missing or unreadable"), r.all)
        XCTAssertTrue(r.stderr.contains("expected a finite number in [-1e6, 1e6]); ") && !r.stderr.contains("bytes)"), r.all)
    }

    /// Without --skip-unreadable, images that cannot be read (or are missing) stop train before
    /// its first step, every one counted, the first ten named with the reason, and the message
    /// names --skip-unreadable; nothing is left in the run folder (new-user trial: the run
    /// stopped at the first such image in the middle of epoch 1, hours in on a full data set).
    func testUnreadableImagesStopTrainingBeforeItStarts() throws {
        let dir = try CLI.tempDir("precheck")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "-o", "data", "--count", "20", "--size", "64", "--seed", "5", "-q"], in: dir).status, 0)
        let files = try ImageFile.list(in: dir.appendingPathComponent("data/stage_2_train_images"))
        try FileManager.default.removeItem(at: files[0])
        for f in files[1..<13] { try Data("not an image".utf8).write(to: f) }
        let r = try CLI.run(
            ["train", "--data", "data", "-o", "run", "--epochs", "1", "--config", Self.tiny, "--batch", "4", "--workers", "1"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stderr.contains("13 of 20 images are missing or cannot be read"), r.all)
        XCTAssertTrue(r.stderr.contains("training did not start"), r.all)
        XCTAssertTrue(r.stderr.contains("  \(files[0].deletingPathExtension().lastPathComponent): missing"), r.all)
        XCTAssertTrue(r.stderr.contains(files[1].lastPathComponent) && r.stderr.contains("  ... and 3 more"), r.all)
        XCTAssertTrue(r.stderr.contains("add --skip-unreadable"), r.all)
        XCTAssertFalse(r.stdout.contains("run:") || r.all.contains("epoch 1"), "training started: \(r.all)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run").path), "a half-made run folder is left")
    }

    /// train-resume-needs-data with a run of an older version whose options.json records the
    /// data folder only in "data", a folder that no longer exists: the message says so.
    func testResumeNamesARecordedDataFolderThatIsGone() throws {
        let dir = try CLI.tempDir("gone")
        defer { try? FileManager.default.removeItem(at: dir) }
        let run = dir.appendingPathComponent("run")
        try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
        var options = TrainingOptions(config: Self.tiny)
        options.data = dir.appendingPathComponent("moved/data").path
        try JSONEncoder().encode(options).write(to: run.appendingPathComponent("options.json"))
        var r = try CLI.run(["train", "-o", "run", "--resume"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("\"data\": \"\(options.data)\", which no longer exists") && r.stderr.contains("--data DIR"), r.all)
        options.dataRoot = dir.appendingPathComponent("elsewhere").path
        try JSONEncoder().encode(options).write(to: run.appendingPathComponent("options.json"))
        r = try CLI.run(["train", "-o", "run", "--resume"], in: dir)
        XCTAssertTrue(r.stderr.contains("\"dataRoot\": \"\(options.dataRoot!)\", which no longer exists"), r.all)
    }
}
