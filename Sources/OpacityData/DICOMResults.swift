import Foundation

/// UIDs that Opacity mints: `2.25.` followed by the decimal value of a 128-bit UUID
/// (PS3.5 B.2, ISO/IEC 9834-8), at most 44 characters.
public enum DICOMUID {
    /// The root of every UID Opacity mints.
    public static let root = "2.25"

    /// A new UID from a random (version 4) UUID.
    public static func make() -> String { uid(UUID()) }

    /// The UID of `uuid`: `2.25.` + its 128 bits as an unsigned decimal.
    public static func uid(_ uuid: UUID) -> String {
        let u = uuid.uuid
        return root + "." + decimal([u.0, u.1, u.2, u.3, u.4, u.5, u.6, u.7, u.8, u.9, u.10, u.11, u.12, u.13, u.14, u.15])
    }

    /// A UID that is the same for the same hash: the first 16 bytes of `hash` (e.g. a
    /// SHA-256 of a model file) as a version 8 UUID (RFC 9562), version and variant bits set.
    /// - Precondition: `hash` holds at least 16 bytes.
    public static func derived(fromHash hash: [UInt8]) -> String {
        precondition(hash.count >= 16, "DICOMUID.derived needs at least 16 hash bytes")
        var b = Array(hash.prefix(16))
        b[6] = (b[6] & 0x0F) | 0x80
        b[8] = (b[8] & 0x3F) | 0x80
        return uid(UUID(uuid: (b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15])))
    }

    /// The unsigned big-endian integer in `bytes` in decimal, without leading zeros.
    static func decimal(_ bytes: [UInt8]) -> String {
        var n = bytes.map { UInt32($0) }
        var digits: [UInt8] = []
        while n.contains(where: { $0 != 0 }) {
            var rem: UInt32 = 0
            for i in n.indices {
                let cur = rem << 8 | n[i]
                n[i] = cur / 10
                rem = cur % 10
            }
            digits.append(UInt8(rem) + 48)
        }
        return digits.isEmpty ? "0" : String(decoding: digits.reversed(), as: UTF8.self)
    }
}

/// The source image a derived object refers to: its UIDs, frame and the patient and study
/// attributes copied into the object (same patient, same study, new series).
public struct DICOMSourceReference: Sendable, Equatable {
    /// SOP Class UID (0008,0016) of the source.
    public var sopClassUID: String
    /// SOP Instance UID (0008,0018) of the source.
    public var sopInstanceUID: String
    /// Study Instance UID (0020,000D), shared by the derived object.
    public var studyInstanceUID: String
    /// Series Instance UID (0020,000E) of the source (the derived object gets a new one).
    public var seriesInstanceUID: String
    /// The frame the findings are on (1-based) for multi-frame sources; nil for single-frame.
    public var frame: Int?
    /// Patient and study attributes as the source stores them (tag -> value bytes), copied
    /// unchanged: see ``DICOMHeader/copiedAttributes``.
    public var attributes: [UInt32: [UInt8]]

    /// The reference to the image `header` describes.
    /// - Parameters:
    ///   - header: the source's header.
    ///   - frame: the frame used, 1-based.
    ///   - path: the source file, for errors.
    /// - Throws: ``DataError/malformedDICOM(path:reason:)`` naming the first missing UID
    ///   (a derived object must reference its source by SOP Class and Instance UID and share
    ///   its Study Instance UID).
    public init(header: DICOMHeader, frame: Int = 1, path: String) throws {
        func required(_ tag: UInt32, _ name: String) throws -> String {
            let v = header.copiedAttributes[tag].map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: " \0")) } ?? ""
            guard !v.isEmpty else {
                throw DataError.malformedDICOM(path: path, reason: "\(name) is missing or empty; a DICOM result object references its source image by it")
            }
            return v
        }
        sopClassUID = try required(0x0008_0016, "SOPClassUID (0008,0016)")
        sopInstanceUID = try required(0x0008_0018, "SOPInstanceUID (0008,0018)")
        studyInstanceUID = try required(0x0020_000D, "StudyInstanceUID (0020,000D)")
        seriesInstanceUID = try required(0x0020_000E, "SeriesInstanceUID (0020,000E)")
        self.frame = header.numberOfFrames > 1 ? frame : nil
        attributes = header.copiedAttributes
    }
}

/// One finding for a DICOM result object: a rectangle in the source image's pixels (top-left
/// corner and size; pixel `(i, j)` covers `[i, i+1) x [j, j+1)`, as DICOM SCOORD counts) and a score.
public struct DICOMFinding: Sendable, Equatable {
    /// Left edge, pixels.
    public var x: Double
    /// Top edge, pixels.
    public var y: Double
    /// Width, pixels.
    public var width: Double
    /// Height, pixels.
    public var height: Double
    /// The detector's score in `[0, 1]`.
    public var score: Double

    /// A finding from its rectangle (pixels) and score.
    public init(x: Double, y: Double, width: Double, height: Double, score: Double) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
        self.score = score
    }
}

/// The device (model) that made the findings, written as the SR's observer (TID 1004) and as
/// the algorithm of each score (TID 4019).
public struct DICOMDevice: Sendable, Equatable {
    /// Device Observer UID: the same for the same model (see ``DICOMUID/derived(fromHash:)``).
    public var uid: String
    /// The model's name (zoo name, run folder or bundle file as given).
    public var name: String
    /// The model's version (Opacity uses `sha256:` and the first 16 hex digits of the bundle's hash).
    public var version: String
    /// Manufacturer, e.g. `Opacity`.
    public var manufacturer: String
    /// The software that wrote the object (General Equipment's Software Versions).
    public var softwareVersion: String

    /// A device description.
    public init(uid: String, name: String, version: String, manufacturer: String = "Opacity", softwareVersion: String) {
        self.uid = uid
        self.name = name
        self.version = version
        self.manufacturer = manufacturer
        self.softwareVersion = softwareVersion
    }
}

/// Where a derived object goes: a series (new, shared by the objects of one run and study),
/// its number, and the instance number within it.
public struct DICOMSeriesPlacement: Sendable, Equatable {
    /// Series Instance UID (0020,000E).
    public var seriesInstanceUID: String
    /// Series Number (0020,0011).
    public var seriesNumber: Int
    /// Instance Number (0020,0013).
    public var instanceNumber: Int
    /// SOP Instance UID (0008,0018) of the new object.
    public var sopInstanceUID: String

    /// A placement; by default a new series and instance UID (see ``DICOMUID/make()``).
    public init(seriesInstanceUID: String = DICOMUID.make(), seriesNumber: Int, instanceNumber: Int = 1,
                sopInstanceUID: String = DICOMUID.make()) {
        self.seriesInstanceUID = seriesInstanceUID
        self.seriesNumber = seriesNumber
        self.instanceNumber = instanceNumber
        self.sopInstanceUID = sopInstanceUID
    }
}

/// Writers for detection results as DICOM: a Comprehensive SR with a TID 1500 Measurement
/// Report, and a Secondary Capture image with the boxes burned in (Documentation/DICOM.md).
public enum DICOMResults {
    /// Comprehensive SR Storage.
    public static let comprehensiveSRClass = "1.2.840.10008.5.1.4.1.1.88.33"
    /// Secondary Capture Image Storage.
    public static let secondaryCaptureClass = "1.2.840.10008.5.1.4.1.1.7"
    /// Our Implementation Class UID (0002,0012) (a fixed UUID under 2.25).
    public static let implementationClassUID = DICOMUID.uid(UUID(uuidString: "6F706163-6974-4F79-9A64-69636F6D3136")!)

    /// A coded concept (code value, coding scheme designator, code meaning).
    struct Code {
        var value: String, scheme: String, meaning: String
        init(_ value: String, _ scheme: String, _ meaning: String) {
            self.value = value
            self.scheme = scheme
            self.meaning = meaning
        }
    }

    // The concepts used (PS3.16; DCM codes from PS3.16 Annex D, SCT from SNOMED CT).
    static let imagingMeasurementReport = Code("126000", "DCM", "Imaging Measurement Report")
    static let languageOfContent = Code("121049", "DCM", "Language of Content Item and Descendants")
    static let englishUS = Code("en-US", "RFC5646", "English (US)")
    static let observerType = Code("121005", "DCM", "Observer Type")
    static let deviceObserverType = Code("121007", "DCM", "Device")
    static let deviceObserverUID = Code("121012", "DCM", "Device Observer UID")
    static let deviceObserverName = Code("121013", "DCM", "Device Observer Name")
    static let deviceObserverManufacturer = Code("121014", "DCM", "Device Observer Manufacturer")
    static let deviceObserverModelName = Code("121015", "DCM", "Device Observer Model Name")
    static let procedureReported = Code("121058", "DCM", "Procedure reported")
    static let plainChestXRay = Code("399208008", "SCT", "Plain chest X-ray")
    static let imageLibrary = Code("111028", "DCM", "Image Library")
    static let imageLibraryGroup = Code("126200", "DCM", "Image Library Group")
    static let imagingMeasurements = Code("126010", "DCM", "Imaging Measurements")
    static let measurementGroup = Code("125007", "DCM", "Measurement Group")
    static let trackingIdentifier = Code("112039", "DCM", "Tracking Identifier")
    static let trackingUniqueIdentifier = Code("112040", "DCM", "Tracking Unique Identifier")
    static let finding = Code("121071", "DCM", "Finding")
    static let abnormalOpacity = Code("112033", "DCM", "Abnormal opacity")
    static let findingSite = Code("363698007", "SCT", "Finding Site")
    static let lung = Code("39607008", "SCT", "Lung")
    static let imageRegion = Code("111030", "DCM", "Image Region")
    static let certaintyOfFinding = Code("111012", "DCM", "Certainty of Finding")
    static let percent = Code("%", "UCUM", "Percent")
    static let algorithmName = Code("111001", "DCM", "Algorithm Name")
    static let algorithmVersion = Code("111003", "DCM", "Algorithm Version")

    /// The Structured Report for one source image: a TID 1500 Measurement Report whose
    /// observer is `device`, with one Measurement Group (TID 1410) per finding: a closed
    /// POLYLINE of 5 points (SCOORD, "Image Region") selected from the source image, the
    /// finding "Abnormal opacity" in the lung, and the score as "Certainty of Finding" in percent.
    /// - Parameters:
    ///   - source: the image the findings are on.
    ///   - findings: the boxes with scores (none: a report that says nothing was found).
    ///   - device: the model.
    ///   - placement: the new series and instance.
    ///   - date: the content date and time.
    /// - Returns: a DICOM Part 10 file (Explicit VR Little Endian).
    public static func structuredReport(source: DICOMSourceReference, findings: [DICOMFinding], device: DICOMDevice,
                                        placement: DICOMSeriesPlacement, date: Date = Date()) -> Data {
        var ds = commonModules(source: source, sopClass: comprehensiveSRClass, placement: placement, modality: "SR",
                               seriesDescription: "Opacity lung opacity findings (SR)", device: device, date: date)
        let (d, t) = dateTime(date)
        // SR Document General
        ds.string(0x0040_A491, "CS", "COMPLETE")
        ds.string(0x0040_A493, "CS", "UNVERIFIED")
        ds.string(0x0008_0023, "DA", d)
        ds.string(0x0008_0033, "TM", t)
        ds.sequence(0x0008_1111, [])  // SR Document Series: Referenced Performed Procedure Step Sequence (type 2)
        ds.sequence(0x0040_A372, [])  // Performed Procedure Code Sequence (type 2)
        var seriesItem = DataSetBuilder()
        seriesItem.string(0x0020_000E, "UI", source.seriesInstanceUID)
        seriesItem.sequence(0x0008_1199, [sopReference(source, withFrame: false)])
        var evidence = DataSetBuilder()
        evidence.string(0x0020_000D, "UI", source.studyInstanceUID)
        evidence.sequence(0x0008_1115, [seriesItem])
        ds.sequence(0x0040_A375, [evidence])  // Current Requested Procedure Evidence Sequence
        // SR Document Content: the root CONTAINER of TID 1500
        ds.string(0x0040_A040, "CS", "CONTAINER")
        ds.sequence(0x0040_A043, [code(imagingMeasurementReport)])
        ds.string(0x0040_A050, "CS", "SEPARATE")
        var template = DataSetBuilder()
        template.string(0x0008_0105, "CS", "DCMR")
        template.string(0x0040_DB00, "CS", "1500")
        ds.sequence(0x0040_A504, [template])
        var root: [DataSetBuilder] = []
        root.append(item("HAS CONCEPT MOD", codeValue: englishUS, name: languageOfContent))
        root.append(item("HAS OBS CONTEXT", codeValue: deviceObserverType, name: observerType))
        root.append(item("HAS OBS CONTEXT", uid: device.uid, name: deviceObserverUID))
        root.append(item("HAS OBS CONTEXT", text: device.name, name: deviceObserverName))
        root.append(item("HAS OBS CONTEXT", text: device.manufacturer, name: deviceObserverManufacturer))
        root.append(item("HAS OBS CONTEXT", text: "\(device.name) \(device.version)", name: deviceObserverModelName))
        root.append(item("HAS CONCEPT MOD", codeValue: plainChestXRay, name: procedureReported))
        var libraryImage = DataSetBuilder()
        libraryImage.string(0x0040_A010, "CS", "CONTAINS")
        libraryImage.string(0x0040_A040, "CS", "IMAGE")
        libraryImage.sequence(0x0008_1199, [sopReference(source, withFrame: true)])
        var group = container("CONTAINS", imageLibraryGroup)
        group.sequence(0x0040_A730, [libraryImage])
        var library = container("CONTAINS", imageLibrary)
        library.sequence(0x0040_A730, [group])
        root.append(library)
        var measurements = container("CONTAINS", imagingMeasurements)
        var groups: [DataSetBuilder] = []
        for (k, f) in findings.enumerated() { groups.append(measurementGroup(f, index: k + 1, source: source, device: device)) }
        if !groups.isEmpty { measurements.sequence(0x0040_A730, groups) }
        root.append(measurements)
        ds.sequence(0x0040_A730, root)
        return ds.part10(sopClass: comprehensiveSRClass, sopInstance: placement.sopInstanceUID)
    }

    /// A Secondary Capture image of `image` (the source rendered to 8 bits with the boxes
    /// burned in, RGB), same patient and study as `source`, in a new series; it references
    /// the source in Source Image Sequence and says Burned In Annotation YES.
    /// - Parameters:
    ///   - image: the overlay, interleaved RGB.
    ///   - source: the image it was made from.
    ///   - placement: the new series and instance.
    ///   - device: the model (General Equipment's model name and software version).
    ///   - date: the content date and time.
    /// - Returns: a DICOM Part 10 file (Explicit VR Little Endian, uncompressed).
    /// - Throws: ``DataError/invalidParameter(name:value:expected:nearest:)`` for an image over 65535 pixels a side.
    public static func secondaryCapture(_ image: RGBImage, source: DICOMSourceReference, device: DICOMDevice,
                                        placement: DICOMSeriesPlacement, date: Date = Date()) throws -> Data {
        guard (1...65_535).contains(image.width), (1...65_535).contains(image.height) else {
            throw DataError.invalidParameter(name: "overlay size", value: "\(image.width)x\(image.height)",
                                             expected: "1...65535 pixels a side (DICOM Rows/Columns are 16-bit)", nearest: nil)
        }
        var ds = commonModules(source: source, sopClass: secondaryCaptureClass, placement: placement, modality: "OT",
                               seriesDescription: "Opacity lung opacity overlay (boxes burned in)", device: device, date: date)
        let (d, t) = dateTime(date)
        ds.string(0x0008_0008, "CS", "DERIVED\\SECONDARY")
        ds.string(0x0008_0023, "DA", d)
        ds.string(0x0008_0033, "TM", t)
        ds.string(0x0008_0064, "CS", "WSD")  // SC Equipment: Conversion Type, workstation
        ds.string(0x0008_2111, "ST", "Boxes of \(device.name) \(device.version) burned in")  // Derivation Description
        var sourceImage = sopReference(source, withFrame: true)
        sourceImage.sequence(0x0040_A170, [code(Code("121320", "DCM", "Uncompressed predecessor"))])
        ds.sequence(0x0008_2112, [sourceImage])
        ds.raw(0x0020_0020, "CS", source.attributes[0x0020_0020] ?? [])  // Patient Orientation (type 2C)
        // Body Part Examined as the source says (CHEST: unpaired, so no Laterality); without
        // it, Laterality (type 2C) is written empty, i.e. unknown
        if let part = source.attributes[0x0018_0015] { ds.raw(0x0018_0015, "CS", part) } else { ds.raw(0x0020_0060, "CS", []) }
        ds.string(0x0028_0301, "CS", "YES")  // Burned In Annotation
        ds.us(0x0028_0002, 3)
        ds.string(0x0028_0004, "CS", "RGB")
        ds.us(0x0028_0006, 0)
        ds.us(0x0028_0010, UInt16(image.height))
        ds.us(0x0028_0011, UInt16(image.width))
        ds.us(0x0028_0100, 8)
        ds.us(0x0028_0101, 8)
        ds.us(0x0028_0102, 7)
        ds.us(0x0028_0103, 0)
        ds.raw(0x7FE0_0010, "OB", image.pixels)
        return ds.part10(sopClass: secondaryCaptureClass, sopInstance: placement.sopInstanceUID)
    }

    /// Patient, General Study, the series, General Equipment and SOP Common modules.
    static func commonModules(source: DICOMSourceReference, sopClass: String, placement: DICOMSeriesPlacement, modality: String,
                              seriesDescription: String, device: DICOMDevice, date: Date) -> DataSetBuilder {
        var ds = DataSetBuilder()
        for (tag, vr, type2) in DICOMHeader.copiedPatientStudyTags {
            if let v = source.attributes[tag], validValue(v, vr: vr) { ds.raw(tag, vr, v) } else if type2 { ds.raw(tag, vr, []) }
        }
        if let charset = source.attributes[0x0008_0005] { ds.raw(0x0008_0005, "CS", charset) }
        let (d, t) = dateTime(date)
        ds.string(0x0008_0012, "DA", d)
        ds.string(0x0008_0013, "TM", t)
        ds.string(0x0008_0201, "SH", "+0000")
        ds.string(0x0008_0016, "UI", sopClass)
        ds.string(0x0008_0018, "UI", placement.sopInstanceUID)
        ds.string(0x0008_0060, "CS", modality)
        ds.string(0x0008_0070, "LO", device.manufacturer)
        ds.string(0x0008_1090, "LO", "Opacity")
        ds.string(0x0018_1020, "LO", device.softwareVersion)
        ds.string(0x0008_103E, "LO", seriesDescription)
        ds.string(0x0020_000E, "UI", placement.seriesInstanceUID)
        ds.string(0x0020_0011, "IS", "\(placement.seriesNumber)")
        ds.string(0x0020_0013, "IS", "\(placement.instanceNumber)")
        return ds
    }

    /// Whether a copied value fits its VR well enough to be written: Age String must be
    /// `nnnD/W/M/Y` (sources with, e.g., `32` lose the optional Patient's Age rather than
    /// making the new object invalid); other VRs are copied as the source has them.
    static func validValue(_ v: [UInt8], vr: String) -> Bool {
        guard vr == "AS" else { return true }
        let t = Array(String(decoding: v, as: UTF8.self).trimmingCharacters(in: .whitespaces).utf8)
        return t.count == 4 && t[0..<3].allSatisfy { (48...57).contains($0) } && "DWMY".utf8.contains(t[3])
    }

    static func dateTime(_ date: Date) -> (String, String) {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        let c = cal.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        return (String(format: "%04d%02d%02d", c.year!, c.month!, c.day!), String(format: "%02d%02d%02d", c.hour!, c.minute!, c.second!))
    }

    static func code(_ c: Code) -> DataSetBuilder {
        var b = DataSetBuilder()
        b.string(0x0008_0100, "SH", c.value)
        b.string(0x0008_0102, "SH", c.scheme)
        b.string(0x0008_0104, "LO", c.meaning)
        return b
    }

    static func sopReference(_ s: DICOMSourceReference, withFrame: Bool) -> DataSetBuilder {
        var b = DataSetBuilder()
        b.string(0x0008_1150, "UI", s.sopClassUID)
        b.string(0x0008_1155, "UI", s.sopInstanceUID)
        if withFrame, let f = s.frame { b.string(0x0008_1160, "IS", "\(f)") }
        return b
    }

    static func container(_ relationship: String, _ name: Code) -> DataSetBuilder {
        var b = DataSetBuilder()
        b.string(0x0040_A010, "CS", relationship)
        b.string(0x0040_A040, "CS", "CONTAINER")
        b.sequence(0x0040_A043, [code(name)])
        b.string(0x0040_A050, "CS", "SEPARATE")
        return b
    }

    static func item(_ relationship: String, codeValue: Code? = nil, uid: String? = nil, text: String? = nil, name: Code) -> DataSetBuilder {
        var b = DataSetBuilder()
        b.string(0x0040_A010, "CS", relationship)
        b.sequence(0x0040_A043, [code(name)])
        if let codeValue {
            b.string(0x0040_A040, "CS", "CODE")
            b.sequence(0x0040_A168, [code(codeValue)])
        } else if let uid {
            b.string(0x0040_A040, "CS", "UIDREF")
            b.string(0x0040_A124, "UI", uid)
        } else {
            b.string(0x0040_A040, "CS", "TEXT")
            b.string(0x0040_A160, "UT", text ?? "")
        }
        return b
    }

    /// One TID 1410 Measurement Group: tracking, finding, finding site, the region, the score.
    static func measurementGroup(_ f: DICOMFinding, index: Int, source: DICOMSourceReference, device: DICOMDevice) -> DataSetBuilder {
        var g = container("CONTAINS", measurementGroup)
        var children: [DataSetBuilder] = []
        children.append(item("HAS OBS CONTEXT", text: "opacity \(index)", name: trackingIdentifier))
        children.append(item("HAS OBS CONTEXT", uid: DICOMUID.make(), name: trackingUniqueIdentifier))
        children.append(item("CONTAINS", codeValue: abnormalOpacity, name: finding))
        children.append(item("HAS CONCEPT MOD", codeValue: lung, name: findingSite))
        var region = DataSetBuilder()
        region.string(0x0040_A010, "CS", "CONTAINS")
        region.string(0x0040_A040, "CS", "SCOORD")
        region.sequence(0x0040_A043, [code(imageRegion)])
        let x1 = Float(f.x), y1 = Float(f.y), x2 = Float(f.x + f.width), y2 = Float(f.y + f.height)
        region.floats(0x0070_0022, [x1, y1, x2, y1, x2, y2, x1, y2, x1, y1])  // column\row pairs, closed
        region.string(0x0070_0023, "CS", "POLYLINE")
        var image = DataSetBuilder()
        image.string(0x0040_A010, "CS", "SELECTED FROM")
        image.string(0x0040_A040, "CS", "IMAGE")
        image.sequence(0x0008_1199, [sopReference(source, withFrame: true)])
        region.sequence(0x0040_A730, [image])
        children.append(region)
        var num = DataSetBuilder()
        num.string(0x0040_A010, "CS", "CONTAINS")
        num.string(0x0040_A040, "CS", "NUM")
        num.sequence(0x0040_A043, [code(certaintyOfFinding)])
        var measured = DataSetBuilder()
        measured.string(0x0040_A30A, "DS", decimalString(min(max(f.score, 0), 1) * 100))
        measured.sequence(0x0040_08EA, [code(percent)])
        num.sequence(0x0040_A300, [measured])
        num.sequence(0x0040_A730, [item("HAS CONCEPT MOD", text: device.name, name: algorithmName),
                                   item("HAS CONCEPT MOD", text: device.version, name: algorithmVersion)])
        children.append(num)
        g.sequence(0x0040_A730, children)
        return g
    }

    /// A DS value of at most 16 characters.
    static func decimalString(_ v: Double) -> String {
        for digits in stride(from: 10, through: 1, by: -1) {
            let s = String(format: "%.\(digits)g", v)
            if s.count <= 16 { return s }
        }
        return "0"
    }
}

/// A data set under construction: elements encoded as Explicit VR Little Endian, written in
/// ascending tag order; sequences with explicit lengths.
struct DataSetBuilder {
    private var elements: [(tag: UInt32, bytes: Data)] = []

    private mutating func add(_ tag: UInt32, _ vr: String, _ value: [UInt8]) {
        var v = value
        if v.count % 2 == 1 { v.append(vr == "UI" || vr == "OB" ? 0 : 0x20) }
        var w = DICOMWriter()
        w.header(UInt16(tag >> 16), UInt16(tag & 0xFFFF), vr, length: UInt32(v.count))
        w.data.append(contentsOf: v)
        elements.removeAll { $0.tag == tag }
        elements.append((tag, w.data))
    }

    mutating func string(_ tag: UInt32, _ vr: String, _ value: String) { add(tag, vr, Array(value.utf8)) }
    mutating func raw(_ tag: UInt32, _ vr: String, _ value: [UInt8]) { add(tag, vr, value) }

    mutating func us(_ tag: UInt32, _ value: UInt16) { add(tag, "US", [UInt8(value & 0xFF), UInt8(value >> 8)]) }

    mutating func floats(_ tag: UInt32, _ values: [Float]) {
        add(tag, "FL", values.flatMap { v -> [UInt8] in let b = v.bitPattern; return [0, 8, 16, 24].map { UInt8((b >> UInt32($0)) & 0xFF) } })
    }

    mutating func sequence(_ tag: UInt32, _ items: [DataSetBuilder]) {
        var body = DICOMWriter()
        for item in items {
            let d = item.encoded()
            body.u16(0xFFFE); body.u16(0xE000); body.u32(UInt32(d.count))
            body.data.append(d)
        }
        var w = DICOMWriter()
        w.header(UInt16(tag >> 16), UInt16(tag & 0xFFFF), "SQ", length: UInt32(body.data.count))
        w.data.append(body.data)
        elements.removeAll { $0.tag == tag }
        elements.append((tag, w.data))
    }

    func encoded() -> Data {
        var d = Data()
        for e in elements.sorted(by: { $0.tag < $1.tag }) { d.append(e.bytes) }
        return d
    }

    /// The data set as a Part 10 file: preamble, `DICM`, file meta (Explicit VR Little Endian).
    func part10(sopClass: String, sopInstance: String) -> Data {
        var meta = DataSetBuilder()
        meta.raw(0x0002_0001, "OB", [0, 1])
        meta.string(0x0002_0002, "UI", sopClass)
        meta.string(0x0002_0003, "UI", sopInstance)
        meta.string(0x0002_0010, "UI", TransferSyntax.explicitVRLittleEndian.uid)
        meta.string(0x0002_0012, "UI", DICOMResults.implementationClassUID)
        meta.string(0x0002_0013, "SH", "OPACITY")
        let m = meta.encoded()
        var out = Data(count: 128)
        out.append(contentsOf: Array("DICM".utf8))
        var w = DICOMWriter()
        w.header(0x0002, 0x0000, "UL", length: 4)
        w.u32(UInt32(m.count))
        out.append(w.data)
        out.append(m)
        out.append(encoded())
        return out
    }
}
