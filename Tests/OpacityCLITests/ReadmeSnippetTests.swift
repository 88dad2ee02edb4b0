import Foundation
import XCTest

/// The README's Swift example is `Examples/ReadmeSnippet/main.swift` word for word, so the
/// build compiles it; here it runs on a real RSNA DICOM (as `patient.dcm`) and prints its boxes, or a line saying it found none.
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

    /// Runs the example in a new folder holding `film` as `patient.dcm`; its standard output.
    func runSnippet(on film: URL, _ name: String) throws -> String {
        let dir = try CLI.tempDir(name)
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: film, to: dir.appendingPathComponent("patient.dcm"))
        let p = Process()
        p.executableURL = CLI.executable.deletingLastPathComponent().appendingPathComponent("readme-snippet")
        p.currentDirectoryURL = dir
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        return String(decoding: data, as: UTF8.self)
    }

    func testSnippetRunsOnARealDicom() throws {
        let dicom = Self.root.deletingLastPathComponent()
            .appendingPathComponent("shared/realdata/rsna/stage_1_train_images/00436515-870c-4b36-a041-de91049b9ab4.dcm")
        let lines = try runSnippet(on: dicom, "readme").split(separator: "\n")
        // never silent: a line per box, or the line saying there is none (the composite zoo
        // model, trained on synthetic opacities, finds no box above 0.3 on this real positive film)
        XCTAssertFalse(lines.isEmpty)
        if lines == ["no opacities found (no box scores above 0.3)"] { return }
        // Each line: a score in (0.3, 1] and a box.
        for line in lines {
            let score = try XCTUnwrap(Float(line.split(separator: " ").first ?? ""), String(line))
            XCTAssertGreaterThan(score, 0.3)
            XCTAssertLessThanOrEqual(score, 1)
        }
    }

    /// On a film without findings (a real RSNA patient without boxes, Target 0) the example says
    /// so in one line (new-user trial: it printed nothing, which reads as if it had not run).
    func testSnippetSaysWhenItFindsNothing() throws {
        let film = Self.root.deletingLastPathComponent().appendingPathComponent("shared/realdata/rsna/stage_1_train_images/0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm")
        XCTAssertEqual(try runSnippet(on: film, "readme-none"), "no opacities found (no box scores above 0.3)\n")
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
