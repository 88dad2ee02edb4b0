import OpacityTensor
import XCTest

/// Selective recomputation: a convolution whose input is a batch norm's output (with or without
/// its fused ReLU) keeps the norm's recipe instead of the map, and recomputes the map in
/// backward. The values and gradients are the same bits as with the map kept; the map is freed
/// once the forward pass is done with it.
final class SelectiveRecomputationTests: XCTestCase {
    private let w1 = uniform([6, 4, 3, 3], -0.3, 0.3, seed: 1), w2 = uniform([5, 6, 3, 3], -0.3, 0.3, seed: 2)
    private let gamma = uniform([6], 0.5, 1.5, seed: 3), beta = uniform([6], -0.2, 0.2, seed: 4)
    private let mean = uniform([6], -0.1, 0.1, seed: 5), variance = uniform([6], 0.5, 1.5, seed: 6)
    private let x = uniform([2, 4, 13, 11], seed: 7)

    /// `conv(norm(conv(x)))`, the norm frozen (running statistics) or on batch statistics, its
    /// ReLU fused or not; `copy` puts an exact copy (`* 1`) between the norm and the second
    /// convolution, which then keeps that copy as before.
    private func chain(_ ps: [Tensor], training: Bool, relu: Bool, copy: Bool) -> Tensor {
        let h = ps[0].conv2d(ps[1], padding: (1, 1))
        var n =
            training
            ? h.batchNorm2dTraining(weight: ps[3], bias: ps[4], relu: relu).0
            : h.batchNorm2d(weight: ps[3], bias: ps[4], mean: mean, variance: variance, relu: relu)
        if copy { n = n * 1 }
        return n.conv2d(ps[2], padding: (1, 1))
    }

    /// Output, loss and the five gradients of `chain`, and what the tape saved.
    private func run(training: Bool, relu: Bool, copy: Bool) -> (out: [Float], grads: [[Float]], saved: [String: (bytes: Int, nodes: Int)]) {
        let ps = [x, w1, w2, gamma, beta].map { $0.requiringGrad() }
        let r = uniform([2, 5, 13, 11], seed: 8)
        let (out, saved) = Autograd.measuringSavedTensors { () -> [Float] in
            let y = Autograd.recordingGradients { chain(ps, training: training, relu: relu, copy: copy) }
            y.backward(r)
            return y.scalars
        }
        return (out, ps.map { $0.grad!.scalars }, saved)
    }

    func testTheRecipeGivesTheSameBitsAsTheKeptMap() {
        for training in [false, true] {
            for relu in [false, true] {
                let what = "\(training ? "batch statistics" : "frozen")\(relu ? " + relu" : "")"
                let recomputed = run(training: training, relu: relu, copy: false)
                let kept = run(training: training, relu: relu, copy: true)
                XCTAssertEqual(recomputed.out, kept.out, what)
                XCTAssertEqual(recomputed.grads, kept.grads, "\(what): every gradient, bit for bit")
                // The second convolution kept the copy (6 x 13 x 11 floats per image) in one
                // case and only the recipe in the other: the norm's output was freed by the
                // forward pass.
                let map = 2 * 6 * 13 * 11 * 4
                XCTAssertGreaterThanOrEqual(kept.saved["conv2d"]?.bytes ?? 0, map, "\(what): \(kept.saved)")
                XCTAssertLessThan(recomputed.saved["conv2d"]?.bytes ?? 0, map, "\(what): \(recomputed.saved)")
            }
        }
    }

    func testTheSwitchKeepsTheMap() {
        Autograd.selectiveRecomputation = false
        defer { Autograd.selectiveRecomputation = true }
        let off = run(training: false, relu: true, copy: false)
        XCTAssertGreaterThanOrEqual(off.saved["conv2d"]?.bytes ?? 0, 2 * 6 * 13 * 11 * 4, "\(off.saved)")
    }

    /// `OPACITY_SELECTIVE_RECOMPUTATION=2`: a 1x1 convolution that at least doubles the
    /// channels leaves a recipe, so the norm after it (frozen or on batch statistics, with or
    /// without ReLU) keeps no map of its own; backward runs the convolution again. The same bits
    /// as with every map kept. A 1x1 convolution that widens less, a narrowing one and a 3x3
    /// one leave no recipe.
    func testDoublingPointwiseConvolutionIsRecomputed() {
        /// `conv(norm(conv(x, first)))`, the second convolution narrowing (its own output then
        /// leaves no recipe, which would hold the norm's input until the output is freed).
        func run(_ first: Tensor, training: Bool, relu: Bool, level: Int) -> (out: [Float], grads: [[Float]], saved: [String: (bytes: Int, nodes: Int)]) {
            // (the levels alone: a frozen norm's ReLU would also keep its input packed,
            // ``SparseActivation``, tested on its own)
            let before = (Autograd.selectiveRecomputation, Autograd.convolutionRecomputation, Autograd.sparseActivations)
            Autograd.selectiveRecomputation = level >= 1
            Autograd.convolutionRecomputation = level >= 2
            Autograd.sparseActivations = false
            defer { (Autograd.selectiveRecomputation, Autograd.convolutionRecomputation, Autograd.sparseActivations) = before }
            let c = first.shape[0], k = first.shape[2]
            let norm = [uniform([c], 0.5, 1.5, seed: 31), uniform([c], -0.2, 0.2, seed: 32)]
            let stats = (mean: uniform([c], -0.1, 0.1, seed: 33), variance: uniform([c], 0.5, 1.5, seed: 34))
            let ps = [x, first] + norm + [uniform([2, c, 1, 1], -0.5, 0.5, seed: 35)]
            let params = ps.map { $0.requiringGrad() }
            let (out, saved) = Autograd.measuringSavedTensors { () -> [Float] in
                let y = Autograd.recordingGradients { () -> Tensor in
                    let h = params[0].conv2d(params[1], padding: (k / 2, k / 2))
                    let n =
                        training
                        ? h.batchNorm2dTraining(weight: params[2], bias: params[3], relu: relu).0
                        : h.batchNorm2d(weight: params[2], bias: params[3], mean: stats.mean, variance: stats.variance, relu: relu)
                    return n.conv2d(params[4])
                }
                y.backward(uniform(y.shape, seed: 36))
                return y.scalars
            }
            return (out, params.map { $0.grad!.scalars }, saved)
        }
        func normName(_ training: Bool, _ relu: Bool) -> String {
            "batchNorm2d(\(training ? "train" : "eval"))\(relu ? "+relu" : "")"
        }
        let doubling = uniform([8, 4, 1, 1], -0.5, 0.5, seed: 21)
        for training in [false, true] {
            for relu in [false, true] {
                let what = "\(training ? "batch statistics" : "frozen")\(relu ? " + relu" : "")", norm = normName(training, relu)
                let kept = run(doubling, training: training, relu: relu, level: 0)
                let recomputed = run(doubling, training: training, relu: relu, level: 2)
                XCTAssertEqual(recomputed.out, kept.out, what)
                XCTAssertEqual(recomputed.grads, kept.grads, "\(what): every gradient, bit for bit")
                // The norm kept its input (frozen) or xhat (batch statistics), an 8-channel map,
                // at level 0, and only the convolution's recipe at level 2.
                let map = 2 * 8 * 13 * 11 * 4
                XCTAssertGreaterThanOrEqual(kept.saved[norm]?.bytes ?? 0, map, "\(what): \(kept.saved)")
                XCTAssertLessThan(recomputed.saved[norm]?.bytes ?? 0, map, "\(what): \(recomputed.saved)")
                // Level 1 recomputes only the norm's output, not the convolution's.
                XCTAssertGreaterThanOrEqual(run(doubling, training: training, relu: relu, level: 1).saved[norm]?.bytes ?? 0, map, what)
            }
            // 4 -> 7 (less than double), 4 -> 3 and a 3x3 convolution keep their outputs.
            let others = [uniform([7, 4, 1, 1], -0.5, 0.5, seed: 22), uniform([3, 4, 1, 1], -0.5, 0.5, seed: 23), w1]
            for first in others {
                let r = run(first, training: training, relu: false, level: 2), kept = run(first, training: training, relu: false, level: 0)
                let norm = normName(training, false)
                XCTAssertEqual(r.saved[norm]?.bytes, kept.saved[norm]?.bytes, "\(first.shape): \(r.saved)")
                XCTAssertEqual(r.grads, kept.grads, "\(first.shape)")
            }
        }
    }

    /// A norm's output changed in place (a residual sum written over it) loses its recipe: the
    /// convolution after the sum keeps the sum, not the norm's output.
    func testAnOutputChangedInPlaceIsKept() {
        let other = uniform([2, 6, 13, 11], seed: 9)
        func grads(inPlace: Bool) -> [[Float]] {
            let ps = [x, w1, w2, gamma, beta].map { $0.requiringGrad() }
            let y = Autograd.recordingGradients { () -> Tensor in
                let h = ps[0].conv2d(ps[1], padding: (1, 1))
                let n = h.batchNorm2d(weight: ps[3], bias: ps[4], mean: mean, variance: variance, relu: true)
                let id = ObjectIdentifier(n.storage)
                let s = inPlace ? (consume n) + other : n * 1 + other
                XCTAssertEqual(ObjectIdentifier(s.storage) == id, inPlace, "the sum wrote over the norm's output")
                return s.conv2d(ps[2], padding: (1, 1))
            }
            y.backward(uniform(y.shape, seed: 10))
            return ps.map { $0.grad!.scalars }
        }
        XCTAssertEqual(grads(inPlace: true), grads(inPlace: false))
    }

    /// The training-mode norm with its ReLU fused equals the norm followed by `relu()`, values
    /// and gradients bit for bit, and its gradients match finite differences.
    func testFusedReLUOnBatchStatistics() {
        let h = uniform([3, 4, 5, 6], -2, 2, seed: 11)
        let w = uniform([4], 0.5, 1.5, seed: 12), b = uniform([4], -0.3, 0.3, seed: 13)
        let r = uniform(h.shape, seed: 14)
        func run(fused: Bool) -> ([Float], [[Float]]) {
            let ps = [h, w, b].map { $0.requiringGrad() }
            let y = Autograd.recordingGradients {
                fused
                    ? ps[0].batchNorm2dTraining(weight: ps[1], bias: ps[2], relu: true).0
                    : ps[0].batchNorm2dTraining(weight: ps[1], bias: ps[2]).0.relu()
            }
            y.backward(r)
            return (y.scalars, ps.map { $0.grad!.scalars })
        }
        let fused = run(fused: true), separate = run(fused: false)
        XCTAssertEqual(fused.0, separate.0)
        XCTAssertEqual(fused.1, separate.1)
        XCTAssertTrue(fused.0.contains(0) && fused.0.contains { $0 > 0 }, "the ReLU cuts some values and keeps others")
        // Finite differences need every output away from the ReLU's kink by more than a step
        // moves it.
        let pre = h.batchNorm2dTraining(weight: w, bias: b).0.scalars
        XCTAssertGreaterThan(pre.map(abs).min()!, 0.004, "the inputs keep the outputs away from the kink")
        checkGradients("batchNorm2d training + fused relu", [h, w, b], eps: 1e-4, relative: 2e-2) {
            $0[0].batchNorm2dTraining(weight: $0[1], bias: $0[2], relu: true).0
        }
    }

    /// `Sequential` runs a batch norm followed by a ReLU fused: the same values and gradients as
    /// the layers one by one, in training and frozen mode, and the ReLU keeps no map.
    func testSequentialFusesNormAndReLU() {
        let seq = Sequential([Conv2d(4, 6, kernel: 3, padding: 1), BatchNorm2d(6), ReLU(), Conv2d(6, 5, kernel: 3, padding: 1)])
        seq.train()
        let r = uniform([2, 5, 13, 11], seed: 15)
        for frozen in [false, true] {
            (seq.layers[1] as! BatchNorm2d).frozen = frozen
            func run(_ f: (Tensor) -> Tensor) -> ([Float], [[Float]], [String: (bytes: Int, nodes: Int)]) {
                for (_, p) in seq.namedParameters() { p.grad = nil }
                let (out, saved) = Autograd.measuringSavedTensors { () -> [Float] in
                    let y = Autograd.recordingGradients { f(x) }
                    y.backward(r)
                    return y.scalars
                }
                return (out, seq.namedParameters().map { $0.1.grad!.scalars }, saved)
            }
            let fused = run { seq($0) }
            let separate = run { seq.layers.reduce($0) { $1($0) } }
            XCTAssertEqual(fused.0, separate.0, "frozen \(frozen)")
            XCTAssertEqual(fused.1, separate.1, "frozen \(frozen): gradients")
            XCTAssertNil(fused.2["relu"], "no separate ReLU node: \(fused.2)")
            XCTAssertNotNil(separate.2["relu"], "\(separate.2)")
        }
    }

    /// An FPN's top-down merges (`conv2d(_:addingUpsampled2x:)`), two levels deep as P3 and P2
    /// on P4: the same outputs and gradients, bit for bit, as the lateral convolution plus the
    /// upsampled map in separate ops; the output convolutions keep recipes instead of the merged
    /// maps (the P2 merge's recipe reads the P3 merge's recipe); at level 1
    /// (`OPACITY_SELECTIVE_RECOMPUTATION=1`) the maps are kept.
    func testFPNMergeKeepsARecipeInsteadOfTheMergedMap() {
        let c2 = uniform([2, 4, 8, 12], seed: 31), c3 = uniform([2, 5, 4, 6], seed: 32), c4 = uniform([2, 7, 2, 3], seed: 33)
        let l2 = uniform([6, 4, 1, 1], -0.5, 0.5, seed: 34), l3 = uniform([6, 5, 1, 1], -0.5, 0.5, seed: 35)
        let l4 = uniform([6, 7, 1, 1], -0.5, 0.5, seed: 36), b2 = uniform([6], -0.1, 0.1, seed: 37)
        let smooth = uniform([3, 6, 3, 3], -0.3, 0.3, seed: 38)
        let r2 = uniform([2, 3, 8, 12], seed: 39), r3 = uniform([2, 3, 4, 6], seed: 40), r4 = uniform([2, 3, 2, 3], seed: 45)
        func run(fused: Bool) -> (outs: [[UInt32]], grads: [[UInt32]], tape: Int) {
            let ps = [c2, c3, c4, l2, l3, l4, b2, smooth].map { $0.requiringGrad() }
            var tape = 0
            let outs = { () -> [[UInt32]] in
                let before = TensorMemory.liveBytes
                let (s2, s3, s4) = Autograd.recordingGradients { () -> (Tensor, Tensor, Tensor) in
                    let m4 = ps[2].conv2d(ps[5])
                    let m3 = fused ? ps[1].conv2d(ps[4], addingUpsampled2x: m4) : ps[1].conv2d(ps[4]) + m4.upsampleNearest2x()
                    let m2 =
                        fused
                        ? ps[0].conv2d(ps[3], bias: ps[6], addingUpsampled2x: m3)
                        : ps[0].conv2d(ps[3], bias: ps[6]) + m3.upsampleNearest2x()
                    return (m2.conv2d(ps[7], padding: (1, 1)), m3.conv2d(ps[7], padding: (1, 1)), m4.conv2d(ps[7], padding: (1, 1)))
                }
                tape = TensorMemory.liveBytes - before  // the outputs and what backward will read
                ((s2 * r2).sum() + (s3 * r3).sum() + (s4 * r4).sum()).backward()
                return [s2, s3, s4].map { $0.scalars.map(\.bitPattern) }
            }()
            return (outs, ps.map { $0.grad!.scalars.map(\.bitPattern) }, tape)
        }
        let separate = run(fused: false), fused = run(fused: true)
        XCTAssertEqual(fused.outs, separate.outs)
        XCTAssertEqual(fused.grads, separate.grads, "every gradient, bit for bit")
        // After forward, the output convolutions keep the merged maps (6 x 8 x 12 and 6 x 4 x 6
        // per image) in one case and only recipes in the other (the top map, P4's, is kept in
        // both).
        let maps = 2 * 6 * (8 * 12 + 4 * 6) * 4
        XCTAssertGreaterThanOrEqual(separate.tape - fused.tape, maps, "separate \(separate.tape) bytes, fused \(fused.tape)")

        // Backward runs each lateral convolution once more: P2's recipe writes P3's merged map,
        // which P3's output convolution then copies instead of running P3's lateral again.
        let (_, log) = ConvolutionKernelLog.record { run(fused: true) }
        func forwardCalls(_ weight: Tensor) -> Int {
            log.filter { $0.entry.pass == "forward" && $0.entry.weight == weight.shape }.reduce(0) { $0 + $1.count }
        }
        XCTAssertEqual(forwardCalls(l2), 2, "\(log)")
        XCTAssertEqual(forwardCalls(l3), 2, "\(log)")
        XCTAssertEqual(forwardCalls(l4), 1, "\(log)")

        Autograd.convolutionRecomputation = false
        defer { Autograd.convolutionRecomputation = true }
        let levelOne = run(fused: true)
        XCTAssertEqual(levelOne.grads, separate.grads)
        XCTAssertEqual(levelOne.tape, separate.tape, "level 1 keeps the merged maps")
    }

    func testFPNMergeGradientsMatchFiniteDifferences() {
        let x = uniform([2, 3, 6, 4], seed: 41), w = uniform([5, 3, 1, 1], -0.5, 0.5, seed: 42)
        let b = uniform([5], -0.1, 0.1, seed: 43), above = uniform([2, 5, 3, 2], seed: 44)
        checkGradients("conv2d addingUpsampled2x", [x, w, b, above]) { t in
            t[0].conv2d(t[1], bias: t[2], addingUpsampled2x: t[3])
        }
    }

    /// A separable convolution (`relu`, a depthwise 3x3, a pointwise 1x1 that does not widen):
    /// at level 2 the pointwise convolution keeps the depthwise one's recipe instead of its
    /// output, and backward runs the depthwise convolution once more; the same bits as with the
    /// map kept, with the ReLU's output packed or whole, at stride 1 and 2.
    func testSeparableConvolutionRecomputesTheDepthwiseOutput() {
        let input = uniform([2, 6, 13, 11], seed: 51), dw = uniform([6, 1, 3, 3], -0.5, 0.5, seed: 52)
        let pw = uniform([5, 6, 1, 1], -0.5, 0.5, seed: 53)
        for stride in [1, 2] {
            let out = uniform([2, 5, stride == 1 ? 13 : 7, stride == 1 ? 11 : 6], seed: 54)
            func run() -> [[UInt32]] {
                let ps = [input, dw, pw].map { $0.requiringGrad() }
                let y = Autograd.recordingGradients {
                    ps[0].relu().conv2d(ps[1], stride: (stride, stride), padding: (1, 1), groups: 6).conv2d(ps[2])
                }
                (y * out).sum().backward()
                return [y.scalars.map(\.bitPattern)] + ps.map { $0.grad!.scalars.map(\.bitPattern) }
            }
            for sparse in [false, true] {
                let what = "stride \(stride)\(sparse ? ", packed" : "")"
                let (kept, keptTape) = atLevel(1, sparse: sparse, run)
                let (recomputed, tape) = atLevel(2, sparse: sparse, run)
                XCTAssertEqual(recomputed, kept, "\(what): the output and every gradient, bit for bit")
                // The depthwise output, 6 channels per image, is off the tape.
                let map = 2 * 6 * (stride == 1 ? 13 * 11 : 7 * 6) * 4
                let keptBytes = keptTape["conv2d"]?.bytes ?? 0, bytes = tape["conv2d"]?.bytes ?? 0
                XCTAssertGreaterThanOrEqual(keptBytes - bytes, map, "\(what): \(keptTape) against \(tape)")
                // and backward ran the depthwise convolution once more
                let (_, log) = ConvolutionKernelLog.record { atLevel(2, sparse: sparse, run) }
                let calls = log.filter { $0.entry.pass == "forward" && $0.entry.weight == dw.shape }.reduce(0) { $0 + $1.count }
                XCTAssertEqual(calls, 2, "\(what): \(log)")
            }
        }
    }

    /// A squeeze-and-excitation product `y * sigmoid(...)` whose `y` is a frozen norm's output
    /// after a widening 1x1 convolution (an SE-ResNeXt block's `conv3`, `bn3`): the product
    /// keeps the norm's recipe instead of `y`, the same bits; backward runs the convolution once
    /// more, not twice (the norm's backward copies the map the product's recipe wrote).
    func testSqueezeExcitationProductKeepsTheNormsRecipe() {
        let input = uniform([2, 4, 9, 7], seed: 61), conv3 = uniform([8, 4, 1, 1], -0.5, 0.5, seed: 62)
        let g = uniform([8], 0.5, 1.5, seed: 63), b = uniform([8], -0.2, 0.2, seed: 64)
        let stats = (mean: uniform([8], -0.1, 0.1, seed: 65), variance: uniform([8], 0.5, 1.5, seed: 66))
        let fc = uniform([8, 8, 1, 1], -0.5, 0.5, seed: 67), out = uniform([2, 8, 9, 7], seed: 68)
        func run() -> [[UInt32]] {
            let ps = [input, conv3, g, b, fc].map { $0.requiringGrad() }
            let y = Autograd.recordingGradients { () -> Tensor in
                let n = ps[0].conv2d(ps[1]).batchNorm2d(weight: ps[2], bias: ps[3], mean: stats.mean, variance: stats.variance)
                return n * n.globalAvgPool2d().conv2d(ps[4]).sigmoid()
            }
            (y * out).sum().backward()
            return [y.scalars.map(\.bitPattern)] + ps.map { $0.grad!.scalars.map(\.bitPattern) }
        }
        let (kept, keptTape) = atLevel(0, sparse: false, run)
        for level in [1, 2] {
            let (recomputed, tape) = atLevel(level, sparse: false, run)
            XCTAssertEqual(recomputed, kept, "level \(level): the output and every gradient, bit for bit")
            let map = 2 * 8 * 9 * 7 * 4
            XCTAssertGreaterThanOrEqual(keptTape["mul"]?.bytes ?? 0, map, "\(keptTape)")
            XCTAssertLessThan(tape["mul"]?.bytes ?? 0, map, "level \(level): \(tape)")
        }
        let (_, log) = ConvolutionKernelLog.record { atLevel(2, sparse: false, run) }
        let calls = log.filter { $0.entry.pass == "forward" && $0.entry.weight == conv3.shape }.reduce(0) { $0 + $1.count }
        XCTAssertEqual(calls, 2, "the widening convolution in forward and once in backward: \(log)")
    }
}
