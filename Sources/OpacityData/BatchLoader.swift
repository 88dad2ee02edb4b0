import Foundation
import OpacityCore
import OpacityTensor

/// Settings of a ``BatchLoader``.
public struct LoaderConfig: Sendable {
    /// Images per batch.
    public var batchSize: Int
    /// Side of the square network input in pixels (512 in the paper).
    public var imageSize: Int
    /// The augmentation (``AugmentationConfig/none`` for validation).
    public var augmentation: AugmentationConfig
    /// Shuffle the order each epoch (seeded by `seed` and the epoch).
    public var shuffle: Bool
    /// Drop a last, smaller batch.
    public var dropLast: Bool
    /// Seed for order and augmentation; the same seed repeats a run exactly.
    public var seed: UInt64
    /// Background threads decoding and augmenting; 0 loads on the calling thread.
    public var workers: Int
    /// Most batches decoded ahead of the consumer (bounds memory).
    public var prefetch: Int
    /// Leave out images that fail to read (listed in ``Batch/skipped``) instead of failing.
    public var skipUnreadable: Bool
    /// DICOM windowing.
    public var window: WindowSetting
    /// Data-parallel sharding: this process builds only part `shardIndex` of `shardCount`
    /// of every batch (the contiguous positions `[n * i / c, n * (i + 1) / c)` of a batch of
    /// `n`), so the processes together see exactly the samples one process would. A shard
    /// may be empty, and then still comes as a batch (every process takes every step).
    public var shardIndex = 0
    /// See ``shardIndex``; 1 for a process that builds whole batches.
    public var shardCount = 1

    /// Settings; defaults are the paper's training loader without augmentation, whole batches.
    public init(batchSize: Int = 4, imageSize: Int = 512, augmentation: AugmentationConfig = .none, shuffle: Bool = true,
                dropLast: Bool = false, seed: UInt64 = 1234, workers: Int = 2, prefetch: Int = 4,
                skipUnreadable: Bool = false, window: WindowSetting = .automatic, shardIndex: Int = 0, shardCount: Int = 1) {
        self.batchSize = batchSize
        self.imageSize = imageSize
        self.augmentation = augmentation
        self.shuffle = shuffle
        self.dropLast = dropLast
        self.seed = seed
        self.workers = workers
        self.prefetch = prefetch
        self.skipUnreadable = skipUnreadable
        self.window = window
        self.shardIndex = shardIndex
        self.shardCount = shardCount
    }
}

/// An image the loader left out, and why.
public struct SkippedImage: Sendable, Equatable {
    /// The record id.
    public var id: String
    /// The error message.
    public var reason: String
}

/// One batch: images `[N, 1, S, S]` in `[0, 1]` and per-image targets (boxes in the
/// `S x S` input's pixels).
public struct Batch: Sendable {
    /// The batch's position in the epoch.
    public var index: Int
    /// `[N, 1, S, S]`, values in `[0, 1]`, no mean/std normalisation (paper §2.4).
    public var images: Tensor
    /// Boxes and class per image, in batch order.
    public var targets: [DetectionTarget]
    /// Record ids in batch order.
    public var ids: [String]
    /// Images of this batch that failed to load and were left out (with `skipUnreadable`).
    public var skipped: [SkippedImage]
}

/// Batches a ``DetectionDataset``: decode, augment and resize on background threads with
/// a bounded prefetch queue, in a deterministic order.
///
/// The order of epoch `e` and every sample's augmentation depend only on
/// `(seed, e, record index)`, never on thread timing: two runs with the same seed give
/// identical batches.
public final class BatchLoader: Sendable {
    /// The data.
    public let dataset: DetectionDataset
    /// The settings.
    public let config: LoaderConfig
    let augmenter: Augmenter

    /// A loader.
    /// - Throws: ``DataError/invalidParameter(name:value:expected:nearest:)`` for a
    ///   non-positive batch or image size or a negative worker count.
    public init(dataset: DetectionDataset, config: LoaderConfig) throws {
        guard config.batchSize >= 1 else {
            throw DataError.invalidParameter(name: "batchSize", value: "\(config.batchSize)", expected: "at least 1", nearest: "1")
        }
        guard config.imageSize >= 8 else {
            throw DataError.invalidParameter(name: "imageSize", value: "\(config.imageSize)", expected: "at least 8", nearest: "8")
        }
        guard config.shardCount >= 1, (0..<config.shardCount).contains(config.shardIndex) else {
            throw DataError.invalidParameter(name: "shardIndex/shardCount", value: "\(config.shardIndex)/\(config.shardCount)",
                                             expected: "0 <= shardIndex < shardCount", nearest: "0/1")
        }
        guard config.workers >= 0, config.prefetch >= 1 else {
            throw DataError.invalidParameter(name: "workers/prefetch", value: "\(config.workers)/\(config.prefetch)",
                                             expected: "workers >= 0 and prefetch >= 1", nearest: "2/4")
        }
        self.dataset = dataset
        self.config = config
        self.augmenter = Augmenter(config: config.augmentation, outputSize: config.imageSize)
    }

    /// Batches in one epoch.
    public var batchesPerEpoch: Int {
        let n = dataset.records.count, b = config.batchSize
        return config.dropLast ? n / b : (n + b - 1) / b
    }

    /// The record indices of epoch `epoch` in visiting order.
    public func order(epoch: Int) -> [Int] {
        var idx = Array(0..<dataset.records.count)
        guard config.shuffle, idx.count > 1 else { return idx }
        var rng = RandomGenerator(seed: config.seed, stream: 0x5EED_0000 &+ UInt64(epoch))
        for i in stride(from: idx.count - 1, to: 0, by: -1) { idx.swapAt(i, rng.nextInt(i + 1)) }
        return idx
    }

    /// Loads and augments one record as it would appear in epoch `epoch`.
    /// - Throws: image reading errors naming the file; ``DataError/missingFile(path:expected:)``
    ///   for a record without an image.
    public func sample(record index: Int, epoch: Int) throws -> AugmentedSample {
        let r = dataset.records[index]
        guard let url = r.imageURL else { throw DataError.missingFile(path: r.id, expected: "an image file for \(r.id)") }
        let img = try ImageFile.readSource(url, window: config.window)
        try r.checkBoxes(width: img.width, height: img.height)
        var rng = RandomGenerator(seed: config.seed &+ UInt64(epoch) &* 0x9E37_79B9_7F4A_7C15, stream: UInt64(index))
        return augmenter.apply(img, boxes: r.boxes, using: &rng)
    }

    /// Builds batch `b` of `epoch`.
    public func batch(_ b: Int, epoch: Int, order: [Int]) throws -> Batch {
        var lo = b * config.batchSize, hi = min(order.count, lo + config.batchSize)
        if config.shardCount > 1 {
            let n = hi - lo, i = config.shardIndex, c = config.shardCount
            (lo, hi) = (lo + n * i / c, lo + n * (i + 1) / c)
        }
        var samples: [(String, AugmentedSample, ImageClass?)] = []
        var skipped: [SkippedImage] = []
        for k in lo..<hi {
            let i = order[k]
            do {
                samples.append((dataset.records[i].id, try sample(record: i, epoch: epoch), dataset.records[i].imageClass))
            } catch {
                if !config.skipUnreadable { throw error }
                skipped.append(SkippedImage(id: dataset.records[i].id, reason: "\(error)"))
            }
        }
        let s = config.imageSize
        var t = Tensor(uninitializedShape: [samples.count, 1, s, s])
        t.withUnsafeMutableBufferPointer { dst in
            for (n, smp) in samples.enumerated() {
                smp.1.image.pixels.withUnsafeBufferPointer { src in
                    dst.baseAddress!.advanced(by: n * s * s).update(from: src.baseAddress!, count: s * s)
                }
            }
        }
        return Batch(index: b, images: t, targets: samples.map { DetectionTarget(boxes: $0.1.boxes, imageClass: $0.2) },
                     ids: samples.map(\.0), skipped: skipped)
    }

    /// Starts epoch `epoch`: workers begin decoding right away.
    public func epoch(_ epoch: Int) -> EpochIterator { EpochIterator(loader: self, epoch: epoch) }
}

/// The batches of one epoch, in order. Dropping the iterator (or ``cancel()``) stops its
/// workers.
public final class EpochIterator: @unchecked Sendable {
    private let state: EpochState

    init(loader: BatchLoader, epoch: Int) {
        state = EpochState(loader: loader, epoch: epoch)
        for w in 0..<loader.config.workers {
            let s = state
            let t = Thread { s.work() }
            t.name = "opacity-loader-\(w)"
            t.start()
        }
    }

    deinit { state.cancel() }

    /// Batches in this epoch.
    public var batchCount: Int { state.count }

    /// The next batch, or `nil` at the end of the epoch. A batch whose images were all
    /// skipped comes empty (no ids; its `skipped` names them), so that every skipped image
    /// reaches the caller's report (with one image a batch, each skipped image is such a batch).
    /// - Throws: the first image error when `skipUnreadable` is off.
    public func next() throws -> Batch? { try state.take() }

    /// Stops the workers; pending batches are dropped.
    public func cancel() { state.cancel() }
}

/// State shared by an epoch's consumer and workers (the workers never hold the iterator,
/// so dropping it cancels them).
final class EpochState: @unchecked Sendable {
    let loader: BatchLoader
    let epoch: Int
    let order: [Int]
    let count: Int
    private let cond = NSCondition()
    private var nextToClaim = 0
    private var nextToDeliver = 0
    private var ready: [Int: Result<Batch, Error>] = [:]
    private var cancelled = false

    init(loader: BatchLoader, epoch: Int) {
        self.loader = loader
        self.epoch = epoch
        self.order = loader.order(epoch: epoch)
        self.count = loader.batchesPerEpoch
    }

    func cancel() {
        cond.lock()
        cancelled = true
        ready.removeAll()
        cond.broadcast()
        cond.unlock()
    }

    func take() throws -> Batch? {
        if loader.config.workers == 0 {
            guard nextToDeliver < count else { return nil }
            defer { nextToDeliver += 1 }
            return try loader.batch(nextToDeliver, epoch: epoch, order: order)
        }
        cond.lock()
        defer { cond.unlock() }
        guard nextToDeliver < count, !cancelled else { return nil }
        while ready[nextToDeliver] == nil && !cancelled { cond.wait() }
        guard let r = ready.removeValue(forKey: nextToDeliver) else { return nil }
        nextToDeliver += 1
        cond.broadcast()
        return try r.get()
    }

    func work() {
        let prefetch = loader.config.prefetch
        while true {
            cond.lock()
            while !cancelled && nextToClaim < count && nextToClaim - nextToDeliver >= prefetch { cond.wait() }
            if cancelled || nextToClaim >= count {
                cond.unlock()
                return
            }
            let b = nextToClaim
            nextToClaim += 1
            cond.unlock()
            let result = Result { try loader.batch(b, epoch: epoch, order: order) }
            cond.lock()
            if !cancelled { ready[b] = result }
            cond.broadcast()
            cond.unlock()
        }
    }
}

/// Loader throughput: decode + augment + resize on the calling thread.
public enum LoaderBenchmark {
    /// The measurement.
    public struct Result: Sendable, CustomStringConvertible {
        /// Images processed.
        public var images: Int
        /// Wall seconds in all.
        public var seconds: Double
        /// Seconds spent decoding.
        public var decodeSeconds: Double
        /// Seconds spent augmenting and resizing.
        public var augmentSeconds: Double
        /// Output side.
        public var outputSize: Int
        /// Images per second.
        public var imagesPerSecond: Double { Double(images) / max(seconds, 1e-9) }

        /// `N images/s (decode x ms, augment y ms per image)`.
        public var description: String {
            String(format: "%.1f images/s on one thread (%d images -> %d px: decode %.1f ms, augment+resize %.1f ms per image)",
                   imagesPerSecond, images, outputSize, decodeSeconds * 1000 / Double(max(images, 1)),
                   augmentSeconds * 1000 / Double(max(images, 1)))
        }
    }

    /// Measures decode + augment + resize throughput on the calling thread (one core).
    /// - Parameters:
    ///   - files: image files, cycled (e.g. the RSNA DICOMs).
    ///   - outputSize: network input side (512).
    ///   - augmentation: the augmentation (heavy by default: the most expensive).
    ///   - images: how many images to process.
    ///   - seed: augmentation seed.
    /// - Returns: timings.
    /// - Throws: the first read error.
    public static func run(files: [URL], outputSize: Int = 512, augmentation: AugmentationConfig = .heavy,
                           images: Int = 60, seed: UInt64 = 0) throws -> Result {
        guard !files.isEmpty else {
            throw DataError.invalidParameter(name: "files", value: "[]", expected: "at least one image file", nearest: nil)
        }
        let aug = Augmenter(config: augmentation, outputSize: outputSize)
        var decode = 0.0, augment = 0.0
        var sink: Float = 0
        let start = Date()
        for i in 0..<images {
            let t0 = Date()
            let img = try ImageFile.read(files[i % files.count])
            let t1 = Date()
            var rng = RandomGenerator(seed: seed, stream: UInt64(i))
            let s = aug.apply(img, boxes: [BoundingBox(x: 300, y: 300, width: 200, height: 300)], using: &rng)
            var t = Tensor(uninitializedShape: [1, 1, outputSize, outputSize])
            t.withUnsafeMutableBufferPointer { d in
                s.image.pixels.withUnsafeBufferPointer { d.baseAddress!.update(from: $0.baseAddress!, count: $0.count) }
            }
            sink += t[flat: 0]
            decode += t1.timeIntervalSince(t0)
            augment += Date().timeIntervalSince(t1)
        }
        _ = sink
        return Result(images: images, seconds: Date().timeIntervalSince(start), decodeSeconds: decode, augmentSeconds: augment,
                      outputSize: outputSize)
    }
}
