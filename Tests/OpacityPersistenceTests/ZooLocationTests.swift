import Foundation
import OpacityPersistence
import XCTest

/// Where the built-in manifest is found: beside the executable (installed layout, or a
/// source checkout wherever it was moved), then `OPACITY_HOME`; nothing compiled in.
final class ZooLocationTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-zooloc-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func touch(_ path: String) throws -> URL {
        let u = dir.appendingPathComponent(path)
        try FileManager.default.createDirectory(at: u.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: u)
        return u
    }

    func testInstalledLayoutBesideTheBinary() throws {
        let exe = try touch("prefix/bin/opacity")
        let manifest = try touch("prefix/share/opacity/zoo/manifest.json")
        XCTAssertEqual(Zoo.builtinManifestURL(environment: [:], executable: exe)?.standardizedFileURL.path, manifest.standardizedFileURL.path)
    }

    func testSymlinkedBinaryFindsTheZooOfItsTarget() throws {
        let exe = try touch("prefix/bin/opacity")
        let manifest = try touch("prefix/share/opacity/zoo/manifest.json")
        let link = dir.appendingPathComponent("elsewhere/opacity")
        try FileManager.default.createDirectory(at: link.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: exe)
        XCTAssertEqual(
            Zoo.builtinManifestURL(environment: [:], executable: link)?.resolvingSymlinksInPath().path,
            manifest.resolvingSymlinksInPath().path)
    }

    func testCheckoutBuildFolderFindsTheCheckoutsZoo() throws {
        let exe = try touch("moved-clone/.build/x86_64-unknown-linux-gnu/release/opacity")
        _ = try touch("moved-clone/Package.swift")
        let manifest = try touch("moved-clone/zoo/manifest.json")
        XCTAssertEqual(Zoo.builtinManifestURL(environment: [:], executable: exe)?.standardizedFileURL.path, manifest.standardizedFileURL.path)
    }

    func testOpacityHomeWhenNothingIsBesideTheBinary() throws {
        let exe = try touch("lonely/bin/opacity")
        XCTAssertNil(Zoo.builtinManifestURL(environment: [:], executable: exe))
        let manifest = try touch("home/zoo/manifest.json")
        XCTAssertEqual(
            Zoo.builtinManifestURL(environment: ["OPACITY_HOME": dir.appendingPathComponent("home").path], executable: exe)?.path,
            manifest.path)
        // OPACITY_ZOO_MANIFEST wins over everything.
        XCTAssertEqual(Zoo.builtinManifestURL(environment: ["OPACITY_ZOO_MANIFEST": "/x/m.json"], executable: exe)?.path, "/x/m.json")
    }

    /// No source path of the build machine is compiled into the library.
    func testNoSourcePathIsCompiledIn() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let sources = root.appendingPathComponent("Sources")
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)?.compactMap { $0 as? URL } ?? []
        for f in files where f.pathExtension == "swift" && !f.path.contains("/opacity-bench/") {
            let text = try String(contentsOf: f, encoding: .utf8)
            // (#file is the module-relative #fileID in Swift 6 mode; #filePath is the full path.)
            XCTAssertFalse(text.contains("#filePath"), "\(f.path) compiles its source path in")
        }
    }
}
