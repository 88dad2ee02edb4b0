import Foundation
import XCTest

/// The README's Swift example is `Examples/ReadmeSnippet/main.swift` word for word, so the
/// build compiles it; here it runs on a real RSNA DICOM (as `patient.dcm`) and prints boxes.
final class ReadmeSnippetTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    func testReadmeSwiftBlockIsTheCompiledSnippet() throws {
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        let section = try XCTUnwrap(readme.components(separatedBy: "## In Swift").dropFirst().first, "README has no 'In Swift' section")
        let block = try XCTUnwrap(section.components(separatedBy: "```swift\n").dropFirst().first?.components(separatedBy: "```").first)
        let source = try String(contentsOf: Self.root.appendingPathComponent("Examples/ReadmeSnippet/main.swift"), encoding: .utf8)
        XCTAssertEqual(block, source, "README.md's Swift block and Examples/ReadmeSnippet/main.swift differ")
    }

    func testSnippetRunsOnARealDicom() throws {
        let dicom = Self.root.deletingLastPathComponent()
            .appendingPathComponent("shared/realdata/rsna/stage_1_train_images/00436515-870c-4b36-a041-de91049b9ab4.dcm")
        let dir = try CLI.tempDir("readme")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: dicom, to: dir.appendingPathComponent("patient.dcm"))
        let p = Process()
        p.executableURL = CLI.executable.deletingLastPathComponent().appendingPathComponent("readme-snippet")
        p.currentDirectoryURL = dir
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        // Each line: a score in (0.3, 1] and a box.
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n")
        for line in lines {
            let score = try XCTUnwrap(Float(line.split(separator: " ").first ?? ""), String(line))
            XCTAssertGreaterThan(score, 0.3)
            XCTAssertLessThanOrEqual(score, 1)
        }
    }

    /// Without `patient.dcm` the example says so and exits 1 (it trapped with a top-level `try`).
    func testSnippetReportsAMissingFileAndExitsOne() throws {
        let dir = try CLI.tempDir("readme-missing")
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = Process()
        p.executableURL = CLI.executable.deletingLastPathComponent().appendingPathComponent("readme-snippet")
        p.currentDirectoryURL = dir
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 1, errText)
        XCTAssertTrue(outData.isEmpty)
        XCTAssertTrue(errText.hasPrefix("error: ") && errText.contains("patient.dcm"), errText)
        XCTAssertFalse(errText.contains("Fatal error"), errText)
    }
}
