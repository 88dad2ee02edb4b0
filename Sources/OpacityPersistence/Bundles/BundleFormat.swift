import OpacityCore
/// Constants and the fixed header of the bundle file format (Documentation/Bundles.md).
///
/// ```
/// offset size  field (all integers little-endian)
///  0      8    magic 89 4F 50 42 0D 0A 1A 0A   ("\x89OPB\r\n\x1a\n")
///  8      4    format version (u32) = 1
/// 12      4    flags (u32): bit 0 = data section is one zstd frame (always set in v1)
/// 16      8    metadata length M (u64): bytes of UTF-8 JSON
/// 24      8    data length D (u64): stored (compressed) bytes of the data section
/// 32      8    raw data length R (u64): decompressed bytes of the data section
/// 40      4    CRC-32 of the metadata bytes (u32)
/// 44      4    CRC-32 of header bytes 0..<44 (u32)
/// 48      M    metadata JSON (with the tensor table)
/// 48+M    D    data section
/// ```
public enum BundleFormat {
    /// The 8 bytes every bundle starts with.
    public static let magic: [UInt8] = [0x89, 0x4F, 0x50, 0x42, 0x0D, 0x0A, 0x1A, 0x0A]
    /// The format version this build writes.
    public static let version: UInt32 = 1
    /// The format versions this build reads.
    public static let readableVersions: [UInt32] = [1]
    /// Size of the fixed header in bytes.
    public static let headerSize = 48
    /// Flag bit: the data section is a zstd frame.
    public static let flagZstd: UInt32 = 1
    /// The usual file extension.
    public static let fileExtension = "opb"
}

/// The fixed 48-byte header of a bundle.
struct BundleHeader: Equatable {
    var version: UInt32 = BundleFormat.version
    var flags: UInt32 = BundleFormat.flagZstd
    var metadataLength: UInt64
    var dataLength: UInt64
    var rawDataLength: UInt64
    var metadataCRC: UInt32

    var totalLength: UInt64 { UInt64(BundleFormat.headerSize) + metadataLength + dataLength }

    func encoded() -> [UInt8] {
        var b = BundleFormat.magic
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        put(version); put(flags); put(metadataLength); put(dataLength); put(rawDataLength); put(metadataCRC)
        put(CRC32.checksum(b))
        return b
    }

    static func u32(_ b: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[at + $1]) << (8 * UInt32($1)) }
    }

    static func u64(_ b: [UInt8], _ at: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) }
    }

    /// Parses and checks the header of a file of `fileSize` bytes whose first bytes are `b`.
    static func parse(_ b: [UInt8], fileSize: UInt64, file: String) throws -> BundleHeader {
        let magicCount = min(b.count, 8)
        if Array(b.prefix(magicCount)) != Array(BundleFormat.magic.prefix(magicCount)) {
            throw BundleError.wrongMagic(file: file, found: Array(b.prefix(8)))
        }
        guard b.count >= BundleFormat.headerSize else {
            throw BundleError.truncated(file: file, section: "fixed header", expectedBytes: UInt64(BundleFormat.headerSize), actualBytes: fileSize)
        }
        let version = u32(b, 8)
        guard BundleFormat.readableVersions.contains(version) else {
            throw BundleError.unsupportedVersion(file: file, found: version, supported: BundleFormat.readableVersions)
        }
        let stored = u32(b, 44), computed = CRC32.checksum(Array(b[0..<44]))
        guard stored == computed else {
            throw BundleError.corruptHeader(file: file, field: "header CRC-32 (bytes 44..<48)",
                                            reason: "stored \(hex(stored)), computed \(hex(computed)) over bytes 0..<44")
        }
        let h = BundleHeader(version: version, flags: u32(b, 12), metadataLength: u64(b, 16), dataLength: u64(b, 24),
                             rawDataLength: u64(b, 32), metadataCRC: u32(b, 40))
        guard h.flags == BundleFormat.flagZstd else {
            throw BundleError.corruptHeader(file: file, field: "flags (bytes 12..<16)", reason: "value \(hex(h.flags)); version 1 requires 0x00000001 (zstd data section)")
        }
        guard h.metadataLength > 1, h.metadataLength < 1 << 32 else {
            throw BundleError.corruptHeader(file: file, field: "metadata length (bytes 16..<24)", reason: "\(h.metadataLength) is not a plausible JSON length")
        }
        guard h.dataLength < 1 << 48, h.rawDataLength < 1 << 48 else {
            throw BundleError.corruptHeader(file: file, field: "data length (bytes 24..<40)", reason: "\(h.dataLength) / \(h.rawDataLength) are not plausible sizes")
        }
        // zstd cannot expand a block more than about 32768 times (a 128 KiB RLE block takes
        // 4 bytes), so a larger claim is a damaged or crafted header
        guard h.rawDataLength <= h.dataLength &* 40_000 &+ 65_536 else {
            throw BundleError.corruptHeader(file: file, field: "raw data length (bytes 32..<40)",
                                            reason: "\(h.rawDataLength) bytes cannot come from \(h.dataLength) compressed bytes")
        }
        let metaEnd = UInt64(BundleFormat.headerSize) + h.metadataLength
        if fileSize < metaEnd {
            throw BundleError.truncated(file: file, section: "metadata", expectedBytes: h.totalLength, actualBytes: fileSize)
        }
        if fileSize < h.totalLength {
            throw BundleError.truncated(file: file, section: "data section", expectedBytes: h.totalLength, actualBytes: fileSize)
        }
        if fileSize > h.totalLength {
            throw BundleError.trailingBytes(file: file, expectedBytes: h.totalLength, actualBytes: fileSize)
        }
        return h
    }
}
