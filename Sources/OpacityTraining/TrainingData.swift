import Foundation
import OpacityCore
import OpacityData
import OpacityTensor

/// Where labelled images come from.
public enum DataLocation: Sendable, Equatable {
    /// A folder in the Kaggle RSNA layout (labels CSV, class-info CSV, image folder), as
    /// downloaded, or as written by the synthetic generator.
    case rsna(URL)
    /// Any folder of images with a CSV of boxes.
    case csv(labels: URL, images: URL)

    /// Opens the dataset.
    /// - Parameter skipProblemImages: leave out missing or unreadable images (reported)
    ///   instead of failing.
    public func load(skipProblemImages: Bool = false, checkImages: Bool = false) throws -> DetectionDataset {
        let policy: ProblemImagePolicy = skipProblemImages ? .skip : .fail
        let check: ImageCheck = checkImages ? .decode : .exists
        switch self {
        case .rsna(let root):
            return try RSNADataset.load(root: root, options: .init(problemImages: policy, imageCheck: check))
        case .csv(let labels, let images):
            return try BoxesCSV.load(csv: labels, imageFolder: images, options: .init(problemImages: policy, imageCheck: check))
        }
    }

    /// The full paths, for messages on this machine.
    public var description: String {
        switch self {
        case .rsna(let u): return u.path
        case .csv(let l, let i): return "\(l.path) + \(i.path)"
        }
    }

    /// What a bundle's provenance and a run's recipe record: the folder and file names
    /// without the machine's directories, e.g. `rsna (RSNA layout)` or
    /// `boxes.csv + pngs/ (boxes CSV)`. Nothing of the training machine's file system
    /// beyond those names is written into a bundle.
    public var provenanceLabel: String {
        switch self {
        case .rsna(let u): return "\(u.standardizedFileURL.lastPathComponent) (RSNA layout)"
        case .csv(let l, let i): return "\(l.lastPathComponent) + \(i.standardizedFileURL.lastPathComponent)/ (boxes CSV)"
        }
    }
}

/// A ``BatchSource`` over the data layer's ``BatchLoader``: background decoding and
/// augmentation, fixed order per epoch for the seed.
public final class LoaderBatchSource: BatchSource {
    public let loader: BatchLoader
    /// Images left out because they could not be read (reported once each).
    public private(set) var skipped: [SkippedImage] = []
    /// Called with the images of a batch that could not be read, as the batch is taken (on
    /// the thread that takes the batches), so that they can be announced while training goes on.
    public var onSkip: (([SkippedImage]) -> Void)?
    private let lock = NSLock()

    public init(dataset: DetectionDataset, config: LoaderConfig) throws {
        loader = try BatchLoader(dataset: dataset, config: config)
    }

    public var imageCount: Int { loader.dataset.records.count }
    public var batchCount: Int { loader.batchesPerEpoch }

    public func batches(epoch: Int, from start: Int) -> AnyIterator<Result<TrainingBatch, Error>> {
        // From the start of an epoch the loader's workers prefetch; resuming inside an epoch
        // builds the same batches from `start` on, in order.
        let iterator: EpochIterator? = start == 0 ? loader.epoch(epoch) : nil
        let order = start == 0 ? [] : loader.order(epoch: epoch)
        var b = start, done = false
        let count = loader.batchesPerEpoch
        return AnyIterator { [self] in
            while !done {
                let batch: Batch?
                do {
                    if let iterator { batch = try iterator.next() } else if b < count {
                        batch = try loader.batch(b, epoch: epoch, order: order)
                        b += 1
                    } else { batch = nil }
                } catch {
                    done = true
                    return .failure(error)
                }
                guard let batch else { done = true; return nil }
                note(batch.skipped)
                if batch.ids.isEmpty && loader.config.shardCount == 1 { continue }
                return .success(TrainingBatch(images: batch.images, targets: batch.targets, ids: batch.ids))
            }
            return nil
        }
    }

    public func batches(epoch: Int, indices: Range<Int>) -> AnyIterator<Result<TrainingBatch, Error>> {
        let order = loader.order(epoch: epoch)
        var b = indices.lowerBound
        return AnyIterator { [self] in
            while b < indices.upperBound {
                defer { b += 1 }
                do {
                    let batch = try loader.batch(b, epoch: epoch, order: order)
                    note(batch.skipped)
                    return .success(TrainingBatch(images: batch.images, targets: batch.targets, ids: batch.ids))
                } catch {
                    b = indices.upperBound
                    return .failure(error)
                }
            }
            return nil
        }
    }

    private func note(_ s: [SkippedImage]) {
        guard !s.isEmpty else { return }
        lock.lock()
        skipped += s
        lock.unlock()
        onSkip?(s)
    }
}

/// Preparing single images for a detector and mapping its boxes back.
public enum InferenceInput {
    /// The validation geometry: the whole image warped to `size x size` (output pixel `i`
    /// samples source pixel `i * W / size`), values in `[0, 1]`.
    public static func prepare(_ image: GrayImage, size: Int) -> FloatImage {
        prepare(.gray(image), size: size)
    }

    /// The validation geometry for an image of any depth (full-depth sources stay `Float`).
    public static func prepare(_ image: SourceImage, size: Int) -> FloatImage {
        var rng = RandomGenerator(seed: 0)
        return Augmenter(config: .none, outputSize: size).apply(image, boxes: [], using: &rng).image
    }

    /// Stacks prepared images into `[N, 1, S, S]`.
    public static func batch(_ images: [FloatImage]) -> Tensor {
        let s = images.first?.width ?? 0
        var pixels: [Float] = []
        pixels.reserveCapacity(images.count * s * s)
        for i in images { pixels += i.pixels }
        return Tensor(shape: [images.count, 1, s, s], scalars: pixels)
    }

    /// Maps detections from network pixels back to the source image's pixels.
    public static func toSource(_ d: [Detection], size: Int, sourceWidth: Int, sourceHeight: Int) -> [Detection] {
        let sx = Float(sourceWidth) / Float(size), sy = Float(sourceHeight) / Float(size)
        return d.map { Detection(box: $0.box.rescaled(sx: sx, sy: sy), score: $0.score) }
    }
}
