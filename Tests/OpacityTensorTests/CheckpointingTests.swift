import OpacityTensor
import XCTest

/// Activation checkpointing (``Autograd/checkpoint(_:_:)``): the gradients equal those of
/// the same network without it, parameters get theirs once, stateful layers replay, and the
/// forward pass keeps less.
final class CheckpointingTests: XCTestCase {
    /// A small convolutional network: stem, two residual-style blocks, a shared 1x1 head used
    /// on two maps, dropout. Built from one seed so two copies are equal.
    final class Net: Module {
        let stem: ConvNormAct
        let block1: ConvNormAct, block2: ConvNormAct
        let shared: Conv2d
        let dropout: Dropout

        init(seed: UInt64) {
            let (s, b1, b2, sh, d) = Initializer.withSeed(seed) {
                (ConvNormAct(2, 6, kernel: 3, padding: 1), ConvNormAct(6, 6, kernel: 3, padding: 1),
                 ConvNormAct(6, 6, kernel: 3, stride: 2, padding: 1), Conv2d(6, 3, kernel: 1), Dropout(0.3))
            }
            stem = s; block1 = b1; block2 = b2; shared = sh; dropout = d
            super.init()
            // non-trivial batch-norm affine parameters and running statistics
            for (i, bn) in [stem.norm, block1.norm, block2.norm].enumerated() {
                bn.weight.value = uniform(bn.weight.shape, 0.5, 1.5, seed: seed + UInt64(10 + i))
                bn.bias.value = uniform(bn.bias.shape, -0.2, 0.2, seed: seed + UInt64(20 + i))
                bn.runningMean.value = uniform(bn.runningMean.value.shape, -0.1, 0.1, seed: seed + UInt64(30 + i))
                bn.runningVar.value = uniform(bn.runningVar.value.shape, 0.8, 1.2, seed: seed + UInt64(40 + i))
            }
        }

        /// `segments`: run the stem, each block and each use of the shared head as a segment.
        func loss(_ x: Tensor, segments: Bool) -> Tensor {
            func run(_ t: Tensor, _ f: @escaping (Tensor) -> Tensor) -> Tensor { segments ? Autograd.checkpoint(t, f) : f(t) }
            let a = run(x) { self.stem($0) }
            let b = run(a) { $0 + self.block1($0) }
            let c = run(b) { self.block2($0) }
            // one segment of two inputs and two outputs, with dropout inside
            let heads: [Tensor]
            if segments {
                heads = Autograd.checkpoint([b, c]) { t in [self.dropout(self.shared(t[0])), self.shared(t[1]).relu()] }
            } else {
                heads = [dropout(shared(b)), shared(c).relu()]
            }
            // the shared layer once more outside any segment
            let d = shared(c)
            return (heads[0] * heads[0]).sum() + heads[1].sum() * 0.5 + (d * heads[1]).sum()
        }
    }

    private func gradients(_ net: Net) -> [String: [Float]] {
        Dictionary(uniqueKeysWithValues: net.namedParameters().map { ($0.0, $0.1.grad?.scalars ?? []) })
    }

    /// Compares two runs' gradients: equal bit for bit, or within `relative` of the larger
    /// magnitude (plus a tiny absolute term for values near zero).
    private func assertSame(_ a: [Float], _ b: [Float], relative: Float, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        guard a.count == b.count else { return }
        let scale = a.map(abs).max() ?? 0
        for i in a.indices where abs(a[i] - b[i]) > relative * max(abs(a[i]), abs(b[i])) + 1e-7 * scale {
            XCTFail("\(what)[\(i)]: \(a[i]) with checkpointing, \(b[i]) without", file: file, line: line)
            return
        }
    }

    func testGradientsEqualTheUncheckpointedOnes() {
        for frozen in [true, false] {
            let plain = Net(seed: 7), checked = Net(seed: 7)
            plain.freezeBatchNorm(frozen)
            checked.freezeBatchNorm(frozen)
            let x0 = uniform([2, 2, 9, 9], seed: 3)
            let x1 = x0.requiringGrad(), x2 = x0.requiringGrad()
            var readyPlain: [ObjectIdentifier: Int] = [:], readyChecked: [ObjectIdentifier: Int] = [:]
            var gradAtReady: [ObjectIdentifier: [Float]] = [:]
            let l1 = plain.loss(x1, segments: false)
            l1.backward(nil) { readyPlain[ObjectIdentifier($0), default: 0] += 1 }
            let l2 = checked.loss(x2, segments: true)
            XCTAssertEqual(l1.scalar, l2.scalar, "frozen \(frozen): the checkpointed forward gives the same loss")
            l2.backward(nil) { p in
                readyChecked[ObjectIdentifier(p), default: 0] += 1
                gradAtReady[ObjectIdentifier(p)] = p.grad?.scalars
            }
            XCTAssertEqual(x1.grad?.scalars, x2.grad?.scalars, "frozen \(frozen): input gradient")
            let g1 = gradients(plain), g2 = gradients(checked)
            XCTAssertEqual(Set(g1.keys), Set(g2.keys))
            for (name, g) in g1.sorted(by: { $0.key < $1.key }) {
                XCTAssertFalse(g.isEmpty, "\(name) got a gradient")
                // `shared` is used in a segment and outside it: its sum may round differently
                if name.hasPrefix("shared") {
                    assertSame(g2[name]!, g, relative: 1e-6, "frozen \(frozen): \(name)")
                } else {
                    XCTAssertEqual(g2[name], g, "frozen \(frozen): \(name) bit for bit")
                }
            }
            // every parameter reported ready once, with its complete gradient
            let params = checked.namedParameters().map(\.1)
            for p in params {
                XCTAssertEqual(readyChecked[ObjectIdentifier(p)], 1, "frozen \(frozen): parameterReady once per parameter")
                XCTAssertEqual(gradAtReady[ObjectIdentifier(p)], p.grad?.scalars, "frozen \(frozen): complete when ready")
            }
            XCTAssertEqual(readyPlain.count, readyChecked.count)
            if !frozen {
                // the running statistics moved once, as without checkpointing
                for (a, b) in zip([plain.stem.norm, plain.block1.norm, plain.block2.norm], [checked.stem.norm, checked.block1.norm, checked.block2.norm]) {
                    XCTAssertEqual(a.runningMean.value.scalars, b.runningMean.value.scalars, "running mean moved once")
                    XCTAssertEqual(a.runningVar.value.scalars, b.runningVar.value.scalars, "running variance moved once")
                }
            }
            // the dropout stream advanced once: the next masks agree
            let probe = Tensor.ones([64])
            XCTAssertEqual(plain.dropout(probe).scalars, checked.dropout(probe).scalars, "frozen \(frozen): dropout stream advanced once")
        }
    }

    func testFiniteDifferences() {
        let x = uniform([2, 3, 5, 5], seed: 11), y = uniform([2, 3, 5, 5], seed: 12)
        let w = uniform([4, 3, 3, 3], -0.5, 0.5, seed: 13)
        checkGradients("checkpoint of a convolution, a product and exp", [x, y, w], eps: 1e-2) { t in
            let outs = Autograd.checkpoint(t) { u in
                let c = u[0].conv2d(u[2], padding: (1, 1))
                return [(c * 0.3).exp(), (u[0] * u[1]).sum()]
            }
            return outs[0] * outs[1]
        }
        // one input used twice, an output that is the input itself, an output not used
        checkGradients("checkpoint passing an input through", [x]) { t in
            let outs = Autograd.checkpoint([t[0], t[0]]) { u in [u[0] * u[1], u[0], u[1].exp()] }
            return outs[0] + outs[1] * 2
        }
    }

    func testParametersReadInsideGetGradientsOnce() {
        let conv = Initializer.withSeed(5) { Conv2d(3, 3, kernel: 3, padding: 1) }
        let x = uniform([1, 3, 6, 6], seed: 6)
        // the same layer in two segments and outside: 3 uses
        func loss(_ segments: Bool) -> Tensor {
            let f: (Tensor) -> Tensor = { conv($0).relu() }
            let a = segments ? Autograd.checkpoint(x, f) : f(x)
            let b = segments ? Autograd.checkpoint(a, f) : f(a)
            return (conv(b) * b).sum()
        }
        loss(false).backward()
        let w = conv.weight.grad!.scalars, b = conv.bias!.grad!.scalars
        conv.zeroGrad()
        loss(true).backward()
        assertSame(conv.weight.grad!.scalars, w, relative: 1e-6, "weight")
        assertSame(conv.bias!.grad!.scalars, b, relative: 1e-6, "bias")
        // a second step accumulates as usual
        loss(true).backward()
        assertSame(conv.weight.grad!.scalars, w.map { 2 * $0 }, relative: 1e-6, "weight after two passes")
    }

    func testForwardKeepsOnlyTheInputs() {
        // the maps whole, as this test counts them (packed ReLU outputs are about half as large)
        let sparse = Autograd.sparseActivations
        Autograd.sparseActivations = false
        defer { Autograd.sparseActivations = sparse }
        let convs = Initializer.withSeed(9) { (0..<6).map { _ in Conv2d(8, 8, kernel: 3, padding: 1) } }
        let x = uniform([2, 8, 32, 32], seed: 10).requiringGrad()
        let map = 2 * 8 * 32 * 32 * 4
        func kept(_ segments: Bool) -> Int {
            let before = TensorMemory.liveBytes
            var y: Tensor
            if segments {
                y = Autograd.checkpoint(x) { t in convs.reduce(t) { $1($0).relu() } }
            } else {
                y = convs.reduce(x) { $1($0).relu() }
            }
            let live = TensorMemory.liveBytes - before
            y.sum().backward()
            y = Tensor(0)
            return live
        }
        let plain = kept(false), checked = kept(true)
        // without: every convolution's input (the previous ReLU's output) and the last output,
        // 7 maps; with: the output (the input is the caller's)
        XCTAssertGreaterThanOrEqual(plain, 6 * map, "plain forward keeps the activations")
        XCTAssertLessThanOrEqual(checked, 2 * map, "checkpointed forward keeps the output (and the workspace), not the activations")
    }

    func testInferenceAndUntrackedInputsRecordNothing() {
        let x = uniform([4], seed: 1)
        let y = Autograd.checkpoint(x) { $0.exp() }
        XCTAssertFalse(y.requiresGrad, "no tracked input, no parameter: nothing to record")
        XCTAssertEqual(y.scalars, x.exp().scalars)
        let p = Parameter(uniform([4], seed: 2))
        let z = Autograd.inference { Autograd.checkpoint(x) { $0 * p.tensor } }
        XCTAssertFalse(z.requiresGrad)
        let t = Autograd.checkpoint(x) { $0 * p.tensor }
        XCTAssertTrue(t.requiresGrad, "a parameter read inside makes the output tracked")
        t.sum().backward()
        XCTAssertEqual(p.grad?.scalars, x.scalars)
        XCTAssertFalse(Autograd.isRecomputing)
    }
}
