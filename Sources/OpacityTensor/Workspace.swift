import Foundation

/// Runs `body` with scratch memory for a kernel: one buffer of `perThread` floats for
/// each compute thread (`scratch(chunk)`, for the chunks of ``Compute/parallelChunks(_:_:)``)
/// and one of `shared` floats (`scratch(-1)`). Contents are undefined.
///
/// The memory comes from the storage pool, so a kernel that runs every step does not
/// pay for fresh pages each time.
@inline(__always)
func withScratch<R>(perThread: Int, shared: Int = 0, _ body: ((Int) -> UnsafeMutablePointer<Float>) -> R) -> R {
    let threads = Compute.threads
    let slot = (perThread + 15) & ~15  // keep every buffer 64-byte aligned
    let storage = TensorStorage(uninitializedCount: slot * threads + shared)
    return withExtendedLifetime(storage) {
        let base = storage.base
        return body { i in i < 0 ? base + slot * threads : base + slot * i }
    }
}
