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

    /// Warnings for the engine's tuning variables (``TuningVariable``) set to values it ignores
    /// (then it uses the default). Every program on the engine prints them with
    /// ``threadsVariableWarning``; empty when all are unset or valid.
    public static var tuningVariableWarnings: [String] { TuningVariable.allCases.compactMap(\.warning) }

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
        ComputePool.shared.run(t) { chunk in
            let lo = count * chunk / t, hi = count * (chunk + 1) / t
            for i in lo..<hi { body(i) }
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
        ComputePool.shared.run(t) { chunk in
            let lo = count * chunk / t, hi = count * (chunk + 1) / t
            if lo < hi { body(lo..<hi) }
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
        ComputePool.shared.run(t) { chunk in
            body(chunk, (count * chunk / t)..<(count * (chunk + 1) / t))
        }
    }
}

/// The engine's tuning variables: read once where they are used (``value``), and checked for
/// ``Compute/tuningVariableWarnings`` by the same rule.
package enum TuningVariable: String, CaseIterable, Sendable {
    /// MiB of derived values kept between passes (``TensorMemory/derivedCacheLimitBytes``).
    case derivedCacheMiB = "OPACITY_DERIVED_CACHE_MB"
    /// Derived values kept for the next use outside the cache (``TensorMemory/derivedRecentBytes``).
    case derivedRecent = "OPACITY_DERIVED_RECENT"
    /// Microseconds a compute thread looks for the next parallel region (``ComputePool``).
    case spinMicroseconds = "OPACITY_SPIN_US"
    /// The fewest threads at which GEMM convolutions on small maps split the weight rows
    /// over the threads (``ConvPlan/splitsWeightRows(threads:)``).
    case rowSplitThreads = "OPACITY_ROW_SPLIT_THREADS"
    /// 1: a convolution keeps a batch norm's recipe instead of its output; 2: a norm also keeps
    /// the recipe of a 1x1 convolution that at least doubles the channels instead of its input;
    /// 0: the maps (``Autograd/selectiveRecomputation``, ``Autograd/convolutionRecomputation``).
    case selectiveRecomputation = "OPACITY_SELECTIVE_RECOMPUTATION"
    /// 1 (the default): a ReLU's output (and a frozen norm's input before its ReLU) is kept for
    /// backward without its zeros; 0: as a map (``Autograd/sparseActivations``).
    case sparseActivations = "OPACITY_SPARSE_ACTIVATIONS"
    /// 1 (the default, Linux): blocks of 2 MiB or more are aligned to 2 MiB and marked for
    /// transparent huge pages; 0: plain pages (``TensorStorage/hugePages``).
    case hugePages = "OPACITY_HUGE_PAGES"

    /// The values accepted.
    var range: ClosedRange<Int> {
        switch self {
        case .derivedCacheMiB: return 0...(1 << 30)
        case .derivedRecent: return 0...16
        case .spinMicroseconds: return 0...1_000_000
        case .rowSplitThreads: return 2...1_000_000
        case .selectiveRecomputation: return 0...2
        case .sparseActivations, .hugePages: return 0...1
        }
    }

    /// The value used when the variable is unset or not valid.
    var defaultValue: Int {
        switch self {
        case .derivedCacheMiB: return 0
        case .derivedRecent: return 0
        case .spinMicroseconds: return 200
        case .rowSplitThreads: return 4
        case .selectiveRecomputation: return 2
        case .sparseActivations, .hugePages: return 1
        }
    }

    private var unit: String {
        switch self {
        case .derivedCacheMiB: return " MiB"
        case .derivedRecent: return ""
        case .spinMicroseconds: return " microseconds"
        case .rowSplitThreads: return " threads"
        case .selectiveRecomputation, .sparseActivations, .hugePages: return ""
        }
    }

    private var text: String? {
        guard let s = ProcessInfo.processInfo.environment[rawValue]?.trimmingCharacters(in: .whitespaces), !s.isEmpty else { return nil }
        return s
    }

    /// The variable's value if it is set and in ``range``, else ``defaultValue``.
    package var value: Int {
        if let s = text, let v = Int(s), range.contains(v) { return v }
        return defaultValue
    }

    /// A warning naming the variable, the value given, the values accepted and the one used;
    /// nil when it is unset or valid.
    var warning: String? {
        guard let s = text, Int(s).map(range.contains) != true else { return nil }
        let nearest = Int(s).map { " (the nearest valid value is \(min(max($0, range.lowerBound), range.upperBound)))" } ?? ""
        return "warning: \(rawValue)=\(s) is not valid; expected \(range.lowerBound)...\(range.upperBound)\(unit);"
            + " it is ignored: using the default, \(defaultValue)\(unit)\(nearest)"
    }
}

/// Carries a non-Sendable value into a concurrent region whose tasks touch disjoint data.
@usableFromInline
struct UnsafeSendableBox<T>: @unchecked Sendable {
    @usableFromInline let value: T
    @usableFromInline init(_ value: T) { self.value = value }
}
