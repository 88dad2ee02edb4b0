import Foundation

/// A map kept for backward without its zeros: one bit per value saying whether its bit pattern
/// is non-zero, and the non-zero values in order (sparse storage, dense compute: Jain et al.,
/// "Gist: Efficient Data Encoding for Deep Neural Network Training", ISCA 2018, section 4).
///
/// A ReLU's output is zero wherever its input was negative, about half the values of a
/// RetinaNet's head and encoder maps, so its node and the convolution that reads the map
/// (``SavedActivation``) keep this instead of the map: `(1 - s) + 1/32` of its bytes at a
/// fraction `s` of zeros. Lossless: ``unpack(into:)`` writes the same bits (`-0.0` and NaNs
/// are non-zero patterns, kept as they are), so training gives the same bits with it on or
/// off (``Autograd/sparseActivations``, `OPACITY_SPARSE_ACTIVATIONS`).
///
/// A frozen batch norm with its fused ReLU keeps its input the same way, with the output's
/// zeros as the mask: backward reads the input only where the output is not zero. Where the
/// value was dropped, ``unpack(into:)`` writes a per-channel value on the ReLU's zero side
/// (``Tensor/batchNorm2d(weight:bias:mean:variance:eps:relu:)``).
///
/// Layout: the map in chunks of ``chunk`` values (the last one shorter); per 64 values one
/// `UInt64` mask word (bit `j` for value `64 w + j`) in ``masks``; the non-zero values of chunk
/// `c` from ``offsets`` `[c]` in ``values``. Chunks are packed and unpacked on separate threads;
/// the result does not depend on the thread count.
package final class SparseActivation: @unchecked Sendable {
    /// Values per chunk (a multiple of 64): each chunk is one task of the parallel passes.
    package static let chunk = 1 << 15
    /// The number of values of the map.
    package let count: Int
    /// One bit per value, 64 to a word, stored in a float storage of `2 * words` elements.
    private let masks: TensorStorage
    /// The non-zero values in order (at least one element).
    private let values: TensorStorage
    /// Where each chunk's values start in ``values``.
    private let offsets: [Int]
    /// The value written where nothing was kept, per channel (`values[plane % values.count]`
    /// for the planes of `planeSize` values), or nil for zeros.
    private let planeFill: (values: [Float], planeSize: Int)?

    /// The bytes kept: masks and values.
    package var bytes: Int { (masks.count + values.count) * MemoryLayout<Float>.stride }

    private init(count: Int, masks: TensorStorage, values: TensorStorage, offsets: [Int], planeFill: (values: [Float], planeSize: Int)?) {
        self.count = count
        self.masks = masks
        self.values = values
        self.offsets = offsets
        self.planeFill = planeFill
    }

    /// Packs `count` values at `p`, or returns nil when fewer than an eighth of them are zero
    /// bit patterns (the packed form would save less than about 9% of the map; the caller keeps
    /// the map). Two passes over the map: count the non-zero values of each chunk, then write
    /// the masks and values.
    ///
    /// - Parameters:
    ///   - keepingWhere: when given, `count` floats whose non-zero bit patterns say which values
    ///     of `p` to keep (a fused ReLU's output, for its input: where the output is zero,
    ///     backward does not read the input); by default `p`'s own.
    ///   - planeFill: what ``unpack(into:)`` writes where nothing was kept: per channel, for
    ///     planes of `planeSize` values, `values[plane % values.count]`; by default zeros.
    ///   - counts: the non-zero values of each chunk of the mask, when the caller counted them
    ///     already (``reluCounting(_:into:count:)``): the first pass is skipped.
    package static func pack(
        _ p: UnsafePointer<Float>, count: Int, keepingWhere mask: UnsafePointer<Float>? = nil,
        planeFill: (values: [Float], planeSize: Int)? = nil, counts given: [Int]? = nil
    ) -> SparseActivation? {
        guard count >= 64 else { return nil }
        let q = mask ?? p
        let chunks = (count + chunk - 1) / chunk
        var counts = given ?? [Int](repeating: 0, count: chunks)
        if given == nil { countNonZero(q, count: count, into: &counts) }
        return pack(p, count: count, keepingWhere: q, planeFill: planeFill, counts: counts, chunks: chunks)
    }

    /// `Tensor.relu()`'s rule (`v < 0 ? 0 : v`, NaN stays) from `count` values at `input` into
    /// `output` (the same pointer is fine), counting per chunk the non-zero bit patterns it
    /// writes: the counts ``pack(_:count:keepingWhere:planeFill:counts:)`` would make in its
    /// first pass, without reading the map again.
    package static func reluCounting(_ input: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>, count: Int) -> [Int] {
        countingChunks(count: count) { lo, hi in
            var acc = SIMD8<UInt32>(repeating: 0)
            var i = lo
            while i + 8 <= hi {
                var v = load8(input, i)
                v.replace(with: 0, where: v .< 0)
                store8(output, i, v)
                acc &+= nonZero(v)
                i += 8
            }
            var n = Int(acc.wrappedSum())
            while i < hi {
                let v = input[i] < 0 ? 0 : input[i]
                output[i] = v
                if v.bitPattern != 0 { n += 1 }
                i += 1
            }
            return n
        }
    }

    /// Runs `body(lo, hi)` for each chunk `[lo, hi)` of `count` values on the compute threads and
    /// returns what each returned (its non-zero values), in chunk order.
    private static func countingChunks(count: Int, _ body: (Int, Int) -> Int) -> [Int] {
        let chunks = (count + chunk - 1) / chunk
        var counts = [Int](repeating: 0, count: chunks)
        counts.withUnsafeMutableBufferPointer { cb in
            let out = cb.baseAddress!
            Compute.parallelFor(chunks) { c in out[c] = body(c * chunk, min(count, c * chunk + chunk)) }
        }
        return counts
    }

    /// `relu(y * scale[plane] + residual)` from `count` values into `output` (which may be `y`),
    /// one scale per plane of `planeSize` values, counting per chunk the non-zero bit patterns
    /// it writes, as ``reluCounting(_:into:count:)`` does. The product and the sum are rounded
    /// separately, the bits of `(y * scale + residual).relu()` in three passes
    /// (``Tensor/scaledSumReLU(scale:residual:)``).
    package static func scaledSumReLUCounting(
        _ y: UnsafePointer<Float>, scale: UnsafePointer<Float>, planeSize: Int,
        residual: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>, count: Int
    ) -> [Int] {
        countingChunks(count: count) { lo, hi in
            var acc = SIMD8<UInt32>(repeating: 0)
            var n = 0
            var i = lo
            while i < hi {
                let plane = i / planeSize
                let end = min(hi, (plane + 1) * planeSize)
                let s = scale[plane], s8 = SIMD8<Float>(repeating: s)
                while i + 8 <= end {
                    var v = load8(y, i) * s8
                    v += load8(residual, i)
                    v.replace(with: 0, where: v .< 0)
                    store8(output, i, v)
                    acc &+= nonZero(v)
                    i += 8
                }
                while i < end {
                    var v = y[i] * s
                    v += residual[i]
                    v = v < 0 ? 0 : v
                    output[i] = v
                    if v.bitPattern != 0 { n += 1 }
                    i += 1
                }
            }
            return n + Int(acc.wrappedSum())
        }
    }

    /// The non-zero bit patterns of each chunk of `count` values at `q`.
    private static func countNonZero(_ q: UnsafePointer<Float>, count: Int, into counts: inout [Int]) {
        counts.withUnsafeMutableBufferPointer { cb in
            let out = cb.baseAddress!
            Compute.parallelFor(cb.count) { c in
                let lo = c * chunk, hi = min(count, lo + chunk)
                var acc = SIMD8<UInt32>(repeating: 0)
                var i = lo
                while i + 8 <= hi {
                    acc &+= nonZero(load8(q, i))
                    i += 8
                }
                var n = Int(acc.wrappedSum())
                while i < hi {
                    if q[i].bitPattern != 0 { n += 1 }
                    i += 1
                }
                out[c] = n
            }
        }
    }

    /// The second pass of ``pack(_:count:keepingWhere:planeFill:counts:)``: masks and values.
    private static func pack(
        _ p: UnsafePointer<Float>, count: Int, keepingWhere q: UnsafePointer<Float>,
        planeFill: (values: [Float], planeSize: Int)?, counts: [Int], chunks: Int
    ) -> SparseActivation? {
        var offsets = [Int](repeating: 0, count: chunks)
        var total = 0
        for c in 0..<chunks {
            offsets[c] = total
            total += counts[c]
        }
        let words = (count + 63) / 64
        guard total + 2 * words <= count - count / 8 else {
            Totals.add(map: count, packed: nil)
            return nil
        }
        Totals.add(map: count, packed: max(1, total) + 2 * words)
        let masks = TensorStorage(uninitializedCount: 2 * words, longLived: true)
        let values = TensorStorage(uninitializedCount: max(1, total), longLived: true)
        let mp = UnsafeMutableRawPointer(masks.base), vp = values.base, shifts = laneShifts
        offsets.withUnsafeBufferPointer { ob in
            let starts = ob.baseAddress!
            Compute.parallelFor(chunks) { c in
                let lo = c * chunk, hi = min(count, lo + chunk)
                var k = starts[c]
                var w = lo / 64
                var i = lo
                while i < hi {
                    let n = min(64, hi - i)
                    var m: UInt64 = 0
                    if n == 64 {
                        for k8 in 0..<8 {
                            let lanes = nonZero(load8(q, i + 8 * k8)) &<< shifts
                            m |= UInt64(lanes.wrappedSum()) << UInt64(8 * k8)
                        }
                    } else {
                        for j in 0..<n where q[i + j].bitPattern != 0 { m |= 1 << UInt64(j) }
                    }
                    mp.storeBytes(of: m, toByteOffset: 8 * w, as: UInt64.self)
                    var rest = m
                    while rest != 0 {
                        vp[k] = p[i + rest.trailingZeroBitCount]
                        k += 1
                        rest &= rest &- 1
                    }
                    w += 1
                    i += n
                }
            }
        }
        return SparseActivation(count: count, masks: masks, values: values, offsets: offsets, planeFill: planeFill)
    }

    /// Each lane's bit in a mask byte.
    private static let laneShifts = SIMD8<UInt32>(0, 1, 2, 3, 4, 5, 6, 7)

    /// 1 in each lane whose bit pattern is not zero, else 0: `(b | -b) >> 31`, arithmetic
    /// that compiles to vector instructions (a comparison's `SIMDMask` went lane by lane).
    @inline(__always)
    private static func nonZero(_ v: SIMD8<Float>) -> SIMD8<UInt32> {
        let b = unsafeBitCast(v, to: SIMD8<UInt32>.self)
        return (b | (SIMD8<UInt32>(repeating: 0) &- b)) &>> 31
    }

    /// Writes the map, the same bits as packed, to `count` floats at `dst`.
    package func unpack(into dst: UnsafeMutablePointer<Float>) {
        let count = count, chunk = Self.chunk, planeFill = planeFill
        let mp = UnsafeRawPointer(masks.base), vp = UnsafePointer(values.base)
        offsets.withUnsafeBufferPointer { ob in
            let starts = ob.baseAddress!
            Compute.parallelFor(offsets.count) { c in
                let lo = c * chunk, hi = min(count, lo + chunk)
                if let (fill, planeSize) = planeFill {
                    var s = lo
                    while s < hi {
                        let plane = s / planeSize, e = min(hi, (plane + 1) * planeSize)
                        (dst + s).update(repeating: fill[plane % fill.count], count: e - s)
                        s = e
                    }
                } else {
                    (dst + lo).update(repeating: 0, count: hi - lo)
                }
                var k = starts[c]
                var w = lo / 64
                var i = lo
                while i < hi {
                    var m = mp.load(fromByteOffset: 8 * w, as: UInt64.self)
                    while m != 0 {
                        dst[i + m.trailingZeroBitCount] = vp[k]
                        k += 1
                        m &= m &- 1
                    }
                    w += 1
                    i += 64
                }
            }
        }
    }

    /// What ``pack(_:count:keepingWhere:planeFill:counts:)`` did since the last ``resetTotals()``: the maps packed, their
    /// bytes as maps and packed, and the maps left whole for having too few zeros (for
    /// `opacity-bench detector`'s memory report).
    package static var totals: (maps: Int, mapBytes: Int, packedBytes: Int, whole: Int, wholeBytes: Int) {
        Totals.lock.withLock { Totals.value }
    }

    /// Starts ``totals`` again from zero.
    package static func resetTotals() { Totals.lock.withLock { Totals.value = (0, 0, 0, 0, 0) } }

    private enum Totals {
        static let lock = NSLock()
        nonisolated(unsafe) static var value = (maps: 0, mapBytes: 0, packedBytes: 0, whole: 0, wholeBytes: 0)

        static func add(map: Int, packed: Int?) {
            lock.withLock {
                if let packed {
                    value.maps += 1
                    value.mapBytes += 4 * map
                    value.packedBytes += 4 * packed
                } else {
                    value.whole += 1
                    value.wholeBytes += 4 * map
                }
            }
        }
    }

    /// A ReLU's input gradient from its output kept in this form: `gradOut` where the output
    /// is positive (or NaN), zero elsewhere (``Tensor/relu()``'s backward rule), `count` floats
    /// into `gradIn`, without writing the output again.
    ///
    /// The same walk over masks and values as ``unpack(into:)``, written out again: a shared
    /// walk taking closures was compiled (measured, `nm`) to an indirect call per value, the
    /// closures not being specialised through ``Compute/parallelFor(_:minPerThread:_:)``.
    package func reluGradient(_ gradOut: UnsafePointer<Float>, into gradIn: UnsafeMutablePointer<Float>) {
        let count = count, chunk = Self.chunk
        let mp = UnsafeRawPointer(masks.base), vp = UnsafePointer(values.base)
        offsets.withUnsafeBufferPointer { ob in
            let starts = ob.baseAddress!
            Compute.parallelFor(offsets.count) { c in
                let lo = c * chunk, hi = min(count, lo + chunk)
                (gradIn + lo).update(repeating: 0, count: hi - lo)
                var k = starts[c]
                var w = lo / 64
                var i = lo
                while i < hi {
                    var m = mp.load(fromByteOffset: 8 * w, as: UInt64.self)
                    while m != 0 {
                        let j = i + m.trailingZeroBitCount
                        if !(vp[k] <= 0) { gradIn[j] = gradOut[j] }
                        k += 1
                        m &= m &- 1
                    }
                    w += 1
                    i += 64
                }
            }
        }
    }

    /// A fresh tensor of `shape` holding the map.
    func tensor(shape: [Int]) -> Tensor {
        let t = Tensor(uninitializedShape: shape)
        unpack(into: t.mutablePointer)
        return t
    }
}
