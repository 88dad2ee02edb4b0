import Foundation
import OpacityCore
import OpacityData

/// A Kaggle RSNA submission: `patientId,PredictionString` with `conf x y w h` groups in
/// 1024-pixel coordinates.
public struct Submission: Sendable, Equatable {
    /// Predictions per patient, in file order.
    public var rows: [(patientId: String, detections: [Detection])]

    public init(rows: [(patientId: String, detections: [Detection])]) { self.rows = rows }

    public static func == (a: Submission, b: Submission) -> Bool {
        a.rows.count == b.rows.count && zip(a.rows, b.rows).allSatisfy { $0.patientId == $1.patientId && $0.detections == $1.detections }
    }

    /// The CSV text, header first; each row's boxes as ``predictionString(_:)`` writes them
    /// (written through ``CSVTable/render(header:rows:)``).
    public var csv: String {
        CSVTable.render(header: ["patientId", "PredictionString"], rows: rows.map { id, dets in [id, Self.predictionString(dets)] })
    }

    /// The five numbers of a box group in a `PredictionString`, as errors name them.
    static let groupFields = ["conf", "x", "y", "w", "h"]

    /// A Kaggle `PredictionString`: `{score:.3f} {x:.1f} {y:.1f} {w:.1f} {h:.1f}` per box (pixels),
    /// separated by spaces; empty for no box. `opacity submit` and `opacity serve`'s
    /// `format=kaggle` both write it, so the two give the same row for the same detections.
    public static func predictionString(_ detections: [Detection]) -> String {
        detections.map { String(format: "%.3f %.1f %.1f %.1f %.1f", $0.score, $0.box.x, $0.box.y, $0.box.width, $0.box.height) }
            .joined(separator: " ")
    }

    /// Reads a submission CSV: a regular file, a pipe, a FIFO or `/dev/stdin`, read once with
    /// the line check on each piece before it is kept (``CSVTable/readChecked(_:what:)``).
    /// - Throws: `DataError.missingFile` when there is no such file; `DataError.unreadableFile`
    ///   when it cannot be read (a folder, more than `InputLimits.csvFileBytes`, a read error);
    ///   `DataError.csvLineTooLong` for an over-long line; ``SubmissionError`` naming the file, line
    ///   and field that is wrong (a number that does not parse or is not finite, a negative box
    ///   width or height).
    public init(contentsOf url: URL) throws {
        let data = try CSVTable.readChecked(url, what: "a submission CSV (patientId,PredictionString)")
        try self.init(data: data, file: url.path)
    }

    /// Parses submission CSV text (`file` names it in errors).
    public init(csv text: String, file: String = "<text>") throws {
        try self.init(data: Data(text.utf8), file: file)
    }

    /// Parses submission CSV bytes (RFC 4180 quoting, CRLF, a UTF-8 byte-order mark, as
    /// ``CSVTable`` reads them); `file` names it in errors.
    /// - Throws: ``SubmissionError`` naming the line and field.
    public init(data: Data, file: String = "<text>") throws {
        let table: CSVTable
        do { table = try CSVTable(data: data, path: file) } catch let e as DataError {
            if case let .csvLineTooLong(_, line, _, _, _, _, _) = e, let reason = e.csvLineTooLongReason {
                throw SubmissionError(file: file, line: line, message: reason)
            }
            if case let .csvValue(_, line, _, _, expected, _) = e, expected.contains("fields") {
                throw SubmissionError(file: file, line: line, message: "expected 2 fields (patientId,PredictionString)")
            }
            if case let .csvValue(_, line, column, value, expected, _) = e {
                throw SubmissionError(file: file, line: line, column: column == "-" ? nil : column, message: "'\(value)' is not valid; expected \(expected)")
            }
            throw SubmissionError(file: file, line: 0, message: e.description)
        }
        guard !table.header.isEmpty else {
            throw SubmissionError(file: file, line: 1, message: "empty file; expected the header patientId,PredictionString")
        }
        guard table.header == ["patientId", "PredictionString"] else {
            throw SubmissionError(file: file, line: 1, message: "header is '\(InputLimits.quoted(table.header.joined(separator: ",")))'; expected 'patientId,PredictionString'")
        }
        var rows: [(String, [Detection])] = []
        var seen = Set<String>()
        for (n, f) in table.rows {
            let id = f[0].trimmingCharacters(in: .whitespaces)
            guard !id.isEmpty else { throw SubmissionError(file: file, line: n, column: "patientId", message: "empty; expected a patient id") }
            guard seen.insert(id).inserted else {
                throw SubmissionError(file: file, line: n, column: "patientId", message: "'\(InputLimits.quoted(id))' appears twice")
            }
            let fields = f[1].split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count % 5 == 0 else {
                throw SubmissionError(file: file, line: n, column: "PredictionString", message: "\(fields.count) numbers; expected groups of 5 (conf x y w h)")
            }
            var dets: [Detection] = []
            for g in stride(from: 0, to: fields.count, by: 5) {
                let v = try (0..<5).map { k -> Float in
                    guard let x = Float(fields[g + k]), x.isFinite else {
                        throw SubmissionError(file: file, line: n, column: "PredictionString", message: "'\(InputLimits.quoted(fields[g + k]))' is not a number (group \(g / 5 + 1), field \(Self.groupFields[k]))")
                    }
                    return x
                }
                // A negative width or height is no box (the reference metric asserts w * h > 0);
                // zero stays readable: a box narrower than 0.05 px is written as 0.0. Scores are
                // only ranked, so any finite one reads.
                for k in 3...4 where v[k] < 0 {
                    throw SubmissionError(
                        file: file, line: n, column: "PredictionString",
                        message: "\(Self.groupFields[k]) is \(InputLimits.quoted(fields[g + k])) in group \(g / 5 + 1); expected a \(k == 3 ? "width" : "height") of 0 or more pixels (nearest valid: 0)")
                }
                dets.append(Detection(box: BoundingBox(x: v[1], y: v[2], width: v[3], height: v[4]), score: v[0]))
            }
            rows.append((id, dets))
        }
        self.rows = rows
    }

    /// Writes the CSV atomically.
    public func write(to url: URL) throws {
        try Data(csv.utf8).write(to: url, options: .atomic)
    }
}

/// A malformed submission file, located as every CSV error is (``DataError``'s format):
/// `'file' line N, column 'name': message`.
public struct SubmissionError: Error, CustomStringConvertible, Sendable {
    /// The file's path.
    public let file: String
    /// The 1-based line (the header is line 1), or 0 for the whole file.
    public let line: Int
    /// The column's header name, or `nil` for a whole row or the file.
    public let column: String?
    /// What is wrong and what was expected.
    public let message: String

    /// - Parameters: see the properties.
    public init(file: String, line: Int, column: String? = nil, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    public var description: String {
        "'\(file)'" + (line > 0 ? " line \(line)" : "") + (column.map { ", column '\($0)'" } ?? "") + ": \(message)"
    }
}

/// Scores a submission against ground truth with the challenge metric.
public struct SubmissionScore: Sendable {
    /// The mean over counted images; 0 when no image counts (see ``metric``).
    public var score: Double
    /// The mean over counted images, or `nil` when no image counts: every image has neither
    /// truth nor predicted boxes (the RSNA metric leaves such an image out of its mean, as
    /// the reference `map_iou` does, so on negatives-only labels it is undefined, not 0).
    public var metric: Double? { counted == 0 ? nil : score }
    /// Images that count: with truth boxes, or with predicted boxes, or both.
    public var counted: Int { perImage.filter { $0.score != nil }.count }
    /// Labelled images without truth boxes (negatives).
    public var negatives: Int
    /// Negatives on which the submission predicts no box (left out of the metric).
    public var emptyNegatives: Int
    /// Per patient: the image score, or `nil` when excluded (no truth, no prediction).
    public var perImage: [(patientId: String, score: Double?)]
    /// Patients in the truth but not in the submission (scored as empty predictions).
    public var missing: [String]
    /// Patients in the submission but not in the truth (ignored).
    public var unknown: [String]

    /// - Parameters:
    ///   - truth: boxes per patient (patients without boxes map to `[]`).
    public init(submission: Submission, truth: [String: [BoundingBox]]) {
        var pred: [String: [Detection]] = [:]
        for (id, d) in submission.rows { pred[id] = d }
        unknown = submission.rows.map(\.patientId).filter { truth[$0] == nil }
        missing = truth.keys.filter { pred[$0] == nil }.sorted()
        perImage = truth.keys.sorted().map { id in (id, RSNAMetric.imageScore(truth: truth[id]!, predictions: pred[id] ?? [])) }
        let counted = perImage.compactMap(\.score)
        score = counted.isEmpty ? 0 : counted.reduce(0, +) / Double(counted.count)
        negatives = truth.values.filter(\.isEmpty).count
        emptyNegatives = truth.filter { $0.value.isEmpty && (pred[$0.key] ?? []).isEmpty }.count
    }
}

extension SubmissionScore {
    /// The metric per view position (AP, PA, ...): per view its images, those with truth
    /// boxes, the images that count and the mean of their scores (``EvaluationReport/ByView/View``
    /// without the threshold sweep or classifier, which a submission does not have).
    /// - Parameters:
    ///   - views: view per patient id (``ViewPositions/views``; a folds file's `view` column).
    ///   - truth: the boxes per patient given to ``init(submission:truth:)``.
    /// - Returns: one entry per view, sorted by name; patients of unknown view last, as
    ///   `unknown`; empty when no scored patient's view is known.
    public func byView(_ views: [String: String], truth: [String: [BoundingBox]]) -> [EvaluationReport.ByView.View] {
        let unknown = "unknown"
        let known = views.compactMapValues { ViewPositions.normalized($0) }
        guard perImage.contains(where: { known[$0.patientId] != nil }) else { return [] }
        var names = Set(perImage.compactMap { known[$0.patientId] }).sorted()
        if perImage.contains(where: { known[$0.patientId] == nil }) { names.append(unknown) }
        return names.map { name in
            let g = perImage.filter { (known[$0.patientId] ?? unknown) == name }
            let scores = g.compactMap(\.score)
            let boxes = g.map { truth[$0.patientId]?.count ?? 0 }
            var row = EvaluationReport.ByView.View(
                view: name, images: g.count, imagesWithOpacity: boxes.filter { $0 > 0 }.count, truthBoxes: boxes.reduce(0, +))
            row.scoredImages = scores.count
            row.metric = scores.isEmpty ? nil : scores.reduce(0, +) / Double(scores.count)
            return row
        }
    }
}
