import Foundation
import OpacityCore

/// Reading any supported image file (DICOM, PNG, JPEG) as an 8-bit gray image.
public enum ImageFile {
    /// A recognised image file format.
    public enum Format: String, Sendable, CaseIterable {
        /// DICOM Part 10 (`.dcm`, `.dicom`, or the `DICM` prefix).
        case dicom
        /// PNG.
        case png
        /// A bare JPEG file.
        case jpeg
    }

    /// File extensions that ``read(_:window:frame:)`` accepts, lower-case, without the dot.
    public static let extensions = ["dcm", "dicom", "png", "jpg", "jpeg"]

    /// The format of `data` from its magic bytes, or from the extension of `url`.
    /// - Returns: `nil` when neither says.
    public static func format(of data: Data, url: URL) -> Format? {
        if data.count >= 8, data.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if data.count >= 132, data[data.startIndex + 128..<data.startIndex + 132].elementsEqual(Array("DICM".utf8)) { return .dicom }
        if data.count >= 3, data.starts(with: [0xFF, 0xD8, 0xFF]) { return .jpeg }
        switch url.pathExtension.lowercased() {
        case "dcm", "dicom": return .dicom
        case "png": return .png
        case "jpg", "jpeg": return .jpeg
        default: return nil
        }
    }

    /// Reads an image file as 8-bit gray.
    ///
    /// DICOM is windowed to 8 bits (``DICOMImage/displayImage(window:)``); PNG 16-bit is
    /// scaled to 8 bits and colour reduced to luma.
    /// - Parameters:
    ///   - url: the file.
    ///   - window: the windowing for DICOM files.
    ///   - frame: the frame of a multi-frame DICOM, 1-based.
    /// - Throws: ``DataError`` naming the file (unreadable, unknown format, decoder errors).
    public static func read(_ url: URL, window: WindowSetting = .automatic, frame: Int = 1) throws -> GrayImage {
        let data = try DICOM.readFile(url)
        switch format(of: data, url: url) {
        case .dicom: return try DICOM.decode(data, path: url.path, frame: frame).displayImage(window: window)
        case .png: return try PNG.decode(data, path: url.path).gray
        case .jpeg: return try JPEG.decodeGray(data, path: url.path)
        case nil:
            throw DataError.unknownImageFormat(path: url.path, expected: "DICOM (.dcm), PNG (.png) or JPEG (.jpg)")
        }
    }

    /// Reads an image file at full depth, as the model sees it (see ``SourceImage``): 8-bit
    /// files stay 8-bit; DICOM of more bits is rescaled, windowed and inverted in `Float`
    /// (``DICOMImage/floatImage(window:)``); 16-bit PNG is value / 65535; colour is luma.
    /// - Parameters:
    ///   - url: the file.
    ///   - window: the windowing for DICOM files.
    ///   - frame: the frame of a multi-frame DICOM, 1-based.
    /// - Throws: as ``read(_:window:frame:)``.
    public static func readSource(_ url: URL, window: WindowSetting = .automatic, frame: Int = 1) throws -> SourceImage {
        let data = try DICOM.readFile(url)
        switch format(of: data, url: url) {
        case .dicom: return try DICOM.decode(data, path: url.path, frame: frame).sourceImage(window: window)
        case .png: return SourceImage(try PNG.decode(data, path: url.path))
        case .jpeg: return .gray(try JPEG.decodeGray(data, path: url.path))
        case nil:
            throw DataError.unknownImageFormat(path: url.path, expected: "DICOM (.dcm), PNG (.png) or JPEG (.jpg)")
        }
    }

    /// The width and height of an image file without decoding its pixels where the format
    /// allows: a DICOM's Columns and Rows, a PNG's header; a JPEG is decoded.
    /// - Parameter url: the file.
    /// - Returns: the size in pixels.
    /// - Throws: as ``read(_:window:frame:)``.
    public static func size(of url: URL) throws -> (width: Int, height: Int) {
        let data = try DICOM.readFile(url)
        switch format(of: data, url: url) {
        case .dicom:
            let h = try DICOM.decodeHeader(data, path: url.path)
            return (h.columns, h.rows)
        case .png: return try PNG.size(of: data, path: url.path)
        case .jpeg:
            let g = try JPEG.decodeGray(data, path: url.path)
            return (g.width, g.height)
        case nil:
            throw DataError.unknownImageFormat(path: url.path, expected: "DICOM (.dcm), PNG (.png) or JPEG (.jpg)")
        }
    }

    /// What to say when `folder` holds no image directly: the subfolders that do (images are
    /// looked for directly in a folder, never in its subfolders, and a DICOM study is often
    /// kept as study/series/*.dcm). Empty when no subfolder holds one.
    /// - Parameters:
    ///   - folder: the folder given.
    ///   - shown: the folder as the user typed it (the subfolders are named under it).
    /// - Returns: e.g. `; subfolders are not searched, and 2 of them hold images: name them (scans/a scans/b)`.
    public static func subfolderHint(in folder: URL, shown: String) -> String {
        let fm = FileManager.default
        let names = ((try? fm.contentsOfDirectory(atPath: folder.path)) ?? []).sorted()
        let holding = names.filter { name in
            var isDir: ObjCBool = false
            let sub = folder.appendingPathComponent(name)
            guard fm.fileExists(atPath: sub.path, isDirectory: &isDir), isDir.boolValue else { return false }
            return ((try? list(in: sub)) ?? []).isEmpty == false
        }
        guard !holding.isEmpty else { return "" }
        let base = shown.hasSuffix("/") ? String(shown.dropLast()) : shown
        let named = holding.prefix(5).map { base + "/" + $0 }.joined(separator: " ") + (holding.count > 5 ? " ..." : "")
        let one = holding.count == 1
        return "; subfolders are not searched, and \(holding.count) of them \(one ? "holds" : "hold") images: name \(one ? "it" : "them") (\(named))"
    }

    /// The image files directly inside `folder` (not recursive), sorted by name.
    /// - Throws: ``DataError/missingFile(path:expected:)`` when the folder does not exist.
    public static func list(in folder: URL) throws -> [URL] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDir), isDir.boolValue else {
            throw DataError.missingFile(path: folder.path, expected: "a folder of images (.dcm, .png, .jpg)")
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter { extensions.contains(($0 as NSString).pathExtension.lowercased()) }
            .sorted()
            .map { folder.appendingPathComponent($0) }
    }
}

extension SourceImage {
    /// A decoded PNG as the model sees it: 8-bit gray as is, 16-bit gray as value / 65535
    /// (full depth), colour as 8-bit luma.
    public init(_ png: PNGImage) {
        switch png {
        case let .gray8(g): self = .gray(g)
        case let .gray16(g):
            let inv: Float = 1 / 65535
            self = .float(FloatImage(width: g.width, height: g.height, pixels: g.pixels.map { Float($0) * inv }))
        case let .rgb(c): self = .gray(c.toGray())
        }
    }
}
