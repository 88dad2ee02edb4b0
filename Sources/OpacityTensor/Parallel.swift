import Foundation

/// The engine's compute threads.
///
/// One pool (``ComputePool``), sized to the machine's cores (or `OPACITY_THREADS`), runs our own kernels;
/// OpenBLAS gets the same count and is only ever called from outside a parallel region,
/// so the two never oversubscribe the cores. With a fixed thread count every kernel
/// splits work the same way on every run, so results repeat bit for bit.
public enum Compute {
    nonisolated(unsafe) private static var _threads: Int = {
        if let s = ProcessInfo.processInfo.environment["OPACITY_THREADS"], let n = threadCount(parsing: s) { return n }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }()

    /// The thread counts `OPACITY_THREADS` (and the command line's `--threads`) accept.
    public static let validThreadCounts = 1...1024

    /// `text` as a thread count: a whole number in ``validThreadCounts`` (surrounding spaces
    /// allowed), else nil.
    public static func threadCount(parsing text: String) -> Int? {
        guard let n = Int(text.trimmingCharacters(in: .whitespaces)), validThreadCounts.contains(n) else { return nil }
        return n
    }

    /// `OPACITY_THREADS` as set when it is not a valid thread count (``threadCount(parsing:)``):
    /// the engine then ignores it and uses all cores. Nil when it is unset or valid.
    /// An empty value counts as unset.
    public static var invalidThreadsVariable: String? {
        guard let s = ProcessInfo.processInfo.environment["OPACITY_THREADS"], !s.trimmingCharacters(in: .whitespaces).isEmpty,
            threadCount(parsing: s) == nil
        else { return nil }
        return s
    }

    /// The warning every program on the engine prints when ``invalidThreadsVariable`` is set
    /// (and no `--threads` replaces it), naming the value, the valid range and the count used;
    /// nil when the variable is unset or valid.
    public static var threadsVariableWarning: String? {
        invalidThreadsVariable.map {
            "warning: OPACITY_THREADS=\($0) is not valid; expected \(validThreadCounts.lowerBound)...\(validThreadCounts.upperBound), e.g. 4;"
                + " it is ignored: using all \(threads) cores"
        }
    }

    /// Warnings for the engine's tuning variables set to values it ignores (then it uses the
    /// default): `OPACITY_DERIVED_CACHE_MB` (MiB, a whole number from 0), `OPACITY_DERIVED_RECENT`
    /// (a whole number from 0) and `OPACITY_SPIN_US` (microseconds, 0...1000000). Every program on
    /// the engine prints them with ``threadsVariableWarning``; empty when all are unset or valid.
    public static var tuningVariableWarnings: [String] {
        let env = ProcessInfo.processInfo.environment
        let checks: [(name: String, valid: (String) -> Bool, expected: String, used: String)] = [
            ("OPACITY_DERIVED_CACHE_MB", { Int($0).map { $0 >= 0 } ?? false }, "a whole number of MiB from 0, e.g. 512", "0 (no cache)"),
            ("OPACITY_DERIVED_RECENT", { Int($0).map { $0 >= 0 } ?? false }, "a whole number from 0, e.g. 1", "1"),
            ("OPACITY_SPIN_US", { UInt64($0).map { $0 <= 1_000_000 } ?? false }, "0...1000000 microseconds, e.g. 200", "200"),
        ]
        return checks.compactMap { c in
            guard let v = env[c.name], !v.isEmpty, !c.valid(v) else { return nil }
            return "warning: \(c.name)=\(v) is not valid; expected \(c.expected); it is ignored: using \(c.used)"
        }
    }

    /// The number of threads kernels and OpenBLAS use.
    public static var threads: Int {
        get { _threads }
        set {
            _threads = max(1, newValue)
            BLAS.setThreads(_threads)
        }
    }

    /// Runs `body(i)` for `i` in `0..<count`, spread over the compute threads.
    ///
    /// Work is split into contiguous chunks, one per thread, so the assignment of indices
    /// to threads is deterministic. Small counts run inline.
    @inlinable
    public static func parallelFor(_ count: Int, minPerThread: Int = 1, _ body: (Int) -> Void) {
        let t = min(threads, count / max(1, minPerThread))
        if t <= 1 || count <= 1 {
            for i in 0..<count { body(i) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let box = UnsafeSendableBox(body)
            ComputePool.shared.run(t) { chunk in
                let lo = count * chunk / t, hi = count * (chunk + 1) / t
                for i in lo..<hi { box.value(i) }
            }
        }
    }

    /// Runs `body(range)` over `t` contiguous ranges that cover `0..<count`.
    @inlinable
    public static func parallelRanges(_ count: Int, minPerThread: Int = 4096, _ body: (Range<Int>) -> Void) {
        let t = min(threads, max(1, count / max(1, minPerThread)))
        if t <= 1 {
            body(0..<count)
            return
        }
        withoutActuallyEscaping(body) { body in
            let box = UnsafeSendableBox(body)
            ComputePool.shared.run(t) { chunk in
                let lo = count * chunk / t, hi = count * (chunk + 1) / t
                if lo < hi { box.value(lo..<hi) }
            }
        }
    }
}

extension Compute {
    /// Runs `body(chunk, range)` over `min(threads, count)` contiguous chunks of `0..<count`,
    /// `chunk` numbering them from 0 (an index for per-thread scratch memory).
    ///
    /// The split depends only on `count` and the thread count, so work that accumulates
    /// per chunk and is reduced in chunk order repeats bit for bit.
    static func parallelChunks(_ count: Int, _ body: (Int, Range<Int>) -> Void) {
        let t = min(threads, count)
        if t <= 1 {
            if count > 0 { body(0, 0..<count) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let box = UnsafeSendableBox(body)
            ComputePool.shared.run(t) { chunk in
                box.value(chunk, (count * chunk / t)..<(count * (chunk + 1) / t))
            }
        }
    }
}

/// Carries a non-Sendable value into a concurrent region whose tasks touch disjoint data.
@usableFromInline
struct UnsafeSendableBox<T>: @unchecked Sendable {
    @usableFromInline let value: T
    @usableFromInline init(_ value: T) { self.value = value }
}
