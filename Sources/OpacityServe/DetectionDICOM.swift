import Foundation
import Opacity

/// Why a DICOM result object cannot be made for an image.
public enum DICOMOutputError: Error, CustomStringConvertible, LocalizedError, Sendable, Equatable {
    /// The image is not DICOM, so there are no UIDs, patient or study to refer to.
    case notDICOM(name: String, format: String)

    public var description: String {
        switch self {
        case let .notDICOM(name, format):
            return "\(name): a DICOM SR or overlay needs a DICOM source (it carries the source's patient, study and UIDs); this image is \(format)"
        }
    }

    public var errorDescription: String? { description }
}

extension DetectionEngine {
    /// The model(s) as the DICOM observer device: name(s) as given, version `sha256:` + the
    /// first 16 hex digits of each bundle, UID derived from the bundles' hashes (the same
    /// model always has the same Device Observer UID).
    public var dicomDevice: DICOMDevice {
        let name = models.map(\.name).joined(separator: " + ")
        let version = models.map { "sha256:" + $0.sha256.prefix(16) }.joined(separator: " + ")
        let joined = models.map(\.sha256).joined(separator: "+")
        let hash = SHA256.hash(joined).bytes
        return DICOMDevice(uid: DICOMUID.derived(fromHash: hash), name: name, version: version, softwareVersion: softwareVersion)
    }

    /// The source reference of a decoded DICOM image.
    /// - Throws: ``DICOMOutputError/notDICOM(name:format:)``; ``DataError/malformedDICOM(path:reason:)``
    ///   when a UID the reference needs is missing.
    public static func dicomSource(_ image: DecodedImage) throws -> DICOMSourceReference {
        guard let h = image.header, image.format == .dicom else { throw DICOMOutputError.notDICOM(name: image.name, format: image.format.rawValue) }
        return try DICOMSourceReference(header: h, frame: image.frame, path: image.name)
    }

    /// The boxes of `report` as DICOM findings (source pixels, scores).
    public static func dicomFindings(_ report: DetectionReport) -> [DICOMFinding] {
        report.boxes.map { DICOMFinding(x: Double($0.x), y: Double($0.y), width: Double($0.width), height: Double($0.height), score: Double($0.score)) }
    }

    /// A TID 1500 Structured Report of `report` on `image` (see ``DICOMResults/structuredReport(source:findings:device:placement:date:)``).
    /// - Throws: as ``dicomSource(_:)``.
    public func structuredReport(_ image: DecodedImage, _ report: DetectionReport, placement: DICOMSeriesPlacement) throws -> Data {
        DICOMResults.structuredReport(source: try Self.dicomSource(image), findings: Self.dicomFindings(report), device: dicomDevice, placement: placement)
    }

    /// A Secondary Capture of `image` with the boxes of `report` burned in.
    /// - Throws: as ``dicomSource(_:)``.
    public func secondaryCapture(_ image: DecodedImage, _ report: DetectionReport, placement: DICOMSeriesPlacement) throws -> Data {
        let source = try Self.dicomSource(image)
        let overlay = image.image.overlay(detections: report.detections, thickness: max(2, image.source.width / 300))
        return try DICOMResults.secondaryCapture(overlay, source: source, device: dicomDevice, placement: placement)
    }
}
