import Foundation
import Opacity
import XCTest

/// Encoder features against the reference implementations (timm, pretrainedmodels), with
/// weights and input from the shared formula (ParityFiller.swift, scripts/parity/filler.py).
///
/// The expected files come from `scripts/parity/reference.py`, which runs the reference in
/// float64. Every compared number (mean, standard deviation, sampled elements, a corner
/// slice, logits) must be within 1e-4 of the reference, relative to the map's RMS.
final class ParityTests: XCTestCase {
    static let tolerance = 1e-4

    struct MapStats: Decodable {
        struct Samples: Decodable { let indices: [Int]; let values: [Double] }
        struct Slice: Decodable { let shape: [Int]; let values: [Double] }
        let shape: [Int]
        let mean: Double, std: Double, rms: Double
        let samples: Samples
        let slice: Slice?
    }

    struct Fixture: Decodable {
        struct State: Decodable { let tensors: Int; let fnv1a64: String }
        let config: String
        let reference: String
        let stem: String
        let input: [Int]
        let parameters: Int
        let state: State
        let features: [MapStats]
        let logits: MapStats?
    }

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/parity")

    static func load<T: Decodable>(_ name: String, as: T.Type) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(contentsOf: fixtures.appendingPathComponent(name + ".json")))
    }

    // MARK: - The filler itself

    struct FillerCheck: Decodable {
        struct Named: Decodable { let name: String; let shape: [Int]; let values: [Double] }
        struct Input: Decodable { let shape: [Int]; let values: [Double] }
        struct Digest: Decodable { let text: String; let value: String }
        let tensors: [Named]
        let input: Input
        let fnv1a64: Digest
    }

    func testFillerIsBitIdenticalToPython() throws {
        let f = try Self.load("filler", as: FillerCheck.self)
        for t in f.tensors {
            let v = try XCTUnwrap(ParityFiller.values(t.name, shape: t.shape), t.name)
            XCTAssertEqual(v.map(\.bitPattern), t.values.map { Float($0).bitPattern }, t.name)
        }
        XCTAssertEqual(ParityFiller.image(f.input.shape).scalars.map(\.bitPattern), f.input.values.map { Float($0).bitPattern })
        XCTAssertEqual(String(format: "%016llx", ParityFiller.fnv1a64(f.fnv1a64.text)), f.fnv1a64.value)
    }

    // MARK: - Encoders

    func testResNet34() throws { try check("resnet34") }
    func testResNet50() throws { try check("resnet50") }
    func testResNet101() throws { try check("resnet101") }
    func testSEResNeXt50() throws { try check("seresnext50_32x4d") }
    func testSEResNeXt101() throws { try check("seresnext101_32x4d") }
    func testXception() throws { try check("xception") }
    func testDPN92() throws { try check("dpn92") }
    func testNASNetAMobile() throws { try check("nasnetamobile") }

    /// Builds the fixture's encoder with a one-channel stem and a 1000-way classifier, fills
    /// it, runs it in eval mode and compares.
    func check(_ key: String) throws {
        let fx = try Self.load(key, as: Fixture.self)
        let config = fx.config.hasSuffix(")") ? String(fx.config.dropLast()) + ", classes=1000)" : fx.config + "(classes=1000)"
        let encoder = try Registry.standard().makeEncoder(config)

        // Same tensors, names and shapes as the reference (stem compared as 3 channels).
        let lines = ParityFiller.stateLines(encoder, stem: fx.stem)
        let digest = String(format: "%016llx", ParityFiller.fnv1a64(lines.joined(separator: "\n")))
        XCTAssertEqual(lines.count, fx.state.tensors, "\(key): tensor count")
        XCTAssertEqual(digest, fx.state.fnv1a64,
                       "\(key): names or shapes differ from \(fx.reference); compare with `scripts/parity/reference.py --names \(key)`:\n"
                       + lines.joined(separator: "\n"))
        let stemShape = try XCTUnwrap(encoder.namedParameters().first { $0.0 == fx.stem }?.1.shape, "\(key): no \(fx.stem)")
        XCTAssertEqual(encoder.parameterCount + (stemShape[1] == 1 ? 2 * stemShape[0] * stemShape[2] * stemShape[3] : 0),
                       fx.parameters, "\(key): parameter count with a 3-channel stem")

        try ParityFiller.fill(encoder, stem: fx.stem)
        encoder.eval()
        let images = ParityFiller.image(fx.input)
        let (features, logits) = Autograd.inference { () -> ([Tensor], Tensor?) in
            let f = encoder.features(images)
            return (f, fx.logits == nil ? nil : Self.logits(encoder, f[3]))
        }
        XCTAssertEqual(features.count, fx.features.count, key)
        var worst = 0.0
        for (i, (ours, ref)) in zip(features, fx.features).enumerated() {
            worst = max(worst, compare(ours, ref, "\(key) C\(i + 2)"))
        }
        if let ref = fx.logits, let logits { worst = max(worst, compare(logits, ref, "\(key) logits")) }
        print("parity \(key): max relative error \(String(format: "%.2e", worst)) against \(fx.reference)")
    }

    static func logits(_ encoder: any Encoder, _ c5: Tensor) -> Tensor? {
        switch encoder {
        case let e as SEResNeXt: return e.logits(fromDeepest: c5)
        case let e as Xception: return e.logits(fromDeepest: c5)
        case let e as DPN: return e.logits(fromDeepest: c5)
        case let e as NASNetAMobile: return e.logits(fromDeepest: c5)
        default: return nil
        }
    }

    /// The largest relative error (to the reference map's RMS) over the compared numbers;
    /// fails the test when it is above the tolerance.
    @discardableResult
    func compare(_ ours: Tensor, _ ref: MapStats, _ what: String) -> Double {
        XCTAssertEqual(ours.shape, ref.shape, "\(what): shape")
        guard ours.shape == ref.shape else { return .infinity }
        let v = ours.scalars.map(Double.init)
        let n = Double(v.count)
        let mean = v.reduce(0, +) / n
        let std = (v.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / n).squareRoot()
        var errors = [("mean", abs(mean - ref.mean)), ("std", abs(std - ref.std))]
        for (i, r) in zip(ref.samples.indices, ref.samples.values) { errors.append(("element \(i)", abs(v[i] - r))) }
        if let s = ref.slice {
            let (c, h, w) = (ours.shape[1], ours.shape[2], ours.shape[3])
            var k = 0
            for b in 0..<s.shape[0] { for ch in 0..<s.shape[1] { for y in 0..<s.shape[2] { for x in 0..<s.shape[3] {
                errors.append(("[\(b), \(ch), \(y), \(x)]", abs(v[((b * c + ch) * h + y) * w + x] - s.values[k])))
                k += 1
            } } } }
        }
        let worst = errors.max { $0.1 < $1.1 }!
        let rel = worst.1 / max(ref.rms, 1e-12)
        XCTAssertLessThan(rel, Self.tolerance, "\(what): \(worst.0) is off by \(worst.1) (RMS \(ref.rms))")
        return rel
    }
}
