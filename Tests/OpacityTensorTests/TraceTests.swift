import OpacityTensor
import XCTest

/// The graph capture: each public op reports itself once, with its inputs, output and
/// attributes, only while a trace runs; results are unchanged.
final class TraceTests: XCTestCase {
    func testTraceRecordsOpsInOrderWithAttributesAndChainsValues() {
        var rng = RandomGenerator(seed: 1)
        let x = Tensor.randomUniform([2, 3, 9, 9], using: &rng)
        let conv = Conv2d(3, 4, kernel: 3, stride: 2, padding: 1, groups: 1)
        let bn = BatchNorm2d(4)
        bn.eval()
        let trace = OpTrace()
        let traced = trace.run {
            bn(conv(x), relu: true).maxPool2d(kernel: (3, 3), stride: (2, 2), ceilMode: true).reshaped([2, -1])
        }
        let untraced = bn(conv(x), relu: true).maxPool2d(kernel: (3, 3), stride: (2, 2), ceilMode: true).reshaped([2, -1])
        XCTAssertEqual(traced.scalars, untraced.scalars)
        XCTAssertEqual(trace.ops.map(\.op), ["conv2d", "batchNorm2d", "maxPool2d", "reshape"])
        XCTAssertEqual(trace.ops[0].attributes["stride"], .ints([2, 2]))
        XCTAssertEqual(trace.ops[0].attributes["padding"], .ints([1, 1]))
        XCTAssertEqual(trace.ops[0].attributes["groups"], .int(1))
        XCTAssertEqual(trace.ops[1].attributes["relu"], .bool(true))
        XCTAssertEqual(trace.ops[1].inputs.count, 5, "input, weight, bias, running mean and variance")
        XCTAssertEqual(trace.ops[2].attributes["ceilMode"], .bool(true))
        // Each op reads the value the previous one produced; the first reads the input and
        // the convolution's parameters by identity.
        XCTAssertEqual(OpTrace.key(trace.ops[0].inputs[0]), OpTrace.key(x))
        XCTAssertEqual(ObjectIdentifier(trace.ops[0].inputs[1].storage), ObjectIdentifier(conv.weight.value.storage))
        for i in 1..<trace.ops.count { XCTAssertEqual(OpTrace.key(trace.ops[i].inputs[0]), OpTrace.key(trace.ops[i - 1].output)) }
        XCTAssertEqual(OpTrace.key(trace.ops[3].output), OpTrace.key(traced))
        // Nothing is recorded outside `run`.
        _ = x.relu()
        XCTAssertEqual(trace.ops.count, 4)
    }
}
