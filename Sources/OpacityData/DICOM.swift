import Foundation
import OpacityCore

/// A DICOM transfer syntax: how the dataset and its pixels are encoded.
public struct TransferSyntax: Sendable, Hashable, CustomStringConvertible {
    /// The UID, e.g. `1.2.840.10008.1.2.4.50`.
    public var uid: String

    /// A transfer syntax from its UID.
    public init(uid: String) { self.uid = uid }

    /// Implicit VR Little Endian (the DICOM default).
    public static let implicitVRLittleEndian = TransferSyntax(uid: "1.2.840.10008.1.2")
    /// Explicit VR Little Endian.
    public static let explicitVRLittleEndian = TransferSyntax(uid: "1.2.840.10008.1.2.1")
    /// Explicit VR Big Endian (retired, still met).
    public static let explicitVRBigEndian = TransferSyntax(uid: "1.2.840.10008.1.2.2")
    /// JPEG Baseline (Process 1): 8-bit lossy JPEG, the RSNA challenge images.
    public static let jpegBaseline = TransferSyntax(uid: "1.2.840.10008.1.2.4.50")

    /// Deflated Explicit VR Little Endian: the data set after the file meta is a raw deflate stream.
    public static let deflatedExplicitVRLittleEndian = TransferSyntax(uid: "1.2.840.10008.1.2.1.99")
    /// JPEG Lossless, Non-Hierarchical (Process 14), any predictor.
    public static let jpegLossless = TransferSyntax(uid: "1.2.840.10008.1.2.4.57")
    /// JPEG Lossless, Process 14, Selection Value 1 (first-order prediction).
    public static let jpegLosslessSV1 = TransferSyntax(uid: "1.2.840.10008.1.2.4.70")
    /// JPEG 2000 Image Compression (Lossless Only).
    public static let jpeg2000Lossless = TransferSyntax(uid: "1.2.840.10008.1.2.4.90")
    /// JPEG 2000 Image Compression (lossless or lossy).
    public static let jpeg2000 = TransferSyntax(uid: "1.2.840.10008.1.2.4.91")
    /// RLE Lossless.
    public static let rleLossless = TransferSyntax(uid: "1.2.840.10008.1.2.5")

    /// The syntaxes ``DICOM`` decodes.
    public static let supported: [TransferSyntax] = [
        .implicitVRLittleEndian, .explicitVRLittleEndian, .explicitVRBigEndian, .deflatedExplicitVRLittleEndian,
        .jpegBaseline, .jpegLossless, .jpegLosslessSV1, .jpeg2000Lossless, .jpeg2000, .rleLossless,
    ]

    /// Whether the pixel data are encapsulated (compressed fragments).
    public var isEncapsulated: Bool {
        ![TransferSyntax.implicitVRLittleEndian, .explicitVRLittleEndian, .explicitVRBigEndian, .deflatedExplicitVRLittleEndian].contains(self)
    }

    /// Whether ``DICOM`` can decode this syntax.
    public var isSupported: Bool { TransferSyntax.supported.contains(self) }

    /// The standard's name for the UID (or "unknown transfer syntax").
    public var name: String { TransferSyntax.names[uid] ?? "unknown transfer syntax" }

    /// `name (uid)`.
    public var description: String { "\(name) (\(uid))" }

    private static let names: [String: String] = [
        "1.2.840.10008.1.2": "Implicit VR Little Endian",
        "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
        "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
        "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
        "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
        "1.2.840.10008.1.2.4.51": "JPEG Extended (Process 2 and 4)",
        "1.2.840.10008.1.2.4.57": "JPEG Lossless, Non-Hierarchical (Process 14)",
        "1.2.840.10008.1.2.4.70": "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
        "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
        "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
        "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
        "1.2.840.10008.1.2.4.91": "JPEG 2000",
        "1.2.840.10008.1.2.4.201": "High-Throughput JPEG 2000 Lossless",
        "1.2.840.10008.1.2.4.202": "High-Throughput JPEG 2000 with RPCL Options Lossless",
        "1.2.840.10008.1.2.4.203": "High-Throughput JPEG 2000",
        "1.2.840.10008.1.2.5": "RLE Lossless",
    ]
}

/// The header attributes Opacity uses from a DICOM image.
public struct DICOMHeader: Sendable, Equatable {
    /// How the file is encoded.
    public var transferSyntax: TransferSyntax
    /// Whether the 128-byte preamble and `DICM` prefix were present.
    public var hasPreamble: Bool
    /// (0028,0010) Rows.
    public var rows: Int
    /// (0028,0011) Columns.
    public var columns: Int
    /// (0028,0100) Bits Allocated.
    public var bitsAllocated: Int
    /// (0028,0101) Bits Stored.
    public var bitsStored: Int
    /// (0028,0102) High Bit.
    public var highBit: Int
    /// (0028,0103) Pixel Representation: 0 unsigned, 1 two's complement.
    public var pixelRepresentation: Int
    /// (0028,0002) Samples per Pixel.
    public var samplesPerPixel: Int
    /// (0028,0004) Photometric Interpretation, e.g. `MONOCHROME2`.
    public var photometricInterpretation: String
    /// (0028,0008) Number of Frames (1 when absent). Only the first frame is decoded.
    public var numberOfFrames: Int
    /// (0028,1053) Rescale Slope (1 when absent).
    public var rescaleSlope: Double
    /// (0028,1052) Rescale Intercept (0 when absent).
    public var rescaleIntercept: Double
    /// (0028,1050) Window Center (first value), if present.
    public var windowCenter: Double?
    /// (0028,1051) Window Width (first value), if present.
    public var windowWidth: Double?
    /// (0010,0020) Patient ID.
    public var patientID: String?
    /// (0008,0060) Modality, e.g. `CR`.
    public var modality: String?
    /// (0018,5101) View Position, e.g. `PA` or `AP`.
    public var viewPosition: String?
    /// (0028,0030) Pixel Spacing in mm (row, column), if present and non-zero.
    public var pixelSpacing: [Double]?
    /// (0018,1164) Imager Pixel Spacing in mm (row, column) at the detector, if present and non-zero.
    public var imagerPixelSpacing: [Double]?
    /// What the reader tolerated and the user may want to know (e.g. a transfer syntax that
    /// disagrees with the data set's encoding), one sentence each.
    public var warnings: [String] = []
    /// (0008,0018) SOP Instance UID, if present.
    public var sopInstanceUID: String?
    /// (0020,000D) Study Instance UID, if present.
    public var studyInstanceUID: String?
    /// The patient, study and reference attributes a derived object copies, as stored (tag ->
    /// value bytes, trailing padding kept): the tags of ``copiedPatientStudyTags``, Specific
    /// Character Set, SOP Class/Instance UID, Series Instance UID, Body Part Examined and Patient
    /// Orientation.
    public var copiedAttributes: [UInt32: [UInt8]] = [:]

    /// The Patient and General Study attributes written into derived objects (SR, Secondary
    /// Capture): tag, VR, and whether the attribute is type 2 (written empty when the source
    /// has none).
    public static let copiedPatientStudyTags: [(tag: UInt32, vr: String, type2: Bool)] = [
        (0x0008_0020, "DA", true), (0x0008_0030, "TM", true), (0x0008_0050, "SH", true), (0x0008_0090, "PN", true),
        (0x0008_1030, "LO", false), (0x0010_0010, "PN", true), (0x0010_0020, "LO", true), (0x0010_0021, "LO", false),
        (0x0010_0030, "DA", true), (0x0010_0040, "CS", true), (0x0010_1010, "AS", false), (0x0020_000D, "UI", true),
        (0x0020_0010, "SH", true),
    ]

    /// Every tag kept in ``copiedAttributes``.
    static let copiedTagSet: Set<UInt32> = Set(copiedPatientStudyTags.map(\.tag)).union([0x0008_0005, 0x0008_0016, 0x0008_0018, 0x0018_0015, 0x0020_000E, 0x0020_0020])

    /// Whether the stored values are signed.
    public var isSigned: Bool { pixelRepresentation == 1 }
    /// Whether white means low values (MONOCHROME1), so display must invert.
    public var isInverted: Bool { photometricInterpretation == "MONOCHROME1" }
}

/// Stored pixel values of the first frame, row-major, as the file holds them (after
/// masking to Bits Stored and sign extension), before rescale or windowing.
public enum DICOMPixels: Sendable, Equatable {
    /// 8-bit unsigned values.
    case uint8([UInt8])
    /// 8-bit signed values.
    case int8([Int8])
    /// 16-bit unsigned values.
    case uint16([UInt16])
    /// 16-bit signed values.
    case int16([Int16])

    /// The number of values.
    public var count: Int {
        switch self {
        case let .uint8(a): return a.count
        case let .int8(a): return a.count
        case let .uint16(a): return a.count
        case let .int16(a): return a.count
        }
    }

    /// The values widened to `Int32` (convenient for statistics).
    public var int32Values: [Int32] {
        switch self {
        case let .uint8(a): return a.map { Int32($0) }
        case let .int8(a): return a.map { Int32($0) }
        case let .uint16(a): return a.map { Int32($0) }
        case let .int16(a): return a.map { Int32($0) }
        }
    }

    /// The values as little-endian bytes of their own width (1 or 2 bytes each).
    public var littleEndianBytes: [UInt8] {
        switch self {
        case let .uint8(a): return a
        case let .int8(a): return a.map { UInt8(bitPattern: $0) }
        case let .uint16(a): return a.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        case let .int16(a): return a.flatMap { let u = UInt16(bitPattern: $0); return [UInt8(u & 0xFF), UInt8(u >> 8)] }
        }
    }
}

/// How stored values become 8-bit display/training values.
public enum WindowSetting: Sendable, Equatable {
    /// The file's own window when it has one; otherwise identity for 8-bit unsigned data
    /// without rescale (the RSNA images keep their exact values); otherwise the
    /// minimum-to-maximum range of the rescaled values.
    case automatic
    /// The minimum-to-maximum range of the rescaled values.
    case minMax
    /// A fixed window in rescaled (modality) units, DICOM's linear VOI function.
    case fixed(center: Double, width: Double)
}

/// A decoded DICOM image: header plus stored pixels of the first frame.
public struct DICOMImage: Sendable {
    /// The file it came from (for messages).
    public var path: String
    /// The header attributes.
    public var header: DICOMHeader
    /// The stored values, `rows * columns` of them.
    public var pixels: DICOMPixels

    /// Width in pixels (Columns).
    public var width: Int { header.columns }
    /// Height in pixels (Rows).
    public var height: Int { header.rows }

    /// Values after the modality rescale: `slope * stored + intercept`.
    public func modalityValues() -> [Float] {
        let s = Float(header.rescaleSlope), b = Float(header.rescaleIntercept)
        switch pixels {
        case let .uint8(a): return a.map { Float($0) * s + b }
        case let .int8(a): return a.map { Float($0) * s + b }
        case let .uint16(a): return a.map { Float($0) * s + b }
        case let .int16(a): return a.map { Float($0) * s + b }
        }
    }

    /// Whether ``displayImage(window:)`` with `window` keeps the stored 8-bit values as they
    /// are (8-bit unsigned, no rescale, no window in the file: the RSNA images).
    public func isIdentity8Bit(window: WindowSetting) -> Bool {
        let h = header
        guard case .automatic = window, h.bitsAllocated == 8, !h.isSigned, h.rescaleSlope == 1, h.rescaleIntercept == 0,
              h.windowCenter == nil || h.windowWidth == nil, case .uint8 = pixels else { return false }
        return true
    }

    /// The window (center, width) in modality units that `window` resolves to for this image:
    /// a fixed window as given; `.automatic` the file's first window when its width is at
    /// least 1; otherwise (and for `.minMax`) the range of the rescaled values, mapped so
    /// that the minimum goes to 0 and the maximum to 1.
    public func resolvedWindow(_ window: WindowSetting, values: [Float]) -> (center: Double, width: Double) {
        let h = header
        switch window {
        case let .fixed(c, w):
            return (c, max(w, 1))
        case .automatic where h.windowCenter != nil && h.windowWidth != nil && h.windowWidth! >= 1:
            return (h.windowCenter!, h.windowWidth!)
        default:
            var lo = Float.infinity, hi = -Float.infinity
            for v in values {
                lo = min(lo, v)
                hi = max(hi, v)
            }
            if !(lo <= hi) { lo = 0; hi = 0 }
            let width = Double(hi - lo) + 1
            return (Double(lo) + 0.5 + (width - 1) / 2, width)
        }
    }

    /// The full-depth model input: rescale, window (DICOM's linear VOI function, PS3.3
    /// C.11.2.1.2, without rounding), MONOCHROME1 inversion; values in `[0, 1]`, no 8-bit step.
    /// For 8-bit identity files (``isIdentity8Bit(window:)``) it is exactly `pixel / 255`.
    /// - Parameter window: how to map modality values; see ``WindowSetting``.
    /// - Returns: a `columns x rows` image.
    public func floatImage(window: WindowSetting = .automatic) -> FloatImage {
        let h = header
        var out: [Float]
        if isIdentity8Bit(window: window) {
            out = displayImage(window: window).toFloat().pixels
            return FloatImage(width: h.columns, height: h.rows, pixels: out)
        }
        let values = modalityValues()
        let (center, width) = resolvedWindow(window, values: values)
        let c0 = Float(center - 0.5), w1 = Float(max(width - 1, 1e-6))
        out = [Float](repeating: 0, count: values.count)
        for i in 0..<values.count {
            let y = (values[i] - c0) / w1 + 0.5
            out[i] = min(max(y, 0), 1)
        }
        if h.isInverted {
            for i in 0..<out.count { out[i] = 1 - out[i] }
        }
        return FloatImage(width: h.columns, height: h.rows, pixels: out)
    }

    /// The model's input as a ``SourceImage``: 8-bit identity files stay 8-bit (exact), all
    /// others are full-depth ``floatImage(window:)``.
    public func sourceImage(window: WindowSetting = .automatic) -> SourceImage {
        isIdentity8Bit(window: window) ? .gray(displayImage(window: window)) : .float(floatImage(window: window))
    }

    /// The 8-bit display image: rescale, window, then inversion for MONOCHROME1 so that
    /// dense tissue (bone) is always bright.
    /// - Parameter window: how to map modality values to 0...255.
    /// - Returns: a `columns x rows` image.
    public func displayImage(window: WindowSetting = .automatic) -> GrayImage {
        let h = header
        var out: [UInt8]
        if isIdentity8Bit(window: window), case let .uint8(a) = pixels {
            out = a
        } else {
            let values = modalityValues()
            // the same window the Float path uses (min-max maps lo -> 0 and hi -> 255)
            let (center, width) = resolvedWindow(window, values: values)
            let c0 = Float(center - 0.5), w1 = Float(max(width - 1, 1e-6))
            let lowEdge = c0 - w1 / 2, highEdge = c0 + w1 / 2
            out = [UInt8](repeating: 0, count: values.count)
            for i in 0..<values.count {
                let x = values[i]
                if x <= lowEdge { out[i] = 0 } else if x > highEdge { out[i] = 255 } else {
                    let y = ((x - c0) / w1 + 0.5) * 255
                    out[i] = UInt8(min(max(y.rounded(), 0), 255))
                }
            }
        }
        if h.isInverted {
            for i in 0..<out.count { out[i] = 255 &- out[i] }
        }
        return GrayImage(width: h.columns, height: h.rows, pixels: out)
    }
}

/// DICOM Part 10 reading (and writing of simple uncompressed or JPEG Baseline files).
///
/// Reads Implicit VR Little Endian, Explicit VR Little Endian, Explicit VR Big Endian and
/// encapsulated JPEG Baseline (decoded with libjpeg-turbo); 8- and 16-bit grayscale,
/// signed or unsigned, MONOCHROME1 or MONOCHROME2. Anything else (deflate, JPEG lossless or
/// extended, JPEG 2000, RLE, colour) fails with an error naming the file and the syntax.
public enum DICOM {
    /// The most pixels one frame may have (8192 x 8192 = 67,108,864); a header claiming more
    /// is refused before anything is allocated.
    public static let maxPixels = 8192 * 8192
    /// The most bytes a Deflated Explicit VR Little Endian data set may inflate to (1 GiB),
    /// so a small compressed file cannot exhaust memory.
    public static let maxInflatedBytes = 1 << 30
    /// The most frames a file may declare in Number of Frames (0028,0008).
    public static let maxFrames = 100_000

    /// Reads and decodes a DICOM file.
    /// - Parameters:
    ///   - url: the `.dcm` file.
    ///   - frame: which frame of a multi-frame file, 1-based (1, the first, by default).
    /// - Returns: header and stored pixels of that frame.
    /// - Throws: ``DataError/unreadableFile(path:reason:)``, ``DataError/malformedDICOM(path:reason:)``,
    ///   ``DataError/unsupportedTransferSyntax(path:uid:name:)``,
    ///   ``DataError/unsupportedPixelFormat(path:reason:)``, ``DataError/jpegDecodingFailed(path:reason:)``.
    public static func read(_ url: URL, frame: Int = 1) throws -> DICOMImage {
        let data = try readFile(url)
        return try decode(data, path: url.path, frame: frame)
    }

    /// Reads a DICOM file's header without decoding pixels.
    /// - Throws: as ``read(_:frame:)``, except pixel decoding errors.
    public static func readHeader(_ url: URL) throws -> DICOMHeader {
        let data = try readFile(url)
        return try data.withUnsafeBytes { raw in
            var p = DICOMParser(bytes: raw, path: url.path)
            return try p.parse(decodePixels: false).header
        }
    }

    /// Decodes a DICOM header from bytes without decoding pixels (to check the image size
    /// before paying for it).
    /// - Parameters:
    ///   - data: the whole file.
    ///   - path: the name used in error messages.
    /// - Throws: as ``read(_:)``, except pixel decoding errors.
    public static func decodeHeader(_ data: Data, path: String) throws -> DICOMHeader {
        try data.withUnsafeBytes { raw in
            var p = DICOMParser(bytes: raw, path: path)
            return try p.parse(decodePixels: false).header
        }
    }

    /// Reads a DICOM file straight to an 8-bit display image (see
    /// ``DICOMImage/displayImage(window:)``).
    /// - Throws: as ``read(_:frame:)``.
    public static func readGray(_ url: URL, window: WindowSetting = .automatic) throws -> GrayImage {
        try read(url).displayImage(window: window)
    }

    /// Decodes DICOM bytes.
    /// - Parameters:
    ///   - data: the whole file.
    ///   - path: the name used in error messages.
    ///   - frame: which frame, 1-based.
    /// - Throws: as ``read(_:frame:)``; ``DataError/invalidParameter(name:value:expected:nearest:)``
    ///   for a frame beyond Number of Frames.
    public static func decode(_ data: Data, path: String, frame: Int = 1) throws -> DICOMImage {
        try data.withUnsafeBytes { raw in
            var p = DICOMParser(bytes: raw, path: path)
            let r = try p.parse(decodePixels: true, frame: frame)
            reportWarnings(r.header, path: path)
            return DICOMImage(path: path, header: r.header, pixels: r.pixels!)
        }
    }

    /// Encodes an 8-bit MONOCHROME2 image as a DICOM Part 10 file (Secondary Capture).
    /// - Parameters:
    ///   - image: the pixels.
    ///   - patientID: written to (0010,0020).
    ///   - jpegQuality: when set, the pixels are stored as encapsulated JPEG Baseline
    ///     (like the RSNA files); when `nil`, uncompressed Explicit VR Little Endian.
    /// - Returns: the file bytes.
    /// - Throws: JPEG encoder errors.
    public static func encode(_ image: GrayImage, patientID: String, jpegQuality: Int? = nil) throws -> Data {
        var w = DICOMWriter()
        let syntax = jpegQuality == nil ? TransferSyntax.explicitVRLittleEndian : .jpegBaseline
        var fnv: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in patientID.utf8 { fnv = (fnv ^ UInt64(b)) &* 0x100_0000_01b3 }
        let sopInstance = "1.2.826.0.1.3680043.8.498.\(fnv % 1_000_000_000_000)"
        w.fileMeta(syntax: syntax.uid, sopClass: "1.2.840.10008.5.1.4.1.1.7", sopInstance: sopInstance)
        w.element(0x0008, 0x0016, "UI", string: "1.2.840.10008.5.1.4.1.1.7")
        w.element(0x0008, 0x0018, "UI", string: sopInstance)
        w.element(0x0008, 0x0060, "CS", string: "OT")
        w.element(0x0010, 0x0010, "PN", string: patientID)
        w.element(0x0010, 0x0020, "LO", string: patientID)
        w.element(0x0028, 0x0002, "US", uint16: 1)
        w.element(0x0028, 0x0004, "CS", string: "MONOCHROME2")
        w.element(0x0028, 0x0010, "US", uint16: UInt16(image.height))
        w.element(0x0028, 0x0011, "US", uint16: UInt16(image.width))
        w.element(0x0028, 0x0100, "US", uint16: 8)
        w.element(0x0028, 0x0101, "US", uint16: 8)
        w.element(0x0028, 0x0102, "US", uint16: 7)
        w.element(0x0028, 0x0103, "US", uint16: 0)
        if let q = jpegQuality {
            var jpeg = [UInt8](try JPEG.encodeGray(image, quality: q))
            if jpeg.count % 2 == 1 { jpeg.append(0) }
            w.encapsulatedPixelData(fragment: jpeg)
        } else {
            w.element(0x7FE0, 0x0010, "OB", bytes: image.pixels)
        }
        return w.data
    }

    /// Writes an 8-bit image as a DICOM file (see ``encode(_:patientID:jpegQuality:)``).
    /// - Throws: ``DataError/unwritableFile(path:reason:)`` and encoder errors.
    public static func write(_ image: GrayImage, patientID: String, jpegQuality: Int? = nil, to url: URL) throws {
        try writeData(try encode(image, patientID: patientID, jpegQuality: jpegQuality), to: url)
    }

    /// Where reader warnings go (``DICOMHeader/warnings``: a transfer syntax that disagrees
    /// with the data set, a zero spacing, ...): by default one line `warning: '<file>': <text>`
    /// on standard error. Replace it to collect or silence them.
    public static var warningHandler: @Sendable (_ path: String, _ message: String) -> Void {
        get { warningLock.withLock { _warningHandler } }
        set { warningLock.withLock { _warningHandler = newValue } }
    }

    private static let warningLock = NSLock()
    nonisolated(unsafe) private static var _warningHandler: @Sendable (String, String) -> Void = { path, message in
        try? FileHandle.standardError.write(contentsOf: Data("warning: '\(path)': \(message)\n".utf8))
    }

    static func reportWarnings(_ h: DICOMHeader, path: String) {
        guard !h.warnings.isEmpty else { return }
        let handler = warningHandler
        for w in h.warnings { handler(path, w) }
    }

    static func readFile(_ url: URL) throws -> Data {
        do { return try Data(contentsOf: url) } catch {
            throw DataError.unreadableFile(path: url.path, reason: (error as NSError).localizedDescription)
        }
    }
}

// MARK: - Implementation details

/// A one-pass parser over the file bytes.
struct DICOMParser {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var pos = 0
    var bigEndian = false
    var explicitVR = true

    init(bytes: UnsafeRawBufferPointer, path: String) {
        self.bytes = bytes
        self.path = path
    }

    func fail(_ reason: String) -> DataError { .malformedDICOM(path: path, reason: reason) }

    /// What the element being read lies in (encapsulated Pixel Data, a sequence), innermost
    /// last, for the message of a truncated file.
    var enclosing: [String] = []

    /// Names of the tags a truncation message is most likely to meet.
    static let tagNames: [UInt32: String] = [
        0x0002_0000: "File Meta Information Group Length", 0x0002_0001: "File Meta Information Version",
        0x0002_0002: "Media Storage SOP Class UID", 0x0002_0003: "Media Storage SOP Instance UID", 0x0002_0010: "Transfer Syntax UID",
        0x0002_0012: "Implementation Class UID", 0x0008_0018: "SOP Instance UID", 0x0010_0010: "Patient's Name", 0x0010_0020: "Patient ID",
        0x0020_000D: "Study Instance UID", 0x0028_0010: "Rows", 0x0028_0011: "Columns", 0x0028_0030: "Pixel Spacing", 0x7FE0_0010: "Pixel Data",
        0xFFFE_E000: "Item", 0xFFFE_E00D: "Item Delimitation Item", 0xFFFE_E0DD: "Sequence Delimitation Item",
    ]

    /// `(GGGG,EEEE)` and the tag's name where known, e.g. `(7FE0,0010) Pixel Data`.
    static func tagText(_ g: UInt16, _ e: UInt16) -> String {
        let tag = String(format: "(%04X,%04X)", g, e)
        return tagNames[UInt32(g) << 16 | UInt32(e)].map { "\(tag) \($0)" } ?? tag
    }

    /// Where the enclosing values are, for a truncation message: `""` at the top level, else
    /// e.g. ` in Pixel Data (7FE0,0010) at byte 1022`.
    var enclosingText: String { enclosing.isEmpty ? "" : " in " + enclosing.reversed().joined(separator: " in ") }

    /// The error for a file whose data ends inside the value of `el`: the byte offset where the
    /// data ends, the element's tag and header offset, and the bytes its header declared.
    func truncated(inside el: Element) -> DataError {
        let present = max(0, bytes.count - el.valueOffset)
        return fail(
            "the file is truncated: its data ends at byte \(bytes.count), inside element \(DICOMParser.tagText(el.group, el.element)) at byte \(el.headerOffset)"
                + "\(enclosingText), which declared \(el.length) bytes of value (\(present) present, \(Int(el.length) - present) missing)")
    }

    /// The error for a file whose data ends inside the header of the element at `start` (or
    /// right before it), its tag named when its first 4 bytes are there.
    func truncatedHeader(at start: Int) -> DataError {
        let present = bytes.count - start
        guard present > 0 else {
            return fail("the file is truncated: its data ends at byte \(bytes.count)\(enclosingText), where another element or item was expected")
        }
        let element = present >= 4 ? "element \(DICOMParser.tagText(u16(start), u16(start + 2)))" : "an element (its tag is cut)"
        var size = 8
        if explicitVR, present >= 6, u16(start) != 0xFFFE, DICOMParser.longVRs.contains(String(decoding: [bytes[start + 4], bytes[start + 5]], as: UTF8.self)) {
            size = 12
        }
        return fail(
            "the file is truncated: its data ends at byte \(bytes.count), inside the header of \(element) at byte \(start)\(enclosingText), "
                + "before its length (\(present) of the header's \(size) bytes present)")
    }

    func u16(_ at: Int) -> UInt16 {
        let a = UInt16(bytes[at]), b = UInt16(bytes[at + 1])
        return bigEndian ? (a << 8 | b) : (b << 8 | a)
    }

    func u32(_ at: Int) -> UInt32 {
        let a = UInt32(bytes[at]), b = UInt32(bytes[at + 1]), c = UInt32(bytes[at + 2]), d = UInt32(bytes[at + 3])
        return bigEndian ? (a << 24 | b << 16 | c << 8 | d) : (d << 24 | c << 16 | b << 8 | a)
    }

    static let longVRs: Set<String> = ["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"]

    struct Element {
        var group: UInt16
        var element: UInt16
        var vr: String
        var length: UInt32  // 0xFFFFFFFF = undefined
        var valueOffset: Int
        /// The byte offset of the element's tag.
        var headerOffset: Int
    }

    /// Reads one element header at `pos` and advances to its value.
    mutating func readElementHeader() throws -> Element {
        guard pos + 8 <= bytes.count else { throw truncatedHeader(at: pos) }
        let start = pos
        let g = u16(pos), e = u16(pos + 2)
        // Item / delimitation tags never carry a VR.
        if g == 0xFFFE {
            let len = u32(pos + 4)
            pos += 8
            return Element(group: g, element: e, vr: "", length: len, valueOffset: pos, headerOffset: start)
        }
        if explicitVR {
            let v0 = bytes[pos + 4], v1 = bytes[pos + 5]
            guard (65...90).contains(v0), (65...90).contains(v1) else {
                throw fail(String(format: "element (%04X,%04X) at byte %d has no valid VR (explicit VR expected)", g, e, pos))
            }
            let vr = String(decoding: [v0, v1], as: UTF8.self)
            if DICOMParser.longVRs.contains(vr) {
                guard pos + 12 <= bytes.count else { throw truncatedHeader(at: pos) }
                let len = u32(pos + 8)
                pos += 12
                return Element(group: g, element: e, vr: vr, length: len, valueOffset: pos, headerOffset: start)
            }
            let len = UInt32(u16(pos + 6))
            pos += 8
            return Element(group: g, element: e, vr: vr, length: len, valueOffset: pos, headerOffset: start)
        }
        let len = u32(pos + 4)
        pos += 8
        return Element(group: g, element: e, vr: "", length: len, valueOffset: pos, headerOffset: start)
    }

    /// The deepest nesting of sequences and items the parser follows (each sequence and
    /// each item counts one level); deeper input is refused as malformed, so no file can
    /// exhaust the stack.
    static let maxNesting = 64

    /// Skips a value of undefined length (a sequence or encapsulated data) starting at `pos`,
    /// up to and including its Sequence Delimitation Item.
    /// - Parameter depth: nesting level of this sequence (top-level elements are at 1).
    mutating func skipUndefined(depth: Int) throws {
        guard depth <= DICOMParser.maxNesting else {
            throw fail("sequences and items are nested more than \(DICOMParser.maxNesting) levels deep at byte \(pos) (limit \(DICOMParser.maxNesting))")
        }
        while true {
            let el = try readElementHeader()
            guard el.group == 0xFFFE else {
                throw fail(String(format: "expected an item tag (FFFE,E000) at byte %d, found (%04X,%04X)", pos - 8, el.group, el.element))
            }
            if el.element == 0xE0DD { return }  // sequence delimitation
            if el.element == 0xE000 {
                if el.length == 0xFFFF_FFFF {
                    try skipItemUndefined(depth: depth + 1)
                } else {
                    guard Int(el.length) <= bytes.count - pos else { throw truncated(inside: el) }
                    pos += Int(el.length)
                }
            }
        }
    }

    /// Skips the elements of an item of undefined length up to its item delimiter.
    /// - Parameter depth: nesting level of this item.
    mutating func skipItemUndefined(depth: Int) throws {
        guard depth <= DICOMParser.maxNesting else {
            throw fail("sequences and items are nested more than \(DICOMParser.maxNesting) levels deep at byte \(pos) (limit \(DICOMParser.maxNesting))")
        }
        while true {
            let el = try readElementHeader()
            if el.group == 0xFFFE && el.element == 0xE00D { return }
            if el.length == 0xFFFF_FFFF {
                try skipUndefinedValue(el, depth: depth + 1)
            } else {
                guard Int(el.length) <= bytes.count - pos else { throw truncated(inside: el) }
                pos += Int(el.length)
            }
        }
    }

    /// Skips the value of an element of undefined length. A UN value of undefined length
    /// holds Implicit VR Little Endian data whatever the transfer syntax (PS3.5 6.2.2), so
    /// its items are read as implicit VR.
    mutating func skipUndefinedValue(_ el: Element, depth: Int) throws {
        enclosing.append("\(DICOMParser.tagText(el.group, el.element)) at byte \(el.headerOffset) (undefined length)")
        defer { enclosing.removeLast() }
        if el.vr == "UN" && explicitVR {
            let saved = (explicitVR, bigEndian)
            explicitVR = false
            bigEndian = false
            defer { (explicitVR, bigEndian) = saved }
            try skipUndefined(depth: depth)
        } else {
            try skipUndefined(depth: depth)
        }
    }

    func string(_ el: Element) -> String {
        let end = min(el.valueOffset + Int(el.length), bytes.count)
        let slice = bytes[el.valueOffset..<end]
        return String(decoding: slice, as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: " \0"))
    }

    /// The values of a decimal or integer string (DS/IS) element, each checked to be a
    /// finite number in `range`; empty values are skipped.
    /// - Throws: ``DataError/malformedDICOM(path:reason:)`` naming the field, the value
    ///   (cut to 40 characters) and the valid range.
    func decimals(_ el: Element, _ name: String, in range: ClosedRange<Double>) throws -> [Double] {
        var out: [Double] = []
        for part in string(el).split(separator: "\\") {
            let t = part.trimmingCharacters(in: .whitespaces)
            if t.isEmpty { continue }
            guard let v = Double(t), v.isFinite, range.contains(v) else {
                let shown = t.count > 40 ? String(t.prefix(40)) + "..." : t
                // the nearest valid value for a number out of range (infinity too); none for NaN or text
                let nearest = Double(t).flatMap { $0.isNaN ? nil : min(max($0, range.lowerBound), range.upperBound) }
                throw fail("\(name) is '\(shown)'; expected a finite number in [\(Wording.boundNumber(range.lowerBound)), "
                           + "\(Wording.boundNumber(range.upperBound))]" + (nearest.map { " (nearest valid: \(Wording.boundNumber($0)))" } ?? ""))
            }
            out.append(v)
        }
        return out
    }

    /// A (row, column) spacing in mm: two finite values in 0...10000; zeros (met in the wild)
    /// mean "unknown" and give `nil` with a warning.
    func spacing(_ el: Element, _ name: String, _ h: inout DICOMHeader) throws -> [Double]? {
        let v = try decimals(el, name, in: 0...10_000)
        if v.isEmpty { return nil }
        guard v.count == 2 else { throw fail("\(name) has \(v.count) values; expected 2 (row and column spacing in mm)") }
        if v.contains(0) {
            h.warnings.append("\(name) is \(v[0])\\\(v[1]); treated as unknown")
            return nil
        }
        return v
    }

    /// The VRs of PS3.5 Table 6.2-1, as 16-bit values of their two ASCII letters.
    static let knownVRs: Set<UInt16> = Set(["AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD",
                                            "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI",
                                            "UL", "UN", "UR", "US", "UT", "UV"].map { s in
        let b = Array(s.utf8)
        return UInt16(b[0]) << 8 | UInt16(b[1])
    })

    /// Whether the data element at `pos` carries an explicit VR (a known VR in bytes 4-5),
    /// or `nil` when there is no element to look at.
    func sniffExplicitVR() -> Bool? {
        guard pos + 8 <= bytes.count else { return nil }
        return DICOMParser.knownVRs.contains(UInt16(bytes[pos + 4]) << 8 | UInt16(bytes[pos + 5]))
    }

    func ushort(_ el: Element) -> Int { el.length >= 2 ? Int(u16(el.valueOffset)) : 0 }

    struct Result {
        var header: DICOMHeader
        var pixels: DICOMPixels?
    }

    mutating func parse(decodePixels: Bool, frame: Int = 1) throws -> Result {
        // Preamble.
        var hasPreamble = false
        if bytes.count >= 132, bytes[128] == 0x44, bytes[129] == 0x49, bytes[130] == 0x43, bytes[131] == 0x4D {
            hasPreamble = true
            pos = 132
        } else if bytes.count >= 8, bytes[1] == 0x00, bytes[0] == 0x02 || bytes[0] == 0x08 {
            pos = 0  // no preamble, starts with group 0002 or 0008
        } else if bytes.count < 132, bytes.count >= 8, bytes.prefix(8).allSatisfy({ $0 == 0 }) {
            // a zero preamble cut short
            throw fail("the file is truncated: its data ends at byte \(bytes.count), inside the 128-byte preamble, before the 'DICM' prefix at byte 128")
        } else {
            throw fail("no 'DICM' prefix at byte 128 and no DICOM group at the start (is this a DICOM file?)")
        }
        // File meta: Explicit VR LE.
        var syntaxUID: String?
        explicitVR = true
        bigEndian = false
        while pos + 8 <= bytes.count, u16(pos) == 0x0002 {
            let el = try readElementHeader()
            guard el.length != 0xFFFF_FFFF else {
                throw fail("file meta element (0002,\(String(format: "%04X", el.element))) has an undefined length; expected a defined one")
            }
            guard pos + Int(el.length) <= bytes.count else { throw truncated(inside: el) }
            if el.element == 0x0010 { syntaxUID = string(el) }
            pos += Int(el.length)
        }
        let syntax = TransferSyntax(uid: syntaxUID ?? TransferSyntax.implicitVRLittleEndian.uid)
        guard syntax.isSupported else {
            throw DataError.unsupportedTransferSyntax(path: path, uid: syntax.uid, name: syntax.name)
        }
        var warnings: [String] = []
        if syntax == .deflatedExplicitVRLittleEndian {
            let inflated = try DICOMCodecs.inflateRaw(UnsafeRawBufferPointer(rebasing: bytes[pos...]), limit: DICOM.maxInflatedBytes, path: path)
            return try inflated.withUnsafeBytes { raw in
                var q = DICOMParser(bytes: raw, path: path)
                q.explicitVR = true
                return try q.parseDataset(syntax: syntax, hasPreamble: hasPreamble, warnings: [], decodePixels: decodePixels, frame: frame)
            }
        }
        explicitVR = syntax != .implicitVRLittleEndian
        bigEndian = syntax == .explicitVRBigEndian
        // The data set's own encoding wins over the one declared: look at the first element
        // (as pydicom and dicom-rs do) and fall back with a warning when they disagree.
        if let found = sniffExplicitVR(), found != explicitVR {
            if syntaxUID != nil {
                warnings.append("transfer syntax \(syntax.uid) (\(syntax.name)) says \(explicitVR ? "explicit" : "implicit") VR, "
                                + "but the data set is encoded with \(found ? "explicit" : "implicit") VR; read as \(found ? "explicit" : "implicit") VR")
            }
            explicitVR = found
        }
        return try parseDataset(syntax: syntax, hasPreamble: hasPreamble, warnings: warnings, decodePixels: decodePixels, frame: frame)
    }

    /// Parses the data set from `pos` (after the file meta) with the encoding already set.
    mutating func parseDataset(syntax: TransferSyntax, hasPreamble: Bool, warnings: [String], decodePixels: Bool,
                               frame: Int) throws -> Result {
        var h = DICOMHeader(transferSyntax: syntax, hasPreamble: hasPreamble, rows: 0, columns: 0, bitsAllocated: 0,
                            bitsStored: 0, highBit: 0, pixelRepresentation: 0, samplesPerPixel: 1,
                            photometricInterpretation: "", numberOfFrames: 1, rescaleSlope: 1, rescaleIntercept: 0)
        h.warnings = warnings
        var seen = Set<UInt32>()
        var pixelElement: Element?
        // where the data ended inside an element's header, if it did (or trailing padding)
        var cutHeader: Int?
        var last: Element?  // the last element read, for a data set that ends before Pixel Data
        while pos < bytes.count {
            if bytes.count - pos < 8 {  // trailing padding, or a file cut inside a header
                cutHeader = pos
                break
            }
            let el = try readElementHeader()
            last = el
            let tag = UInt32(el.group) << 16 | UInt32(el.element)
            if tag == 0x7FE0_0010 {
                pixelElement = el
                break
            }
            if el.length == 0xFFFF_FFFF {
                try skipUndefinedValue(el, depth: 1)
                continue
            }
            guard el.valueOffset + Int(el.length) <= bytes.count else { throw truncated(inside: el) }
            seen.insert(tag)
            if DICOMHeader.copiedTagSet.contains(tag) {
                h.copiedAttributes[tag] = Array(bytes[el.valueOffset..<(el.valueOffset + Int(el.length))])
            }
            switch tag {
            case 0x0028_0010: h.rows = ushort(el)
            case 0x0028_0011: h.columns = ushort(el)
            case 0x0028_0100: h.bitsAllocated = ushort(el)
            case 0x0028_0101: h.bitsStored = ushort(el)
            case 0x0028_0102: h.highBit = ushort(el)
            case 0x0028_0103: h.pixelRepresentation = ushort(el)
            case 0x0028_0002: h.samplesPerPixel = ushort(el)
            case 0x0028_0004: h.photometricInterpretation = string(el)
            case 0x0028_0008:
                let n = try decimals(el, "NumberOfFrames (0028,0008)", in: 0...Double(DICOM.maxFrames)).first ?? 1
                guard n == n.rounded() else {
                    throw fail("NumberOfFrames (0028,0008) is '\(n)'; expected a whole number in 1...\(DICOM.maxFrames)")
                }
                if n == 0 { h.warnings.append("NumberOfFrames (0028,0008) is 0; read as 1") }
                h.numberOfFrames = max(1, Int(n))
            case 0x0028_1053: h.rescaleSlope = try decimals(el, "RescaleSlope (0028,1053)", in: -1e6...1e6).first ?? 1
            case 0x0028_1052: h.rescaleIntercept = try decimals(el, "RescaleIntercept (0028,1052)", in: -1e7...1e7).first ?? 0
            case 0x0028_1050: h.windowCenter = try decimals(el, "WindowCenter (0028,1050)", in: -1e7...1e7).first
            case 0x0028_1051: h.windowWidth = try decimals(el, "WindowWidth (0028,1051)", in: -1e8...1e8).first
            case 0x0028_0030: h.pixelSpacing = try spacing(el, "PixelSpacing (0028,0030)", &h)
            case 0x0018_1164: h.imagerPixelSpacing = try spacing(el, "ImagerPixelSpacing (0018,1164)", &h)
            case 0x0010_0020: h.patientID = string(el)
            case 0x0008_0060: h.modality = string(el)
            case 0x0018_5101: h.viewPosition = string(el)
            case 0x0008_0018: h.sopInstanceUID = string(el)
            case 0x0020_000D: h.studyInstanceUID = string(el)
            default: break
            }
            pos = el.valueOffset + Int(el.length)
        }
        if h.rescaleSlope == 0 {
            h.rescaleSlope = 1
            h.warnings.append("RescaleSlope (0028,1053) is 0; read as 1")
        }
        for (tag, name) in [(UInt32(0x0028_0010), "Rows (0028,0010)"), (0x0028_0011, "Columns (0028,0011)"),
                            (0x0028_0100, "BitsAllocated (0028,0100)")] where !seen.contains(tag) {
            // a file cut before them is said to be truncated, not to lack them
            if let cutHeader { throw truncatedHeader(at: cutHeader) }
            throw fail("required attribute \(name) is missing")
        }
        if !seen.contains(0x0028_0101) { h.bitsStored = h.bitsAllocated }
        if !seen.contains(0x0028_0102) { h.highBit = h.bitsStored - 1 }
        // values outside what PS3.3 C.7.6.3.1 allows: read the way other readers do, and say so
        if h.pixelRepresentation != 0 && h.pixelRepresentation != 1 {
            h.warnings.append("PixelRepresentation (0028,0103) is \(h.pixelRepresentation); expected 0 (unsigned) or 1 (signed); read as 0")
            h.pixelRepresentation = 0
        }
        if h.bitsStored >= 1 && h.bitsStored <= h.bitsAllocated && !(h.bitsStored - 1..<h.bitsAllocated).contains(h.highBit) {
            h.warnings.append("HighBit (0028,0102) is \(h.highBit); expected \(h.bitsStored - 1)...\(h.bitsAllocated - 1) (BitsStored - 1 to BitsAllocated - 1); read as \(h.bitsStored - 1)")
            h.highBit = h.bitsStored - 1
        }
        if let w = h.windowWidth, w < 1 {
            h.warnings.append("WindowWidth (0028,1051) is \(w); expected at least 1 (PS3.3 C.11.2.1.2); the window is ignored")
        }
        if h.photometricInterpretation.isEmpty { h.photometricInterpretation = "MONOCHROME2" }

        guard decodePixels else { return Result(header: h, pixels: nil) }
        // Pixel format checks (colour and odd bit depths are refused with the syntax named).
        let where_ = "transfer syntax \(syntax.uid) (\(syntax.name))"
        guard h.samplesPerPixel == 1, h.photometricInterpretation == "MONOCHROME1" || h.photometricInterpretation == "MONOCHROME2" else {
            throw DataError.unsupportedPixelFormat(
                path: path,
                reason: "colour image (PhotometricInterpretation \(h.photometricInterpretation), SamplesPerPixel \(h.samplesPerPixel), \(where_)); "
                    + "Opacity reads grayscale MONOCHROME1/MONOCHROME2 with 1 sample per pixel")
        }
        guard h.bitsAllocated == 8 || h.bitsAllocated == 16 else {
            throw DataError.unsupportedPixelFormat(
                path: path, reason: "BitsAllocated \(h.bitsAllocated) (\(where_)); expected 8 or 16")
        }
        guard h.bitsStored >= 1, h.bitsStored <= h.bitsAllocated, h.rows > 0, h.columns > 0 else {
            throw DataError.unsupportedPixelFormat(
                path: path, reason: "BitsStored \(h.bitsStored), Rows \(h.rows), Columns \(h.columns) (\(where_)); expected 1...BitsAllocated and positive sizes")
        }
        guard h.rows * h.columns <= DICOM.maxPixels else {
            throw DataError.unsupportedPixelFormat(
                path: path, reason: "Rows x Columns is \(h.rows)x\(h.columns) (\(where_)); at most \(DICOM.maxPixels) pixels per frame are read")
        }
        guard (1...h.numberOfFrames).contains(frame) else {
            throw DataError.invalidParameter(name: "frame", value: "\(frame)",
                                             expected: "1...\(h.numberOfFrames) (NumberOfFrames of '\(path)')",
                                             nearest: "\(min(max(frame, 1), h.numberOfFrames))")
        }
        guard let px = pixelElement else {
            if let cutHeader { throw truncatedHeader(at: cutHeader) }
            if let last {
                throw fail(
                    "no Pixel Data element (7FE0,0010): the data ends at byte \(bytes.count), right after element "
                        + "\(DICOMParser.tagText(last.group, last.element)) at byte \(last.headerOffset); the file is truncated or holds no image")
            }
            throw fail("no Pixel Data element (7FE0,0010)")
        }

        if syntax == .jpegBaseline {
            guard px.length == 0xFFFF_FFFF else { throw fail("JPEG Baseline Pixel Data must be encapsulated (undefined length)") }
            guard h.bitsAllocated == 8 else {
                throw DataError.unsupportedPixelFormat(path: path, reason: "JPEG Baseline with BitsAllocated \(h.bitsAllocated); expected 8")
            }
            let data = try frameFragments(frame: frame, of: h.numberOfFrames, startMarker: [0xFF, 0xD8])
            let img = try data.withUnsafeBytes { try JPEG.decodeGray($0, path: path, expected: (h.columns, h.rows)) }
            guard img.width == h.columns, img.height == h.rows else {
                throw fail("JPEG is \(img.width)x\(img.height) but the header says \(h.columns)x\(h.rows)")
            }
            return Result(header: h, pixels: .uint8(img.pixels))
        }

        if syntax.isEncapsulated {
            guard px.length == 0xFFFF_FFFF else { throw fail("\(syntax.name) Pixel Data must be encapsulated (undefined length)") }
            let pixels = h.rows * h.columns, bytesPer = h.bitsAllocated / 8
            var native: [UInt8]
            switch syntax {
            case .rleLossless:
                let data = try frameFragments(frame: frame, of: h.numberOfFrames, startMarker: nil)
                native = try DICOMCodecs.decodeRLE(data, pixels: pixels, bytesPerSample: bytesPer, path: path)
            case .jpegLossless, .jpegLosslessSV1:
                let data = try frameFragments(frame: frame, of: h.numberOfFrames, startMarker: [0xFF, 0xD8])
                let r = try LosslessJPEGDecoder(data: data, path: path).decode()
                guard r.width == h.columns, r.height == h.rows else {
                    throw fail("JPEG Lossless frame is \(r.width)x\(r.height) but the header says \(h.columns)x\(h.rows)")
                }
                guard r.precision <= h.bitsAllocated else {
                    throw DataError.unsupportedPixelFormat(path: path, reason: "JPEG Lossless of \(r.precision) bits in BitsAllocated \(h.bitsAllocated) (\(where_))")
                }
                native = DICOMParser.littleEndianBytes(r.samples.map { Int32($0) }, bytesPerSample: bytesPer)
            default:  // JPEG 2000
                let data = try frameFragments(frame: frame, of: h.numberOfFrames, startMarker: [0xFF, 0x4F])
                let r = try DICOMCodecs.decodeJPEG2000(data, expected: (h.columns, h.rows), path: path)
                guard r.precision <= h.bitsAllocated else {
                    throw DataError.unsupportedPixelFormat(path: path, reason: "JPEG 2000 of \(r.precision) bits in BitsAllocated \(h.bitsAllocated) (\(where_))")
                }
                native = DICOMParser.littleEndianBytes(r.samples, bytesPerSample: bytesPer)
            }
            return native.withUnsafeBytes { Result(header: h, pixels: DICOMParser.storedValues($0, header: h, bigEndian: false)) }
        }

        // Native pixels.
        guard px.length != 0xFFFF_FFFF else { throw fail("native Pixel Data has undefined length (encapsulated data in an uncompressed syntax)") }
        let need = h.rows * h.columns * (h.bitsAllocated / 8)
        let available = min(Int(px.length), bytes.count - px.valueOffset)
        let offset = (frame - 1) * need
        guard offset + need <= available else {
            if px.valueOffset + Int(px.length) > bytes.count { throw truncated(inside: px) }
            throw fail("Pixel Data holds \(available) bytes; frame \(frame) of \(h.columns)x\(h.rows) at \(h.bitsAllocated) bits needs bytes \(offset)..<\(offset + need)")
        }
        let raw = UnsafeRawBufferPointer(rebasing: bytes[(px.valueOffset + offset)..<(px.valueOffset + offset + need)])
        return Result(header: h, pixels: DICOMParser.storedValues(raw, header: h, bigEndian: bigEndian))
    }

    /// Samples as little-endian bytes of `bytesPerSample` (1 or 2) each, two's complement
    /// bit patterns cut to that width.
    static func littleEndianBytes(_ samples: [Int32], bytesPerSample: Int) -> [UInt8] {
        if bytesPerSample == 1 { return samples.map { UInt8(truncatingIfNeeded: $0) } }
        var out = [UInt8](repeating: 0, count: samples.count * 2)
        for i in 0..<samples.count {
            let v = UInt16(truncatingIfNeeded: samples[i])
            out[2 * i] = UInt8(v & 0xFF)
            out[2 * i + 1] = UInt8(v >> 8)
        }
        return out
    }

    /// Stored values from one frame of native pixel bytes: masked to Bits Stored (shifted
    /// down when High Bit is above it) and sign-extended for Pixel Representation 1.
    /// - Precondition: `raw.count == rows * columns * bitsAllocated / 8`, bitsAllocated 8 or 16.
    static func storedValues(_ raw: UnsafeRawBufferPointer, header h: DICOMHeader, bigEndian: Bool) -> DICOMPixels {
        let count = h.rows * h.columns
        let shift = max(0, h.highBit + 1 - h.bitsStored)
        let mask = h.bitsStored >= 16 ? 0xFFFF : (1 << h.bitsStored) - 1
        let signBit = 1 << (h.bitsStored - 1)
        if h.bitsAllocated == 8 {
            let a = [UInt8](unsafeUninitializedCapacity: count) { dst, n in
                for i in 0..<count { dst[i] = UInt8((Int(raw[i]) >> shift) & mask) }
                n = count
            }
            if h.isSigned {
                return .int8(a.map { v in
                    let x = Int(v)
                    return Int8(truncatingIfNeeded: x & signBit != 0 ? x - (mask + 1) : x)
                })
            }
            return .uint8(a)
        }
        let a = [UInt16](unsafeUninitializedCapacity: count) { dst, n in
            if bigEndian {
                for i in 0..<count { dst[i] = UInt16(raw[2 * i]) << 8 | UInt16(raw[2 * i + 1]) }
            } else {
                for i in 0..<count { dst[i] = UInt16(raw[2 * i + 1]) << 8 | UInt16(raw[2 * i]) }
            }
            if h.bitsStored < 16 || shift > 0 {
                for i in 0..<count { dst[i] = UInt16((Int(dst[i]) >> shift) & mask) }
            }
            n = count
        }
        if h.isSigned {
            return .int16(a.map { v in
                let x = Int(v)
                return Int16(truncatingIfNeeded: x & signBit != 0 ? x - (mask + 1) : x)
            })
        }
        return .uint16(a)
    }

    /// The bytes of frame `frame` (1-based) of encapsulated Pixel Data (at `pos`, right after
    /// the Pixel Data header), fragments concatenated.
    ///
    /// A single-frame image is all of its fragments (PS3.5 A.4), whatever their first bytes.
    /// For several frames: the Basic Offset Table when it has one entry per frame; else one
    /// fragment per frame when the counts agree; else a new frame starts at each fragment
    /// that begins with `startMarker` (the codestream's first marker).
    mutating func frameFragments(frame: Int, of frames: Int, startMarker: [UInt8]?) throws -> [UInt8] {
        enclosing.append("\(DICOMParser.tagText(0x7FE0, 0x0010)) (encapsulated)")
        defer { enclosing.removeLast() }
        var fragments: [(item: Int, start: Int, length: Int)] = []
        var table: [Int] = []
        var first = true
        var firstItem = 0
        while true {
            let itemPos = pos
            let el = try readElementHeader()
            guard el.group == 0xFFFE else {
                throw fail(String(format: "expected an item (FFFE,E000) in encapsulated Pixel Data at byte %d", pos - 8))
            }
            if el.element == 0xE0DD { break }
            guard el.element == 0xE000, el.length != 0xFFFF_FFFF else {
                throw fail("bad fragment item in encapsulated Pixel Data at byte \(pos - 8)")
            }
            guard Int(el.length) <= bytes.count - pos else { throw truncated(inside: el) }
            let start = pos, len = Int(el.length)
            pos += len
            if first {  // Basic Offset Table
                first = false
                firstItem = pos
                table = stride(from: 0, to: len - 3, by: 4).map { Int(u32LE(start + $0)) }
                continue
            }
            fragments.append((itemPos - firstItem, start, len))
        }
        guard !fragments.isEmpty else { throw fail("encapsulated Pixel Data has no fragments") }
        var chosen: ArraySlice<(item: Int, start: Int, length: Int)>
        if frames == 1 {
            chosen = fragments[...]
        } else if table.count == frames {
            let lo = table[frame - 1], hi = frame < frames ? table[frame] : Int.max
            chosen = fragments.filter { $0.item >= lo && $0.item < hi }[...]
        } else if fragments.count == frames {
            chosen = fragments[(frame - 1)...(frame - 1)]
        } else if let m = startMarker {
            var starts: [Int] = []
            for (i, f) in fragments.enumerated() where f.length >= m.count && (0..<m.count).allSatisfy({ bytes[f.start + $0] == m[$0] }) {
                starts.append(i)
            }
            guard starts.count == frames, starts.first == 0 else {
                throw fail("encapsulated Pixel Data: cannot tell the \(frames) frames apart (\(fragments.count) fragments, \(starts.count) frame starts, no Basic Offset Table)")
            }
            let lo = starts[frame - 1], hi = frame < frames ? starts[frame] : fragments.count
            chosen = fragments[lo..<hi]
        } else {
            throw fail("encapsulated Pixel Data: \(fragments.count) fragments for \(frames) frames and no Basic Offset Table")
        }
        guard !chosen.isEmpty else { throw fail("encapsulated Pixel Data: frame \(frame) has no fragments") }
        var out: [UInt8] = []
        out.reserveCapacity(chosen.reduce(0) { $0 + $1.length })
        for f in chosen { out.append(contentsOf: bytes[f.start..<(f.start + f.length)]) }
        return out
    }

    /// A little-endian 32-bit value at `at` (Basic Offset Table entries are always little endian).
    func u32LE(_ at: Int) -> UInt32 {
        UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
    }
}

/// A minimal Explicit VR Little Endian writer.
struct DICOMWriter {
    var data = Data()

    mutating func u16(_ v: UInt16) { data.append(UInt8(v & 0xFF)); data.append(UInt8(v >> 8)) }
    mutating func u32(_ v: UInt32) { for s in stride(from: 0, to: 32, by: 8) { data.append(UInt8((v >> UInt32(s)) & 0xFF)) } }

    static func padded(_ s: String, vr: String) -> [UInt8] {
        var b = Array(s.utf8)
        if b.count % 2 == 1 { b.append(vr == "UI" ? 0 : 0x20) }
        return b
    }

    mutating func header(_ g: UInt16, _ e: UInt16, _ vr: String, length: UInt32) {
        u16(g); u16(e)
        data.append(contentsOf: Array(vr.utf8))
        if DICOMParser.longVRs.contains(vr) {
            u16(0); u32(length)
        } else {
            u16(UInt16(length))
        }
    }

    mutating func element(_ g: UInt16, _ e: UInt16, _ vr: String, string: String) {
        let b = DICOMWriter.padded(string, vr: vr)
        header(g, e, vr, length: UInt32(b.count))
        data.append(contentsOf: b)
    }

    mutating func element(_ g: UInt16, _ e: UInt16, _ vr: String, uint16: UInt16) {
        header(g, e, vr, length: 2)
        u16(uint16)
    }

    mutating func element(_ g: UInt16, _ e: UInt16, _ vr: String, bytes: [UInt8]) {
        var b = bytes
        if b.count % 2 == 1 { b.append(0) }
        header(g, e, vr, length: UInt32(b.count))
        data.append(contentsOf: b)
    }

    mutating func encapsulatedPixelData(fragment: [UInt8]) {
        header(0x7FE0, 0x0010, "OB", length: 0xFFFF_FFFF)
        u16(0xFFFE); u16(0xE000); u32(0)  // empty Basic Offset Table
        u16(0xFFFE); u16(0xE000); u32(UInt32(fragment.count))
        data.append(contentsOf: fragment)
        u16(0xFFFE); u16(0xE0DD); u32(0)
    }

    mutating func fileMeta(syntax: String, sopClass: String, sopInstance: String) {
        data.append(Data(count: 128))
        data.append(contentsOf: Array("DICM".utf8))
        var meta = DICOMWriter()
        meta.element(0x0002, 0x0001, "OB", bytes: [0, 1])
        meta.element(0x0002, 0x0002, "UI", string: sopClass)
        meta.element(0x0002, 0x0003, "UI", string: sopInstance)
        meta.element(0x0002, 0x0010, "UI", string: syntax)
        meta.element(0x0002, 0x0012, "UI", string: "1.2.826.0.1.3680043.8.498.1")
        meta.element(0x0002, 0x0013, "SH", string: "OPACITY")
        header(0x0002, 0x0000, "UL", length: 4)
        u32(UInt32(meta.data.count))
        data.append(meta.data)
    }
}
