import OpacityTensor
import XCTest

/// The shared conv + norm (+ act) unit: its three orders equal the composition of their
/// parts bit for bit (the fused batch norm + ReLU included), in every mode and for the
/// gradients; its keys name the parts nested or inline; modes reach an inline unit.
final class ConvNormActTests: XCTestCase {
    /// A batch norm with non-trivial statistics and affine parameters.
    func randomize(_ bn: BatchNorm2d, seed: UInt64) {
        let c = bn.weight.shape[0]
        bn.weight.value = uniform([c], 0.5, 1.5, seed: seed)
        bn.bias.value = uniform([c], -0.3, 0.3, seed: seed + 1)
        bn.runningMean.value = uniform([c], -0.2, 0.2, seed: seed + 2)
        bn.runningVar.value = uniform([c], 0.5, 2, seed: seed + 3)
    }

    /// The unit's output and gradients (input, every parameter) against the same computation
    /// written out with its parts, in evaluation, frozen and training mode.
    func checkAgainstComposition(order: ConvNormAct.Order, activation: ConvNormAct.Activation, line: UInt = #line) {
        let (cin, cout) = (3, 4)
        let unit = Initializer.withSeed(5) {
            ConvNormAct(cin, cout, kernel: 3, stride: 2, padding: 1, eps: 1e-3, activation: activation, order: order)
        }
        randomize(unit.norm, seed: 10)
        let conv = unit.conv as! Conv2d
        let relu = activation == .relu
        func reference(_ x: Tensor) -> Tensor {
            let bn = unit.norm
            switch order {
            case .convNormAct:
                let y = bn(conv(x))
                return relu ? y.relu() : y
            case .actConvNorm: return bn(conv(relu ? x.relu() : x))
            case .normActConv:
                let y = bn(x)
                return conv(relu ? y.relu() : y)
            }
        }
        for mode in ["eval", "frozen", "train"] {
            unit.train(mode != "eval")
            unit.freezeBatchNorm(mode == "frozen")
            let (mean, variance) = (unit.norm.runningMean.value.scalars, unit.norm.runningVar.value.scalars)
            let x = uniform([2, cin, 7, 6], seed: 3)
            func run(_ f: (Tensor) -> Tensor) -> (Tensor, [[UInt32]]) {
                unit.norm.runningMean.value = Tensor(shape: [mean.count], scalars: mean)
                unit.norm.runningVar.value = Tensor(shape: [variance.count], scalars: variance)
                let xv = x.requiringGrad()
                unit.zeroGrad()
                let y = f(xv)
                y.backward(uniform(y.shape, seed: 9))
                let grads = [xv.grad] + unit.parameters.map(\.grad)
                return (y, grads.map { $0?.scalars.map(\.bitPattern) ?? [] })
            }
            let (got, gotGrads) = run { unit($0) }
            let (want, wantGrads) = run(reference)
            XCTAssertEqual(got.shape, want.shape, "\(order) \(activation) \(mode)", line: line)
            // +0 and -0 may differ between max(y, 0) in the fused pass and relu(); compare values
            XCTAssertEqual(got.scalars, want.scalars, "\(order) \(activation) \(mode): output", line: line)
            XCTAssertEqual(gotGrads, wantGrads, "\(order) \(activation) \(mode): gradients", line: line)
            XCTAssertTrue(gotGrads.allSatisfy { !$0.isEmpty }, "every parameter and the input get a gradient", line: line)
        }
    }

    func testEveryOrderEqualsItsComposition() {
        for order in [ConvNormAct.Order.convNormAct, .actConvNorm, .normActConv] {
            for activation in [ConvNormAct.Activation.relu, .none] { checkAgainstComposition(order: order, activation: activation) }
        }
    }

    func testNormActWithoutConvolution() {
        let unit = ConvNormAct.normAct(4, eps: 1e-3)
        randomize(unit.norm, seed: 20)
        unit.eval()
        let x = uniform([1, 4, 3, 3], seed: 21)
        XCTAssertEqual(unit(x).scalars, unit.norm(x).relu().scalars)
        XCTAssertEqual(unit.namedParameters().map(\.0), ["bn.weight", "bn.bias"])
        XCTAssertEqual(unit.norm.eps, 1e-3)
    }

    func testKeysNestedAndInline() {
        final class Block: Module, Layer {
            let unit1 = ConvNormAct(2, 4, kernel: 3, padding: 1, keys: .inline(conv: "conv1", norm: "bn1"))
            let downsample = ConvNormAct(2, 4, kernel: 1, activation: .none, keys: .nested(conv: "0", norm: "1"))
            let pre = ConvNormAct(4, 4, kernel: 1, order: .normActConv)
            func callAsFunction(_ x: Tensor) -> Tensor { pre(unit1(x)) + downsample(x) }
        }
        let b = Block()
        XCTAssertEqual(b.namedParameters().map(\.0), [
            "conv1.weight", "bn1.weight", "bn1.bias", "downsample.0.weight", "downsample.1.weight", "downsample.1.bias",
            "pre.bn.weight", "pre.bn.bias", "pre.conv.weight",
        ])
        XCTAssertEqual(b.namedBuffers().map(\.0), [
            "bn1.running_mean", "bn1.running_var", "downsample.1.running_mean", "downsample.1.running_var",
            "pre.bn.running_mean", "pre.bn.running_var",
        ])
        // an inline unit adds no module path of its own; its parts are the parent's children
        XCTAssertEqual(b.namedModules().map(\.0), ["", "conv1", "bn1", "downsample", "downsample.0", "downsample.1", "pre", "pre.bn", "pre.conv"])
        // modes reach the inline unit itself too
        b.eval()
        XCTAssertFalse(b.unit1.isTraining)
        XCTAssertFalse(b.unit1.norm.isTraining)
        b.train()
        XCTAssertTrue(b.unit1.isTraining)
        XCTAssertTrue(b.unit1.norm.isTraining)
        // a state dict round-trips through the names
        let state = Dictionary(uniqueKeysWithValues: b.stateDict().map { ($0.0, $0.1) })
        let other = Initializer.withSeed(99) { Block() }
        XCTAssertNoThrow(try other.load(state))
        XCTAssertEqual(other.unit1.norm.weight.value.scalars, b.unit1.norm.weight.value.scalars)
    }
}
