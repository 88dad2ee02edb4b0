import Foundation
import OpacityCore
import OpacityData
import XCTest

/// `ImageConversion` reports each image's source and output size, and `scaleLabels` moves a
/// labels table into the converted pixels: per image, x and y by their own ratios.
final class ConversionLabelsTests: XCTestCase {
    /// A DICOM of `width` x `height` gray pixels named `{id}.dcm` in `folder`.
    func dicom(_ folder: URL, _ id: String, width: Int, height: Int) throws {
        let pixels = (0..<(width * height)).map { UInt8(truncatingIfNeeded: $0 % 251) }
        try DICOM.write(GrayImage(width: width, height: height, pixels: pixels), patientID: id, to: folder.appendingPathComponent("\(id).dcm"))
    }

    func table(_ text: String, path: String = "labels.csv") throws -> CSVTable {
        try CSVTable(data: Data(text.utf8), path: path)
    }

    /// Sizes of converted and of kept images; labels scaled by each image's own ratios; an
    /// image kept from an earlier run at another size is scaled to the PNG that is there.
    func testConvertReportsSizesAndLabelsFollowEachImage() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in"), output = dir.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: input, withIntermediateDirectories: true)
        try dicom(input, "wide", width: 301, height: 200)  // --size 150: 150 x 100, x and y ratios differ
        try dicom(input, "square", width: 200, height: 200)
        try dicom(input, "kept", width: 200, height: 100)
        // "kept" was converted earlier at 50 px: its PNG stays, and its labels must fit it
        _ = try ImageConversion.convert(
            input: input.appendingPathComponent("kept.dcm"), output: output.appendingPathComponent("kept.png"),
            options: ImageConversion.Options(size: 50, threads: 1))
        var options = ImageConversion.Options(size: 150, threads: 2)
        options.measureSkipped = true
        let summary = try ImageConversion.convert(input: input, output: output, options: options)
        XCTAssertEqual(summary.converted, 2)
        XCTAssertEqual(summary.skippedExisting, 1)
        XCTAssertEqual(summary.images.map(\.source.lastPathComponent), ["kept.dcm", "square.dcm", "wide.dcm"])
        XCTAssertEqual(summary.images.map { [$0.sourceWidth, $0.sourceHeight, $0.outputWidth, $0.outputHeight] },
                       [[200, 100, 50, 25], [200, 200, 150, 150], [301, 200, 150, 100]])
        XCTAssertEqual(summary.images.map(\.existed), [true, false, false])
        for image in summary.images {
            let png = try PNG.readGray(image.output)
            XCTAssertEqual([png.width, png.height], [image.outputWidth, image.outputHeight], image.output.path)
        }
        // without measureSkipped, a kept image is counted but not measured
        let plain = try ImageConversion.convert(input: input, output: output, options: ImageConversion.Options(size: 150, threads: 1))
        XCTAssertEqual(plain.skippedExisting, 3)
        XCTAssertEqual(plain.images, [])

        let labels = try table(
            """
            patientId,x,y,width,height,Target
            wide,30.1,20,60.2,40,1
            wide,0,0,301,200,1
            square,10,20,30,40,1
            kept,100,50,21,10,1
            gone,1,2,3,4,1
            gone,5,6,7,8,1

            """)
        let scaled = try ImageConversion.scaleLabels(labels, summary: summary)
        XCTAssertEqual(scaled.table.header, RSNALabels.labelsHeader)
        XCTAssertEqual(scaled.table.rows.map { $0.fields }, [
            ["wide", "15.0", "10.0", "30.0", "20.0", "1"],
            ["wide", "0.0", "0.0", "150.0", "100.0", "1"],  // the whole image is the whole PNG
            ["square", "7.5", "15.0", "22.5", "30.0", "1"],
            ["kept", "25.0", "12.5", "5.25", "2.5", "1"],
        ])
        XCTAssertEqual(scaled.table.rows.map { $0.line }, [2, 3, 4, 5])
        XCTAssertEqual(scaled.dropped.map { $0.line }, [6, 7])
        XCTAssertEqual(scaled.dropped.map { $0.image }, ["gone", "gone"])
        XCTAssertEqual(scaled.dropped[0].reason, "no such input was converted")
        // the scaled rows load with the converted PNGs, where the original ones are refused
        let csv = dir.appendingPathComponent("scaled.csv")
        try scaled.write(to: csv)
        XCTAssertEqual(try String(contentsOf: csv, encoding: .utf8), scaled.csv)
        let data = try BoxesCSV.load(csv: csv, imageFolder: output)
        for r in data.records {
            let png = try PNG.readGray(try XCTUnwrap(r.imageURL))
            XCTAssertNoThrow(try r.checkBoxes(width: png.width, height: png.height), r.id)
        }
        let original = dir.appendingPathComponent("original.csv")
        try CSVTable.render(header: labels.header, rows: labels.rows.filter { $0.fields[0] != "gone" }.map { $0.fields })
            .write(to: original, atomically: true, encoding: .utf8)
        let refused = try BoxesCSV.load(csv: original, imageFolder: output).records.first { $0.id == "wide" }!
        XCTAssertThrowsError(try refused.checkBoxes(width: 150, height: 100)) { e in
            XCTAssertTrue("\(e)".contains("are the labels in another resolution?"), "\(e)")
        }
    }

    /// Scale 1 keeps the fields as written; corners, file names and extra columns; rows
    /// without a box; a failed conversion is the reason a row is left out.
    func testBoxesCSVFormsAndReasons() throws {
        let image = { (name: String, w: Int, h: Int, ow: Int, oh: Int) in
            ImageConversion.ConvertedImage(
                source: URL(fileURLWithPath: "/in/\(name).dcm"), output: URL(fileURLWithPath: "/out/\(name).png"),
                sourceWidth: w, sourceHeight: h, outputWidth: ow, outputHeight: oh, existed: false)
        }
        var summary = ImageConversion.Summary()
        summary.images = [image("a", 1000, 800, 500, 400), image("same", 64, 64, 64, 64)]
        summary.failures = [(path: "/in/broken.dcm", reason: "/in/broken.dcm: not DICOM")]
        let corners = try table(
            """
            file,note,xmin,ymin,xmax,ymax,class
            a.dcm,"x, quoted",100,80,300,280,Lung Opacity
            a,,,,,,
            same,keep,10.25,3,20.125,7,
            broken,,1,1,2,2,
            """)
        let s = try ImageConversion.scaleLabels(corners, summary: summary)
        XCTAssertEqual(s.table.header, corners.header)
        XCTAssertEqual(s.table.rows.map { $0.fields }, [
            ["a.png", "x, quoted", "50.0", "40.0", "150.0", "140.0", "Lung Opacity"],  // the file name follows the PNG
            ["a", "", "", "", "", "", ""],
            ["same", "keep", "10.25", "3", "20.125", "7", ""],  // scale 1: as written
        ])
        XCTAssertEqual(s.dropped.map { $0.line }, [5])
        XCTAssertTrue(s.dropped[0].reason.hasPrefix("its conversion failed: "), s.dropped[0].reason)
        XCTAssertTrue(s.csv.hasPrefix("file,note,xmin,ymin,xmax,ymax,class\na.png,\"x, quoted\",50.0,"), s.csv)
        XCTAssertTrue(s.outside.isEmpty, "\(s.outside)")

        // a box past its 1000 x 800 source (by more than 1%) is written, and listed
        let past = try table(
            """
            image,x,y,width,height
            a,900,100,113,50
            a,900,100,109,50
            """)
        let p = try ImageConversion.scaleLabels(past, summary: summary)
        XCTAssertEqual(p.table.rows.count, 2)
        XCTAssertEqual(p.outside.map { $0.line }, [2])
        XCTAssertTrue(p.outside[0].reason.contains("reaches beyond its 1000 x 800 source image"), p.outside[0].reason)
    }

    /// Bad values are named by file, line and column, as the dataset loaders name them; an RSNA
    /// header brings the RSNA rules.
    func testBadLabelsAreNamed() throws {
        let summary = ImageConversion.Summary()
        let cases: [(String, String)] = [
            ("patientId,x,y,width,height,Target\na,1,2,3,4,1\nb,1,two,3,4,1\n", "'labels.csv' line 3, column 'y'"),
            ("patientId,x,y,width,height,Target\na,1,2,3,4,2\n", "column 'Target'"),
            ("patientId,x,y,width,height,Target\na,1,2,3,4,0\n", "Target is 0 but column 'x' has '1'"),
            ("image,x,y,width,height\na,1,2,0,4\n", "column 'width'"),
            ("image,x,y,width,height\n,1,2,3,4\n", "an image name"),
            ("image,left,top\na,1,2\n", "expected"),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try ImageConversion.scaleLabels(try table(text), summary: summary), text) { e in
                XCTAssertTrue("\(e)".contains(expected), "\(e) lacks \(expected)")
            }
        }
    }
}
