import Foundation

/// Runs `body` with scratch memory for a kernel: one buffer of `perThread` floats for
/// each compute thread (`scratch(chunk)`, for the chunks of ``Compute/parallelChunks(_:_:)``)
/// and one of `shared` floats (`scratch(-1)`). Contents are undefined.
///
/// Large scratch comes from ``ScratchBuffers`` (kept across calls, so a kernel that runs every
/// step pays for fresh pages once), small scratch from the storage pool's `malloc` path. It
/// counts in ``TensorMemory/liveBytes`` while `body` runs.
@inline(__always)
package func withScratch<R>(perThread: Int, shared: Int = 0, _ body: ((Int) -> UnsafeMutablePointer<Float>) -> R) -> R {
    let threads = Compute.threads
    let slot = (perThread + 15) & ~15  // keep every buffer 64-byte aligned
    let count = max(1, slot * threads + shared)
    let bytes = count * MemoryLayout<Float>.stride
    guard bytes >= StoragePool.minPooledBytes else {
        let storage = TensorStorage(uninitializedCount: count)
        return withExtendedLifetime(storage) {
            let base = storage.base
            return body { i in i < 0 ? base + slot * threads : base + slot * i }
        }
    }
    let (raw, size) = ScratchBuffers.take(bytes)
    StorageAccounting.add(size)
    defer {
        StorageAccounting.remove(size)
        ScratchBuffers.give(raw, size)
    }
    let base = raw.bindMemory(to: Float.self, capacity: count)
    return body { i in i < 0 ? base + slot * threads : base + slot * i }
}
