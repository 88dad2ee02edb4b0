import OpacityTensor
import XCTest

/// Reshaping, permuting, joining, slicing, padding, reductions, row gathers, upsampling.
final class ShapeOpsTests: XCTestCase {
    func testGradients() {
        let x = uniform([2, 3, 4, 5], seed: 1)
        checkGradients("reshape", [x]) { $0[0].reshaped([6, -1]) }
        checkGradients("flattened", [x]) { $0[0].flattened() }
        checkGradients("permute NCHW->NHWC", [x]) { $0[0].permuted([0, 2, 3, 1]) }
        checkGradients("permute reverse", [x]) { $0[0].permuted([3, 2, 1, 0]) }
        checkGradients("sum(toShape:) over N, H, W", [x]) { $0[0].sum(toShape: [1, x.shape[1], 1, 1]) }
        let y = uniform([2, 2, 4, 5], seed: 2), z = uniform([2, 1, 4, 5], seed: 3)
        checkGradients("concat channels", [x, y, z]) { Tensor.concat($0, axis: 1) }
        checkGradients("concat batch", [x, x * 2]) { Tensor.concat($0, axis: 0) }
        checkGradients("concat last axis", [uniform([2, 3], seed: 4), uniform([2, 5], seed: 5)]) { Tensor.concat($0, axis: 1) }
        checkGradients("slice channels", [x]) { $0[0].slice(axis: 1, 1..<3) }
        checkGradients("slice width", [x]) { $0[0].slice(axis: 3, 2..<5) }
        checkGradients("pad", [x]) { $0[0].padded2d(left: 1, right: 2, top: 0, bottom: 1) }
        checkGradients("pad and crop", [x]) { $0[0].padded2d(left: -1, right: 1, top: 2, bottom: -2) }
        checkGradients("sum", [x]) { $0[0].sum() }
        checkGradients("mean", [x]) { $0[0].mean() }
        checkGradients("sum over axes 0 and 2", [x]) { $0[0].sum(axes: [0, 2]) }
        checkGradients("mean over H, W", [x]) { $0[0].mean(axes: [2, 3]) }
        checkGradients("gather rows with repeats", [uniform([4, 3], seed: 6)]) { $0[0].gatherRows([2, 0, 2, 1, 2]) }
        checkGradients("upsample nearest x2", [uniform([2, 3, 3, 4], seed: 7)]) { $0[0].upsampleNearest2x() }
    }

    func testValues() {
        let x = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(x.permuted([1, 0]).scalars, [1, 4, 2, 5, 3, 6])
        XCTAssertEqual(x.reshaped([3, -1]).shape, [3, 2])
        XCTAssertEqual(Tensor.concat([x, x * 10], axis: 1).scalars, [1, 2, 3, 10, 20, 30, 4, 5, 6, 40, 50, 60])
        XCTAssertEqual(Tensor.concat([x, x * 10], axis: 0).shape, [4, 3])
        XCTAssertEqual(x.slice(axis: 1, 1..<3).scalars, [2, 3, 5, 6])
        XCTAssertEqual(x.sum().scalar, 21)
        XCTAssertEqual(x.mean().scalar, 3.5)
        XCTAssertEqual(x.sum(axes: [0]).scalars, [5, 7, 9])
        XCTAssertEqual(x.sum(axes: [0]).shape, [1, 3])
        XCTAssertEqual(x.mean(axes: [1]).scalars, [2, 5])
        XCTAssertEqual(x.gatherRows([1, 1, 0]).scalars, [4, 5, 6, 4, 5, 6, 1, 2, 3])
        let img = Tensor(shape: [1, 1, 2, 2], scalars: [1, 2, 3, 4])
        XCTAssertEqual(img.upsampleNearest2x().scalars, [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4])
        let padded = img.padded2d(left: 1, right: 0, top: 0, bottom: 1)
        XCTAssertEqual(padded.shape, [1, 1, 3, 3])
        XCTAssertEqual(padded.scalars, [0, 1, 2, 0, 3, 4, 0, 0, 0])
        XCTAssertEqual(img.padded2d(left: -1, right: 0, top: 0, bottom: -1).scalars, [2])
    }

    func testSumAndMeanAddInDoublePrecision() {
        // 1e8 then a thousand ones: float partial sums would drop most of the ones
        // (the spacing of floats near 1e8 is 8); the exact sum 100001000 is a float.
        let x = Tensor(shape: [1001], scalars: [1e8] + [Float](repeating: 1, count: 1000))
        XCTAssertEqual(x.sum().scalar, 100_001_000)
        XCTAssertEqual(Double(x.mean().scalar), 100_001_000.0 / 1001, accuracy: 8)
        let small = Tensor(shape: [3], scalars: [0.1, 0.2, 0.3])
        XCTAssertEqual(small.sum().scalar, Float(Double(Float(0.1)) + Double(Float(0.2)) + Double(Float(0.3))))
    }

    func testReshapeSharesStorageAndKeepsValueSemantics() {
        let x = Tensor(shape: [2, 2], scalars: [1, 2, 3, 4])
        var y = x.reshaped([4])
        XCTAssertTrue(x.storage === y.storage, "reshape must not copy")
        y.withUnsafeMutableBufferPointer { $0[0] = 100 }
        XCTAssertEqual(x.scalars, [1, 2, 3, 4], "mutating a copy must not change the original")
        XCTAssertEqual(y.scalars, [100, 2, 3, 4])
    }
}
