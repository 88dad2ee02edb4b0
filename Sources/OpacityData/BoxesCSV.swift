import Foundation
import OpacityCore

/// A generic dataset: any folder of images (DICOM, PNG, JPEG) with a CSV of boxes.
///
/// The CSV has one row per box, or one row with empty coordinates for an image without
/// boxes. Columns (names case-insensitive, any order, extra columns ignored):
/// - the image: `image`, `file`, `filename`, `path`, `patientId` or `id`: a path relative
///   to the image folder (`a/b.png`) or a bare id looked up as `{id}.dcm` / `.png` / `.jpg`;
/// - the box, either `x,y,width,height` (also `w,h`) or corners `x1,y1,x2,y2` (also
///   `xmin,ymin,xmax,ymax`), in the image's own pixels;
/// - optionally `class` (or `label`): a class label as in the RSNA class-info file or its
///   index 0, 1, 2. Without it (or where it is empty), images with boxes are "Lung Opacity"
///   and the class of the others is not known (``DatasetRecord/imageClass`` `nil`).
public enum BoxesCSV {
    /// Options for ``load(csv:imageFolder:options:)``.
    public struct Options: Sendable {
        /// What to do with missing or unreadable images.
        public var problemImages: ProblemImagePolicy
        /// How thoroughly to check the images.
        public var imageCheck: ImageCheck
        /// Defaults: fail on problem images, check existence only.
        public init(problemImages: ProblemImagePolicy = .fail, imageCheck: ImageCheck = .exists) {
            self.problemImages = problemImages
            self.imageCheck = imageCheck
        }
    }

    /// Accepted names of the image column.
    public static let imageColumns = ["image", "file", "filename", "path", "patientId", "id"]

    /// Loads the CSV and matches it to the images.
    /// - Parameters:
    ///   - csv: the boxes file.
    ///   - imageFolder: the folder the image column is relative to.
    ///   - options: problem-image policy and checks.
    /// - Returns: one record per image, in order of first appearance.
    /// - Throws: ``DataError`` naming the file, line and column of the first bad value;
    ///   ``DataError/imageProblems(missing:unreadable:examples:named:folder:)`` as for RSNA.
    public static func load(csv: URL, imageFolder: URL, options: Options = Options()) throws -> DetectionDataset {
        let t = try CSVTable(contentsOf: csv)
        let path = csv.path
        let columns = try self.columns(of: t)
        let ic = columns.image, cc = columns.imageClass
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: imageFolder.path, isDirectory: &isDir), isDir.boolValue else {
            throw DataError.missingFile(path: imageFolder.path, expected: "the image folder the CSV's '\(t.header[ic])' column is relative to")
        }
        let index = indexImages(in: imageFolder)
        var order: [String] = []
        var entries: [String: (boxes: [BoundingBox], cls: ImageClass?, line: Int)] = [:]
        var report = DatasetReport()
        report.labelRows = t.rows.count
        let labels = ImageClass.allCases.map(\.label)
        for (line, f) in t.rows {
            let id = f[ic].trimmingCharacters(in: .whitespaces)
            guard !id.isEmpty else {
                throw DataError.csvValue(path: path, line: line, column: t.header[ic], value: "", expected: "an image name", nearest: nil)
            }
            var e = entries[id] ?? (boxes: [], cls: nil, line: line)
            if entries[id] == nil { order.append(id) }
            if let cc {
                let s = f[cc].trimmingCharacters(in: .whitespaces)
                if !s.isEmpty {
                    guard let c = ImageClass(label: s) ?? Int(s).flatMap(ImageClass.init(rawValue:)) else {
                        throw DataError.csvValue(path: path, line: line, column: t.header[cc], value: s,
                                                 expected: "a class label (\(labels.joined(separator: ", "))) or 0, 1, 2",
                                                 nearest: nearestName(s, in: labels))
                    }
                    if let old = e.cls, old != c {
                        throw DataError.inconsistentLabels(path: path, line: line,
                                                           reason: "image \(id) is '\(c.label)' here but '\(old.label)' on line \(e.line)")
                    }
                    e.cls = c
                }
            }
            guard let box = try self.box(f, line: line, in: t, columns: columns) else {
                entries[id] = e
                continue
            }
            if e.boxes.contains(box) { report.duplicateRowsRemoved += 1 } else { e.boxes.append(box) }
            entries[id] = e
        }
        var records: [DatasetRecord] = []
        for id in order {
            let e = entries[id]!
            // without a class, an image without boxes is "Normal" or "Not Normal": not known which
            let cls: ImageClass? = e.cls ?? (e.boxes.isEmpty ? nil : .lungOpacity)
            if !e.boxes.isEmpty, let cls, cls != .lungOpacity {
                throw DataError.inconsistentLabels(path: path, line: e.line,
                                                   reason: "image \(id) has boxes but class '\(cls.label)'; only 'Lung Opacity' images have boxes")
            }
            // A path relative to the folder when that file exists; otherwise a bare id looked
            // up by file stem, so ids with dots (DICOM UIDs such as 1.2.276.0.7230010...) are
            // ids, not names with an extension.
            let direct = imageFolder.appendingPathComponent(id)
            var isDirectory: ObjCBool = false
            let url: URL? = FileManager.default.fileExists(atPath: direct.path, isDirectory: &isDirectory) && !isDirectory.boolValue
                ? direct : index[id]
            records.append(DatasetRecord(id: id, imageURL: url, boxes: e.boxes, imageClass: cls))
            report.boxes += e.boxes.count
            if let cls { report.classCounts[cls.rawValue] += 1 } else { report.unknownClass += 1 }
        }
        report.patients = records.count
        let kept = try checkImages(records, check: options.imageCheck, policy: options.problemImages, folder: imageFolder, report: &report)
        return DetectionDataset(records: kept, report: report)
    }

    /// Where a boxes table keeps the image, the box and the class.
    struct Columns: Sendable {
        /// The image column.
        var image: Int
        /// The four box columns: `x, y, width, height`, or with ``corners`` `x1, y1, x2, y2`.
        var box: [Int]
        /// Whether ``box`` holds corners.
        var corners: Bool
        /// The class column, if any.
        var imageClass: Int?
    }

    /// Finds the columns of a boxes table by name (see ``BoxesCSV``); an RSNA labels file
    /// (`patientId,x,y,width,height,Target`) qualifies too.
    /// - Throws: ``DataError/csvHeader(path:found:expected:)`` when the image or box columns are missing.
    static func columns(of t: CSVTable) throws -> Columns {
        guard let ic = t.column(imageColumns) else {
            throw DataError.csvHeader(path: t.path, found: t.header, expected: ["image", "x", "y", "width", "height", "(class)"])
        }
        let cc = t.column(["class", "label"])
        if let x = t.column(["x"]), let y = t.column(["y"]), let w = t.column(["width", "w"]), let h = t.column(["height", "h"]) {
            return Columns(image: ic, box: [x, y, w, h], corners: false, imageClass: cc)
        }
        if let a = t.column(["x1", "xmin"]), let b = t.column(["y1", "ymin"]), let c = t.column(["x2", "xmax"]), let d = t.column(["y2", "ymax"]) {
            return Columns(image: ic, box: [a, b, c, d], corners: true, imageClass: cc)
        }
        throw DataError.csvHeader(path: t.path, found: t.header, expected: [t.header[ic], "x", "y", "width", "height", "(class)"])
    }

    /// The box of one row, or `nil` when its four box fields are empty (an image without boxes).
    /// - Parameters:
    ///   - f: the row's fields.
    ///   - line: its line in the file, for messages.
    ///   - t: the table (its path and header name the field in messages).
    ///   - columns: from ``columns(of:)``.
    /// - Throws: ``DataError/csvValue(path:line:column:value:expected:nearest:)`` for a field
    ///   that is not a finite number, or a box without positive size.
    static func box(_ f: [String], line: Int, in t: CSVTable, columns: Columns) throws -> BoundingBox? {
        let cols = columns.box
        let raw = cols.map { f[$0].trimmingCharacters(in: .whitespaces) }
        if raw.allSatisfy(\.isEmpty) { return nil }
        var v: [Float] = []
        for (k, s) in raw.enumerated() {
            guard let d = Float(s), d.isFinite else {
                throw DataError.csvValue(path: t.path, line: line, column: t.header[cols[k]], value: s,
                                         expected: "a number (or all four box columns empty)", nearest: nil)
            }
            v.append(d)
        }
        let box = columns.corners ? BoundingBox(x1: v[0], y1: v[1], x2: v[2], y2: v[3])
            : BoundingBox(x: v[0], y: v[1], width: v[2], height: v[3])
        guard box.width > 0, box.height > 0 else {
            throw DataError.csvValue(path: t.path, line: line, column: t.header[cols[box.width > 0 ? 3 : 2]],
                                     value: raw[box.width > 0 ? 3 : 2],
                                     expected: columns.corners ? "x2 > x1 and y2 > y1" : "a positive size", nearest: nil)
        }
        return box
    }
}
