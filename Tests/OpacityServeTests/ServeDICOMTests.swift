import Foundation
import Opacity
import OpacityServe
import XCTest

/// Runs a tool, returning its status and output (stdout and stderr together).
func runTool(_ tool: String, _ args: [String]) throws -> (status: Int32, text: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = [tool] + args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// dsrdump (for SR) and dciodvfy report no error on `url`; returns dsrdump's dump.
@discardableResult
func assertValidDICOM(_ url: URL, sr: Bool, file: StaticString = #filePath, line: UInt = #line) throws -> String {
    var dump = ""
    if sr {
        let d = try runTool("dsrdump", ["+Pl", "+Pc", "+Pu", url.path])
        XCTAssertEqual(d.status, 0, "dsrdump failed (scripts/install-deps.sh installs it): \(d.text)", file: file, line: line)
        XCTAssertEqual(d.text.split(separator: "\n").filter { $0.hasPrefix("E:") || $0.hasPrefix("W:") || $0.hasPrefix("F:") }, [], d.text, file: file, line: line)
        dump = d.text
    }
    let v = try runTool("dciodvfy", [url.path])
    XCTAssertNotEqual(v.status, 127, "dciodvfy is missing; run scripts/install-deps.sh", file: file, line: line)
    XCTAssertTrue(v.text.contains(sr ? "ComprehensiveSR" : "SCImage"), v.text, file: file, line: line)
    XCTAssertEqual(v.text.split(separator: "\n").filter { $0.hasPrefix("Error") }, [], v.text, file: file, line: line)
    return dump
}

/// DICOM in and out through the service and the CLI (issue 16): `?format=dicom-sr`,
/// `detect --dicom-sr/--dicom-overlay/--frame`, and 16-bit DICOM at full depth.
final class ServeDICOMTests: XCTestCase {
    /// The service answers a valid SR whose rectangles are the JSON report's boxes; the CLI
    /// writes a valid SR and Secondary Capture for the same image, with the same boxes.
    func testStructuredReportFromServiceAndCLI() throws {
        let server = try RunningServer { c in c.maxBodyBytes = 8 << 20 }
        defer { XCTAssertNil(server.stop()) }
        let dcm = ServeFixtures.positiveDICOM
        let body = try Data(contentsOf: dcm)
        let json = try HTTP.request(port: server.port, "POST", "/v1/detect?threshold=0.01", headers: ["Content-Type": "application/dicom"], body: body)
        XCTAssertEqual(json.status, 200, json.text)
        let report = try JSONDecoder().decode([DetectionReport].self, from: json.body)[0]
        XCTAssertFalse(report.boxes.isEmpty)
        let a = try HTTP.request(port: server.port, "POST", "/v1/detect?threshold=0.01&format=dicom-sr", headers: ["Content-Type": "application/dicom"], body: body)
        XCTAssertEqual(a.status, 200, a.text)
        XCTAssertEqual(a.headers["content-type"], "application/dicom")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-serve-sr-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try a.body.write(to: dir.appendingPathComponent("served.sr.dcm"))
        let served = try assertValidDICOM(dir.appendingPathComponent("served.sr.dcm"), sr: true)
        XCTAssertEqual(served.components(separatedBy: "(POLYLINE,").count - 1, report.boxes.count)
        let b = report.boxes[0]
        let points = try XCTUnwrap(firstPolyline(served))
        XCTAssertEqual(points.count, 10, "5 points, closed")
        for (got, want) in zip(points, [b.x, b.y, b.x + b.width, b.y, b.x + b.width, b.y + b.height, b.x, b.y + b.height, b.x, b.y]) {
            XCTAssertEqual(got, Double(want), accuracy: 0.01)
        }
        XCTAssertTrue(served.contains(try DICOM.readHeader(dcm).sopInstanceUID!))
        // a PNG has no UIDs to refer to; two images are refused
        let png = try HTTP.request(port: server.port, "POST", "/v1/detect?format=dicom-sr", headers: ["Content-Type": "image/png"],
                                   body: try Data(contentsOf: ServeFixtures.png))
        XCTAssertEqual(png.status, 422, png.text)
        XCTAssertTrue(png.text.contains("needs a DICOM source"), png.text)
        let frame = try HTTP.request(port: server.port, "POST", "/v1/detect?frame=2", headers: ["Content-Type": "application/dicom"], body: body)
        XCTAssertEqual(frame.status, 422, frame.text)
        XCTAssertTrue(frame.text.contains("frame"), frame.text)

        // the CLI: SR, Secondary Capture, same boxes, same patient and study, never over an input
        let p = Process()
        p.executableURL = ServeFixtures.executable
        p.arguments = ["detect", dcm.path, "--model", ServeFixtures.zooModel, "--threshold", "0.01", "-o", dir.appendingPathComponent("out").path,
                       "--no-overlays", "--threads", "2", "--frame", "1", "--dicom-sr", dir.appendingPathComponent("sr").path,
                       "--dicom-overlay", dir.appendingPathComponent("sc").path]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        let stem = dcm.deletingPathExtension().lastPathComponent
        let cli = try assertValidDICOM(dir.appendingPathComponent("sr/\(stem).sr.dcm"), sr: true)
        XCTAssertEqual(cli.components(separatedBy: "(POLYLINE,").count - 1, report.boxes.count)
        try assertValidDICOM(dir.appendingPathComponent("sc/\(stem).overlay.dcm"), sr: false)
        let ppm = dir.appendingPathComponent("sc.ppm")
        XCTAssertEqual(try runTool("dcm2pnm", ["--write-raw-pnm", dir.appendingPathComponent("sc/\(stem).overlay.dcm").path, ppm.path]).status, 0)
        XCTAssertTrue(try Data(contentsOf: ppm).starts(with: Array("P6\n1024 1024\n255\n".utf8)))
    }

    /// `detect --frame 2` on a two-frame file: the SR's image library and region name frame 2,
    /// and it passes both validators; `--frame 3` fails naming the file and the frame range.
    func testFrameOfAMultiFrameFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-frames-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var d = Data(count: 128)
        d.append(contentsOf: Array("DICM".utf8))
        func element(_ g: UInt16, _ e: UInt16, _ vr: String, _ value: [UInt8], to out: inout Data) {
            var v = value
            if v.count % 2 == 1 { v.append(vr == "UI" || vr == "OB" ? 0 : 0x20) }
            out.append(contentsOf: [UInt8(g & 0xFF), UInt8(g >> 8), UInt8(e & 0xFF), UInt8(e >> 8)] + Array(vr.utf8))
            if vr == "OB" {
                out.append(contentsOf: [0, 0] + (0..<4).map { UInt8((v.count >> ($0 * 8)) & 0xFF) })
            } else {
                out.append(contentsOf: [UInt8(v.count & 0xFF), UInt8(v.count >> 8)])
            }
            out.append(contentsOf: v)
        }
        let sopClass = "1.2.840.10008.5.1.4.1.1.7.2", sop = "2.25.1001", n = 64
        var meta = Data()
        element(0x0002, 0x0001, "OB", [0, 1], to: &meta)
        element(0x0002, 0x0002, "UI", Array(sopClass.utf8), to: &meta)
        element(0x0002, 0x0003, "UI", Array(sop.utf8), to: &meta)
        element(0x0002, 0x0010, "UI", Array("1.2.840.10008.1.2.1".utf8), to: &meta)
        element(0x0002, 0x0000, "UL", [UInt8(meta.count & 0xFF), UInt8(meta.count >> 8), 0, 0], to: &d)
        d.append(meta)
        for (g, e, vr, v) in [(UInt16(0x0008), UInt16(0x0016), "UI", sopClass), (0x0008, 0x0018, "UI", sop), (0x0010, 0x0020, "LO", "frames"),
                              (0x0020, 0x000D, "UI", "2.25.1002"), (0x0020, 0x000E, "UI", "2.25.1003"), (0x0028, 0x0004, "CS", "MONOCHROME2"),
                              (0x0028, 0x0008, "IS", "2")] {
            element(g, e, vr, Array(v.utf8), to: &d)
        }
        for (e, v) in [(UInt16(0x0002), 1), (0x0010, n), (0x0011, n), (0x0100, 8), (0x0101, 8), (0x0102, 7), (0x0103, 0)] {
            element(0x0028, e, "US", [UInt8(v & 0xFF), UInt8(v >> 8)], to: &d)
        }
        element(0x7FE0, 0x0010, "OB", (0..<2 * n * n).map { UInt8(($0 / n + $0 % n) % 256) }, to: &d)
        let file = dir.appendingPathComponent("frames.dcm")
        try d.write(to: file)
        func detect(_ frame: Int) throws -> (Int32, String) {
            let p = Process()
            p.executableURL = ServeFixtures.executable
            p.arguments = ["detect", file.path, "--model", ServeFixtures.zooModel, "-o", dir.appendingPathComponent("out\(frame)").path, "--no-overlays",
                           "--threads", "2", "--frame", "\(frame)", "--dicom-sr", dir.appendingPathComponent("sr\(frame)").path]
            let err = Pipe()
            p.standardOutput = FileHandle.nullDevice
            p.standardError = err
            try p.run()
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            return (p.terminationStatus, text)
        }
        let (ok, log) = try detect(2)
        XCTAssertEqual(ok, 0, log)
        let sr = dir.appendingPathComponent("sr2/frames.sr.dcm")
        try assertValidDICOM(sr, sr: true)
        let dump = try runTool("dcmdump", [sr.path]).text
        XCTAssertEqual(dump.components(separatedBy: "(0008,1160) IS [2]").count - 1, 1 + dump.components(separatedBy: "POLYLINE").count - 1, dump)
        let (bad, message) = try detect(3)
        XCTAssertNotEqual(bad, 0)
        XCTAssertTrue(message.contains("frames.dcm") && message.contains("1...2"), message)
    }

    /// A 16-bit CT reaches the model at full depth: the engine's input is the Float window
    /// output (not its 8-bit rendering), and its boxes are the predictor's on that input.
    func testSixteenBitDICOMIsDetectedAtFullDepth() throws {
        let engine = try ServeFixtures.loadEngine(threshold: 0)
        let ct = ServeFixtures.realdata.appendingPathComponent("dicom_conformance/CT_small.dcm")
        let img = try DetectionEngine.read(ct)
        let full = try DICOM.read(ct).floatImage()
        XCTAssertEqual(img.source, .float(full))
        XCTAssertGreaterThan(Set(full.pixels).count, 256)
        let report = engine.run([img])[0]
        let direct = engine.predictor.predict([.float(full)])[0]
        let filtered = ConfidenceFilter(threshold: 0, relativeToMax: engine.relativeToMax).apply(direct.detections)
        XCTAssertEqual(report.boxes.map(\.score), filtered.map(\.score))
        let eight = engine.predictor.predict([.gray(full.to8Bit())])[0]
        XCTAssertNotEqual(direct.detections.map(\.score), eight.detections.map(\.score), "the 8-bit rendering would give other scores")
        XCTAssertEqual(report.pixelSpacing?.count, 2, "CT_small has Pixel Spacing")
        // without Pixel Spacing, Imager Pixel Spacing (row, column) gives the millimetres
        var detector = img
        detector.header?.pixelSpacing = nil
        detector.header?.imagerPixelSpacing = [0.2, 0.1]
        let r = engine.run([detector])[0]
        XCTAssertEqual(r.pixelSpacing, [0.2, 0.1])
        let b = try XCTUnwrap(r.boxes.first), mm = try XCTUnwrap(b.mm)
        XCTAssertEqual(mm.x, Double(b.x) * 0.1, accuracy: 1e-4)
        XCTAssertEqual(mm.height, Double(b.height) * 0.2, accuracy: 1e-4)
    }

    /// The coordinates of the first POLYLINE in a dsrdump dump (column, row, ...).
    private func firstPolyline(_ dump: String) -> [Double]? {
        guard let r = dump.range(of: "(POLYLINE,") else { return nil }
        let rest = dump[r.upperBound...]
        guard let end = rest.firstIndex(of: ")") else { return nil }
        return rest[..<end].split(whereSeparator: { $0 == "," || $0 == "/" }).compactMap { Double($0) }
    }
}

/// `serve --window` (``ServeConfiguration/window``) windows every DICOM request as `detect
/// --window` does: a fixed window changes what the model sees, and so the scores.
final class ServeWindowTests: XCTestCase {
    func testWindowReachesTheModel() throws {
        func scores(_ window: WindowSetting) throws -> [Float] {
            let running = try RunningServer({ $0.window = window })
            defer { running.stop() }
            let r = try HTTP.request(
                port: running.port, "POST", "/v1/detect?threshold=0.01", headers: ["Content-Type": "application/dicom"],
                body: try Data(contentsOf: ServeFixtures.positiveDICOM))
            XCTAssertEqual(r.status, 200, r.text)
            return try JSONDecoder().decode([DetectionReport].self, from: r.body)[0].boxes.map(\.score)
        }
        let automatic = try scores(.automatic)
        XCTAssertFalse(automatic.isEmpty)
        XCTAssertNotEqual(try scores(.fixed(center: 40, width: 60)), automatic, "the window did not reach the model")
    }
}
