import Foundation
import OpacityData
import XCTest

/// Small DICOM files built byte by byte, for inputs no writer would produce.
struct DICOMBytes {
    var data = Data()

    mutating func u16(_ v: UInt16) { data.append(contentsOf: [UInt8(v & 0xFF), UInt8(v >> 8)]) }
    mutating func u32(_ v: UInt32) { for s in [0, 8, 16, 24] { data.append(UInt8((v >> UInt32(s)) & 0xFF)) } }

    /// An explicit VR little-endian element.
    mutating func element(_ g: UInt16, _ e: UInt16, _ vr: String, _ value: [UInt8]) {
        var v = value
        if v.count % 2 == 1 { v.append(vr == "UI" || vr == "OB" ? 0 : 0x20) }
        u16(g); u16(e)
        data.append(contentsOf: Array(vr.utf8))
        if ["OB", "OW", "SQ", "UN", "UT"].contains(vr) { u16(0); u32(UInt32(v.count)) } else { u16(UInt16(v.count)) }
        data.append(contentsOf: v)
    }

    mutating func element(_ g: UInt16, _ e: UInt16, _ vr: String, _ text: String) { element(g, e, vr, Array(text.utf8)) }
    mutating func us(_ g: UInt16, _ e: UInt16, _ v: UInt16) { element(g, e, "US", [UInt8(v & 0xFF), UInt8(v >> 8)]) }

    /// Preamble, `DICM` and a file meta group naming `syntax`.
    static func file(syntax: String = "1.2.840.10008.1.2.1") -> DICOMBytes {
        var f = DICOMBytes()
        f.data.append(Data(count: 128))
        f.data.append(contentsOf: Array("DICM".utf8))
        var meta = DICOMBytes()
        meta.element(0x0002, 0x0001, "OB", [0, 1])
        meta.element(0x0002, 0x0010, "UI", syntax)
        f.element(0x0002, 0x0000, "UL", [UInt8(meta.data.count & 0xFF), UInt8(meta.data.count >> 8), 0, 0])
        f.data.append(meta.data)
        return f
    }

    /// An 8-bit MONOCHROME2 image header of `columns x rows` with `extra` elements
    /// (group 0028 elements, in tag order) and native pixel data of `pixelBytes` bytes.
    static func image(rows: UInt16 = 4, columns: UInt16 = 4, extra: [(UInt16, String, String)] = [], pixelBytes: Int? = nil) -> Data {
        var f = file()
        f.element(0x0010, 0x0020, "LO", "case")
        f.us(0x0028, 0x0002, 1)
        f.element(0x0028, 0x0004, "CS", "MONOCHROME2")
        for (e, vr, v) in extra where e < 0x0010 { f.element(0x0028, e, vr, v) }
        f.us(0x0028, 0x0010, rows)
        f.us(0x0028, 0x0011, columns)
        for (e, vr, v) in extra where e >= 0x0010 && e < 0x0100 { f.element(0x0028, e, vr, v) }
        f.us(0x0028, 0x0100, 8)
        f.us(0x0028, 0x0101, 8)
        f.us(0x0028, 0x0102, 7)
        f.us(0x0028, 0x0103, 0)
        for (e, vr, v) in extra where e >= 0x0100 { f.element(0x0028, e, vr, v) }
        let n = pixelBytes ?? Int(rows) * Int(columns)
        f.element(0x7FE0, 0x0010, "OB", (0..<n).map { UInt8($0 % 251) })
        return f.data
    }
}

/// The DICOM reader against hostile and odd-but-valid files (issue 11): non-finite and
/// absurd numbers, deep nesting, huge size claims, UN of undefined length, VR mismatches
/// and split JPEG fragments.
final class DICOMHostileInputTests: XCTestCase {
    let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/dicom")

    /// Every numeric header field that is non-finite or absurd is refused with the field and
    /// the file named, by the header reader, the decoder and the image reader alike.
    func testNonFiniteAndAbsurdNumbersAreRefusedNamingFieldAndFile() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [(UInt16, String, String, String)] = [
            (0x0008, "IS", "nan", "NumberOfFrames"), (0x0008, "IS", "inf", "NumberOfFrames"),
            (0x0008, "IS", "1e300", "NumberOfFrames"), (0x0008, "IS", "-3", "NumberOfFrames"), (0x0008, "IS", "2.5", "NumberOfFrames"),
            (0x1053, "DS", "nan", "RescaleSlope"), (0x1053, "DS", "1e300", "RescaleSlope"), (0x1053, "DS", "-infinity", "RescaleSlope"),
            (0x1052, "DS", "nan", "RescaleIntercept"), (0x1052, "DS", "1e300", "RescaleIntercept"),
            (0x1050, "DS", "nan", "WindowCenter"), (0x1050, "DS", "40\\nan", "WindowCenter"),
            (0x1051, "DS", "inf", "WindowWidth"), (0x1051, "DS", "abc", "WindowWidth"),
            (0x0030, "DS", "nan\\0.2", "PixelSpacing"), (0x0030, "DS", "0.2\\1e300", "PixelSpacing"),
        ]
        for (i, (element, vr, value, field)) in cases.enumerated() {
            let url = dir.appendingPathComponent("bad\(i).dcm")
            try DICOMBytes.image(extra: [(element, vr, value)]).write(to: url)
            let parts = ["bad\(i).dcm", field, "expected"]
            assertThrows(try DICOM.readHeader(url), containing: parts)
            assertThrows(try DICOM.read(url), containing: parts)
            assertThrows(try ImageFile.read(url), containing: parts)
        }
        // A long value is not echoed whole.
        let long = dir.appendingPathComponent("long.dcm")
        try DICOMBytes.image(extra: [(0x1053, "DS", String(repeating: "9", count: 5000))]).write(to: long)
        do {
            _ = try DICOM.read(long)
            XCTFail("expected an error")
        } catch { XCTAssertLessThan("\(error)".count, 400) }
        // Sane values still read; a zero spacing (met in RG1_UNCI.dcm) means unknown.
        let ok = dir.appendingPathComponent("ok.dcm")
        try DICOMBytes.image(extra: [(0x0008, "IS", "1"), (0x0030, "DS", "0.14\\0.15"), (0x1050, "DS", "40"), (0x1051, "DS", "400"),
                                     (0x1052, "DS", "-1024"), (0x1053, "DS", "2")]).write(to: ok)
        let h = try DICOM.readHeader(ok)
        XCTAssertEqual(h.pixelSpacing, [0.14, 0.15])
        XCTAssertEqual([h.windowCenter, h.windowWidth, h.rescaleIntercept, h.rescaleSlope], [40, 400, -1024, 2])
        XCTAssertNil(try DICOM.readHeader(conformance.appendingPathComponent("RG1_UNCI.dcm")).pixelSpacing)
    }

    /// An out-of-range number is said with its range as a user types numbers (`[-1e6, 1e6]`,
    /// not C's `-1e+06...1e+06`) and the nearest valid value; NaN and text get none.
    func testOutOfRangeNumbersNameTheRangeAndTheNearestValidValue() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [(UInt16, String, String)] = [
            (0x1053, "1e300", "RescaleSlope (0028,1053) is '1e300'; expected a finite number in [-1e6, 1e6] (nearest valid: 1e6)"),
            (0x1053, "-infinity", "RescaleSlope (0028,1053) is '-infinity'; expected a finite number in [-1e6, 1e6] (nearest valid: -1e6)"),
            (0x1052, "-2e7", "RescaleIntercept (0028,1052) is '-2e7'; expected a finite number in [-1e7, 1e7] (nearest valid: -1e7)"),
            (0x0030, "0.2\\20000", "PixelSpacing (0028,0030) is '20000'; expected a finite number in [0, 10000] (nearest valid: 10000)"),
            (0x1053, "nan", "RescaleSlope (0028,1053) is 'nan'; expected a finite number in [-1e6, 1e6]"),
            (0x1051, "abc", "WindowWidth (0028,1051) is 'abc'; expected a finite number in [-1e8, 1e8]"),
        ]
        for (i, (element, value, message)) in cases.enumerated() {
            let url = dir.appendingPathComponent("range\(i).dcm")
            try DICOMBytes.image(extra: [(element, "DS", value)]).write(to: url)
            do {
                _ = try DICOM.readHeader(url)
                XCTFail("\(value): expected an error")
            } catch {
                let text = "\(error)"
                XCTAssertTrue(text.contains(message), text)
                XCTAssertFalse(text.contains("e+"), text)
                if value == "nan" || value == "abc" { XCTAssertFalse(text.contains("nearest valid"), text) }
            }
        }
    }

    /// Values outside what the standard allows but that other readers read: a
    /// PixelRepresentation other than 0/1, a HighBit outside BitsStored-1...BitsAllocated-1 and a
    /// WindowWidth below 1 are read as those readers do, each with a warning naming the field.
    func testOutOfRangePixelModuleValuesWarn() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        func file(highBit: UInt16, representation: UInt16, width: String) -> Data {
            var f = DICOMBytes.file()
            f.element(0x0010, 0x0020, "LO", "case")
            f.us(0x0028, 0x0002, 1)
            f.element(0x0028, 0x0004, "CS", "MONOCHROME2")
            f.us(0x0028, 0x0010, 4)
            f.us(0x0028, 0x0011, 4)
            f.us(0x0028, 0x0100, 8)
            f.us(0x0028, 0x0101, 8)
            f.us(0x0028, 0x0102, highBit)
            f.us(0x0028, 0x0103, representation)
            f.element(0x0028, 0x1050, "DS", "40")
            f.element(0x0028, 0x1051, "DS", width)
            f.element(0x7FE0, 0x0010, "OB", (0..<16).map { UInt8($0 * 16) })
            return f.data
        }
        let good = dir.appendingPathComponent("good.dcm")
        try file(highBit: 7, representation: 0, width: "400").write(to: good)
        XCTAssertEqual(try DICOM.readHeader(good).warnings, [])
        for (i, (hb, pr, w, field)) in [(UInt16(40), UInt16(0), "400", "HighBit (0028,0102) is 40"), (7, 7, "400", "PixelRepresentation (0028,0103) is 7"),
                                        (7, 0, "0", "WindowWidth (0028,1051) is 0"), (7, 0, "-5", "WindowWidth (0028,1051) is -5")].enumerated() {
            let url = dir.appendingPathComponent("odd\(i).dcm")
            try file(highBit: hb, representation: pr, width: w).write(to: url)
            let h = try DICOM.readHeader(url)
            XCTAssertTrue(h.warnings.contains { $0.hasPrefix(field) && $0.contains("expected") }, "\(field): \(h.warnings)")
            XCTAssertFalse(h.isSigned)
            XCTAssertEqual(h.highBit, 7)
            // the pixels read as the valid file's (the window is ignored where its width is below 1)
            let img = try DICOM.read(url)
            XCTAssertEqual(img.width, 4)
        }
        XCTAssertEqual(try DICOM.read(dir.appendingPathComponent("odd0.dcm")).pixels, try DICOM.read(good).pixels)
    }

    /// The case files of shared/cases give typed errors, not traps.
    func testSharedCaseFilesGiveErrors() throws {
        let cases = realdata.deletingLastPathComponent().appendingPathComponent("cases")
        for (folder, file, field) in [("dicom-numberofframes-nan", "frames_nan.dcm", "NumberOfFrames"),
                                      ("dicom-numberofframes-1e300", "frames_1e300.dcm", "NumberOfFrames"),
                                      ("dicom-rescaleslope-nan", "slope_nan.dcm", "RescaleSlope"),
                                      ("dicom-rescaleslope-1e300", "slope_1e300.dcm", "RescaleSlope"),
                                      ("dicom-windowcenter-nan", "wc_nan.dcm", "WindowCenter")] {
            let url = cases.appendingPathComponent("\(folder)/\(file)")
            guard FileManager.default.fileExists(atPath: url.path) else { continue }
            assertThrows(try ImageFile.read(url), containing: [file, field])
        }
    }

    /// A training set with one NaN-slope DICOM: the header check reports it unreadable and
    /// the skip policy leaves it out (train --skip-unreadable).
    func testNaNDICOMIsSkippedByTheDatasetCheck() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let images = root.appendingPathComponent("stage_2_train_images")
        try FileManager.default.createDirectory(at: images, withIntermediateDirectories: true)
        try DICOMBytes.image().write(to: images.appendingPathComponent("good.dcm"))
        try DICOMBytes.image(extra: [(0x1053, "DS", "nan")]).write(to: images.appendingPathComponent("bad.dcm"))
        try "patientId,x,y,width,height,Target\ngood,,,,,0\nbad,,,,,0\n"
            .write(to: root.appendingPathComponent("stage_2_train_labels.csv"), atomically: true, encoding: .utf8)
        for check in [ImageCheck.header, .decode] {
            let ds = try RSNADataset.load(root: root, options: .init(problemImages: .skip, imageCheck: check))
            XCTAssertEqual(ds.records.map(\.id), ["good"])
            XCTAssertTrue(ds.report.unreadableImages["bad"]?.contains("RescaleSlope") ?? false)
            assertThrows(try RSNADataset.load(root: root, options: .init(problemImages: .fail, imageCheck: check)), containing: ["bad", "RescaleSlope"])
        }
    }

    /// 80,000 nested undefined-length items give a clear error (no stack overflow); nesting
    /// within the limit, in a private UN sequence too, reads.
    func testDeepNestingIsRefusedAndModerateNestingReads() throws {
        func nested(_ depth: Int, un: Bool) -> Data {
            var f = DICOMBytes.file()
            f.element(0x0009, 0x0010, "LO", "ACME")
            f.u16(0x0009); f.u16(0x1001); f.data.append(contentsOf: Array((un ? "UN" : "SQ").utf8)); f.u16(0); f.u32(0xFFFF_FFFF)
            for _ in 0..<depth {  // item, then a sequence element inside it, ...
                f.u16(0xFFFE); f.u16(0xE000); f.u32(0xFFFF_FFFF)
                if un {
                    f.u16(0x0009); f.u16(0x1002); f.u32(0xFFFF_FFFF)  // implicit VR inside UN
                } else {
                    f.u16(0x0009); f.u16(0x1002); f.data.append(contentsOf: Array("SQ".utf8)); f.u16(0); f.u32(0xFFFF_FFFF)
                }
            }
            for _ in 0..<depth {
                f.u16(0xFFFE); f.u16(0xE0DD); f.u32(0)
                f.u16(0xFFFE); f.u16(0xE00D); f.u32(0)
            }
            f.u16(0xFFFE); f.u16(0xE0DD); f.u32(0)
            var tail = DICOMBytes.image()
            tail.removeSubrange(0..<DICOMBytes.file().data.count)  // drop preamble and meta of the image part
            var d = f.data
            d.append(tail)
            return d
        }
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        for un in [false, true] {
            let deep = dir.appendingPathComponent("deep.dcm"), shallow = dir.appendingPathComponent("shallow.dcm")
            try nested(80_000, un: un).write(to: deep)
            try nested(20, un: un).write(to: shallow)
            assertThrows(try DICOM.read(deep), containing: ["deep.dcm", "nested", "64"])
            assertThrows(try DICOM.readHeader(deep), containing: ["deep.dcm", "nested"])
            XCTAssertEqual(try DICOM.read(shallow).pixels.count, 16, "un: \(un)")
        }
        let shared = realdata.deletingLastPathComponent().appendingPathComponent("cases/dicom-nested-items-stack-overflow/deep_items_80000.dcm")
        if FileManager.default.fileExists(atPath: shared.path) {
            assertThrows(try ImageFile.read(shared), containing: ["deep_items_80000.dcm", "nested"])
        }
    }

    /// Size claims beyond the limit or the file are refused before allocating.
    func testHugeSizeClaimsAreRefusedBeforeAllocation() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let huge = dir.appendingPathComponent("huge.dcm")
        try DICOMBytes.image(rows: 65535, columns: 65535, pixelBytes: 64).write(to: huge)
        assertThrows(try DICOM.read(huge), containing: ["huge.dcm", "65535x65535", "\(DICOM.maxPixels)"])
        XCTAssertEqual(try DICOM.readHeader(huge).rows, 65535)
        // Within the pixel limit but beyond the data: refused naming the sizes.
        let short = dir.appendingPathComponent("short.dcm")
        try DICOMBytes.image(rows: 4096, columns: 4096, pixelBytes: 100).write(to: short)
        assertThrows(try DICOM.read(short), containing: ["short.dcm", "4096x4096", "needs"])
        // Frames: the last declared frame beyond the data, and a frame beyond NumberOfFrames.
        let frames = dir.appendingPathComponent("frames.dcm")
        try DICOMBytes.image(extra: [(0x0008, "IS", "1000")], pixelBytes: 32).write(to: frames)
        XCTAssertEqual(try DICOM.read(frames, frame: 2).pixels.count, 16)
        assertThrows(try DICOM.read(frames, frame: 1000), containing: ["frames.dcm", "frame 1000", "needs"])
        assertThrows(try DICOM.read(frames, frame: 1001), containing: ["frames.dcm", "1...1000"])
        assertThrows(try DICOM.read(frames, frame: 0), containing: ["frame", "1...1000"])
    }

    /// A private UN element of undefined length (implicit VR content) reads like the control.
    func testUNOfUndefinedLengthIsReadAsImplicitVR() throws {
        let a = try DICOM.read(fixtures.appendingPathComponent("control.dcm"))
        let b = try DICOM.read(fixtures.appendingPathComponent("un_undefined.dcm"))
        XCTAssertEqual(a.pixels, b.pixels)
        XCTAssertEqual(b.pixels.int32Values.reduce(0) { $0 + Int($1) }, 343_770)  // pydicom's sum
    }

    /// A transfer syntax that contradicts the data set's VR encoding: read with the encoding
    /// used, with a warning, the same pixels as the control.
    func testVRMismatchFallsBackWithAWarning() throws {
        let control = try DICOM.read(fixtures.appendingPathComponent("control_MR_small_implicit.dcm"))
        XCTAssertTrue(control.header.warnings.isEmpty)
        XCTAssertEqual(control.pixels.int32Values.reduce(0) { $0 + Int($1) }, 2_125_338)  // pydicom's sum
        for (file, says, found) in [("meta_explicit_data_implicit.dcm", "explicit", "implicit"),
                                    ("meta_implicit_data_explicit.dcm", "implicit", "explicit")] {
            let img = try DICOM.read(fixtures.appendingPathComponent(file))
            XCTAssertEqual(img.pixels, control.pixels, file)
            XCTAssertEqual(img.header.warnings.count, 1, file)
            XCTAssertTrue(img.header.warnings.first?.contains("says \(says) VR") ?? false, file)
            XCTAssertTrue(img.header.warnings.first?.contains("read as \(found) VR") ?? false, file)
        }
    }

    /// A single-frame JPEG split over two fragments, the second starting with FF D8: all
    /// fragments are the frame.
    func testSingleFrameFragmentsAreConcatenated() throws {
        let one = try DICOM.read(fixtures.appendingPathComponent("one_fragment.dcm"))
        let two = try DICOM.read(fixtures.appendingPathComponent("two_fragments.dcm"))
        XCTAssertEqual(one.pixels, two.pixels)
        XCTAssertEqual(two.pixels.int32Values.reduce(0) { $0 + Int($1) }, 343_770)  // pydicom's sum
    }
}
