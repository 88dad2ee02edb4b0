import Foundation
import Opacity
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The most memory this process has held, in bytes (`ru_maxrss`).
func peakResidentBytes() -> Int {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Int(u.ru_maxrss) * 1024
}

/// Bundles that would make the reader allocate without limit, hold non-finite weights, or
/// are damaged anywhere: each is refused with a typed error, cheaply (cases
/// bundle-huge-tensor-claim-abort, bundle-zstd-bomb-memory, bundle-nonfinite-weights-silent).
final class BundleRobustnessTests: XCTestCase {
    static let small = BundleDetectorTests.small
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/robustness")
    var registry: Registry!
    var folder: URL!

    override func setUpWithError() throws {
        registry = try Registry.standard()
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-bundle-robust-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let folder { try? FileManager.default.removeItem(at: folder) }
    }

    /// The case's 482-byte bundle names retinanet(resnet152(width=4), fpn(2048), ...):
    /// building it took 6.9 GB. The model's size is counted by a probe build that
    /// allocates no weights, and refused above ``InputLimits/modelValues``.
    func testSmallBundleNamingAHugeModelIsRefusedBeforeBuilding() throws {
        let before = peakResidentBytes()
        let start = Date()
        XCTAssertThrowsError(try Detector.load(from: Self.fixtures.appendingPathComponent("bigmodel.opb"), registry: registry)) { e in
            guard case BundleError.cannotBuild(_, _, let reason) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(reason.contains("the most a model may have is \(InputLimits.modelValues)"), reason)
            XCTAssertTrue("\(e)".contains("bigmodel.opb"), "\(e)")
            // the model's config, quoted short, ends after a complete key=value, not mid-word (`neck=fpn(cha…`)
            XCTAssertTrue(reason.hasPrefix("model retinanet(encoder=resnet152(width=4.0), head=retina(channels=2048), … (103 bytes) has "), reason)
        }
        let grew = peakResidentBytes() - before
        XCTAssertLessThan(grew, 1 << 30, "peak memory grew by \(grew) bytes")
        XCTAssertLessThan(Date().timeIntervalSince(start), 60)
    }

    /// A config naming a model of billions of weights is refused by ``Registry/makeDetector(_:)``
    /// before any weight is allocated, with its count and the limit; the probe that counts
    /// stops mapping at the limit (tensors past it have a first dimension of 0), so even a
    /// model of every widest setting is probed in bounded memory. Under the limit the probe
    /// counts the weights the real build draws (all but the norm layers' small vectors).
    func testConfigNamingAHugeModelIsRefusedBeforeAllocating() throws {
        let huge = "retinanet(encoder=resnet152(width=4), neck=fpn(channels=2048), head=retina(channels=2048))"
        let before = peakResidentBytes()
        XCTAssertThrowsError(try registry.makeDetector(huge)) { e in
            guard case ConfigError.tooLarge(_, let values, let limit, let addressSpace) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(limit, InputLimits.modelValues)
            XCTAssertGreaterThan(values, limit)
            XCTAssertFalse(addressSpace)
            XCTAssertTrue("\(e)".contains("Nothing was allocated") && "\(e)".contains("\(values) values"), "\(e)")
        }
        // a probe with a small limit: past it nothing is mapped, the count goes on
        let probe = try Initializer.shapeProbe(limit: 1000) { try registry.checkDetector(huge) }
        XCTAssertTrue(probe.complete)
        let counted = Initializer.shapeProbe(limit: 1000) { Initializer.heNormal(fanOut: false).make([4096, 4096, 3, 3]) }
        XCTAssertFalse(counted.complete)
        XCTAssertEqual(counted.requested, 4096 * 4096 * 9)
        XCTAssertEqual(counted.value.shape, [0, 4096, 3, 3])
        XCTAssertLessThan(peakResidentBytes() - before, 256 << 20)
        let d = try Initializer.withSeed(1) { try registry.makeDetector(Self.small) }
        let exact = try Initializer.shapeProbe { try registry.makeDetector(Self.small) }
        XCTAssertTrue(exact.complete)
        // the initialisers' weights; norm layers' scales and shifts, made directly, are not counted
        XCTAssertLessThanOrEqual(exact.requested, d.parameterCount)
        XCTAssertGreaterThan(Double(exact.requested), 0.99 * Double(d.parameterCount))
        // the probe draws nothing: the weights built after it are those of a plain build
        let again = try Initializer.withSeed(1) { try registry.makeDetector(Self.small) }
        XCTAssertEqual(again.namedParameters().map { $0.1.value.scalars }, d.namedParameters().map { $0.1.value.scalars })
    }

    /// bomb_3g.opb: 98 KB whose one tensor decompresses to 3 GiB of zeros. Refused from
    /// the table before any byte is decompressed.
    func testZstdBombIsRefusedBeforeDecompressing() throws {
        let before = peakResidentBytes()
        XCTAssertThrowsError(try Detector.load(from: Self.fixtures.appendingPathComponent("bomb_3g.opb"), registry: registry)) { e in
            guard case BundleError.doesNotFit(_, let report) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(report.mismatched.contains { $0.name == "encoder.conv1.weight" }, "\(report)")
        }
        XCTAssertLessThan(peakResidentBytes() - before, 256 << 20)
    }

    /// A 1 MB bundle whose table claims one 40 GB tensor (valid CRCs, the header's raw
    /// length 40000 x the compressed one): refused by load; verify streams it in bounded
    /// pieces and reports the frame ending early.
    func testFortyGigabyteClaimIsRefusedWithoutAllocating() throws {
        let url = folder.appendingPathComponent("claim.opb")
        var rng = RandomGenerator(seed: 9)
        let t = Tensor.randomNormal([262_144], std: 1, using: &rng)
        var meta = BundleMetadata()
        meta.config = Self.small
        try WeightBundle.write(to: url, metadata: meta, groups: [TensorGroup("model", [("encoder.conv1.weight", t)])])
        var bytes = [UInt8](try Data(contentsOf: url))
        let r = bundleRange(bytes)
        var json = try JSONSerialization.jsonObject(with: Data(bytes[r])) as! [String: Any]
        var tensors = json["tensors"] as! [[String: Any]]
        let dataLength = (24..<32).reversed().reduce(0) { $0 << 8 | Int(bytes[$1]) }
        let claimed = dataLength * 40_000 / 4
        tensors[0]["shape"] = [claimed]
        tensors[0]["length"] = claimed * 4
        json["tensors"] = tensors
        let newJSON = [UInt8](try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]))
        bytes.replaceSubrange(r, with: newJSON)
        for i in 0..<8 { bytes[16 + i] = UInt8((newJSON.count >> (8 * i)) & 0xFF) }
        for i in 0..<8 { bytes[32 + i] = UInt8(((claimed * 4) >> (8 * i)) & 0xFF) }
        resignBundle(&bytes)
        try Data(bytes).write(to: url)
        let before = peakResidentBytes()
        XCTAssertThrowsError(try Detector.load(from: url, registry: registry)) { e in
            XCTAssertTrue(e is BundleError, "\(e)")
        }
        XCTAssertThrowsError(try WeightBundle.verify(url)) { e in
            guard case BundleError.corruptData = e else { return XCTFail("\(e)") }
        }
        XCTAssertLessThan(peakResidentBytes() - before, 256 << 20)
    }

    /// Weights holding NaN or infinity are refused, naming the tensor, unless allowed.
    func testNonFiniteWeightsAreRefusedNamingTheTensor() throws {
        let d = try Initializer.withSeed(3) { try registry.makeDetector(Self.small) }
        let (name, p) = d.namedParameters().first { $0.0.hasSuffix("regressionModel.output.bias") }!
        var values = p.value.scalars
        values[1] = .nan
        p.value = Tensor(shape: p.shape, scalars: values)
        let url = folder.appendingPathComponent("nan.opb")
        try d.save(to: url)
        XCTAssertThrowsError(try Detector.load(from: url, registry: registry)) { e in
            guard case BundleError.doesNotFit(_, let report) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(report.nonFinite, [name])
            XCTAssertEqual(report.firstNonFinite?.name, name)
            XCTAssertEqual(report.firstNonFinite?.index, 1)
            XCTAssertTrue(report.refused)
            // the message names the tensor and says that nothing was loaded, never "loaded N tensors"
            let message = "\(e)"
            XCTAssertTrue(message.contains("tensor '\(name)' holds nan (element 1)"), message)
            XCTAssertTrue(message.contains("nothing was loaded"), message)
            XCTAssertNil(message.range(of: #"loaded \d+ tensors"#, options: .regularExpression), message)
        }
        let allowed = try Detector.load(from: url, registry: registry, options: LoadOptions.strict.union(.allowNonFinite))
        XCTAssertTrue(allowed.namedParameters().first { $0.0 == name }!.1.value.scalars[1].isNaN)
        // an infinite value is refused the same way
        values[1] = .infinity
        p.value = Tensor(shape: p.shape, scalars: values)
        try d.save(to: url)
        XCTAssertThrowsError(try Detector.load(from: url, registry: registry))
    }

    /// Bit flips, truncations and insertions at many offsets of a real detector bundle
    /// (and the same edits with the checksums recomputed, as a tamperer would): every load
    /// ends in a typed error or, for an edit that leaves a valid bundle, a detector.
    func testCorruptionAnywhereGivesATypedError() throws {
        let d = try Initializer.withSeed(5) { try registry.makeDetector(Self.small) }
        let url = folder.appendingPathComponent("good.opb")
        try d.save(to: url, storage: .int8)
        let good = [UInt8](try Data(contentsOf: url))
        var rng = RandomGenerator(seed: 11)
        var offsets = Set((0..<64).map { good.count * $0 / 64 })
        offsets.formUnion((0..<64).map { _ in Int(rng.next() % UInt64(min(good.count, 4096))) })
        offsets.formUnion(stride(from: 0, to: 48, by: 3))
        let bad = folder.appendingPathComponent("bad.opb")
        var tried = 0, loaded = 0
        for o in offsets.sorted() {
            var variants: [[UInt8]] = []
            var flip = good
            flip[o] ^= UInt8(1 << (o % 8))
            variants.append(flip)
            variants.append(Array(good[0..<o]))
            var ins = good
            ins.insert(contentsOf: [0x7B, 0x22, 0x5B, 0xFF], at: o)
            variants.append(ins)
            if bundleRange(good).contains(o) {
                var tampered = flip
                resignBundle(&tampered)
                variants.append(tampered)
            }
            for v in variants {
                try Data(v).write(to: bad)
                tried += 1
                do {
                    _ = try Detector.load(from: bad, registry: registry)
                    loaded += 1
                } catch is BundleError {
                } catch {
                    XCTFail("offset \(o): untyped error \(error)")
                }
            }
        }
        XCTAssertGreaterThan(tried, 400)
        XCTAssertLessThan(loaded, tried / 20, "most corruptions must be refused")
    }
}

/// The metadata JSON range of a bundle's bytes.
func bundleRange(_ bytes: [UInt8]) -> Range<Int> {
    let m = (16..<24).reversed().reduce(0) { $0 << 8 | Int(bytes[$1]) }
    return 48..<(48 + m)
}

/// Recomputes the metadata and header CRCs after an edit.
func resignBundle(_ bytes: inout [UInt8]) {
    let r = bundleRange(bytes)
    guard r.upperBound <= bytes.count, bytes.count >= 48 else { return }
    let crc = CRC32.checksum(Array(bytes[r]))
    for i in 0..<4 { bytes[40 + i] = UInt8((crc >> (8 * UInt32(i))) & 0xFF) }
    let h = CRC32.checksum(Array(bytes[0..<44]))
    for i in 0..<4 { bytes[44 + i] = UInt8((h >> (8 * UInt32(i))) & 0xFF) }
}
