import OpacityTensor
import XCTest

// A small ResNet-like model with timm's names, built the way plugins build theirs.

final class TestBlock: Module, Layer {
    let conv1: Conv2d
    let bn1: BatchNorm2d
    let conv2: Conv2d
    let bn2: BatchNorm2d
    let downsample: Sequential?

    init(_ cin: Int, _ cout: Int, stride: Int) {
        conv1 = Conv2d(cin, cout, kernel: 3, stride: stride, padding: 1, bias: false)
        bn1 = BatchNorm2d(cout)
        conv2 = Conv2d(cout, cout, kernel: 3, padding: 1, bias: false)
        bn2 = BatchNorm2d(cout)
        downsample = stride == 1 && cin == cout ? nil : Sequential(Conv2d(cin, cout, kernel: 1, stride: stride, bias: false),
                                                                    BatchNorm2d(cout))
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let y = bn2(conv2(bn1(conv1(x)).relu()))
        return (y + (downsample.map { $0(x) } ?? x)).relu()
    }
}

final class SqueezeExcite: Module, Layer {
    let fc1: Conv2d
    let fc2: Conv2d
    init(_ c: Int) {
        fc1 = Conv2d(c, c / 2, kernel: 1)
        fc2 = Conv2d(c / 2, c, kernel: 1)
    }
    func callAsFunction(_ x: Tensor) -> Tensor { x * fc2(fc1(x.globalAvgPool2d()).relu()).sigmoid() }
}

final class TinyResNet: Module, Layer {
    let conv1 = Conv2d(1, 4, kernel: 3, padding: 1, bias: false)
    let bn1 = BatchNorm2d(4)
    let layer1: [TestBlock]
    let layer2: [TestBlock]
    @Named("se_module") var squeeze = SqueezeExcite(8)
    @Named("fc") var classifier: Linear? = Linear(8, 3)
    let drop = Dropout(0.5, seed: 1)
    var _notAChild = Linear(2, 2)  // underscore-prefixed storage is skipped

    override init() {
        layer1 = [TestBlock(4, 4, stride: 1), TestBlock(4, 4, stride: 1)]
        layer2 = [TestBlock(4, 8, stride: 2)]
        super.init()
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var y = bn1(conv1(x)).relu()
        for b in layer1 { y = b(y) }
        for b in layer2 { y = b(y) }
        y = squeeze(y)
        return classifier!(drop(y.globalAvgPool2d().flattened()))
    }
}

/// Hierarchical names, renaming, loading, modes.
final class ModuleTests: XCTestCase {
    func testHierarchicalNamesFollowTimm() {
        let m = TinyResNet()
        let params = m.namedParameters().map(\.0)
        XCTAssertEqual(params, [
            "conv1.weight", "bn1.weight", "bn1.bias",
            "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
            "layer1.0.conv2.weight", "layer1.0.bn2.weight", "layer1.0.bn2.bias",
            "layer1.1.conv1.weight", "layer1.1.bn1.weight", "layer1.1.bn1.bias",
            "layer1.1.conv2.weight", "layer1.1.bn2.weight", "layer1.1.bn2.bias",
            "layer2.0.conv1.weight", "layer2.0.bn1.weight", "layer2.0.bn1.bias",
            "layer2.0.conv2.weight", "layer2.0.bn2.weight", "layer2.0.bn2.bias",
            "layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight", "layer2.0.downsample.1.bias",
            "se_module.fc1.weight", "se_module.fc1.bias", "se_module.fc2.weight", "se_module.fc2.bias",
            "fc.weight", "fc.bias",
        ])
        let buffers = m.namedBuffers().map(\.0)
        XCTAssertTrue(buffers.contains("bn1.running_mean"))
        XCTAssertTrue(buffers.contains("bn1.running_var"))
        XCTAssertTrue(buffers.contains("layer2.0.downsample.1.running_var"))
        XCTAssertEqual(buffers.count, 2 * 8)
        let modules = m.namedModules().map(\.0)
        XCTAssertEqual(modules.first, "")
        XCTAssertTrue(modules.contains("layer1.1.bn2"))
        XCTAssertTrue(modules.contains("se_module"))
        XCTAssertTrue(modules.contains("drop"))
        XCTAssertFalse(modules.contains { $0.contains("notAChild") })
        XCTAssertEqual(m.stateDict().count, params.count + buffers.count)
        XCTAssertEqual(m.parameterCount, m.parameters.reduce(0) { $0 + $1.value.count })
        XCTAssertEqual(m(uniform([2, 1, 8, 8], seed: 1)).shape, [2, 3])
    }

    func testChildrenHeldAsExistentialsAndOptionalArrays() {
        final class Holder: Module {
            let single: any Layer = Conv2d(1, 2, kernel: 1)
            let list: [any Layer] = [Linear(2, 2), ReLU(), Linear(2, 3, bias: false)]
            let maybe: [Linear]? = [Linear(3, 1)]
            let none: Linear? = nil
            let params: Parameter? = Parameter(.zeros([2]))
        }
        // Own parameters first, then children in declaration order (as PyTorch's state_dict).
        XCTAssertEqual(Holder().namedParameters().map(\.0), [
            "params", "single.weight", "single.bias", "list.0.weight", "list.0.bias", "list.2.weight", "maybe.0.weight",
            "maybe.0.bias",
        ])
    }

    /// `@Named` children declared without a value: assigned in `init` after `super.init()`
    /// (or through the storage before it), optional ones `nil` until assigned, arrays named
    /// element by element with `each:`.
    func testNamedChildrenDeclaredWithoutAValue() throws {
        final class Late: Module, Layer {
            let conv1: Conv2d
            @Named("se_module") var squeeze: SqueezeExcite
            @Named("early") var early: Linear
            @Named("c1x1_w_s1") var projection: Conv2d?
            @Named("c1x1_w_s2") var absent: Conv2d?
            @Named(each: { "block\($0 + 1)" }) var blocks: [Linear]
            @Named("stage") var stage: [Linear]

            override init() {
                conv1 = Conv2d(1, 8, kernel: 1)
                _early.wrappedValue = Linear(2, 2, bias: false)  // before super.init: through the storage
                super.init()
                squeeze = SqueezeExcite(8)
                projection = Conv2d(8, 8, kernel: 1, bias: false)
                blocks = [Linear(8, 8, bias: false), Linear(8, 2, bias: false)]
                stage = [Linear(2, 2, bias: false)]
            }

            func callAsFunction(_ x: Tensor) -> Tensor { projection!(squeeze(conv1(x))) }
        }
        let m = Late()
        XCTAssertNil(m.absent)
        XCTAssertEqual(m.namedParameters().map(\.0), [
            "conv1.weight", "conv1.bias", "se_module.fc1.weight", "se_module.fc1.bias", "se_module.fc2.weight", "se_module.fc2.bias",
            "early.weight", "c1x1_w_s1.weight", "block1.weight", "block2.weight", "stage.0.weight",
        ])
        XCTAssertEqual(m.namedModules().map(\.0), ["", "conv1", "se_module", "se_module.fc1", "se_module.fc2", "early", "c1x1_w_s1",
                                                   "block1", "block2", "stage.0"])
        XCTAssertEqual(m(uniform([1, 1, 4, 4], seed: 2)).shape, [1, 8, 4, 4])
        // the names load back into another instance; a reassigned child is the one saved
        let other = Initializer.withSeed(3) { Late() }
        try other.load(Dictionary(uniqueKeysWithValues: m.stateDict().map { ($0.0, $0.1) }))
        XCTAssertEqual(other.squeeze.fc1.weight.value.scalars, m.squeeze.fc1.weight.value.scalars)
        other.squeeze = SqueezeExcite(8)
        XCTAssertTrue(other.namedParameters().contains { $0.0 == "se_module.fc1.weight" && $0.1 === other.squeeze.fc1.weight })
    }

    func testSequentialNumbering() {
        let s = Sequential(Conv2d(1, 2, kernel: 1), ReLU(), Sequential(Linear(2, 2), Identity()), BatchNorm2d(2))
        XCTAssertEqual(s.namedParameters().map(\.0), ["0.weight", "0.bias", "2.0.weight", "2.0.bias", "3.weight", "3.bias"])
        XCTAssertEqual(s.namedBuffers().map(\.0), ["3.running_mean", "3.running_var"])
    }

    func testStrictLoadReportsEverythingAndChangesNothingOnFailure() {
        let m = TinyResNet()
        var state = Dictionary(uniqueKeysWithValues: m.stateDict().map { ($0.0, $0.1) })
        let before = m.stateDict().map { $0.1.scalars }
        state["bn1.running_mean"] = nil  // missing
        state["layer9.weight"] = .zeros([1])  // unexpected
        state["fc.weight"] = .zeros([3, 9])  // mis-shaped
        state["conv1.weight"] = Tensor(shape: [4, 1, 3, 3], repeating: 5)  // would load
        XCTAssertThrowsError(try m.load(state)) { error in
            guard let e = error as? LoadError else { return XCTFail("expected LoadError, got \(error)") }
            XCTAssertEqual(e.report.missing, ["bn1.running_mean"])
            XCTAssertEqual(e.report.unexpected, ["layer9.weight"])
            XCTAssertEqual(e.report.mismatched.map(\.name), ["fc.weight"])
            XCTAssertEqual(e.report.mismatched.first?.expected, [3, 8])
            XCTAssertEqual(e.report.mismatched.first?.got, [3, 9])
            let text = e.description
            XCTAssertTrue(text.contains("bn1.running_mean") && text.contains("layer9.weight") && text.contains("fc.weight"), text)
        }
        XCTAssertEqual(m.stateDict().map { $0.1.scalars }, before, "a failed load must not change the model")
    }

    /// A state of another model misses every tensor: each line names the first
    /// `LoadReport.namesPerLine` and counts the rest, so the message stays short.
    func testLoadReportListsAreBounded() {
        var report = LoadReport()
        report.missing = (0..<223).map { "encoder.layer\($0).weight" }
        report.unexpected = ["a", "b"]
        let text = report.description
        XCTAssertTrue(text.contains("missing (223): encoder.layer0.weight, "), text)
        XCTAssertTrue(text.contains("encoder.layer11.weight, and 211 more"), text)
        XCTAssertFalse(text.contains("encoder.layer12.weight"), text)
        XCTAssertTrue(text.contains("unexpected (2): a, b\n") || text.hasSuffix("unexpected (2): a, b"), text)
        XCTAssertLessThan(text.utf8.count, 600)
    }

    func testLoadCopiesValuesAndSupportsPartialLoads() throws {
        let source = Initializer.withSeed(1) { TinyResNet() }
        let target = Initializer.withSeed(2) { TinyResNet() }
        let state = Dictionary(uniqueKeysWithValues: source.stateDict().map { ($0.0, $0.1) })
        let report = try target.load(state)
        XCTAssertEqual(report.loaded.count, state.count)
        XCTAssertTrue(report.missing.isEmpty && report.unexpected.isEmpty && report.mismatched.isEmpty)
        XCTAssertEqual(target.stateDict().map { $0.1.scalars }, source.stateDict().map { $0.1.scalars })
        // Loaded values are independent of the source: training one leaves the other.
        target.conv1.weight.value.withUnsafeMutableBufferPointer { $0[0] = 42 }
        XCTAssertNotEqual(source.conv1.weight.value[flat: 0], 42)

        // Only a prefix: the rest may be missing; names outside the prefix are not "unexpected".
        let fresh = Initializer.withSeed(3) { TinyResNet() }
        let layer1Only = state.filter { $0.key.hasPrefix("layer1.") }
        let partial = try fresh.load(layer1Only, only: "layer1.")
        XCTAssertEqual(partial.loaded.count, layer1Only.count)
        XCTAssertEqual(fresh.layer1[0].conv1.weight.value.scalars, source.layer1[0].conv1.weight.value.scalars)
        XCTAssertNotEqual(fresh.conv1.weight.value.scalars, source.conv1.weight.value.scalars)
        // Non-strict: report what did not fit, load the rest.
        var extra = state
        extra["head.bias"] = .zeros([1])
        extra["fc.bias"] = nil
        let lenient = try fresh.load(extra, options: [.shapeMismatch])
        XCTAssertEqual(lenient.unexpected, ["head.bias"])
        XCTAssertEqual(lenient.missing, ["fc.bias"])
        XCTAssertEqual(fresh.conv1.weight.value.scalars, source.conv1.weight.value.scalars)
    }

    func testTrainEvalAndFreezeBatchNorm() {
        let m = TinyResNet()
        XCTAssertTrue(m.namedModules().allSatisfy { $0.1.isTraining })
        m.eval()
        XCTAssertTrue(m.namedModules().allSatisfy { !$0.1.isTraining })
        let x = uniform([2, 1, 8, 8], seed: 4)
        XCTAssertEqual(m(x).scalars, m(x).scalars, "evaluation is deterministic (no dropout, running statistics)")
        m.train()
        XCTAssertTrue(m.layer2[0].downsample!.isTraining)
        let mean = m.bn1.runningMean.value.scalars
        _ = m(x)
        XCTAssertNotEqual(m.bn1.runningMean.value.scalars, mean, "training batch norm updates running statistics")
        m.freezeBatchNorm()
        let frozenMean = m.bn1.runningMean.value.scalars
        m.drop.reseed(5)
        let y = m(x)
        XCTAssertEqual(m.bn1.runningMean.value.scalars, frozenMean, "frozen batch norm keeps running statistics")
        XCTAssertTrue(m.namedModules().compactMap { $0.1 as? BatchNorm2d }.allSatisfy(\.frozen))
        y.sum().backward()
        XCTAssertNotNil(m.bn1.weight.grad)
        XCTAssertNotNil(m.conv1.weight.grad)
    }

    func testParameterGradientsAndRequiresGrad() {
        let m = TinyResNet()
        m.eval()
        m.conv1.weight.requiresGrad = false
        m(uniform([1, 1, 8, 8], seed: 6)).sum().backward()
        XCTAssertNil(m.conv1.weight.grad, "a parameter that does not require gradients gets none")
        XCTAssertNotNil(m.layer1[0].conv1.weight.grad)
        XCTAssertEqual(m.layer1[0].conv1.weight.grad?.shape, [4, 4, 3, 3])
        m.zeroGrad()
        XCTAssertTrue(m.parameters.allSatisfy { $0.grad == nil })
    }
}
