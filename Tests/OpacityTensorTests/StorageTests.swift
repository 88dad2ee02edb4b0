import OpacityTensor
import XCTest

/// The pool of freed large blocks behind TensorStorage.
final class StorageTests: XCTestCase {
    func testFreedBlocksAreReusedAndTheLimitHolds() {
        let saved = TensorStorage.cacheLimitBytes
        defer { TensorStorage.cacheLimitBytes = saved }
        TensorStorage.cacheLimitBytes = 64 << 20
        do {
            var t = Tensor(shape: [1 << 20], repeating: 3)  // 4 MiB: pooled
            t.withUnsafeMutableBufferPointer { $0[0] = 7 }
            XCTAssertEqual(t[flat: 0], 7)
        }
        XCTAssertGreaterThanOrEqual(TensorStorage.cachedBytes, 4 << 20, "a freed 4 MiB block stays in the pool")
        // A reused block is filled again: zeros are zeros, whatever was there before.
        let z = Tensor.zeros([1 << 20])
        XCTAssertTrue(z.scalars.allSatisfy { $0 == 0 })
        let ones = Tensor.ones([1 << 20])
        XCTAssertTrue(ones.scalars.allSatisfy { $0 == 1 })
        _ = (z, ones)
        // Lowering the limit frees cached blocks at once; 0 turns the pool off.
        TensorStorage.cacheLimitBytes = 0
        XCTAssertEqual(TensorStorage.cachedBytes, 0)
        do { _ = Tensor.zeros([1 << 20]) }
        XCTAssertEqual(TensorStorage.cachedBytes, 0)
    }

    func testSmallAndEmptyTensors() {
        XCTAssertEqual(Tensor.zeros([0]).count, 0)
        XCTAssertEqual(Tensor.zeros([3, 0, 2]).scalars, [])
        XCTAssertEqual(Tensor(2.5).shape, [])
        XCTAssertEqual(Tensor(2.5).scalar, 2.5)
        XCTAssertEqual(Tensor(shape: [2], scalars: [1, 2]).description, "Tensor([2], [1, 2])")
    }
}
