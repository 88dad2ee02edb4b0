import Foundation
import OpacityData
import XCTest

final class PNGTests: XCTestCase {
    /// The real NIH films read as 512x512 8-bit gray.
    func testReadsRealNIHFiles() throws {
        for name in ["00000001_000.png", "00027426_000.png"] {
            let png = try PNG.read(realdata.appendingPathComponent("nih/\(name)"))
            guard case let .gray8(g) = png else { return XCTFail("\(name) should be 8-bit gray") }
            XCTAssertEqual(g.width, 512)
            XCTAssertEqual(g.height, 512)
            let mean = g.pixels.reduce(0.0) { $0 + Double($1) } / Double(g.pixels.count)
            XCTAssertGreaterThan(mean, 30)
            XCTAssertLessThan(mean, 220)
            XCTAssertEqual(try ImageFile.read(realdata.appendingPathComponent("nih/\(name)")), g)
        }
    }

    /// 8-bit gray, 16-bit gray and RGB survive a write/read round trip exactly.
    func testRoundTrips() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let g8 = GrayImage(width: 37, height: 11, pixels: (0..<(37 * 11)).map { UInt8($0 % 256) })
        try PNG.write(g8, to: dir.appendingPathComponent("g8.png"))
        XCTAssertEqual(try PNG.read(dir.appendingPathComponent("g8.png")), .gray8(g8))
        let g16 = GrayImage16(width: 19, height: 7, pixels: (0..<(19 * 7)).map { UInt16(($0 * 977) % 65536) })
        try PNG.write(g16, to: dir.appendingPathComponent("g16.png"))
        XCTAssertEqual(try PNG.read(dir.appendingPathComponent("g16.png")), .gray16(g16))
        XCTAssertEqual(try PNG.readGray(dir.appendingPathComponent("g16.png")), g16.to8Bit())
        let rgb = RGBImage(width: 5, height: 4, pixels: (0..<60).map { UInt8($0 * 4) })
        try PNG.write(rgb, to: dir.appendingPathComponent("sub/rgb.png"), fast: true)
        XCTAssertEqual(try PNG.read(dir.appendingPathComponent("sub/rgb.png")), .rgb(rgb))
        XCTAssertEqual(try PNG.readGray(dir.appendingPathComponent("sub/rgb.png")), rgb.toGray())
    }

    /// Broken inputs fail with the file named.
    func testErrorPaths() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        assertThrows(try PNG.read(dir.appendingPathComponent("missing.png")), containing: ["missing.png"])
        let junk = dir.appendingPathComponent("junk.png")
        try Data([1, 2, 3, 4, 5, 6, 7, 8, 9]).write(to: junk)
        assertThrows(try PNG.read(junk), containing: ["junk.png", "PNG"])
        // A real PNG cut in half.
        let full = try Data(contentsOf: realdata.appendingPathComponent("nih/00000001_000.png"))
        let cut = dir.appendingPathComponent("cut.png")
        try full.prefix(full.count / 2).write(to: cut)
        assertThrows(try PNG.read(cut), containing: ["cut.png"])
        // A DICOM file handed to the PNG reader.
        assertThrows(try PNG.read(conformance.appendingPathComponent("CT_small.dcm")), containing: ["CT_small.dcm"])
        // Writing into a path under a regular file fails cleanly.
        assertThrows(try PNG.write(GrayImage(width: 2, height: 2), to: junk.appendingPathComponent("x.png")),
                     containing: ["x.png"])
    }
}

final class ConversionTests: XCTestCase {
    /// A folder of RSNA DICOMs converts to PNGs equal to the decoded pixels (resized when
    /// asked); existing outputs are skipped; bad files are listed, not fatal.
    func testConvertFolderAndFile() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = UpdateLog()
        let s = try ImageConversion.convert(input: rsnaImages, output: dir.appendingPathComponent("out"),
                                            options: .init(size: 256, threads: 2), progress: { log.append($0) })
        XCTAssertEqual(s.converted, 12)
        XCTAssertEqual(log.count, 12)
        let id = "0004cfab-14fd-4e49-80ba-63a80b6bddd6"
        let png = try PNG.readGray(dir.appendingPathComponent("out/\(id).png"))
        XCTAssertEqual(png.width, 256)
        XCTAssertEqual(png, try DICOM.readGray(rsnaImages.appendingPathComponent("\(id).dcm")).resized(width: 256, height: 256))
        let again = try ImageConversion.convert(input: rsnaImages, output: dir.appendingPathComponent("out"))
        XCTAssertEqual(again.skippedExisting, 12)
        // One file, full size, to an explicit name.
        let one = try ImageConversion.convert(input: rsnaImages.appendingPathComponent("\(id).dcm"),
                                              output: dir.appendingPathComponent("one.png"))
        XCTAssertEqual(one.converted, 1)
        XCTAssertEqual(try PNG.readGray(dir.appendingPathComponent("one.png")),
                       try DICOM.readGray(rsnaImages.appendingPathComponent("\(id).dcm")))
        // The conformance folder: unsupported syntaxes and colour are failures with reasons.
        let conf = try ImageConversion.convert(input: conformance, output: dir.appendingPathComponent("conf"), options: .init(threads: 2))
        XCTAssertEqual(conf.converted, 8)  // JPEG Lossless and deflate read too
        XCTAssertEqual(conf.failures.count, 2)  // JPEG Extended (12-bit) and colour
        XCTAssertTrue(conf.description.contains("1.2.840.10008.1.2.4.51"))
        assertThrows(try ImageConversion.convert(input: dir.appendingPathComponent("none"), output: dir), containing: ["none"])
        assertThrows(try ImageConversion.convert(input: rsnaImages, output: dir, options: .init(size: 0)), containing: ["size"])
    }

    /// The terminal progress display: plain lines when not a terminal.
    func testProgressLines() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("log.txt")
        _ = FileManager.default.createFile(atPath: url.path, contents: nil)
        let h = try FileHandle(forWritingTo: url)
        let bar = TerminalProgressBar(label: "convert", output: h, isTTY: false)
        for i in 1...100 { bar.update(ProgressUpdate(done: i, total: 100, elapsed: Double(i) * 0.1)) }
        try h.close()
        let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 11)  // the first item, then every 10%
        XCTAssertEqual(lines.last, "convert: 100/100, done in 10.0s")
        XCTAssertTrue(lines[0].contains("left"))
        XCTAssertEqual(TerminalProgressBar.format(3725), "1h02m")
    }
}
