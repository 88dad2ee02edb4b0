import CJPEG
import Foundation

/// Baseline JPEG through libjpeg-turbo's TurboJPEG API, whose calls return error codes
/// (no `setjmp`/`longjmp` crosses Swift frames).
public enum JPEG {
    /// Decodes a JPEG codestream to 8-bit gray (colour JPEGs are converted to luma).
    ///
    /// Uses the accurate integer IDCT (libjpeg's default, the same as Pillow), so pixels
    /// match other libjpeg-turbo decoders exactly and libjpeg 9 within +-1.
    /// - Parameters:
    ///   - bytes: the codestream, `FF D8 ... FF D9`; trailing padding after the EOI
    ///     marker is ignored.
    ///   - path: the name used in error messages.
    /// - Returns: the decoded image.
    /// - Throws: ``DataError/jpegDecodingFailed(path:reason:)`` with libjpeg-turbo's
    ///   message (e.g. 12-bit or lossless JPEG, truncated data).
    public static func decodeGray(_ bytes: UnsafeRawBufferPointer, path: String = "<memory>") throws -> GrayImage {
        try decodeGray(bytes, path: path, expected: nil)
    }

    /// The largest image decoded (256 megapixels), so a corrupt header cannot exhaust memory.
    public static let maxPixels = 1 << 28

    static func decodeGray(_ bytes: UnsafeRawBufferPointer, path: String, expected: (width: Int, height: Int)?) throws -> GrayImage {
        guard bytes.count >= 4, bytes[0] == 0xFF, bytes[1] == 0xD8 else {
            throw DataError.jpegDecodingFailed(path: path, reason: "data does not start with the JPEG SOI marker FF D8")
        }
        guard let handle = tjInitDecompress() else {
            throw DataError.jpegDecodingFailed(path: path, reason: "tjInitDecompress failed")
        }
        defer { tjDestroy(handle) }
        // Drop padding after EOI (DICOM pads fragments to even length).
        var size = bytes.count
        while size > 2 && !(bytes[size - 2] == 0xFF && bytes[size - 1] == 0xD9) && bytes[size - 1] == 0 { size -= 1 }
        let src = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var w: Int32 = 0, h: Int32 = 0, subsamp: Int32 = 0, colorspace: Int32 = 0
        if tjDecompressHeader3(handle, src, UInt(size), &w, &h, &subsamp, &colorspace) != 0 {
            throw DataError.jpegDecodingFailed(path: path, reason: errorString(handle))
        }
        guard w > 0, h > 0 else { throw DataError.jpegDecodingFailed(path: path, reason: "empty image \(w)x\(h)") }
        guard Int(w) * Int(h) <= maxPixels else {
            throw DataError.jpegDecodingFailed(path: path, reason: "image of \(w)x\(h) exceeds the \(maxPixels)-pixel limit")
        }
        if let e = expected, e.width != Int(w) || e.height != Int(h) {
            throw DataError.jpegDecodingFailed(path: path, reason: "JPEG is \(w)x\(h) but the header says \(e.width)x\(e.height)")
        }
        var pixels = [UInt8](repeating: 0, count: Int(w) * Int(h))
        let rc = pixels.withUnsafeMutableBufferPointer { dst in
            tjDecompress2(handle, src, UInt(size), dst.baseAddress, w, w, h, Int32(TJPF_GRAY.rawValue), TJFLAG_STOPONWARNING)
        }
        if rc != 0 { throw DataError.jpegDecodingFailed(path: path, reason: errorString(handle)) }
        return GrayImage(width: Int(w), height: Int(h), pixels: pixels)
    }

    /// Decodes a JPEG codestream held in `Data` (see ``decodeGray(_:path:)-(UnsafeRawBufferPointer,_)``).
    public static func decodeGray(_ data: Data, path: String = "<memory>") throws -> GrayImage {
        try data.withUnsafeBytes { try decodeGray($0, path: path) }
    }

    /// Encodes an 8-bit gray image as a baseline JPEG (one component, Huffman tables
    /// optimised per image, as in the RSNA files).
    /// - Parameters:
    ///   - image: the pixels.
    ///   - quality: 1...100.
    /// - Returns: the codestream.
    /// - Throws: ``DataError/invalidParameter(name:value:expected:nearest:)`` for a bad
    ///   quality, ``DataError/jpegDecodingFailed(path:reason:)`` if libjpeg-turbo fails.
    public static func encodeGray(_ image: GrayImage, quality: Int = 95) throws -> Data {
        guard (1...100).contains(quality) else {
            throw DataError.invalidParameter(name: "quality", value: "\(quality)", expected: "1...100",
                                             nearest: "\(min(max(quality, 1), 100))")
        }
        guard let handle = tjInitCompress() else {
            throw DataError.jpegDecodingFailed(path: "<encoder>", reason: "tjInitCompress failed")
        }
        defer { tjDestroy(handle) }
        var out: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        let rc = image.pixels.withUnsafeBufferPointer { src in
            tjCompress2(handle, src.baseAddress, Int32(image.width), Int32(image.width), Int32(image.height),
                        Int32(TJPF_GRAY.rawValue), &out, &size, Int32(TJSAMP_GRAY.rawValue), Int32(quality),
                        0)
        }
        defer { if let o = out { tjFree(o) } }
        guard rc == 0, let o = out else {
            throw DataError.jpegDecodingFailed(path: "<encoder>", reason: errorString(handle))
        }
        return Data(bytes: o, count: Int(size))
    }

    private static func errorString(_ handle: tjhandle) -> String {
        guard let s = tjGetErrorStr2(handle) else { return "unknown libjpeg-turbo error" }
        return String(cString: s)
    }
}
