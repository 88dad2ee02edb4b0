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

    /// Freed blocks of sizes no longer asked for do not pile up: a request without a block of
    /// its class cuts a larger cached block, or unmaps smaller cached blocks first, so blocks in
    /// use plus blocks cached never exceed the most in use at once (rounded to size classes).
    func testTheFootprintDoesNotGrowWhileBlocksAreCached() {
        let saved = TensorStorage.cacheLimitBytes
        defer { TensorStorage.cacheLimitBytes = saved }
        TensorStorage.cacheLimitBytes = 0  // empty the pool
        TensorStorage.cacheLimitBytes = 256 << 20
        let base = TensorMemory.liveBytes
        do { _ = Tensor.zeros([2 << 20]) }  // 8 MiB, freed: cached
        XCTAssertEqual(TensorStorage.cachedBytes, 8 << 20)
        XCTAssertEqual(TensorMemory.liveBytes, base)
        do {
            // a 4 MiB request takes the 8 MiB block cut to 4 MiB (nothing stays cached) ...
            let half = Tensor.ones([1 << 20])
            XCTAssertEqual(TensorStorage.cachedBytes, 0)
            XCTAssertEqual(TensorMemory.liveBytes, base + (4 << 20))
            XCTAssertTrue(half.scalars.allSatisfy { $0 == 1 })
        }
        XCTAssertEqual(TensorStorage.cachedBytes, 4 << 20)
        do {
            // ... and a 6 MiB request, with only a smaller block cached, unmaps that one first
            let t = Tensor.zeros([3 << 19])
            XCTAssertEqual(TensorStorage.cachedBytes, 0)
            XCTAssertEqual(TensorMemory.liveBytes, base + (6 << 20))
            XCTAssertTrue(t.scalars.allSatisfy { $0 == 0 })
        }
        XCTAssertEqual(TensorStorage.cachedBytes, 6 << 20)
        // the same class again is a plain reuse
        do { _ = Tensor.zeros([3 << 19]) }
        XCTAssertEqual(TensorStorage.cachedBytes, 6 << 20)
        XCTAssertGreaterThanOrEqual(TensorMemory.livePeakBytes, base + (8 << 20))
        TensorMemory.resetLivePeak()
        XCTAssertEqual(TensorMemory.livePeakBytes, TensorMemory.liveBytes)
    }

    func testSmallAndEmptyTensors() {
        XCTAssertEqual(Tensor.zeros([0]).count, 0)
        XCTAssertEqual(Tensor.zeros([3, 0, 2]).scalars, [])
        XCTAssertEqual(Tensor(2.5).shape, [])
        XCTAssertEqual(Tensor(2.5).scalar, 2.5)
        XCTAssertEqual(Tensor(shape: [2], scalars: [1, 2]).description, "Tensor([2], [1, 2])")
    }
}
