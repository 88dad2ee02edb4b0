import Foundation
import OpacityCore
import OpacityTensor

/// The processes that train or evaluate one model together (data parallel), seen from one
/// of them. A plain run is ``SingleProcess``; `OpacityDistributed` provides one over MPI.
///
/// Every collective here is called by every rank in the same order, with the same lengths;
/// every result is bitwise the same on every rank (sums are added in rank order 0, 1, ...,
/// P-1, never in an order that depends on timing).
public protocol ProcessGroup: AnyObject {
    /// This process's index, `0..<size`.
    var rank: Int { get }
    /// The number of processes.
    var size: Int { get }
    /// Element-wise sum over ranks, added in rank order (`((v_0 + v_1) + v_2) + ...`).
    /// - Throws: a transport error.
    func sum(_ values: [Double]) throws -> [Double]
    /// Every rank's bytes on every rank, in rank order.
    /// - Throws: a transport error.
    func allGather(_ data: Data) throws -> [Data]
    /// Averages gradients across ranks, bucket by bucket, while backward runs.
    func makeGradientReducer(parameters: [Parameter]) -> GradientReducer
    /// Stops every process of the job: `message` (which names this rank) goes to standard
    /// error first. Never returns.
    func abort(_ message: String) -> Never
    /// This process's communication counters since the last call (which resets them).
    func takeCommunicationCounters() -> CommunicationCounters
}

extension ProcessGroup {
    /// Whether this process writes the run's files and shows progress (rank 0).
    public var isLeader: Bool { rank == 0 }
    /// Whether more than one process takes part.
    public var isDistributed: Bool { size > 1 }

    /// The contiguous part `[lo, hi)` of `0..<count` that `rank` owns when `count` items are
    /// split over `size` ranks (sizes differ by at most one; lower ranks get the smaller ones).
    public static func block(_ count: Int, rank: Int, size: Int) -> Range<Int> {
        (count * rank / size)..<(count * (rank + 1) / size)
    }

    /// This rank's part of `0..<count`.
    public func block(_ count: Int) -> Range<Int> {
        (count * rank / size)..<(count * (rank + 1) / size)
    }
}

/// Gathers the gradients of one training step across ranks.
///
/// Use per step: ``begin(weight:)`` before backward, ``parameterReady(_:)`` from the
/// backward walk (``Tensor/backward(_:parameterReady:)``), then ``finish()``, after which
/// every parameter's `grad` holds `sum_r weight_r * grad_r` (the same on every rank); a
/// parameter that got no gradient on any rank keeps `grad == nil`.
public protocol GradientReducer: AnyObject {
    /// Starts a step; this rank's gradients are multiplied by `weight` before summing
    /// (its share of the global batch, `n_r / N`).
    func begin(weight: Float)
    /// Called once a parameter's gradient is complete for this step.
    func parameterReady(_ parameter: Parameter)
    /// Reduces whatever is left and waits for every bucket; writes the results to `grad`.
    /// - Returns: seconds the caller waited for communication in this call.
    /// - Throws: a transport error.
    func finish() throws -> Double
}

/// One process: sums are the values themselves, gathering returns the own bytes.
public final class SingleProcess: ProcessGroup {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func sum(_ values: [Double]) throws -> [Double] { values }
    public func allGather(_ data: Data) throws -> [Data] { [data] }
    public func makeGradientReducer(parameters: [Parameter]) -> GradientReducer { LocalReducer() }
    public func takeCommunicationCounters() -> CommunicationCounters { CommunicationCounters() }
    public func abort(_ message: String) -> Never {
        try? FileHandle.standardError.write(contentsOf: Data((message + "\n").utf8))
        exit(1)
    }

    final class LocalReducer: GradientReducer {
        func begin(weight: Float) {}
        func parameterReady(_ parameter: Parameter) {}
        func finish() throws -> Double { 0 }
    }
}

/// Flat encodings of detections and boxes for gathering them across ranks.
public enum DetectionWire {
    /// `[count, (x, y, w, h, score) x count]` per image, images in order.
    public static func encode(_ images: [[Detection]]) -> Data {
        var f: [Float] = [Float(images.count)]
        for d in images {
            f.append(Float(d.count))
            for x in d { f += [x.box.x, x.box.y, x.box.width, x.box.height, x.score] }
        }
        return f.withUnsafeBufferPointer { Data(buffer: $0) }
    }

    /// Reads ``encode(_:)-swift.type.method``'s output.
    public static func decode(_ data: Data) -> [[Detection]] {
        let f = floats(data)
        var i = 1, out: [[Detection]] = []
        for _ in 0..<Int(f[0]) {
            let n = Int(f[i]); i += 1
            out.append((0..<n).map { k in
                let p = i + 5 * k
                return Detection(box: BoundingBox(x: f[p], y: f[p + 1], width: f[p + 2], height: f[p + 3]), score: f[p + 4])
            })
            i += 5 * n
        }
        return out
    }

    /// `[count, (x, y, w, h) x count]` per image.
    public static func encode(_ boxes: [[BoundingBox]]) -> Data {
        encode(boxes.map { $0.map { Detection(box: $0, score: 0) } })
    }

    /// Reads boxes written by ``encode(_:)-swift.type.method``.
    public static func decodeBoxes(_ data: Data) -> [[BoundingBox]] { decode(data).map { $0.map(\.box) } }

    static func floats(_ data: Data) -> [Float] {
        data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }
}
