import Foundation
import OpacityData
import XCTest

/// Runs a tool (a validator, DCMTK, OpenJPEG) and returns its status and output (stdout and
/// stderr together) whatever its exit status (dciodvfy exits non-zero on warnings of some
/// kinds); fails the test when the tool is missing.
func runValidator(_ tool: String, _ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> (status: Int32, text: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = [tool] + args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    if p.terminationStatus == 127 { XCTFail("\(tool) is missing; run scripts/install-deps.sh", file: file, line: line) }
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Checks a DICOM file with DCMTK's dsrdump (SR only) and dicom3tools' dciodvfy: no errors.
/// - Returns: dsrdump's dump (empty for non-SR) and dciodvfy's warnings.
@discardableResult
func assertValidDICOM(_ url: URL, sr: Bool, file: StaticString = #filePath, line: UInt = #line) throws -> (dump: String, warnings: [String]) {
    var dump = ""
    if sr {
        let d = try runValidator("dsrdump", ["+Pl", "+Pc", "+Pu", "+Pt", url.path], file: file, line: line)
        XCTAssertEqual(d.status, 0, "dsrdump failed on \(url.lastPathComponent):\n\(d.text)", file: file, line: line)
        let problems = d.text.split(separator: "\n").filter { $0.hasPrefix("E:") || $0.hasPrefix("W:") || $0.hasPrefix("F:") }
        XCTAssertEqual(problems, [], "dsrdump complains about \(url.lastPathComponent)", file: file, line: line)
        dump = d.text
    }
    let v = try runValidator("dciodvfy", [url.path], file: file, line: line)
    let lines = v.text.split(separator: "\n").map(String.init)
    let errors = lines.filter { $0.hasPrefix("Error") }
    XCTAssertEqual(errors, [], "dciodvfy errors in \(url.lastPathComponent):\n\(v.text)", file: file, line: line)
    return (dump, lines.filter { $0.hasPrefix("Warning") })
}

/// DICOM result objects (issue 16): UIDs under 2.25, the TID 1500 SR and the Secondary
/// Capture, validated by DCMTK (dsrdump, dcmdump, dcm2pnm) and dicom3tools (dciodvfy).
final class DICOMResultsTests: XCTestCase {
    let rsna = rsnaImages.appendingPathComponent("00436515-870c-4b36-a041-de91049b9ab4.dcm")
    let device = DICOMDevice(uid: DICOMUID.derived(fromHash: Array(repeating: 7, count: 32)), name: "retinanet-test",
                             version: "sha256:0123456789abcdef", softwareVersion: "opacity test")

    /// `2.25.` + the UUID's 128 bits in decimal, as Python's `uuid.UUID(...).int` computes them.
    func testUIDsAreUUIDDerived() throws {
        let u = UUID(uuidString: "F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6")!
        let python = try runTool("python3", ["-c", "import uuid; print(uuid.UUID('f81d4fae-7dec-11d0-a765-00a0c91e6bf6').int)"])
        XCTAssertEqual(DICOMUID.uid(u), "2.25." + python.trimmingCharacters(in: .whitespacesAndNewlines))
        XCTAssertEqual(DICOMUID.uid(UUID(uuidString: "00000000-0000-0000-0000-000000000000")!), "2.25.0")
        for _ in 0..<100 {
            let m = DICOMUID.make()
            XCTAssertTrue(m.hasPrefix("2.25.") && m.count <= 44 && !m.dropFirst(5).hasPrefix("0"), m)
            XCTAssertTrue(m.dropFirst(5).allSatisfy(\.isNumber), m)
        }
        let hash = (0..<32).map { UInt8($0 * 7) }
        XCTAssertEqual(DICOMUID.derived(fromHash: hash), DICOMUID.derived(fromHash: hash))
        XCTAssertNotEqual(DICOMUID.derived(fromHash: hash), DICOMUID.derived(fromHash: hash.reversed()))
    }

    /// The SR of an RSNA image with two findings, and one with none: both pass dsrdump and
    /// dciodvfy; the dump shows the template, the device, each rectangle as a closed POLYLINE
    /// on the source's SOP Instance, the score in percent; patient and study are the source's.
    func testStructuredReportPassesBothValidators() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let header = try DICOM.readHeader(rsna)
        let source = try DICOMSourceReference(header: header, path: rsna.path)
        let findings = [DICOMFinding(x: 264, y: 152, width: 213, height: 379, score: 0.8125),
                        DICOMFinding(x: 562.5, y: 152.25, width: 256, height: 453, score: 0.25)]
        let placement = DICOMSeriesPlacement(seriesNumber: 9901)
        let url = dir.appendingPathComponent("a.sr.dcm")
        try DICOMResults.structuredReport(source: source, findings: findings, device: device, placement: placement).write(to: url)
        let (dump, warnings) = try assertValidDICOM(url, sr: true)
        print("dciodvfy warnings (SR, 2 findings): \(warnings)")
        for expected in ["Comprehensive SR", "TID 1500", "(126000,DCM,\"Imaging Measurement Report\")",
                         "(121007,DCM,\"Device\")", device.uid, "retinanet-test sha256:0123456789abcdef",
                         "(399208008,SCT,\"Plain chest X-ray\")", "(112033,DCM,\"Abnormal opacity\")",
                         "(POLYLINE,264/152,477/152,477/531,264/531,264/152)",
                         "(POLYLINE,562.5/152.25,818.5/152.25,818.5/605.25,562.5/605.25,562.5/152.25)",
                         "\"81.25\" (%,UCUM,\"Percent\")", "\"25\" (%,UCUM,\"Percent\")", header.sopInstanceUID!] {
            XCTAssertTrue(dump.contains(expected), "dsrdump output lacks \(expected):\n\(dump)")
        }
        let tags = try runTool("dcmdump", ["+P", "0010,0020", "+P", "0020,000d", "+P", "0020,000e", "+P", "0008,0018", url.path])
        XCTAssertTrue(tags.contains("[\(header.patientID!)]"), tags)
        XCTAssertTrue(tags.contains("[\(header.studyInstanceUID!)]"), tags)
        XCTAssertTrue(tags.contains("[\(placement.seriesInstanceUID)]"), tags)
        XCTAssertTrue(tags.contains("[\(placement.sopInstanceUID)]"), tags)

        let none = dir.appendingPathComponent("none.sr.dcm")
        try DICOMResults.structuredReport(source: source, findings: [], device: device, placement: DICOMSeriesPlacement(seriesNumber: 9901)).write(to: none)
        let empty = try assertValidDICOM(none, sr: true)
        XCTAssertFalse(empty.dump.contains("POLYLINE"))
    }

    /// On frame 2 of a multi-frame image the region and the library entry name the frame.
    func testMultiFrameSourceNamesTheFrame() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        var h = try DICOM.readHeader(rsna)
        h.numberOfFrames = 3
        // a multi-frame SOP class (dciodvfy refuses frame numbers on single-frame classes)
        h.copiedAttributes[0x0008_0016] = Array("1.2.840.10008.5.1.4.1.1.7.2".utf8)
        let source = try DICOMSourceReference(header: h, frame: 2, path: "multi.dcm")
        XCTAssertEqual(source.frame, 2)
        let url = dir.appendingPathComponent("m.sr.dcm")
        try DICOMResults.structuredReport(source: source, findings: [DICOMFinding(x: 1, y: 2, width: 3, height: 4, score: 0.5)], device: device,
                                          placement: DICOMSeriesPlacement(seriesNumber: 9901)).write(to: url)
        try assertValidDICOM(url, sr: true)
        let text = try runTool("dcmdump", [url.path])
        XCTAssertEqual(text.components(separatedBy: "(0008,1160) IS [2]").count - 1, 2, "ReferencedFrameNumber 2 in the library and the region:\n\(text)")
    }

    /// A source without the UIDs a reference needs is refused, naming the file and the attribute.
    func testMissingUIDIsAClearError() throws {
        var h = try DICOM.readHeader(rsna)
        h.copiedAttributes[0x0020_000E] = nil
        assertThrows(try DICOMSourceReference(header: h, path: "x.dcm"), containing: ["x.dcm", "SeriesInstanceUID (0020,000E)"])
    }

    /// The Secondary Capture passes dciodvfy; DCMTK decodes exactly our RGB pixels; patient and
    /// study are the source's, the series is new, the source is referenced.
    func testSecondaryCaptureIsValidAndDecodesExactly() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let header = try DICOM.readHeader(rsna)
        let source = try DICOMSourceReference(header: header, path: rsna.path)
        let gray = try DICOM.read(rsna).displayImage().resized(width: 301, height: 257)  // odd sizes: padding
        let rgb = gray.overlay(detections: [], thickness: 2)
        let placement = DICOMSeriesPlacement(seriesNumber: 9902)
        let url = dir.appendingPathComponent("a.overlay.dcm")
        try DICOMResults.secondaryCapture(rgb, source: source, device: device, placement: placement).write(to: url)
        let (_, warnings) = try assertValidDICOM(url, sr: false)
        print("dciodvfy warnings (SC): \(warnings)")
        let ppm = dir.appendingPathComponent("a.ppm")
        try runTool("dcm2pnm", ["--write-raw-pnm", url.path, ppm.path])
        let bytes = [UInt8](try Data(contentsOf: ppm))
        let headerText = "P6\n301 257\n255\n"
        XCTAssertEqual(Array(bytes.prefix(headerText.utf8.count)), Array(headerText.utf8))
        XCTAssertEqual(Array(bytes.dropFirst(headerText.utf8.count)), rgb.pixels)
        let tags = try runTool("dcmdump", [url.path])
        for expected in ["[\(header.patientID!)]", "[\(header.studyInstanceUID!)]", "[\(placement.seriesInstanceUID)]",
                         "(0028,0301) CS [YES]", "[\(header.sopInstanceUID!)]"] {
            XCTAssertTrue(tags.contains(expected), "dcmdump lacks \(expected)")
        }
        XCTAssertFalse(tags.contains("[\(String(decoding: header.copiedAttributes[0x0020_000E]!, as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: " \0")))]"),
                       "the overlay must be in a new series")
    }
}
