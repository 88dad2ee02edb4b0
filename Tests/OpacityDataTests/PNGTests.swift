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
