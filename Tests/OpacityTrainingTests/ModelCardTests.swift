import Foundation
import Opacity
import XCTest

/// Model cards: the shipped zoo entry's, the checks on a card, the bundle round trip, and the
/// operating point stored in a bundle.
final class ModelCardTests: XCTestCase {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func testShippedEntryHasACompleteCard() throws {
        let m = try ZooManifest.read(Self.repo.appendingPathComponent("zoo/manifest.json"))
        for e in m.entries {
            let card = try XCTUnwrap(e.card, "\(e.name) has no model card")
            XCTAssertEqual(card.input.size, Int(e.config.split(separator: "=").last!.dropLast()) ?? card.input.size)
            XCTAssertFalse(card.metrics.isEmpty)
            XCTAssertEqual(card.license, e.licence)
            XCTAssertTrue(card.text.contains("not for:"), card.text)
        }
    }

    func card() -> ModelCard {
        ModelCard(version: "1.0.0", intendedUse: "research", outOfScope: "patients",
                  input: .init(channels: 1, size: 256, intensityRange: "[0, 1]", dicom: "windowed"), outputs: "boxes",
                  trainingData: "synthetic", recipe: "opacity train", metrics: [.init(name: "rsna_metric", value: 0.5, data: "fold 0")],
                  operatingThreshold: 0.1, license: "CC-BY-4.0", changelog: [.init(version: "1.0.0", date: "2026-11-30", changes: "first")])
    }

    func testManifestChecksTheCardAndNamesTheField() throws {
        var c = card()
        c.metrics[0].data = ""
        let e = ZooEntry(name: "x", config: "retinanet()", file: "x.opb", sha256: String(repeating: "0", count: 64), size: 1, parameters: 1,
                         data: "d", licence: "CC-BY-4.0", card: c)
        XCTAssertThrowsError(try ZooManifest(entries: [e]).validate(file: "m.json")) { err in
            XCTAssertTrue("\(err)".contains("entries[0].card.metrics[0].data"), "\(err)")
        }
        c = card()
        c.operatingThreshold = 3
        XCTAssertThrowsError(try c.validate(file: "m.json", field: "card")) { err in XCTAssertTrue("\(err)".contains("operating_threshold"), "\(err)") }
        XCTAssertNoThrow(try card().validate(file: "m.json", field: "card"))
        // JSON keys are snake_case and the card survives a round trip
        let data = try JSONEncoder().encode(card())
        let text = String(decoding: data, as: UTF8.self)
        XCTAssertTrue(text.contains("\"intended_use\"") && text.contains("\"out_of_scope\"") && text.contains("\"intensity_range\""), text)
        XCTAssertEqual(try JSONDecoder().decode(ModelCard.self, from: data), card())
    }

    func testCardAndOperatingPointTravelInBundleMetadata() throws {
        var meta = BundleMetadata(config: "retinanet()", provenance: Provenance(data: "synth", fold: 0, folds: 4, epoch: 3, seed: 7),
                                  metrics: ["metric": 0.61, "metric_threshold": 0.12, "val_total": 0.3])
        XCTAssertNil(ModelCard(metadata: meta))
        XCTAssertEqual(OperatingPoint(metadata: meta)?.threshold, 0.12)
        let drawn = ModelCard.drawnUp(from: meta, inputSize: 256)
        XCTAssertNoThrow(try drawn.validate(file: "b.opb", field: "model_card"))
        XCTAssertEqual(drawn.operatingThreshold ?? 0, 0.12, accuracy: 1e-6)
        XCTAssertTrue(drawn.trainingData.contains("fold 0 of 4"), drawn.trainingData)
        XCTAssertEqual(Set(drawn.metrics.map(\.name)), ["metric", "val_total"])
        meta.extra[ModelCard.metadataKey] = card().jsonValue
        meta.extra[OperatingPoint.key] = OperatingPoint(threshold: 0.3, metric: 0.7, data: "synth, fold 0", images: 80).json
        XCTAssertEqual(ModelCard(metadata: meta), card())
        XCTAssertEqual(OperatingPoint(metadata: meta), OperatingPoint(threshold: 0.3, metric: 0.7, data: "synth, fold 0", images: 80))
    }

    func testOperatingPointCopyKeepsTheWeightsAndLeavesTheSourceAlone() throws {
        let src = Self.repo.appendingPathComponent("zoo/retinanet-r34-composite.opb")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-op-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let before = try Data(contentsOf: src)
        let dst = dir.appendingPathComponent("op.opb")
        try OperatingPoint.write(OperatingPoint(threshold: 0.19, metric: 0.98, data: "synth", images: 48), from: src, to: dst)
        XCTAssertEqual(try Data(contentsOf: src), before, "the source bundle is not changed")
        XCTAssertEqual(OperatingPoint.read(dst)?.threshold, 0.19)
        XCTAssertEqual(ModelReference.savedThreshold(dst), 0.19)
        let a = try WeightBundle.read(src), b = try WeightBundle.read(dst)
        XCTAssertEqual(a.keys, b.keys)
        for (g, ts) in a { for (n, t) in ts { XCTAssertEqual(t.scalars, b[g]?[n]?.scalars, "\(g)/\(n)") } }
        let ia = try WeightBundle.info(src), ib = try WeightBundle.info(dst)
        XCTAssertEqual(ia.tensors.map(\.dtype), ib.tensors.map(\.dtype))
        XCTAssertThrowsError(try OperatingPoint.write(OperatingPoint(threshold: 0.1, metric: 0, data: "", images: 0), from: src, to: src))
    }
}
