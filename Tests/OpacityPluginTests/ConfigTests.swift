import Opacity
import XCTest

final class ConfigTests: XCTestCase {
    var registry: Registry!
    override func setUpWithError() throws { registry = try Registry.standard() }

    func testParsePrintRoundTrip() throws {
        for text in ["resnet34", "retinanet(encoder=resnet34, size=512, levels=2-7, dropout=0.5, global_dropout=0.5)",
                     "retinanet(encoder=resnet34(width=0.25, in_channels=1), neck=fpn(channels=64), shrink=0.875, name=\"a b\")",
                     "x(a=-3, b=1e-05, c=true, d=false, e=2.0)"] {
            let c = try Config(parsing: text)
            XCTAssertEqual(try Config(parsing: c.description), c, text)
        }
    }

    func testCanonicalElidesDefaultsAndSortsKeys() throws {
        XCTAssertEqual(try registry.canonical("retinanet(size=512, encoder=resnet34, levels=2-7, dropout=0.5, global_dropout=0.5)"), "retinanet")
        XCTAssertEqual(try registry.canonical("retinanet(size=256, encoder=resnet50, dropout=0.75)"),
                       "retinanet(dropout=0.75, encoder=resnet50, size=256)")
        XCTAssertEqual(try registry.canonical("retinanet(encoder=resnet34(width=1.0), neck=fpn(channels=64))"),
                       "retinanet(neck=fpn(channels=64))")
        XCTAssertEqual(try registry.canonical("retinanet(encoder=resnet34(width=0.5))"), "retinanet(encoder=resnet34(width=0.5))")
        // canonical form is a fixed point
        let c = try registry.canonical("retinanet(levels=3-7, shrink=0.875, encoder=resnet101)")
        XCTAssertEqual(try registry.canonical(c), c)
        XCTAssertEqual(c, "retinanet(encoder=resnet101, levels=3-7, shrink=0.875)")
    }

    func testSyntaxErrorsSayWhereAndWhat() {
        XCTAssertThrowsError(try Config(parsing: "retinanet(size=)")) { e in
            guard case ConfigError.syntax(_, let pos, let expected) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(pos, 15)
            XCTAssertTrue(expected.contains("value"), expected)
        }
        XCTAssertThrowsError(try Config(parsing: "retinanet(size=5")) { e in XCTAssertTrue("\(e)".contains("',' or ')'"), "\(e)") }
        XCTAssertThrowsError(try Config(parsing: "retinanet(size 5)")) { e in XCTAssertTrue("\(e)".contains("'='"), "\(e)") }
        XCTAssertThrowsError(try Config(parsing: "retinanet(a=1, a=2)")) { e in XCTAssertEqual(e as? ConfigError, .duplicateKey(component: "retinanet", key: "a")) }
        XCTAssertThrowsError(try Config(parsing: "retinanet(levels=7-2)")) { e in XCTAssertTrue("\(e)".contains("range"), "\(e)") }
        XCTAssertThrowsError(try Config(parsing: "")) { e in XCTAssertTrue("\(e)".contains("component name"), "\(e)") }
    }

    func testUnknownNamesAndKeysListValidOnesAndNearest() {
        XCTAssertThrowsError(try registry.canonical("retinanet(encoder=resnet35)")) { e in
            guard case ConfigError.unknownName(let kind, let name, let valid, let nearest) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(kind, "encoder"); XCTAssertEqual(name, "resnet35")
            XCTAssertTrue(valid.contains("resnet34")); XCTAssertNotNil(nearest)
            XCTAssertTrue("\(e)".contains("did you mean"), "\(e)")
        }
        XCTAssertThrowsError(try registry.canonical("retinanet(dropuot=0.5)")) { e in
            guard case ConfigError.unknownKey(_, let key, let valid, let nearest) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(key, "dropuot"); XCTAssertEqual(nearest, "dropout"); XCTAssertTrue(valid.contains("global_dropout"))
        }
        XCTAssertThrowsError(try registry.canonical("retinanett")) { e in XCTAssertTrue("\(e)".contains("'retinanet'"), "\(e)") }
    }

    func testWrongTypesAndRanges() {
        let cases: [(String, String)] = [
            ("retinanet(size=big)", "integer"), ("retinanet(dropout=1.5)", "number in 0.0...0.95"),
            ("retinanet(levels=1-7)", "within 2-7"), ("retinanet(global=3)", "true or false"),
            ("retinanet(size=0.5)", "integer"), ("retinanet(encoder=3)", "encoder name"),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try registry.canonical(text), text) { e in
                guard case ConfigError.invalidValue = e else { return XCTFail("\(text): \(e)") }
                XCTAssertTrue("\(e)".contains(expected), "\(text): \(e)")
            }
        }
    }

    /// Every numeric key out of its range names the nearest value it takes, as `size` does
    /// (new-user trial: `dropout=1.5`, `width=-1` and `levels=2-9` gave only the range).
    func testOutOfRangeNumbersNameTheNearestValidValue() {
        let cases: [(String, ComponentKind, String)] = [
            ("retinanet(dropout=1.5)", .detector, "retinanet: dropout=1.5 is invalid; expected number in 0.0...0.95 (nearest valid: 0.95)"),
            ("retinanet(dropout=-2)", .detector, "retinanet: dropout=-2 is invalid; expected number in 0.0...0.95 (nearest valid: 0.0)"),
            ("resnet34(width=-1)", .encoder, "resnet34: width=-1 is invalid; expected number in 0.03125...4.0 (nearest valid: 0.03125)"),
            ("resnet34(width=9.5)", .encoder, "resnet34: width=9.5 is invalid; expected number in 0.03125...4.0 (nearest valid: 4.0)"),
            ("retinanet(levels=2-9)", .detector, "retinanet: levels=2-9 is invalid; expected range like 2-7 within 2-7 (nearest valid: 2-7)"),
            ("retinanet(levels=1-5)", .detector, "retinanet: levels=1-5 is invalid; expected range like 2-7 within 2-7 (nearest valid: 2-5)"),
            ("retinanet(levels=9)", .detector, "retinanet: levels=9 is invalid; expected range like 2-7 within 2-7 (nearest valid: 7)"),
        ]
        for (text, kind, message) in cases {
            XCTAssertThrowsError(try registry.canonical(Config(parsing: text), as: kind), text) { e in
                XCTAssertEqual("\(e)", message, text)
            }
        }
        // the nearest value is taken
        for (text, kind) in [("retinanet(dropout=0.95)", ComponentKind.detector), ("resnet34(width=0.03125)", .encoder), ("retinanet(levels=2-7)", .detector)] {
            XCTAssertNoThrow(try registry.canonical(Config(parsing: text), as: kind), text)
        }
    }

    func testDuplicatePluginNamesAreAnError() {
        XCTAssertThrowsError(try Registry(plugins: [ResNetPlugin.self, ResNetPlugin.self])) { e in
            XCTAssertEqual(e as? ConfigError, .duplicateName(kind: "encoder", name: "resnet18", firstPlugin: "ResNet", secondPlugin: "ResNet"))
        }
    }

    func testMismatchedPartsFailBeforeAllocating() throws {
        // an FPN cannot start below level 2 or end below 5
        XCTAssertThrowsError(try registry.checkDetector("retinanet(levels=2-4)")) { e in
            XCTAssertTrue("\(e)".contains("encoder resnet34") && "\(e)".contains("neck fpn"), "\(e)")
        }
        XCTAssertNoThrow(try registry.checkDetector("retinanet(levels=3-7, encoder=resnet101)"))
        // a size outside the key's range names the nearest one it takes (new-user trial); inside
        // it every size works at every level (PyramidGridTests), so 33 to 63 are taken too
        for (size, nearest) in [(1, 32), (31, 32), (2049, 2048), (5000, 2048)] {
            XCTAssertThrowsError(try registry.checkDetector("retinanet(size=\(size))"), "\(size)") { e in
                XCTAssertEqual("\(e)", "retinanet: size=\(size) is invalid; expected integer in 32...2048 (nearest valid: \(nearest))")
            }
        }
        for size in [32, 33, 40, 50, 63, 100] { XCTAssertNoThrow(try registry.checkDetector("retinanet(size=\(size))"), "\(size)") }
    }
}
