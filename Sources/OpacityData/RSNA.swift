import Foundation
import OpacityCore

/// One patient of the RSNA labels: boxes (1024-px pixels) and class.
public struct RSNAPatient: Sendable, Hashable {
    /// `patientId`.
    public var id: String
    /// The patient's boxes, in label-file order, duplicates removed.
    public var boxes: [BoundingBox]
    /// The class from the class-info file; without that file "Lung Opacity" for a patient
    /// with boxes (`Target` 1) and `nil` (not known) for one without: `Target` 0 covers both
    /// "Normal" and "No Lung Opacity / Not Normal".
    public var imageClass: ImageClass?
    /// The line of the patient's first row in the labels file.
    public var line: Int
}

/// The two RSNA label files, parsed, validated and joined (no images involved).
///
/// `stage_2_train_labels.csv` has columns `patientId,x,y,width,height,Target`, one row per
/// box, empty coordinates and `Target` 0 for a patient without boxes.
/// `stage_2_detailed_class_info.csv` has `patientId,class`, one row per label row.
/// Rules checked: header exact; `Target` is 0 or 1; boxes have finite coordinates and
/// positive size; `Target` 0 rows have no coordinates; a patient is not both; every
/// patient has one class; `Target` 1 if and only if the class is "Lung Opacity". Exact
/// duplicate rows are removed and counted.
public struct RSNALabels: Sendable {
    /// Patients in order of first appearance in the labels file.
    public var patients: [RSNAPatient]
    /// Counts (images fields stay empty).
    public var report: DatasetReport

    /// The header of the labels file.
    public static let labelsHeader = ["patientId", "x", "y", "width", "height", "Target"]
    /// The header of the class-info file.
    public static let classInfoHeader = ["patientId", "class"]

    /// Parses and validates the label files.
    /// - Parameters:
    ///   - labels: `stage_2_train_labels.csv` (or a file of the same format).
    ///   - classInfo: `stage_2_detailed_class_info.csv`; when `nil`, patients with boxes are
    ///     "Lung Opacity" and the class of the others is `nil` (unknown: "Normal" and "No Lung
    ///     Opacity / Not Normal" cannot be told apart without it), counted in
    ///     ``DatasetReport/unknownClass``.
    /// - Throws: ``DataError`` naming the file, line and column of the first bad value.
    public static func load(labels: URL, classInfo: URL?) throws -> RSNALabels {
        try load(table: try CSVTable(contentsOf: labels), classInfo: classInfo)
    }

    /// Validates a labels file already read (see ``load(labels:classInfo:)``), so a pipe is
    /// read only once.
    /// - Parameters:
    ///   - table: the parsed labels file; its ``CSVTable/path`` names it in messages.
    ///   - classInfo: as in ``load(labels:classInfo:)``.
    /// - Throws: as ``load(labels:classInfo:)``.
    public static func load(table: CSVTable, classInfo: URL?) throws -> RSNALabels {
        try table.requireHeader(labelsHeader)
        var report = DatasetReport()
        report.labelRows = table.rows.count
        var order: [String] = []
        var byID: [String: (boxes: [BoundingBox], hasEmpty: Bool, line: Int, seen: Set<BoundingBox>)] = [:]
        let path = table.path
        for (line, f) in table.rows {
            let id = f[0].trimmingCharacters(in: .whitespaces)
            guard !id.isEmpty else {
                throw DataError.csvValue(path: path, line: line, column: "patientId", value: "", expected: "a non-empty id", nearest: nil)
            }
            let target = f[5].trimmingCharacters(in: .whitespaces)
            guard target == "0" || target == "1" else {
                throw DataError.csvValue(path: path, line: line, column: "Target", value: target, expected: "0 or 1",
                                         nearest: Double(target).map { $0 >= 0.5 ? "1" : "0" })
            }
            var entry = byID[id] ?? (boxes: [], hasEmpty: false, line: line, seen: [])
            if byID[id] == nil { order.append(id) }
            let coords = f[1...4].map { $0.trimmingCharacters(in: .whitespaces) }
            if target == "0" {
                if let bad = zip(["x", "y", "width", "height"], coords).first(where: { !$0.1.isEmpty }) {
                    throw DataError.inconsistentLabels(path: path, line: line,
                                                       reason: "Target is 0 but column '\(bad.0)' has '\(bad.1)'; a row without a box has empty x,y,width,height")
                }
                if !entry.boxes.isEmpty {
                    throw DataError.inconsistentLabels(path: path, line: line,
                                                       reason: "patient \(id) has boxes (line \(entry.line)) and also a Target 0 row")
                }
                if entry.hasEmpty { report.duplicateRowsRemoved += 1 }
                entry.hasEmpty = true
            } else {
                var v: [Float] = []
                for (name, s) in zip(["x", "y", "width", "height"], coords) {
                    guard let d = Float(s), d.isFinite else {
                        throw DataError.csvValue(path: path, line: line, column: name, value: s,
                                                 expected: "a number (Target is 1, so the row is a box)", nearest: nil)
                    }
                    v.append(d)
                }
                guard v[2] > 0, v[3] > 0 else {
                    throw DataError.csvValue(path: path, line: line, column: v[2] > 0 ? "height" : "width",
                                             value: v[2] > 0 ? coords[3] : coords[2],
                                             expected: "a positive size in pixels (the box runs right and down from x, y)", nearest: nil)
                }
                if entry.hasEmpty {
                    throw DataError.inconsistentLabels(path: path, line: line,
                                                       reason: "patient \(id) has a Target 0 row (line \(entry.line)) and also a box")
                }
                let box = BoundingBox(x: v[0], y: v[1], width: v[2], height: v[3])
                if entry.seen.contains(box) {
                    report.duplicateRowsRemoved += 1
                } else {
                    entry.seen.insert(box)
                    entry.boxes.append(box)
                }
            }
            byID[id] = entry
        }

        // Class info.
        var classes: [String: (ImageClass, Int)] = [:]
        if let ci = classInfo {
            let t = try CSVTable(contentsOf: ci)
            try t.requireHeader(classInfoHeader)
            let labelsList = ImageClass.allCases.map(\.label)
            for (line, f) in t.rows {
                let id = f[0].trimmingCharacters(in: .whitespaces)
                let label = f[1].trimmingCharacters(in: .whitespaces)
                guard let c = ImageClass(label: label) else {
                    throw DataError.csvValue(path: ci.path, line: line, column: "class", value: label,
                                             expected: "one of " + labelsList.map { "'\($0)'" }.joined(separator: ", "),
                                             nearest: nearestName(label, in: labelsList))
                }
                if let (old, oldLine) = classes[id], old != c {
                    throw DataError.inconsistentLabels(path: ci.path, line: line,
                                                       reason: "patient \(id) is '\(c.label)' here but '\(old.label)' on line \(oldLine)")
                }
                if classes[id] == nil { classes[id] = (c, line) }
            }
        }

        var patients: [RSNAPatient] = []
        patients.reserveCapacity(order.count)
        for id in order {
            let e = byID[id]!
            let cls: ImageClass?
            if classInfo != nil {
                guard let (c, _) = classes[id] else {
                    throw DataError.inconsistentLabels(path: classInfo!.path, line: 0,
                                                       reason: "patient \(id) (labels line \(e.line)) has no class row")
                }
                cls = c
                if (c == .lungOpacity) != !e.boxes.isEmpty {
                    throw DataError.inconsistentLabels(
                        path: path, line: e.line,
                        reason: "patient \(id) has \(Wording.count(e.boxes.count, "box", plural: "boxes")) (Target \(e.boxes.isEmpty ? 0 : 1)) but class '\(c.label)'; "
                            + "a patient has boxes if and only if its class is 'Lung Opacity'")
                }
            } else {
                // Target 0 is "Normal" or "No Lung Opacity / Not Normal": which, only the class file says
                cls = e.boxes.isEmpty ? nil : .lungOpacity
            }
            patients.append(RSNAPatient(id: id, boxes: e.boxes, imageClass: cls, line: e.line))
            report.boxes += e.boxes.count
            if let cls { report.classCounts[cls.rawValue] += 1 } else { report.unknownClass += 1 }
        }
        report.patients = patients.count
        return RSNALabels(patients: patients, report: report)
    }
}

/// The Kaggle RSNA Pneumonia Detection folder as downloaded (or a synthetic set written
/// in the same layout).
///
/// Layout: `<root>/stage_2_train_labels.csv`, `<root>/stage_2_detailed_class_info.csv`,
/// and an image folder `<root>/stage_2_train_images/` of `{patientId}.dcm` (or `.png`).
/// Stage-1 names and the folders `train_images`, `train`, `images` are accepted too.
public enum RSNADataset {
    /// Options for ``load(root:options:)``.
    public struct Options: Sendable {
        /// The labels CSV; found under the root when `nil`.
        public var labelsFile: URL?
        /// The class-info CSV; found under the root when `nil` (optional).
        public var classInfoFile: URL?
        /// The image folder; found under the root when `nil`.
        public var imageFolder: URL?
        /// What to do with missing or unreadable images.
        public var problemImages: ProblemImagePolicy
        /// How thoroughly to check the images.
        public var imageCheck: ImageCheck

        /// Options; the defaults find everything under the root, fail on problem images
        /// and only check that files exist.
        public init(labelsFile: URL? = nil, classInfoFile: URL? = nil, imageFolder: URL? = nil,
                    problemImages: ProblemImagePolicy = .fail, imageCheck: ImageCheck = .exists) {
            self.labelsFile = labelsFile
            self.classInfoFile = classInfoFile
            self.imageFolder = imageFolder
            self.problemImages = problemImages
            self.imageCheck = imageCheck
        }
    }

    /// Label file names tried under the root, in order.
    public static let labelsNames = ["stage_2_train_labels.csv", "stage_1_train_labels.csv", "train_labels.csv"]
    /// Class-info file names tried under the root, in order.
    public static let classInfoNames = ["stage_2_detailed_class_info.csv", "stage_1_detailed_class_info.csv", "detailed_class_info.csv"]
    /// Image folder names tried under the root, in order.
    public static let imageFolderNames = ["stage_2_train_images", "stage_1_train_images", "train_images", "train", "images"]

    /// Loads the labels and matches them to the image files.
    /// - Parameters:
    ///   - root: the dataset folder.
    ///   - options: file overrides and the problem-image policy.
    /// - Returns: one record per patient (boxes in source 1024-px pixels) and a report.
    /// - Throws: ``DataError/missingFile(path:expected:)`` for a missing labels file or
    ///   image folder, label validation errors (see ``RSNALabels``), and
    ///   ``DataError/imageProblems(missing:unreadable:examples:named:folder:)`` when images are missing
    ///   or unreadable and the policy is ``ProblemImagePolicy/fail``.
    public static func load(root: URL, options: Options = Options()) throws -> DetectionDataset {
        let fm = FileManager.default
        func find(_ names: [String]) -> URL? {
            names.map { root.appendingPathComponent($0) }.first { fm.fileExists(atPath: $0.path) }
        }
        guard let labelsURL = options.labelsFile ?? find(labelsNames) else {
            var expected = "the RSNA labels CSV (one of \(labelsNames.joined(separator: ", ")))"
            if let zip = find(labelsNames.map { $0 + ".zip" }) {
                expected += "; found \(zip.lastPathComponent): unzip it first (unzip \(zip.lastPathComponent))"
            }
            throw DataError.missingFile(path: root.appendingPathComponent(labelsNames[0]).path, expected: expected)
        }
        let classURL = options.classInfoFile ?? find(classInfoNames)
        var folder = options.imageFolder
        if folder == nil {
            folder = imageFolderNames.map { root.appendingPathComponent($0) }.first {
                var d: ObjCBool = false
                return fm.fileExists(atPath: $0.path, isDirectory: &d) && d.boolValue
            }
        }
        guard let imageFolder = folder else {
            throw DataError.missingFile(path: root.appendingPathComponent(imageFolderNames[0]).path,
                                        expected: "an image folder (one of \(imageFolderNames.joined(separator: ", "))) of {patientId}.dcm or .png")
        }
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: imageFolder.path, isDirectory: &isDir), isDir.boolValue else {
            throw DataError.missingFile(path: imageFolder.path, expected: "a folder of {patientId}.dcm or .png images")
        }
        let labels = try RSNALabels.load(labels: labelsURL, classInfo: classURL)
        let index = indexImages(in: imageFolder)
        var report = labels.report
        let records = labels.patients.map {
            DatasetRecord(id: $0.id, imageURL: index[$0.id], boxes: $0.boxes, imageClass: $0.imageClass)
        }
        let ids = Set(labels.patients.map(\.id))
        report.unlabelledImages = index.keys.filter { !ids.contains($0) }.count
        let kept = try checkImages(records, check: options.imageCheck, policy: options.problemImages, folder: imageFolder, report: &report)
        return DetectionDataset(records: kept, report: report)
    }
}
