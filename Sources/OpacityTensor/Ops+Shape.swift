import Foundation

extension Tensor {
    /// The same elements with a new shape; shares storage. One dimension may be `-1`.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var s = newShape
        if let i = s.firstIndex(of: -1) {
            let rest = s.enumerated().filter { $0.offset != i }.map(\.element).reduce(1, *)
            shapeCheck(rest > 0 && count % rest == 0, "reshape", "cannot infer -1 in \(describe(newShape)) for \(count) elements of \(describe(shape))")
            s[i] = count / rest
        }
        shapeCheck(s.elementCount == count, "reshape", "\(describe(shape)) (\(count) elements) cannot become \(describe(newShape))")
        let out = Tensor(shape: s, storage: storage)
        let old = shape
        OpTrace.note("reshape", [self], out)
        return Autograd.record("reshape", out, inputs: [self]) { g in [Tensor(shape: old, storage: g.storage)] }
    }

    /// Flattens all dimensions after the first: `[N, ...]` -> `[N, rest]`.
    public func flattened() -> Tensor { reshaped([shape.first ?? 1, -1]) }

    /// Reorders the dimensions: result dimension `i` is input dimension `order[i]`.
    public func permuted(_ order: [Int]) -> Tensor {
        shapeCheck(order.sorted() == Array(0..<rank), "permute", "order \(order) is not a permutation of the \(rank) dimensions of \(describe(shape))")
        let out = permuteUntracked(order)
        var inverse = [Int](repeating: 0, count: rank)
        for (i, o) in order.enumerated() { inverse[o] = i }
        OpTrace.note("permute", [self], out, ["order": .ints(order)])
        return Autograd.record("permute", out, inputs: [self]) { g in [g.permuteUntracked(inverse)] }
    }

    func permuteUntracked(_ order: [Int]) -> Tensor {
        let newShape = order.map { shape[$0] }
        let out = Tensor(uninitializedShape: newShape)
        var inStrides = [Int](repeating: 1, count: rank)
        for i in stride(from: rank - 2, through: 0, by: -1) { inStrides[i] = inStrides[i + 1] * shape[i + 1] }
        let st = order.map { inStrides[$0] }
        let r = rank
        if r == 0 { out.mutablePointer[0] = pointer[0]; return out }
        let src = pointer, dst = out.mutablePointer
        let inner = newShape[r - 1], innerStride = st[r - 1]
        let outer = count / max(1, inner)
        Compute.parallelFor(outer, minPerThread: 64) { o in
            var rem = o, off = 0
            for k in stride(from: r - 2, through: 0, by: -1) {
                off += (rem % newShape[k]) * st[k]
                rem /= newShape[k]
            }
            let d = dst + o * inner
            if innerStride == 1 { d.update(from: src + off, count: inner) } else {
                for i in 0..<inner { d[i] = src[off + i * innerStride] }
            }
        }
        return out
    }

    /// Joins tensors along `axis`; all other dimensions must agree.
    public static func concat(_ parts: [Tensor], axis: Int = 1) -> Tensor {
        precondition(!parts.isEmpty, "concat: no tensors")
        let first = parts[0].shape
        shapeCheck(axis >= 0 && axis < first.count, "concat", "axis \(axis) is outside the \(first.count) dimensions of \(describe(first))")
        for p in parts {
            shapeCheck(p.rank == first.count && (0..<first.count).allSatisfy { $0 == axis || p.shape[$0] == first[$0] },
                       "concat", "shapes \(describe(first)) and \(describe(p.shape)) differ outside axis \(axis)")
        }
        var outShape = first
        outShape[axis] = parts.map { $0.shape[axis] }.reduce(0, +)
        let out = Tensor(uninitializedShape: outShape)
        let outer = first[..<axis].reduce(1, *)
        let inner = first[(axis + 1)...].reduce(1, *)
        let total = outShape[axis] * inner
        var offset = 0
        for p in parts {
            let len = p.shape[axis] * inner
            let src = p.pointer, dst = out.mutablePointer
            copyRows(outer, of: len, from: src, stride: len, to: dst + offset, stride: total)
            offset += len
        }
        let sizes = parts.map { $0.shape[axis] }
        OpTrace.note("concat", parts, out, ["axis": .int(axis)])
        return Autograd.record("concat", out, inputs: parts) { g in
            var start = 0
            return sizes.map { n in
                defer { start += n }
                return g.sliceUntracked(axis: axis, start..<(start + n))
            }
        }
    }

    /// The elements with index in `range` along `axis` (a copy).
    public func slice(axis: Int, _ range: Range<Int>) -> Tensor {
        shapeCheck(axis >= 0 && axis < rank && range.lowerBound >= 0 && range.upperBound <= shape[axis], "slice",
                   "range \(range) on axis \(axis) is outside \(describe(shape))")
        let out = sliceUntracked(axis: axis, range)
        let full = shape
        OpTrace.note("slice", [self], out, ["axis": .int(axis), "start": .int(range.lowerBound), "end": .int(range.upperBound)])
        return Autograd.record("slice", out, inputs: [self]) { g in
            [g.padUntracked(axis: axis, before: range.lowerBound, after: full[axis] - range.upperBound)]
        }
    }

    func sliceUntracked(axis: Int, _ range: Range<Int>) -> Tensor {
        var outShape = shape
        outShape[axis] = range.count
        let out = Tensor(uninitializedShape: outShape)
        let outer = shape[..<axis].reduce(1, *)
        let inner = shape[(axis + 1)...].reduce(1, *)
        let srcRow = shape[axis] * inner, dstRow = range.count * inner
        let src = pointer, dst = out.mutablePointer
        let start = range.lowerBound * inner
        copyRows(outer, of: dstRow, from: src + start, stride: srcRow, to: dst, stride: dstRow)
        return out
    }

    func padUntracked(axis: Int, before: Int, after: Int) -> Tensor {
        var outShape = shape
        outShape[axis] += before + after
        let out = Tensor.zeros(outShape)
        let outer = shape[..<axis].reduce(1, *)
        let inner = shape[(axis + 1)...].reduce(1, *)
        let srcRow = shape[axis] * inner, dstRow = outShape[axis] * inner
        let src = pointer, dst = out.mutablePointer
        copyRows(outer, of: srcRow, from: src, stride: srcRow, to: dst + before * inner, stride: dstRow)
        return out
    }

    /// Zero-pads the last two dimensions of `[N, C, H, W]`: `(left, right, top, bottom)`,
    /// as PyTorch's `ZeroPad2d`. Negative values crop.
    public func padded2d(left: Int, right: Int, top: Int, bottom: Int) -> Tensor {
        shapeCheck(rank == 4, "pad2d", "expects [N, C, H, W], got \(describe(shape))")
        var t = self
        func along(_ axis: Int, _ before: Int, _ after: Int) {
            if before < 0 { t = t.slice(axis: axis, (-before)..<t.shape[axis]) }
            if after < 0 { t = t.slice(axis: axis, 0..<(t.shape[axis] + after)) }
            let b = max(0, before), a = max(0, after)
            if b > 0 || a > 0 {
                let input = t
                let out = input.padUntracked(axis: axis, before: b, after: a)
                let n = input.shape[axis]
                OpTrace.note("pad", [input], out, ["axis": .int(axis), "before": .int(b), "after": .int(a)])
                t = Autograd.record("pad", out, inputs: [input]) { g in [g.sliceUntracked(axis: axis, b..<(b + n))] }
            }
        }
        along(2, top, bottom)
        along(3, left, right)
        return t
    }
}

// MARK: - Reductions

extension Tensor {
    /// The sum of all elements, as a rank-0 tensor.
    public func sum() -> Tensor {
        let out = Tensor(Float(simdSumDouble(pointer, count)))
        let sh = shape
        OpTrace.note("sum", [self], out)
        return Autograd.record("sum", out, inputs: [self]) { g in [Tensor(shape: sh, repeating: g.scalar)] }
    }

    /// The mean of all elements, as a rank-0 tensor.
    public func mean() -> Tensor { sum() * (1 / Float(max(1, count))) }

    /// Sums over the given axes, keeping them as size-1 dimensions.
    public func sum(axes: [Int]) -> Tensor {
        var target = shape
        for a in axes { target[a] = 1 }
        let out = sum(toShapeUntracked: target)
        let sh = shape
        OpTrace.note("sumAxes", [self], out, ["axes": .ints(axes)])
        return Autograd.record("sumAxes", out, inputs: [self]) { g in [g.broadcastUntracked(to: sh)] }
    }

    /// The mean over the given axes, keeping them as size-1 dimensions.
    public func mean(axes: [Int]) -> Tensor {
        let n = axes.map { shape[$0] }.reduce(1, *)
        return sum(axes: axes) * (1 / Float(max(1, n)))
    }

    func sum(toShapeUntracked target: [Int]) -> Tensor { reducedUntracked(toShape: target) }

    func broadcastUntracked(to target: [Int]) -> Tensor {
        Tensor.binaryKernel(Tensor.zeros(target), self, .add, op: "broadcast")
    }
}

/// Copies `rows` rows of `length` floats, row `o` from `src + o * srcStride` to
/// `dst + o * dstStride`, on the compute threads: whole rows per thread when there are enough,
/// else each row split into parts (a channel slice or concatenation of one image is a single
/// row of megabytes: DPN-92's dense paths at 16 threads). Under 64 Ki floats in all it runs on
/// the calling thread. The ranges must not overlap.
func copyRows(_ rows: Int, of length: Int, from src: UnsafePointer<Float>, stride srcStride: Int,
              to dst: UnsafeMutablePointer<Float>, stride dstStride: Int) {
    let total = rows * length
    guard total >= 1 << 16, Compute.threads > 1 else {
        for o in 0..<rows { (dst + o * dstStride).update(from: src + o * srcStride, count: length) }
        return
    }
    // parts of at least 16 Ki floats, enough of them to give every thread work
    let parts = rows >= Compute.threads ? 1 : max(1, min(length / (1 << 14), (Compute.threads + rows - 1) / rows))
    Compute.parallelFor(rows * parts, minPerThread: max(1, (1 << 15) / max(1, length / parts))) { t in
        let o = t / parts, p = t % parts
        let lo = length * p / parts, hi = length * (p + 1) / parts
        (dst + o * dstStride + lo).update(from: src + o * srcStride + lo, count: hi - lo)
    }
}
