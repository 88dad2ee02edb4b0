import Foundation
import OpacityCore

/// A Kaggle RSNA submission: `patientId,PredictionString` with `conf x y w h` groups in
/// 1024-pixel coordinates.
public struct Submission: Sendable, Equatable {
    /// Predictions per patient, in file order.
    public var rows: [(patientId: String, detections: [Detection])]

    public init(rows: [(patientId: String, detections: [Detection])]) { self.rows = rows }

    public static func == (a: Submission, b: Submission) -> Bool {
        a.rows.count == b.rows.count && zip(a.rows, b.rows).allSatisfy { $0.patientId == $1.patientId && $0.detections == $1.detections }
    }

    /// The CSV text, header first; boxes as `{score:.3f} {x:.1f} {y:.1f} {w:.1f} {h:.1f}`.
    public var csv: String {
        var s = "patientId,PredictionString\n"
        for (id, dets) in rows {
            s += id + ","
            s += dets.map { String(format: "%.3f %.1f %.1f %.1f %.1f", $0.score, $0.box.x, $0.box.y, $0.box.width, $0.box.height) }
                .joined(separator: " ")
            s += "\n"
        }
        return s
    }

    /// Reads a submission CSV.
    /// - Throws: ``SubmissionError`` naming the file, line and field that is wrong.
    public init(contentsOf url: URL) throws {
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw SubmissionError(file: url.path, line: 0, message: "cannot read the file: \(error.localizedDescription)")
        }
        try self.init(csv: text, file: url.path)
    }

    /// Parses submission CSV text (`file` names it in errors).
    public init(csv text: String, file: String = "<text>") throws {
        var lines = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).map(String.init)
        while let last = lines.last, last.trimmingCharacters(in: .whitespaces).isEmpty { lines.removeLast() }
        guard let header = lines.first else { throw SubmissionError(file: file, line: 1, message: "empty file; expected the header patientId,PredictionString") }
        let h = header.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "\u{feff}", with: "")
        guard h == "patientId,PredictionString" else {
            throw SubmissionError(file: file, line: 1, message: "header is '\(h)'; expected 'patientId,PredictionString'")
        }
        var rows: [(String, [Detection])] = []
        var seen = Set<String>()
        for (i, line) in lines.enumerated().dropFirst() {
            let n = i + 1
            guard let comma = line.firstIndex(of: ",") else {
                throw SubmissionError(file: file, line: n, message: "no comma; expected patientId,PredictionString")
            }
            let id = String(line[..<comma]).trimmingCharacters(in: .whitespaces)
            guard !id.isEmpty else { throw SubmissionError(file: file, line: n, message: "empty patientId") }
            guard seen.insert(id).inserted else { throw SubmissionError(file: file, line: n, message: "patientId \(id) appears twice") }
            let fields = line[line.index(after: comma)...].split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count % 5 == 0 else {
                throw SubmissionError(file: file, line: n, message: "PredictionString has \(fields.count) numbers; expected groups of 5 (conf x y w h)")
            }
            var dets: [Detection] = []
            for g in stride(from: 0, to: fields.count, by: 5) {
                let v = try (0..<5).map { k -> Float in
                    guard let x = Float(fields[g + k]), x.isFinite else {
                        throw SubmissionError(file: file, line: n, message: "'\(fields[g + k])' is not a number (group \(g / 5 + 1), field \(["conf", "x", "y", "w", "h"][k]))")
                    }
                    return x
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

/// A malformed submission file.
public struct SubmissionError: Error, CustomStringConvertible, Sendable {
    public let file: String
    public let line: Int
    public let message: String
    public var description: String { "\(file):\(line): \(message)" }
}

/// Scores a submission against ground truth with the challenge metric.
public struct SubmissionScore: Sendable {
    /// The mean over counted images.
    public var score: Double
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
    }
}
