import Foundation
import OpacityCore
import OpacityData
import XCTest

final class DatasetTests: XCTestCase {
    let classInfo = rsnaFolder.appendingPathComponent("stage_2_detailed_class_info.csv")

    /// The full stage-2 labels load with the published counts.
    func testFullLabelsFileCounts() throws {
        let labels = try RSNALabels.load(labels: fullLabelsCSV, classInfo: classInfo)
        XCTAssertEqual(labels.report.labelRows, 30_227)
        XCTAssertEqual(labels.report.patients, 26_684)
        XCTAssertEqual(labels.report.boxes, 9_555)
        XCTAssertEqual(labels.report.duplicateRowsRemoved, 0)
        XCTAssertEqual(labels.report.classCounts[ImageClass.lungOpacity.rawValue], 6_012)
        XCTAssertEqual(labels.report.classCounts[ImageClass.notNormal.rawValue], 11_821)
        XCTAssertEqual(labels.report.classCounts[ImageClass.normal.rawValue], 8_851)
        var perImage = [Int: Int]()
        for p in labels.patients where !p.boxes.isEmpty { perImage[p.boxes.count, default: 0] += 1 }
        XCTAssertEqual(perImage, [1: 2614, 2: 3266, 3: 119, 4: 13])
        let widths = labels.patients.flatMap { $0.boxes.map(\.width) }
        XCTAssertEqual(widths.min(), 40)
        XCTAssertEqual(widths.max(), 528)
        // Without the class info, "not normal" cannot be told from "normal": class unknown.
        let bare = try RSNALabels.load(labels: fullLabelsCSV, classInfo: nil)
        XCTAssertEqual(bare.report.classCounts, [0, 0, 6_012])
        XCTAssertEqual(bare.report.unknownClass, 26_684 - 6_012)
        XCTAssertTrue(bare.patients.allSatisfy { $0.boxes.isEmpty ? $0.imageClass == nil : $0.imageClass == .lungOpacity })
        XCTAssertTrue(bare.report.description.contains("class not given (no boxes, no class file) 20672"), bare.report.description)
    }

    /// The 12 real RSNA files load through the layout loader, DICOMs found by id.
    func testExampleFolderLoads() throws {
        let options = RSNADataset.Options(
            labelsFile: rsnaFolder.appendingPathComponent("example_train_labels.csv"),
            classInfoFile: rsnaFolder.appendingPathComponent("example_detailed_class_info.csv"),
            imageCheck: .decode)
        let ds = try RSNADataset.load(root: rsnaFolder, options: options)
        XCTAssertEqual(ds.count, 12)
        XCTAssertEqual(ds.report.boxes, 6)  // the example CSVs hold 3 positive patients
        XCTAssertEqual(ds.records.filter { !$0.boxes.isEmpty }.count, 3)
        XCTAssertTrue(ds.records.allSatisfy { $0.imageURL?.pathExtension == "dcm" })
        XCTAssertTrue(ds.report.missingImages.isEmpty)
    }

    /// Missing images are reported together with counts; `.skip` trains without them.
    func testMissingImagesReportedTogether() throws {
        var options = RSNADataset.Options(labelsFile: fullLabelsCSV, classInfoFile: classInfo)
        assertThrows(try RSNADataset.load(root: rsnaFolder, options: options),
                     containing: ["26672 images missing", "0 unreadable", "skip"])
        options.problemImages = .skip
        let ds = try RSNADataset.load(root: rsnaFolder, options: options)
        XCTAssertEqual(ds.count, 12)
        XCTAssertEqual(ds.report.missingImages.count, 26_672)
        XCTAssertEqual(ds.report.patients, 26_684)
        XCTAssertTrue(ds.report.description.contains("26672 missing"))
    }

    /// Unreadable and missing images together; a decode check finds the corrupt one.
    func testUnreadableImages() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let images = dir.appendingPathComponent("stage_2_train_images")
        try FileManager.default.createDirectory(at: images, withIntermediateDirectories: true)
        let good = "0004cfab-14fd-4e49-80ba-63a80b6bddd6"
        try FileManager.default.copyItem(at: rsnaImages.appendingPathComponent("\(good).dcm"),
                                         to: images.appendingPathComponent("\(good).dcm"))
        try Data("not a dicom".utf8).write(to: images.appendingPathComponent("bad.dcm"))
        try """
        patientId,x,y,width,height,Target
        \(good),,,,,0
        bad,,,,,0
        gone,100,100,50,60,1
        """.write(to: dir.appendingPathComponent("stage_2_train_labels.csv"), atomically: true, encoding: .utf8)
        try """
        patientId,class
        \(good),Normal
        bad,No Lung Opacity / Not Normal
        gone,Lung Opacity
        """.write(to: dir.appendingPathComponent("stage_2_detailed_class_info.csv"), atomically: true, encoding: .utf8)
        var options = RSNADataset.Options(imageCheck: .decode)
        assertThrows(try RSNADataset.load(root: dir, options: options),
                     containing: ["1 image missing and 1 unreadable", "gone", "bad"])
        options.problemImages = .skip
        let ds = try RSNADataset.load(root: dir, options: options)
        XCTAssertEqual(ds.records.map(\.id), [good])
        XCTAssertEqual(ds.report.missingImages, ["gone"])
        XCTAssertEqual(Array(ds.report.unreadableImages.keys), ["bad"])
        // A header check finds it too; the zip next to a missing CSV is pointed out.
        options.imageCheck = .header
        XCTAssertEqual(Array(try RSNADataset.load(root: dir, options: options).report.unreadableImages.keys), ["bad"])
        assertThrows(try RSNADataset.load(root: rsnaFolder), containing: ["stage_2_train_labels.csv.zip", "unzip"])
        // Existence-only check keeps the corrupt file (the loader can skip it later).
        options.imageCheck = .exists
        XCTAssertEqual(try RSNADataset.load(root: dir, options: options).count, 2)
    }

    /// Every validation rule fails with file, line, column and the expectation.
    func testLabelValidationErrors() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let labels = dir.appendingPathComponent("labels.csv"), info = dir.appendingPathComponent("info.csv")
        func check(_ l: String, _ c: String?, _ parts: [String]) throws {
            try l.write(to: labels, atomically: true, encoding: .utf8)
            if let c { try c.write(to: info, atomically: true, encoding: .utf8) }
            assertThrows(try RSNALabels.load(labels: labels, classInfo: c == nil ? nil : info), containing: parts)
        }
        let h = "patientId,x,y,width,height,Target\n"
        try check("patientId,x,y,w,h,Target\na,,,,,0\n", nil, ["labels.csv", "line 1", "patientId,x,y,width,height,Target"])
        try check(h + "a,,,,,2\n", nil, ["line 2", "Target", "'2'", "0 or 1", "(nearest valid: 1)"])
        try check(h + "a,,,,,0\nb,1,2,,4,1\n", nil, ["line 3", "width", "a number"])
        try check(h + "a,1,,,,0\n", nil, ["line 2", "Target is 0", "'x'"])
        try check(h + "a,1,2,0,4,1\n", nil, ["line 2", "width", "positive"])
        // a negative size has no nearest valid number (above 0 is open): none is suggested
        try check(h + "a,1,2,-5,4,1\n", nil, ["line 2", "width", "'-5'", "a positive size in pixels"])
        XCTAssertThrowsError(try RSNALabels.load(labels: labels, classInfo: nil)) { XCTAssertFalse("\($0)".contains("did you mean"), "\($0)") }
        try check(h + "a,1,2,3,4,1\na,,,,,0\n", nil, ["line 3", "also a Target 0 row"])
        try check(h + "a,1,2,3\n", nil, ["line 2", "6 fields"])
        let ci = "patientId,class\n"
        try check(h + "a,1,2,3,4,1\n", ci + "a,Normal\n", ["labels.csv", "line 2", "'Normal'", "Lung Opacity"])
        try check(h + "a,,,,,0\n", ci + "a,Lung Opacty\n", ["info.csv", "line 2", "class", "did you mean 'Lung Opacity'"])
        try check(h + "a,,,,,0\n", ci + "a,Normal\na,No Lung Opacity / Not Normal\n", ["info.csv", "line 3", "'Normal' on line 2"])
        try check(h + "a,,,,,0\nb,,,,,0\n", ci + "a,Normal\n", ["patient b", "labels line 3", "no class row"])
        // Duplicates are removed and counted, not errors; CRLF and a BOM are fine.
        try "\u{FEFF}patientId,x,y,width,height,Target\r\na,1,2,3,4,1\r\na,1,2,3,4,1\r\na,5,6,7,8,1\r\nb,,,,,0\r\nb,,,,,0\r\n"
            .write(to: labels, atomically: true, encoding: .utf8)
        try "patientId,class\na,Lung Opacity\na,Lung Opacity\na,Lung Opacity\nb,Normal\nb,Normal\n".write(to: info, atomically: true, encoding: .utf8)
        let ok = try RSNALabels.load(labels: labels, classInfo: info)
        XCTAssertEqual(ok.report.duplicateRowsRemoved, 2)
        XCTAssertEqual(ok.patients.map(\.boxes.count), [2, 0])
        XCTAssertEqual(ok.patients[0].boxes[1], BoundingBox(x: 5, y: 6, width: 7, height: 8))
        // Missing files and folders.
        assertThrows(try RSNADataset.load(root: dir.appendingPathComponent("nowhere")), containing: ["stage_2_train_labels.csv"])
        try "patientId,x,y,width,height,Target\n".write(to: dir.appendingPathComponent("stage_2_train_labels.csv"), atomically: true, encoding: .utf8)
        assertThrows(try RSNADataset.load(root: dir), containing: ["stage_2_train_images", "image folder"])
    }

    /// The generic CSV of boxes: corners or sizes, classes by name or index, bare ids or paths.
    func testBoxesCSV() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        try PNG.write(GrayImage(width: 8, height: 8), to: dir.appendingPathComponent("img/one.png"))
        try PNG.write(GrayImage(width: 8, height: 8), to: dir.appendingPathComponent("img/sub/two.png"))
        let csv = dir.appendingPathComponent("boxes.csv")
        try "file,xmin,ymin,xmax,ymax,label,extra\none,1,2,5,6,2,z\none,0,0,1,1,Lung Opacity,z\nsub/two.png,,,,,No Lung Opacity / Not Normal,z\n"
            .write(to: csv, atomically: true, encoding: .utf8)
        let ds = try BoxesCSV.load(csv: csv, imageFolder: dir.appendingPathComponent("img"))
        XCTAssertEqual(ds.count, 2)
        XCTAssertEqual(ds.records[0].boxes, [BoundingBox(x: 1, y: 2, width: 4, height: 4), BoundingBox(x: 0, y: 0, width: 1, height: 1)])
        XCTAssertEqual(ds.records[0].imageClass, .lungOpacity)
        XCTAssertEqual(ds.records[1].imageClass, .notNormal)
        XCTAssertEqual(ds.records[1].imageURL?.lastPathComponent, "two.png")
        // Without a class column: an image without boxes has no class (not "Normal").
        try "image,x,y,w,h\none,1,2,3,4\nsub/two.png,,,,\n".write(to: csv, atomically: true, encoding: .utf8)
        let ds2 = try BoxesCSV.load(csv: csv, imageFolder: dir.appendingPathComponent("img"))
        XCTAssertEqual(ds2.records.map(\.imageClass), [.lungOpacity, nil])
        XCTAssertEqual(ds2.report.unknownClass, 1)
        // Errors.
        try "name,x\na,1\n".write(to: csv, atomically: true, encoding: .utf8)
        assertThrows(try BoxesCSV.load(csv: csv, imageFolder: dir), containing: ["boxes.csv", "image"])
        try "image,x,y,width,height,class\none,1,2,3,4,Normall\n".write(to: csv, atomically: true, encoding: .utf8)
        assertThrows(try BoxesCSV.load(csv: csv, imageFolder: dir.appendingPathComponent("img")),
                     containing: ["line 2", "class", "did you mean 'Normal'"])
        try "image,x,y,width,height\none,1,2,three,4\n".write(to: csv, atomically: true, encoding: .utf8)
        assertThrows(try BoxesCSV.load(csv: csv, imageFolder: dir.appendingPathComponent("img")), containing: ["line 2", "width", "three"])
        try "image,x,y,width,height\nthree,1,2,3,4\n".write(to: csv, atomically: true, encoding: .utf8)
        assertThrows(try BoxesCSV.load(csv: csv, imageFolder: dir.appendingPathComponent("img")), containing: ["1 image missing", "three"])
        XCTAssertEqual(try BoxesCSV.load(csv: csv, imageFolder: dir.appendingPathComponent("img"),
                                         options: .init(problemImages: .skip)).count, 0)
    }

    /// Stratified folds on the full labels: per-fold class counts differ by at most one,
    /// the split repeats for a seed and survives a CSV round trip.
    func testStratifiedFoldsOnFullLabels() throws {
        let labels = try RSNALabels.load(labels: fullLabelsCSV, classInfo: classInfo)
        let pairs = labels.patients.map { (id: $0.id, imageClass: $0.imageClass) }
        let folds = try Folds.stratified(pairs, count: 4, seed: 42)
        let counts = folds.classCounts
        XCTAssertEqual(counts.count, 4)
        for c in 0..<3 {
            let col = counts.map { $0[c] }
            XCTAssertLessThanOrEqual(col.max()! - col.min()!, 1, "class \(c): \(col)")
        }
        let totals = counts.map { $0.reduce(0, +) }
        XCTAssertLessThanOrEqual(totals.max()! - totals.min()!, 1)
        XCTAssertEqual(totals.reduce(0, +), 26_684)
        // Determinism: same seed same split (also from shuffled input); another seed differs.
        XCTAssertEqual(try Folds.stratified(pairs.reversed(), count: 4, seed: 42), folds)
        XCTAssertNotEqual(try Folds.stratified(pairs, count: 4, seed: 7), folds)
        // Round trip through the CSV.
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("folds.csv")
        try folds.write(to: url)
        XCTAssertEqual(try Folds.read(from: url), folds)
        // Splitting a dataset.
        let ds = DetectionDataset(records: labels.patients.map { DatasetRecord(id: $0.id, imageURL: nil, boxes: $0.boxes, imageClass: $0.imageClass) })
        let (train, val) = try folds.split(ds, validationFold: 1)
        XCTAssertEqual(train.count + val.count, 26_684)
        XCTAssertEqual(val.count, totals[1])
        XCTAssertTrue(Set(train.records.map(\.id)).isDisjoint(with: val.records.map(\.id)))
        assertThrows(try folds.split(ds, validationFold: 4), containing: ["fold", "0...3", "(nearest valid: 3)"])
    }

    /// Folds stratified by class and view on rsna1k's real headers: every (class, view)
    /// group is spread over the folds within one, and without strata the split is the
    /// class-only one.
    func testFoldsStratifiedByClassAndView() throws {
        let root = realdata.appendingPathComponent("rsna1k")
        let ds = try RSNADataset.load(root: root)
        XCTAssertEqual(ds.count, 757)
        var views: [String: String] = [:]
        for r in ds.records {
            views[r.id] = try DICOM.readHeader(try XCTUnwrap(r.imageURL)).viewPosition?.trimmingCharacters(in: .whitespaces)
        }
        XCTAssertEqual(views.values.filter { $0 == "AP" }.count, 336)
        XCTAssertEqual(views.values.filter { $0 == "PA" }.count, 421)
        let folds = try Folds.stratified(ds, count: 4, seed: 42, strata: views)
        for c in ImageClass.allCases {
            for v in ["AP", "PA"] {
                let perFold = (0..<4).map { k in folds.ids(inFold: k).filter { views[$0] == v && folds.classes[$0] == c }.count }
                XCTAssertLessThanOrEqual(perFold.max()! - perFold.min()!, 1, "\(c) \(v): \(perFold)")
            }
        }
        let totals = (0..<4).map { folds.ids(inFold: $0).count }
        XCTAssertLessThanOrEqual(totals.max()! - totals.min()!, 1)
        XCTAssertEqual(try Folds.stratified(ds, count: 4, seed: 42, strata: [:]), try Folds.stratified(ds, count: 4, seed: 42))
        XCTAssertNotEqual(folds, try Folds.stratified(ds, count: 4, seed: 42))
        // the view column: written when views are given, read back (upper case), absent otherwise
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        var withViews = folds
        withViews.views = views.compactMapValues { $0 }
        let url = dir.appendingPathComponent("folds.csv")
        try withViews.write(to: url)
        let text = try String(contentsOf: url, encoding: .utf8)
        XCTAssertTrue(text.hasPrefix("patientId,class,fold,view\n"), String(text.prefix(80)))
        let read = try Folds.read(from: url)
        XCTAssertEqual(read, withViews)
        XCTAssertEqual(read.views.count, 757)
        try folds.write(to: url)
        XCTAssertTrue(try String(contentsOf: url, encoding: .utf8).hasPrefix("patientId,class,fold\n"))
        XCTAssertEqual(try Folds.read(from: url).views, [:])
        // a patient listed twice with two views is refused, naming the line
        try "patientId,class,fold,view\na,Normal,0,pa\nb,Normal,1,\na,Normal,0,AP\n".write(to: url, atomically: true, encoding: .utf8)
        assertThrows(try Folds.read(from: url), containing: ["line 4", "different fold, class or view"])
        try "patientId,class,fold,view\na,Normal,0,pa\nb,Normal,1,\n".write(to: url, atomically: true, encoding: .utf8)
        XCTAssertEqual(try Folds.read(from: url).views, ["a": "PA"])
    }

    /// rsna1k's real labels without the class file, through the RSNA loader (class file
    /// moved away) and as a boxes CSV: Target 0 patients have no class (not "Normal"), the
    /// others are "Lung Opacity"; with the class file every class is known. Folds of the
    /// unknown-class set write an empty class, read back equal, and deal patients as the
    /// earlier versions did when they took them as "Normal".
    func testRealLabelsWithoutClassFileLeaveClassUnknown() throws {
        let root = realdata.appendingPathComponent("rsna1k")
        let labels = root.appendingPathComponent("stage_2_train_labels.csv")
        let withClass = try RSNADataset.load(root: root)
        XCTAssertEqual(withClass.unknownClassCount, 0)
        let bare = try RSNALabels.load(labels: labels, classInfo: nil)
        let csv = try BoxesCSV.load(csv: labels, imageFolder: root.appendingPathComponent("stage_2_train_images"))
        XCTAssertEqual(csv.count, withClass.count)
        let positives = withClass.records.filter { $0.imageClass == .lungOpacity }.count
        XCTAssertGreaterThan(positives, 0)
        for ds in [DetectionDataset(records: bare.patients.map { DatasetRecord(id: $0.id, imageURL: nil, boxes: $0.boxes, imageClass: $0.imageClass) }), csv] {
            XCTAssertEqual(ds.classCounts, [0, 0, positives])
            XCTAssertEqual(ds.unknownClassCount, withClass.count - positives)
            XCTAssertTrue(ds.records.allSatisfy { $0.boxes.isEmpty == ($0.imageClass == nil) })
        }
        XCTAssertEqual(csv.report.unknownClass, withClass.count - positives)
        // folds: empty class column, round trip, same split as "Normal" gave
        let folds = try Folds.stratified(csv, count: 4, seed: 42)
        XCTAssertEqual(folds.unknownClassCounts.reduce(0, +), withClass.count - positives)
        let asNormal = try Folds.stratified(csv.records.map { (id: $0.id, imageClass: $0.imageClass ?? .normal) }, count: 4, seed: 42)
        XCTAssertEqual(folds.fold, asNormal.fold)
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("folds.csv")
        try folds.write(to: url)
        let unknownID = try XCTUnwrap(csv.records.first { $0.imageClass == nil }?.id)
        XCTAssertTrue(try String(contentsOf: url, encoding: .utf8).contains("\n\(unknownID),,"))
        XCTAssertEqual(try Folds.read(from: url), folds)
    }

    /// Folds file errors name line and column.
    func testFoldsFileErrors() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("folds.csv")
        try "patientId,class,fold\na,Normal,x\n".write(to: url, atomically: true, encoding: .utf8)
        assertThrows(try Folds.read(from: url), containing: ["folds.csv", "line 2", "fold", "'x'"])
        try "patientId,class,fold\na,Normall,0\n".write(to: url, atomically: true, encoding: .utf8)
        assertThrows(try Folds.read(from: url), containing: ["line 2", "did you mean 'Normal'"])
        try "patientId,class,fold\na,Normal,0\nb,Normal,5\n".write(to: url, atomically: true, encoding: .utf8)
        assertThrows(try Folds.read(from: url, expectedCount: 4), containing: ["line 3", "0...3"])
        try "patientId,fold\na,0\n".write(to: url, atomically: true, encoding: .utf8)
        assertThrows(try Folds.read(from: url), containing: ["patientId,class,fold"])
        assertThrows(try Folds.stratified([(id: "a", imageClass: .normal)], count: 1), containing: ["folds", "at least 2"])
    }
}
