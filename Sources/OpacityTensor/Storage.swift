import Foundation

/// The memory pool behind every tensor's storage.
public enum TensorMemory {
    /// The most bytes of freed large blocks kept for reuse (default: an eighth of the
    /// physical memory, at most 2 GiB; `OPACITY_POOL_MB` overrides). Setting it lower
    /// frees cached blocks at once; 0 turns the pool off.
    public static var poolLimitBytes: Int {
        get { StoragePool.limit }
        set { StoragePool.setLimit(newValue) }
    }

    /// The bytes currently held by the pool for reuse.
    public static var pooledBytes: Int { StoragePool.cachedBytes }

    /// The bytes of kernel scratch buffers kept idle for the next kernel that needs one (at
    /// most four buffers; resident, but not tensor storage alive, see ``liveBytes``).
    public static var idleScratchBytes: Int { ScratchBuffers.idleBytes }

    /// The most bytes of values derived from tensors and cached with them until their contents
    /// change (the Winograd-transformed weights of 3x3 convolutions: up to 4x the weights' size;
    /// oneDNN's reordered weights). Default 0 (`OPACITY_DERIVED_CACHE_MB` sets MiB): each pass
    /// transforms a weight once, whatever the number of consecutive uses
    /// (``derivedRecentBytes``). A limit of a few hundred MiB keeps the transforms of inference
    /// passes from one pass to the next: measured on the RetinaNet detectors at 256 px on two
    /// threads (Documentation/Benchmarks.md), forward passes about 5-10% faster for 1.3x to
    /// 1.7x the forward peak memory (resnet34 230 -> 395 MiB). Lowering it drops nothing
    /// already cached; it limits what is added.
    public static var derivedCacheLimitBytes: Int {
        get { DerivedValues.lock.withLock { DerivedValues.limitBytes } }
        set { DerivedValues.lock.withLock { DerivedValues.limitBytes = max(0, newValue) } }
    }

    /// The bytes currently held by derived values (see ``derivedCacheLimitBytes``).
    public static var derivedCachedBytes: Int { DerivedValues.cachedBytes }

    /// Frees the derived values kept outside the cache for a weight's next use and their spare
    /// blocks (``derivedRecentBytes``: up to twice the largest transform, 32 MiB for a
    /// 512-channel F(2x2) one). ``Detector`` calls it between the encoder, the neck and the
    /// head, whose weights are not reused across those parts: the encoder's last transforms
    /// no longer stay alive through the neck, where a 512 px pass peaks (measured, resnet152
    /// RetinaNet at 512 px: tensors alive after the encoder 362 MiB before, 330 after).
    public static func releaseTransientDerivedValues() { DerivedValues.releaseTransient() }

    /// The bytes held outside the cache's budget by the most recent derived values that were
    /// not cached (kept so that consecutive uses of one weight compute its transform once; none
    /// by default, `OPACITY_DERIVED_RECENT` sets how many) and by the blocks of earlier ones
    /// kept for reuse (as many).
    public static var derivedRecentBytes: Int { DerivedValues.recentBytes }

    /// The bytes of tensor storage alive now (allocated sizes, including scratch buffers and
    /// derived values; not the pool's cached free blocks, see ``pooledBytes``).
    public static var liveBytes: Int { StorageAccounting.current.live }

    /// The most bytes of tensor storage alive at once since the process started or since the
    /// last ``resetLivePeak()``.
    public static var livePeakBytes: Int { StorageAccounting.current.peak }

    /// Starts a new high-water mark for ``livePeakBytes`` at the bytes alive now.
    public static func resetLivePeak() { StorageAccounting.resetPeak() }
}

/// The bytes held by live storages, and their high-water mark.
enum StorageAccounting {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var live = 0
    nonisolated(unsafe) private static var peak = 0

    @inline(__always)
    static func add(_ bytes: Int) {
        lock.lock()
        live += bytes
        if live > peak { peak = live }
        lock.unlock()
    }

    @inline(__always)
    static func remove(_ bytes: Int) {
        lock.lock()
        live -= bytes
        lock.unlock()
    }

    static var current: (live: Int, peak: Int) {
        lock.lock()
        defer { lock.unlock() }
        return (live, peak)
    }

    static func resetPeak() {
        lock.lock()
        peak = live
        lock.unlock()
    }
}

/// A contiguous, 64-byte aligned block of `Float` values owned by one or more tensors.
///
/// Storage is a reference type; ``Tensor`` gives it value semantics by copying on write
/// only when a storage block is shared and about to be mutated. Kernels never copy.
///
/// Large blocks come from a process-wide pool (see ``cacheLimitBytes``): a network's
/// forward and backward passes allocate the same sizes over and over, and reusing freed
/// blocks saves the page faults and kernel zeroing of fresh memory on every step.
/// Internal to the engine (package access); ``TensorMemory`` exposes the pool's settings.
@usableFromInline package final class TensorStorage: @unchecked Sendable {
    /// The first element.
    @usableFromInline package let base: UnsafeMutablePointer<Float>
    /// The number of elements.
    @usableFromInline package let count: Int
    /// The allocated size in bytes (a pool size class for large blocks).
    private let capacityBytes: Int
    /// Whether the block is a lazily mapped region of zero pages (``init(lazyZeroCount:)``).
    private let mapped: Bool
    /// Counts in-place changes of the contents: ``Tensor/withUnsafeMutableBufferPointer(_:)``
    /// (the one way to change an existing tensor: optimizers, gradient accumulation, weight
    /// loading) bumps it before handing out the pointer. Values derived from the contents and
    /// cached on the storage (``derived(_:count:compute:)``) are valid for one version only.
    package private(set) var version: UInt64 = 0
    /// Values derived from the contents by kernels, by key, with the version each was computed
    /// from (guarded by ``DerivedValues/lock``; nil until the first one).
    /// A nil value marks a version seen once; a `transient` value is one of the few most
    /// recent ones kept outside the cache's budget (``DerivedValues/recent``).
    private var derivedValues: [String: (version: UInt64, value: TensorStorage?, transient: Bool)]?

    /// Allocates uninitialised storage for `count` elements.
    ///
    /// With `longLived` (an optimizer's moments, made in the first step and kept for the whole
    /// run), a block of the request's own size class: never a cached block of a larger class,
    /// which a short-lived activation may take as it is (``StoragePool/allocate(_:longLived:)``).
    package init(uninitializedCount count: Int, longLived: Bool = false) {
        self.count = count
        let bytes = max(1, count) * MemoryLayout<Float>.stride
        let (raw, capacity) = StoragePool.allocate(bytes, longLived: longLived)
        StorageAccounting.add(capacity)
        capacityBytes = capacity
        mapped = false
        base = raw.bindMemory(to: Float.self, capacity: max(1, count))
    }

    /// Zeros that take no memory until written: an anonymous mapping without reserved
    /// swap, whose pages the kernel only provides when touched. For building a model to
    /// learn its parameter shapes (``Initializer/withShapeProbe(_:)``) whatever its size.
    /// Returns `nil` when the address space cannot hold it.
    public init?(lazyZeroCount count: Int) {
        let bytes = max(1, count) * MemoryLayout<Float>.stride
        #if os(Linux)
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
        #else
        let flags = MAP_PRIVATE | MAP_ANON
        #endif
        guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, flags, -1, 0), p != MAP_FAILED else { return nil }
        self.count = count
        capacityBytes = bytes
        mapped = true
        base = p.bindMemory(to: Float.self, capacity: max(1, count))
    }

    /// Allocates storage with every element set to `value`.
    package convenience init(count: Int, repeating value: Float, longLived: Bool = false) {
        self.init(uninitializedCount: count, longLived: longLived)
        if value == 0 {
            memset(base, 0, count * MemoryLayout<Float>.stride)
        } else {
            base.initialize(repeating: value, count: count)
        }
    }

    /// A fresh copy of this storage.
    package func copy() -> TensorStorage {
        let s = TensorStorage(uninitializedCount: count)
        if count > 0 { s.base.update(from: base, count: count) }
        return s
    }

    /// Marks the contents as about to change: cached derived values go stale and are released
    /// at once (not at their next use: a weight's transforms cached by a validation pass would
    /// otherwise stay through the training steps that follow, for nothing). The caller holds the
    /// only reference to this storage (``Tensor/withUnsafeMutableBufferPointer(_:)`` copies a
    /// shared one first), so no other thread reads the values being dropped.
    @inline(__always)
    package func contentsWillChange() {
        version &+= 1
        if derivedValues != nil { releaseDerivedValues() }
        regeneration = nil
        sparse = nil
    }

    /// The contents without their zeros (``SparseActivation``), set by a ReLU that records a
    /// node and keeps that form for its backward (``Autograd/sparseActivations``). A
    /// convolution that saves this storage as its input keeps it too (``SavedActivation``),
    /// so the map itself is freed once the forward pass is done with it. Any change of the
    /// contents drops it.
    package var sparse: SparseActivation?

    /// How to compute these contents again, bit for bit, from values that a backward pass
    /// keeps anyway (selective recomputation): set by an op whose output is an elementwise
    /// function of what its own node saved, such as a batch norm with its fused ReLU
    /// (``Tensor/batchNorm2d(weight:bias:mean:variance:eps:relu:)``). A convolution that would
    /// save this storage as its input for backward keeps the recipe instead
    /// (``SavedActivation``), so the map is freed as soon as the forward pass is done with it
    /// and is written again, into a temporary, only while the convolution's backward runs.
    ///
    /// A 1x1 convolution that at least doubles its channels leaves one too (``Autograd/convolutionRecomputation``): the same kernel again on
    /// its input, which it keeps anyway for its weight gradient.
    ///
    /// The recipe fills the tensor it gets (uninitialised, of this storage's shape). It holds
    /// what it reads (the norm's saved input and coefficients, the convolution's saved input and
    /// weight) for as long as it is set; any change of the contents (``contentsWillChange()``:
    /// an in-place `+` or ReLU, an optimizer step) drops it. Set only by ops that record a
    /// node, so inference never holds the extra input.
    package var regeneration: (@Sendable (Tensor) -> Void)?

    /// Drops every cached derived value, keeping the versions noted (so the next use at the new
    /// version counts as a first use). ``Module/train(_:)`` calls it for every parameter when
    /// a model goes into training mode.
    package func releaseDerivedValues() {
        guard derivedValues != nil else { return }
        var released: [TensorStorage] = []
        DerivedValues.lock.lock()
        for (key, entry) in derivedValues! {
            guard let value = entry.value else { continue }
            if !entry.transient { DerivedValues.cached -= value.count * MemoryLayout<Float>.stride }
            released.append(value)
            derivedValues![key] = (entry.version, nil, false)
        }
        DerivedValues.lock.unlock()
        released.removeAll()  // freed outside the lock
    }

    /// A value derived from the contents (for example a kernel's transformed weights), cached on
    /// this storage from its second use on, for as long as the contents stay unchanged (same
    /// ``version``).
    ///
    /// `compute` fills a fresh storage of `count` floats from the current contents. The first
    /// use at a version only notes the version (a weight that changes after every use, as in a
    /// training step that uses it once, costs no memory); the second use keeps its result when
    /// ``TensorMemory/derivedCacheLimitBytes`` allows, and later uses return it. Safe to call
    /// from concurrent threads reading the same storage (threads missing at once may each
    /// compute; every result is correct). The caller keeps the returned storage alive while it
    /// reads it.
    ///
    /// With `keep` false (a pass that records a graph: training) a value already cached at this
    /// version is still returned, but nothing new is kept: measured on the RetinaNet detectors at
    /// 256 px, keeping transforms in training raised the step's peak by about 200 MiB and made
    /// the step no faster (resnet34 856 ms with, 859 without; resnet50 1047 and 954).
    ///
    /// Whatever is not kept in the cache stays on as one of the ``DerivedValues/recentCapacity``
    /// most recent values of the process (outside the cache's budget), so that consecutive uses
    /// of one weight (a head layer run over every pyramid level in turn, forward or backward)
    /// compute it once, in training and with the cache off too.
    package func derived(_ key: String, count: Int, keep: Bool = true, compute: (UnsafeMutablePointer<Float>) -> Void) -> TensorStorage {
        let current = version
        let stride = MemoryLayout<Float>.stride
        DerivedValues.lock.lock()
        let seen = derivedValues?[key]
        if let seen, seen.version == current, let value = seen.value, value.count == count {
            if seen.transient, keep, DerivedValues.cached + count * stride <= DerivedValues.limitBytes {
                // Second use in a pass that keeps values: into the cache.
                derivedValues![key] = (current, value, false)
                DerivedValues.cached += count * stride
                DerivedValues.forget(value)
            }
            DerivedValues.lock.unlock()
            return value
        }
        let store = keep && seen?.version == current
        var released: [TensorStorage] = []  // freed outside the lock
        if seen == nil || seen!.version < current || seen!.value != nil {
            // First use at this version (or a value of another size): note it, and drop a
            // stale value.
            if let old = seen?.value {
                if !seen!.transient { DerivedValues.cached -= old.count * stride }
                released.append(old)
            }
            if derivedValues == nil { derivedValues = [:] }
            derivedValues![key] = (current, nil, false)
        }
        let spare = DerivedValues.takeSpare(count: count)
        DerivedValues.lock.unlock()
        released.removeAll()
        let value = spare ?? TensorStorage(uninitializedCount: count)
        compute(value.base)
        DerivedValues.lock.lock()
        DerivedValues.computed += 1
        if let now = derivedValues?[key], now.version == current, now.value == nil {
            if store && DerivedValues.cached + count * stride <= DerivedValues.limitBytes {
                derivedValues![key] = (current, value, false)
                DerivedValues.cached += count * stride
            } else if DerivedValues.recentCapacity > 0 {
                derivedValues![key] = (current, value, true)
                released = DerivedValues.remember(value, of: self, key: key)
            }
        }
        DerivedValues.lock.unlock()
        released.removeAll()
        return value
    }

    /// The size of the transient value `value` of `key` if it is still the one held, else 0
    /// (called by ``DerivedValues`` with its lock held).
    fileprivate func transientCount(_ key: String, ifIdenticalTo value: ObjectIdentifier) -> Int {
        guard let entry = derivedValues?[key], entry.transient, let held = entry.value, ObjectIdentifier(held) == value
        else { return 0 }
        return held.count
    }

    /// Drops the transient value `value` of `key` if it is still the one held (called by
    /// ``DerivedValues`` with its lock held when a newer value takes its place); returns it for
    /// the caller to free outside the lock.
    fileprivate func dropTransient(_ key: String, ifIdenticalTo value: ObjectIdentifier) -> TensorStorage? {
        guard let entry = derivedValues?[key], entry.transient, let held = entry.value,
            ObjectIdentifier(held) == value
        else { return nil }
        derivedValues![key] = (entry.version, nil, false)
        return held
    }

    deinit {
        if derivedValues != nil {
            let bytes = derivedValues!.values.reduce(0) { $0 + ($1.transient ? 0 : ($1.value?.count ?? 0)) * MemoryLayout<Float>.stride }
            DerivedValues.lock.lock()
            DerivedValues.cached -= bytes
            DerivedValues.lock.unlock()
        }
        if mapped {
            munmap(UnsafeMutableRawPointer(base), capacityBytes)
        } else {
            StorageAccounting.remove(capacityBytes)
            StoragePool.release(UnsafeMutableRawPointer(base), capacityBytes)
        }
    }

    /// The most bytes of freed large blocks kept for reuse (default: an eighth of the
    /// physical memory, at most 2 GiB; `OPACITY_POOL_MB` overrides). Setting it lower
    /// frees cached blocks at once; 0 turns the pool off.
    package static var cacheLimitBytes: Int {
        get { StoragePool.limit }
        set { StoragePool.setLimit(newValue) }
    }

    /// The bytes currently held by the pool for reuse.
    package static var cachedBytes: Int { StoragePool.cachedBytes }

    /// Bytes of large blocks mapped fresh from the system so far (each page costs a fault
    /// when first written; reused blocks cost none).
    package static var mappedBytes: Int { StoragePool.lockedMappedBytes }

    /// Bytes of tail pages the pool has given back to the system so far: the pages past a
    /// request in a larger cached block that served it and was still in use
    /// `OPACITY_POOL_TAIL_AGE` requests later (default 8).
    package static var tailBytesReleased: Int { StoragePool.lockedTailBytesReleased }

    /// How many requests later a larger cached block serving a smaller request gives back its
    /// tail if still in use (`OPACITY_POOL_TAIL_AGE`, default 8; read once).
    package static var poolTailReleaseAge: Int { StoragePool.tailReleaseAge }

    /// Lets the pool's high-water mark of blocks in use start again from those in use now
    /// (for tests of its policy).
    package static func resetPoolHighWaterMark() { StoragePool.resetHighWaterMark() }

    /// Whether the pool maps blocks of 2 MiB or more aligned to 2 MiB and marks them for
    /// transparent huge pages (`madvise(MADV_HUGEPAGE)`; Linux only; the kernel uses them where
    /// /sys/kernel/mm/transparent_hugepage/enabled is `always` or `madvise`). Default on;
    /// `OPACITY_HUGE_PAGES=0` (read once, at the first block) turns it off. A fresh block then
    /// costs one page fault per 2 MiB instead of one per 4 KiB, and large tensors fewer TLB
    /// misses. Measured (Documentation/Benchmarks.md, "Huge pages"): a resnet50 RetinaNet's
    /// training step at 512 px, batch 2, 2 threads, took 1.17M minor page faults per run
    /// before and 76K after, and 6.3 s instead of 7.3-7.4 s; peak memory unchanged.
    package static var hugePages: Bool { StoragePool.hugePages }

    /// The slack the pool allows over its high-water mark of blocks in use, as a fraction
    /// 1/`poolSlackDivisor` of the mark (default 64, `OPACITY_POOL_SLACK` sets it at start; 0: no
    /// slack). The mark includes the weights, which never churn, so a large model's slack is
    /// mostly cached blocks resident beside the peak: measured at 512 px, 2 threads, frozen batch
    /// norm (`opacity-bench detector`, Benchmarks.md "Pool slack"), resnet152's forward peak
    /// 437 MiB at 1/32, 429 at 1/64, 427 at none, for 0, 82 and 203 MiB of fresh pages per pass;
    /// resnet34's training peak 987, 979, 964 MiB for 542, 582, 642 MiB of fresh pages per step
    /// (each fresh page costs a fault and the kernel's zeroing). Tests of the policy set 0 so
    /// that blocks other code holds (which raise the mark and so the slack) do not change what
    /// they measure.
    package static var poolSlackDivisor: Int {
        get { StoragePool.lockedSlackDivisor }
        set { StoragePool.setSlackDivisor(newValue) }
    }
}

/// The accounting of values cached on storages (``TensorStorage/derived(_:count:compute:)``).
package enum DerivedValues {
    static let lock = NSLock()
    /// Bytes held by cached derived values now.
    nonisolated(unsafe) static var cached = 0
    /// The most bytes of derived values kept (``TensorMemory/derivedCacheLimitBytes``). Past
    /// it, derived values are computed for each use. Read and written with ``lock`` held.
    nonisolated(unsafe) static var limitBytes: Int = TuningVariable.derivedCacheMiB.value << 20

    /// How many derived values not kept in the cache stay on, the most recent first, with as
    /// many spare blocks (``TensorStorage/derived(_:count:keep:compute:)``;
    /// `OPACITY_DERIVED_RECENT`, default 0: each use computes its transform). With one, a
    /// RetinaNet head layer run over the pyramid's levels in turn computes its F(2x2) transform
    /// once for P3 and P4 instead of twice (F(4x4) serves P2 only, im2col P5-P7), but the value
    /// and a spare stay alive at the head's peak: measured at 512 px (Benchmarks.md, "Weight
    /// transforms computed per use"), 0 lowers resnet152's forward peak from 452 to 437 MiB and
    /// resnet18's training peak from 819 to 793, for one more F(2x2) transform per head layer
    /// and pass (an F(4x4) one of 256x256 weights took 0.35 ms). Settable between passes (tests).
    nonisolated(unsafe) package static var recentCapacity = TuningVariable.derivedRecent.value

    /// The most recent transient values, oldest first: the storage they were derived from
    /// (weak: a value dies with its storage), their key and the value's identity. Read and
    /// written with ``lock`` held.
    private struct Recent {
        weak var owner: TensorStorage?
        let key: String
        let value: ObjectIdentifier
    }
    nonisolated(unsafe) private static var recent: [Recent] = []

    /// Notes `value` as the newest transient value of `owner` under `key`, dropping the oldest
    /// past ``recentCapacity``; returns what was dropped and its owner, to be freed outside the lock. Call
    /// with ``lock`` held.
    static func remember(_ value: TensorStorage, of owner: TensorStorage, key: String) -> [TensorStorage] {
        recent.append(Recent(owner: owner, key: key, value: ObjectIdentifier(value)))
        guard recent.count > recentCapacity else { return [] }
        let oldest = recent.removeFirst()
        // The owner comes back too: if another thread lets go of it meanwhile, its last
        // reference (whose release takes this lock) must go after the lock is released.
        guard let held = oldest.owner else { return [] }
        guard var dropped = held.dropTransient(oldest.key, ifIdenticalTo: oldest.value) else { return [held] }
        // Kept for the next value of its size unless a kernel still reads it.
        guard isKnownUniquelyReferenced(&dropped) else { return [held, dropped] }
        spares.append(dropped)
        return spares.count > recentCapacity ? [held, spares.removeFirst()] : [held]
    }

    /// Storages of transient values that were let go, kept for the next value of the same
    /// size (at most ``recentCapacity``: a head layer's F(4x4) and F(2x2) transforms take turns
    /// with one block each): the pool, sized to the pass's high-water mark, would
    /// unmap and map them again (measured, resnet34 RetinaNet forward pass at 256 px with the
    /// cache off: 65 MiB of fresh pages without spares, 5 MiB with two, 14 MiB with one).
    /// Read and written with ``lock`` held.
    nonisolated(unsafe) private static var spares: [TensorStorage] = []

    /// Lets go of every transient value and spare block (``TensorMemory/releaseTransientDerivedValues()``).
    static func releaseTransient() {
        var freed: [TensorStorage] = []  // owners and values, released after the lock
        lock.lock()
        for r in recent {
            guard let owner = r.owner else { continue }
            freed.append(owner)
            if let value = owner.dropTransient(r.key, ifIdenticalTo: r.value) { freed.append(value) }
        }
        recent = []
        freed += spares
        spares = []
        lock.unlock()
        freed.removeAll()
    }

    /// A kept storage of exactly `count` floats, if there is one. Call with ``lock`` held.
    static func takeSpare(count: Int) -> TensorStorage? {
        guard let i = spares.firstIndex(where: { $0.count == count }) else { return nil }
        return spares.remove(at: i)
    }

    /// The bytes of the transient values still held and of the spare blocks.
    static var recentBytes: Int {
        var owners: [TensorStorage] = []  // released after the lock (see ``remember(_:of:key:)``)
        lock.lock()
        var count = spares.reduce(0) { $0 + $1.count }
        for r in recent {
            guard let owner = r.owner else { continue }
            owners.append(owner)
            count += owner.transientCount(r.key, ifIdenticalTo: r.value)
        }
        lock.unlock()
        owners.removeAll()
        return count * MemoryLayout<Float>.stride
    }

    /// Stops tracking `value` as transient (it moved into the cache). Call with ``lock`` held.
    static func forget(_ value: TensorStorage) {
        let id = ObjectIdentifier(value)
        recent.removeAll { $0.value == id }
    }

    /// How many derived values were computed since the process started (for tests).
    nonisolated(unsafe) static var computed = 0
    package static var computedCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return computed
    }

    /// The bytes held by cached derived values now.
    package static var cachedBytes: Int {
        lock.lock()
        defer { lock.unlock() }
        return cached
    }
}

/// Size-classed free lists of large aligned blocks (see ``TensorStorage``).
///
/// Large blocks are mapped from the system directly (`mmap`), so a block the pool lets go
/// leaves the resident set at once (a `malloc`'d block would stay in the heap). The pool's
/// footprint (blocks in use plus blocks cached) stays within the most bytes in use at once so
/// far, plus 1/64 (``TensorStorage/poolSlackDivisor``): a request that finds no block of its class takes a cached block of up to
/// twice its size as it is (its pages are touched already), else maps a new one while the
/// footprint stays under that mark; past it, it takes the smallest larger cached block and
/// unmaps its tail, or else unmaps cached blocks before mapping a new one. Freed blocks of sizes
/// that are no longer asked for (the batch-1 forward pass before batch-2 training, a smaller
/// image) so cannot pile up on top of what a training step needs, while a repeated step
/// reuses nearly all its blocks (measured with 1/32: 112 MiB of fresh pages per step of a resnet34
/// RetinaNet at 256 px, batch 2, against 822 MiB with no slack and no oversized reuse).
enum StoragePool {
    /// Blocks smaller than this come from `malloc` directly.
    static let minPooledBytes = 256 << 10
    static let alignment = 64

    private static let lock = NSLock()
    nonisolated(unsafe) private static var free: [Int: [UnsafeMutableRawPointer]] = [:]
    nonisolated(unsafe) private static var cached = 0
    /// Bytes of pooled-size blocks in use, and the most in use at once so far.
    nonisolated(unsafe) private static var inUse = 0
    nonisolated(unsafe) private static var peakInUse = 0
    nonisolated(unsafe) private static var slackDivisor: Int = {
        if let s = ProcessInfo.processInfo.environment["OPACITY_POOL_SLACK"], let v = Int(s), v >= 0 { return v }
        return 64
    }()

    static var lockedSlackDivisor: Int {
        lock.lock()
        defer { lock.unlock() }
        return slackDivisor
    }

    static func setSlackDivisor(_ divisor: Int) {
        lock.lock()
        slackDivisor = max(0, divisor)
        lock.unlock()
    }

    /// The footprint allowed before cached blocks are cut or unmapped: the high-water mark plus
    /// 1/`slackDivisor` of it (``TensorStorage/poolSlackDivisor``). Call with the lock held.
    private static var allowedFootprint: Int { peakInUse + (slackDivisor > 0 ? peakInUse / slackDivisor : 0) }
    nonisolated(unsafe) private(set) static var limit: Int = {
        if let s = ProcessInfo.processInfo.environment["OPACITY_POOL_MB"], let mb = Int(s), mb >= 0 { return mb << 20 }
        return Int(min(ProcessInfo.processInfo.physicalMemory / 8, 2 << 30))
    }()

    static var lockedMappedBytes: Int {
        lock.lock()
        defer { lock.unlock() }
        return mappedBytes
    }

    static var cachedBytes: Int {
        lock.lock()
        defer { lock.unlock() }
        return cached
    }

    /// The size class of a request: rounded up to an eighth of its power of two
    /// (at most 12.5% waste), so similar sizes share blocks. Classes of pooled sizes are
    /// multiples of the page size.
    @inline(__always)
    static func sizeClass(_ bytes: Int) -> Int {
        if bytes < minPooledBytes { return bytes }
        let top = Int.bitWidth - 1 - bytes.leadingZeroBitCount
        let step = 1 << (top - 3)
        return (bytes + step - 1) & ~(step - 1)
    }

    /// A block of at least `bytes`: `(start, size)`, `size` the block's class, which
    /// ``release(_:_:)`` takes back.
    ///
    /// A short-lived request may get a cached block of a class up to twice its own, whose pages
    /// are touched already. A `longLived` one never does: it would hold the larger block for as
    /// long as it lives, and the pool's footprint follows the bytes in use. Measured: Adam's
    /// moments, made in a RetinaNet's first training step (resnet50, 512 px, batch 2) while the
    /// pool held that step's activation blocks, took 478 MiB of blocks for 318 MiB of state, and
    /// the 160 MiB more stayed in use at every later step's peak.
    static func allocate(_ bytes: Int, longLived: Bool = false) -> (UnsafeMutableRawPointer, Int) {
        let size = sizeClass(bytes)
        guard size >= minPooledBytes else {
            return (UnsafeMutableRawPointer.allocate(byteCount: size, alignment: alignment), size)
        }
        var evicted: [(UnsafeMutableRawPointer, Int)] = []
        lock.lock()
        requests += 1
        inUse += size
        peakInUse = max(peakInUse, inUse)
        if var list = free[size], let p = list.popLast() {
            free[size] = list.isEmpty ? nil : list
            cached -= size
            releaseDueTails()
            lock.unlock()
            return (p, size)
        }
        // A cached block of the next classes up (at most twice the size) serves as it is: its
        // pages are touched already, and it goes back to its own class. If it is still in use
        // after ``tailReleaseAge`` more requests, the pages past the request go back to the
        // system (``releaseTail(_:used:size:)``).
        if !longLived, let key = free.keys.filter({ $0 > size && $0 <= 2 * size }).min(), var list = free[key], let p = list.popLast() {
            free[key] = list.isEmpty ? nil : list
            cached -= key
            inUse += key - size
            peakInUse = max(peakInUse, inUse)
            if key - size >= minPooledBytes { untrimmed.append((p, bytes, key, requests)) }
            releaseDueTails()
            lock.unlock()
            return (p, key)
        }
        releaseDueTails()
        // Below the high-water mark a fresh block costs no footprint beyond what the process
        // already needed once; the cached blocks stay for their own sizes.
        if inUse + cached <= allowedFootprint {
            lock.unlock()
            return (map(size), size)
        }
        // Else the smallest larger cached block, cut to this class ...
        if let key = free.keys.filter({ $0 > size }).min(), var list = free[key], let p = list.popLast() {
            free[key] = list.isEmpty ? nil : list
            cached -= key
            lock.unlock()
            unmap(p + size, key - size)
            return (p, size)
        }
        // ... or smaller cached blocks make room for the new one, largest first.
        for key in free.keys.sorted(by: >) where inUse + cached > allowedFootprint {
            guard var list = free[key] else { continue }
            while inUse + cached > allowedFootprint, let q = list.popLast() {
                cached -= key
                evicted.append((q, key))
            }
            free[key] = list.isEmpty ? nil : list
        }
        lock.unlock()
        for (q, n) in evicted { unmap(q, n) }
        return (map(size), size)
    }

    static func release(_ p: UnsafeMutableRawPointer, _ size: Int) {
        guard size >= minPooledBytes else {
            p.deallocate()
            return
        }
        lock.lock()
        if !untrimmed.isEmpty, let i = untrimmed.firstIndex(where: { $0.block == p }) { untrimmed.remove(at: i) }  // died young
        inUse -= size
        if size > limit {
            lock.unlock()
            unmap(p, size)
            return
        }
        var evicted: [(UnsafeMutableRawPointer, Int)] = []
        // Make room by dropping blocks of other sizes, largest classes first.
        if cached + size > limit {
            for key in free.keys.sorted(by: >) where key != size {
                evict(key, until: limit - size, into: &evicted)
                if cached + size <= limit { break }
            }
        }
        if cached + size <= limit {
            free[size, default: []].append(p)
            cached += size
        } else {
            evicted.append((p, size))
        }
        lock.unlock()
        for (q, n) in evicted { unmap(q, n) }
    }

    /// Bytes mapped fresh from the system so far (each costs page faults when first written).
    nonisolated(unsafe) private(set) static var mappedBytes = 0

    /// Lets the high-water mark of blocks in use start again from the blocks in use now.
    static func resetHighWaterMark() {
        lock.lock()
        peakInUse = inUse
        lock.unlock()
    }

    /// A fresh block of `size` bytes (a multiple of the page size) from the system.
    static func map(_ size: Int) -> UnsafeMutableRawPointer {
        lock.lock()
        mappedBytes += size
        lock.unlock()
        #if os(Linux)
        let flags = MAP_PRIVATE | MAP_ANONYMOUS
        #else
        let flags = MAP_PRIVATE | MAP_ANON
        #endif
        let huge = hugePages && size >= hugePageBytes
        let request = huge ? size + hugePageBytes : size
        guard let raw = mmap(nil, request, PROT_READ | PROT_WRITE, flags, -1, 0), raw != MAP_FAILED else {
            let code = errno
            fatalError("TensorStorage: cannot map \(size) bytes: \(String(cString: strerror(code)))")
        }
        guard huge else { return raw }
        // Keep the huge-page-aligned `size` bytes inside the larger mapping and give back the
        // head and tail, so that every whole 2 MiB of the block can be one huge page.
        let address = UInt(bitPattern: raw)
        let aligned = (address + UInt(hugePageBytes - 1)) & ~UInt(hugePageBytes - 1)
        let head = Int(aligned - address)
        let p = raw + head
        unmap(raw, head)
        unmap(p + size, hugePageBytes - head)
        #if os(Linux)
        _ = madvise(p, size, MADV_HUGEPAGE)
        #endif
        return p
    }

    /// The size of a transparent huge page (x86-64 and most arm64 Linux kernels: 2 MiB).
    static let hugePageBytes = 2 << 20

    /// See ``TensorStorage/hugePages``.
    static let hugePages: Bool = {
        #if os(Linux)
        return TuningVariable.hugePages.value == 1
        #else
        return false
        #endif
    }()

    /// Requests served so far (``allocate(_:longLived:)`` of pooled sizes). Read and written
    /// with the lock held.
    nonisolated(unsafe) private static var requests = 0

    /// Blocks in use that serve a smaller request with their tail still resident: the block,
    /// the bytes asked for, the block's size and the request number it was taken at. Read and
    /// written with the lock held.
    nonisolated(unsafe) private static var untrimmed: [(block: UnsafeMutableRawPointer, used: Int, size: Int, at: Int)] = []

    /// How many requests later a larger block serving a smaller request gives back its tail if
    /// it is still in use (`OPACITY_POOL_TAIL_AGE`, default 8; 0: at once). Most such blocks
    /// hold a short-lived map that is freed within a few requests and keep their pages; one
    /// still in use by then (an encoder stage's output, kept until the feature pyramid reads it)
    /// would hold the tail for the rest of the pass. Measured (resnet152 RetinaNet, 512 px, 2
    /// threads; forward peak / tail pages given back, and so faulted in again later, per pass):
    /// never (before) 422 MiB / 0; at once 414 / 243 MiB; after 4 requests 415 / 156; 8: 415 /
    /// 26; 16: 416 / 13; 32: 417-418 / 11.
    static let tailReleaseAge: Int = {
        if let s = ProcessInfo.processInfo.environment["OPACITY_POOL_TAIL_AGE"], let v = Int(s), v >= 0 { return v }
        return 8
    }()

    /// Bytes of tail pages given back so far (``releaseTail(_:used:size:)``), for reports.
    nonisolated(unsafe) private static var tailBytesReleased = 0
    static var lockedTailBytesReleased: Int {
        lock.lock()
        defer { lock.unlock() }
        return tailBytesReleased
    }

    /// Gives back the tails of the blocks in ``untrimmed`` that have been in use for
    /// ``tailReleaseAge`` requests (``releaseTail(_:used:size:)``) and counts them. Call with
    /// the lock held: the `madvise` must run before the block can be freed and handed whole to
    /// another request, whose data in the tail it would otherwise wipe (26-27 MiB per resnet152 forward pass
    /// at the default age, Benchmarks.md).
    private static func releaseDueTails() {
        guard let first = untrimmed.first, requests - first.at >= tailReleaseAge else { return }
        let due = untrimmed.prefix { requests - $0.at >= tailReleaseAge }
        untrimmed.removeFirst(due.count)
        for t in due {
            tailBytesReleased += t.size - tailStart(used: t.used, size: t.size)
            releaseTail(t.block, used: t.used, size: t.size)
        }
    }

    /// Gives the resident pages of the block `p` (`size` bytes) past its first `used` bytes
    /// back to the system, keeping the mapping: the block serves a smaller request (see
    /// ``allocate(_:longLived:)``), and its tail would otherwise stay resident for as long as
    /// the request lives, unused. A later use of the whole block finds zero-filled pages there
    /// (`madvise(MADV_DONTNEED)`, Linux; elsewhere nothing is given back). The cut is rounded up
    /// to a whole huge page in a huge-page block (so its huge pages are not split), else to a
    /// page.
    ///
    /// Measured (resnet152 RetinaNet, 512 px, batch 1): the encoder's stage outputs, which live
    /// until the feature pyramid reads them, had taken 16 and 8 MiB blocks for 8 and 4 MiB maps.
    static func releaseTail(_ p: UnsafeMutableRawPointer, used: Int, size: Int) {
        #if os(Linux)
        let keep = tailStart(used: used, size: size)
        if keep < size { _ = madvise(p + keep, size - keep, MADV_DONTNEED) }
        #endif
    }

    /// Where ``releaseTail(_:used:size:)`` cuts: `used` rounded up to a whole huge page in a
    /// huge-page block, else to a page; `size` (nothing to give back) when less than
    /// ``minPooledBytes`` would go.
    static func tailStart(used: Int, size: Int) -> Int {
        let unit = hugePages && size >= hugePageBytes ? hugePageBytes : Int(getpagesize())
        let keep = (used + unit - 1) / unit * unit
        return size - keep >= minPooledBytes ? keep : size
    }

    /// Returns `size` bytes at `p` to the system.
    static func unmap(_ p: UnsafeMutableRawPointer, _ size: Int) {
        if size > 0 { munmap(p, size) }
    }

    /// Moves blocks of class `key` to `evicted` until at most `target` bytes stay cached.
    /// Call with the lock held.
    private static func evict(_ key: Int, until target: Int, into evicted: inout [(UnsafeMutableRawPointer, Int)]) {
        guard var list = free[key] else { return }
        while cached > target, let q = list.popLast() {
            cached -= key
            evicted.append((q, key))
        }
        free[key] = list.isEmpty ? nil : list
    }

    static func setLimit(_ bytes: Int) {
        lock.lock()
        limit = max(0, bytes)
        var evicted: [(UnsafeMutableRawPointer, Int)] = []
        for key in free.keys.sorted(by: >) { evict(key, until: limit, into: &evicted) }
        lock.unlock()
        for (q, n) in evicted { unmap(q, n) }
        ScratchBuffers.drain()  // idle kernel scratch goes too; the next call maps its own
    }
}

/// Kernel scratch buffers kept across calls, outside the storage pool.
///
/// Kernels ask for large scratch (the Winograd kernels: the transformed input and the products
/// of a block of tiles for every thread, 28 MiB for a 256-channel layer on two threads) once per
/// call, in a size class nothing else uses. Through the pool, whose footprint stays within its
/// high-water mark plus a slack (then 1/32), such a block was cut or unmapped to serve the next activations and
/// mapped fresh at the next call: 190-220 MiB of fresh pages per batch-1 forward pass of a
/// ResNet-34 RetinaNet at 256 px (measured), 20% of that pass's time on an idle machine. Here a
/// few buffers are kept instead and reused whole: a request takes the smallest idle buffer that
/// holds it, else maps one (dropping the largest idle buffer that is too small); at most
/// ``maxIdle`` stay idle (concurrent requests, as in `opacity serve`, each hold their own), and
/// none when the pool is off (``TensorMemory/poolLimitBytes`` 0). Fresh buffers count in
/// ``TensorStorage/mappedBytes``.
package enum ScratchBuffers {
    /// Idle buffers kept for reuse, at most.
    static let maxIdle = 4
    private static let lock = NSLock()
    /// Idle buffers (start, bytes), smallest first.
    nonisolated(unsafe) private static var idle: [(UnsafeMutableRawPointer, Int)] = []

    /// The bytes held by idle buffers.
    package static var idleBytes: Int { lock.withLock { idle.reduce(0) { $0 + $1.1 } } }

    /// A buffer of at least `bytes` bytes (page aligned), to be returned with ``give(_:_:)``.
    static func take(_ bytes: Int) -> (UnsafeMutableRawPointer, Int) {
        lock.lock()
        if let i = idle.firstIndex(where: { $0.1 >= bytes }) {
            let b = idle.remove(at: i)
            lock.unlock()
            return b
        }
        let tooSmall = idle.popLast()
        lock.unlock()
        if let (p, n) = tooSmall { StoragePool.unmap(p, n) }
        let size = StoragePool.sizeClass(bytes)
        return (StoragePool.map(size), size)
    }

    /// Returns a buffer from ``take(_:)``.
    static func give(_ p: UnsafeMutableRawPointer, _ size: Int) {
        lock.lock()
        guard StoragePool.limit > 0 else {
            lock.unlock()
            StoragePool.unmap(p, size)
            return
        }
        let at = idle.firstIndex(where: { $0.1 >= size }) ?? idle.count
        idle.insert((p, size), at: at)
        let dropped = idle.count > maxIdle ? idle.removeFirst() : nil
        lock.unlock()
        if let (q, n) = dropped { StoragePool.unmap(q, n) }
    }

    /// Unmaps every idle buffer (for tests and for emptying the pool).
    static func drain() {
        lock.lock()
        let all = idle
        idle = []
        lock.unlock()
        for (p, n) in all { StoragePool.unmap(p, n) }
    }
}
