import Foundation
import Opacity

/// An image decoded for detection, with the DICOM attributes the report carries.
public struct DecodedImage: Sendable {
    /// The file path or uploaded file name.
    public var name: String
    /// The format it was decoded from.
    public var format: ImageFile.Format
    /// The model's input at full depth (``SourceImage``): 8-bit files exactly, 12- to 16-bit
    /// DICOM (rescaled, windowed, MONOCHROME1 inverted) and 16-bit PNG in `Float`, no 8-bit step.
    public var source: SourceImage
    /// An 8-bit rendering of ``source`` (for overlays).
    public var image: GrayImage { source.gray }
    /// The DICOM header (nil for PNG and JPEG).
    public var header: DICOMHeader?
    /// The frame decoded, from 1 (1 for single-frame DICOM, PNG and JPEG).
    public var frame: Int = 1
    /// Seconds spent decoding.
    public var decodeSeconds: Double
}

/// Why an uploaded or named image cannot be used.
public enum DetectionInputError: Error, CustomStringConvertible, LocalizedError, Sendable, Equatable {
    /// The bytes are empty.
    case empty(name: String)
    /// Neither the magic bytes nor the name say DICOM, PNG or JPEG.
    case unknownFormat(name: String)
    /// The image has more pixels than allowed.
    case tooManyPixels(name: String, width: Int, height: Int, limit: Int)
    /// A threshold outside 0...1.
    case badThreshold(Float)

    public var description: String {
        switch self {
        case let .empty(name): return "\(name): the image is empty (0 bytes); expected a DICOM, PNG or JPEG file"
        case let .unknownFormat(name): return "\(name): not a DICOM (.dcm), PNG (.png) or JPEG (.jpg) image (no known magic bytes)"
        case let .tooManyPixels(name, w, h, limit):
            return "\(name): the image is \(w) x \(h) = \(w * h) pixels, more than the limit of \(limit) (--max-pixels)"
        case let .badThreshold(t): return "threshold \(t) is outside 0...1 (e.g. 0.2)"
        }
    }

    public var errorDescription: String? { description }
}

/// The one code path from image bytes to ``DetectionReport``s, shared by `opacity detect` and
/// `opacity serve` so both give equal results for the same image and model.
///
/// It wraps a ``Predictor`` (boxes in source pixels and global probabilities) and applies
/// each image's own score threshold after the forward pass, so images with different
/// thresholds can share a batch. `run` is serialised: the predictor is not reentrant.
public final class DetectionEngine: @unchecked Sendable {
    /// The predictor (its `filter` is cleared: thresholds are applied per image here).
    public let predictor: Predictor
    /// The models, in the order given.
    public let models: [DetectionReport.Model]
    /// The zoo entry of each model loaded by zoo name (nil for files and runs).
    public let zooEntries: [ZooEntry?]
    /// The bundle file of each model.
    public let files: [URL]
    /// How an ensemble combines its models (nil for one model).
    public let ensemble: String?
    /// The test-time augmentation, as ``TestTimeAugmentation/description`` (nil without TTA).
    public let tta: String?
    /// The threshold used when a request names none.
    public let defaultThreshold: Float
    /// Relative-to-top-score filter (the reference's 0.5), as `ConfidenceFilter`.
    public let relativeToMax: Float
    /// The software named in DICOM result objects (General Equipment's Software Versions),
    /// e.g. `opacity 0.1.0`; set before the first DICOM object is written.
    public var softwareVersion = "opacity"
    private let lock = NSLock()

    /// - Parameters:
    ///   - predictor: the loaded model(s).
    ///   - references: the names the models were given by (zoo names, run folders, paths).
    ///   - files: the bundle file each reference resolved to.
    ///   - digests: the SHA-256 of the bytes each model was built from
    ///     (``ModelReference/loadHashed(_:registry:allowFetch:allowNonFinite:)``); when
    ///     `nil` the files are hashed here, which describes the loaded weights only if no
    ///     file changed since it was loaded.
    ///   - threshold: the default score threshold; nil means the threshold saved with the
    ///     first model that saves one to use (``ModelReference/savedThreshold(_:)``: not one
    ///     picked where the validation metric was 0), else 0.2.
    /// - Throws: ``DetectionInputError/badThreshold(_:)``; file read errors while hashing.
    public init(predictor: Predictor, references: [String], files: [URL], digests: [String]? = nil, threshold: Float? = nil) throws {
        let t = threshold ?? files.compactMap(ModelReference.savedThreshold).first ?? OperatingPoint.defaultThreshold
        guard t >= 0 && t <= 1 else { throw DetectionInputError.badThreshold(t) }
        predictor.filter = nil
        self.predictor = predictor
        self.files = files
        self.defaultThreshold = t
        self.relativeToMax = ConfidenceFilter(threshold: t).relativeToMax
        var models: [DetectionReport.Model] = [], zoo: [ZooEntry?] = []
        let standardZoo = try? Zoo.standard()
        for (k, (ref, url)) in zip(references, files).enumerated() {
            let hash: String
            if let digests, k < digests.count, !digests[k].isEmpty {
                hash = digests[k]
            } else {
                let data = try Data(contentsOf: url, options: .mappedIfSafe)
                hash = data.withUnsafeBytes { SHA256.hash($0) }.hex
            }
            models.append(DetectionReport.Model(name: ref, sha256: hash, config: predictor.detectors[min(k, predictor.detectors.count - 1)].config))
            zoo.append(ModelReference.zooName(ref).flatMap { try? standardZoo?.item($0).entry })
        }
        self.models = models
        self.zooEntries = zoo
        self.ensemble = predictor.detectors.count > 1 ? "\(predictor.method)" : nil
        self.tta = predictor.tta.map { "\($0)" }
    }

    /// Decodes image bytes (DICOM, PNG or JPEG, told by magic bytes, then by `name`'s extension)
    /// at full depth (see ``DecodedImage/source``).
    ///
    /// The size is checked from the header before pixels are decoded (DICOM, PNG).
    /// - Parameters:
    ///   - data: the whole file.
    ///   - name: the file name, used for the format hint and in error messages.
    ///   - maxPixels: the largest width x height accepted.
    ///   - frame: the frame of a multi-frame DICOM, from 1 (ignored for other formats).
    ///   - window: how a DICOM's rescaled values map to `[0, 1]` (`opacity detect --window`):
    ///     the file's window or the full range (``WindowSetting/automatic``, the default), the
    ///     full range, or a fixed center and width in rescaled units (ignored for PNG and JPEG).
    /// - Throws: ``DetectionInputError``, or the decoders' ``DataError`` naming the file
    ///   (the same messages `opacity detect` prints).
    public static func decode(_ data: Data, name: String, maxPixels: Int = .max, frame: Int = 1, window: WindowSetting = .automatic) throws
        -> DecodedImage
    {
        let t0 = DispatchTime.now().uptimeNanoseconds
        guard !data.isEmpty else { throw DetectionInputError.empty(name: name) }
        guard let format = ImageFile.format(of: data, url: URL(fileURLWithPath: name)) else {
            throw DetectionInputError.unknownFormat(name: name)
        }
        func check(_ w: Int, _ h: Int) throws {
            if w.multipliedReportingOverflow(by: h).overflow || w * h > maxPixels {
                throw DetectionInputError.tooManyPixels(name: name, width: w, height: h, limit: maxPixels)
            }
        }
        var header: DICOMHeader?
        let image: SourceImage
        switch format {
        case .dicom:
            let h = try DICOM.decodeHeader(data, path: name)
            try check(h.columns, h.rows)
            header = h
            image = try DICOM.decode(data, path: name, frame: frame).sourceImage(window: window)
        case .png:
            if let (w, h) = pngSize(data) { try check(w, h) }
            image = SourceImage(try PNG.decode(data, path: name))
        case .jpeg:
            image = .gray(try JPEG.decodeGray(data, path: name))
        }
        try check(image.width, image.height)
        return DecodedImage(name: name, format: format, source: image, header: header, frame: format == .dicom ? frame : 1,
                            decodeSeconds: Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
    }

    /// Reads and decodes a file (see ``decode(_:name:maxPixels:frame:window:)``).
    /// - Throws: ``DataError`` when the file cannot be read; as ``decode(_:name:maxPixels:frame:window:)``.
    public static func read(_ url: URL, maxPixels: Int = .max, frame: Int = 1, window: WindowSetting = .automatic) throws -> DecodedImage {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw DataError.unreadableFile(path: url.path, reason: (error as NSError).localizedDescription)
        }
        return try decode(data, name: url.path, maxPixels: maxPixels, frame: frame, window: window)
    }

    /// Width and height from a PNG's IHDR chunk, if the bytes hold one.
    static func pngSize(_ data: Data) -> (Int, Int)? {
        guard data.count >= 24 else { return nil }
        let b = [UInt8](data.prefix(24))
        guard Array(b[12..<16]) == Array("IHDR".utf8) else { return nil }
        func be(_ i: Int) -> Int { Int(b[i]) << 24 | Int(b[i + 1]) << 16 | Int(b[i + 2]) << 8 | Int(b[i + 3]) }
        return (be(16), be(20))
    }

    /// Runs the model(s) on decoded images, in forward passes of at most
    /// `predictor.batchSize` images, and builds one report per image.
    /// - Parameters:
    ///   - images: decoded images.
    ///   - thresholds: one score threshold per image (nil: the default for all).
    /// - Returns: reports in the order of `images`.
    public func run(_ images: [DecodedImage], thresholds: [Float]? = nil) -> [DetectionReport] {
        precondition(thresholds == nil || thresholds!.count == images.count, "DetectionEngine.run: one threshold per image")
        guard !images.isEmpty else { return [] }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let predictions: [Prediction] = lock.withLock { predictor.predict(images.map(\.source)) }
        let forward = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        return images.indices.map { i in
            report(images[i], predictions[i], threshold: thresholds?[i] ?? defaultThreshold, seconds: images[i].decodeSeconds + forward)
        }
    }

    func report(_ img: DecodedImage, _ p: Prediction, threshold: Float, seconds: Double) -> DetectionReport {
        // NMS keeps boxes highest score first (ties by anchor order); the filter keeps that order
        let kept = ConfidenceFilter(threshold: threshold, relativeToMax: relativeToMax).apply(p.detections)
        let h = img.header
        // Pixel Spacing, else Imager Pixel Spacing (at the detector; no magnification correction)
        func usable(_ s: [Double]?) -> [Double]? { s.flatMap { $0.count >= 2 && $0[0] > 0 && $0[1] > 0 ? Array($0.prefix(2)) : nil } }
        let spacing = usable(h?.pixelSpacing) ?? usable(h?.imagerPixelSpacing)
        let boxes = kept.map { d -> DetectionReport.Box in
            let mm = spacing.map { s in
                DetectionReport.MillimetreBox(x: Double(d.box.x) * s[1], y: Double(d.box.y) * s[0],
                                              width: Double(d.box.width) * s[1], height: Double(d.box.height) * s[0])
            }
            return DetectionReport.Box(score: d.score, x: d.box.x, y: d.box.y, width: d.box.width, height: d.box.height, mm: mm)
        }
        let g = p.globalProbabilities.flatMap { $0.count == 3 ? DetectionReport.GlobalProbabilities(notNormal: $0[0], normal: $0[1], lungOpacity: $0[2]) : nil }
        func nonEmpty(_ s: String?) -> String? { s.flatMap { $0.isEmpty ? nil : $0 } }
        return DetectionReport(
            file: img.name, format: img.format.rawValue, width: img.source.width, height: img.source.height,
            sopInstanceUID: nonEmpty(h?.sopInstanceUID), patientId: nonEmpty(h?.patientID),
            studyInstanceUID: nonEmpty(h?.studyInstanceUID), viewPosition: nonEmpty(h?.viewPosition),
            pixelSpacing: spacing, boxes: boxes, globalProbabilities: g, models: models, ensemble: ensemble, tta: tta,
            threshold: threshold, seconds: seconds)
    }
}
