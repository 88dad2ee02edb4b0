import Foundation
import Opacity

/// One image's findings, exactly as `opacity detect --format json` writes them (an array of
/// these in `detections.json`) and as `opacity serve` answers `POST /v1/detect` (an array with
/// one element per uploaded image). The schema is Documentation/detections.schema.json.
///
/// Coordinates are in the image's own pixels (x, y of the top-left corner, width, height);
/// millimetres are added when the DICOM gives a Pixel Spacing. Optional fields are left out
/// when unknown (PNG and JPEG files carry no DICOM attributes).
public struct DetectionReport: Codable, Sendable, Equatable {
    /// One box.
    public struct Box: Codable, Sendable, Equatable {
        /// The detection score in 0...1.
        public var score: Float
        /// Left edge, pixels.
        public var x: Float
        /// Top edge, pixels.
        public var y: Float
        /// Width, pixels.
        public var width: Float
        /// Height, pixels.
        public var height: Float
        /// The same box in millimetres (from the DICOM Pixel Spacing), if known.
        public var mm: MillimetreBox?
    }

    /// A box in millimetres from the image's top-left corner.
    public struct MillimetreBox: Codable, Sendable, Equatable {
        public var x: Double
        public var y: Double
        public var width: Double
        public var height: Double
    }

    /// The image-level class probabilities (summing to 1).
    public struct GlobalProbabilities: Codable, Sendable, Equatable {
        /// "No Lung Opacity / Not Normal".
        public var notNormal: Float
        /// "Normal".
        public var normal: Float
        /// "Lung Opacity".
        public var lungOpacity: Float
    }

    /// One model that produced the boxes.
    public struct Model: Codable, Sendable, Equatable {
        /// The name it was loaded by: a zoo name, a run folder or a bundle path as given.
        public var name: String
        /// SHA-256 of the bundle file, lower-case hex.
        public var sha256: String
        /// The model's config string, e.g. `retinanet(encoder=resnet34, size=512, levels=2-7)`.
        public var config: String
    }

    /// The file path (`opacity detect`) or the uploaded part's file name (`opacity serve`;
    /// `body` for a bare body).
    public var file: String
    /// `dicom`, `png` or `jpeg`.
    public var format: String
    /// Image width in pixels.
    public var width: Int
    /// Image height in pixels.
    public var height: Int
    /// (0008,0018) SOP Instance UID (DICOM only).
    public var sopInstanceUID: String?
    /// (0010,0020) Patient ID (DICOM only).
    public var patientId: String?
    /// (0020,000D) Study Instance UID (DICOM only).
    public var studyInstanceUID: String?
    /// (0018,5101) View Position, e.g. `PA` (DICOM only).
    public var viewPosition: String?
    /// (0028,0030) Pixel Spacing in mm, `[row, column]`, else (0018,1164) Imager Pixel
    /// Spacing (DICOM only, when present).
    public var pixelSpacing: [Double]?
    /// Boxes above the threshold, highest score first.
    public var boxes: [Box]
    /// Image-level class probabilities, when the model has a global classifier.
    public var globalProbabilities: GlobalProbabilities?
    /// The model, or every model of an ensemble.
    public var models: [Model]
    /// How an ensemble combined its models (absent for one model).
    public var ensemble: String?
    /// The test-time augmentation views and their merge rule, e.g. `flip (WBF)` (absent without TTA).
    public var tta: String?
    /// The score threshold applied.
    public var threshold: Float
    /// Seconds from the start of decoding to the detections (a batched image shares its
    /// batch's forward pass).
    public var seconds: Double

    /// The Kaggle id: the DICOM Patient ID, else the file name without its extension.
    public var kaggleId: String {
        if let patientId, !patientId.isEmpty { return patientId }
        return ((file as NSString).lastPathComponent as NSString).deletingPathExtension
    }

    /// The Kaggle `PredictionString`: `score x y width height` groups separated by spaces, as
    /// `opacity submit` writes them (``Submission/predictionString(_:)``: the score to three
    /// decimals, the box to one).
    public var predictionString: String { Submission.predictionString(detections) }

    /// The detections as the core's type (pixels).
    public var detections: [Detection] {
        boxes.map { Detection(box: BoundingBox(x: $0.x, y: $0.y, width: $0.width, height: $0.height), score: $0.score) }
    }
}

extension DetectionReport {
    /// Reports as JSON (pretty-printed, sorted keys): the array Documentation/detections.schema.json describes.
    public static func json(_ reports: [DetectionReport]) throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try e.encode(reports)
    }

    /// Reports as CSV, one row per box and one row with empty box fields for an image without boxes:
    /// `file,score,x,y,width,height,image_width,image_height,patientId,sopInstanceUID` (pixels).
    public static func csv(_ reports: [DetectionReport]) -> String {
        var s = "file,score,x,y,width,height,image_width,image_height,patientId,sopInstanceUID\n"
        for r in reports {
            let tail = ",\(r.width),\(r.height),\(csvField(r.patientId ?? "")),\(csvField(r.sopInstanceUID ?? ""))\n"
            if r.boxes.isEmpty { s += csvField(r.file) + ",,,,," + tail }
            for b in r.boxes { s += csvField(r.file) + String(format: ",%.4f,%.1f,%.1f,%.1f,%.1f", b.score, b.x, b.y, b.width, b.height) + tail }
        }
        return s
    }

    /// Reports as a Kaggle submission: `patientId,PredictionString`, every image a row.
    public static func kaggle(_ reports: [DetectionReport]) -> String {
        "patientId,PredictionString\n" + reports.map { "\(csvField($0.kaggleId)),\($0.predictionString)\n" }.joined()
    }

    static func csvField(_ s: String) -> String {
        guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
        return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
