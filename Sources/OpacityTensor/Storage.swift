import Foundation

/// A contiguous, 64-byte aligned block of `Float` values owned by one or more tensors.
///
/// Storage is a reference type; ``Tensor`` gives it value semantics by copying on write
/// only when a storage block is shared and about to be mutated. Kernels never copy.
public final class TensorStorage: @unchecked Sendable {
    /// The first element.
    public let base: UnsafeMutablePointer<Float>
    /// The number of elements.
    public let count: Int

    /// Allocates uninitialised storage for `count` elements.
    public init(uninitializedCount count: Int) {
        self.count = count
        let bytes = max(1, count) * MemoryLayout<Float>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        base = raw.bindMemory(to: Float.self, capacity: max(1, count))
    }

    /// Allocates storage with every element set to `value`.
    public convenience init(count: Int, repeating value: Float) {
        self.init(uninitializedCount: count)
        if value == 0 {
            memset(base, 0, count * MemoryLayout<Float>.stride)
        } else {
            base.initialize(repeating: value, count: count)
        }
    }

    /// A fresh copy of this storage.
    public func copy() -> TensorStorage {
        let s = TensorStorage(uninitializedCount: count)
        if count > 0 { s.base.update(from: base, count: count) }
        return s
    }

    deinit {
        UnsafeMutableRawPointer(base).deallocate()
    }
}
