import Foundation
import OpacityData
import XCTest

/// Runs a command-line tool (DCMTK, OpenJPEG) and fails the test when it is missing or fails:
/// scripts/install-deps.sh installs them, so a missing tool is an error, not a skip.
@discardableResult
func runTool(_ tool: String, _ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> String {
    let (status, text) = try runValidator(tool, args, file: file, line: line)
    if status != 0 {
        XCTFail("\(tool) \(args.joined(separator: " ")) failed (\(status)); run scripts/install-deps.sh: \(text)", file: file, line: line)
        throw DataError.unreadableFile(path: tool, reason: text)
    }
    return text
}

/// The compressed transfer syntaxes against DCMTK (and OpenJPEG's own tools for JPEG 2000,
/// which DCMTK's free edition does not decode): equal stored pixels, bit for bit.
final class DICOMCodecTests: XCTestCase {
    let rsnaFile = rsnaImages.appendingPathComponent("0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm")

    func assertSamePixels(_ a: URL, _ b: URL, _ message: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let x = try DICOM.read(a), y = try DICOM.read(b)
        XCTAssertEqual(x.width, y.width, message, file: file, line: line)
        XCTAssertEqual(x.height, y.height, message, file: file, line: line)
        XCTAssertTrue(x.pixels == y.pixels, "\(message): pixels differ", file: file, line: line)
    }

    /// The conformance files in lossless JPEG and deflate decode as DCMTK decodes them.
    func testConformanceFilesMatchDCMTK() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let lossless = conformance.appendingPathComponent("JPGLosslessP14SV1_1s_1f_8b.dcm")
        try runTool("dcmdjpeg", [lossless.path, dir.appendingPathComponent("l.dcm").path])
        try assertSamePixels(lossless, dir.appendingPathComponent("l.dcm"), "JPGLosslessP14SV1")
        XCTAssertEqual(try DICOM.read(lossless).header.transferSyntax, .jpegLosslessSV1)
        let deflated = conformance.appendingPathComponent("image_dfl.dcm")
        try runTool("dcmconv", ["+te", deflated.path, dir.appendingPathComponent("d.dcm").path])
        try assertSamePixels(deflated, dir.appendingPathComponent("d.dcm"), "image_dfl")
        XCTAssertEqual(try DICOM.read(deflated).header.transferSyntax, .deflatedExplicitVRLittleEndian)
    }

    /// Files DCMTK encodes in JPEG Lossless (all seven predictors, a point transform) and RLE
    /// from 8-bit RSNA and 16-bit signed and unsigned images decode to the uncompressed pixels,
    /// and to DCMTK's own decode.
    func testDCMTKEncodedFilesDecodeBitExact() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let rsnaRaw = dir.appendingPathComponent("rsna.dcm")
        try runTool("dcmdjpeg", [rsnaFile.path, rsnaRaw.path])
        // JPEG Baseline (lossy, the RSNA files): libjpeg-turbo agrees with DCMTK's decoder within 1.
        let ours = try DICOM.read(rsnaFile).pixels.int32Values, theirs = try DICOM.read(rsnaRaw).pixels.int32Values
        XCTAssertEqual(ours.count, theirs.count)
        XCTAssertLessThanOrEqual(zip(ours, theirs).map { abs($0 - $1) }.max() ?? 99, 1, "JPEG Baseline vs dcmdjpeg")
        let sources = [rsnaRaw, conformance.appendingPathComponent("CT_small.dcm"), conformance.appendingPathComponent("MR_small.dcm"),
                       conformance.appendingPathComponent("RG1_UNCI.dcm")]
        var checked = 0
        for src in sources {
            let name = src.deletingPathExtension().lastPathComponent
            for sv in 1...7 where sv == 1 || src == sources[1] || src == sources[0] {
                let out = dir.appendingPathComponent("\(name)-sv\(sv).dcm")
                try runTool("dcmcjpeg", ["+el", "+sv", "\(sv)", src.path, out.path])
                XCTAssertEqual(try DICOM.readHeader(out).transferSyntax, .jpegLossless)
                try assertSamePixels(out, src, "\(name) predictor \(sv)")
                checked += 1
            }
            let sv1 = dir.appendingPathComponent("\(name)-e1.dcm")
            try runTool("dcmcjpeg", ["+e1", src.path, sv1.path])
            try assertSamePixels(sv1, src, "\(name) SV1")
            // A point transform is lossy by design: compare with DCMTK's decode.
            let pt = dir.appendingPathComponent("\(name)-pt.dcm"), ptBack = dir.appendingPathComponent("\(name)-pt-back.dcm")
            try runTool("dcmcjpeg", ["+el", "+sv", "4", "+pt", "2", src.path, pt.path])
            try runTool("dcmdjpeg", [pt.path, ptBack.path])
            try assertSamePixels(pt, ptBack, "\(name) point transform 2")
            let rle = dir.appendingPathComponent("\(name)-rle.dcm"), rleBack = dir.appendingPathComponent("\(name)-rle-back.dcm")
            try runTool("dcmcrle", [src.path, rle.path])
            XCTAssertEqual(try DICOM.readHeader(rle).transferSyntax, .rleLossless)
            try assertSamePixels(rle, src, "\(name) RLE")
            try runTool("dcmdrle", [rle.path, rleBack.path])
            try assertSamePixels(rle, rleBack, "\(name) RLE vs dcmdrle")
            checked += 4
        }
        XCTAssertEqual(checked, 7 + 7 + 1 + 1 + 16)
    }

    /// JPEG 2000: OpenJPEG's encoder (opj_compress) lossless gives back the exact pixels;
    /// lossy decodes within 1 of opj_decompress.
    func testJPEG2000() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let src = try DICOM.read(conformance.appendingPathComponent("CT_small.dcm"))
        guard case let .int16(values) = src.pixels else { return XCTFail("CT_small is signed 16-bit") }
        // CT_small's stored values are 128...2191: as unsigned 16-bit PGM.
        let pgm = dir.appendingPathComponent("ct.pgm")
        var d = Data("P5\n\(src.width) \(src.height)\n65535\n".utf8)
        for v in values { d.append(contentsOf: [UInt8(UInt16(v) >> 8), UInt8(UInt16(v) & 0xFF)]) }
        try d.write(to: pgm)
        for (label, extra, uid) in [("lossless", [String](), "1.2.840.10008.1.2.4.90"), ("lossy", ["-r", "10"], "1.2.840.10008.1.2.4.91")] {
            let j2k = dir.appendingPathComponent("\(label).j2k")
            try runTool("opj_compress", ["-i", pgm.path, "-o", j2k.path] + extra)
            let codestream = [UInt8](try Data(contentsOf: j2k))
            let dcm = dir.appendingPathComponent("\(label).dcm")
            try encapsulated(codestream, syntax: uid, rows: src.height, columns: src.width).write(to: dcm)
            let img = try DICOM.read(dcm)
            XCTAssertEqual(img.header.transferSyntax.uid, uid)
            guard case let .uint16(got) = img.pixels else { return XCTFail("\(label): expected unsigned 16-bit") }
            if label == "lossless" {
                XCTAssertEqual(got.map { Int16($0) }, values)
            } else {
                let back = dir.appendingPathComponent("back.pgm")
                try runTool("opj_decompress", ["-i", j2k.path, "-o", back.path])
                let b = [UInt8](try Data(contentsOf: back)).suffix(values.count * 2)
                let ref = stride(from: b.startIndex, to: b.endIndex, by: 2).map { Int(b[$0]) << 8 | Int(b[$0 + 1]) }
                let maxDiff = zip(got, ref).map { abs(Int($0) - $1) }.max() ?? 99
                XCTAssertLessThanOrEqual(maxDiff, 1)
                XCTAssertNotEqual(got.map { Int16($0) }, values, "lossy should differ somewhere")
            }
        }
        // A codestream claiming another size than the header is refused naming both.
        let j2k = [UInt8](try Data(contentsOf: dir.appendingPathComponent("lossless.j2k")))
        let wrong = dir.appendingPathComponent("wrong.dcm")
        try encapsulated(j2k, syntax: "1.2.840.10008.1.2.4.90", rows: 64, columns: 64).write(to: wrong)
        assertThrows(try DICOM.read(wrong), containing: ["wrong.dcm", "128x128", "64x64"])
    }

    /// Bad compressed data gives typed errors naming the file and the syntax.
    func testCorruptCompressedFramesFailCleanly() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        for (uid, name) in [("1.2.840.10008.1.2.4.70", "JPEG Lossless"), ("1.2.840.10008.1.2.5", "RLE"), ("1.2.840.10008.1.2.4.90", "JPEG 2000")] {
            var rng = SystemRandomNumberGenerator()
            for k in 0..<20 {
                let junk = (0..<(k * 37 + 70)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let url = dir.appendingPathComponent("junk\(k).dcm")
                try encapsulated(junk, syntax: uid, rows: 16, columns: 16).write(to: url)
                assertThrows(try DICOM.read(url), containing: ["junk\(k).dcm", name])
            }
        }
    }

    /// A 16-bit MONOCHROME2 file whose one frame is `frame`, encapsulated.
    func encapsulated(_ frame: [UInt8], syntax: String, rows: Int, columns: Int) -> Data {
        var f = DICOMBytes.file(syntax: syntax)
        f.us(0x0028, 0x0002, 1)
        f.element(0x0028, 0x0004, "CS", "MONOCHROME2")
        f.us(0x0028, 0x0010, UInt16(rows))
        f.us(0x0028, 0x0011, UInt16(columns))
        f.us(0x0028, 0x0100, 16)
        f.us(0x0028, 0x0101, 16)
        f.us(0x0028, 0x0102, 15)
        f.us(0x0028, 0x0103, 0)
        f.u16(0x7FE0); f.u16(0x0010); f.data.append(contentsOf: Array("OB".utf8)); f.u16(0); f.u32(0xFFFF_FFFF)
        f.u16(0xFFFE); f.u16(0xE000); f.u32(0)
        var body = frame
        if body.count % 2 == 1 { body.append(0) }
        f.u16(0xFFFE); f.u16(0xE000); f.u32(UInt32(body.count))
        f.data.append(contentsOf: body)
        f.u16(0xFFFE); f.u16(0xE0DD); f.u32(0)
        return f.data
    }
}
