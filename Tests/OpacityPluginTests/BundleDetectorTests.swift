import Foundation
import Opacity
import XCTest

/// Bundles with real detectors: round trips in every storage type, the int8 tolerance,
/// strict and partial loads, checkpoints with optimizer state, legacy `encoder_weights=`, a timm
/// import, and a zoo load.
final class BundleDetectorTests: XCTestCase {
    static let small = "retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=16), head=retina(channels=16), size=64)"
    var registry: Registry!
    var folder: URL!

    override func setUpWithError() throws {
        registry = try Registry.standard()
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-bundle-detector-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let folder { try? FileManager.default.removeItem(at: folder) }
    }

    func file(_ name: String) -> URL { folder.appendingPathComponent(name) }

    /// A detector that looks trained: batch norms with non-trivial statistics and the
    /// zero-initialised output convolutions given random weights, so every output depends
    /// on every stored tensor.
    func makeDetector(_ config: String = small, seed: UInt64 = 1) throws -> Detector {
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
            bn.runningVar.value = Tensor.randomUniform([c], 0.5, 2, using: &rng)
        }
        d.eval()
        return d
    }

    func images(_ n: Int = 2, size: Int = 64) -> Tensor {
        var rng = RandomGenerator(seed: 7)
        return Tensor.randomUniform([n, 1, size, size], using: &rng)
    }

    func outputs(_ d: Detector, _ x: Tensor) -> [Tensor] {
        Autograd.inference {
            let o = d.forward(x)
            return [o.classLogits, o.boxDeltas] + (o.globalLogProbs.map { [$0] } ?? [])
        }
    }

    /// ||a - b|| / ||a||.
    func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
        var num: Float = 0, den: Float = 0
        for i in 0..<a.count {
            num += (a[flat: i] - b[flat: i]) * (a[flat: i] - b[flat: i])
            den += a[flat: i] * a[flat: i]
        }
        return (num / max(den, 1e-30)).squareRoot()
    }

    func assertSameState(_ a: Module, _ b: Module, file: StaticString = #filePath, line: UInt = #line) {
        let sa = a.stateDict(), sb = Dictionary(uniqueKeysWithValues: b.stateDict())
        XCTAssertEqual(sa.count, sb.count, file: file, line: line)
        for (n, t) in sa { XCTAssertEqual(sb[n]?.scalars, t.scalars, n, file: file, line: line) }
    }

    // MARK: Round trips

    func testDetectorRoundTripsInEveryStorageType() throws {
        let d = try makeDetector()
        let x = images()
        let reference = outputs(d, x)
        // stated tolerances on the relative L2 error of every output (class logits, box
        // deltas, global log-probabilities) against fp32
        let tolerance: [StorageType: Float] = [.f32: 0, .f16: 2e-3, .bf16: 1.5e-2, .i8: 5e-2]
        for type in StorageType.allCases {
            let url = file("d-\(type).opb")
            let meta = BundleMetadata(provenance: Provenance(data: "synthetic", fold: 1, epoch: 3, seed: 42), metrics: ["val_loss": 0.5])
            let summary = try d.save(to: url, storage: .uniform(type), metadata: meta)
            let loaded = try Detector.loadWithReport(from: url, registry: registry)
            XCTAssertEqual(loaded.detector.config, d.config)
            XCTAssertEqual(loaded.report.loaded.count, d.stateDict().count)
            XCTAssertEqual(loaded.info.metadata.provenance, meta.provenance)
            XCTAssertEqual(loaded.info.metadata.metrics, ["val_loss": 0.5])
            XCTAssertFalse(loaded.detector.isTraining)
            let out = outputs(loaded.detector, x)
            for (i, (a, b)) in zip(reference, out).enumerated() {
                let err = relativeError(a, b)
                XCTAssertLessThanOrEqual(err, tolerance[type]!, "\(type) output \(i): relative error \(err)")
            }
            if type == .f32 { assertSameState(d, loaded.detector) }
            if type == .i8 { XCTAssertLessThan(summary.ratio, 0.3, "\(summary)") }
        }
    }

    /// A bundle that gives every tensor is loaded into the shape-probe build (no random weights
    /// drawn and discarded); a partial one into a real build, so that what it lacks keeps the
    /// usual initial values, not zeros.
    func testCompleteBundlesSkipRandomInitialisationPartialOnesKeepIt() throws {
        let d = try makeDetector()
        let url = file("whole.opb")
        try d.save(to: url)
        // nothing drawn from the initialisation generator while loading a complete bundle
        let after = try Initializer.withSeed(5) { () -> UInt64 in
            _ = try Detector.load(from: url, registry: registry)
            return Initializer.nextSeed()
        }
        XCTAssertEqual(after, Initializer.withSeed(5) { Initializer.nextSeed() })
        let whole = try Detector.load(from: url, registry: registry)
        assertSameState(d, whole)
        XCTAssertEqual(outputs(whole, images()).map(\.scalars), outputs(d, images()).map(\.scalars))
        // a bundle without one weight: loaded with missing keys allowed, that weight has its
        // initial (random, not zero) values and everything else the bundle's
        let dropped = "head.classificationModel.conv1.weight"
        let partialURL = file("partial.opb")
        var meta = BundleMetadata()
        meta.kind = .detector
        meta.config = d.config
        try WeightBundle.write(
            to: partialURL, metadata: meta, groups: [TensorGroup(WeightBundle.modelGroup, d.stateDict().filter { $0.0 != dropped }, storage: .fp32)])
        let partial = try Detector.load(from: partialURL, registry: registry, options: [.noUnusedKeys, .shapeMismatch])
        let state = Dictionary(uniqueKeysWithValues: partial.stateDict())
        let initial = try XCTUnwrap(state[dropped])
        XCTAssertGreaterThan(initial.scalars.map { $0 * $0 }.reduce(0, +), 0, "\(dropped) is zeros: the probe build leaked into a partial load")
        for (n, t) in d.stateDict() where n != dropped { XCTAssertEqual(state[n]?.scalars, t.scalars, n) }
    }

    func testLoadingRefusesBundlesThatDoNotFit() throws {
        let d = try makeDetector()
        let other = try makeDetector("retinanet(encoder=resnet34(width=0.125), neck=fpn(channels=16), head=retina(channels=16), size=64)", seed: 2)
        let url = file("other.opb")
        try other.save(to: url)
        let before = d.stateDict()
        XCTAssertThrowsError(try d.loadWeights(from: url)) { e in
            guard case let BundleError.doesNotFit(_, report) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(report.unexpected.contains("encoder.layer1.2.conv1.weight"), "\(report)")
            XCTAssertTrue(report.missing.isEmpty)
            // the message says once that nothing was loaded, then lists the problems
            let message = "\(e)"
            XCTAssertEqual(message.components(separatedBy: "nothing was loaded").count, 2, message)
            XCTAssertTrue(message.contains("do not fit the model; nothing was loaded (\(report.loaded.count) tensors would have fitted):\nunexpected ("), message)
        }
        for ((n, a), (_, b)) in zip(before, d.stateDict()) { XCTAssertEqual(a.scalars, b.scalars, "\(n) changed by a failed load") }
        // a bundle for a config the registry cannot build
        var meta = BundleMetadata(kind: .detector, config: "retinanet(encoder=resnet7)")
        meta.config = "retinanet(encoder=resnet7)"
        try WeightBundle.write(to: file("bad.opb"), metadata: meta, groups: [])
        XCTAssertThrowsError(try Detector.load(from: file("bad.opb"), registry: registry)) { e in
            guard case BundleError.cannotBuild = e else { return XCTFail("\(e)") }
            XCTAssertTrue("\(e)".contains("resnet7"), "\(e)")
        }
    }

    func testPartialEncoderLoadForTransfer() throws {
        let source = try makeDetector(seed: 1)
        let url = file("source.opb")
        try source.save(to: url)
        // same encoder, different head and neck widths
        let target = try makeDetector("retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=8), head=retina(channels=8), size=64)", seed: 5)
        let headBefore = target.head.stateDict()
        XCTAssertThrowsError(try target.loadWeights(from: url)) { e in
            guard case let BundleError.doesNotFit(_, report) = e else { return XCTFail("\(e)") }
            XCTAssertFalse(report.mismatched.isEmpty)
            XCTAssertTrue(report.mismatched.allSatisfy { !$0.name.hasPrefix("encoder.") })
        }
        let report = try target.loadWeights(from: url, part: .encoder)
        XCTAssertEqual(report.loaded.count, source.encoder.stateDict().count)
        XCTAssertTrue(report.loaded.allSatisfy { $0.hasPrefix("encoder.") })
        assertSameState(source.encoder, target.encoder)
        for ((n, a), (_, b)) in zip(headBefore, target.head.stateDict()) { XCTAssertEqual(a.scalars, b.scalars, "head \(n) must not change") }
        // the same through an encoder bundle
        let enc = file("encoder.opb")
        try source.saveEncoder(to: enc, registry: registry)
        let info = try WeightBundle.info(enc)
        XCTAssertEqual(info.metadata.kind, .encoder)
        XCTAssertEqual(info.metadata.config, "resnet18(width=0.125)")
        XCTAssertTrue(info.tensors.contains { $0.name == "conv1.weight" })
        let third = try makeDetector(seed: 9)
        XCTAssertEqual(try third.loadEncoderWeights(from: enc).loaded.count, report.loaded.count)
        assertSameState(source.encoder, third.encoder)
        XCTAssertThrowsError(try Detector.load(from: enc, registry: registry)) { e in
            guard case BundleError.wrongKind = e else { return XCTFail("\(e)") }
        }
    }

    /// Bundles written when `encoder_weights` was a detector config key still load: the key
    /// is stripped on read, the weights and outputs are the bundle's, and resuming into the
    /// stripped detector accepts the old checkpoint. The key itself is refused in a config now.
    func testLegacyEncoderWeightsKeyIsStrippedOnRead() throws {
        let d = try makeDetector(seed: 3)
        var old = try Config(parsing: d.config)
        old.arguments.append((key: "encoder_weights", value: .string("/gone/start.opb")))
        XCTAssertTrue(old.description.contains("encoder_weights=\"/gone/start.opb\""), old.description)
        let saved = file("old.opb")
        try WeightBundle.write(to: saved, metadata: BundleMetadata(kind: .detector, config: old.description),
                               groups: [TensorGroup(WeightBundle.modelGroup, d.stateDict(), storage: .fp32)])
        XCTAssertEqual(try WeightBundle.info(saved).metadata.config, old.description)
        let back = try Detector.load(from: saved, registry: registry)
        XCTAssertEqual(back.config, d.config)
        assertSameState(d, back)
        let x = images()
        for (a, b) in zip(outputs(d, x), outputs(back, x)) { XCTAssertEqual(a.scalars, b.scalars) }
        let checkpoint = try Checkpoint.load(from: saved, into: try makeDetector(seed: 4))
        assertSameState(d, checkpoint.detector)
        XCTAssertThrowsError(try registry.makeDetector(old.description)) { e in
            XCTAssertTrue("\(e)".contains("encoder_weights"), "\(e)")
        }
    }

    /// `loadEncoderWeights(reference: "zoo:NAME")` (the training option `--encoder-weights`)
    /// takes a shipped or fetched zoo encoder (hash-checked).
    func testEncoderWeightsFromTheZoo() throws {
        let source = try makeDetector(seed: 4)
        let userDir = file("user")
        try FileManager.default.createDirectory(at: userDir, withIntermediateDirectories: true)
        let enc = userDir.appendingPathComponent("enc.opb")
        try source.saveEncoder(to: enc, registry: registry)
        try ZooManifest(entries: [Zoo.makeEntry(name: "tiny-encoder", bundle: enc, file: "enc.opb", licence: "CC0-1.0")])
            .write(to: userDir.appendingPathComponent("zoo.json"))
        setenv("OPACITY_USER_MANIFEST", userDir.appendingPathComponent("zoo.json").path, 1)
        setenv("OPACITY_CACHE", file("cache").path, 1)
        defer { unsetenv("OPACITY_USER_MANIFEST"); unsetenv("OPACITY_CACHE") }
        let d = try registry.makeDetector("retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=16), head=retina(channels=16), size=64)")
        try d.loadEncoderWeights(reference: "zoo:tiny-encoder")
        assertSameState(source.encoder, d.encoder)
        XCTAssertThrowsError(try d.loadEncoderWeights(reference: "zoo:tiny-encodr")) { e in
            XCTAssertTrue("\(e)".contains("did you mean 'tiny-encoder'"), "\(e)")
        }
        XCTAssertThrowsError(try Zoo.standard().load("tiny-encoder", registry: registry)) { e in
            guard case ZooError.wrongKind = e else { return XCTFail("\(e)") }
        }
    }

    // MARK: Checkpoints

    func testCheckpointRestoresOptimizerSchedulerAndMetadata() throws {
        let d = try makeDetector()
        d.train()
        let adam = Adam(d.namedParameters(), learningRate: 1e-3)
        var rng = RandomGenerator(seed: 11)
        for _ in 0..<2 {
            for (_, p) in d.namedParameters() { p.grad = Tensor.randomNormal(p.shape, std: 0.01, using: &rng) }
            adam.step()
        }
        let plateau = ReduceLROnPlateau(patience: 0)
        plateau.step(1.0, optimizer: adam)
        plateau.step(2.0, optimizer: adam)
        XCTAssertEqual(adam.learningRate, 1e-4, accuracy: 1e-9)
        let url = file("epoch-3.opb")
        let meta = BundleMetadata(provenance: Provenance(data: "synthetic", fold: 0, folds: 4, epoch: 3, seed: 7), metrics: ["val_loss": 0.7, "map": 0.1])
        let summary = try Checkpoint.save(d, optimizer: adam, scheduler: plateau, metadata: meta, storage: .fp32, to: url)
        XCTAssertGreaterThan(summary.valueCount, 2 * d.parameterCount, "weights plus Adam's two moments")

        let ckpt = try Checkpoint.load(from: url, registry: registry)
        assertSameState(d, ckpt.detector)
        XCTAssertEqual(ckpt.metadata.provenance.epoch, 3)
        XCTAssertEqual(ckpt.metadata.metrics["map"], 0.1)
        let adam2 = Adam(ckpt.detector.namedParameters(), learningRate: 1)
        try ckpt.restore(optimizer: adam2)
        XCTAssertEqual(adam2.learningRate, 1e-4, accuracy: 1e-9)
        let s1 = adam.stateDict(), s2 = adam2.stateDict()
        XCTAssertEqual(Set(s1.keys), Set(s2.keys))
        for (k, v) in s1 { XCTAssertEqual(s2[k]?.scalars, v.scalars, k) }
        let plateau2 = try XCTUnwrap(ckpt.scheduler(as: ReduceLROnPlateau.self))
        XCTAssertEqual(plateau2.best, plateau.best)
        XCTAssertEqual(plateau2.numBadEpochs, plateau.numBadEpochs)
        XCTAssertEqual(plateau2.lastEpoch, 2)
        XCTAssertThrowsError(try ckpt.restore(optimizer: SGD(ckpt.detector.namedParameters(), learningRate: 0.1))) { e in
            XCTAssertTrue("\(e)".contains("Adam"), "\(e)")
        }
        // resuming into the run's own detector, without building another
        let resumed = try makeDetector(seed: 99)
        let into = try Checkpoint.load(from: url, into: resumed)
        XCTAssertTrue(into.detector === resumed)
        assertSameState(d, resumed)
        XCTAssertEqual(into.optimizerState.count, s1.count)
        let otherConfig = try makeDetector("retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=8), head=retina(channels=8), size=64)")
        XCTAssertThrowsError(try Checkpoint.load(from: url, into: otherConfig)) { e in
            guard case BundleError.configMismatch = e else { return XCTFail("\(e)") }
        }
        // a checkpoint is a detector bundle: plain loading skips the optimizer state
        let plain = try Detector.loadWithReport(from: url, registry: registry)
        XCTAssertEqual(plain.info.groups, ["model", "optimizer"])
        assertSameState(d, plain.detector)
        // a fresh scheduler (best = +infinity) round-trips too
        try Checkpoint.save(d, scheduler: ReduceLROnPlateau(), to: file("fresh.opb"))
        XCTAssertEqual(try Checkpoint.load(from: file("fresh.opb"), registry: registry).scheduler(as: ReduceLROnPlateau.self)?.best, .infinity)
        XCTAssertThrowsError(try Checkpoint.load(from: file("fresh.opb"), registry: registry).restore(optimizer: adam2)) { e in
            guard case BundleError.missingGroup = e else { return XCTFail("\(e)") }
        }
    }

    // MARK: Zoo

    func testZooLoadsADetectorByNameAndRefusesATamperedFile() throws {
        let d = try makeDetector()
        let zooDir = file("zoo")
        try FileManager.default.createDirectory(at: zooDir, withIntermediateDirectories: true)
        let bundle = zooDir.appendingPathComponent("tiny.opb")
        try d.save(to: bundle, storage: .int8, metadata: BundleMetadata(provenance: Provenance(data: "synthetic"), metrics: ["map": 0.01]))
        let entry = try Zoo.makeEntry(name: "tiny-retinanet", bundle: bundle, file: "tiny.opb", licence: "CC0-1.0")
        XCTAssertEqual(entry.config, d.config)
        XCTAssertEqual(entry.parameters, d.parameterCount)
        try ZooManifest(entries: [entry]).write(to: zooDir.appendingPathComponent("manifest.json"))
        let zoo = try Zoo(manifests: [("built-in", zooDir.appendingPathComponent("manifest.json"))], cacheDirectory: file("cache"))
        let loaded = try zoo.load("tiny-retinanet", registry: registry)
        XCTAssertEqual(loaded.config, d.config)
        let x = images(1)
        for (a, b) in zip(outputs(d, x), outputs(loaded, x)) { XCTAssertLessThanOrEqual(relativeError(a, b), 5e-2) }
        XCTAssertThrowsError(try zoo.load("tiny-retinanett", registry: registry)) { e in
            XCTAssertTrue("\(e)".contains("did you mean 'tiny-retinanet'"), "\(e)")
        }
        var bytes = try Data(contentsOf: bundle)
        bytes[bytes.count - 10] ^= 0x40
        try bytes.write(to: bundle)
        XCTAssertThrowsError(try zoo.load("tiny-retinanet", registry: registry)) { e in
            guard case ZooError.hashMismatch = e else { return XCTFail("\(e)") }
        }
    }

    // MARK: timm import

    /// A timm resnet34 (random init, batch norms perturbed; nothing downloaded) saved with
    /// safetensors' `save_file`, imported into an encoder bundle: the 1-channel encoder's
    /// C5 equals timm's `forward_features` on the grey image repeated three times.
    func testImportTimmResNet34MatchesPyTorch() throws {
        guard let python = Self.python() else {
            if let env = ProcessInfo.processInfo.environment["OPACITY_PYTHON"] { return XCTFail("OPACITY_PYTHON=\(env) cannot import torch, timm and safetensors (scripts/torch-venv.sh)") }
            throw XCTSkip("PyTorch with timm and safetensors is not available: run scripts/torch-venv.sh (scripts/test.sh does) or set OPACITY_PYTHON")
        }
        let script = """
            import sys, os, torch, timm
            from safetensors.torch import save_file
            d = sys.argv[1]
            torch.manual_seed(0)
            m = timm.create_model('resnet34', pretrained=False)
            for mod in m.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.weight.data.uniform_(0.5, 1.5); mod.bias.data.normal_(0, 0.1)
                    mod.running_mean.normal_(0, 0.1); mod.running_var.uniform_(0.5, 2)
            m.eval()
            save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(d, 'resnet34.safetensors'))
            x = torch.rand(1, 1, 64, 64)
            with torch.no_grad():
                y = m.forward_features(x.repeat(1, 3, 1, 1))
            save_file({'x': x, 'y': y.contiguous()}, os.path.join(d, 'io.safetensors'))
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = ["-c", script, folder.path]
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)

        let out = file("resnet34_timm.opb")
        let report = try WeightImport.importEncoder(from: file("resnet34.safetensors"), encoder: "resnet34", registry: registry, to: out)
        XCTAssertTrue(report.isComplete, "\(report)")
        XCTAssertEqual(report.dropped.filter { $0.reason == "ImageNet classifier" }.map(\.name).sorted(), ["fc.bias", "fc.weight"])
        XCTAssertEqual(report.dropped.filter { $0.name.hasSuffix("num_batches_tracked") }.count, 36)
        XCTAssertEqual(report.mapped.filter { $0.conversion != nil }.map(\.target), ["conv1.weight"])
        XCTAssertTrue(report.mapped.allSatisfy { $0.source == $0.target }, "timm names map one to one")

        let io = try SafeTensorsFile(file("io.safetensors"))
        let x = try io.tensor("x"), y = try io.tensor("y")
        let encoder = try registry.makeEncoder("resnet34")
        try encoder.load(XCTUnwrap(WeightBundle.read(out)["model"]))
        encoder.eval()
        let c5 = Autograd.inference { encoder.features(x)[3] }
        XCTAssertEqual(c5.shape, y.shape)
        let scale = y.scalars.map(abs).max() ?? 1
        XCTAssertLessThanOrEqual(c5.maxAbsDifference(y), 1e-4 * max(1, scale), "max |y| \(scale)")

        // and a detector starts from it
        let d = try registry.makeDetector("retinanet(encoder=resnet34, neck=fpn(channels=16), head=retina(channels=16), size=64)")
        try d.loadEncoderWeights(from: out)
        assertSameState(encoder, d.encoder)
    }

    /// The torch oracle's Python (`scripts/torch-venv.sh`; `OPACITY_PYTHON` in the test script).
    static func python() -> String? {
        var candidates = [FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/opacity-torch-venv/bin/python").path]
        if let env = ProcessInfo.processInfo.environment["OPACITY_PYTHON"] { candidates = [env] }
        for c in candidates where FileManager.default.isExecutableFile(atPath: c) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: c)
            p.arguments = ["-c", "import torch, timm, safetensors"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            guard (try? p.run()) != nil else { continue }
            p.waitUntilExit()
            if p.terminationStatus == 0 { return c }
        }
        return nil
    }
}
