import OpacityTensor
import OpacityCore

/// Converts between `Float32` values and the stored bytes of each ``StorageType``.
///
/// All multi-byte values are little-endian. The functions are public so that tests and
/// other tools can check a bundle's rounding; bundle reading and writing use them.
public enum StorageCodec {
    // MARK: Scalars

    /// The binary16 bits nearest to `value` (round to nearest, ties to even). Finite
    /// values beyond the binary16 range give infinity; NaN stays NaN.
    @inline(__always)
    public static func halfBits(_ value: Float) -> UInt16 {
        let x = value.bitPattern
        let sign = UInt16(truncatingIfNeeded: (x >> 16) & 0x8000)
        let exp = Int((x >> 23) & 0xFF)
        var mant = x & 0x7F_FFFF
        if exp == 0xFF { return sign | 0x7C00 | (mant != 0 ? UInt16(truncatingIfNeeded: 0x200 | (mant >> 13)) : 0) }
        let e = exp - 127 + 15
        if e >= 31 { return sign | 0x7C00 }
        if e <= 0 {
            if e < -10 { return sign }
            mant |= 0x80_0000
            let shift = UInt32(14 - e)
            let kept = mant >> shift
            let rem = mant & ((1 << shift) - 1)
            let halfway = UInt32(1) << (shift - 1)
            let r = (rem > halfway || (rem == halfway && (kept & 1) == 1)) ? kept + 1 : kept
            return sign | UInt16(truncatingIfNeeded: r)
        }
        var h = UInt32(e << 10) | (mant >> 13)
        let rem = mant & 0x1FFF
        if rem > 0x1000 || (rem == 0x1000 && (h & 1) == 1) { h += 1 }
        return sign | UInt16(truncatingIfNeeded: h)
    }

    /// The `Float32` value of binary16 bits (exact).
    @inline(__always)
    public static func float(halfBits h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exp = UInt32((h >> 10) & 0x1F)
        let mant = UInt32(h & 0x3FF)
        if exp == 0 {
            let v = Float(mant) * (1.0 / 16_777_216.0)
            return sign != 0 ? -v : v
        }
        if exp == 31 { return Float(bitPattern: sign | 0x7F80_0000 | (mant << 13)) }
        return Float(bitPattern: sign | ((exp + 112) << 23) | (mant << 13))
    }

    /// The bfloat16 bits nearest to `value` (round to nearest, ties to even; NaN stays a
    /// quiet NaN).
    @inline(__always)
    public static func bfloat16Bits(_ value: Float) -> UInt16 {
        let x = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: x >> 16) | 0x0040 }
        let rounded = x &+ 0x7FFF &+ ((x >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }

    /// The `Float32` value of bfloat16 bits (exact).
    @inline(__always)
    public static func float(bfloat16Bits b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

    // MARK: Tensors

    /// A value that the chosen storage cannot hold.
    public struct Unrepresentable: Error, Sendable {
        /// Flat index of the first such value.
        public var index: Int
        /// The value.
        public var value: Float
    }

    /// Writes `values` of a tensor with `shape` as `type` into `out`, which must hold
    /// exactly ``StorageType/storedLength(shape:)`` bytes.
    /// - Throws: ``Unrepresentable`` when a finite value would become infinite (f16 above
    ///   65504, bf16 near `Float.greatestFiniteMagnitude`) or an i8 channel holds a
    ///   non-finite value.
    public static func encode(_ values: UnsafeBufferPointer<Float>, shape: [Int], as type: StorageType,
                              into out: UnsafeMutableRawBufferPointer) throws {
        let n = values.count
        precondition(out.count == type.storedLength(shape: shape), "StorageCodec.encode: output buffer has the wrong size")
        guard n > 0 else {
            // an empty i8 tensor still stores its (zero) channel scales
            if out.count > 0 { out.initializeMemory(as: UInt8.self, repeating: 0) }
            return
        }
        let src = values.baseAddress!
        let dst = out.baseAddress!
        switch type {
        case .f32:
            #if _endian(little)
            dst.copyMemory(from: src, byteCount: n * 4)
            #else
            for i in 0..<n { dst.storeBytes(of: src[i].bitPattern.littleEndian, toByteOffset: i * 4, as: UInt32.self) }
            #endif
        case .f16:
            let d = dst.bindMemory(to: UInt16.self, capacity: n)
            var bad = -1
            for i in 0..<n {
                let h = halfBits(src[i])
                if (h & 0x7FFF) == 0x7C00, src[i].isFinite, bad < 0 { bad = i }
                d[i] = h.littleEndian
            }
            if bad >= 0 { throw Unrepresentable(index: bad, value: src[bad]) }
        case .bf16:
            let d = dst.bindMemory(to: UInt16.self, capacity: n)
            var bad = -1
            for i in 0..<n {
                let b = bfloat16Bits(src[i])
                if (b & 0x7FFF) == 0x7F80, src[i].isFinite, bad < 0 { bad = i }
                d[i] = b.littleEndian
            }
            if bad >= 0 { throw Unrepresentable(index: bad, value: src[bad]) }
        case .i8:
            let channels = shape[0]
            guard channels > 0 else { return }
            let k = n / channels
            let q = (dst + channels * 4).bindMemory(to: Int8.self, capacity: n)
            for c in 0..<channels {
                let row = src + c * k
                var m: Float = 0
                for j in 0..<k {
                    let a = abs(row[j])
                    guard a.isFinite else { throw Unrepresentable(index: c * k + j, value: row[j]) }
                    m = max(m, a)
                }
                let scale = m / 127
                dst.storeBytes(of: scale.bitPattern.littleEndian, toByteOffset: c * 4, as: UInt32.self)
                let out = q + c * k
                if scale == 0 || !scale.isNormal {
                    // all zeros, or so small that 1/scale overflows: keep exact zeros / round via division
                    for j in 0..<k { out[j] = scale == 0 ? 0 : Int8(max(-127, min(127, (row[j] / scale).rounded(.toNearestOrEven)))) }
                    continue
                }
                let inv = 1 / scale
                for j in 0..<k { out[j] = Int8(max(-127, min(127, (row[j] * inv).rounded(.toNearestOrEven)))) }
            }
        }
    }

    /// Reads stored bytes of a tensor with `shape` back into `Float32` values.
    /// `bytes` must hold exactly ``StorageType/storedLength(shape:)`` bytes and `values`
    /// the tensor's element count.
    public static func decode(_ bytes: UnsafeRawBufferPointer, shape: [Int], as type: StorageType,
                              into values: UnsafeMutableBufferPointer<Float>) {
        let n = values.count
        precondition(bytes.count == type.storedLength(shape: shape), "StorageCodec.decode: input buffer has the wrong size")
        guard n > 0 else { return }
        let src = bytes.baseAddress!
        let dst = values.baseAddress!
        switch type {
        case .f32:
            #if _endian(little)
            UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: n * 4)
            #else
            for i in 0..<n { dst[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))) }
            #endif
        case .f16:
            for i in 0..<n { dst[i] = float(halfBits: UInt16(littleEndian: src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))) }
        case .bf16:
            for i in 0..<n { dst[i] = float(bfloat16Bits: UInt16(littleEndian: src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))) }
        case .i8:
            let channels = shape[0]
            guard channels > 0 else { return }
            let k = n / channels
            let q = (src + channels * 4).assumingMemoryBound(to: Int8.self)
            for c in 0..<channels {
                let scale = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: c * 4, as: UInt32.self)))
                let row = dst + c * k, qr = q + c * k
                for j in 0..<k { row[j] = Float(qr[j]) * scale }
            }
        }
    }

    /// Encodes a whole tensor into a new byte array (convenience for tests and tools).
    public static func encode(_ tensor: Tensor, as type: StorageType) throws -> [UInt8] {
        guard let len = type.storedLength(shape: tensor.shape) else {
            preconditionFailure("StorageCodec.encode: shape \(tensor.shape) cannot be stored as \(type)")
        }
        var out = [UInt8](repeating: 0, count: len)
        try tensor.withUnsafeBufferPointer { v in
            try out.withUnsafeMutableBytes { try encode(v, shape: tensor.shape, as: type, into: $0) }
        }
        return out
    }

    /// Decodes bytes made by ``encode(_:as:)`` into a tensor of `shape`.
    public static func decode(_ bytes: [UInt8], shape: [Int], as type: StorageType) -> Tensor {
        var t = Tensor(uninitializedShape: shape)
        t.withUnsafeMutableBufferPointer { v in bytes.withUnsafeBytes { decode($0, shape: shape, as: type, into: v) } }
        return t
    }
}
