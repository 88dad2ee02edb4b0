/// Errors raised by tensor operations on shapes that do not fit.
///
/// Every message names the operation and the shapes involved, e.g.
/// `add: shapes [2, 3] and [3, 2] differ`.
public struct ShapeError: Error, CustomStringConvertible, Sendable {
    /// The operation that rejected its arguments (`conv2d`, `add`, ...).
    public let op: String
    /// What did not fit, with the shapes.
    public let message: String
    /// An error from `op` saying `message`.
    public init(op: String, _ message: String) {
        self.op = op
        self.message = message
    }
    /// `op: message`.
    public var description: String { "\(op): \(message)" }
}

/// Formats a shape as `[2, 3, 4]`.
@inlinable
public func describe(_ shape: [Int]) -> String { "[" + shape.map(String.init).joined(separator: ", ") + "]" }

/// Stops with a clear message when a shape precondition fails.
///
/// Shape mismatches are programmer errors inside a model graph (like an out-of-range
/// index), so they trap; configuration-level checks run earlier and throw.
@inline(__always)
@usableFromInline
func shapeCheck(_ condition: @autoclosure () -> Bool, _ op: String, _ message: @autoclosure () -> String,
                file: StaticString = #file, line: UInt = #line) {
    if !condition() {
        fatalError(ShapeError(op: op, message()).description, file: file, line: line)
    }
}

extension Array where Element == Int {
    /// The product of the dimensions (1 for a scalar).
    @inlinable
    public var elementCount: Int { reduce(1, *) }
}
