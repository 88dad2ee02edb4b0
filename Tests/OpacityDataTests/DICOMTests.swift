import Foundation
import OpacityData
import XCTest

final class DICOMTests: XCTestCase {
    struct ManifestEntry: Decodable {
        var file: String
        var transfer_syntax: String
        var has_preamble: Bool
        var Rows: Int
        var Columns: Int
        var BitsAllocated: Int
        var BitsStored: Int
        var HighBit: Int
        var PixelRepresentation: Int
        var SamplesPerPixel: Int
        var PhotometricInterpretation: String
        var RescaleSlope: Double?
        var RescaleIntercept: Double?
        var WindowCenter: Double?
        var WindowWidth: Double?
        var decoded_sha256_little_endian: String
        var decoded_min: Int
        var decoded_max: Int
        var decoded_mean: Double
        var first_8_values: [Int]
    }

    func manifest() throws -> [ManifestEntry] {
        let data = try Data(contentsOf: conformance.appendingPathComponent("manifest.json"))
        return try JSONDecoder().decode([ManifestEntry].self, from: data)
    }

    static let supportedFiles = ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
                                 "RG1_UNCI.dcm", "vlut_04.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "image_dfl.dcm"]

    /// Every decodable conformance file matches pydicom's decode bit for bit.
    func testConformanceFilesMatchManifest() throws {
        let entries = try manifest()
        var checked = 0
        for e in entries where Self.supportedFiles.contains(e.file) {
            let img = try DICOM.read(conformance.appendingPathComponent(e.file))
            let h = img.header
            XCTAssertEqual(h.transferSyntax.uid, e.transfer_syntax, e.file)
            XCTAssertEqual(h.hasPreamble, e.has_preamble, e.file)
            XCTAssertEqual([h.rows, h.columns, h.bitsAllocated, h.bitsStored, h.highBit, h.pixelRepresentation, h.samplesPerPixel],
                           [e.Rows, e.Columns, e.BitsAllocated, e.BitsStored, e.HighBit, e.PixelRepresentation, e.SamplesPerPixel], e.file)
            XCTAssertEqual(h.photometricInterpretation, e.PhotometricInterpretation, e.file)
            if let s = e.RescaleSlope { XCTAssertEqual(h.rescaleSlope, s, e.file) }
            if let b = e.RescaleIntercept { XCTAssertEqual(h.rescaleIntercept, b, e.file) }
            if let c = e.WindowCenter { XCTAssertEqual(h.windowCenter, c, e.file) }
            if let w = e.WindowWidth { XCTAssertEqual(h.windowWidth, w, e.file) }
            let values = img.pixels.int32Values
            XCTAssertEqual(values.count, e.Rows * e.Columns, e.file)
            XCTAssertEqual(Array(values.prefix(8)).map(Int.init), e.first_8_values, e.file)
            XCTAssertEqual(Int(values.min()!), e.decoded_min, e.file)
            XCTAssertEqual(Int(values.max()!), e.decoded_max, e.file)
            let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
            XCTAssertEqual(mean, e.decoded_mean, accuracy: 1e-4, e.file)
            XCTAssertEqual(sha256Hex(img.pixels.littleEndianBytes), e.decoded_sha256_little_endian, e.file)
            checked += 1
        }
        XCTAssertEqual(checked, Self.supportedFiles.count)
    }

    /// Implicit LE, explicit LE and explicit BE hold the same image.
    func testThreeByteOrdersAgree() throws {
        let a = try DICOM.read(conformance.appendingPathComponent("MR_small.dcm")).pixels
        let b = try DICOM.read(conformance.appendingPathComponent("MR_small_implicit.dcm")).pixels
        let c = try DICOM.read(conformance.appendingPathComponent("MR_small_bigendian.dcm")).pixels
        XCTAssertEqual(a, b)
        XCTAssertEqual(a, c)
        guard case .int16 = a else { return XCTFail("MR_small is signed 16-bit") }
    }

    /// Unsupported transfer syntaxes fail naming the file and the syntax.
    func testUnsupportedSyntaxesAreRefused() {
        let cases = [("JPGExtended.dcm", "1.2.840.10008.1.2.4.51", "JPEG Extended")]
        for (file, uid, name) in cases {
            let url = conformance.appendingPathComponent(file)
            assertThrows(try DICOM.read(url), containing: [file, uid, name])
            assertThrows(try ImageFile.read(url), containing: [file, uid])
            do {
                _ = try DICOM.read(url)
            } catch let e as DataError {
                guard case .unsupportedTransferSyntax = e else { return XCTFail("\(file): wrong error \(e)") }
            } catch { XCTFail("\(error)") }
        }
    }

    /// Colour images fail naming the file, the colour model and the syntax.
    func testColourIsRefused() {
        let url = conformance.appendingPathComponent("SC_rgb_small_odd.dcm")
        assertThrows(try DICOM.read(url), containing: ["SC_rgb_small_odd.dcm", "RGB", "1.2.840.10008.1.2.1", "grayscale"])
        // The header alone is fine.
        XCTAssertEqual(try DICOM.readHeader(url).samplesPerPixel, 3)
    }

    /// MONOCHROME1 is inverted after windowing: the header window 15000/30000 maps the first
    /// stored value 18876 to round(((18876 - 14999.5) / 29999 + 0.5) * 255) = 160, shown as 95.
    func testMonochrome1InversionAndWindow() throws {
        let img = try DICOM.read(conformance.appendingPathComponent("RG1_UNCI.dcm"))
        XCTAssertTrue(img.header.isInverted)
        let display = img.displayImage()
        XCTAssertEqual(display.width, 1841)
        XCTAssertEqual(display.height, 1955)
        XCTAssertEqual(display.pixels[0], 95)
        // Min-max window: the maximum stored value becomes black after inversion.
        let mm = img.displayImage(window: .minMax)
        let values = img.pixels.int32Values
        let iMax = values.firstIndex(of: values.max()!)!, iMin = values.firstIndex(of: values.min()!)!
        XCTAssertEqual(mm.pixels[iMax], 0)
        XCTAssertEqual(mm.pixels[iMin], 255)
    }

    /// Rescale slope/intercept give modality units (CT: HU = stored - 1024).
    func testRescale() throws {
        let img = try DICOM.read(conformance.appendingPathComponent("CT_small.dcm"))
        XCTAssertEqual(img.modalityValues()[0], 175 - 1024)
        let fixed = img.displayImage(window: .fixed(center: -849 + 0.5, width: 2))
        XCTAssertEqual(fixed.pixels[0], 128)  // exactly the window centre
        // 8-bit data without rescale or window keeps its values.
        let v = try DICOM.read(conformance.appendingPathComponent("vlut_04.dcm"))
        guard case let .uint8(raw) = v.pixels else { return XCTFail("vlut_04 is 8-bit") }
        XCTAssertEqual(v.displayImage().pixels, raw)
    }

    /// The RSNA DICOMs (JPEG Baseline in one fragment) decode to the reference decoders'
    /// pixels within +-1.
    func testRSNAPixelsMatchReferencePNGs() throws {
        for id in ["0004cfab-14fd-4e49-80ba-63a80b6bddd6", "00436515-870c-4b36-a041-de91049b9ab4"] {
            let img = try DICOM.readGray(rsnaImages.appendingPathComponent("\(id).dcm"))
            XCTAssertEqual(img.width, 1024)
            XCTAssertEqual(img.height, 1024)
            for decoder in ["libjpeg", "libjpeg-turbo"] {
                let ref = try PNG.readGray(rsnaFolder.appendingPathComponent("decoded_reference/\(id).\(decoder).png"))
                XCTAssertEqual(ref.width, 1024)
                var maxDiff = 0, differ = 0
                for i in 0..<ref.pixels.count {
                    let d = abs(Int(ref.pixels[i]) - Int(img.pixels[i]))
                    maxDiff = max(maxDiff, d)
                    if d > 0 { differ += 1 }
                }
                XCTAssertLessThanOrEqual(maxDiff, 1, "\(id) vs \(decoder)")
                XCTAssertLessThan(Double(differ) / Double(ref.pixels.count), 0.05, "\(id) vs \(decoder)")
            }
            // The bare codestream decodes the same way.
            let jpeg = try Data(contentsOf: rsnaFolder.appendingPathComponent("decoded_reference/\(id).jpg"))
            XCTAssertEqual(try JPEG.decodeGray(jpeg).pixels, img.pixels)
        }
    }

    /// All 12 RSNA files: header fields and pixel statistics against the reference manifest.
    func testAllRSNAFilesAgainstManifest() throws {
        let text = try String(contentsOf: rsnaFolder.appendingPathComponent("decoded_reference/manifest.csv"), encoding: .utf8)
        let lines = text.components(separatedBy: .newlines).filter { !$0.isEmpty }.map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        let header = lines[0]
        func col(_ name: String) -> Int { header.firstIndex(of: name)! }
        XCTAssertEqual(lines.count - 1, 12)
        for row in lines.dropFirst() {
            let url = rsnaImages.appendingPathComponent(row[col("file")])
            let img = try DICOM.read(url)
            XCTAssertEqual(img.header.transferSyntax, .jpegBaseline)
            XCTAssertEqual(img.header.photometricInterpretation, row[col("photometric")])
            XCTAssertEqual(img.header.viewPosition, row[col("view_position")])
            XCTAssertEqual(img.header.patientID, String(row[col("file")].dropLast(4)))
            let g = img.displayImage()
            // libjpeg-turbo's accurate IDCT gives exactly Pillow's (libjpeg-turbo) pixels.
            XCTAssertEqual(sha256Hex(g.pixels), row[col("libjpegturbo_decoded_sha256")], url.lastPathComponent)
            let mean = g.pixels.reduce(0.0) { $0 + Double($1) } / Double(g.pixels.count)
            XCTAssertEqual(mean, Double(row[col("libjpegturbo_mean")])!, accuracy: 0.05, url.lastPathComponent)
            for (name, r, c) in [("px_r0c0", 0, 0), ("px_r512c512", 512, 512), ("px_r1023c1023", 1023, 1023)] {
                XCTAssertLessThanOrEqual(abs(Int(g[c, r]) - Int(row[col(name)])!), 1, "\(url.lastPathComponent) \(name)")
            }
        }
    }

    /// Broken inputs: not DICOM, truncated, missing file; each error names the file.
    func testErrorPaths() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        // A PNG is not DICOM.
        let png = realdata.appendingPathComponent("nih/00000001_000.png")
        assertThrows(try DICOM.read(png), containing: ["00000001_000.png", "DICM"])
        // Truncated JPEG inside a real RSNA file.
        let full = try Data(contentsOf: rsnaImages.appendingPathComponent("0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm"))
        let cut = dir.appendingPathComponent("cut.dcm")
        try full.prefix(full.count / 2).write(to: cut)
        assertThrows(try DICOM.read(cut), containing: ["cut.dcm"])
        // Truncated header.
        let cut2 = dir.appendingPathComponent("cut2.dcm")
        try full.prefix(300).write(to: cut2)
        assertThrows(try DICOM.read(cut2), containing: ["cut2.dcm"])
        // Missing file.
        assertThrows(try DICOM.read(dir.appendingPathComponent("nope.dcm")), containing: ["nope.dcm"])
        // Unknown format.
        let txt = dir.appendingPathComponent("notes.txt")
        try Data("hello".utf8).write(to: txt)
        assertThrows(try ImageFile.read(txt), containing: ["notes.txt", "DICOM"])
        // Corrupted JPEG data (bytes in the middle of the entropy-coded segment zeroed
        // do not always fail, so corrupt the SOF marker instead).
        var bad = [UInt8](full)
        if let sof = (0..<(bad.count - 1)).first(where: { bad[$0] == 0xFF && bad[$0 + 1] == 0xC0 }) { bad[sof + 1] = 0xC3 }
        let badURL = dir.appendingPathComponent("sof3.dcm")
        try Data(bad).write(to: badURL)
        assertThrows(try DICOM.read(badURL), containing: ["sof3.dcm", "JPEG"])
    }

    /// A real RSNA file (JPEG Baseline: Pixel Data at byte 1022, its one fragment item at 1042
    /// declaring 141990 bytes) cut short at points in the preamble, the file meta, the data
    /// set, an element header and the pixel data: each error says the file is truncated,
    /// names the file, the byte where the data ends, the element (tag) it ends in with the
    /// element's offset, and the bytes that element declared (new-user trial: a cut file was
    /// "a bad element length").
    func testTruncatedFileIsSaidToBeTruncated() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let full = try Data(contentsOf: rsnaImages.appendingPathComponent("0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm"))
        XCTAssertEqual(full.count, 143_048)
        let cases: [(cut: Int, expected: String)] = [
            (100, "its data ends at byte 100, inside the 128-byte preamble, before the 'DICM' prefix at byte 128"),
            (
                200,
                "its data ends at byte 200, inside element (0002,0003) Media Storage SOP Instance UID at byte 192, which declared 56 bytes of value (0 present, 56 missing)"
            ),
            (576, "its data ends at byte 576, inside element (0010,0010) Patient's Name at byte 550, which declared 36 bytes of value (18 present, 18 missing)"),
            (859, "its data ends at byte 859, inside the header of element (0028,0002) at byte 854, before its length (5 of the header's 8 bytes present)"),
            (1028, "its data ends at byte 1028, inside the header of element (7FE0,0010) Pixel Data at byte 1022, before its length (6 of the header's 12 bytes present)"),
            (
                70_000,
                "its data ends at byte 70000, inside element (FFFE,E000) Item at byte 1042 in (7FE0,0010) Pixel Data (encapsulated), which declared 141990 bytes of value (68950 present, 73040 missing)"
            ),
            (143_040, "its data ends at byte 143040 in (7FE0,0010) Pixel Data (encapsulated), where another element or item was expected"),
        ]
        for (cut, expected) in cases {
            let url = dir.appendingPathComponent("cut\(cut).dcm")
            try full.prefix(cut).write(to: url)
            assertThrows(try DICOM.read(url), containing: [url.path, "the file is truncated: " + expected])
            // the header alone of a file cut in its pixel data still reads
            if cut > 1028 { XCTAssertNoThrow(try DICOM.readHeader(url)) }
        }
        // a file whose data set ends at an element boundary before Pixel Data
        let url = dir.appendingPathComponent("boundary.dcm")
        try full.prefix(1022).write(to: url)
        assertThrows(
            try DICOM.read(url),
            containing: ["boundary.dcm", "no Pixel Data element (7FE0,0010): the data ends at byte 1022, right after element", "the file is truncated or holds no image"])
    }

    /// Files we write read back: uncompressed and JPEG Baseline.
    func testWriteRoundTrip() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        var pixels = [UInt8](repeating: 0, count: 64 * 48)
        for i in 0..<pixels.count { pixels[i] = UInt8((i * 7) % 256) }
        let img = GrayImage(width: 64, height: 48, pixels: pixels)
        let a = dir.appendingPathComponent("a.dcm")
        try DICOM.write(img, patientID: "P1", to: a)
        let back = try DICOM.read(a)
        XCTAssertEqual(back.header.patientID, "P1")
        XCTAssertEqual(back.displayImage(), img)
        let b = dir.appendingPathComponent("b.dcm")
        let smooth = GrayImage(width: 64, height: 48, pixels: (0..<(64 * 48)).map { UInt8(($0 % 64) * 3) })
        try DICOM.write(smooth, patientID: "P2", jpegQuality: 100, to: b)
        let back2 = try DICOM.read(b)
        XCTAssertEqual(back2.header.transferSyntax, .jpegBaseline)
        let diff = zip(back2.displayImage().pixels, smooth.pixels).map { abs(Int($0) - Int($1)) }.max()!
        XCTAssertLessThanOrEqual(diff, 3)
    }
}

final class DICOMRobustnessTests: XCTestCase {
    /// Truncated and corrupted files never crash the reader: each read either succeeds or
    /// throws a DataError naming the file.
    func testTruncationsAndCorruptionsFailCleanly() throws {
        let files = ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "SC_rgb_small_odd.dcm", "vlut_04.dcm"]
            .map { conformance.appendingPathComponent($0) }
            + [rsnaImages.appendingPathComponent("00436515-870c-4b36-a041-de91049b9ab4.dcm")]
        var rng = RandomGenerator(seed: 99)
        var errors = 0, reads = 0
        for url in files {
            let data = try Data(contentsOf: url)
            var variants: [Data] = []
            for _ in 0..<60 { variants.append(data.prefix(Int.random(in: 0..<data.count, using: &rng))) }
            for _ in 0..<60 {
                var d = [UInt8](data)
                // Corrupt the header region (where lengths and tags live) more than the pixels.
                for _ in 0..<4 { d[Int.random(in: 0..<min(d.count, 2048), using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
                variants.append(Data(d))
            }
            for v in variants {
                do {
                    _ = try DICOM.decode(v, path: "fuzz-\(url.lastPathComponent)")
                    reads += 1
                } catch let e as DataError {
                    errors += 1
                    XCTAssertTrue(e.description.contains("fuzz-\(url.lastPathComponent)"), e.description)
                }
            }
        }
        XCTAssertGreaterThan(errors, 100)
        _ = reads
    }
}
