import Foundation
import OpacityTensor
import XCTest

/// `relu()` and `+` consume their (left) operand and write over it when nothing else holds its
/// storage: the values and gradients are those of the out-of-place path, and a tensor the
/// caller still uses is never changed.
final class InPlaceTests: XCTestCase {
    func testReluOfATemporaryReusesItsStorage() {
        let x = uniform([2, 3, 17, 5], seed: 1)
        let expected = x.scalars.map { $0 < 0 ? 0 : $0 }
        let t = x * 2  // a fresh tensor, held only here
        let id = ObjectIdentifier(t.storage)
        let y = (consume t).relu()
        XCTAssertEqual(ObjectIdentifier(y.storage), id, "relu wrote over its temporary operand")
        XCTAssertEqual(y.scalars, expected.map { $0 * 2 })
    }

    func testReluKeepsAnOperandTheCallerStillUses() {
        let x = uniform([4, 33], seed: 2)
        let before = x.scalars
        let y = x.relu()
        XCTAssertNotEqual(ObjectIdentifier(y.storage), ObjectIdentifier(x.storage))
        XCTAssertEqual(x.scalars, before, "the operand is unchanged")
        XCTAssertEqual(y.scalars, before.map { $0 < 0 ? 0 : $0 })
    }

    func testSumOfATemporaryReusesItsStorageAndKeepsTheOther() {
        let a = uniform([3, 5, 7], seed: 3), b = uniform([3, 5, 7], seed: 4)
        let bBefore = b.scalars
        let expected = zip(a.scalars, b.scalars).map { $0 * 3 + $1 }
        let t = a * 3
        let id = ObjectIdentifier(t.storage)
        let s = (consume t) + b
        XCTAssertEqual(ObjectIdentifier(s.storage), id, "+ wrote over its temporary left operand")
        XCTAssertEqual(s.scalars, expected)
        XCTAssertEqual(b.scalars, bBefore, "the right operand is unchanged")
        // A left operand still in use, and a broadcast (whose result has another shape): new tensors.
        let kept = a + b
        XCTAssertNotEqual(ObjectIdentifier(kept.storage), ObjectIdentifier(a.storage))
        let row = uniform([7], seed: 5)
        let wide = (row * 1) + a
        XCTAssertEqual(wide.shape, [3, 5, 7])
        XCTAssertEqual(wide.scalars, zip(row.scalars.repeated(15), a.scalars).map { $0 + $1 })
    }

    /// Frozen batch norm keeps only its input for backward (its ReLU mask is recomputed from
    /// it), so in training a residual block's `(bn(conv(x)) + shortcut).relu()` writes the sum
    /// over the norm's output, and the gradients are those of the out-of-place path.
    func testFrozenBatchNormOutputIsFreeForTheResidualSum() {
        let x = uniform([2, 4, 9, 11], seed: 41), shortcut = uniform([2, 4, 9, 11], seed: 42)
        let w = Parameter(uniform([4], 0.5, 1.5, seed: 43)), b = Parameter(uniform([4], seed: 44))
        let mean = uniform([4], seed: 45), variance = uniform([4], 0.5, 2, seed: 46)
        let input = Parameter(x)
        func run(inPlace: Bool) -> (values: [Float], grads: [[Float]], reused: Bool) {
            for p in [input, w, b] { p.grad = nil }
            var reused = false
            let y = Autograd.recordingGradients { () -> Tensor in
                let n = (input.tensor * 1).batchNorm2d(weight: w.tensor, bias: b.tensor, mean: mean, variance: variance, relu: true)
                let z = n.batchNorm2d(weight: w.tensor, bias: b.tensor, mean: mean, variance: variance)
                guard inPlace else { return (z * 1 + shortcut).relu() }
                let id = ObjectIdentifier(z.storage)
                let sum = (consume z) + shortcut
                reused = ObjectIdentifier(sum.storage) == id
                return sum.relu()
            }
            (y * y).sum().backward()
            return (y.scalars, [input, w, b].map { $0.grad!.scalars }, reused)
        }
        let fused = run(inPlace: true), separate = run(inPlace: false)
        XCTAssertTrue(fused.reused, "+ wrote over the batch norm's output, which backward does not keep")
        XCTAssertEqual(fused.values, separate.values)
        XCTAssertEqual(fused.grads, separate.grads)
        // (the whole input: its packed form, ``SparseActivation``, is tested on its own)
        let sparse = Autograd.sparseActivations
        Autograd.sparseActivations = false
        defer { Autograd.sparseActivations = sparse }
        let (_, saved) = Autograd.measuringSavedTensors { () -> Tensor in
            let l = Autograd.recordingGradients {
                (input.tensor * 1).batchNorm2d(weight: w.tensor, bias: b.tensor, mean: mean, variance: variance, relu: true).sum()
            }
            l.backward()
            return l
        }
        // the input and the [4, C] per-channel coefficients; not the output
        XCTAssertEqual(saved["batchNorm2d(eval)+relu"]?.bytes, x.count * 4 + 4 * 4 * 4, "only the input is kept: \(saved)")
    }

    /// Finite differences through the in-place paths in training: `(x * 2).relu()` and
    /// `(x * 3 + y * 0.05).relu()` write over their temporaries while autograd records. (Inputs
    /// keep every ReLU input at least 0.005 from its kink, ten times the finite-difference step.)
    func testGradientsThroughInPlaceOperations() {
        let x = awayFromZero([2, 3, 4, 5], seed: 6), y = awayFromZero([2, 3, 4, 5], seed: 7)
        checkGradients("relu of a temporary", [x]) { ($0[0] * 2).relu() }
        checkGradients("sum of temporaries, then relu", [x, y]) { ($0[0] * 3 + $0[1] * 0.05).relu() }
        checkGradients("a residual block's tail", [x, y]) { (($0[0] * 2).relu() + $0[1] * 0.05).relu() }
    }

    /// A tensor a backward pass saved (here the product's operands, which its gradient reads) is
    /// not written over by a later `+` or `relu()`.
    func testSavedTensorsAreNotOverwritten() {
        let a = Parameter(uniform([2, 8], seed: 8)), b = Parameter(uniform([2, 8], seed: 9))
        let loss = Autograd.recordingGradients { () -> Tensor in
            let s = a.tensor + b.tensor  // fresh, then saved by the product below
            let p = s * s
            return ((consume s) + p).relu().sum()  // s is consumed but still held by the product's backward
        }
        loss.backward()
        let s = zip(a.value.scalars, b.value.scalars).map { $0 + $1 }
        // d/ds relu(s^2 + s) = (2s + 1) where s^2 + s > 0.
        let expected = s.map { $0 * $0 + $0 > 0 ? 2 * $0 + 1 : 0 }
        assertClose(a.grad!, expected.map(Double.init), "gradient of a")
        assertClose(b.grad!, expected.map(Double.init), "gradient of b")
    }
}

extension Array {
    fileprivate func repeated(_ times: Int) -> [Element] { (0..<times).flatMap { _ in self } }
}
