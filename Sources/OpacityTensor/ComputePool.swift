import Foundation
import Synchronization

/// The worker threads behind ``Compute``'s parallel loops: `Compute.threads - 1` threads that
/// stay awake for a short while after each parallel region (``spinMicroseconds``) before they
/// sleep, so that the next region, usually microseconds later in a network's forward pass,
/// finds them running.
///
/// `DispatchQueue.concurrentPerform`, which the loops used before, wakes parked workers for
/// every region. Measured on the 2-core machine (resnet34 RetinaNet at 256 px, batch 1, four
/// interleaved runs each): forward 122.8 ms mean with the workers spinning 200 us, 128.7 ms
/// with `OPACITY_SPIN_US=0`; the training step within the runs' noise.
///
/// One region runs at a time: a parallel loop entered while the pool is busy (from inside a
/// region, or from another thread, as concurrent requests of a detection service) runs on
/// `concurrentPerform` as before. Iteration `i` of a region always gets the same inputs
/// whichever thread runs it, so results do not depend on the pool.
///
/// The region's state is one atomic word: generation (high 32 bits), iteration count (bits
/// 16-31) and next iteration (bits 0-15). A thread claims an iteration by compare-and-swap on
/// that word, so a thread late from an earlier region fails its swap (the generation moved on)
/// and never runs a stale body; the caller returns once every claimed iteration finished.
@usableFromInline
package final class ComputePool: @unchecked Sendable {
    @usableFromInline package static let shared = ComputePool()

    /// How long an idle worker keeps looking for the next region before it sleeps, in
    /// microseconds (`OPACITY_SPIN_US`, default 200; 0: sleep at once, as `concurrentPerform`).
    package static let spinMicroseconds = UInt64(TuningVariable.spinMicroseconds.value)

    private let state = Atomic<UInt64>(0)
    private let finished = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    private let sleepers = Atomic<Int>(0)
    private let condition = NSCondition()
    /// The current region's body; written by the caller before it publishes the region and
    /// read by the threads that claimed one of its iterations.
    private var body: ((Int) -> Void)?
    /// Workers started (grows to `Compute.threads - 1`; guarded by `condition`).
    private var workers = 0

    private init() {}

    /// Runs `body(i)` for `i` in `0..<iterations` on the caller and the workers; returns when
    /// every iteration has finished. `iterations` at most 65535.
    @usableFromInline
    package func run(_ iterations: Int, _ body: (Int) -> Void) {
        precondition(iterations >= 0 && iterations < 1 << 16)
        guard iterations > 1,
            busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
        else {
            withoutActuallyEscaping(body) { body in
                let box = UnsafeSendableBox(body)
                DispatchQueue.concurrentPerform(iterations: iterations) { box.value($0) }
            }
            return
        }
        defer { busy.store(false, ordering: .releasing) }
        startWorkers(iterations - 1)
        withoutActuallyEscaping(body) { body in
            self.body = body
            finished.store(0, ordering: .relaxed)
            let generation = (state.load(ordering: .relaxed) >> 32) &+ 1
            // Sequentially consistent with the sleepers' count (a worker going to sleep adds
            // itself, then reads the state): one of the two sees the other's write.
            state.store(generation << 32 | UInt64(iterations) << 16, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                condition.lock()
                condition.broadcast()
                condition.unlock()
            }
            work(generation: generation)
            // Wait for iterations other threads claimed.
            var spins = 0
            while finished.load(ordering: .acquiring) < iterations {
                spins += 1
                if spins > 1000 { sched_yield() }
            }
            self.body = nil
        }
    }

    /// Claims and runs iterations of region `generation` until none is left (or the region is
    /// over).
    private func work(generation: UInt64) {
        var current = state.load(ordering: .acquiring)
        while current >> 32 == generation {
            let count = (current >> 16) & 0xFFFF, next = current & 0xFFFF
            if next >= count { return }
            let (exchanged, original) = state.compareExchange(
                expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if exchanged {
                body!(Int(next))
                finished.add(1, ordering: .releasing)
                current = current + 1
            } else {
                current = original
            }
        }
    }

    private func startWorkers(_ needed: Int) {
        guard workers < needed else { return }
        condition.lock()
        while workers < needed {
            workers += 1
            let thread = Thread { [unowned self] in self.workerLoop() }
            thread.name = "opacity-compute"
            thread.stackSize = 1 << 20
            thread.start()
        }
        condition.unlock()
    }

    private func workerLoop() {
        var seen = state.load(ordering: .acquiring) >> 32
        let spin = Self.spinMicroseconds * 1000
        while true {
            var generation = state.load(ordering: .acquiring) >> 32
            if generation == seen {
                // Look for the next region for a while, then sleep until one is published.
                let start = DispatchTime.now().uptimeNanoseconds
                var polls = 0
                while generation == seen && spin > 0 {
                    polls += 1
                    if polls & 63 == 0 && DispatchTime.now().uptimeNanoseconds - start > spin { break }
                    generation = state.load(ordering: .acquiring) >> 32
                }
                if generation == seen {
                    condition.lock()
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    while state.load(ordering: .sequentiallyConsistent) >> 32 == seen { condition.wait() }
                    sleepers.subtract(1, ordering: .relaxed)
                    condition.unlock()
                    generation = state.load(ordering: .acquiring) >> 32
                }
            }
            seen = generation
            work(generation: generation)
        }
    }
}
