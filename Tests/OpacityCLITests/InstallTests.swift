import Foundation
import XCTest

/// `scripts/install.sh --prefix DIR` puts a working `opacity` in DIR/bin that finds the zoo
/// installed beside it, from any working folder and after the prefix is moved.
final class InstallTests: XCTestCase {
    func testInstalledBinaryFindsItsZooAfterTheFolderMoves() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let dir = try CLI.tempDir("install")
        defer { try? FileManager.default.removeItem(at: dir) }
        let install = Process()
        install.executableURL = URL(fileURLWithPath: "/bin/sh")
        install.arguments = [root.appendingPathComponent("scripts/install.sh").path, "--prefix", dir.appendingPathComponent("prefix").path, "--skip-build"]
        install.currentDirectoryURL = dir
        let log = Pipe()
        install.standardOutput = log
        install.standardError = log
        try install.run()
        let text = String(decoding: log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        install.waitUntilExit()
        XCTAssertEqual(install.terminationStatus, 0, text)
        XCTAssertTrue(text.contains("retinanet-r34-composite: ok"), text)

        // Move the whole prefix; the binary still finds its zoo, not the checkout's.
        let moved = dir.appendingPathComponent("moved")
        try FileManager.default.moveItem(at: dir.appendingPathComponent("prefix"), to: moved)
        let p = Process()
        p.executableURL = moved.appendingPathComponent("bin/opacity")
        p.arguments = ["zoo", "info", "retinanet-r34-composite"]
        p.currentDirectoryURL = FileManager.default.temporaryDirectory
        var env = ProcessInfo.processInfo.environment
        env["OPACITY_ZOO_MANIFEST"] = nil
        env["OPACITY_HOME"] = nil
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let info = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, info)
        XCTAssertTrue(info.contains(moved.appendingPathComponent("share/opacity/zoo/manifest.json").path), info)
        XCTAssertFalse(info.contains(root.path), "the checkout's path leaked: \(info)")
    }
}
