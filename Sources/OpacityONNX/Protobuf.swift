import Foundation

/// A minimal protocol-buffers writer (proto2/proto3 wire format) for the ONNX messages
/// this module writes: varints, 32-bit floats, length-delimited bytes and nested messages.
///
/// Fields are written in the order they are added; nested messages are encoded into their
/// own buffer first, then written length-prefixed (wire type 2).
/// Source: the protocol-buffers encoding guide (wire types 0, 2 and 5).
struct ProtoWriter {
    private(set) var bytes: [UInt8] = []

    init() {}

    /// Unsigned LEB128 varint; negative `Int64` values take ten bytes (two's complement), as
    /// protobuf writes `int64`.
    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    private mutating func tag(_ field: Int, _ wireType: UInt64) { varint(UInt64(field) << 3 | wireType) }

    /// An `int64` / `int32` / enum field (wire type 0).
    mutating func int(_ field: Int, _ value: Int) {
        tag(field, 0)
        varint(UInt64(bitPattern: Int64(value)))
    }

    /// A `float` field (wire type 5, little-endian IEEE 754).
    mutating func float(_ field: Int, _ value: Float) {
        tag(field, 5)
        let b = value.bitPattern
        for i in 0..<4 { bytes.append(UInt8((b >> (8 * UInt32(i))) & 0xFF)) }
    }

    /// A `bytes` field (wire type 2).
    mutating func data(_ field: Int, _ value: [UInt8]) {
        tag(field, 2)
        varint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    /// A `string` field, UTF-8.
    mutating func string(_ field: Int, _ value: String) { data(field, Array(value.utf8)) }

    /// An embedded message.
    mutating func message(_ field: Int, _ body: (inout ProtoWriter) -> Void) {
        var inner = ProtoWriter()
        body(&inner)
        data(field, inner.bytes)
    }

    /// A packed `repeated int64` field.
    mutating func packedInts(_ field: Int, _ values: [Int]) {
        var inner = ProtoWriter()
        for v in values { inner.varint(UInt64(bitPattern: Int64(v))) }
        data(field, inner.bytes)
    }

    /// A packed `repeated float` field.
    mutating func packedFloats(_ field: Int, _ values: [Float]) {
        var raw: [UInt8] = []
        raw.reserveCapacity(values.count * 4)
        for v in values {
            let b = v.bitPattern
            for i in 0..<4 { raw.append(UInt8((b >> (8 * UInt32(i))) & 0xFF)) }
        }
        data(field, raw)
    }
}
