import OpacityTensor
import XCTest

/// A ReLU's output kept for backward without its zeros (``SparseActivation``): the packed form
/// gives back the same bits, the ReLU and the convolution after it keep it instead of the map,
/// and the gradients are the same bits as with the map kept.
final class SparseActivationTests: XCTestCase {
    /// `count` floats, a fraction `zeros` of them +0.0, the rest from a mix that includes the
    /// patterns a lossy packing would change: -0.0, NaNs with payloads, subnormals, infinities.
    private func values(_ count: Int, zeros: Double, seed: UInt64) -> [Float] {
        var rng = SplitMix(state: seed)
        let specials: [Float] = [-0.0, Float(bitPattern: 0x7FC0_1234), Float(bitPattern: 0xFFA0_0001), .leastNonzeroMagnitude, -.infinity, .infinity]
        return (0..<count).map { i in
            let u = Double(rng.next() % 1_000_000) / 1_000_000
            if u < zeros { return 0 }
            if i % 97 == 0 { return specials[i / 97 % specials.count] }
            return Float(rng.next() % 100_000) / 1000 + 0.001
        }
    }

    private func roundTrip(_ v: [Float]) -> (packed: SparseActivation?, back: [Float]) {
        let packed = v.withUnsafeBufferPointer { SparseActivation.pack($0.baseAddress!, count: v.count) }
        guard let packed else { return (nil, []) }
        var back = [Float](repeating: 1, count: v.count)
        back.withUnsafeMutableBufferPointer { packed.unpack(into: $0.baseAddress!) }
        return (packed, back)
    }

    func testRoundTripGivesTheSameBits() {
        let chunk = SparseActivation.chunk
        for count in [64, 65, 127, 1000, chunk - 1, chunk, chunk + 1, 3 * chunk + 17] {
            for zeros in [0.5, 0.9, 1.0] {
                let v = values(count, zeros: zeros, seed: UInt64(count) &* 31 &+ UInt64(zeros * 10))
                let (packed, back) = roundTrip(v)
                guard let packed else { return XCTFail("count \(count), zeros \(zeros): not packed") }
                XCTAssertEqual(back.map(\.bitPattern), v.map(\.bitPattern), "count \(count), zeros \(zeros)")
                // masks (one bit per value) and the non-zero values, nothing more
                let nonZero = v.filter { $0.bitPattern != 0 }.count
                XCTAssertEqual(packed.bytes, 4 * (2 * ((count + 63) / 64) + max(1, nonZero)), "count \(count), zeros \(zeros)")
            }
        }
    }

    func testTheSameBitsOnOneThreadAndTwo() {
        let v = values(5 * SparseActivation.chunk + 3, zeros: 0.5, seed: 11)
        let saved = Compute.threads
        defer { Compute.threads = saved }
        Compute.threads = 2
        let two = roundTrip(v).back
        Compute.threads = 1
        let one = roundTrip(v).back
        XCTAssertEqual(one.map(\.bitPattern), v.map(\.bitPattern))
        XCTAssertEqual(two.map(\.bitPattern), v.map(\.bitPattern))
    }

    /// Packing that would save less than an eighth of the map keeps the map (nil), and so do
    /// maps too small to hold one mask word.
    func testFewZerosOrTinyMapsAreNotPacked() {
        XCTAssertNil(roundTrip(values(10_000, zeros: 0, seed: 1)).packed)
        XCTAssertNil(roundTrip(values(10_000, zeros: 0.1, seed: 2)).packed)
        XCTAssertNotNil(roundTrip(values(10_000, zeros: 0.2, seed: 3)).packed)
        XCTAssertNil(roundTrip([Float](repeating: 0, count: 63)).packed)
    }

    /// `conv(relu(conv(x)))`: the ReLU's node and the second convolution keep the packed form
    /// (less than the map between them), and the output and every gradient are the same bits
    /// as with the map kept (``Autograd/sparseActivations`` off).
    func testReLUAndConvolutionKeepThePackedForm() {
        let x = uniform([2, 4, 13, 11], seed: 7)
        let w1 = uniform([6, 4, 3, 3], -0.3, 0.3, seed: 1), w2 = uniform([5, 6, 3, 3], -0.3, 0.3, seed: 2)
        let r = uniform([2, 5, 13, 11], seed: 8)
        func run(sparse: Bool) -> (out: [UInt32], grads: [[UInt32]], saved: [String: (bytes: Int, nodes: Int)]) {
            let before = Autograd.sparseActivations
            Autograd.sparseActivations = sparse
            defer { Autograd.sparseActivations = before }
            let ps = [x, w1, w2].map { $0.requiringGrad() }
            let (out, saved) = Autograd.measuringSavedTensors { () -> [Float] in
                let y = Autograd.recordingGradients { ps[0].conv2d(ps[1], padding: (1, 1)).relu().conv2d(ps[2], padding: (1, 1)) }
                y.backward(r)
                return y.scalars
            }
            return (out.map(\.bitPattern), ps.map { $0.grad!.scalars.map(\.bitPattern) }, saved)
        }
        let packed = run(sparse: true), kept = run(sparse: false)
        XCTAssertEqual(packed.out, kept.out)
        XCTAssertEqual(packed.grads, kept.grads, "every gradient, bit for bit")
        let map = 2 * 6 * 13 * 11 * 4
        let keptBytes = (kept.saved["relu"]?.bytes ?? 0) + (kept.saved["conv2d"]?.bytes ?? 0)
        let packedBytes = (packed.saved["relu"]?.bytes ?? 0) + (packed.saved["conv2d"]?.bytes ?? 0)
        XCTAssertGreaterThanOrEqual(keptBytes - packedBytes, map / 4, "kept \(kept.saved), packed \(packed.saved)")
    }

    /// The ReLU's backward from the packed output: the same gradient bits as from the map, with
    /// -0.0, NaN, infinities and subnormals among the inputs (NaN passes the gradient, -0.0
    /// does not, as ``Tensor/relu()``'s rule).
    func testReLUGradientFromThePackedForm() {
        let v = values(3 * SparseActivation.chunk + 77, zeros: 0.3, seed: 5).enumerated().map { $0.offset % 3 == 0 ? -$0.element : $0.element }
        let g = values(v.count, zeros: 0, seed: 6)
        func run(sparse: Bool) -> [UInt32] {
            let before = Autograd.sparseActivations
            Autograd.sparseActivations = sparse
            defer { Autograd.sparseActivations = before }
            let x = Tensor(shape: [v.count], scalars: v).requiringGrad()
            let y = Autograd.recordingGradients { x.relu() }
            y.backward(Tensor(shape: [g.count], scalars: g))
            return x.grad!.scalars.map(\.bitPattern)
        }
        XCTAssertEqual(run(sparse: true), run(sparse: false))
    }

    /// A frozen batch norm with its fused ReLU keeps its input only where its output is not
    /// zero; the convolution after it recomputes the output from that. Channels with a
    /// negative scale, a zero scale and a positive or negative shift, and a positive one: the
    /// output and every gradient are the same bits as with the whole input kept.
    func testFrozenNormWithReLUKeepsItsInputWhereTheOutputIsNotZero() {
        let x = uniform([2, 4, 13, 11], seed: 7)
        let w1 = uniform([5, 4, 3, 3], -0.3, 0.3, seed: 1), w2 = uniform([3, 5, 3, 3], -0.3, 0.3, seed: 2)
        let gamma = Tensor(shape: [5], scalars: [1.2, -0.7, 0, 0, 0.4]), beta = Tensor(shape: [5], scalars: [0.1, -0.2, 0.3, -0.1, 0])
        let mean = uniform([5], -0.1, 0.1, seed: 5), variance = uniform([5], 0.5, 1.5, seed: 6)
        let r = uniform([2, 3, 13, 11], seed: 8)
        func run(sparse: Bool) -> (out: [UInt32], grads: [[UInt32]], saved: [String: (bytes: Int, nodes: Int)]) {
            let before = Autograd.sparseActivations
            Autograd.sparseActivations = sparse
            defer { Autograd.sparseActivations = before }
            let ps = [x, w1, w2, gamma, beta].map { $0.requiringGrad() }
            let (out, saved) = Autograd.measuringSavedTensors { () -> [Float] in
                let y = Autograd.recordingGradients {
                    ps[0].conv2d(ps[1], padding: (1, 1))
                        .batchNorm2d(weight: ps[3], bias: ps[4], mean: mean, variance: variance, relu: true)
                        .conv2d(ps[2], padding: (1, 1))
                }
                y.backward(r)
                return y.scalars
            }
            return (out.map(\.bitPattern), ps.map { $0.grad!.scalars.map(\.bitPattern) }, saved)
        }
        let packed = run(sparse: true), kept = run(sparse: false)
        XCTAssertEqual(packed.out, kept.out)
        XCTAssertEqual(packed.grads, kept.grads, "every gradient, bit for bit")
        let map = 2 * 5 * 13 * 11 * 4
        let norm = { (s: [String: (bytes: Int, nodes: Int)]) in s["batchNorm2d(eval)+relu"]?.bytes ?? 0 }
        XCTAssertGreaterThanOrEqual(norm(kept.saved), map, "\(kept.saved)")
        XCTAssertLessThan(norm(packed.saved), map * 3 / 4, "\(packed.saved)")
    }

    /// A map changed in place after the ReLU drops its packed form: the convolution reading the
    /// changed map keeps the changed values, not the ReLU's.
    func testAMapChangedInPlaceDropsThePackedForm() {
        let before = Autograd.sparseActivations
        Autograd.sparseActivations = true
        defer { Autograd.sparseActivations = before }
        let x = uniform([1, 3, 9, 9], seed: 3).requiringGrad()
        let w = uniform([2, 3, 3, 3], -0.5, 0.5, seed: 4).requiringGrad()
        let y = Autograd.recordingGradients { () -> Tensor in
            var h = x.relu()
            XCTAssertNotNil(h.storage.sparse)
            h.withUnsafeMutableBufferPointer { b in for i in b.indices { b[i] += 1 } }
            XCTAssertNil(h.storage.sparse)
            return h.conv2d(w)
        }
        y.backward(Tensor(shape: y.shape, repeating: 1))
        // dL/dw[o, c, i, j] = sum over output positions of the input the convolution read:
        // the changed map, relu(x) + 1.
        let h = x.detached().scalars.map { max($0, 0) + 1 }
        var expected: Float = 0
        for oy in 0..<7 { for ox in 0..<7 { expected += h[oy * 9 + ox] } }
        XCTAssertEqual(w.grad!.scalars[0], expected, accuracy: 1e-4)
    }
}

/// A small seeded generator (SplitMix64) for test data.
private struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E4B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
