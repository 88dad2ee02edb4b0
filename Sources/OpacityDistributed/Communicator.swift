import CMPI
import Foundation

/// An MPI call that did not succeed.
public struct MPIError: Error, CustomStringConvertible, Sendable {
    /// The MPI function, e.g. `MPI_Allreduce`.
    public var function: String
    /// MPI's error code.
    public var code: Int32
    /// MPI's message for the code.
    public var message: String

    public var description: String { "\(function) failed (MPI error \(code)): \(message)" }

    static func check(_ rc: Int32, _ function: String) throws {
        guard rc != opacity_mpi_success() else { return }
        var buf = [CChar](repeating: 0, count: Int(opacity_mpi_max_error_string()) + 1)
        var len: Int32 = 0
        MPI_Error_string(rc, &buf, &len)
        throw MPIError(function: function, code: rc, message: cText(buf))
    }
}

/// The MPI library of this process: initialised once, finalised at exit.
///
/// `MPI_Init_thread` is called only by ``initialize()``, so a process that never asks for
/// it runs without an MPI runtime (the library is linked but idle).
public enum MPIRuntime {
    nonisolated(unsafe) private static var world: Communicator?
    private static let lock = NSLock()

    /// Whether MPI has been initialised in this process.
    public static var isInitialized: Bool {
        var flag: Int32 = 0
        MPI_Initialized(&flag)
        return flag != 0
    }

    /// Initialises MPI (asking for `MPI_THREAD_MULTIPLE`: gradients are reduced on a
    /// communication thread while the main thread computes) and returns `MPI_COMM_WORLD`.
    /// Later calls return the same communicator.
    /// - Throws: ``MPIError`` when MPI cannot start.
    public static func initialize() throws -> Communicator {
        lock.lock()
        defer { lock.unlock() }
        if let world { return world }
        var provided: Int32 = 0
        try MPIError.check(MPI_Init_thread(nil, nil, opacity_mpi_thread_multiple(), &provided), "MPI_Init_thread")
        MPI_Comm_set_errhandler(opacity_mpi_comm_world(), opacity_mpi_errors_return())
        let w = Communicator(handle: opacity_mpi_comm_world(), owned: false, threadLevel: provided)
        world = w
        atexit {
            if MPIRuntime.isInitialized {
                var finalized: Int32 = 0
                MPI_Finalized(&finalized)
                if finalized == 0 { MPI_Finalize() }
            }
        }
        return w
    }

    /// The library's version line, e.g. `Open MPI v4.1.4, ...` (callable without initialising).
    public static var libraryVersion: String {
        var buf = [CChar](repeating: 0, count: 8192)
        var len: Int32 = 0
        MPI_Get_library_version(&buf, &len)
        return cText(buf).split(separator: "\n").first.map(String.init) ?? ""
    }
}

/// A group of MPI processes that talk to each other (`MPI_Comm`), with the collectives the
/// trainer and the inference commands use. All byte and element counts are those of
/// *this* rank's buffers; collectives must be entered by every rank in the same order.
public final class Communicator: @unchecked Sendable {
    let handle: MPI_Comm?
    private let owned: Bool
    /// The thread support MPI granted (`MPI_THREAD_*`).
    public let threadLevel: Int32
    /// This process's rank.
    public let rank: Int
    /// The number of processes.
    public let size: Int

    init(handle: MPI_Comm?, owned: Bool, threadLevel: Int32) {
        self.handle = handle
        self.owned = owned
        self.threadLevel = threadLevel
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(handle, &r)
        MPI_Comm_size(handle, &s)
        rank = Int(r)
        size = Int(s)
    }

    deinit {
        if owned, MPIRuntime.isInitialized {
            var finalized: Int32 = 0
            MPI_Finalized(&finalized)
            if finalized == 0 {
                var h = handle
                MPI_Comm_free(&h)
            }
        }
    }

    /// Whether several threads may call MPI at once.
    public var supportsThreads: Bool { threadLevel >= opacity_mpi_thread_multiple() }

    /// A new communicator over the same processes, whose messages never mix with this
    /// one's (the gradient reducer's thread uses its own).
    /// - Throws: ``MPIError``.
    public func duplicate() throws -> Communicator {
        var out: MPI_Comm? = opacity_mpi_comm_null()
        try MPIError.check(MPI_Comm_dup(handle, &out), "MPI_Comm_dup")
        MPI_Comm_set_errhandler(out, opacity_mpi_errors_return())
        return Communicator(handle: out, owned: true, threadLevel: threadLevel)
    }

    /// Waits until every rank has arrived.
    /// - Throws: ``MPIError``.
    public func barrier() throws { try MPIError.check(MPI_Barrier(handle), "MPI_Barrier") }

    /// Waits until every rank has arrived, mostly asleep: `MPI_Ibarrier`, tested with pauses
    /// growing from 20 µs to `maxPause` seconds. A blocking collective spins on its core
    /// while it waits for the other ranks; the gradient reducer's thread calls this first, so
    /// it does not take the core from backward while a slower rank catches up, and enters the
    /// collective only when every rank is there.
    /// - Throws: ``MPIError``.
    public func barrierSleeping(maxPause: Double = 0.001) throws {
        var request: MPI_Request? = opacity_mpi_request_null()
        try MPIError.check(MPI_Ibarrier(handle, &request), "MPI_Ibarrier")
        var pause = 20e-6
        while true {
            var flag: Int32 = 0
            try MPIError.check(MPI_Test(&request, &flag, opacity_mpi_status_ignore()), "MPI_Test")
            if flag != 0 { return }
            usleep(UInt32(pause * 1e6))
            pause = min(maxPause, pause * 2)
        }
    }

    // MARK: Allreduce (MPI's own order)

    /// `MPI_Allreduce` with `MPI_SUM` in place over `count` floats. The order in which MPI
    /// adds the ranks' values is the library's choice; see ``orderedSum(_:count:)`` for a
    /// fixed one.
    /// - Throws: ``MPIError``.
    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try MPIError.check(MPI_Allreduce(opacity_mpi_in_place(), buffer, Int32(count), opacity_mpi_float(), opacity_mpi_sum(), handle),
                           "MPI_Allreduce")
    }

    /// `MPI_Allreduce` with `MPI_SUM` over doubles (returns the sums).
    /// - Throws: ``MPIError``.
    public func allreduceSum(_ values: [Double]) throws -> [Double] {
        var v = values
        try MPIError.check(MPI_Allreduce(opacity_mpi_in_place(), &v, Int32(v.count), opacity_mpi_double(), opacity_mpi_sum(), handle),
                           "MPI_Allreduce")
        return v
    }

    /// A non-blocking reduction in flight; ``wait()`` completes it.
    public final class Request: @unchecked Sendable {
        var handle: MPI_Request? = opacity_mpi_request_null()
        /// Blocks until the operation is complete; the buffer then holds the result.
        /// - Throws: ``MPIError``.
        public func wait() throws { try MPIError.check(MPI_Wait(&handle, opacity_mpi_status_ignore()), "MPI_Wait") }
        /// Whether the operation is complete (drives MPI's progress).
        /// - Throws: ``MPIError``.
        public func test() throws -> Bool {
            var flag: Int32 = 0
            try MPIError.check(MPI_Test(&handle, &flag, opacity_mpi_status_ignore()), "MPI_Test")
            return flag != 0
        }
    }

    /// `MPI_Iallreduce` with `MPI_SUM` in place over `count` floats; the buffer must stay
    /// valid and untouched until the request completes.
    /// - Throws: ``MPIError``.
    public func iallreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws -> Request {
        let r = Request()
        try MPIError.check(MPI_Iallreduce(opacity_mpi_in_place(), buffer, Int32(count), opacity_mpi_float(), opacity_mpi_sum(), handle, &r.handle),
                           "MPI_Iallreduce")
        return r
    }

    // MARK: Allreduce in a fixed order

    /// Sums `count` floats over all ranks in place, adding the ranks' values in rank order
    /// (`((x_0 + x_1) + x_2) + ...`), so a fixed process count gives the same bits on every
    /// run and every rank holds the identical result.
    ///
    /// The buffer is cut into `size` contiguous chunks; chunk `r` goes to rank `r`
    /// (`MPI_Alltoallv`, a reduce-scatter), which adds its chunk in rank order, and every
    /// rank receives every summed chunk (`MPI_Allgatherv`). Each rank sends and receives
    /// `2 (P-1)/P` of the buffer, as in a ring allreduce.
    /// - Parameter scratch: at least `size * ceil(count / size)` floats, or `nil` to allocate.
    /// - Throws: ``MPIError``.
    public func orderedSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, scratch: UnsafeMutablePointer<Float>? = nil) throws {
        let p = size
        guard p > 1, count > 0 else { return }
        func lo(_ r: Int) -> Int { count * r / p }
        var sendCounts = [Int32](repeating: 0, count: p), sendDispls = [Int32](repeating: 0, count: p)
        for q in 0..<p {
            sendCounts[q] = Int32(lo(q + 1) - lo(q))
            sendDispls[q] = Int32(lo(q))
        }
        let mine = lo(rank + 1) - lo(rank), myLo = lo(rank)
        let recvCounts = [Int32](repeating: Int32(mine), count: p)
        let recvDispls = (0..<p).map { Int32($0 * mine) }
        let owned = scratch == nil ? UnsafeMutablePointer<Float>.allocate(capacity: max(1, p * mine)) : nil
        defer { owned?.deallocate() }
        let recv = scratch ?? owned!
        try MPIError.check(MPI_Alltoallv(buffer, sendCounts, sendDispls, opacity_mpi_float(),
                                         recv, recvCounts, recvDispls, opacity_mpi_float(), handle), "MPI_Alltoallv")
        let out = buffer + myLo
        for j in 0..<mine { out[j] = recv[j] }
        for r in 1..<p {
            let src = recv + r * mine
            for j in 0..<mine { out[j] += src[j] }
        }
        try MPIError.check(MPI_Allgatherv(opacity_mpi_in_place(), 0, opacity_mpi_float(), buffer, sendCounts, sendDispls,
                                          opacity_mpi_float(), handle), "MPI_Allgatherv")
    }

    /// Element-wise sums of doubles over all ranks, added in rank order: every rank gathers
    /// all vectors (fine for the short vectors of statistics and loss terms).
    /// - Throws: ``MPIError``.
    public func orderedSum(_ values: [Double]) throws -> [Double] {
        guard size > 1 else { return values }
        let n = values.count
        var all = [Double](repeating: 0, count: n * size)
        try values.withUnsafeBufferPointer { v in
            try MPIError.check(MPI_Allgather(v.baseAddress, Int32(n), opacity_mpi_double(), &all, Int32(n), opacity_mpi_double(), handle),
                               "MPI_Allgather")
        }
        var out = Array(all[0..<n])
        for r in 1..<size {
            for j in 0..<n { out[j] += all[r * n + j] }
        }
        return out
    }

    // MARK: Bytes

    /// Every rank's bytes on every rank, in rank order.
    /// - Throws: ``MPIError``.
    public func allGather(_ data: Data) throws -> [Data] {
        var mine = Int64(data.count)
        var sizes = [Int64](repeating: 0, count: size)
        try MPIError.check(MPI_Allgather(&mine, 1, opacity_mpi_int64(), &sizes, 1, opacity_mpi_int64(), handle), "MPI_Allgather")
        let (counts, displs, total) = try Self.layout(sizes)
        var all = [UInt8](repeating: 0, count: max(1, total))
        try data.withUnsafeBytes { d in
            try MPIError.check(MPI_Allgatherv(d.baseAddress, Int32(data.count), opacity_mpi_byte(), &all, counts, displs,
                                              opacity_mpi_byte(), handle), "MPI_Allgatherv")
        }
        return (0..<size).map { Data(all[Int(displs[$0])..<Int(displs[$0]) + Int(counts[$0])]) }
    }

    /// Every rank's bytes on `root` (in rank order); `nil` on the other ranks.
    /// - Throws: ``MPIError``.
    public func gather(_ data: Data, root: Int = 0) throws -> [Data]? {
        var mine = Int64(data.count)
        var sizes = [Int64](repeating: 0, count: size)
        try MPIError.check(MPI_Gather(&mine, 1, opacity_mpi_int64(), &sizes, 1, opacity_mpi_int64(), Int32(root), handle), "MPI_Gather")
        let isRoot = rank == root
        let (counts, displs, total) = isRoot ? try Self.layout(sizes) : ([Int32](repeating: 0, count: size), [Int32](repeating: 0, count: size), 0)
        var all = [UInt8](repeating: 0, count: max(1, total))
        try data.withUnsafeBytes { d in
            try MPIError.check(MPI_Gatherv(d.baseAddress, Int32(data.count), opacity_mpi_byte(), &all, counts, displs,
                                           opacity_mpi_byte(), Int32(root), handle), "MPI_Gatherv")
        }
        guard isRoot else { return nil }
        return (0..<size).map { Data(all[Int(displs[$0])..<Int(displs[$0]) + Int(counts[$0])]) }
    }

    /// `root`'s bytes on every rank (the others' `data` is ignored).
    /// - Throws: ``MPIError``.
    public func broadcast(_ data: Data, root: Int = 0) throws -> Data {
        var n = Int64(data.count)
        try MPIError.check(MPI_Bcast(&n, 1, opacity_mpi_int64(), Int32(root), handle), "MPI_Bcast")
        var buf = rank == root ? [UInt8](data) : [UInt8](repeating: 0, count: Int(n))
        if n > 0 { try MPIError.check(MPI_Bcast(&buf, Int32(n), opacity_mpi_byte(), Int32(root), handle), "MPI_Bcast") }
        return Data(buf)
    }

    // MARK: Notifications

    /// Sends `tag` to rank `dest` without a matching collective (`MPI_Isend` of one byte)
    /// and waits at most `timeout` seconds for the send to complete.
    /// - Returns: whether it completed.
    @discardableResult
    public func notify(_ dest: Int, tag: Int32, timeout: Double) -> Bool {
        var byte: UInt8 = 1
        var request: MPI_Request? = opacity_mpi_request_null()
        guard MPI_Isend(&byte, 1, opacity_mpi_byte(), Int32(dest), tag, handle, &request) == opacity_mpi_success() else { return false }
        return Self.wait(&request, timeout: timeout)
    }

    /// Waits at most `timeout` seconds, mostly asleep, for a ``notify(_:tag:timeout:)``
    /// from rank `source` with `tag`.
    /// - Returns: whether it came.
    public func awaitNotification(from source: Int, tag: Int32, timeout: Double) -> Bool {
        var byte: UInt8 = 0
        var request: MPI_Request? = opacity_mpi_request_null()
        guard MPI_Irecv(&byte, 1, opacity_mpi_byte(), Int32(source), tag, handle, &request) == opacity_mpi_success() else { return false }
        if Self.wait(&request, timeout: timeout) { return true }
        MPI_Cancel(&request)
        return false
    }

    private static func wait(_ request: inout MPI_Request?, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            var flag: Int32 = 0
            guard MPI_Test(&request, &flag, opacity_mpi_status_ignore()) == opacity_mpi_success() else { return false }
            if flag != 0 { return true }
            if Date() >= deadline { return false }
            usleep(2000)
        }
    }

    /// Writes `message` to standard error and ends every process of the job with exit code
    /// `code` (`MPI_Abort`).
    public func abort(_ message: String, code: Int32 = 1) -> Never {
        fflush(nil)
        try? FileHandle.standardError.write(contentsOf: Data((message.hasSuffix("\n") ? message : message + "\n").utf8))
        MPI_Abort(handle, code)
        exit(code)
    }

    private static func layout(_ sizes: [Int64]) throws -> ([Int32], [Int32], Int) {
        var counts: [Int32] = [], displs: [Int32] = [], total = 0
        for s in sizes {
            guard total + Int(s) < Int(Int32.max) else {
                throw MPIError(function: "gather", code: -1, message: "more than 2 GiB gathered in one call")
            }
            displs.append(Int32(total))
            counts.append(Int32(s))
            total += Int(s)
        }
        return (counts, displs, total)
    }
}

/// The text of a NUL-terminated C buffer.
func cText(_ buf: [CChar]) -> String {
    String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
