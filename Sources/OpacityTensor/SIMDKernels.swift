// Small vectorised loops shared by the kernels.
//
// Floating-point reductions written as plain loops run one addition after another (the
// compiler may not reorder them), which makes a sum over a large activation latency-bound.
// These helpers keep eight independent partial sums in a SIMD register instead. The
// grouping is fixed, so results repeat bit for bit.

/// Eight floats from `p + i` (no alignment needed).
@inline(__always)
func load8(_ p: UnsafePointer<Float>, _ i: Int) -> SIMD8<Float> {
    UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
}

/// Stores eight floats at `p + i` (no alignment needed).
@inline(__always)
func store8(_ p: UnsafeMutablePointer<Float>, _ i: Int, _ v: SIMD8<Float>) {
    UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: SIMD8<Float>.self)
}

/// `v.0 ... v.5` stored at `p`, `p + stride`, ..., `p + 5 * stride`, eight floats each (the six
/// rows of one Winograd F(4x4, 3x3) transform step).
@inline(__always)
func store8x6(
    _ p: UnsafeMutablePointer<Float>, stride: Int,
    _ v: (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>)
) {
    store8(p, 0, v.0)
    store8(p, stride, v.1)
    store8(p, 2 * stride, v.2)
    store8(p, 3 * stride, v.3)
    store8(p, 4 * stride, v.4)
    store8(p, 5 * stride, v.5)
}

/// `sum(x[0..<n])`, accumulated in eight lanes.
@inline(__always)
func simdSum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    var i = 0
    while i + 8 <= n {
        acc += load8(x, i)
        i += 8
    }
    var s = acc.sum()
    while i < n {
        s += x[i]
        i += 1
    }
    return s
}

/// `sum(x[0..<n] * y[0..<n])`, accumulated in eight lanes.
@inline(__always)
func simdDot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    var i = 0
    while i + 8 <= n {
        acc += load8(x, i) * load8(y, i)
        i += 8
    }
    var s = acc.sum()
    while i < n {
        s += x[i] * y[i]
        i += 1
    }
    return s
}

/// `sum(x^2)` in double precision (for norms over millions of values): every square and
/// every addition in double, in eight lanes.
@inline(__always)
func simdSumOfSquares(_ x: UnsafePointer<Float>, _ n: Int) -> Double {
    var acc = SIMD8<Double>(repeating: 0)
    var i = 0
    while i + 8 <= n {
        let v = SIMD8<Double>(load8(x, i))
        acc += v * v
        i += 8
    }
    var s = acc.sum()
    while i < n {
        s += Double(x[i]) * Double(x[i])
        i += 1
    }
    return s
}

/// `sum(x[0..<n])` in double precision: every addition in double, in eight lanes (losses
/// and statistics, where float partial sums would add visible rounding noise).
@inline(__always)
func simdSumDouble(_ x: UnsafePointer<Float>, _ n: Int) -> Double {
    var acc = SIMD8<Double>(repeating: 0)
    var i = 0
    while i + 8 <= n {
        acc += SIMD8<Double>(load8(x, i))
        i += 8
    }
    var s = acc.sum()
    while i < n {
        s += Double(x[i])
        i += 1
    }
    return s
}

/// `sum(g[0..<n] * (x[0..<n] - m))`, accumulated in eight lanes.
@inline(__always)
func simdDotCentered(_ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ m: Float, _ n: Int) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    var i = 0
    while i + 8 <= n {
        acc += load8(g, i) * (load8(x, i) - m)
        i += 8
    }
    var s = acc.sum()
    while i < n {
        s += g[i] * (x[i] - m)
        i += 1
    }
    return s
}
