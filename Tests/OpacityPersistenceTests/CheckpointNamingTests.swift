import Foundation
import OpacityCore
import OpacityPersistence
import OpacityResNet
import OpacitySEResNeXt
import XCTest

/// The per-plugin checkpoint hook: each encoder's plugin registers its classifier names and
/// key maps, and says when a checkpoint's convention does not fit the encoder's numerics.
final class CheckpointNamingTests: TemporaryFolderTestCase {
    /// timm's current `seresnext*_32x4d` names for one of our (legacy/Cadene-named) keys:
    /// the inverse of ``KeyMap/timmSEResNeXt``.
    static func timmCurrentName(_ legacy: String) -> String {
        var k = legacy
        if k.hasPrefix("layer0.") { k = String(k.dropFirst("layer0.".count)) }
        if k.hasPrefix("last_linear.") { k = "fc." + k.dropFirst("last_linear.".count) }
        return k.replacingOccurrences(of: ".se_module.", with: ".se.")
    }

    /// A SE-ResNeXt-50 ImageNet state dict (3-channel stem, 1000-class classifier) with random
    /// weights, written as safetensors under names made by `rename`.
    func seresnext50File(_ name: String, rename: (String) -> String) throws -> URL {
        let model = Initializer.withSeed(11) { SEResNeXt(.seresnext50, inChannels: 3, classes: 1000) }
        let url = file(name)
        try SafeTensorsFile.write(model.stateDict().map { (rename($0.0), $0.1) }, to: url)
        return url
    }

    func testTimmCurrentSEResNeXtIsRefusedUnlessAccepted() throws {
        let registry = try Registry(plugins: [SEResNeXtPlugin.self])
        let src = try seresnext50File("seresnext50_32x4d.safetensors", rename: Self.timmCurrentName)
        let names = Set(try SafeTensorsFile(src).entries.map(\.name))
        XCTAssertTrue(names.contains("conv1.weight") && names.contains("layer1.0.se.fc1.weight") && names.contains("fc.weight"))
        XCTAssertTrue(KeyMap.timmSEResNeXt.recognises?(names) ?? false)
        let out = file("imported.opb")

        func assertRefused(_ keyMap: KeyMap, allowMissing: Bool = false, line: UInt = #line) {
            XCTAssertThrowsError(try WeightImport.importEncoder(
                from: src, encoder: "seresnext50_32x4d", registry: registry, keyMap: keyMap, to: out,
                allowMissing: allowMissing, allowUnexpected: allowMissing), line: line) { e in
                guard case let CheckpointError.numericsDiffer(file, encoder, map, reason) = e else { return XCTFail("\(e)", line: line) }
                XCTAssertEqual(file, src.path, line: line)
                XCTAssertEqual(encoder, "seresnext50_32x4d", line: line)
                XCTAssertEqual(map, "timm-seresnext", line: line)
                XCTAssertTrue(reason.contains("padded stem max pool"), reason, line: line)
                XCTAssertTrue("\(e)".contains("--allow-different-numerics"), "\(e)", line: line)
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), line: line)
        }
        // asked for by name, and recognised from the key set under the default map, even
        // where missing and unexpected names would be let through
        assertRefused(.timmSEResNeXt)
        assertRefused(.identity)
        assertRefused(.identity, allowMissing: true)

        // accepted explicitly: every tensor maps, the classifier is dropped, and the bundle
        // records that the numerics differ
        let report = try WeightImport.importEncoder(from: src, encoder: "seresnext50_32x4d", registry: registry,
                                                    keyMap: .timmSEResNeXt, to: out, allowDifferentNumerics: true)
        XCTAssertTrue(report.isComplete, "\(report)")
        XCTAssertEqual(report.numericsDiffer, KeyMap.timmSEResNeXtNumerics)
        XCTAssertEqual(Set(report.dropped.map(\.name)), ["fc.weight", "fc.bias"])
        XCTAssertTrue(report.description.contains("warning: imported although its numerics differ"), report.description)
        XCTAssertTrue(try WeightBundle.info(out).metadata.provenance.notes?.contains("numerics differ") ?? false)
    }

    /// The same weights under the legacy names the encoder was made for import without a word.
    func testLegacyAndCadeneSEResNeXtImport() throws {
        let registry = try Registry(plugins: [SEResNeXtPlugin.self])
        let legacy = try seresnext50File("legacy.safetensors") { $0 }
        let a = try WeightImport.importEncoder(from: legacy, encoder: "seresnext50_32x4d", registry: registry, to: nil)
        XCTAssertTrue(a.isComplete, "\(a)")
        XCTAssertNil(a.numericsDiffer)
        XCTAssertEqual(Set(a.dropped.map(\.name)), ["last_linear.weight", "last_linear.bias"])
        let cadene = try seresnext50File("cadene.safetensors") { "module." + $0 }
        let b = try WeightImport.importEncoder(from: cadene, encoder: "seresnext50_32x4d", registry: registry,
                                               keyMap: registry.keyMap("cadene", encoder: "seresnext50_32x4d"), to: nil)
        XCTAssertTrue(b.isComplete, "\(b)")
        XCTAssertEqual(b.mapped.count, a.mapped.count)
    }

    /// Key maps belong to the encoder that registered them; every encoder has `timm`; an unknown
    /// one names the nearest however far (`cadene` -> `timm`).
    func testKeyMapsAndClassifiersComeFromTheEncodersPlugin() throws {
        let registry = try Registry(plugins: [ResNetPlugin.self, SEResNeXtPlugin.self])
        XCTAssertEqual(try registry.keyMap("timm", encoder: "resnet34").name, "timm")
        XCTAssertEqual(try registry.keyMap("timm-seresnext", encoder: "seresnext101_32x4d").name, "timm-seresnext")
        XCTAssertThrowsError(try registry.keyMap("cadene", encoder: "resnet34")) { e in
            XCTAssertEqual(e as? CheckpointError, .unknownKeyMap(encoder: "resnet34", name: "cadene", valid: ["timm"], nearest: "timm"))
        }
        XCTAssertThrowsError(try registry.keyMap("timm", encoder: "resnet35")) { e in
            XCTAssertTrue("\(e)".contains("did you mean 'resnet34'"), "\(e)")
        }
        XCTAssertEqual(try registry.encoderFactory("resnet50").checkpoint.classifierPrefixes, ["fc."])
        XCTAssertEqual(try registry.encoderFactory("seresnext50_32x4d").checkpoint.classifierPrefixes, ["last_linear."])
        XCTAssertEqual(try registry.encoderFactory("seresnext50_32x4d").checkpoint.allKeyMaps.map(\.name), ["timm", "cadene", "timm-seresnext"])
    }
}
