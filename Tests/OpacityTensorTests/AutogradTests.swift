import Foundation
import OpacityTensor
import XCTest

/// The tape: accumulation, detaching, inference mode, graph release, shared inputs.
final class AutogradTests: XCTestCase {
    func testGradientsAccumulateOverTwoBackwardCalls() {
        let x = Tensor(shape: [3], scalars: [1, 2, 3]).requiringGrad()
        (x * 2).sum().backward()
        XCTAssertEqual(x.grad?.scalars, [2, 2, 2])
        (x * x).sum().backward()
        XCTAssertEqual(x.grad?.scalars, [4, 6, 8], "second backward adds 2x")

        let p = Parameter(Tensor(shape: [2], scalars: [1, -1]))
        (p.tensor * 3).sum().backward()
        (p.tensor * p.tensor).sum().backward()
        XCTAssertEqual(p.grad?.scalars, [5, 1])
        p.zeroGrad()
        XCTAssertNil(p.grad)
        (p.tensor * 3).sum().backward()
        XCTAssertEqual(p.grad?.scalars, [3, 3])
    }

    func testSharedInputsAndDiamonds() {
        let x = uniform([5], 0.2, 1, seed: 1)
        checkGradients("x * x", [x]) { $0[0] * $0[0] }
        checkGradients("diamond z*z + z with z = exp(x)", [x], eps: 1e-3) { t in
            let z = t[0].exp()
            return z * z + z
        }
        checkGradients("deep chain", [x], eps: 1e-2) { t in
            var y = t[0]
            for _ in 0..<12 { y = (y.exp() + 1).log() - 0.5 }  // softplus chain
            return y
        }
    }

    /// A part of the graph differentiated on its own, through leaves standing for its inputs,
    /// then the rest seeded with the leaves' gradients: the same gradients as one walk; each
    /// leaf's gradient is moved into the walk, once, and two leaves of one tensor add up.
    func testBackwardTakingTheGradientsOfLeaves() {
        let x = Tensor(shape: [3], scalars: [1, 2, 3]).requiringGrad()
        let y = x * x, w = x.exp()
        let ly = y.requiringGrad(), lw = w.requiringGrad(), ly2 = y.requiringGrad()
        (ly * 3).sum().backward()
        (ly * lw).sum().backward()
        (ly2 * 2).sum().backward()
        for (g, e) in zip(ly.grad!.scalars, w.scalars) { XCTAssertEqual(g, 3 + e) }
        let untracked = Tensor(shape: [3], repeating: 1)
        Autograd.backward([y, w, y, untracked], takingGradientsOf: [ly, lw, ly2, untracked])
        XCTAssertNil(ly.grad, "taken")
        XCTAssertNil(lw.grad, "taken")
        // one walk: d/dx of sum(3 y + y w + 2 y) with y = x^2, w = e^x
        let expected = x.scalars.map { v -> Float in
            let e = Float(Foundation.exp(Double(v)))
            return 3 * 2 * v + (2 * v * e + v * v * e) + 2 * 2 * v
        }
        for (g, e) in zip(x.grad!.scalars, expected) { XCTAssertEqual(g, e, accuracy: 1e-4 * abs(e)) }
        // nothing left to take: a second call changes nothing
        Autograd.backward([y, w], takingGradientsOf: [ly, lw])
        for (g, e) in zip(x.grad!.scalars, expected) { XCTAssertEqual(g, e, accuracy: 1e-4 * abs(e)) }
    }

    func testVeryDeepGraphDoesNotOverflowTheStack() {
        let x = Tensor(shape: [1], scalars: [1]).requiringGrad()
        var y = x
        for _ in 0..<100_000 { y = y + 0 }
        y.sum().backward()
        XCTAssertEqual(x.grad?.scalars, [1])
    }

    func testDetachedCutsTheGraph() {
        let x = Tensor(shape: [2], scalars: [1, 2]).requiringGrad()
        let d = (x * 2).detached()
        XCTAssertFalse(d.requiresGrad)
        XCTAssertFalse((d * 3).requiresGrad)
        let y = x * d  // gradient flows only through the first factor
        y.sum().backward()
        XCTAssertEqual(x.grad?.scalars, [2, 4])
    }

    func testInferenceRecordsNothing() {
        let p = Parameter(uniform([3], seed: 2))
        let x = uniform([3], seed: 3).requiringGrad()
        XCTAssertTrue(Autograd.isRecording)
        let y = Autograd.inference { () -> Tensor in
            XCTAssertFalse(Autograd.isRecording)
            XCTAssertFalse(p.tensor.requiresGrad)
            return ((x * p.tensor).exp() + x).sum()
        }
        XCTAssertFalse(y.requiresGrad, "no graph is built in inference mode")
        XCTAssertTrue(Autograd.isRecording, "recording resumes after inference")
        let conv = Conv2d(1, 2, kernel: 3)
        let out = Autograd.inference { conv(uniform([1, 1, 5, 5], seed: 4)) }
        XCTAssertFalse(out.requiresGrad)
        XCTAssertTrue((x * p.tensor).requiresGrad)
    }

    func testBackwardReleasesTheGraph() {
        weak var activation: TensorStorage?
        var loss: Tensor
        do {
            let x = uniform([1000], seed: 5).requiringGrad()
            let hidden = x.exp()  // exp keeps its output for the backward pass
            activation = hidden.storage
            loss = (hidden * 2).sum()
        }
        XCTAssertNotNil(activation, "the graph holds the activation until backward")
        loss.backward()
        XCTAssertNil(activation, "backward frees the activations it no longer needs")
        _ = loss
    }

    func testInferenceFreesActivationsAsItGoes() {
        weak var first: TensorStorage?
        let conv = Conv2d(2, 2, kernel: 3, padding: 1)
        let out = Autograd.inference { () -> Tensor in
            let h = conv(uniform([1, 2, 16, 16], seed: 6)).relu()
            first = h.storage
            return conv(h).sum()
        }
        XCTAssertNil(first, "nothing keeps an intermediate activation alive in inference mode")
        XCTAssertFalse(out.requiresGrad)
    }

    func testBackwardWithSeedAndShapeErrors() {
        let x = Tensor(shape: [2, 2], scalars: [1, 2, 3, 4]).requiringGrad()
        (x * x).backward(Tensor(shape: [2, 2], scalars: [1, 0, 0, 1]))
        XCTAssertEqual(x.grad?.scalars, [2, 0, 0, 8])
        let e = ShapeError(op: "add", "shapes [2, 3] and [3, 2] differ")
        XCTAssertEqual(e.description, "add: shapes [2, 3] and [3, 2] differ")
    }
}
