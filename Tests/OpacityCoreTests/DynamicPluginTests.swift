import Foundation
import OpacityCore
import XCTest

/// The dynamic plugin loader's checks, short of a real plugin library (scripts/check-example.sh
/// builds Examples/TinyBackbone's libTinyBackbonePlugin.so and trains with it through the stock
/// `opacity`, and checks a library of another version there).
final class DynamicPluginTests: XCTestCase {
    private enum Probe: OpacityPlugin {
        static let name = "Probe"
        static func register(into registry: inout Registry) throws {}
    }

    private func temporaryFile(_ name: String, _ contents: Data) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-dynplug-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent(name)
        try contents.write(to: url)
        return url.path
    }

    private func loadError(_ path: String, source: String = "--plugin") -> DynamicPluginError? {
        do {
            _ = try DynamicPluginLoader.load(path, source: source)
            return nil
        } catch {
            return error as? DynamicPluginError
        }
    }

    func testMissingFileIsNamedWithItsSource() {
        let e = loadError("/nonexistent/libNothing.so", source: "OPACITY_PLUGINS")
        XCTAssertEqual(e, .fileNotFound(path: "/nonexistent/libNothing.so", source: "OPACITY_PLUGINS"))
        XCTAssertTrue("\(e!)".contains("/nonexistent/libNothing.so (OPACITY_PLUGINS): no such file"), "\(e!)")
    }

    func testFilesThatAreNotELFAreRefusedBeforeTheLoaderSeesThem() throws {
        let text = try temporaryFile("libText.so", Data("not a library\n".utf8))
        XCTAssertEqual(loadError(text), .notSharedLibrary(path: text, found: "the bytes 6E 6F 74 20"))
        let empty = try temporaryFile("libEmpty.so", Data())
        XCTAssertEqual(loadError(empty), .notSharedLibrary(path: empty, found: "an empty file"))
        let dir = URL(fileURLWithPath: text).deletingLastPathComponent().path
        XCTAssertEqual(loadError(dir), .fileNotFound(path: dir, source: "--plugin"))
    }

    func testASharedLibraryWithoutTheEntrySymbolIsNamed() throws {
        // The Swift runtime this test runs on: an ELF shared library with no opacity_plugin_v1.
        let maps = String(decoding: try XCTUnwrap(FileHandle(forReadingAtPath: "/proc/self/maps")).readDataToEndOfFile(), as: UTF8.self)
        let runtime = try XCTUnwrap(
            maps.split(separator: "\n").compactMap { $0.split(separator: " ", omittingEmptySubsequences: true).last }
                .first { $0.hasSuffix("/libswiftCore.so") })
        XCTAssertEqual(loadError(String(runtime)), .missingEntry(path: String(runtime)))
        XCTAssertTrue("\(loadError(String(runtime))!)".contains("exports no opacity_plugin_v1"))
    }

    func testAnELFFileTheLoaderRefusesGivesItsMessage() throws {
        // ELF magic, then garbage: the dynamic loader's own reason is passed on with the file.
        let bad = try temporaryFile("libTruncated.so", Data([0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0]))
        guard case .cannotLoad(let path, let reason, _)? = loadError(bad) else { return XCTFail("\(String(describing: loadError(bad)))") }
        XCTAssertEqual(path, bad)
        XCTAssertFalse(reason.isEmpty)
    }

    func testAMatchingDescriptorGivesTheVeryPluginTypes() throws {
        let types = try DynamicPluginLoader.plugins(fromDescriptor: DynamicPluginABI.descriptor(plugins: [Probe.self]), path: "libProbe.so")
        XCTAssertEqual(types.count, 1)
        XCTAssertTrue(types[0] == Probe.self)
        XCTAssertEqual(types[0].name, "Probe")
    }

    func testDescriptorsOfAnotherBuildAreRefusedNamingBothVersions() throws {
        let host = "Opacity \(DynamicPluginABI.opacityVersion), plugin format 1, Swift \(DynamicPluginABI.swiftVersion)"
        // another plugin format: the strings of an unknown layout are not read
        let d = DynamicPluginABI.descriptor(plugins: [Probe.self])
        d.storeBytes(of: 2 as UInt32, toByteOffset: 4, as: UInt32.self)
        XCTAssertThrowsError(try DynamicPluginLoader.plugins(fromDescriptor: d, path: "libNext.so")) {
            XCTAssertEqual($0 as? DynamicPluginError, .versionMismatch(path: "libNext.so", plugin: "plugin format 2", host: host))
        }
        // another Opacity version
        let v = DynamicPluginABI.descriptor(plugins: [Probe.self])
        v.storeBytes(of: try XCTUnwrap(strdup("9.9.9")), toByteOffset: 8, as: UnsafeMutablePointer<CChar>.self)
        XCTAssertThrowsError(try DynamicPluginLoader.plugins(fromDescriptor: v, path: "libOld.so")) {
            let plugin = "Opacity 9.9.9, plugin format 1, Swift \(DynamicPluginABI.swiftVersion)"
            XCTAssertEqual($0 as? DynamicPluginError, .versionMismatch(path: "libOld.so", plugin: plugin, host: host))
            XCTAssertTrue("\($0)".contains("libOld.so was built against Opacity 9.9.9"), "\($0)")
        }
        // not a descriptor at all
        let zeros = UnsafeMutableRawPointer.allocate(byteCount: DynamicPluginABI.descriptorSize, alignment: 8)
        zeros.initializeMemory(as: UInt8.self, repeating: 0, count: DynamicPluginABI.descriptorSize)
        defer { zeros.deallocate() }
        XCTAssertThrowsError(try DynamicPluginLoader.plugins(fromDescriptor: zeros, path: "libZero.so")) {
            XCTAssertEqual($0 as? DynamicPluginError, .badDescriptor(path: "libZero.so"))
        }
        XCTAssertThrowsError(try DynamicPluginLoader.plugins(fromDescriptor: nil, path: "libNil.so"))
    }

    func testEnvironmentPathsAreColonSeparated() {
        XCTAssertEqual(DynamicPluginLoader.environmentPaths(["OPACITY_PLUGINS": "/a/libA.so::/b/libB.so:"]), ["/a/libA.so", "/b/libB.so"])
        XCTAssertEqual(DynamicPluginLoader.environmentPaths([:]), [])
    }
}
