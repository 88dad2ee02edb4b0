import Foundation
import OpacityData
import XCTest

/// Full bit depth from file to model input (issue 16): rescale, window, MONOCHROME1, Float
/// `[0, 1]` with no 8-bit step; 16-bit PNG out; frames.
final class DICOMDepthTests: XCTestCase {
    /// 16-bit CT and CR files reach `[0, 1]` with far more than 256 levels, agreeing with the
    /// 8-bit display image to within one level; MONOCHROME1 is `1 - x`.
    func testFloatImageKeepsFullDepth() throws {
        let ct = try DICOM.read(conformance.appendingPathComponent("CT_small.dcm"))
        let window = WindowSetting.fixed(center: 40, width: 400)
        let f = ct.floatImage(window: window)
        XCTAssertGreaterThan(Set(f.pixels).count, 256)
        XCTAssertTrue(f.pixels.allSatisfy { $0 >= 0 && $0 <= 1 })
        let d = ct.displayImage(window: window)
        XCTAssertLessThanOrEqual(zip(f.to8Bit().pixels, d.pixels).map { abs(Int($0) - Int($1)) }.max()!, 1)
        // The linear VOI function by hand for one pixel: stored * 1 - 1024, center 40, width 400.
        let v = Float(ct.pixels.int32Values[1000]) - 1024
        XCTAssertEqual(f.pixels[1000], min(max((v - 39.5) / 399 + 0.5, 0), 1), accuracy: 1e-6)
        guard case .float = ct.sourceImage() else { return XCTFail("16-bit CT must stay full depth") }

        let cr = try DICOM.read(conformance.appendingPathComponent("RG1_UNCI.dcm"))
        XCTAssertEqual(cr.header.photometricInterpretation, "MONOCHROME1")
        var upright = cr
        upright.header.photometricInterpretation = "MONOCHROME2"
        let a = cr.floatImage().pixels, b = upright.floatImage().pixels
        XCTAssertEqual(a.count, b.count)
        XCTAssertEqual(zip(a, b).map { abs($0 - (1 - $1)) }.max()!, 0, accuracy: 1e-6)
        XCTAssertGreaterThan(Set(a).count, 256)
    }

    /// 8-bit identity files (RSNA) stay exactly `pixel / 255`, and through the loader's
    /// augmenter the full-depth path of such an image equals the 8-bit path.
    func testEightBitFilesAreUnchanged() throws {
        let url = rsnaImages.appendingPathComponent("0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm")
        let img = try DICOM.read(url)
        XCTAssertEqual(img.floatImage(), img.displayImage().toFloat())
        XCTAssertEqual(try ImageFile.readSource(url), .gray(try ImageFile.read(url)))
        let gray = img.displayImage()
        let aug = Augmenter(config: .none, outputSize: 700)  // no block averaging: one warp
        var r1 = RandomGenerator(seed: 1), r2 = RandomGenerator(seed: 1)
        let x = aug.apply(.gray(gray), boxes: [], using: &r1).image.pixels
        let y = aug.apply(.float(gray.toFloat()), boxes: [], using: &r2).image.pixels
        XCTAssertEqual(zip(x, y).map { abs($0 - $1) }.max()!, 0, accuracy: 1e-5)
    }

    /// A 16-bit PNG is read as value / 65535; `convert --depth 16` writes the full-depth value
    /// (x 65535), `--depth 8` the display image as before.
    func testSixteenBitPNGInAndOut() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let g16 = GrayImage16(width: 3, height: 1, pixels: [0, 1000, 65535])
        try PNG.write(g16, to: dir.appendingPathComponent("g.png"))
        guard case let .float(f) = try ImageFile.readSource(dir.appendingPathComponent("g.png")) else { return XCTFail("16-bit PNG is full depth") }
        XCTAssertEqual(f.pixels, [0, Float(1000) / 65535, 1])

        let ct = conformance.appendingPathComponent("CT_small.dcm")
        var o = ImageConversion.Options(threads: 1)
        o.depth = 16
        _ = try ImageConversion.convert(input: ct, output: dir.appendingPathComponent("ct16.png"), options: o)
        guard case let .gray16(png) = try PNG.read(dir.appendingPathComponent("ct16.png")) else { return XCTFail("expected 16-bit PNG") }
        let full = try DICOM.read(ct).floatImage().pixels.map { UInt16($0 * 65535 + 0.5) }
        XCTAssertEqual(png.pixels, full)
        XCTAssertGreaterThan(Set(png.pixels).count, 256)
        o.depth = 8
        _ = try ImageConversion.convert(input: ct, output: dir.appendingPathComponent("ct8.png"), options: o)
        XCTAssertEqual(try PNG.readGray(dir.appendingPathComponent("ct8.png")), try DICOM.read(ct).displayImage())
        o.depth = 12
        assertThrows(try ImageConversion.convert(input: ct, output: dir.appendingPathComponent("x.png"), options: o), containing: ["depth", "8 or 16"])
    }

    /// Multi-frame: native frames and RLE frames made by DCMTK from them; frame 1 by default.
    func testFrames() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        var f = DICOMBytes.file()
        f.element(0x0008, 0x0016, "UI", "1.2.840.10008.5.1.4.1.1.7.2")
        f.element(0x0008, 0x0018, "UI", "2.25.1234")
        f.element(0x0010, 0x0020, "LO", "frames")
        f.us(0x0028, 0x0002, 1)
        f.element(0x0028, 0x0004, "CS", "MONOCHROME2")
        f.element(0x0028, 0x0008, "IS", "3")
        f.us(0x0028, 0x0010, 8)
        f.us(0x0028, 0x0011, 8)
        f.us(0x0028, 0x0100, 16)
        f.us(0x0028, 0x0101, 12)
        f.us(0x0028, 0x0102, 11)
        f.us(0x0028, 0x0103, 0)
        var px: [UInt8] = []
        for k in 0..<3 { for i in 0..<64 { let v = UInt16(k * 1000 + i * 7); px += [UInt8(v & 0xFF), UInt8(v >> 8)] } }
        f.element(0x7FE0, 0x0010, "OW", px)
        let native = dir.appendingPathComponent("native.dcm")
        try f.data.write(to: native)
        XCTAssertEqual(try DICOM.read(native).pixels, .uint16((0..<64).map { UInt16($0 * 7) }))
        XCTAssertEqual(try DICOM.read(native, frame: 3).pixels, .uint16((0..<64).map { UInt16(2000 + $0 * 7) }))
        let rle = dir.appendingPathComponent("rle.dcm")
        try runTool("dcmcrle", [native.path, rle.path])
        for k in 1...3 { XCTAssertEqual(try DICOM.read(rle, frame: k).pixels, try DICOM.read(native, frame: k).pixels, "frame \(k)") }
        assertThrows(try DICOM.read(rle, frame: 4), containing: ["rle.dcm", "1...3"])
        let j = dir.appendingPathComponent("jpeg.dcm")
        try runTool("dcmcjpeg", ["+e1", native.path, j.path])
        for k in 1...3 { XCTAssertEqual(try DICOM.read(j, frame: k).pixels, try DICOM.read(native, frame: k).pixels, "JPEG frame \(k)") }
    }
}
