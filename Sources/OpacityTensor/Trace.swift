import Foundation

/// An attribute of a traced operation (window sizes, axes, scalars).
public enum TraceAttribute: Sendable, Equatable {
    case int(Int)
    case ints([Int])
    case float(Float)
    case bool(Bool)
}

/// One public operation as a trace saw it: its name, its tensor inputs, its output and
/// its attributes.
///
/// Tensors are held, so their storage stays alive for the trace's lifetime: a value is
/// identified by its storage object and shape (``OpTrace/key(_:)``), and no identity is
/// reused while the trace exists.
public struct TracedOp: @unchecked Sendable {
    /// The engine's name of the operation, e.g. `conv2d`, `batchNorm2d`, `maxPool2d`.
    public let op: String
    /// The tensor inputs, in the operation's order (e.g. input, weight, bias).
    public let inputs: [Tensor]
    /// The result.
    public let output: Tensor
    /// Sizes, axes and scalars the operation was called with.
    public let attributes: [String: TraceAttribute]
}

/// Records the public tensor operations a computation performs, in order (graph capture
/// for exporters such as ONNX).
///
/// ```swift
/// let trace = OpTrace()
/// let out = trace.run { model(input) }
/// for op in trace.ops { ... }
/// ```
/// Every public operation of the engine reports itself while a trace is active on the
/// current task; kernels and gradients are untouched. Values that no traced operation
/// produced (parameters, buffers, constants) appear only as inputs.
public final class OpTrace: @unchecked Sendable {
    @TaskLocal static var current: OpTrace?

    /// The operations in execution order.
    public private(set) var ops: [TracedOp] = []
    private let lock = NSLock()

    /// An empty trace.
    public init() {}

    /// Runs `body` with this trace recording every public operation it performs.
    public func run<R>(_ body: () throws -> R) rethrows -> R {
        try OpTrace.$current.withValue(self) { try body() }
    }

    /// The identity of a value: its storage object and its shape (a reshape shares
    /// storage but is a different value).
    public struct Key: Hashable, Sendable {
        public let storage: ObjectIdentifier
        public let shape: [Int]
    }

    /// The identity of `t` within a trace.
    public static func key(_ t: Tensor) -> Key { Key(storage: ObjectIdentifier(t.storage), shape: t.shape) }

    /// Called by each public operation (one line each); evaluates its arguments only while
    /// a trace is active.
    @inline(__always)
    static func note(_ op: String, _ inputs: @autoclosure () -> [Tensor], _ output: Tensor,
                     _ attributes: @autoclosure () -> [String: TraceAttribute] = [:]) {
        guard let trace = current else { return }
        trace.append(TracedOp(op: op, inputs: inputs(), output: output, attributes: attributes()))
    }

    private func append(_ op: TracedOp) {
        lock.lock()
        ops.append(op)
        lock.unlock()
    }
}
