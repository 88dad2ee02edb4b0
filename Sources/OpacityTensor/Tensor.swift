import Foundation

/// A dense, contiguous, row-major `Float32` tensor; images are NCHW.
///
/// `Tensor` is a value type. Copies share storage until one of them is mutated through
/// ``withUnsafeMutableBufferPointer(_:)``, which copies only a shared block. Operations
/// allocate their outputs and never copy their inputs; ``reshaped(_:)`` and
/// ``detached()`` share storage.
///
/// When autograd is recording (see ``Autograd``) and an input requires gradients, an
/// operation attaches a ``GradNode`` to its result, so ``backward(_:)`` can run.
public struct Tensor: @unchecked Sendable {
    /// The dimensions, outermost first (`[N, C, H, W]` for images).
    public private(set) var shape: [Int]
    /// The backing storage; shared between copies until mutated. Internal to the engine
    /// (package access): everything else reads and writes through
    /// ``withUnsafeBufferPointer(_:)`` and ``withUnsafeMutableBufferPointer(_:)``.
    @usableFromInline package private(set) var storage: TensorStorage
    /// The autograd node that produced this tensor, or `nil` when it is not tracked.
    public internal(set) var node: GradNode?

    // MARK: Creating tensors

    /// A tensor of the given shape with uninitialised contents (kernels fill it).
    public init(uninitializedShape shape: [Int]) {
        self.shape = shape
        self.storage = TensorStorage(uninitializedCount: shape.elementCount)
    }

    /// A tensor of the given shape with every element equal to `value`.
    public init(shape: [Int], repeating value: Float) {
        self.shape = shape
        self.storage = TensorStorage(count: shape.elementCount, repeating: value)
    }

    /// A tensor of zeros.
    public static func zeros(_ shape: [Int]) -> Tensor { Tensor(shape: shape, repeating: 0) }

    /// A tensor of zeros kept for a long time (an optimizer's state): its block is of its own
    /// size class, never a larger cached one (``TensorStorage/init(uninitializedCount:longLived:)``).
    package static func longLivedZeros(_ shape: [Int]) -> Tensor {
        Tensor(shape: shape, storage: TensorStorage(count: shape.elementCount, repeating: 0, longLived: true))
    }
    /// A tensor of ones.
    public static func ones(_ shape: [Int]) -> Tensor { Tensor(shape: shape, repeating: 1) }

    /// A tensor holding `scalars` in row-major order.
    /// - Precondition: `scalars.count == shape.elementCount`.
    public init(shape: [Int], scalars: [Float]) {
        shapeCheck(scalars.count == shape.elementCount, "Tensor(shape:scalars:)",
                   "\(scalars.count) scalars do not fill shape \(describe(shape))")
        self.init(uninitializedShape: shape)
        scalars.withUnsafeBufferPointer { src in
            if let b = src.baseAddress, src.count > 0 { storage.base.update(from: b, count: src.count) }
        }
    }

    /// A rank-0 tensor.
    public init(_ scalar: Float) { self.init(shape: [], scalars: [scalar]) }

    /// A tensor sharing `storage`, viewed with `shape`.
    package init(shape: [Int], storage: TensorStorage) {
        shapeCheck(storage.count == shape.elementCount, "Tensor(shape:storage:)",
                   "storage of \(storage.count) elements does not fit shape \(describe(shape))")
        self.shape = shape
        self.storage = storage
    }

    // MARK: Reading

    /// The number of elements.
    @inlinable public var count: Int { storage.count }
    /// The number of dimensions.
    @inlinable public var rank: Int { shape.count }
    /// All elements in row-major order (a copy).
    public var scalars: [Float] { Array(UnsafeBufferPointer(start: storage.base, count: count)) }
    /// The only element of a one-element tensor.
    public var scalar: Float {
        shapeCheck(count == 1, "scalar", "tensor of shape \(describe(shape)) has \(count) elements, not 1")
        return storage.base[0]
    }
    /// The element at a flat row-major index.
    @inlinable public subscript(flat index: Int) -> Float { storage.base[index] }

    /// Reads the elements without copying.
    @inlinable
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.base, count: count))
    }

    /// Mutates the elements in place, copying the storage first only if it is shared.
    ///
    /// Mutation drops the tensor's autograd node: an in-place change is not differentiable.
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
        storage.contentsWillChange()
        node = nil
        return try body(UnsafeMutableBufferPointer(start: storage.base, count: count))
    }

    /// The output of an elementwise operation that consumes this tensor: a tensor of its shape
    /// over its own storage when no other value shares that storage (no copy of the tensor, no
    /// view, no traced operation or backward closure that saved it), its cached derived values
    /// dropped, else a new uninitialized one. Reading this tensor and writing the output at the
    /// same index is then safe.
    package mutating func elementwiseOutput() -> Tensor {
        guard isKnownUniquelyReferenced(&storage) else { return Tensor(uninitializedShape: shape) }
        storage.contentsWillChange()
        return Tensor(shape: shape, storage: storage)
    }

    /// Whether no other value shares this tensor's storage (no copy, view, trace or backward
    /// closure holds it), so that an operation consuming the tensor may write over it.
    package mutating func ownsStorageAlone() -> Bool { isKnownUniquelyReferenced(&storage) }

    /// A raw pointer to the storage for kernels that fill a freshly allocated tensor.
    @inlinable var mutablePointer: UnsafeMutablePointer<Float> { storage.base }
    /// A read pointer for kernels.
    @inlinable var pointer: UnsafePointer<Float> { UnsafePointer(storage.base) }

    // MARK: Autograd

    /// Whether gradients flow back through this tensor.
    public var requiresGrad: Bool { node != nil }

    /// The same values, cut from the autograd graph; shares storage.
    public func detached() -> Tensor { Tensor(shape: shape, storage: storage) }

    /// A leaf copy of this tensor whose gradient ``grad`` is kept after ``backward(_:)``.
    public func requiringGrad() -> Tensor {
        var t = detached()
        t.node = GradNode(leafShape: shape)
        return t
    }

    /// The gradient accumulated in a leaf made by ``requiringGrad()``.
    public var grad: Tensor? { node?.grad }

    /// The same storage with a new node (used by ops to attach their results).
    func withNode(_ n: GradNode?) -> Tensor {
        var t = self
        t.node = n
        return t
    }
}

extension Tensor: CustomStringConvertible {
    /// The shape and the first few values.
    public var description: String {
        let shown = scalars.prefix(8).map { String(format: "%.4g", $0) }.joined(separator: ", ")
        return "Tensor(\(describe(shape)), [\(shown)\(count > 8 ? ", ..." : "")])"
    }
}

extension Tensor {
    /// Whether two tensors have the same shape and all elements within `tolerance`
    /// (absolute plus relative to the larger magnitude).
    public func isClose(to other: Tensor, absolute: Float = 1e-5, relative: Float = 1e-4) -> Bool {
        guard shape == other.shape else { return false }
        for i in 0..<count {
            let a = self[flat: i], b = other[flat: i]
            if abs(a - b) > absolute + relative * max(abs(a), abs(b)) { return false }
        }
        return true
    }

    /// The largest absolute elementwise difference to a tensor of the same shape.
    public func maxAbsDifference(_ other: Tensor) -> Float {
        shapeCheck(shape == other.shape, "maxAbsDifference", "shapes \(describe(shape)) and \(describe(other.shape)) differ")
        var m: Float = 0
        for i in 0..<count { m = max(m, abs(self[flat: i] - other[flat: i])) }
        return m
    }
}
