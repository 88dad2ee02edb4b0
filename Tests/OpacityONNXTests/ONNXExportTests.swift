import Foundation
import Opacity
import XCTest

/// ONNX export against its oracles: `onnx.checker.check_model` on every exported file and
/// ONNX Runtime's outputs against the engine's, for every encoder of the registry and for
/// the zoo model with post-processing against `opacity detect`.
///
/// The oracle runs in one Python process per test (scripts/onnx_check.py) from the virtual
/// environment that scripts/onnx-venv.sh makes outside the repository; the test makes it
/// when it is missing and never skips.
final class ONNXExportTests: XCTestCase {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let realdata = repo.deletingLastPathComponent().appendingPathComponent("shared/realdata")
    var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-onnx-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let folder, ProcessInfo.processInfo.environment["OPACITY_KEEP_ONNX_TESTS"] == nil { try? FileManager.default.removeItem(at: folder) }
    }

    // MARK: Every encoder

    /// Each encoder in a small RetinaNet (64 px, 16-channel neck and head; ResNets at a quarter
    /// width) with batch norms
    /// given non-trivial statistics, so folding is exercised: ONNX Runtime on a batch of 3
    /// (the trace ran with 2) gives the engine's logits, deltas and global log-probabilities
    /// within 1e-4 relative (max |difference| / max |value|).
    func testEveryEncoderMatchesONNXRuntime() throws {
        let registry = try Registry.standard()
        let encoders = registry.names(.encoder)
        XCTAssertGreaterThanOrEqual(encoders.count, 7, "expected the registry's encoders, got \(encoders)")
        var manifest = Manifest()
        var expectedGlobal: [String: Bool] = [:]
        for (i, name) in encoders.enumerated() {
            // ResNets at a quarter width keep the files small; the other families have no width.
            let encoder = name.hasPrefix("resnet") ? "\(name)(width=0.25)" : name
            let config = "retinanet(encoder=\(encoder), neck=fpn(channels=16), head=retina(channels=16), size=64)"
            let detector = try Self.makeDetector(registry, config, seed: UInt64(i + 1))
            let file = folder.appendingPathComponent("\(name).onnx")
            try ONNXExporter.write(detector, to: file)
            var rng = RandomGenerator(seed: 7)
            let x = Tensor.randomUniform([3, 1, 64, 64], 0, 1, using: &rng)
            let out = Autograd.inference { detector.forward(x) }
            var expected = ["class_logits": out.classLogits, "box_deltas": out.boxDeltas]
            if let g = out.globalLogProbs { expected["global_log_probs"] = g }
            expectedGlobal[name] = out.globalLogProbs != nil
            try manifest.add(name: name, model: file, input: x, expected: expected, in: folder)
        }
        let results = try Self.runOracle(manifest, in: folder)
        XCTAssertEqual(results.count, encoders.count)
        for r in results {
            XCTAssertEqual(r.checker, "ok", "\(r.name): onnx.checker")
            XCTAssertNil(r.runtimeError, "\(r.name): ONNX Runtime")
            XCTAssertEqual(r.irVersion, 8, r.name)
            XCTAssertEqual(r.opset, 17, r.name)
            let names = Set(r.errors.keys)
            XCTAssertTrue(names.isSuperset(of: ["class_logits", "box_deltas"]), "\(r.name): \(names)")
            if expectedGlobal[r.name] == true { XCTAssertTrue(names.contains("global_log_probs"), r.name) }
            for (output, e) in r.errors {
                XCTAssertNotNil(e.relative, "\(r.name).\(output): shape mismatch \(e.raw)")
                if let rel = e.relative { XCTAssertLessThanOrEqual(rel, 1e-4, "\(r.name).\(output): \(e.raw)") }
            }
            XCTAssertEqual(r.outputs["anchors"], [Self.anchorCount(size: 64), 4], r.name)
            XCTAssertEqual(r.outputs["class_logits"]?.first, 3, "\(r.name): dynamic batch")
        }
    }

    // MARK: The zoo model with post-processing, against `opacity detect`

    /// `opacity export retinanet-r34-composite --format onnx --postprocess` and ONNX Runtime
    /// on four synthetic opacities composited onto real RSNA films (in one batch) give
    /// `opacity detect`'s boxes (IoU >= 0.99) and scores;
    /// the metadata carries the config, the bundle's sha256 and the framework version.
    func testZooModelPostprocessingMatchesDetect() throws {
        let entry = "retinanet-r34-composite"
        let threshold = "0.05"
        // Synthetic opacities composited onto real RSNA films, as the zoo model was trained.
        let synth = try CLIRunner.run(["synth", "--output", folder.appendingPathComponent("synth").path, "--count", "4", "--size", "512",
                                       "--seed", "11", "--backgrounds", Self.realdata.appendingPathComponent("rsna/stage_1_train_images").path])
        XCTAssertEqual(synth.status, 0, synth.all)
        let files = try ImageFile.list(in: folder.appendingPathComponent("synth/stage_2_train_images"))
        XCTAssertEqual(files.count, 4)
        let onnxFile = folder.appendingPathComponent("r34.onnx")
        let export = try CLIRunner.run(["export", entry, "--format", "onnx", "--postprocess", "--threshold", threshold, "-o", onnxFile.path])
        XCTAssertEqual(export.status, 0, export.all)
        let detect = try CLIRunner.run(["detect"] + files.map(\.path) + ["--model", entry, "--threshold", threshold, "--output", folder.appendingPathComponent("found").path, "--no-overlays"])
        XCTAssertEqual(detect.status, 0, detect.all)
        struct Found: Decodable { var file: String; var width: Int; var height: Int; var boxes: [Box] }
        struct Box: Decodable { var score: Float; var x: Float; var y: Float; var width: Float; var height: Float }
        let found = try JSONDecoder().decode([Found].self, from: Data(contentsOf: folder.appendingPathComponent("found/detections.json")))
        XCTAssertEqual(found.count, files.count)

        // The same input the predictor builds, and the engine's raw outputs for it.
        let registry = try Registry.standard()
        let detector = try Zoo.load(entry, registry: registry)
        let images = try files.map { try ImageFile.read($0) }
        let x = InferenceInput.batch(images.map { InferenceInput.prepare($0, size: detector.inputSize) })
        let out = Autograd.inference { detector.forward(x) }
        var manifest = Manifest()
        try manifest.add(name: entry, model: onnxFile, input: x,
                         expected: ["class_logits": out.classLogits, "box_deltas": out.boxDeltas, "global_log_probs": out.globalLogProbs!],
                         in: folder)
        let r = try XCTUnwrap(Self.runOracle(manifest, in: folder).first)
        XCTAssertEqual(r.checker, "ok")
        XCTAssertNil(r.runtimeError)
        for (output, e) in r.errors { XCTAssertLessThanOrEqual(e.relative ?? 1, 1e-4, "\(output): \(e.raw)") }
        XCTAssertEqual(r.metadata["config"], detector.config)
        XCTAssertEqual(r.metadata["framework_version"], FrameworkVersion.current)
        let bundle = try Zoo.standard().verifiedFile(entry)
        XCTAssertEqual(r.metadata["bundle_sha256"], SHA256.hash(Array(try Data(contentsOf: bundle))).hex)

        let dets = try XCTUnwrap(r.detections, "the post-processed graph has boxes, scores and batch_index")
        var total = 0
        for f in found {
            let i = try XCTUnwrap(files.firstIndex { $0.path == f.file }, f.file)
            let mine = dets.indices.filter { dets.batchIndex[$0] == i }
            XCTAssertEqual(mine.count, f.boxes.count, "\(f.file): ONNX Runtime kept \(mine.count) boxes, opacity detect \(f.boxes.count)")
            let sx = Float(f.width) / Float(detector.inputSize), sy = Float(f.height) / Float(detector.inputSize)
            for (j, b) in zip(mine, f.boxes) {
                let c = dets.boxes[j]
                let onnxBox = BoundingBox(x1: c[0], y1: c[1], x2: c[2], y2: c[3]).rescaled(sx: sx, sy: sy)
                let iou = onnxBox.iou(BoundingBox(x: b.x, y: b.y, width: b.width, height: b.height))
                XCTAssertGreaterThanOrEqual(iou, 0.99, "\(f.file): box \(onnxBox) against \(b)")
                XCTAssertEqual(dets.scores[j], b.score, accuracy: 1e-4 + 1e-3 * b.score, f.file)
            }
            total += f.boxes.count
        }
        XCTAssertGreaterThan(total, 0, "the zoo model finds opacities at threshold \(threshold) on these films")
    }

    // MARK: Shrink and the confidence filter, against the predictor

    /// A small random detector with `shrink=0.875`: the post-processed graph on a batch of 3
    /// gives the predictor's detections (decoding, NMS, shrink, half-max cut and threshold)
    /// box for box (IoU >= 0.99; corners within 0.01 px for boxes clipped to nothing, which a
    /// random detector makes and NMS must treat as overlapping nothing) with the same scores.
    func testPostprocessingWithShrinkMatchesThePredictor() throws {
        let registry = try Registry.standard()
        let detector = try Self.makeDetector(registry, "retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=16), head=retina(channels=16), size=64, shrink=0.875, nms=0.3)", seed: 5)
        let threshold: Float = 0.3
        let file = folder.appendingPathComponent("shrink.onnx")
        let post = try ONNXPostprocess.matching(detector, threshold: threshold)
        XCTAssertEqual(post.shrink, 0.875)
        try ONNXExporter.write(detector, to: file, options: ONNXExportOptions(postprocess: post))
        var rng = RandomGenerator(seed: 9)
        let x = Tensor.randomUniform([3, 1, 64, 64], 0, 1, using: &rng)
        let predictor = try Predictor(detectors: [detector])
        predictor.filter = ConfidenceFilter(threshold: threshold)
        let expected = predictor.detectNetwork(x)
        var manifest = Manifest()
        try manifest.add(name: "shrink", model: file, input: x, expected: [:], in: folder)
        let r = try XCTUnwrap(Self.runOracle(manifest, in: folder).first)
        XCTAssertEqual(r.checker, "ok")
        XCTAssertNil(r.runtimeError)
        let dets = try XCTUnwrap(r.detections)
        XCTAssertGreaterThan(expected.map(\.count).reduce(0, +), 0, "the random detector finds boxes above \(threshold)")
        for (i, want) in expected.enumerated() {
            let mine = dets.indices.filter { dets.batchIndex[$0] == i }
            XCTAssertEqual(mine.count, want.count, "image \(i)")
            for (j, d) in zip(mine, want) {
                let c = dets.boxes[j]
                let box = BoundingBox(x1: c[0], y1: c[1], x2: c[2], y2: c[3])
                if box.area > 0 && d.box.area > 0 {
                    XCTAssertGreaterThanOrEqual(box.iou(d.box), 0.99, "image \(i): \(c) against \(d.box)")
                } else {
                    // A box clipped to nothing (it lay outside the image) has no IoU: compare corners.
                    let diff = zip(c, [d.box.x, d.box.y, d.box.x2, d.box.y2]).map { abs($0 - $1) }.max()!
                    XCTAssertLessThanOrEqual(diff, 0.01, "image \(i): \(c) against \(d.box)")
                }
                XCTAssertEqual(dets.scores[j], d.score, accuracy: 1e-4, "image \(i)")
            }
        }
    }

    // MARK: Errors

    /// A model in training mode with active dropout still exports (the exporter puts it in
    /// evaluation mode); a bad --format is refused with the valid choices; the bundle being
    /// exported is never overwritten.
    func testExportPutsTheModelInEvaluationModeAndRejectsBadFormats() throws {
        let registry = try Registry.standard()
        let detector = try Self.makeDetector(registry, "retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=16), head=retina(channels=16), size=64)", seed: 3)
        detector.train()
        let m = try ONNXExporter.model(for: detector)
        XCTAssertFalse(m.nodes.contains { $0.opType == "BatchNormalization" }, "every batch norm of ResNet follows a convolution and folds")
        XCTAssertEqual(m.outputs.map(\.name), ["class_logits", "box_deltas", "global_log_probs", "anchors"])
        let r = try CLIRunner.run(["export", "x.opb", "--format", "tflite", "-o", folder.appendingPathComponent("x").path])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.all.contains("tflite") && r.all.contains("onnx"), r.all)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("x").path))
        // The bundle being exported is never overwritten.
        let bundle = folder.appendingPathComponent("small.opb")
        try detector.save(to: bundle)
        let before = try Data(contentsOf: bundle)
        let same = try CLIRunner.run(["export", bundle.path, "-o", bundle.path])
        XCTAssertNotEqual(same.status, 0)
        XCTAssertTrue(same.all.contains("is the model being exported"), same.all)
        XCTAssertEqual(try Data(contentsOf: bundle), before)
        // with --format onnx, a .opb output is refused for its name first
        let onnxOverBundle = try CLIRunner.run(["export", bundle.path, "--format", "onnx", "-o", bundle.path])
        XCTAssertNotEqual(onnxOverBundle.status, 0)
        XCTAssertTrue(onnxOverBundle.all.contains("name it .onnx"), onnxOverBundle.all)
        XCTAssertEqual(try Data(contentsOf: bundle), before)
    }

    // MARK: Support

    /// A detector with non-trivial batch-norm statistics and non-zero output convolutions.
    static func makeDetector(_ registry: Registry, _ config: String, seed: UInt64) throws -> Detector {
        let d = try Initializer.withSeed(seed) { try registry.makeDetector(config) }
        var rng = RandomGenerator(seed: seed + 100)
        for (_, p) in d.namedParameters() where p.shape.count >= 2 && p.value.scalars.allSatisfy({ $0 == 0 }) {
            let fanIn = p.shape.dropFirst().reduce(1, *)
            p.value = Tensor.randomNormal(p.shape, std: 1 / Float(fanIn).squareRoot(), using: &rng)
        }
        for (_, m) in d.namedModules() {
            guard let bn = m as? BatchNorm2d else { continue }
            let c = bn.weight.shape[0]
            bn.weight.value = Tensor.randomUniform([c], 0.5, 1.5, using: &rng)
            bn.bias.value = Tensor.randomNormal([c], std: 0.1, using: &rng)
            bn.runningMean.value = Tensor.randomNormal([c], std: 0.1, using: &rng)
            bn.runningVar.value = Tensor.randomUniform([c], 0.5, 1.5, using: &rng)
        }
        d.eval()
        return d
    }

    static func anchorCount(size: Int) -> Int {
        AnchorGenerator().anchors(height: size, width: size).count
    }

    struct Manifest: Encodable {
        struct Expected: Encodable { var file: String; var shape: [Int] }
        struct Case: Encodable {
            var name: String, model: String, input: String
            var input_shape: [Int]
            var expected: [String: Expected]
        }
        var cases: [Case] = []

        mutating func add(name: String, model: URL, input: Tensor, expected: [String: Tensor], in folder: URL) throws {
            func write(_ t: Tensor, _ stem: String) throws -> String {
                let url = folder.appendingPathComponent("\(name)-\(stem).f32")
                try t.withUnsafeBufferPointer { try Data(buffer: $0).write(to: url) }
                return url.path
            }
            var exp: [String: Expected] = [:]
            for (k, t) in expected { exp[k] = Expected(file: try write(t, k), shape: t.shape) }
            cases.append(Case(name: name, model: model.path, input: try write(input, "input"), input_shape: input.shape, expected: exp))
        }
    }

    struct Result {
        struct Error { var relative: Double?; var raw: [String: Any] }
        struct Detections {
            var boxes: [[Float]], scores: [Float], batchIndex: [Int]
            var indices: Range<Int> { 0..<scores.count }
        }
        var name: String, checker: String, runtimeError: String?
        var irVersion: Int, opset: Int
        var metadata: [String: String]
        var outputs: [String: [Int]]
        var errors: [String: Error]
        var detections: Detections?
    }

    /// Runs scripts/onnx_check.py once over every case.
    static func runOracle(_ manifest: Manifest, in folder: URL) throws -> [Result] {
        let manifestURL = folder.appendingPathComponent("manifest.json"), resultsURL = folder.appendingPathComponent("results.json")
        try JSONEncoder().encode(manifest).write(to: manifestURL)
        let python = try Shell.run("/bin/bash", [repo.appendingPathComponent("scripts/onnx-venv.sh").path]).trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try Shell.run(python, [repo.appendingPathComponent("scripts/onnx_check.py").path, "check", manifestURL.path, resultsURL.path])
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: resultsURL)) as! [String: Any]
        return (json["results"] as! [[String: Any]]).map { r in
            var errors: [String: Result.Error] = [:]
            for (k, v) in r["errors"] as? [String: [String: Any]] ?? [:] {
                errors[k] = Result.Error(relative: v["relative"] as? Double, raw: v)
            }
            var dets: Result.Detections?
            if let d = r["detections"] as? [String: Any] {
                dets = Result.Detections(boxes: (d["boxes"] as! [[Double]]).map { $0.map(Float.init) },
                                         scores: (d["scores"] as! [Double]).map(Float.init), batchIndex: d["batch_index"] as! [Int])
            }
            return Result(name: r["name"] as! String, checker: r["checker"] as? String ?? "", runtimeError: r["runtime_error"] as? String,
                          irVersion: r["ir_version"] as? Int ?? 0, opset: (r["opsets"] as? [String: Int])?["ai.onnx"] ?? 0,
                          metadata: r["metadata"] as? [String: String] ?? [:], outputs: r["outputs"] as? [String: [Int]] ?? [:],
                          errors: errors, detections: dets)
        }
    }
}

/// Runs a program and returns its standard output; throws with its output when it fails.
enum Shell {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func run(_ program: String, _ args: [String], environment: [String: String] = [:]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let group = DispatchGroup()
        let box = Box()
        group.enter()
        let errReader = err.fileHandleForReading
        DispatchQueue.global().async { box.set(errReader.readDataToEndOfFile()); group.leave() }
        let o = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        let stdout = String(decoding: o, as: UTF8.self), stderr = String(decoding: box.get(), as: UTF8.self)
        guard p.terminationStatus == 0 else {
            throw Failure(description: "\(program) \(args.joined(separator: " ")) exited \(p.terminationStatus):\n\(stdout)\n\(stderr)")
        }
        return stdout
    }

    final class Box: @unchecked Sendable {
        private var data = Data()
        private let lock = NSLock()
        func set(_ d: Data) { lock.lock(); data = d; lock.unlock() }
        func get() -> Data { lock.lock(); defer { lock.unlock() }; return data }
    }
}

/// Runs the built `opacity` executable (next to the test bundle) with two compute threads.
enum CLIRunner {
    struct Result { var status: Int32; var all: String }

    static func run(_ args: [String]) throws -> Result {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("opacity").path) {
            dir = Bundle.main.bundleURL.deletingLastPathComponent()
        }
        let p = Process()
        p.executableURL = dir.appendingPathComponent("opacity")
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["OPACITY_THREADS"] = "2"
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, all: String(decoding: data, as: UTF8.self))
    }
}
