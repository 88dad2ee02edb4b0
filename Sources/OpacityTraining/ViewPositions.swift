import Foundation
import OpacityData

/// The view position (`AP`, `PA`, ...) of each evaluated image and where it came from, for the
/// report's per-view numbers (``EvaluationReport/ByView``).
///
/// In the RSNA labels the view is confounded with the class (positives are mostly AP films,
/// negatives mostly PA), so a metric over both views can hide a model that learnt the view.
public struct ViewPositions: Sendable {
    /// Upper-case view position per image id (images of unknown view are absent).
    public var views: [String: String]
    /// Where the views came from, as printed (e.g. `DICOM ViewPosition (0018,5101)`); `nil`
    /// when no view is known.
    public var source: String?
    /// Why no view is known (``views`` empty), else `nil`.
    public var unavailableReason: String?

    /// Views given directly.
    /// - Parameters:
    ///   - views: view per image id (upper-cased here; empty values dropped).
    ///   - source: where they came from.
    ///   - unavailableReason: why there are none, when `views` is empty.
    public init(views: [String: String], source: String?, unavailableReason: String? = nil) {
        self.views = views.compactMapValues { Self.normalized($0) }
        self.source = self.views.isEmpty ? nil : source
        self.unavailableReason = self.views.isEmpty ? (unavailableReason ?? "no view positions were given") : nil
    }

    /// A view position as compared and reported: trimmed, upper case; `nil` when empty.
    public static func normalized(_ view: String?) -> String? {
        guard let v = view?.trimmingCharacters(in: .whitespaces).uppercased(), !v.isEmpty else { return nil }
        return v
    }

    /// The (0018,5101) ViewPosition of an image file, as ``normalized(_:)`` gives it; `nil`
    /// for a file that is not DICOM (by its `.dcm` extension) or has no ViewPosition.
    /// `opacity folds --stratify view` and `opacity eval` read views through it alike.
    /// - Throws: the DICOM reader's ``DataError`` naming the file when its header does not read.
    public static func dicomView(of url: URL) throws -> String? {
        guard url.pathExtension.lowercased() == "dcm" else { return nil }
        return normalized(try DICOM.readHeader(url).viewPosition)
    }

    /// The views of dataset records: each DICOM file's (0018,5101) ViewPosition, else the
    /// folds file's `view` column (``Folds/views``), else unknown.
    ///
    /// A DICOM header that does not read is an error naming the file, as in `opacity folds
    /// --stratify view` (the images passed are those scored, whose files did read; a header
    /// that no longer does is worth stopping for, not an image silently of unknown view).
    /// - Throws: ``dicomView(of:)``'s error.
    /// - Parameters:
    ///   - records: the images scored.
    ///   - folds: a folds file read with ``Folds/read(from:expectedCount:)``, or `nil`.
    ///   - foldsPath: its path, for the description.
    public static func of(_ records: [DatasetRecord], folds: Folds?, foldsPath: String?) throws -> ViewPositions {
        var views: [String: String] = [:]
        var fromDICOM = 0, fromFolds = 0, dicomFiles = 0
        for r in records {
            if let url = r.imageURL, url.pathExtension.lowercased() == "dcm" {
                dicomFiles += 1
                if let v = try dicomView(of: url) {
                    views[r.id] = v
                    fromDICOM += 1
                    continue
                }
            }
            if let v = normalized(folds?.views[r.id]) {
                views[r.id] = v
                fromFolds += 1
            }
        }
        let dicomSource = "DICOM ViewPosition (0018,5101)"
        let foldsSource = "the view column of \(foldsPath ?? "the folds file")"
        if views.isEmpty {
            var why: [String] = []
            if dicomFiles > 0 { why.append("none of the \(dicomFiles) DICOM images has a (0018,5101) ViewPosition") }
            if dicomFiles < records.count {
                why.append(dicomFiles > 0 ? "the other images are not DICOM" : "the images are not DICOM (no ViewPosition header)")
            }
            if let folds {
                why.append(
                    folds.views.isEmpty
                        ? "the folds file \(foldsPath ?? "") has no view column" : "the folds file \(foldsPath ?? "") gives no view for these images")
            } else if dicomFiles < records.count {
                why.append("no folds file with a view column was given (--folds-file; `opacity folds --stratify view` writes one from the DICOM files)")
            }
            return ViewPositions(views: [:], source: nil, unavailableReason: why.joined(separator: ", and "))
        }
        let source = fromFolds == 0 ? dicomSource : fromDICOM == 0 ? foldsSource : "\(dicomSource), else \(foldsSource)"
        return ViewPositions(views: views, source: source)
    }
}
