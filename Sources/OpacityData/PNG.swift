import CPNG
import Foundation

/// A decoded PNG in the form it was stored.
public enum PNGImage: Sendable, Equatable {
    /// 8-bit grayscale (also 1/2/4-bit gray and gray+alpha, composited on black).
    case gray8(GrayImage)
    /// 16-bit grayscale, values as stored.
    case gray16(GrayImage16)
    /// 8-bit RGB (also palette and RGBA images, composited on black).
    case rgb(RGBImage)

    /// The image as 8-bit gray: 16-bit values are scaled by 255/65535, colour is reduced
    /// to luma.
    public var gray: GrayImage {
        switch self {
        case let .gray8(g): return g
        case let .gray16(g): return g.to8Bit()
        case let .rgb(c): return c.toGray()
        }
    }
}

/// PNG reading and writing through libpng's simplified API (`png_image_*`), which
/// reports errors as return codes (no `setjmp` crosses Swift frames).
///
/// Pixel values are kept as stored: an 8-bit gray file reads back byte for byte, a
/// 16-bit file keeps its 16-bit values.
public enum PNG {
    private static let formatLinear: UInt32 = 0x04
    private static let formatColor: UInt32 = 0x02
    private static let formatAlpha: UInt32 = 0x01
    private static let flagFast: UInt32 = 0x02

    /// Reads a PNG file.
    /// - Parameter url: the file.
    /// - Returns: the image as 8-bit gray, 16-bit gray or 8-bit RGB, matching the file.
    /// - Throws: ``DataError/unreadableFile(path:reason:)`` when the file cannot be read,
    ///   ``DataError/pngFailed(path:reason:)`` when libpng rejects it.
    public static func read(_ url: URL) throws -> PNGImage {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw DataError.unreadableFile(path: url.path, reason: error.localizedDescription)
        }
        return try decode(data, path: url.path)
    }

    /// Reads a PNG file as 8-bit gray (see ``PNGImage/gray``).
    /// - Throws: as ``read(_:)``.
    public static func readGray(_ url: URL) throws -> GrayImage { try read(url).gray }

    /// The most pixels a PNG may have (8192 x 8192: at most 192 MiB decoded, as RGB);
    /// chest films are at most about 4300 x 4300. Checked against the header before any
    /// pixel memory is allocated.
    public static let maxPixels = 1 << 26

    /// The width and height of a PNG file, from its header (no pixels are decoded).
    /// - Parameter url: the file.
    /// - Returns: the size in pixels.
    /// - Throws: ``DataError/unreadableFile(path:reason:)`` when the file cannot be read,
    ///   ``DataError/pngFailed(path:reason:)`` when libpng rejects its header.
    public static func size(of url: URL) throws -> (width: Int, height: Int) {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw DataError.unreadableFile(path: url.path, reason: error.localizedDescription)
        }
        return try size(of: data, path: url.path)
    }

    /// The width and height in PNG bytes' header (see ``size(of:)``).
    static func size(of data: Data, path: String) throws -> (width: Int, height: Int) {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        let ok = data.withUnsafeBytes { raw -> Int32 in
            png_image_begin_read_from_memory(&image, raw.baseAddress, raw.count)
        }
        guard ok != 0 else { throw DataError.pngFailed(path: path, reason: message(&image)) }
        png_image_free(&image)
        return (Int(image.width), Int(image.height))
    }

    /// Decodes PNG bytes.
    /// - Parameters:
    ///   - data: the whole file.
    ///   - path: the name used in error messages.
    /// - Throws: ``DataError/pngFailed(path:reason:)``.
    public static func decode(_ data: Data, path: String = "<memory>") throws -> PNGImage {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        let ok = data.withUnsafeBytes { raw -> Int32 in
            png_image_begin_read_from_memory(&image, raw.baseAddress, raw.count)
        }
        guard ok != 0 else { throw DataError.pngFailed(path: path, reason: message(&image)) }
        defer { png_image_free(&image) }
        let native = image.format
        let width = Int(image.width), height = Int(image.height)
        guard width > 0, height > 0, width * height <= maxPixels else {
            throw DataError.pngFailed(path: path, reason: "the header claims \(width)x\(height) pixels, more than the limit of "
                                      + "\(maxPixels) (8192 x 8192); refused before decoding")
        }
        let isColor = native & formatColor != 0
        let is16 = native & formatLinear != 0
        if !isColor && is16 {
            image.format = formatLinear  // PNG_FORMAT_LINEAR_Y: 16-bit values as stored
            var pixels = [UInt16](repeating: 0, count: width * height)
            let r = data.withUnsafeBytes { _ in
                pixels.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
            }
            guard r != 0 else { throw DataError.pngFailed(path: path, reason: message(&image)) }
            return .gray16(GrayImage16(width: width, height: height, pixels: pixels))
        }
        image.format = isColor ? formatColor : 0
        var pixels = [UInt8](repeating: 0, count: width * height * (isColor ? 3 : 1))
        let r = data.withUnsafeBytes { _ in
            pixels.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
        }
        guard r != 0 else { throw DataError.pngFailed(path: path, reason: message(&image)) }
        if isColor { return .rgb(RGBImage(width: width, height: height, pixels: pixels)) }
        return .gray8(GrayImage(width: width, height: height, pixels: pixels))
    }

    /// Encodes an 8-bit gray image as PNG bytes.
    /// - Parameter fast: favour speed over size (libpng's `PNG_IMAGE_FLAG_FAST`).
    public static func encode(_ image: GrayImage, fast: Bool = false) throws -> Data {
        try encode(width: image.width, height: image.height, format: 0, fast: fast, bytes: image.pixels)
    }

    /// Encodes a 16-bit gray image as PNG bytes.
    public static func encode(_ image: GrayImage16, fast: Bool = false) throws -> Data {
        try image.pixels.withUnsafeBytes {
            try encode(width: image.width, height: image.height, format: formatLinear, fast: fast, bytes: Array($0))
        }
    }

    /// Encodes an RGB image as PNG bytes.
    public static func encode(_ image: RGBImage, fast: Bool = false) throws -> Data {
        try encode(width: image.width, height: image.height, format: formatColor, fast: fast, bytes: image.pixels)
    }

    /// Writes an 8-bit gray PNG (atomically: a temporary file, then a rename).
    /// - Throws: ``DataError/unwritableFile(path:reason:)``.
    public static func write(_ image: GrayImage, to url: URL, fast: Bool = false) throws {
        try writeData(try encode(image, fast: fast), to: url)
    }

    /// Writes a 16-bit gray PNG.
    /// - Throws: ``DataError/unwritableFile(path:reason:)``.
    public static func write(_ image: GrayImage16, to url: URL, fast: Bool = false) throws {
        try writeData(try encode(image, fast: fast), to: url)
    }

    /// Writes an 8-bit RGB PNG.
    /// - Throws: ``DataError/unwritableFile(path:reason:)``.
    public static func write(_ image: RGBImage, to url: URL, fast: Bool = false) throws {
        try writeData(try encode(image, fast: fast), to: url)
    }

    // MARK: - Implementation details

    private static func encode(width: Int, height: Int, format: UInt32, fast: Bool, bytes: [UInt8]) throws -> Data {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        image.width = UInt32(width)
        image.height = UInt32(height)
        image.format = format
        image.flags = fast ? flagFast : 0
        // One pass into a buffer of libpng's worst-case size (PNG_IMAGE_PNG_SIZE_MAX in png.h:
        // the filtered rows as zlib's stored blocks, plus chunk headers): sizing the buffer with a
        // first call compressed the whole image twice (a 1024 x 1024 overlay: 42% of
        // `opacity detect`'s process time was zlib).
        var size = Self.maximumEncodedSize(width: width, height: height, channels: format == formatColor ? 3 : 1, bytesPerSample: format == formatLinear ? 2 : 1)
        var out = Data(count: size)
        let ok = out.withUnsafeMutableBytes { dst in
            bytes.withUnsafeBytes { png_image_write_to_memory(&image, dst.baseAddress, &size, 0, $0.baseAddress, 0, nil) }
        }
        guard ok != 0, size > 0, size <= out.count else { throw DataError.pngFailed(path: "<encoder>", reason: message(&image)) }
        out.count = size
        return out
    }

    /// An upper bound, in bytes, of the PNG that ``encode(_:fast:)`` writes for an image of these
    /// dimensions (8- or 16-bit samples, 1 or 3 channels): libpng's `PNG_IMAGE_PNG_SIZE_MAX` (png.h, 1.6), from
    /// `PNG_ZLIB_MAX_SIZE` of the image data with a filter byte per row, plus the signature and
    /// chunk overheads, with a kilobyte to spare.
    public static func maximumEncodedSize(width: Int, height: Int, channels: Int, bytesPerSample: Int) -> Int {
        let data = height * (1 + width * channels * bytesPerSample)
        let zlib = data + (data + 7) / 8 + (data + 63) / 64 + 11
        return zlib + 12 * (zlib / 8192 + 1) + 8 + 25 + 16 + 44 + 12 + 12 + 1024
    }

    private static func message(_ image: inout png_image) -> String {
        withUnsafeBytes(of: &image.message) { raw in
            let bytes = raw.prefix(while: { $0 != 0 })
            let s = String(decoding: bytes, as: UTF8.self)
            return s.isEmpty ? "libpng error" : s
        }
    }
}

/// Writes `data` to `url` via a temporary file and a rename, creating parent folders.
func writeData(_ data: Data, to url: URL) throws {
    do {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: url, options: .atomic)
    } catch {
        throw DataError.unwritableFile(path: url.path, reason: error.localizedDescription)
    }
}
