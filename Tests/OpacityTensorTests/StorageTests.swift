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

    /// Empties the pool (and the idle kernel scratch), sets a 512 MiB limit and no slack, and
    /// returns what restores the settings. No slack: blocks that earlier tests of this process
    /// still hold raise the high-water mark, and with it the slack (1/64 by default), by an amount a test of
    /// the policy does not know (it failed in the full suite, not alone).
    static func emptyPoolWithoutSlack() -> () -> Void {
        let saved = TensorStorage.cacheLimitBytes
        let savedSlack = TensorStorage.poolSlackDivisor
        TensorStorage.poolSlackDivisor = 0
        TensorStorage.cacheLimitBytes = 0
        TensorStorage.cacheLimitBytes = 512 << 20
        return {
            TensorStorage.cacheLimitBytes = saved
            TensorStorage.poolSlackDivisor = savedSlack
        }
    }

    /// Blocks of 2 MiB or more start on a 2 MiB boundary and, where the kernel offers
    /// transparent huge pages, are backed by them once written (Linux; `OPACITY_HUGE_PAGES`
    /// unset). Smaller pooled blocks are plain mappings, page aligned.
    func testLargeBlocksAreAlignedForHugePages() throws {
        #if os(Linux)
        try XCTSkipUnless(TensorStorage.hugePages, "OPACITY_HUGE_PAGES=0 is set")
        let restore = Self.emptyPoolWithoutSlack()
        defer { restore() }
        let huge = 2 << 20
        // 2 MiB, just over 3 MiB (a class that is not a multiple of 2 MiB), 9 MiB, and 1 MiB.
        for count in [(2 << 20) / 4, (3 << 20) / 4 + 1, (9 << 20) / 4, (1 << 20) / 4] {
            var t = Tensor(shape: [count], repeating: 1)
            t.withUnsafeMutableBufferPointer { $0[count - 1] = 5 }  // the block's tail is writable
            let address = t.withUnsafeBufferPointer { Int(bitPattern: $0.baseAddress) }
            if count * 4 >= huge {
                XCTAssertEqual(address % huge, 0, "a block of \(count * 4) bytes starts on a 2 MiB boundary")
            } else {
                XCTAssertEqual(address % 4096, 0, "a pooled block of \(count * 4) bytes is page aligned")
            }
            XCTAssertEqual(t[flat: count - 1], 5)
            XCTAssertEqual(t[flat: 0], 1)
        }
        // Where the kernel backs madvised memory with huge pages, a written 8 MiB block holds some.
        let mode = (try? String(contentsOfFile: "/sys/kernel/mm/transparent_hugepage/enabled", encoding: .utf8)) ?? ""
        guard mode.contains("[always]") || mode.contains("[madvise]") else { return }
        let t = Tensor(shape: [(8 << 20) / 4], repeating: 2)
        let address = t.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
        let kB = try withExtendedLifetime(t) { try Self.anonHugePagesKiB(containing: address) }
        XCTAssertGreaterThanOrEqual(kB, 2048, "the mapping of a written, 2 MiB aligned 8 MiB block holds a huge page")
        #else
        throw XCTSkip("transparent huge pages are a Linux feature")
        #endif
    }

    /// The `AnonHugePages` field (KiB) of the mapping in /proc/self/smaps that contains `address`.
    static func anonHugePagesKiB(containing address: UInt) throws -> Int {
        // Read to the end: /proc files report a size of 0.
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/self/smaps"))
        defer { try? handle.close() }
        let smaps = String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
        var inside = false
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), !range.hasSuffix(":") {
                let bounds = range.split(separator: "-").compactMap { UInt($0, radix: 16) }
                inside = bounds.count == 2 && bounds[0] <= address && address < bounds[1]
            } else if inside, fields.first == "AnonHugePages:", fields.count >= 2, let v = Int(fields[1]) {
                return v
            }
        }
        XCTFail("no mapping in /proc/self/smaps contains 0x\(String(address, radix: 16))")
        return 0
    }

    /// Freed blocks of sizes no longer asked for do not pile up: blocks in use plus blocks cached
    /// stay within the most in use at once (plus a slack, 1/64 by default, 0 here); a request without a block of its class
    /// takes a cached block up to twice its size as it is, maps a new block under the mark,
    /// cuts a larger cached block past it, or unmaps smaller cached blocks first.
    func testTheFootprintStaysAtTheHighWaterMark() {
        let restore = Self.emptyPoolWithoutSlack()
        defer { restore() }
        let mib = 1 << 18  // floats
        // a block other code holds meanwhile (as the full suite's earlier tests do)
        let held = Tensor.zeros([256 * mib])
        defer { withExtendedLifetime(held) {} }
        TensorStorage.resetPoolHighWaterMark()
        let base = TensorMemory.liveBytes
        do { _ = Tensor.zeros([64 * mib]) }  // freed: cached, and the mark is 64 MiB
        XCTAssertEqual(TensorStorage.cachedBytes, 64 << 20)
        XCTAssertEqual(TensorMemory.liveBytes, base)
        do {
            // 40 MiB takes the 64 MiB block as it is (at most twice the size) ...
            let t = Tensor.ones([40 * mib])
            XCTAssertEqual(TensorStorage.cachedBytes, 0)
            XCTAssertEqual(TensorMemory.liveBytes, base + (64 << 20))
            XCTAssertTrue(t.scalars.allSatisfy { $0 == 1 })
        }
        XCTAssertEqual(TensorStorage.cachedBytes, 64 << 20, "... and gives it back to its own class")
        do {
            // 8 MiB would pass the mark with a new block: the 64 MiB block is cut to 8 MiB
            let t = Tensor.zeros([8 * mib])
            XCTAssertEqual(TensorStorage.cachedBytes, 0)
            XCTAssertEqual(TensorMemory.liveBytes, base + (8 << 20))
            XCTAssertTrue(t.scalars.allSatisfy { $0 == 0 })
            // under the mark a new block is mapped and the cache keeps its own
            do { _ = Tensor.zeros([48 * mib]) }
            XCTAssertEqual(TensorStorage.cachedBytes, 48 << 20)
        }
        XCTAssertEqual(TensorStorage.cachedBytes, 56 << 20)
        do {
            // 64 MiB with only smaller blocks cached: they are unmapped first
            let t = Tensor.zeros([64 * mib])
            XCTAssertEqual(TensorStorage.cachedBytes, 0)
            XCTAssertEqual(TensorMemory.liveBytes, base + (64 << 20))
            XCTAssertTrue(t.scalars.allSatisfy { $0 == 0 })
        }
        XCTAssertEqual(TensorStorage.cachedBytes, 64 << 20)
        XCTAssertGreaterThanOrEqual(TensorMemory.livePeakBytes, base + (64 << 20))
        TensorMemory.resetLivePeak()
        XCTAssertEqual(TensorMemory.livePeakBytes, TensorMemory.liveBytes)
    }

    /// A cached block that serves a smaller request (one of a class up to twice the request's)
    /// gives the pages past the request back to the system once it has been in use for
    /// `poolTailReleaseAge` more requests: an encoder's stage output, kept until the feature
    /// pyramid reads it, no longer keeps a larger block's tail resident, while a short-lived map
    /// keeps the block whole (its tail is not faulted in again at the next use).
    func testALargerCachedBlockGivesItsTailBackToTheSystem() throws {
        #if os(Linux)
        let restore = Self.emptyPoolWithoutSlack()
        defer { restore() }
        let mib = 1 << 18  // floats
        // 16 MiB, written (resident), then freed: cached
        let block = Tensor(shape: [16 * mib], repeating: 1).withUnsafeBufferPointer { Int(bitPattern: $0.baseAddress) }
        XCTAssertEqual(TensorStorage.cachedBytes, 16 << 20)
        let t = Tensor(shape: [9 * mib], repeating: 2)  // a 9 MiB class: takes the 16 MiB block as it is
        let address = t.withUnsafeBufferPointer { Int(bitPattern: $0.baseAddress) }
        XCTAssertEqual(address, block, "the cached 16 MiB block serves the 9 MiB request")
        // past the request, rounded up to a whole huge page: 10 to 16 MiB
        let tail = (address + (10 << 20), 6 << 20)
        let pages = (6 << 20) / Int(getpagesize())
        XCTAssertEqual(try Self.residentPages(tail.0, bytes: tail.1), pages, "young: the tail stays")
        let released = TensorStorage.tailBytesReleased
        for _ in 0..<TensorStorage.poolTailReleaseAge { _ = Tensor(shape: [mib], repeating: 0) }  // 1 MiB maps come and go
        XCTAssertEqual(try Self.residentPages(tail.0, bytes: tail.1), 0, "still in use after the age: the tail is no longer resident")
        // the whole tail past the request, rounded to a huge page or a page
        XCTAssertEqual(TensorStorage.tailBytesReleased - released, (16 << 20) - (TensorStorage.hugePages ? 10 << 20 : 9 << 20))
        XCTAssertEqual(try Self.residentPages(address, bytes: 9 << 20), (9 << 20) / Int(getpagesize()), "the request's pages are")
        XCTAssertTrue(t.scalars.allSatisfy { $0 == 2 })
        _ = consume t
        // Back in the pool, the block serves a 16 MiB request whole again.
        let u = Tensor(shape: [16 * mib], repeating: 3)
        XCTAssertEqual(u.withUnsafeBufferPointer { Int(bitPattern: $0.baseAddress) }, block)
        XCTAssertTrue(u.scalars.allSatisfy { $0 == 3 })
        #else
        throw XCTSkip("the tail goes back with madvise(MADV_DONTNEED), on Linux")
        #endif
    }

    #if os(Linux)
    /// How many pages of `bytes` from the page-aligned `address` are resident (`mincore`).
    static func residentPages(_ address: Int, bytes: Int) throws -> Int {
        let page = Int(getpagesize())
        var vector = [UInt8](repeating: 0, count: (bytes + page - 1) / page)
        let rc = vector.withUnsafeMutableBufferPointer { mincore(UnsafeMutableRawPointer(bitPattern: address), bytes, $0.baseAddress) }
        XCTAssertEqual(rc, 0, "mincore: \(String(cString: strerror(errno)))")
        return vector.reduce(0) { $0 + Int($1 & 1) }
    }
    #endif

    /// Kernel scratch is kept across calls outside the pool: a kernel that runs every step with
    /// other allocations in between (which, at the pool's high-water mark, used to cut or unmap
    /// the freed scratch block and map it fresh at the next call) maps nothing after its first call.
    func testKernelScratchIsReusedAcrossCalls() {
        let restore = Self.emptyPoolWithoutSlack()
        defer { restore() }
        XCTAssertEqual(ScratchBuffers.idleBytes, 0)
        TensorStorage.resetPoolHighWaterMark()
        let mib = 1 << 18  // floats
        var mappedPerRound: [Int] = []
        for round in 0..<4 {
            let before = TensorStorage.mappedBytes
            withScratch(perThread: 6 * mib) { scratch in
                scratch(0)[0] = Float(round)
                XCTAssertEqual(scratch(0)[0], Float(round))
            }
            // an activation of another size class between two calls, larger than the scratch
            do { _ = Tensor.zeros([40 * mib]) }
            mappedPerRound.append(TensorStorage.mappedBytes - before)
        }
        XCTAssertGreaterThan(mappedPerRound[0], 0)
        XCTAssertEqual(Array(mappedPerRound.dropFirst()), [0, 0, 0], "fresh bytes mapped per round: \(mappedPerRound)")
        XCTAssertGreaterThanOrEqual(ScratchBuffers.idleBytes, 6 << 20)
        // the pool off: nothing idle is kept
        TensorStorage.cacheLimitBytes = 0
        XCTAssertEqual(ScratchBuffers.idleBytes, 0)
        withScratch(perThread: 6 * mib) { _ = $0(0) }
        XCTAssertEqual(ScratchBuffers.idleBytes, 0)
    }

    func testSmallAndEmptyTensors() {
        XCTAssertEqual(Tensor.zeros([0]).count, 0)
        XCTAssertEqual(Tensor.zeros([3, 0, 2]).scalars, [])
        XCTAssertEqual(Tensor(2.5).shape, [])
        XCTAssertEqual(Tensor(2.5).scalar, 2.5)
        XCTAssertEqual(Tensor(shape: [2], scalars: [1, 2]).description, "Tensor([2], [1, 2])")
    }

    /// The engine's tuning variables set to values it ignores are named in a warning with the
    /// expected form and the value used; valid and unset ones give none.
    func testTuningVariableWarnings() {
        defer {
            unsetenv("OPACITY_SPIN_US")
            unsetenv("OPACITY_DERIVED_CACHE_MB")
        }
        setenv("OPACITY_SPIN_US", "abc", 1)
        setenv("OPACITY_DERIVED_CACHE_MB", "-5", 1)
        let warnings = Compute.tuningVariableWarnings
        XCTAssertEqual(warnings.count, 2, "\(warnings)")
        XCTAssertTrue(warnings.contains { $0.contains("OPACITY_SPIN_US=abc is not valid; expected 0...1000000 microseconds") && $0.contains("using the default, 200") }, "\(warnings)")
        XCTAssertTrue(warnings.contains { $0.contains("OPACITY_DERIVED_CACHE_MB=-5 is not valid") && $0.contains("using the default, 0") }, "\(warnings)")
        // The value the engine reads follows the same rule: the default where it warns.
        XCTAssertEqual(TuningVariable.spinMicroseconds.value, 200)
        XCTAssertEqual(TuningVariable.derivedCacheMiB.value, 0)
        setenv("OPACITY_SPIN_US", "50", 1)
        setenv("OPACITY_DERIVED_CACHE_MB", "512", 1)
        XCTAssertEqual(Compute.tuningVariableWarnings, [])
        XCTAssertEqual(TuningVariable.spinMicroseconds.value, 50)
        XCTAssertEqual(TuningVariable.derivedCacheMiB.value, 512)
        // a level: 0, 1 or 2
        setenv("OPACITY_SELECTIVE_RECOMPUTATION", "3", 1)
        defer { unsetenv("OPACITY_SELECTIVE_RECOMPUTATION") }
        XCTAssertEqual(
            Compute.tuningVariableWarnings,
            ["warning: OPACITY_SELECTIVE_RECOMPUTATION=3 is not valid; expected 0...2; it is ignored: using the default, 2 (the nearest valid value is 2)"])
        XCTAssertEqual(TuningVariable.selectiveRecomputation.value, 2)
        for level in ["0", "1"] {
            setenv("OPACITY_SELECTIVE_RECOMPUTATION", level, 1)
            XCTAssertEqual(Compute.tuningVariableWarnings, [])
            XCTAssertEqual(TuningVariable.selectiveRecomputation.value, Int(level))
        }
    }

    /// A ReLU's packed output (``SparseActivation``) lives from forward to backward, so it takes
    /// a block of its own size class, never a larger cached one: a 1.25 MiB packed form with a
    /// 2 MiB block cached (which a short-lived request of that size would take as it is).
    func testPackedMapsTakeBlocksOfTheirOwnSize() {
        let restore = Self.emptyPoolWithoutSlack()
        defer { restore() }
        let mib = 1 << 18  // floats
        let map = (0..<(4 * mib)).map { i -> Float in i % 10 < 3 ? Float(i % 7 + 1) : 0 }  // 30% non-zero
        // a 2 MiB block cached, under a high-water mark that leaves no room for a new block
        do { _ = Tensor.zeros([2 * mib]) }
        TensorStorage.resetPoolHighWaterMark()
        XCTAssertEqual(TensorStorage.cachedBytes, 2 << 20)
        let base = TensorMemory.liveBytes
        let packed = map.withUnsafeBufferPointer { SparseActivation.pack($0.baseAddress!, count: $0.count) }
        XCTAssertNotNil(packed)
        // the values (1.2 MiB, class 1.25 MiB) and the masks (128 KiB, from malloc)
        let values = map.filter { $0 != 0 }.count * 4
        XCTAssertEqual(TensorMemory.liveBytes - base, 10 << 17 + 2 * (4 * mib / 64) * 4, "values of \(values) bytes")
        // (the cached block was cut to the class: there was no room for a new one)
        XCTAssertEqual(TensorStorage.cachedBytes, 0)
        withExtendedLifetime(packed) {}
    }
}
