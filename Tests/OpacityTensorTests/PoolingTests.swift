import OpacityTensor
import XCTest

/// Max and average pooling (padding, ceil mode, count_include_pad), global pools:
/// forward against direct loops, gradients against finite differences.
final class PoolingTests: XCTestCase {
    struct Window {
        var kernel: (Int, Int)
        var stride: (Int, Int)
        var padding: (Int, Int)
        var ceil: Bool
        var label: String { "k\(kernel) s\(stride) p\(padding) ceil \(ceil)" }
    }

    static let windows: [Window] = [
        Window(kernel: (2, 2), stride: (2, 2), padding: (0, 0), ceil: false),
        Window(kernel: (3, 3), stride: (2, 2), padding: (1, 1), ceil: false),  // ResNet stem
        Window(kernel: (2, 2), stride: (2, 2), padding: (0, 0), ceil: true),  // odd sizes: partial last window
        Window(kernel: (3, 3), stride: (2, 2), padding: (1, 1), ceil: true),
        Window(kernel: (3, 2), stride: (3, 2), padding: (1, 1), ceil: true),  // last window would start in the padding
        Window(kernel: (3, 3), stride: (1, 1), padding: (1, 1), ceil: false),  // NASNet's stride-1 pools
        Window(kernel: (3, 3), stride: (2, 1), padding: (0, 1), ceil: true),
    ]

    func testForwardMatchesDirectLoops() {
        for (i, wdw) in Self.windows.enumerated() {
            for shape in [[2, 3, 7, 7], [1, 2, 6, 5], [1, 1, 5, 8]] {
                let x = uniform(shape, seed: UInt64(i))
                let mx = x.maxPool2d(kernel: wdw.kernel, stride: wdw.stride, padding: wdw.padding, ceilMode: wdw.ceil)
                let ref = referencePool(x, kernel: wdw.kernel, stride: wdw.stride, padding: wdw.padding, ceil: wdw.ceil, max: true)
                XCTAssertEqual(mx.shape, ref.shape, "max \(wdw.label) \(shape)")
                assertClose(mx, ref.values, absolute: 0, relative: 0, "max \(wdw.label) \(shape)")
                for include in [true, false] {
                    let av = x.avgPool2d(kernel: wdw.kernel, stride: wdw.stride, padding: wdw.padding, ceilMode: wdw.ceil,
                                         countIncludePad: include)
                    let aref = referencePool(x, kernel: wdw.kernel, stride: wdw.stride, padding: wdw.padding, ceil: wdw.ceil,
                                             max: false, countIncludePad: include)
                    XCTAssertEqual(av.shape, aref.shape, "avg \(wdw.label) \(shape)")
                    assertClose(av, aref.values, absolute: 1e-6, relative: 1e-5, "avg \(wdw.label) include pad \(include) \(shape)")
                }
            }
        }
    }

    func testCeilModeEdgeCasesMatchPyTorchSizes() {
        // Sizes PyTorch gives (torch.nn.functional.max_pool2d on zeros of that size).
        let x = Tensor.zeros([1, 1, 5, 5])
        XCTAssertEqual(x.maxPool2d(kernel: (2, 2), ceilMode: false).shape, [1, 1, 2, 2])
        XCTAssertEqual(x.maxPool2d(kernel: (2, 2), ceilMode: true).shape, [1, 1, 3, 3])
        // k=3, s=3, p=1 on 5: floor gives 2; ceil would give 3 but that window starts in the
        // right padding (6 >= 5 + 1), so PyTorch drops it.
        XCTAssertEqual(Tensor.zeros([1, 1, 5, 5]).maxPool2d(kernel: (3, 3), stride: (3, 3), padding: (1, 1), ceilMode: true).shape,
                       [1, 1, 2, 2])
        XCTAssertEqual(Tensor.zeros([1, 1, 6, 6]).maxPool2d(kernel: (3, 3), stride: (3, 3), padding: (1, 1), ceilMode: true).shape,
                       [1, 1, 3, 3])
        XCTAssertEqual(Tensor.zeros([1, 1, 112, 112]).maxPool2d(kernel: (3, 3), stride: (2, 2), padding: (1, 1)).shape, [1, 1, 56, 56])
    }

    func testGradients() {
        for (i, wdw) in Self.windows.enumerated() {
            for shape in [[2, 2, 7, 7], [1, 2, 6, 5]] {
                // Distinct values 0.03 apart: no ties, so +-eps never changes the winner.
                let x = distinctValues(shape, seed: UInt64(50 + i))
                checkGradients("maxPool2d \(wdw.label) \(shape)", [x]) {
                    $0[0].maxPool2d(kernel: wdw.kernel, stride: wdw.stride, padding: wdw.padding, ceilMode: wdw.ceil)
                }
                for include in [true, false] {
                    checkGradients("avgPool2d \(wdw.label) include pad \(include) \(shape)", [uniform(shape, seed: UInt64(i))]) {
                        $0[0].avgPool2d(kernel: wdw.kernel, stride: wdw.stride, padding: wdw.padding, ceilMode: wdw.ceil,
                                        countIncludePad: include)
                    }
                }
            }
        }
    }

    func testGlobalPools() {
        let x = distinctValues([2, 3, 4, 5], seed: 7)
        checkGradients("globalAvgPool2d", [x]) { $0[0].globalAvgPool2d() }
        checkGradients("globalMaxPool2d", [x]) { $0[0].globalMaxPool2d() }
        let avg = x.globalAvgPool2d(), mx = x.globalMaxPool2d()
        XCTAssertEqual(avg.shape, [2, 3, 1, 1])
        XCTAssertEqual(mx.shape, [2, 3, 1, 1])
        for plane in 0..<6 {
            let values = (0..<20).map { Double(x[flat: plane * 20 + $0]) }
            XCTAssertEqual(Double(avg[flat: plane]), values.reduce(0, +) / 20, accuracy: 1e-5)
            XCTAssertEqual(Double(mx[flat: plane]), values.max()!)
        }
    }

    func testLayers() {
        let x = uniform([1, 2, 9, 9], seed: 9)
        XCTAssertEqual(MaxPool2d(kernel: 3, stride: 2, padding: 1)(x).scalars,
                       x.maxPool2d(kernel: (3, 3), stride: (2, 2), padding: (1, 1)).scalars)
        XCTAssertEqual(AvgPool2d(kernel: 3, stride: 2, padding: 1, countIncludePad: false)(x).scalars,
                       x.avgPool2d(kernel: (3, 3), stride: (2, 2), padding: (1, 1), countIncludePad: false).scalars)
        XCTAssertTrue(MaxPool2d(kernel: 2).namedParameters().isEmpty)
    }
}
