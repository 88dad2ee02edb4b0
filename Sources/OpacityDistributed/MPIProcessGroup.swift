import Foundation
import OpacityTensor
import OpacityTraining

/// A ``ProcessGroup`` over MPI: the trainer's and the inference commands' collectives.
///
/// Sums of statistics and loss terms gather every rank's vector and add it in rank order;
/// gradients go through ``BucketedGradientReducer`` on a communicator of their own.
public final class MPIProcessGroup: ProcessGroup, @unchecked Sendable {
    /// The communicator of the main thread's collectives.
    public let world: Communicator
    /// Gradient bucket size in bytes (PyTorch DDP's default: 25 MiB).
    public var bucketBytes: Int
    /// This rank's share of the current step's global batch (set by the trainer each step).
    public var gradientShare: Double = 1

    /// The communicator of ``announceLeaving()`` (its own, so a notification never meets
    /// a collective's messages).
    private let leavingComm: Communicator
    private static let leavingTag: Int32 = 0x5354

    /// A group over `world` (collective: every rank creates its group at the same point).
    public init(world: Communicator, bucketBytes: Int = 25 << 20) {
        self.world = world
        self.bucketBytes = bucketBytes
        leavingComm = (try? world.duplicate()) ?? world
    }

    /// Rank 0, when a signal ends the job: tells every other rank that it may exit now (its
    /// checkpoint is written). Waits at most `timeout` seconds per rank.
    public func announceLeaving(timeout: Double = 2) {
        for r in 1..<max(1, size) { leavingComm.notify(r, tag: Self.leavingTag, timeout: timeout) }
    }

    /// The other ranks, when a signal ends the job: wait for rank 0's
    /// ``announceLeaving(timeout:)``, at most `timeout` seconds. A rank must not exit
    /// before rank 0 is done: `mpirun` kills the remaining ranks as soon as one has exited.
    /// - Returns: whether rank 0 announced it.
    public func awaitLeaving(timeout: Double) -> Bool {
        leavingComm.awaitNotification(from: 0, tag: Self.leavingTag, timeout: timeout)
    }

    public var rank: Int { world.rank }
    public var size: Int { world.size }
    public func sum(_ values: [Double]) throws -> [Double] { try timed { try world.orderedSum(values) } }
    public func allGather(_ data: Data) throws -> [Data] { try timed { try world.allGather(data) } }

    private let counterLock = NSLock()
    private var collectiveSeconds = 0.0
    private weak var reducer: BucketedGradientReducer?

    /// Runs a collective of the calling (training) thread and counts its seconds.
    func timed<T>(_ body: () throws -> T) rethrows -> T {
        let t0 = DispatchTime.now().uptimeNanoseconds
        defer {
            let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            counterLock.withLock { collectiveSeconds += dt }
        }
        return try body()
    }

    public func makeGradientReducer(parameters: [Parameter]) -> GradientReducer {
        // The reducer's thread needs its own communicator, and MPI_THREAD_MULTIPLE to use it
        // while this thread reduces batch-norm statistics; without it, buckets are reduced
        // at the end of backward on this thread.
        let comm = world.supportsThreads ? ((try? world.duplicate()) ?? world) : world
        let r = BucketedGradientReducer(parameters: parameters, communicator: comm, bucketBytes: bucketBytes,
                                        overlap: world.supportsThreads && comm !== world)
        counterLock.withLock { reducer = r }
        return r
    }

    /// The main thread's collective seconds, and the gradient reducer's (the last one made)
    /// waits, reduction seconds and bytes, since the last call.
    public func takeCommunicationCounters() -> CommunicationCounters {
        var c = counterLock.withLock { () -> CommunicationCounters in
            var c = reducer?.takeCounters() ?? CommunicationCounters()
            c.collectiveSeconds = collectiveSeconds
            collectiveSeconds = 0
            return c
        }
        c.buckets = reducer?.bucketSizes.count ?? 0
        return c
    }

    public func abort(_ message: String) -> Never { world.abort(message) }
}

extension MPIProcessGroup: BatchStatisticsReducer {
    /// Synchronised batch norm's sums, in rank order on the main communicator; a transport
    /// failure ends the job with a message naming this rank.
    public func sumAcrossProcesses(_ values: [Double]) -> [Double] {
        do { return try timed { try world.orderedSum(values) } } catch {
            world.abort("rank \(rank) of \(size): synchronised batch norm failed: \(error)")
        }
    }
}

/// Averages gradients across ranks in buckets, overlapping communication with backward.
///
/// Buckets hold parameters in reverse registration order (the order backward completes
/// them: head first, stem last), each up to `bucketBytes` of gradients plus one flag per
/// parameter (1 when this rank has a gradient for it). When a bucket's last parameter is
/// ready its reduction starts on a communication thread while backward goes on. Buckets
/// are reduced strictly in index order on every rank (a bucket whose gradients came late,
/// or never, waits for ``finish()``), so the sequence of collectives is the same on all
/// ranks, and each bucket is summed with ``Communicator/orderedSum(_:count:scratch:)``
/// (rank order), so the result is bitwise the same on every rank and every run.
public final class BucketedGradientReducer: GradientReducer, @unchecked Sendable {
    private let core: ReducerCore

    /// A reducer over `parameters` (every rank passes the same list in the same order).
    /// - Parameters:
    ///   - communicator: used only by this reducer (its thread runs collectives on it).
    ///   - bucketBytes: the most gradient bytes in one bucket (a larger parameter gets a
    ///     bucket of its own).
    ///   - overlap: reduce on a communication thread while backward runs; off, every
    ///     bucket is reduced in ``finish()``.
    public init(parameters: [Parameter], communicator: Communicator, bucketBytes: Int, overlap: Bool = true) {
        core = ReducerCore(parameters: parameters, communicator: communicator, bucketBytes: bucketBytes, overlap: overlap)
        if overlap {
            let c = core
            let t = Thread { c.communicate() }
            t.name = "opacity-allreduce"
            t.start()
        }
    }

    deinit { core.stop() }

    /// The gradient bytes of each bucket, in reduction order.
    public var bucketSizes: [Int] { core.bucketSizes }

    public func begin(weight: Float) { core.begin(weight: weight) }
    public func parameterReady(_ parameter: Parameter) { core.parameterReady(parameter) }
    public func finish() throws -> Double { try core.finish() }

    /// The seconds the caller waited in ``finish()``, the seconds spent reducing buckets and
    /// the bytes reduced and sent since the last call (which resets them).
    public func takeCounters() -> CommunicationCounters { core.takeCounters() }
}

final class ReducerCore: @unchecked Sendable {
    struct Bucket {
        var members: [Int]        // parameter indices
        var offsets: [Int]        // element offset of each member's gradient
        var flagOffset: Int       // members.count flags follow the gradients
        var count: Int
        var buffer: UnsafeMutablePointer<Float>
    }

    let parameters: [Parameter]
    let comm: Communicator
    let overlap: Bool
    /// Wait for all ranks in ``Communicator/barrierSleeping(maxPause:)`` before each bucket's
    /// collective (`OPACITY_MPI_SPIN=1` turns it off, for comparison).
    let sleepUntilAllArrive = ProcessInfo.processInfo.environment["OPACITY_MPI_SPIN"] != "1"
    private var buckets: [Bucket] = []
    private var slot: [ObjectIdentifier: (bucket: Int, member: Int)] = [:]
    private var pending: [Int] = []
    private var weight: Float = 1
    private let scratch: UnsafeMutablePointer<Float>
    // communication thread state, under `cond`
    private let cond = NSCondition()
    private var ready: [Bool] = []
    private var reduced = 0
    private var failure: Error?
    private var stopping = false
    private var counters = CommunicationCounters()

    init(parameters: [Parameter], communicator: Communicator, bucketBytes: Int, overlap: Bool = true) {
        self.parameters = parameters
        self.comm = communicator
        self.overlap = overlap
        let limit = max(1, bucketBytes / MemoryLayout<Float>.stride)
        var current: [Int] = [], elements = 0
        var groups: [[Int]] = []
        for i in parameters.indices.reversed() {
            let n = parameters[i].value.count
            if !current.isEmpty && elements + n > limit {
                groups.append(current)
                current = []
                elements = 0
            }
            current.append(i)
            elements += n
        }
        if !current.isEmpty { groups.append(current) }
        var largest = 0
        for (b, g) in groups.enumerated() {
            var offsets: [Int] = [], off = 0
            for (m, i) in g.enumerated() {
                offsets.append(off)
                off += parameters[i].value.count
                slot[ObjectIdentifier(parameters[i])] = (b, m)
            }
            let count = off + g.count
            largest = max(largest, count)
            buckets.append(Bucket(members: g, offsets: offsets, flagOffset: off, count: count,
                                  buffer: UnsafeMutablePointer<Float>.allocate(capacity: count)))
        }
        let p = max(1, comm.size)
        scratch = UnsafeMutablePointer<Float>.allocate(capacity: max(1, p * ((largest + p - 1) / p + 1)))
        ready = Array(repeating: false, count: buckets.count)
        reduced = buckets.count
    }

    deinit {
        for b in buckets { b.buffer.deallocate() }
        scratch.deallocate()
    }

    /// Ends the communication thread (it then drops its reference to this core).
    func stop() {
        cond.lock()
        stopping = true
        cond.broadcast()
        cond.unlock()
    }

    /// The number of buckets and the bytes of gradients in each.
    var bucketSizes: [Int] { buckets.map { ($0.flagOffset) * MemoryLayout<Float>.stride } }

    func begin(weight: Float) {
        cond.lock()
        precondition(reduced == buckets.count, "BucketedGradientReducer.begin: the previous step was not finished")
        reduced = 0
        failure = nil
        for i in ready.indices { ready[i] = false }
        cond.unlock()
        self.weight = weight
        pending = buckets.map(\.members.count)
        for b in buckets { b.buffer.update(repeating: 0, count: b.count) }
    }

    func parameterReady(_ parameter: Parameter) {
        guard let (b, m) = slot[ObjectIdentifier(parameter)], let g = parameter.grad else { return }
        let bucket = buckets[b]
        let dst = bucket.buffer + bucket.offsets[m]
        let w = weight
        g.withUnsafeBufferPointer { src in
            if w == 1 { dst.update(from: src.baseAddress!, count: src.count) } else {
                for j in 0..<src.count { dst[j] = src[j] * w }
            }
        }
        bucket.buffer[bucket.flagOffset + m] = 1
        pending[b] -= 1
        if pending[b] == 0 { markReady(b) }
    }

    func finish() throws -> Double {
        for b in buckets.indices where pending[b] > 0 {
            pending[b] = 0
            markReady(b)
        }
        let t0 = DispatchTime.now().uptimeNanoseconds
        if !overlap {
            for b in buckets.indices { try reduce(b) }
            cond.lock()
            reduced = buckets.count
            cond.unlock()
        }
        cond.lock()
        while reduced < buckets.count && failure == nil { cond.wait() }
        let error = failure
        if error != nil { reduced = buckets.count }
        cond.unlock()
        let waited = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        cond.withLock { counters.gradientWaitSeconds += waited }
        if let error { throw error }
        for bucket in buckets {
            for (m, i) in bucket.members.enumerated() {
                let p = parameters[i]
                guard bucket.buffer[bucket.flagOffset + m] > 0 else {
                    p.grad = nil
                    continue
                }
                var g = Tensor(uninitializedShape: p.value.shape)
                g.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: bucket.buffer + bucket.offsets[m], count: $0.count) }
                p.grad = g
            }
        }
        return waited
    }

    private func markReady(_ b: Int) {
        guard overlap else { return }
        cond.lock()
        ready[b] = true
        cond.broadcast()
        cond.unlock()
    }

    func takeCounters() -> CommunicationCounters {
        cond.withLock {
            defer { counters = CommunicationCounters() }
            return counters
        }
    }

    private func reduce(_ b: Int) throws {
        let t0 = DispatchTime.now().uptimeNanoseconds
        // On the communication thread, wait for the other ranks asleep (a blocking
        // collective would spin on the core backward is using); see barrierSleeping.
        if overlap && sleepUntilAllArrive { try comm.barrierSleeping() }
        let count = buckets[b].count
        try comm.orderedSum(buckets[b].buffer, count: count, scratch: scratch)
        // the reduce-scatter sends all but this rank's chunk, the allgather this chunk to each other rank
        let p = comm.size, mine = count * (comm.rank + 1) / p - count * comm.rank / p
        let sent = p > 1 ? (count - mine) + mine * (p - 1) : 0
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        cond.withLock {
            counters.allreduceSeconds += dt
            counters.gradientBytes += Double(count * MemoryLayout<Float>.stride)
            counters.sentBytes += Double(sent * MemoryLayout<Float>.stride)
        }
    }

    /// The communication thread: reduces buckets in index order as they become ready.
    func communicate() {
        while true {
            cond.lock()
            while !stopping && (reduced >= buckets.count || !ready[reduced] || failure != nil) { cond.wait() }
            if stopping {
                cond.unlock()
                return
            }
            let b = reduced
            cond.unlock()
            var err: Error?
            do { try reduce(b) } catch { err = error }
            cond.lock()
            if let err { failure = err } else { reduced += 1 }
            cond.broadcast()
            cond.unlock()
        }
    }
}
