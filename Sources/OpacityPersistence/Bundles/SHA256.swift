import Crypto

/// SHA-256 (FIPS 180-4), streaming: swift-crypto's implementation (BoringSSL on Linux,
/// CryptoKit on Apple platforms) behind the small interface the zoo and the bundles use.
///
/// Feed bytes with ``update(_:)`` in pieces of any size and read the digest with ``finalize()``.
///
/// ```swift
/// var h = SHA256()
/// h.update(Array("abc".utf8))
/// h.finalize().hex  // "ba7816bf..."
/// ```
///
/// (A program that also imports `Crypto` names swift-crypto's type `Crypto.SHA256` and this
/// one `OpacityPersistence.SHA256`.)
///
/// `@unchecked Sendable`: swift-crypto's `SHA256` (3.x) is not marked `Sendable`, but it is
/// a value type whose BoringSSL context is copied on write (`OpenSSLDigestImpl` checks
/// `isKnownUniquelyReferenced`), so a copy sent to another thread shares no mutable state.
public struct SHA256: @unchecked Sendable {
    /// A 32-byte SHA-256 digest.
    public struct Digest: Hashable, Sendable, CustomStringConvertible {
        /// The 32 digest bytes.
        public let bytes: [UInt8]
        /// Lower-case hexadecimal, 64 characters.
        public var hex: String {
            let digits = Array("0123456789abcdef".utf8)
            var out = [UInt8]()
            out.reserveCapacity(64)
            for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
            return String(decoding: out, as: UTF8.self)
        }
        public var description: String { hex }
    }

    private var hasher = Crypto.SHA256()

    /// A fresh hash of no bytes.
    public init() {}

    /// Adds bytes to the hash.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        hasher.update(bufferPointer: bytes)
    }

    /// Adds the bytes of an array to the hash.
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    /// The digest of everything added so far (the hash itself is left unchanged).
    public func finalize() -> Digest {
        let copy = hasher
        return Digest(bytes: Array(copy.finalize()))
    }

    /// The digest of a byte buffer.
    public static func hash(_ bytes: UnsafeRawBufferPointer) -> Digest {
        var s = SHA256()
        s.update(bytes)
        return s.finalize()
    }

    /// The digest of an array of bytes.
    public static func hash(_ bytes: [UInt8]) -> Digest { bytes.withUnsafeBytes { hash($0) } }

    /// The digest of a string's UTF-8 bytes.
    public static func hash(_ text: String) -> Digest { hash(Array(text.utf8)) }
}
