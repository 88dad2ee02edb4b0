import Foundation
import OpacityCore

/// One labelled image of a detection dataset: where its pixels are, its boxes (in the
/// image's own pixels, top-left + size) and its 3-way class when the labels give it.
public struct DatasetRecord: Sendable, Hashable {
    /// The patient or image id (RSNA `patientId`).
    public var id: String
    /// The image file, or `nil` when it is missing.
    public var imageURL: URL?
    /// Ground-truth boxes in source-image pixels; empty for images without opacity.
    public var boxes: [BoundingBox]
    /// The image-level class, or `nil` when the labels do not give it (RSNA labels without
    /// the class-info file, a boxes CSV without a class column, for an image without boxes:
    /// it is "Normal" or "No Lung Opacity / Not Normal", nobody said which).
    public var imageClass: ImageClass?

    /// A record.
    public init(id: String, imageURL: URL?, boxes: [BoundingBox], imageClass: ImageClass?) {
        self.id = id
        self.imageURL = imageURL
        self.boxes = boxes
        self.imageClass = imageClass
    }
}

extension DatasetRecord {
    /// Whether `b` reaches beyond a `width` x `height` image by more than 1% of its size (plus
    /// one pixel): the rule of ``checkBoxes(width:height:)``, shared with `convert --labels`.
    static func reachesBeyond(_ b: BoundingBox, width: Int, height: Int) -> Bool {
        let tx = Float(width) * 0.01 + 1, ty = Float(height) * 0.01 + 1
        return b.x < -tx || b.y < -ty || b.x2 > Float(width) + tx || b.y2 > Float(height) + ty
    }

    /// Refuses boxes that reach beyond the image by more than 1% of its size (labels in
    /// another resolution, e.g. 1024-pixel coordinates on 512-pixel images).
    /// - Throws: ``DataError/inconsistentLabels(path:line:reason:)`` naming the record, the box
    ///   and the image size.
    public func checkBoxes(width: Int, height: Int) throws {
        for b in boxes where Self.reachesBeyond(b, width: width, height: height) {
            throw DataError.inconsistentLabels(
                path: imageURL?.path ?? id, line: 0,
                reason: "the box (x \(b.x), y \(b.y), w \(b.width), h \(b.height)) of \(id) reaches beyond its \(width) x \(height) image; "
                    + "are the labels in another resolution?")
        }
    }
}

/// What to do with images the labels name but which are missing or cannot be decoded.
public enum ProblemImagePolicy: String, Sendable, CaseIterable {
    /// Throw ``DataError/imageProblems(missing:unreadable:examples:named:folder:)`` listing them together.
    case fail
    /// Drop them from the dataset and list them in the ``DatasetReport``.
    case skip
}

/// How thoroughly a loader checks the image files.
public enum ImageCheck: String, Sendable, CaseIterable {
    /// Only that the file exists (fast: one directory listing).
    case exists
    /// That the file exists and its header parses (DICOM header / PNG signature).
    case header
    /// That the image fully decodes (slow: reads every pixel).
    case decode
}

/// A summary of what a dataset loader read, fixed and dropped.
public struct DatasetReport: Sendable, Equatable, CustomStringConvertible {
    /// Data rows in the labels CSV.
    public var labelRows = 0
    /// Distinct patients (images) in the labels.
    public var patients = 0
    /// Boxes after duplicate removal.
    public var boxes = 0
    /// Exact duplicate label rows removed.
    public var duplicateRowsRemoved = 0
    /// Patients per class, indexed by ``ImageClass/rawValue`` (those of known class).
    public var classCounts = [0, 0, 0]
    /// Patients whose class the labels do not give (no class-info file or class column;
    /// all without boxes: "Normal" or "No Lung Opacity / Not Normal").
    public var unknownClass = 0
    /// Ids whose image file was not found.
    public var missingImages: [String] = []
    /// Ids whose image failed to decode, with the reason.
    public var unreadableImages: [String: String] = [:]
    /// Image files in the folder that no label names.
    public var unlabelledImages = 0

    /// An empty report.
    public init() {}

    /// Several lines of counts, then the first few problem images.
    public var description: String {
        var s = "\(Wording.count(labelRows, "label row")), \(Wording.count(patients, "patient")), \(Wording.count(boxes, "box", plural: "boxes"))"
        s += "; classes: " + ImageClass.allCases.map { "\($0.label) \(classCounts[$0.rawValue])" }.joined(separator: ", ")
        if unknownClass > 0 { s += ", class not given (no boxes, no class file) \(unknownClass)" }
        if duplicateRowsRemoved > 0 { s += "\n\(duplicateRowsRemoved) duplicate label rows removed" }
        if !missingImages.isEmpty || !unreadableImages.isEmpty {
            s += "\n\(missingImages.count) missing and \(unreadableImages.count) unreadable images"
            let ex = missingImages.prefix(3).map { "\($0) (missing)" }
                + unreadableImages.sorted { $0.key < $1.key }.prefix(3).map { "\($0.key) (\($0.value))" }
            if !ex.isEmpty { s += ", e.g. " + ex.joined(separator: "; ") }
        }
        if unlabelledImages > 0 { s += "\n" + (unlabelledImages == 1 ? "1 image in the folder has no label" : "\(unlabelledImages) images in the folder have no label") }
        return s
    }
}

/// A labelled set of images: records in a stable order plus the loader's report.
public struct DetectionDataset: Sendable {
    /// The records, in label-file order of first appearance.
    public var records: [DatasetRecord]
    /// What the loader found.
    public var report: DatasetReport

    /// A dataset from records.
    public init(records: [DatasetRecord], report: DatasetReport = DatasetReport()) {
        self.records = records
        self.report = report
    }

    /// The number of records.
    public var count: Int { records.count }

    /// The records whose ids are in `ids`, in this dataset's order.
    public func subset(ids: Set<String>) -> DetectionDataset {
        DetectionDataset(records: records.filter { ids.contains($0.id) }, report: report)
    }

    /// Patients per class, indexed by ``ImageClass/rawValue`` (records of unknown class are
    /// not counted: see ``unknownClassCount``).
    public var classCounts: [Int] {
        var c = [0, 0, 0]
        for r in records { if let k = r.imageClass { c[k.rawValue] += 1 } }
        return c
    }

    /// Records whose class the labels do not give.
    public var unknownClassCount: Int { records.filter { $0.imageClass == nil }.count }
}

// MARK: - Implementation details

/// Checks the image files of `records` and applies `policy`.
/// `folder` is the image folder, for the message.
func checkImages(_ records: [DatasetRecord], check: ImageCheck, policy: ProblemImagePolicy, folder: URL,
                 report: inout DatasetReport) throws -> [DatasetRecord] {
    var kept: [DatasetRecord] = []
    kept.reserveCapacity(records.count)
    var examples: [String] = []
    for r in records {
        guard let url = r.imageURL else {
            report.missingImages.append(r.id)
            if examples.count < 5 { examples.append("\(r.id) (missing)") }
            continue
        }
        if check != .exists {
            do {
                if check == .header {
                    if url.pathExtension.lowercased() == "png" {
                        let h = try FileHandle(forReadingFrom: url)
                        let sig = h.readData(ofLength: 8)
                        try? h.close()
                        if !sig.starts(with: [0x89, 0x50, 0x4E, 0x47]) {
                            throw DataError.pngFailed(path: url.path, reason: "no PNG signature")
                        }
                    } else if ["dcm", "dicom"].contains(url.pathExtension.lowercased()) {
                        _ = try DICOM.readHeader(url)
                    }
                } else {
                    _ = try ImageFile.read(url)
                }
            } catch {
                report.unreadableImages[r.id] = "\(error)"
                if examples.count < 5 { examples.append("\(r.id) (\(error))") }
                continue
            }
        }
        kept.append(r)
    }
    if policy == .fail && (!report.missingImages.isEmpty || !report.unreadableImages.isEmpty) {
        throw DataError.imageProblems(missing: report.missingImages.count, unreadable: report.unreadableImages.count,
                                      examples: examples, named: records.count, folder: folder.path)
    }
    return kept
}

/// Image files in `folder` keyed by file name without extension (one directory listing).
func indexImages(in folder: URL) -> [String: URL] {
    var map: [String: URL] = [:]
    let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
    // Prefer DICOM over PNG over JPEG when several exist for one id.
    let rank: [String: Int] = ["dcm": 0, "dicom": 0, "png": 1, "jpg": 2, "jpeg": 2]
    for n in names.sorted() {
        let ext = (n as NSString).pathExtension.lowercased()
        guard let r = rank[ext] else { continue }
        let stem = (n as NSString).deletingPathExtension
        if let existing = map[stem], rank[existing.pathExtension.lowercased()]! <= r { continue }
        map[stem] = folder.appendingPathComponent(n)
    }
    return map
}
