import CZlib

/// CRC-32 as used by zlib, gzip and PNG (IEEE 802.3 polynomial, reflected `0xEDB88320`,
/// initial value and final XOR `0xFFFFFFFF`), computed by zlib's `crc32`.
///
/// Bundles store one per tensor and one over their metadata. Python's `zlib.crc32` gives
/// the same values, so a reader in another language needs no extra library.
/// The check value is `CRC32.checksum("123456789") == 0xCBF43926`.
public struct CRC32: Sendable {
    /// The checksum of everything passed to ``update(_:)`` so far.
    public private(set) var value: UInt32 = 0

    /// A fresh checksum (of no bytes: 0).
    public init() {}

    /// Adds bytes to the checksum.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        value = CRC32.update(value, bytes)
    }

    /// Adds the bytes of an array to the checksum.
    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The CRC-32 of a byte buffer.
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 { update(0, bytes) }

    /// The CRC-32 of an array of bytes.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { update(0, $0) } }

    /// The CRC-32 of a string's UTF-8 bytes.
    public static func checksum(_ text: String) -> UInt32 { checksum(Array(text.utf8)) }

    /// zlib's `crc32` continued over `bytes`, in pieces that fit its `uInt` length.
    private static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        var c = uLong(crc), offset = 0
        let piece = Int(UInt32.max / 2)
        while offset < bytes.count {
            let n = min(piece, bytes.count - offset)
            c = crc32(c, (base + offset).assumingMemoryBound(to: Bytef.self), uInt(n))
            offset += n
        }
        return UInt32(truncatingIfNeeded: c)
    }
}
