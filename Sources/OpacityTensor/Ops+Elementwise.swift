import Foundation

// MARK: - Broadcasting

/// How two shapes broadcast (numpy rules), collapsed to as few dimensions as possible.
struct BroadcastPlan {
    var outShape: [Int]
    /// Collapsed dimensions and the strides of each operand over them (0 where broadcast).
    var dims: [Int]
    var stridesA: [Int]
    var stridesB: [Int]

    init?(_ a: [Int], _ b: [Int]) {
        let r = max(a.count, b.count)
        let pa = Array(repeating: 1, count: r - a.count) + a
        let pb = Array(repeating: 1, count: r - b.count) + b
        var out = [Int](repeating: 1, count: r)
        for i in 0..<r {
            if pa[i] == pb[i] || pb[i] == 1 { out[i] = pa[i] } else if pa[i] == 1 { out[i] = pb[i] } else { return nil }
        }
        outShape = out
        func strides(_ s: [Int]) -> [Int] {
            var st = [Int](repeating: 0, count: r)
            var acc = 1
            for i in stride(from: r - 1, through: 0, by: -1) {
                st[i] = s[i] == 1 ? 0 : acc
                acc *= s[i]
            }
            return st
        }
        let sa = strides(pa), sb = strides(pb)
        // Collapse adjacent dims when both operands stay contiguous across them.
        var d: [Int] = [], xa: [Int] = [], xb: [Int] = []
        for i in 0..<r where out[i] != 1 {
            if let last = d.last,
               xa.last! == sa[i] * out[i] || (xa.last! == 0 && sa[i] == 0),
               xb.last! == sb[i] * out[i] || (xb.last! == 0 && sb[i] == 0) {
                d[d.count - 1] = last * out[i]
                xa[xa.count - 1] = sa[i]
                xb[xb.count - 1] = sb[i]
            } else {
                d.append(out[i]); xa.append(sa[i]); xb.append(sb[i])
            }
        }
        if d.isEmpty { d = [1]; xa = [0]; xb = [0] }
        dims = d; stridesA = xa; stridesB = xb
    }

    /// The number of innermost runs (the product of every collapsed dimension but the last).
    var runCount: Int { dims.dropLast().reduce(1, *) }

    /// The length of one innermost run.
    var runLength: Int { dims[dims.count - 1] }

    /// Calls `body(offsetA, offsetB, outOffset, strideA, strideB, length)` for each
    /// innermost run, in order.
    @inline(__always)
    func forEachRun(_ body: (Int, Int, Int, Int, Int, Int) -> Void) {
        forEachRun(in: 0..<runCount, body)
    }

    /// Calls `body` for the innermost runs whose index is in `runs` (a part of
    /// `0..<runCount`), in order; parts run on different threads write disjoint outputs.
    @inline(__always)
    func forEachRun(in runs: Range<Int>, _ body: (Int, Int, Int, Int, Int, Int) -> Void) {
        let r = dims.count
        let inner = dims[r - 1], isa = stridesA[r - 1], isb = stridesB[r - 1]
        var idx = [Int](repeating: 0, count: max(0, r - 1))
        var oa = 0, ob = 0
        // the multi-index of the first run (row-major over the outer dimensions)
        var rest = runs.lowerBound
        var k = r - 2
        while k >= 0 {
            idx[k] = rest % dims[k]
            rest /= dims[k]
            oa += idx[k] * stridesA[k]
            ob += idx[k] * stridesB[k]
            k -= 1
        }
        for o in runs {
            body(oa, ob, o * inner, isa, isb, inner)
            // advance the multi-index
            var k = r - 2
            while k >= 0 {
                idx[k] += 1
                oa += stridesA[k]; ob += stridesB[k]
                if idx[k] < dims[k] { break }
                oa -= stridesA[k] * dims[k]; ob -= stridesB[k] * dims[k]
                idx[k] = 0
                k -= 1
            }
        }
    }

    /// Runs `body` over parts of `0..<runCount` on the compute threads, about 64 Ki
    /// elements per thread at least (fewer elements run on the calling thread).
    @inline(__always)
    func parallelRuns(_ body: (Range<Int>) -> Void) {
        Compute.parallelRanges(runCount, minPerThread: max(1, (1 << 16) / max(1, runLength)), body)
    }
}

extension Tensor {
    /// Sums `self` down to `target` (the inverse of broadcasting `target` to `self.shape`);
    /// differentiable (the gradient broadcasts back).
    public func sum(toShape target: [Int]) -> Tensor {
        if target == shape { return self }
        let out = reducedUntracked(toShape: target)
        let full = shape
        OpTrace.note("sumToShape", [self], out)
        return Autograd.record("sumToShape", out, inputs: [self]) { g in [g.broadcastUntracked(to: full)] }
    }

    /// The reduction of ``sum(toShape:)`` without recording (used inside backward passes).
    func reducedUntracked(toShape target: [Int]) -> Tensor {
        if target == shape { return self }
        guard let plan = BroadcastPlan(shape, target), plan.outShape == shape else {
            fatalError(ShapeError(op: "sum(toShape:)", "\(describe(shape)) does not broadcast from \(describe(target))").description)
        }
        let out = Tensor.zeros(target)
        let src = pointer, dst = out.mutablePointer
        func sumRuns(_ runs: Range<Int>) {
            plan.forEachRun(in: runs) { _, ob, oo, _, sb, n in
                if sb == 0 {
                    dst[ob] += simdSum(src + oo, n)
                } else {
                    for i in 0..<n { dst[ob + i * sb] += src[oo + i] }
                }
            }
        }
        // Runs write disjoint target elements when no outer dimension is summed over (e.g. a
        // squeeze-and-excitation gradient, [N, C, H, W] to [N, C, 1, 1]): split them over the
        // threads. Otherwise several runs add into one element: one thread, in order.
        if plan.stridesB.dropLast().allSatisfy({ $0 != 0 }) {
            plan.parallelRuns(sumRuns)
        } else {
            sumRuns(0..<plan.runCount)
        }
        return out
    }
}

// MARK: - Binary operations

enum BinaryKind { case add, sub, mul, div }

extension Tensor {
    @inline(__always)
    static func binaryKernel(_ a: Tensor, _ b: Tensor, _ kind: BinaryKind, op: String) -> Tensor {
        if a.shape == b.shape {
            let out = Tensor(uninitializedShape: a.shape)
            let pa = a.pointer, pb = b.pointer, po = out.mutablePointer
            Compute.parallelRanges(a.count, minPerThread: 1 << 16) { r in
                switch kind {
                case .add: for i in r { po[i] = pa[i] + pb[i] }
                case .sub: for i in r { po[i] = pa[i] - pb[i] }
                case .mul: for i in r { po[i] = pa[i] * pb[i] }
                case .div: for i in r { po[i] = pa[i] / pb[i] }
                }
            }
            return out
        }
        guard let plan = BroadcastPlan(a.shape, b.shape) else {
            fatalError(ShapeError(op: op, "shapes \(describe(a.shape)) and \(describe(b.shape)) do not broadcast").description)
        }
        let out = Tensor(uninitializedShape: plan.outShape)
        let pa = a.pointer, pb = b.pointer, po = out.mutablePointer
        plan.parallelRuns { runs in
            plan.forEachRun(in: runs) { oa, ob, oo, sa, sb, n in
                switch kind {
                case .add:
                    if sa == 1 && sb == 0 { let v = pb[ob]; for i in 0..<n { po[oo + i] = pa[oa + i] + v } }
                    else { for i in 0..<n { po[oo + i] = pa[oa + i * sa] + pb[ob + i * sb] } }
                case .sub:
                    for i in 0..<n { po[oo + i] = pa[oa + i * sa] - pb[ob + i * sb] }
                case .mul:
                    if sa == 1 && sb == 0 { let v = pb[ob]; for i in 0..<n { po[oo + i] = pa[oa + i] * v } }
                    else { for i in 0..<n { po[oo + i] = pa[oa + i * sa] * pb[ob + i * sb] } }
                case .div:
                    for i in 0..<n { po[oo + i] = pa[oa + i * sa] / pb[ob + i * sb] }
                }
            }
        }
        return out
    }

    /// Adds without recording (used by gradient accumulation).
    static func addUntracked(_ a: Tensor, _ b: Tensor) -> Tensor { binaryKernel(a, b, .add, op: "add") }

    /// `self += other` for equal shapes, in place when the storage is not shared
    /// (gradient accumulation); copies first otherwise, like any mutation.
    mutating func addInPlace(_ other: Tensor) {
        shapeCheck(shape == other.shape, "add", "shapes \(describe(shape)) and \(describe(other.shape)) differ")
        if storage === other.storage {
            self = Tensor.addUntracked(self, other)
            return
        }
        let src = other.pointer
        withUnsafeMutableBufferPointer { d in
            let dp = d.baseAddress!
            Compute.parallelRanges(d.count, minPerThread: 1 << 16) { r in
                var i = r.lowerBound
                while i + 8 <= r.upperBound {
                    store8(dp, i, load8(dp, i) + load8(src, i))
                    i += 8
                }
                while i < r.upperBound { dp[i] += src[i]; i += 1 }
            }
        }
    }

    /// Elementwise sum with broadcasting (e.g. `[N, C, H, W] + [1, C, 1, 1]`).
    ///
    /// Consumes `a`: when it has `b`'s shape and nothing else holds its storage (a temporary,
    /// such as the last batch norm's output in `(y + shortcut).relu()`), the sum is written
    /// over it, as ``relu()`` does.
    public static func + (a: consuming Tensor, b: Tensor) -> Tensor {
        let out: Tensor
        if a.shape == b.shape {
            out = a.elementwiseOutput()
            let pa = a.pointer, pb = b.pointer, po = out.mutablePointer
            Compute.parallelRanges(out.count, minPerThread: 1 << 16) { r in for i in r { po[i] = pa[i] + pb[i] } }
        } else {
            out = binaryKernel(a, b, .add, op: "add")
        }
        let input = copy a  // its node, for the graph (the sum's gradient reads no values)
        let sa = input.shape, sb = b.shape
        OpTrace.note("add", [input, b], out)
        return Autograd.record("add", out, inputs: [input, b]) { g in [g.reducedUntracked(toShape: sa), g.reducedUntracked(toShape: sb)] }
    }

    /// Elementwise difference with broadcasting.
    public static func - (a: Tensor, b: Tensor) -> Tensor {
        let out = binaryKernel(a, b, .sub, op: "sub")
        let sa = a.shape, sb = b.shape
        OpTrace.note("sub", [a, b], out)
        return Autograd.record("sub", out, inputs: [a, b]) { g in [g.reducedUntracked(toShape: sa), (-g).reducedUntracked(toShape: sb)] }
    }

    /// Elementwise product with broadcasting (e.g. squeeze-and-excitation:
    /// `[N, C, H, W] * [N, C, 1, 1]`).
    ///
    /// For backward each operand is kept only when the other's gradient reads it, and as
    /// ``SavedActivation``: a batch norm's output (a squeeze-and-excitation block's `bn3`) is
    /// kept as the norm's recipe, the same bits recomputed in backward.
    public static func * (a: Tensor, b: Tensor) -> Tensor {
        let out = binaryKernel(a, b, .mul, op: "mul")
        let ta = a.node != nil, tb = b.node != nil
        let sa = a.shape, sb = b.shape
        let av = tb ? SavedActivation(a) : nil, bv = ta ? SavedActivation(b) : nil
        OpTrace.note("mul", [a, b], out)
        return Autograd.record("mul", out, inputs: [a, b]) { g in
            [bv.map { binaryKernel(g, $0.value(), .mul, op: "mul").reducedUntracked(toShape: sa) },
             av.map { binaryKernel(g, $0.value(), .mul, op: "mul").reducedUntracked(toShape: sb) }]
        }
    }

    /// Elementwise quotient with broadcasting.
    public static func / (a: Tensor, b: Tensor) -> Tensor {
        let out = binaryKernel(a, b, .div, op: "div")
        let ad = a.detached(), bd = b.detached()
        OpTrace.note("div", [a, b], out)
        return Autograd.record("div", out, inputs: [a, b]) { g in
            let ga = binaryKernel(g, bd, .div, op: "div").reducedUntracked(toShape: ad.shape)
            // d(a/b)/db = -a / b^2
            let q = binaryKernel(binaryKernel(g, ad, .mul, op: "div"), binaryKernel(bd, bd, .mul, op: "div"), .div, op: "div")
            return [ga, (-q).reducedUntracked(toShape: bd.shape)]
        }
    }
}

// MARK: - Unary operations and scalars

extension Tensor {
    @inline(__always)
    func mapUntracked(_ f: (Float) -> Float) -> Tensor {
        let out = Tensor(uninitializedShape: shape)
        let p = pointer, o = out.mutablePointer
        Compute.parallelRanges(count, minPerThread: 1 << 15) { r in for i in r { o[i] = f(p[i]) } }
        return out
    }

    /// Negation.
    public static prefix func - (a: Tensor) -> Tensor {
        let out = a.mapUntracked { -$0 }
        OpTrace.note("neg", [a], out)
        return Autograd.record("neg", out, inputs: [a]) { g in [g.mapUntracked { -$0 }] }
    }

    /// Adds a scalar.
    public static func + (a: Tensor, s: Float) -> Tensor {
        let out = a.mapUntracked { $0 + s }
        OpTrace.note("addScalar", [a], out, ["scalar": .float(s)])
        return Autograd.record("addScalar", out, inputs: [a]) { g in [g] }
    }

    /// Subtracts a scalar.
    public static func - (a: Tensor, s: Float) -> Tensor { a + (-s) }

    /// Multiplies by a scalar.
    public static func * (a: Tensor, s: Float) -> Tensor {
        let out = a.mapUntracked { $0 * s }
        OpTrace.note("mulScalar", [a], out, ["scalar": .float(s)])
        return Autograd.record("mulScalar", out, inputs: [a]) { g in [g.mapUntracked { $0 * s }] }
    }

    /// Multiplies by a scalar.
    public static func * (s: Float, a: Tensor) -> Tensor { a * s }

    /// Rectified linear unit, `max(x, 0)`; the gradient at 0 is 0.
    ///
    /// Consumes the receiver: when nothing else holds its storage (a temporary such as
    /// `conv(x).relu()`, whose storage no backward pass saved), the result is written over it
    /// instead of into a new tensor, the same values with one map less alive (measured, with the
    /// head's subnets replacing each level's map as they go: a resnet34 RetinaNet's forward
    /// pass at 512 px peaked at 284 MiB instead of 296, and mapped 24 MiB of fresh pages
    /// instead of 125).
    /// A receiver still used afterwards keeps its values: the caller's copy shares the
    /// storage, so a new tensor is allocated.
    public consuming func relu() -> Tensor {
        let out = elementwiseOutput()
        let p = pointer, o = out.mutablePointer
        // Backward reads the output: kept without its zeros when that saves memory
        // (``SparseActivation``), a form the convolution reading it keeps too. The kernel
        // then counts the non-zero values as it writes them, for the packing's first pass.
        let packing = Autograd.sparseActivations && Autograd.recording && node != nil && count >= 64
        let counts: [Int]?
        if packing {
            counts = SparseActivation.reluCounting(p, into: o, count: count)
        } else {
            counts = nil
            Compute.parallelRanges(count, minPerThread: 1 << 16) { r in
                var i = r.lowerBound
                // `replace(with:where:)` compiles to a compare and a blend; the standard library's
                // `pointwiseMax` ran as a call per eight values (5.8% of a resnet50 RetinaNet's
                // training step, perf). NaN stays NaN, as in PyTorch.
                while i + 8 <= r.upperBound {
                    var v = load8(p, i)
                    v.replace(with: 0, where: v .< 0)
                    store8(o, i, v)
                    i += 8
                }
                while i < r.upperBound { o[i] = p[i] < 0 ? 0 : p[i]; i += 1 }
            }
        }
        let input = copy self  // its node, for the graph (its values are not read again)
        OpTrace.note("relu", [input], out)
        let sparse = counts.flatMap { SparseActivation.pack(out.pointer, count: count, counts: $0) }
        let saved = SavedActivation(out, sparse: sparse)
        return Autograd.record("relu", out, inputs: [input]) { g in [Tensor.reluGradient(g, output: saved)] }
    }

    /// A ReLU's input gradient: `g` where the kept output is positive (or NaN), else 0.
    static func reluGradient(_ g: Tensor, output saved: SavedActivation) -> Tensor {
        let gi = Tensor(uninitializedShape: g.shape)
        if let packed = saved.packed {
            packed.reluGradient(g.pointer, into: gi.mutablePointer)
            return gi
        }
        let kept = saved.value()
        let gp = g.pointer, op = kept.pointer, gq = gi.mutablePointer
        Compute.parallelRanges(g.count, minPerThread: 1 << 16) { r in
            var i = r.lowerBound
            while i + 8 <= r.upperBound {
                var v = load8(gp, i)
                v.replace(with: 0, where: load8(op, i) .<= 0)
                store8(gq, i, v)
                i += 8
            }
            while i < r.upperBound { gq[i] = op[i] > 0 ? gp[i] : 0; i += 1 }
        }
        return gi
    }

    /// `relu(self * scale + residual)` in one pass: the tail of a squeeze-and-excitation
    /// residual block (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, figure 3),
    /// `self` the block's last batch norm output `[N, C, H, W]`, `scale` the excitation
    /// `[N, C, 1, 1]`, `residual` the shortcut `[N, C, H, W]`.
    ///
    /// The same bits as `((self * scale) + residual).relu()`, the product and the sum rounded
    /// separately, with the output kept as ``relu()`` keeps it (packed without its zeros) and
    /// `self` as the product keeps it (a batch norm's recipe). Three passes over the map become
    /// one, and in backward the excitation's gradient, `sum_hw(g * self)` per plane, is reduced
    /// directly instead of through a full temporary map. Consumes `self`: written over when
    /// nothing else holds its storage. Other shapes, and a trace (``OpTrace``, whose exporters
    /// see the three operations), take the three-operation path.
    public consuming func scaledSumReLU(scale: Tensor, residual: Tensor) -> Tensor {
        let shape = shape
        guard shape.count == 4, scale.shape == [shape[0], shape[1], 1, 1], residual.shape == shape,
              shape[2] * shape[3] > 0, OpTrace.current == nil
        else { return ((self * scale) + residual).relu() }
        let planeSize = shape[2] * shape[3], planes = shape[0] * shape[1]
        let tracked = (y: node != nil, scale: scale.node != nil, residual: residual.node != nil)
        // What backward reads, taken before the storage may be written over (which drops a
        // recipe): `self` for the excitation's gradient, the excitation for `self`'s.
        let yv = tracked.scale ? SavedActivation(copy self) : nil
        let sd = scale.detached()
        let out = elementwiseOutput()
        let packing = Autograd.sparseActivations && Autograd.recording
            && (tracked.y || tracked.scale || tracked.residual) && count >= 64
        let counts = SparseActivation.scaledSumReLUCounting(
            pointer, scale: scale.pointer, planeSize: planeSize, residual: residual.pointer,
            into: out.mutablePointer, count: count)
        let input = copy self  // its node, for the graph (its values are read through `yv`)
        let sparse = packing ? SparseActivation.pack(out.pointer, count: count, counts: counts) : nil
        let saved = SavedActivation(out, sparse: sparse)
        return Autograd.record("scaledSumReLU", out, inputs: [input, scale, residual]) { g in
            // The ReLU's gradient, then per plane the product's two gradients.
            let gm = Tensor.reluGradient(g, output: saved)
            let gy = tracked.y ? Tensor(uninitializedShape: shape) : nil
            let gs = yv != nil ? Tensor.zeros(sd.shape) : nil
            let yKept = yv?.value()
            let gmp = gm.pointer, sp = sd.pointer
            let gyp = gy?.mutablePointer, gsp = gs?.mutablePointer, yp = yKept?.pointer
            Compute.parallelFor(planes, minPerThread: max(1, (1 << 16) / planeSize)) { plane in
                let base = plane * planeSize
                if let gyp {
                    let s = sp[plane]
                    for i in base..<(base + planeSize) { gyp[i] = gmp[i] * s }
                }
                if let gsp, let yp { gsp[plane] += simdDot(gmp + base, yp + base, planeSize) }
            }
            return [gy, gs, tracked.residual ? gm : nil]
        }
    }

    /// `relu(self + residual)` in one pass: the tail of a residual block (He et al., "Deep
    /// Residual Learning for Image Recognition", CVPR 2016, figure 2), `self` the block's last
    /// batch norm output and `residual` the shortcut, both `[N, C, H, W]` (any equal shapes).
    ///
    /// The same bits as `(self + residual).relu()`, with the output kept as ``relu()`` keeps it
    /// (packed without its zeros); the sum's gradient is the ReLU's, passed to both operands.
    /// One pass over the map instead of two. Consumes `self`: written over when nothing else
    /// holds its storage. Other shapes, and a trace (``OpTrace``, whose exporters see `add` and
    /// `relu`), take the two-operation path.
    public consuming func sumReLU(_ residual: Tensor) -> Tensor {
        guard residual.shape == shape, count > 0, OpTrace.current == nil else { return (self + residual).relu() }
        let tracked = (y: node != nil, residual: residual.node != nil)
        let out = elementwiseOutput()
        let packing = Autograd.sparseActivations && Autograd.recording && (tracked.y || tracked.residual) && count >= 64
        // `y * 1` is `y` exactly, so the scaled kernel with one plane of scale 1 is the sum.
        var one: Float = 1
        let counts = SparseActivation.scaledSumReLUCounting(
            pointer, scale: &one, planeSize: count, residual: residual.pointer, into: out.mutablePointer, count: count)
        let input = copy self  // its node, for the graph (the sum's gradient reads no values)
        let sparse = packing ? SparseActivation.pack(out.pointer, count: count, counts: counts) : nil
        let saved = SavedActivation(out, sparse: sparse)
        return Autograd.record("sumReLU", out, inputs: [input, residual]) { g in
            let gi = Tensor.reluGradient(g, output: saved)
            return [tracked.y ? gi : nil, tracked.residual ? gi : nil]
        }
    }

    /// The logistic function `1 / (1 + exp(-x))`.
    public func sigmoid() -> Tensor {
        let out = mapUntracked { x in x >= 0 ? 1 / (1 + Foundation.exp(-x)) : Foundation.exp(x) / (1 + Foundation.exp(x)) }
        let od = out.detached()
        OpTrace.note("sigmoid", [self], out)
        return Autograd.record("sigmoid", out, inputs: [self]) { g in
            let gi = Tensor(uninitializedShape: g.shape)
            let gp = g.pointer, op = od.pointer, gq = gi.mutablePointer
            // Each element on its own, so any split over threads gives the same bits.
            Compute.parallelRanges(g.count, minPerThread: 1 << 15) { r in for i in r { gq[i] = gp[i] * op[i] * (1 - op[i]) } }
            return [gi]
        }
    }

    /// Elementwise `exp`.
    public func exp() -> Tensor {
        let out = mapUntracked { Foundation.exp($0) }
        let od = out.detached()
        OpTrace.note("exp", [self], out)
        return Autograd.record("exp", out, inputs: [self]) { g in [Tensor.binaryKernel(g, od, .mul, op: "exp")] }
    }

    /// Elementwise natural logarithm.
    public func log() -> Tensor {
        let out = mapUntracked { Foundation.log($0) }
        let xd = detached()
        OpTrace.note("log", [self], out)
        return Autograd.record("log", out, inputs: [self]) { g in [Tensor.binaryKernel(g, xd, .div, op: "log")] }
    }

    /// Elementwise square.
    public func squared() -> Tensor {
        let out = mapUntracked { $0 * $0 }
        let xd = detached()
        OpTrace.note("square", [self], out)
        return Autograd.record("square", out, inputs: [self]) { g in
            [Tensor.binaryKernel(g, xd.mapUntracked { 2 * $0 }, .mul, op: "square")]
        }
    }
}
