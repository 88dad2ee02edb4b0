import Foundation
import OpacityCore
import OpacityData
import OpacityPersistence
import XCTest

/// The data layer's side of the robustness cases (../shared/cases): CSV through CSV.swift
/// with bounded lines and short errors, dotted image ids, augmentation ranges, PNG size.
final class CSVRobustnessTests: XCTestCase {
    func testQuotesBOMAndCRLFReadLikeRFC4180() throws {
        // the case quoted-submission/excel_style.csv: BOM, every field quoted, CRLF
        let bytes: [UInt8] = [0xEF, 0xBB, 0xBF] + Array("\"patientId\",\"PredictionString\"\r\n\"A\",\"0.9 100 100 200 200\"\r\n\"B\",\"\"\r\n".utf8)
        let t = try CSVTable(data: Data(bytes), path: "excel_style.csv")
        XCTAssertEqual(t.header, ["patientId", "PredictionString"])
        XCTAssertEqual(t.rows.map(\.fields), [["A", "0.9 100 100 200 200"], ["B", ""]])
        XCTAssertEqual(t.rows.map(\.line), [2, 3])
    }

    func testLineNumbersCountBreaksInsideQuotesAndBlankLines() throws {
        let t = try CSVTable(data: Data("a,b\n1,\"x\ny\"\n\n2,z\n".utf8), path: "t.csv")
        XCTAssertEqual(t.rows.map(\.fields), [["1", "x\ny"], ["2", "z"]])
        XCTAssertEqual(t.rows.map(\.line), [2, 5])
    }

    func testUnterminatedQuoteIsRefusedWithItsLine() {
        XCTAssertThrowsError(try CSVTable(data: Data("a,b\n1,2\n3,\"oops\n".utf8), path: "q.csv")) { e in
            guard case let DataError.csvValue(_, line, _, _, expected, _) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(line, 3)
            XCTAssertEqual(expected, "a closing quote")
        }
    }

    /// Case csv-100mb-line-echoed: an over-long line is refused before parsing, and no error
    /// quotes more than 80 characters of a value.
    func testLongLineIsRefusedAndNeverEchoed() {
        let long = String(repeating: "b", count: InputLimits.csvLineBytes + 10)
        let text = "patientId,x,y,width,height,Target\n" + long + "\n"
        XCTAssertThrowsError(try CSVTable(data: Data(text.utf8), path: "labels.csv")) { e in
            let message = "\(e)"
            XCTAssertLessThan(message.utf8.count, 400, message)
            XCTAssertTrue(message.contains("line 2"), message)
            XCTAssertTrue(message.contains("\(InputLimits.csvLineBytes) bytes"), message)
            // in plain words: the limit, the fields found and those expected, no '(a line of ...)' as a value
            XCTAssertEqual(
                message,
                "'labels.csv' line 2: too long: more than 1048576 bytes (1 MiB, the most one line may have), with 1 field in its first 1048576 bytes; "
                    + "expected a row of 6 fields separated by commas, like the header on line 1")
        }
        // the header itself too long: what a header is, and the fields counted in it; after blank lines, the header's line
        XCTAssertThrowsError(try CSVTable(data: Data((String(repeating: "h,", count: InputLimits.csvLineBytes / 2) + "x\n").utf8), path: "h.csv")) { e in
            XCTAssertEqual(
                "\(e)",
                "'h.csv' line 1: too long: more than 1048576 bytes (1 MiB, the most one line may have), with 524289 fields in its first 1048576 bytes; "
                    + "expected a header line of column names separated by commas")
        }
        XCTAssertThrowsError(try CSVTable(data: Data(("\n\"a\nb\",c\n1,2\n" + long + "\n").utf8), path: "b.csv")) { e in
            XCTAssertTrue("\(e)".hasPrefix("'b.csv' line 5: too long: "), "\(e)")
            XCTAssertTrue("\(e)".hasSuffix("; expected a row of 2 fields separated by commas, like the header on line 2"), "\(e)")
        }
        // a long line under the limit but with the wrong field count is quoted short
        let mid = String(repeating: "c", count: 100_000)
        XCTAssertThrowsError(try CSVTable(data: Data("a,b\n\(mid)\n".utf8), path: "m.csv")) { e in
            let message = "\(e)"
            XCTAssertLessThan(message.utf8.count, 400, message)
            XCTAssertTrue(message.contains("…"), message)
            XCTAssertTrue(message.contains("found 1"), message)
        }
    }

    /// A CSV file with an over-long line is refused by a check that reads the file in pieces
    /// and stops at that line's limit (the message says "more than"), not after reading the
    /// whole file; a valid file still parses.
    func testLongLineInAFileIsRefusedWhileReading() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("csv-long-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let bad = dir.appendingPathComponent("sub.csv")
        var data = Data("patientId,PredictionString\n".utf8)
        data.append(Data(repeating: UInt8(ascii: "b"), count: 8 * InputLimits.csvLineBytes))
        try data.write(to: bad)
        XCTAssertThrowsError(try CSVTable(contentsOf: bad)) { e in
            let message = "\(e)"
            XCTAssertTrue(message.contains("line 2") && message.contains("more than \(InputLimits.csvLineBytes) bytes"), message)
            XCTAssertTrue(message.contains(bad.path), message)
        }
        // a quoted field of many short lines is one row: refused at the same limit
        let quoted = dir.appendingPathComponent("quoted.csv")
        var q = Data("patientId,PredictionString\n\"".utf8)
        for _ in 0..<(2 * InputLimits.csvLineBytes / 100) { q.append(Data((String(repeating: "b", count: 99) + "\n").utf8)) }
        q.append(Data("\",x\n".utf8))
        try q.write(to: quoted)
        XCTAssertThrowsError(try CSVTable(contentsOf: quoted)) { e in
            let message = "\(e)"
            XCTAssertTrue(message.contains("line 2") && message.contains("a row of at most \(InputLimits.csvLineBytes) bytes"), message)
            XCTAssertTrue(message.contains("inside a quoted field opened on line 2") && message.contains("never closed"), message)
        }
        let good = dir.appendingPathComponent("ok.csv")
        try Data("a,b\r\n1,\"x,y\"\r\n".utf8).write(to: good)
        XCTAssertEqual(try CSVTable(contentsOf: good).rows.map(\.fields), [["1", "x,y"]])
    }

    /// The piecewise check gives the one-piece check's answer wherever the pieces split the
    /// file, a CRLF or a quoted field included.
    func testLineCheckDoesNotDependOnWhereThePiecesSplit() {
        let long = String(repeating: "z", count: InputLimits.csvLineBytes)
        let texts = [
            "a,b\r\n1,\"x\r\ny\"\r\n2,3\r\n",  // fine: a quoted line break, CRLF ends
            "a,b\n1,\"never closed\n2,3\n",  // a quote never closed, on line 2
            "a\r\n" + long + "\r\n" + long + "z\r\n",  // line 3 is one byte too long
            "a\r\n" + long + "\r\n",  // exactly the limit: fine
        ]
        func outcome(_ bytes: [UInt8], split: [Int]) -> String {
            var checker = CSVTable.LineChecker(path: "p.csv")
            do {
                var start = 0
                for end in split + [bytes.count] where end >= start {
                    try bytes[start..<end].withUnsafeBufferPointer { try checker.feed($0) }
                    start = end
                }
                try checker.finish()
                return "ok"
            } catch {
                if case let DataError.csvLineTooLong(_, line, limit, _, _, _, _) = error { return "line \(line): a line of at most \(limit) bytes" }
                guard case let DataError.csvValue(_, line, _, _, expected, _) = error else { return "\(error)" }
                return "line \(line): \(expected)"
            }
        }
        let expected = ["ok", "line 2: a closing quote", "line 3: a line of at most \(InputLimits.csvLineBytes) bytes", "ok"]
        for (text, want) in zip(texts, expected) {
            let bytes = Array(text.utf8)
            XCTAssertEqual(outcome(bytes, split: []), want)
            // every split point in the first 40 bytes, and around each CR
            let points = Array(0..<min(40, bytes.count)) + bytes.indices.filter { bytes[$0] == 13 }.flatMap { [$0, $0 + 1] }
            for p in points { XCTAssertEqual(outcome(bytes, split: [p]), want, "split at \(p)") }
        }
    }

    func testRenderQuotesWhatNeedsIt() throws {
        let text = CSVTable.render(header: ["id", "note"], rows: [["a", "x,y"], ["b", "say \"hi\""], ["c", ""]])
        XCTAssertEqual(text, "id,note\na,\"x,y\"\nb,\"say \"\"hi\"\"\"\nc,\n")
        let back = try CSVTable(data: Data(text.utf8), path: "r.csv")
        XCTAssertEqual(back.rows.map(\.fields), [["a", "x,y"], ["b", "say \"hi\""], ["c", ""]])
    }

    func testQuotedValueIsCut() {
        XCTAssertEqual(InputLimits.quoted("short"), "short")
        let cut = InputLimits.quoted(String(repeating: "z", count: 1000))
        XCTAssertTrue(cut.hasPrefix(String(repeating: "z", count: 80) + "…"))
        XCTAssertTrue(cut.contains("1000 bytes"))
    }

    /// Case bundle-zstd-bomb-memory (bigmodel.opb): a config string too long to quote whole is
    /// cut after its last complete `key=value` (or its component's name), not mid-word
    /// (`neck=fpn(cha…`), with the ellipsis and its full length; a short one is whole.
    func testQuotedConfigEndsAfterACompleteKeyValue() {
        let big = "retinanet(encoder=resnet152(width=4.0), head=retina(channels=2048), neck=fpn(channels=2048), size=2048)"
        XCTAssertEqual(InputLimits.quoted(big), "retinanet(encoder=resnet152(width=4.0), head=retina(channels=2048), neck=fpn(cha… (103 bytes)")
        XCTAssertEqual(InputLimits.quotedConfig(big), "retinanet(encoder=resnet152(width=4.0), head=retina(channels=2048), … (103 bytes)")
        XCTAssertEqual(InputLimits.quotedConfig(big, limit: 103), big)
        XCTAssertEqual(InputLimits.quotedConfig("retinanet(size=256)"), "retinanet(size=256)")
        // a comma inside a nested value ends a complete key=value too
        XCTAssertEqual(InputLimits.quotedConfig("retinanet(encoder=resnet152(width=4.0, stem=deep), size=2048)", limit: 45),
                       "retinanet(encoder=resnet152(width=4.0, … (61 bytes)")
        // no comma: after the component's name; neither: cut as any value
        XCTAssertEqual(InputLimits.quotedConfig("retinanet(encoder=" + String(repeating: "x", count: 100) + ")"), "retinanet(… (119 bytes)")
        XCTAssertEqual(InputLimits.quotedConfig(String(repeating: "x", count: 100)), InputLimits.quoted(String(repeating: "x", count: 100)))
    }

    func testFoldsRoundTripThroughTheLibrary() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("folds.csv")
        try Data("patientId,class,fold\n\"a,1\",Normal,0\nb,Lung Opacity,1\n".utf8).write(to: url)
        let f = try Folds.read(from: url)
        XCTAssertEqual(f.ids, ["a,1", "b"])
        try f.write(to: url)
        XCTAssertEqual(try String(contentsOf: url, encoding: .utf8), "patientId,class,fold\n\"a,1\",Normal,0\nb,Lung Opacity,1\n")
        try Data("patientId,class,fold\nb,Normal,1000000000\n".utf8).write(to: url)
        XCTAssertThrowsError(try Folds.read(from: url)) { e in XCTAssertTrue("\(e)".contains("0...\(Folds.maximumCount - 1)"), "\(e)") }
    }
}

final class DottedIdTests: XCTestCase {
    /// Case dotted-image-ids: bare ids with dots (DICOM UIDs) are ids looked up by stem.
    func testBareIdsWithDotsFindTheirImages() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let images = dir.appendingPathComponent("images")
        try FileManager.default.createDirectory(at: images, withIntermediateDirectories: true)
        let uid = "1.2.276.0.7230010.3.1.4.8323329.5597.1517875188.959090"
        let img = GrayImage(width: 64, height: 64, pixels: (0..<4096).map { UInt8($0 % 64 * 4) })
        try PNG.write(img, to: images.appendingPathComponent(uid + ".png"))
        try PNG.write(img, to: images.appendingPathComponent("plainname.png"))
        for (name, first) in [("boxes.csv", uid), ("boxes_with_extension.csv", uid + ".png")] {
            let csv = dir.appendingPathComponent(name)
            try Data("image,x,y,width,height\n\(first),10,12,20,24\nplainname,10,12,20,24\n".utf8).write(to: csv)
            let d = try BoxesCSV.load(csv: csv, imageFolder: images)
            XCTAssertEqual(d.records.count, 2, name)
            XCTAssertEqual(d.records[0].imageURL?.lastPathComponent, uid + ".png", name)
            XCTAssertEqual(d.records[1].imageURL?.lastPathComponent, "plainname.png", name)
        }
    }
}

final class OptionRangeTests: XCTestCase {
    /// Case aug-scale-200-crash and its kind: every override out of range is refused with
    /// the range in the message, and nothing non-finite is accepted.
    func testAugmentationOverridesOutOfRangeAreRefused() {
        for text in ["heavy,scale=200", "heavy,rotation=1e19", "heavy,blur_sigma=1e30", "heavy,jitter=1e20", "heavy,shear=nan",
                     "light,gamma=inf", "heavy,flip=1.5", "heavy,sp_size_min=0", "none,noise_scale=-1"] {
            XCTAssertThrowsError(try AugmentationConfig(parsing: text), text) { e in
                let m = "\(e)"
                XCTAssertTrue(m.contains("a number in"), m)
            }
        }
        XCTAssertNoThrow(try AugmentationConfig(parsing: "heavy,scale=1,rotation=180,blur_sigma=16,jitter=512"))
        XCTAssertThrowsError(try AugmentationConfig(parsing: "heavy,scale=" + String(repeating: "9", count: 5000))) { e in
            XCTAssertLessThan("\(e)".utf8.count, 400)
        }
    }

    /// The widest accepted settings augment without trapping (the warp never converts an
    /// infinite coordinate).
    func testExtremeAcceptedSettingsAugment() throws {
        var c = try AugmentationConfig(parsing: "heavy,scale=1,rotation=180,shear=45,blur_sigma=16,jitter=512,blur_p=1")
        c.noiseProbability = 1
        let a = Augmenter(config: c, outputSize: 32)
        let img = GrayImage(width: 48, height: 40, pixels: (0..<1920).map { UInt8($0 % 251) })
        for seed in 0..<200 {
            var rng = RandomGenerator(seed: UInt64(seed))
            let s = a.apply(img, boxes: [BoundingBox(x: 4, y: 4, width: 10, height: 10)], using: &rng)
            XCTAssertTrue(s.image.pixels.allSatisfy { $0.isFinite && $0 >= 0 && $0 <= 1 })
        }
        // geometry that maps to infinite or NaN source coordinates gives zeros, not a trap
        for g in [GeometricParameters(scaleX: 0, scaleY: 1e-30, rotation: 1e19), GeometricParameters(shiftX: .infinity, rotation: .nan)] {
            var rng = RandomGenerator(seed: 1)
            let s = Augmenter(config: .none, outputSize: 32).apply(img, boxes: [], geometry: g, using: &rng)
            XCTAssertTrue(s.image.pixels.allSatisfy { $0.isFinite }, "\(g)")
        }
    }
}

final class PNGLimitTests: XCTestCase {
    /// A PNG header claiming 65535 x 65535 is refused before any pixel memory.
    func testHugeClaimIsRefused() throws {
        var png = try PNG.encode(GrayImage(width: 8, height: 8, value: 7))
        // IHDR width and height at bytes 16..<24; the chunk CRC at 29..<33 must follow
        png.replaceSubrange(16..<24, with: [0, 0, 0xFF, 0xFF, 0, 0, 0xFF, 0xFF])
        let crc = CRC32.checksum(Array(png[12..<29]))
        png.replaceSubrange(29..<33, with: [UInt8(crc >> 24), UInt8(crc >> 16 & 0xFF), UInt8(crc >> 8 & 0xFF), UInt8(crc & 0xFF)])
        XCTAssertThrowsError(try PNG.decode(png, path: "huge.png")) { e in
            XCTAssertTrue("\(e)".contains("65535x65535"), "\(e)")
            XCTAssertTrue("\(e)".contains("limit"), "\(e)")
        }
    }
}

final class BoxesBeyondImageTests: XCTestCase {
    /// Labels in 1024-pixel coordinates on 512-pixel images are refused where the image is
    /// read (training loader, evaluation), naming the record, the box and the image size.
    func testBoxesBeyondTheImageAreRefused() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let img = GrayImage(width: 512, height: 512, value: 100)
        try PNG.write(img, to: dir.appendingPathComponent("p.png"))
        let bad = DatasetRecord(id: "p", imageURL: dir.appendingPathComponent("p.png"),
                                boxes: [BoundingBox(x: 600, y: 300, width: 200, height: 300)], imageClass: .lungOpacity)
        XCTAssertThrowsError(try bad.checkBoxes(width: 512, height: 512)) { e in
            XCTAssertTrue("\(e)".contains("beyond its 512 x 512 image"), "\(e)")
        }
        XCTAssertNoThrow(try DatasetRecord(id: "q", imageURL: nil, boxes: [BoundingBox(x: 0, y: 0, width: 514, height: 100)],
                                           imageClass: .lungOpacity).checkBoxes(width: 512, height: 512))
        let loader = try BatchLoader(dataset: DetectionDataset(records: [bad], report: DatasetReport()),
                                     config: LoaderConfig(batchSize: 1, imageSize: 64, workers: 0))
        XCTAssertThrowsError(try loader.sample(record: 0, epoch: 1))
    }
}
