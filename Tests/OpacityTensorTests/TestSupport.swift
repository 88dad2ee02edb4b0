import Foundation
import OpacityTensor
import XCTest

// Shared helpers for the engine tests: seeded inputs, naive references, and the
// finite-difference gradient checker. Tests use only the public API.

/// A tensor of uniform values in `[lo, hi)` from a fixed seed.
func uniform(_ shape: [Int], _ lo: Float = -1, _ hi: Float = 1, seed: UInt64) -> Tensor {
    var rng = RandomGenerator(seed: seed)
    return Tensor.randomUniform(shape, lo, hi, using: &rng)
}

/// Uniform values whose magnitude is at least `minMagnitude` (kept away from a kink at 0).
func awayFromZero(_ shape: [Int], minMagnitude: Float = 0.1, seed: UInt64) -> Tensor {
    var rng = RandomGenerator(seed: seed)
    let values = (0..<shape.elementCount).map { _ -> Float in
        let m = rng.uniform(minMagnitude, 1)
        return rng.nextUniform() < 0.5 ? -m : m
    }
    return Tensor(shape: shape, scalars: values)
}

/// Distinct values at least `spacing` apart in random order (no ties for max pooling).
func distinctValues(_ shape: [Int], spacing: Float = 0.03, seed: UInt64) -> Tensor {
    var rng = RandomGenerator(seed: seed)
    let n = shape.elementCount
    var values = (0..<n).map { Float($0) * spacing - Float(n) * spacing / 2 }
    values.shuffle(using: &rng)
    return Tensor(shape: shape, scalars: values)
}

/// Element `index` (row-major) of a tensor, in double precision.
func at(_ t: Tensor, _ index: [Int]) -> Double {
    var flat = 0
    for (i, s) in zip(index, t.shape) { flat = flat * s + i }
    return Double(t[flat: flat])
}

/// Asserts two tensors agree within `absolute + relative * |expected|` element by element.
func assertClose(_ actual: Tensor, _ expected: [Double], absolute: Double = 1e-4, relative: Double = 1e-4,
                 _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.count, expected.count, "\(message): element counts differ", file: file, line: line)
    guard actual.count == expected.count else { return }
    var worst = 0.0, worstIndex = 0
    for i in 0..<expected.count {
        let excess = abs(Double(actual[flat: i]) - expected[i]) - (absolute + relative * abs(expected[i]))
        if excess > worst { worst = excess; worstIndex = i }
    }
    XCTAssertEqual(worst, 0, "\(message): element \(worstIndex) is \(actual[flat: worstIndex]), expected \(expected[worstIndex])",
                   file: file, line: line)
}

func assertClose(_ actual: Tensor, _ expected: Tensor, absolute: Double = 1e-4, relative: Double = 1e-4,
                 _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.shape, expected.shape, "\(message): shapes differ", file: file, line: line)
    assertClose(actual, expected.scalars.map(Double.init), absolute: absolute, relative: relative, message, file: file, line: line)
}

// MARK: - Finite differences

/// The result of comparing autograd with central differences for one input.
struct GradientComparison {
    var analytic: [Double]
    var numeric: [Double]
    /// The largest `|analytic - numeric| / (absolute + relative * |numeric|)`; at most 1 passes.
    var worstRatio: Double
    var worstIndex: Int
}

/// Checks the gradients of `f` with respect to each of `inputs` against central
/// differences.
///
/// The scalar differentiated is `L = sum(f(inputs) * R)` with `R` a fixed random tensor;
/// autograd gets `R` as the seed of `backward`, and the differences evaluate `L` in double
/// precision from float32 forward passes with `x ± eps`. An element passes when
/// `|analytic - numeric| <= absolute + relative * |numeric|`, where `absolute` is
/// `absoluteFraction` of the largest numeric gradient of that input (so the check
/// stays scale-free but a wrong element of any size is caught).
///
/// - Parameters:
///   - only: indices of the inputs to check (default all); the others are constants.
///   - maxElements: check at most this many elements per input (an even stride through
///     the tensor, always including the first and last).
@discardableResult
func checkGradients(
    _ name: String, _ inputs: [Tensor], only: [Int]? = nil, eps: Float = 1e-2, relative: Double = 1e-2,
    absoluteFraction: Double = 3e-3, maxElements: Int = 600, seed: UInt64 = 99,
    file: StaticString = #filePath, line: UInt = #line, _ f: ([Tensor]) -> Tensor
) -> [GradientComparison] {
    let checked = only ?? Array(inputs.indices)
    // Analytic.
    var tracked = inputs
    for i in checked { tracked[i] = inputs[i].requiringGrad() }
    let y = f(tracked)
    let r = uniform(y.shape, -1, 1, seed: seed)
    y.backward(r)
    let rd = r.scalars.map(Double.init)
    func loss(_ xs: [Tensor]) -> Double {
        let out = Autograd.inference { f(xs) }
        var s = 0.0
        for k in 0..<out.count { s += Double(out[flat: k]) * rd[k] }
        return s
    }
    var results: [GradientComparison] = []
    for i in checked {
        guard let g = tracked[i].grad else {
            XCTFail("\(name): no gradient reached input \(i)", file: file, line: line)
            continue
        }
        XCTAssertEqual(g.shape, inputs[i].shape, "\(name): gradient shape of input \(i)", file: file, line: line)
        let n = inputs[i].count
        let step = max(1, (n + maxElements - 1) / maxElements)
        var indices = Array(stride(from: 0, to: n, by: step))
        if indices.last != n - 1 { indices.append(n - 1) }
        var analytic: [Double] = [], numeric: [Double] = []
        for j in indices {
            var xs = inputs
            var plus = inputs[i], minus = inputs[i]
            plus.withUnsafeMutableBufferPointer { $0[j] += eps }
            minus.withUnsafeMutableBufferPointer { $0[j] -= eps }
            // The actual step after rounding to float32.
            let h = Double(plus[flat: j]) - Double(minus[flat: j])
            xs[i] = plus
            let lp = loss(xs)
            xs[i] = minus
            let lm = loss(xs)
            numeric.append((lp - lm) / h)
            analytic.append(Double(g[flat: j]))
        }
        let scale = numeric.map(abs).max() ?? 0
        let absolute = max(absoluteFraction * scale, 1e-6)
        var worst = 0.0, worstAt = 0
        for k in analytic.indices {
            let ratio = abs(analytic[k] - numeric[k]) / (absolute + relative * abs(numeric[k]))
            if ratio > worst { worst = ratio; worstAt = k }
        }
        if worst > 1 {
            XCTFail("\(name): gradient of input \(i) (shape \(inputs[i].shape)) element \(indices[worstAt]): "
                    + "autograd \(analytic[worstAt]), finite differences \(numeric[worstAt]) (ratio \(worst))",
                    file: file, line: line)
        }
        XCTAssertGreaterThan(scale, 0, "\(name): all finite-difference gradients of input \(i) are zero; the check would prove nothing",
                             file: file, line: line)
        results.append(GradientComparison(analytic: analytic, numeric: numeric, worstRatio: worst, worstIndex: indices[worstAt]))
    }
    return results
}

// MARK: - Naive references

/// A direct 7-loop convolution in double precision (PyTorch's `conv2d` semantics).
func referenceConv2d(_ x: Tensor, _ w: Tensor, bias: Tensor? = nil, stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
                     dilation: (Int, Int) = (1, 1), groups: Int = 1) -> (shape: [Int], values: [Double]) {
    let (n, cin, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (cout, cinG, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3])
    let ho = (h + 2 * padding.0 - dilation.0 * (kh - 1) - 1) / stride.0 + 1
    let wo = (wd + 2 * padding.1 - dilation.1 * (kw - 1) - 1) / stride.1 + 1
    let coutG = cout / groups
    var out = [Double](repeating: 0, count: n * cout * ho * wo)
    let xs = x.scalars, ws = w.scalars
    for b in 0..<n {
        for oc in 0..<cout {
            let g = oc / coutG
            for oy in 0..<ho {
                for ox in 0..<wo {
                    var s = bias.map { Double($0[flat: oc]) } ?? 0
                    for ci in 0..<cinG {
                        let c = g * cinG + ci
                        for i in 0..<kh {
                            for j in 0..<kw {
                                let iy = oy * stride.0 - padding.0 + i * dilation.0
                                let ix = ox * stride.1 - padding.1 + j * dilation.1
                                if iy < 0 || iy >= h || ix < 0 || ix >= wd { continue }
                                s += Double(xs[((b * cin + c) * h + iy) * wd + ix]) * Double(ws[((oc * cinG + ci) * kh + i) * kw + j])
                            }
                        }
                    }
                    out[((b * cout + oc) * ho + oy) * wo + ox] = s
                }
            }
        }
    }
    _ = cin
    return ([n, cout, ho, wo], out)
}

/// PyTorch's pooling output size (with `ceil_mode`).
func referencePoolSize(_ n: Int, k: Int, s: Int, p: Int, ceil: Bool) -> Int {
    var o: Int
    if ceil {
        o = Int((Double(n + 2 * p - k) / Double(s)).rounded(.up)) + 1
        if (o - 1) * s >= n + p { o -= 1 }
    } else {
        o = (n + 2 * p - k) / s + 1
    }
    return o
}

/// Max and average pooling by direct loops (PyTorch's semantics).
func referencePool(_ x: Tensor, kernel: (Int, Int), stride: (Int, Int), padding: (Int, Int), ceil: Bool,
                   max isMax: Bool, countIncludePad: Bool = true) -> (shape: [Int], values: [Double]) {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let ho = referencePoolSize(h, k: kernel.0, s: stride.0, p: padding.0, ceil: ceil)
    let wo = referencePoolSize(w, k: kernel.1, s: stride.1, p: padding.1, ceil: ceil)
    var out: [Double] = []
    for plane in 0..<(n * c) {
        for oy in 0..<ho {
            for ox in 0..<wo {
                let y0 = oy * stride.0 - padding.0, x0 = ox * stride.1 - padding.1
                let y1 = min(y0 + kernel.0, h + padding.0), x1 = min(x0 + kernel.1, w + padding.1)
                var best = -Double.infinity, sum = 0.0, inside = 0
                for y in max(0, y0)..<min(h, y1) {
                    for xx in max(0, x0)..<min(w, x1) {
                        let v = Double(x[flat: (plane * h + y) * w + xx])
                        best = max(best, v)
                        sum += v
                        inside += 1
                    }
                }
                if isMax {
                    out.append(best)
                } else {
                    let divisor = countIncludePad ? (y1 - y0) * (x1 - x0) : inside
                    out.append(sum / Double(divisor))
                }
            }
        }
    }
    return ([n, c, ho, wo], out)
}

/// Runs `body` at a recomputation level (0, 1 or 2: ``Autograd/selectiveRecomputation`` and
/// ``Autograd/convolutionRecomputation``) with the ReLU outputs packed or not, and returns its
/// result and what the tape saved (``Autograd/measuringSavedTensors(_:)``).
func atLevel<R>(_ level: Int, sparse: Bool, _ body: () -> R) -> (R, [String: (bytes: Int, nodes: Int)]) {
    let before = (Autograd.selectiveRecomputation, Autograd.convolutionRecomputation, Autograd.sparseActivations)
    Autograd.selectiveRecomputation = level >= 1
    Autograd.convolutionRecomputation = level >= 2
    Autograd.sparseActivations = sparse
    defer { (Autograd.selectiveRecomputation, Autograd.convolutionRecomputation, Autograd.sparseActivations) = before }
    return Autograd.measuringSavedTensors(body)
}
