import Foundation

/// Reusable scratch buffers for kernels (im2col columns and the like).
///
/// Large scratch buffers are kept after use instead of being returned to the system, so
/// hot loops do not pay for fresh pages on every call. Thread-safe.
enum Workspace {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var free: [TensorStorage] = []

    /// Runs `body` with a scratch buffer of at least `count` floats (contents undefined).
    static func with<R>(_ count: Int, _ body: (UnsafeMutablePointer<Float>) -> R) -> R {
        let buffer = take(count)
        defer { give(buffer) }
        return body(buffer.base)
    }

    private static func take(_ count: Int) -> TensorStorage {
        lock.lock()
        defer { lock.unlock() }
        if let i = free.indices.filter({ free[$0].count >= count }).min(by: { free[$0].count < free[$1].count }) {
            return free.remove(at: i)
        }
        return TensorStorage(uninitializedCount: count)
    }

    private static func give(_ s: TensorStorage) {
        lock.lock()
        defer { lock.unlock() }
        free.append(s)
        // Keep at most a few buffers; drop the smallest first.
        if free.count > 4 {
            free.sort { $0.count > $1.count }
            free.removeLast()
        }
    }
}
