import Foundation
import OpacityCore
import OpacityPersistence
import OpacitySEResNeXt
import XCTest

/// A tiny encoder with timm-style names, registered by a test plugin, to import into.
final class ToyEncoder: Module, Encoder {
    let conv1: Conv2d
    let bn1: BatchNorm2d
    let featureSpec = FeatureSpec([FeatureLevel(channels: 4, stride: 4)])

    init(inChannels: Int) {
        conv1 = Conv2d(inChannels, 4, kernel: 3, stride: 4, padding: 1, bias: false)
        bn1 = BatchNorm2d(4)
    }

    func features(_ images: Tensor) -> [Tensor] { [bn1(conv1(images)).relu()] }
}

enum ToyPlugin: OpacityPlugin {
    static let name = "Toy"
    static func register(into registry: inout Registry) throws {
        try registry.registerEncoder(
            ComponentInfo(kind: .encoder, name: "toynet", plugin: name, summary: "test encoder",
                          parameters: [ParameterSpec("in_channels", .int(1...3), default: .int(1), "input channels")]),
            EncoderFactory(featureSpec: { _ in FeatureSpec([FeatureLevel(channels: 4, stride: 4)]) },
                           make: { cfg in ToyEncoder(inChannels: cfg.int("in_channels")) }))
    }
}

/// The Python with torch, timm and safetensors that `scripts/torch-venv.sh` makes (the test
/// script sets `OPACITY_PYTHON` to it), else the script's default location; nil if neither
/// imports them. With `OPACITY_PYTHON` set, an unusable Python is a failure, not a skip.
func pythonWithTorch() -> String? {
    var candidates = [FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/opacity-torch-venv/bin/python").path]
    if let env = ProcessInfo.processInfo.environment["OPACITY_PYTHON"] { candidates = [env] }
    for p in candidates where FileManager.default.isExecutableFile(atPath: p) {
        if (try? runProcess(p, ["-c", "import torch, timm, safetensors"])) == 0 { return p }
    }
    return nil
}

/// Skips when no torch oracle was set up; fails when `OPACITY_PYTHON` names one that does not work.
func torchUnavailable() -> Error {
    if let env = ProcessInfo.processInfo.environment["OPACITY_PYTHON"] {
        return NSError(domain: "opacity.tests", code: 1, userInfo: [NSLocalizedDescriptionKey: "OPACITY_PYTHON=\(env) cannot import torch, timm and safetensors (make it with scripts/torch-venv.sh)"])
    }
    return XCTSkip("PyTorch with timm and safetensors is not available: run scripts/torch-venv.sh (scripts/test.sh does) or set OPACITY_PYTHON")
}

/// Runs a program, returning its exit status; output goes to a pipe that is drained.
@discardableResult
func runProcess(_ path: String, _ args: [String]) throws -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    if p.terminationStatus != 0 { print(String(decoding: data, as: UTF8.self)) }
    return p.terminationStatus
}

final class SafeTensorsTests: TemporaryFolderTestCase {
    /// Writes a safetensors file by hand: header length, JSON, raw data.
    func handWritten(_ entries: [(name: String, dtype: String, shape: [Int], bytes: [UInt8])], metadata: String? = "{\"format\":\"pt\"}",
                     to url: URL) {
        var parts: [String] = []
        var data: [UInt8] = []
        for e in entries {
            parts.append("\"\(e.name)\":{\"dtype\":\"\(e.dtype)\",\"shape\":[\(e.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(data.count),\(data.count + e.bytes.count)]}")
            data += e.bytes
        }
        if let metadata { parts.insert("\"__metadata__\":\(metadata)", at: 0) }
        let header = Array(("{" + parts.joined(separator: ",") + "}").utf8)
        var out: [UInt8] = []
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { out += $0 }
        out += header + data
        _ = FileManager.default.createFile(atPath: url.path, contents: Data(out))
    }

    func le<T: FixedWidthInteger>(_ v: [T]) -> [UInt8] { v.flatMap { x in withUnsafeBytes(of: x.littleEndian) { Array($0) } } }

    func testReadsAHandWrittenFileOfEveryFloatDType() throws {
        let url = file("hand.safetensors")
        handWritten([
            ("a", "F32", [2, 3], le([1.0, -2.5, 3.25, 0, 1e-3, 7].map { Float($0).bitPattern })),
            ("b", "F16", [2], le([UInt16(0x3C00), 0xC100])),  // 1, -2.5
            ("c", "BF16", [1, 1], le([UInt16(0x4049)])),  // 3.140625
            ("d", "F64", [2], le([Double(0.5).bitPattern, Double(-1e10).bitPattern])),
            ("n", "I64", [], le([Int64(12)])),
        ], to: url)
        let f = try SafeTensorsFile(url)
        XCTAssertEqual(f.metadata, ["format": "pt"])
        XCTAssertEqual(f.entries.map(\.name), ["a", "b", "c", "d", "n"])
        XCTAssertEqual(try f.tensor("a").scalars, [1, -2.5, 3.25, 0, 1e-3, 7])
        XCTAssertEqual(try f.tensor("a").shape, [2, 3])
        XCTAssertEqual(try f.tensor("b").scalars, [1, -2.5])
        XCTAssertEqual(try f.tensor("c").scalars, [3.140625])
        XCTAssertEqual(try f.tensor("d").scalars, [0.5, -1e10])
        XCTAssertThrowsError(try f.tensor("n")) { e in XCTAssertTrue("\(e)".contains("I64"), "\(e)") }
        XCTAssertThrowsError(try f.tensor("aa")) { e in
            guard case let SafeTensorsError.unknownTensor(_, _, nearest) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(nearest, "a")
        }
    }

    func testWriterRoundTrip() throws {
        let url = file("w.safetensors")
        let t = [("x.weight", randomTensor([3, 2, 2], seed: 1)), ("x.bias", Tensor(shape: [3], scalars: [1, 2, 3])), ("s", Tensor(4))]
        try SafeTensorsFile.write(t, metadata: ["source": "test"], to: url)
        let f = try SafeTensorsFile(url)
        XCTAssertEqual(f.metadata["source"], "test")
        for (n, v) in t {
            XCTAssertEqual(try f.tensor(n).scalars, v.scalars, n)
            XCTAssertEqual(try f.tensor(n).shape, v.shape, n)
        }
    }

    func testDamagedFilesGiveClearErrors() throws {
        let ok = file("ok.safetensors")
        handWritten([("a", "F32", [2], le([Float(1).bitPattern, Float(2).bitPattern]))], to: ok)
        let bytes = Array(try Data(contentsOf: ok))
        func err(_ b: [UInt8]) -> String {
            let u = file("bad.safetensors")
            _ = FileManager.default.createFile(atPath: u.path, contents: Data(b))
            do { _ = try SafeTensorsFile(u).tensor("a"); return "no error" } catch { return "\(error)" }
        }
        XCTAssertTrue(err(Array(bytes.prefix(5))).contains("truncated"))
        XCTAssertTrue(err(Array(bytes.dropLast(3))).contains("truncated"))
        XCTAssertTrue(err(Array(repeating: 0xFF, count: 16)).contains("not plausible"))
        var notJSON = bytes
        notJSON[8] = UInt8(ascii: "x")
        XCTAssertTrue(err(notJSON).contains("not JSON"))
        let u = file("off.safetensors")
        handWritten([("a", "F32", [3], le([Float(1).bitPattern, Float(2).bitPattern]))], to: u)
        XCTAssertThrowsError(try SafeTensorsFile(u)) { e in
            guard case let SafeTensorsError.invalidEntry(_, tensor, field, _) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(tensor, "a")
            XCTAssertEqual(field, "data_offsets")
        }
        handWritten([("a", "Q4", [1], [1])], to: u)
        XCTAssertThrowsError(try SafeTensorsFile(u)) { e in XCTAssertTrue("\(e)".contains("unknown dtype 'Q4'"), "\(e)") }
    }

    // MARK: Import

    func timmLikeFile(dropBias: Bool = false, extra: Bool = false) throws -> (URL, Tensor) {
        let url = file("toy.safetensors")
        let stem = randomTensor([4, 3, 3, 3], seed: 5)
        var t: [(String, Tensor)] = [
            ("conv1.weight", stem), ("bn1.weight", Tensor(shape: [4], scalars: [1, 2, 3, 4])),
            ("bn1.running_mean", Tensor(shape: [4], scalars: [0.1, 0.2, 0.3, 0.4])), ("bn1.running_var", Tensor(shape: [4], scalars: [1, 1, 2, 2])),
            ("fc.weight", randomTensor([10, 4], seed: 6)), ("fc.bias", Tensor.zeros([10])),
        ]
        if !dropBias { t.append(("bn1.bias", Tensor(shape: [4], scalars: [-1, 0, 1, 2]))) }
        if extra { t.append(("layer9.weight", Tensor.zeros([2, 2]))) }
        try SafeTensorsFile.write(t, to: url)
        return (url, stem)
    }

    func testImportSumsTheStemDropsTheClassifierAndReports() throws {
        var registry = Registry()
        try registry.add(ToyPlugin.self)
        let (src, stem) = try timmLikeFile()
        let out = file("toy.opb")
        let report = try WeightImport.importEncoder(from: src, encoder: "toynet", registry: registry, to: out)
        XCTAssertTrue(report.isComplete, "\(report)")
        XCTAssertEqual(report.mapped.count, 5)
        XCTAssertEqual(Set(report.dropped.map(\.name)), ["fc.weight", "fc.bias"])
        XCTAssertTrue(report.dropped.allSatisfy { $0.reason == "ImageNet classifier" })
        XCTAssertEqual(report.mapped.first { $0.target == "conv1.weight" }?.conversion, "3-channel stem summed over input channels")
        XCTAssertTrue(report.description.contains("converted: conv1.weight [4, 3, 3, 3] -> [4, 1, 3, 3]"), report.description)

        let info = try WeightBundle.info(out)
        XCTAssertEqual(info.metadata.kind, .encoder)
        XCTAssertEqual(info.metadata.config, "toynet")
        XCTAssertEqual(info.metadata.provenance.source, "toy.safetensors")
        let state = try XCTUnwrap(WeightBundle.read(out)["model"])
        let enc = ToyEncoder(inChannels: 1)
        try enc.load(state)
        let w = enc.conv1.weight.value
        XCTAssertEqual(w.shape, [4, 1, 3, 3])
        for o in 0..<4 { for j in 0..<9 {
            let sum = (0..<3).reduce(Float(0)) { $0 + stem[flat: (o * 3 + $1) * 9 + j] }
            XCTAssertEqual(w[flat: o * 9 + j], sum, accuracy: 1e-6)
        } }
        XCTAssertEqual(enc.bn1.bias.value.scalars, [-1, 0, 1, 2])
        // a 3-channel encoder takes the stem unchanged
        let r3 = try WeightImport.importEncoder(from: src, encoder: "toynet(in_channels=3)", registry: registry, to: nil)
        XCTAssertNil(r3.mapped.first { $0.conversion != nil })
    }

    func testImportRefusesWhatDoesNotFitAndWritesNothing() throws {
        var registry = Registry()
        try registry.add(ToyPlugin.self)
        let out = file("toy.opb")
        let (src, _) = try timmLikeFile(dropBias: true, extra: true)
        XCTAssertThrowsError(try WeightImport.importEncoder(from: src, encoder: "toynet", registry: registry, to: out)) { e in
            guard case let ImportError.doesNotFit(_, encoder, report) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(encoder, "toynet")
            XCTAssertEqual(report.missing, ["bn1.bias"])
            XCTAssertEqual(report.unexpected.map(\.name), ["layer9.weight"])
            XCTAssertTrue("\(e)".contains("missing (1, not in the file): bn1.bias"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        let r = try WeightImport.importEncoder(from: src, encoder: "toynet", registry: registry, to: out, allowMissing: true, allowUnexpected: true)
        XCTAssertEqual(r.initialised, ["bn1.bias"])
        XCTAssertNotNil(r.written)
        XCTAssertThrowsError(try WeightImport.importEncoder(from: src, encoder: "toynett", registry: registry, to: nil)) { e in
            XCTAssertTrue("\(e)".contains("did you mean 'toynet'"), "\(e)")
        }
    }

    func testKeyMaps() throws {
        let timm = KeyMap.timmSEResNeXt
        XCTAssertEqual(timm.map("conv1.weight"), "layer0.conv1.weight")
        XCTAssertEqual(timm.map("bn1.running_var"), "layer0.bn1.running_var")
        XCTAssertEqual(timm.map("layer2.3.se.fc1.bias"), "layer2.3.se_module.fc1.bias")
        XCTAssertEqual(timm.map("layer1.0.conv1.weight"), "layer1.0.conv1.weight")
        XCTAssertEqual(timm.map("fc.weight"), "last_linear.weight")
        XCTAssertEqual(KeyMap.cadene.map("module.layer0.conv1.weight"), "layer0.conv1.weight")
        XCTAssertEqual(KeyMap.cadene.map("layer1.0.se_module.fc2.weight"), "layer1.0.se_module.fc2.weight")
        let registry = try Registry(plugins: [SEResNeXtPlugin.self])
        XCTAssertThrowsError(try registry.keyMap("cadenne", encoder: "seresnext50_32x4d")) { e in XCTAssertTrue("\(e)".contains("did you mean 'cadene'"), "\(e)") }
    }

    /// Files PyTorch writes once for the tests that need it: a timm resnet34 state dict saved
    /// with safetensors' `save_file` (random init, nothing downloaded), the sum of each
    /// tensor, and the parameter names and shapes of timm's two SE-ResNeXt-50 variants.
    static let torchFiles: Result<URL, Error>? = {
        guard let python = pythonWithTorch() else { return nil }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-safetensors-\(UUID().uuidString)")
        let script = """
            import json, sys, os, torch, timm
            from safetensors.torch import save_file
            d = sys.argv[1]
            torch.manual_seed(0)
            m = timm.create_model('resnet34', pretrained=False)
            sd = {k: v.contiguous() for k, v in m.state_dict().items()}
            save_file(sd, os.path.join(d, 'resnet34.safetensors'), metadata={'format': 'pt'})
            json.dump({k: [list(v.shape), float(v.double().sum()), str(v.dtype)] for k, v in sd.items()}, open(os.path.join(d, 'sums.json'), 'w'))
            with torch.device('meta'):
                a = timm.create_model('seresnext50_32x4d', pretrained=False).state_dict()
                b = timm.create_model('legacy_seresnext50_32x4d', pretrained=False).state_dict()
            json.dump({'timm': {k: list(v.shape) for k, v in a.items()}, 'legacy': {k: list(v.shape) for k, v in b.items()}}, open(os.path.join(d, 'names.json'), 'w'))
            """
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            guard try runProcess(python, ["-c", script, dir.path]) == 0 else {
                return .failure(NSError(domain: "SafeTensorsTests", code: 1, userInfo: [NSLocalizedDescriptionKey: "the PyTorch script failed"]))
            }
            return .success(dir)
        } catch { return .failure(error) }
    }()

    override class func tearDown() {
        if case .success(let dir)? = torchFiles { try? FileManager.default.removeItem(at: dir) }
        super.tearDown()
    }

    func torchFolder() throws -> URL {
        guard let r = SafeTensorsTests.torchFiles else { throw torchUnavailable() }
        return try r.get()
    }

    /// timm's current SE-ResNeXt names map onto Cadene's (= timm legacy = Opacity's), checked
    /// against the names and shapes timm itself produces.
    func testTimmSEResNeXtKeyMapAgainstTimm() throws {
        let names = try JSONDecoder().decode([String: [String: [Int]]].self, from: Data(contentsOf: torchFolder().appendingPathComponent("names.json")))
        let mapped = Dictionary(uniqueKeysWithValues: names["timm"]!.map { (KeyMap.timmSEResNeXt.map($0.key)!, $0.value) })
        XCTAssertEqual(mapped, names["legacy"])
        XCTAssertEqual(mapped.count, 384)
    }

    /// A resnet34 state dict written by safetensors' `save_file` from timm.
    func testReadsTimmResNet34File() throws {
        let dir = try torchFolder()
        struct Row: Decodable {
            let shape: [Int], sum: Double, dtype: String
            init(from d: Swift.Decoder) throws {
                var c = try d.unkeyedContainer()
                shape = try c.decode([Int].self); sum = try c.decode(Double.self); dtype = try c.decode(String.self)
            }
        }
        let expected = try JSONDecoder().decode([String: Row].self, from: Data(contentsOf: dir.appendingPathComponent("sums.json")))
        let f = try SafeTensorsFile(dir.appendingPathComponent("resnet34.safetensors"))
        XCTAssertEqual(f.metadata["format"], "pt")
        XCTAssertEqual(Set(f.entries.map(\.name)), Set(expected.keys))
        XCTAssertEqual(f.entries.filter { $0.dtype == "I64" }.count, 36)  // num_batches_tracked
        for e in f.entries where e.isFloatingPoint {
            let row = expected[e.name]!
            XCTAssertEqual(e.shape, row.shape, e.name)
            let t = try f.tensor(e.name)
            let sum = t.scalars.reduce(0.0) { $0 + Double($1) }
            XCTAssertEqual(sum, row.sum, accuracy: 1e-3 * max(1, abs(row.sum)), e.name)
        }
    }
}
