import Foundation
import Opacity
import XCTest

/// The paper's workflow through the real `opacity` command on a small synthetic set.
final class WorkflowTests: XCTestCase {
    let small = "retinanet(encoder=resnet18(width=0.5), neck=fpn(channels=48), head=retina(channels=48), size=128)"

    func parseJSONL(_ url: URL) throws -> [[String: Any]] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    /// Train, evaluate, detect, submit, score, ensemble, compare; every file read back.
    func testWholeWorkflowLearnsAndWritesReadableFiles() throws {
        let dir = try CLI.tempDir("workflow")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["synth", "--out", "data", "--count", "320", "--size", "256", "--seed", "3"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(
            [
                "train", "--data", "data", "--config", small, "--epochs", "8", "--batch", "8", "--lr", "1e-3",
                "--clip", "1", "--freeze-bn", "off", "--aug", "light", "--out", "run", "--seed", "5",
            ], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let run = dir.appendingPathComponent("run")
        // JSONL schema
        let lines = try parseJSONL(run.appendingPathComponent("log.jsonl"))
        XCTAssertEqual(lines.count, 8)
        for (i, l) in lines.enumerated() {
            XCTAssertEqual(l["epoch"] as? Int, i + 1)
            for key in ["time", "seconds", "lr", "train", "val", "metric", "images_per_second", "train_images", "val_images", "checkpoint", "best"] {
                XCTAssertNotNil(l[key], "log line \(i + 1) lacks \(key)")
            }
            let val = l["val"] as! [String: Any]
            for key in ["total", "focal", "regression", "global"] { XCTAssertNotNil(val[key] as? Double, "val.\(key)") }
            let metric = l["metric"] as! [String: Any]
            XCTAssertEqual((metric["sweep"] as! [[Double]]).first?.count, 2)
            XCTAssertTrue(FileManager.default.fileExists(atPath: run.appendingPathComponent(l["checkpoint"] as! String).path))
        }
        let logs = try EpochLog.read(run.appendingPathComponent("log.jsonl"))
        let best = logs.map(\.metric.best).max()!
        XCTAssertGreaterThan(best, 0.5, "a reduced-width RetinaNet should learn the synthetic opacities")
        XCTAssertLessThan(logs.last!.val.total, logs.first!.val.total)
        XCTAssertTrue(FileManager.default.fileExists(atPath: run.appendingPathComponent("best.opb").path))

        // eval: CSV + PNG
        r = try CLI.run(["eval", "--model", "run", "--data", "data", "--fold", "0", "--out", "ev"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("metric "), r.stdout)
        let perImage = try String(contentsOf: dir.appendingPathComponent("ev/per_image.csv"), encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(perImage.first, "patientId,score,truth_boxes,predicted_boxes")
        XCTAssertEqual(perImage.count, 81)
        XCTAssertNoThrow(try PNG.read(dir.appendingPathComponent("ev/metric_vs_threshold.png")))

        // detect: JSON with boxes in source pixels + overlays
        let images = dir.appendingPathComponent("data/stage_2_train_images")
        let two = try ImageFile.list(in: images).prefix(2).map(\.path)
        r = try CLI.run(["detect"] + two + ["--model", "run", "--out", "found"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let found = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("found/detections.json"))) as! [[String: Any]]
        XCTAssertEqual(found.count, 2)
        XCTAssertEqual(found[0]["width"] as? Int, 256)
        for f in found { for b in f["boxes"] as! [[String: Any]] { XCTAssertLessThanOrEqual((b["x"] as! Double), 256) } }
        for p in two {
            let name = URL(fileURLWithPath: p).deletingPathExtension().lastPathComponent + ".overlay.png"
            let png = try PNG.read(dir.appendingPathComponent("found/\(name)"))
            guard case .rgb(let rgb) = png else { return XCTFail("overlay is not RGB") }
            XCTAssertEqual(rgb.width, 256)
        }
        r = try CLI.run(["detect", two[0], "--model", "run", "--format", "csv", "--out", "found-csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(
            try String(contentsOf: dir.appendingPathComponent("found-csv/detections.csv"), encoding: .utf8).hasPrefix(
                "file,score,x,y,width,height,image_width,image_height,patientId,sopInstanceUID\n"))

        // submit + score: rows parse, every image has a row
        r = try CLI.run(["submit", "--images", "data/stage_2_train_images", "--model", "run", "--out", "sub.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let sub = try Submission(contentsOf: dir.appendingPathComponent("sub.csv"))
        XCTAssertEqual(sub.rows.count, 320)
        r = try CLI.run(["score", "sub.csv", "--labels", "data/stage_2_train_labels.csv", "--per-image", "scores.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("metric "), r.stdout)
        XCTAssertTrue(try String(contentsOf: dir.appendingPathComponent("scores.csv"), encoding: .utf8).hasPrefix("patientId,score\n"))

        // ensemble of two checkpoints, both rules
        let ck = run.appendingPathComponent("checkpoints")
        for rule in ["percentile", "mean", "wbf"] {
            r = try CLI.run(
                [
                    "eval", "--model", ck.appendingPathComponent("epoch_007.opb").path, "--model", ck.appendingPathComponent("epoch_008.opb").path,
                    "--ensemble", rule, "--data", "data", "--folds-file", "run/folds.csv", "--out", "ens-\(rule)",
                ], in: dir)
            XCTAssertEqual(r.status, 0, r.all)
            XCTAssertTrue(r.stdout.contains("ensemble of 2 models"), r.stdout)
            XCTAssertTrue(r.stdout.contains("COCO boxes: AP@[.50:.95]"), r.stdout)
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("ens-\(rule)/report.json").path))
        }

        // compare: PNGs decode, CSV has a row per epoch
        r = try CLI.run(["compare", "run", "--out", "cmp"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        for png in ["val_loss.png", "metric.png"] { XCTAssertNoThrow(try PNG.read(dir.appendingPathComponent("cmp/\(png)"))) }
        XCTAssertEqual(try String(contentsOf: dir.appendingPathComponent("cmp/curves.csv"), encoding: .utf8).split(separator: "\n").count, 9)
    }

    /// A run stopped in the middle of an epoch and resumed ends with the same weights as an
    /// uninterrupted run (fixed thread count).
    func testResumeGivesTheSameWeights() throws {
        try checkResume(tiny: "retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=16), head=retina(channels=16), size=64)")
    }

    /// The same with gradient checkpointing: the recomputed segments replay the dropout masks,
    /// so a resumed run still gives the straight run's weights bit for bit.
    func testResumeWithGradientCheckpointingGivesTheSameWeights() throws {
        try checkResume(tiny: "retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=16), head=retina(channels=16), size=64, grad_checkpointing=all)")
    }

    private func checkResume(tiny: String) throws {
        let dir = try CLI.tempDir("resume")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "--out", "data", "--count", "40", "--size", "128", "--seed", "9"], in: dir).status, 0)
        let common = ["train", "--data", "data", "--config", tiny, "--epochs", "2", "--batch", "4", "--lr", "1e-3", "--seed", "11"]
        var r = try CLI.run(common + ["--out", "straight"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        r = try CLI.run(common + ["--out", "stopped", "--stop-after", "4"], in: dir)
        XCTAssertEqual(r.status, 130, r.all)
        XCTAssertTrue(r.all.contains("--resume"), r.all)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("stopped/checkpoints/interrupted.opb").path))
        r = try CLI.run(["train", "--data", "data", "--out", "stopped", "--resume", "--stop-after", "6"], in: dir)
        XCTAssertEqual(r.status, 130, r.all)
        r = try CLI.run(["train", "--data", "data", "--out", "stopped", "--resume"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let registry = try Registry.standard()
        let a = try Detector.load(from: dir.appendingPathComponent("straight/checkpoints/epoch_002.opb"), registry: registry)
        let b = try Detector.load(from: dir.appendingPathComponent("stopped/checkpoints/epoch_002.opb"), registry: registry)
        let sa = a.stateDict(), sb = b.stateDict()
        XCTAssertEqual(sa.map(\.0), sb.map(\.0))
        for ((name, x), (_, y)) in zip(sa, sb) { XCTAssertEqual(x.scalars, y.scalars, "\(name) differs after resume") }
        let la = try EpochLog.read(dir.appendingPathComponent("straight/log.jsonl"))
        let lb = try EpochLog.read(dir.appendingPathComponent("stopped/log.jsonl"))
        XCTAssertEqual(la.map(\.val), lb.map(\.val))
    }

    /// A loss that is not finite stops the run with a clear message and a non-zero exit;
    /// the last good checkpoint and the best link stay.
    func testNonFiniteLossStopsAndKeepsTheLastGoodCheckpoint() throws {
        let dir = try CLI.tempDir("nan")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "--out", "data", "--count", "24", "--size", "128", "--seed", "2"], in: dir).status, 0)
        let tiny = "retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=16), head=retina(channels=16), size=64)"
        var r = try CLI.run(["train", "--data", "data", "--config", tiny, "--epochs", "1", "--batch", "4", "--lr", "1e-3", "--out", "run"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let good = try Data(contentsOf: dir.appendingPathComponent("run/checkpoints/epoch_001.opb"))
        r = try CLI.run(["train", "--data", "data", "--out", "run", "--resume", "--epochs", "3", "--lr", "1e30"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertTrue(r.all.contains("not finite at epoch 2"), r.all)
        XCTAssertTrue(r.all.contains("last good checkpoint is kept"), r.all)
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("run/checkpoints/epoch_001.opb")), good)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run/checkpoints/epoch_002.opb").path))
        XCTAssertEqual(
            try FileManager.default.destinationOfSymbolicLink(atPath: dir.appendingPathComponent("run/best.opb").path),
            "checkpoints/epoch_001.opb")
        XCTAssertEqual(try EpochLog.read(dir.appendingPathComponent("run/log.jsonl")).count, 1)
    }

    /// An image that cannot be decoded stops training with its name (it is not silently
    /// dropped), unless --skip-unreadable is given.
    func testUnreadableImageStopsTrainingUnlessSkipped() throws {
        let dir = try CLI.tempDir("unreadable")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "--out", "data", "--count", "16", "--size", "128", "--seed", "4"], in: dir).status, 0)
        let bad = try ImageFile.list(in: dir.appendingPathComponent("data/stage_2_train_images"))[0]
        try Data("not an image".utf8).write(to: bad)
        let tiny = "retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=16), head=retina(channels=16), size=64)"
        var r = try CLI.run(["train", "--data", "data", "--config", tiny, "--epochs", "1", "--batch", "4", "--out", "run"], in: dir)
        XCTAssertNotEqual(r.status, 0, r.all)
        XCTAssertTrue(r.all.contains(bad.lastPathComponent), r.all)
        r = try CLI.run(["train", "--data", "data", "--config", tiny, "--epochs", "1", "--batch", "4", "--out", "run2", "--skip-unreadable"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
    }

    /// Mistakes give clear messages and non-zero exit codes.
    func testBadInputFailsClearly() throws {
        let dir = try CLI.tempDir("errors")
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [([String], String)] = [
            (["train", "--data", "nowhere"], "nowhere"),
            (["train"], "--data"),
            (["train", "--data", "x", "--config", "retinanet(encoder=resnet35)"], "did you mean 'resnet34'"),
            (["train", "--data", "x", "--fold", "7"], "--fold 7"),
            (["train", "--data", "x", "--freeze-bn", "maybe"], "'on' and 'off'"),
            (["detect", "missing.png"], "missing.png"),
            (["detect", "x.png", "--model", "no-such-model"], "no-such-model"),
            // (a data folder that exists: eval checks --data before the model, ea69abe)
            (["eval", "--model", "retinanet-r34-compsite", "--data", "."], "retinanet-r34-compsite"),
            (["score", "missing.csv", "--labels", "l.csv"], "missing.csv"),
            (["plugins", "--canonical", "retinanet(dropuot=1)"], "did you mean 'dropout'"),
            (["compare", "not-a-run"], "not-a-run"),
            (["frobnicate"], "frobnicate"),
        ]
        _ = FileManager.default.createFile(atPath: dir.appendingPathComponent("x.png").path, contents: Data("not a png".utf8))
        for (args, expected) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertNotEqual(r.status, 0, "\(args) should fail")
            XCTAssertTrue(r.all.contains(expected), "\(args): expected '\(expected)' in:\n\(r.all)")
            XCTAssertFalse(r.all.contains("Fatal error"), "\(args) crashed:\n\(r.all)")
        }
    }
}
