import Foundation
import Opacity

/// A bounded queue in front of a ``DetectionEngine``: requests wait here and one worker
/// thread runs them in batches of up to `maxBatch` images, waiting at most `maxWait` for a
/// batch to fill (a batch of 4 costs less per image than 4 single images).
///
/// Each request's images stay together; a batch takes whole requests from the front while
/// they fit (a request larger than `maxBatch` runs alone, in `maxBatch`-image passes).
final class BatchQueue: @unchecked Sendable {
    typealias Completion = @Sendable (Result<[DetectionReport], ServeError>) -> Void

    private struct Job {
        var id: UInt64
        var images: [DecodedImage]
        var thresholds: [Float]
        var enqueued: UInt64
    }

    private let engine: DetectionEngine
    private let maxBatch: Int
    private let maxWaitNanoseconds: UInt64
    /// Most images waiting.
    let capacity: Int
    private let metrics: ServeMetrics
    private let condition = NSCondition()
    private var jobs: [Job] = []
    private var queuedImages = 0
    private var nextID: UInt64 = 0
    private var closed = false
    private var finished = false
    private var pending: [UInt64: Completion] = [:]
    private var thread: Thread?

    init(engine: DetectionEngine, maxBatch: Int, maxWaitMilliseconds: Int, capacity: Int, metrics: ServeMetrics) {
        self.engine = engine
        self.maxBatch = maxBatch
        self.maxWaitNanoseconds = UInt64(maxWaitMilliseconds) * 1_000_000
        self.capacity = capacity
        self.metrics = metrics
        engine.predictor.batchSize = maxBatch
    }

    /// Starts the worker thread.
    func start() {
        let t = Thread { [self] in self.work() }
        t.name = "opacity-serve-batcher"
        t.stackSize = 16 << 20
        thread = t
        t.start()
    }

    /// Images waiting (not yet in a batch).
    var depth: Int { condition.lock(); defer { condition.unlock() }; return queuedImages }

    /// Queues images and waits for their reports, or a ``ServeError`` (queue full, closed,
    /// not answered by `deadline`; `timeoutSeconds` is the limit named in that error).
    func submit(_ images: [DecodedImage], thresholds: [Float], deadline: ContinuousClock.Instant,
                timeoutSeconds: Double) async throws(ServeError) -> [DetectionReport] {
        let result: Result<[DetectionReport], ServeError> = await withCheckedContinuation { (c: CheckedContinuation<Result<[DetectionReport], ServeError>, Never>) in
            condition.lock()
            nextID += 1
            let myID = nextID
            if closed {
                condition.unlock()
                c.resume(returning: .failure(.unavailable("the server is shutting down")))
                return
            }
            if images.count > capacity {
                condition.unlock()
                c.resume(returning: .failure(.tooManyImages(count: images.count, limit: capacity)))
                return
            }
            if queuedImages + images.count > capacity {
                condition.unlock()
                c.resume(returning: .failure(.queueFull(limit: capacity)))
                return
            }
            pending[myID] = { c.resume(returning: $0) }
            jobs.append(Job(id: myID, images: images, thresholds: thresholds, enqueued: DispatchTime.now().uptimeNanoseconds))
            queuedImages += images.count
            metrics.queueDepth.set(Double(queuedImages))
            condition.signal()
            condition.unlock()
            // the timeout: fail the request if it is not answered by the deadline
            Task.detached { [self] in
                try? await Task.sleep(until: deadline, clock: .continuous)
                self.expire(myID, timeoutSeconds: timeoutSeconds)
            }
        }
        return try result.get()
    }

    /// Fails a request that is still waiting or running (its results are then dropped).
    private func expire(_ id: UInt64, timeoutSeconds: Double) {
        condition.lock()
        guard let c = pending.removeValue(forKey: id) else { condition.unlock(); return }
        if let k = jobs.firstIndex(where: { $0.id == id }) {
            queuedImages -= jobs[k].images.count
            jobs.remove(at: k)
            metrics.queueDepth.set(Double(queuedImages))
        }
        condition.unlock()
        c(.failure(.timeout(seconds: timeoutSeconds)))
    }

    /// Stops taking requests, lets the worker finish what is queued, and waits for it.
    func drain() {
        condition.lock()
        closed = true
        condition.broadcast()
        while !finished && thread != nil { condition.wait() }
        condition.unlock()
    }

    private func work() {
        condition.lock()
        while true {
            while jobs.isEmpty && !closed { condition.wait() }
            if jobs.isEmpty && closed { break }
            // let the batch fill, at most maxWait after its oldest request arrived
            let deadline = jobs[0].enqueued + maxWaitNanoseconds
            while queuedImages < maxBatch && !closed {
                let now = DispatchTime.now().uptimeNanoseconds
                if now >= deadline { break }
                _ = condition.wait(until: Date(timeIntervalSinceNow: Double(deadline - now) / 1e9))
                if jobs.isEmpty { break }
            }
            if jobs.isEmpty { continue }
            var batch: [Job] = [jobs.removeFirst()]
            var count = batch[0].images.count
            while let next = jobs.first, count + next.images.count <= maxBatch {
                batch.append(jobs.removeFirst())
                count += next.images.count
            }
            queuedImages -= count
            metrics.queueDepth.set(Double(queuedImages))
            condition.unlock()

            let reports = engine.run(batch.flatMap(\.images), thresholds: batch.flatMap(\.thresholds))
            metrics.recordBatch(images: count)

            condition.lock()
            var start = 0
            var done: [(Completion, [DetectionReport])] = []
            for job in batch {
                let mine = Array(reports[start..<start + job.images.count])
                start += job.images.count
                if let c = pending.removeValue(forKey: job.id) { done.append((c, mine)) }
            }
            condition.unlock()
            for (c, r) in done { c(.success(r)) }
            condition.lock()
        }
        finished = true
        condition.broadcast()
        condition.unlock()
    }
}
