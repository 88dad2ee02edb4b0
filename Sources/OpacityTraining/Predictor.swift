import Foundation
import OpacityCore
import OpacityPersistence
import OpacityData
import OpacityTensor

/// Where a model comes from: a bundle file, a run folder (its `best.opb`), or a zoo name.
public enum ModelReference {
    /// Resolves a reference to a bundle file.
    ///
    /// - A path to a file is used as is; a run folder means its `best.opb`.
    /// - Anything else is looked up in the zoo (built-in and user manifests); a zoo entry
    ///   that is not on disk yet is fetched only when `allowFetch` is set.
    /// - Throws: ``RunError`` or the zoo's error (with the nearest name) when nothing matches.
    public static func resolve(_ reference: String, allowFetch: Bool = false) throws -> URL {
        var isDir: ObjCBool = false
        let fm = FileManager.default
        if fm.fileExists(atPath: reference, isDirectory: &isDir) {
            let url = URL(fileURLWithPath: reference)
            if !isDir.boolValue { return url }
            let best = url.appendingPathComponent("best.opb")
            if fm.fileExists(atPath: best.path) { return best.resolvingSymlinksInPath() }
            if let last = Trainer.latestCheckpoint(in: url) { return last }
            throw RunError.notARun(reference)
        }
        if reference.contains("/") || reference.hasSuffix(".opb") {
            throw RunError.missingFile(reference, "a model bundle (.opb) or run folder")
        }
        let zoo = try Zoo.standard()
        if allowFetch { return try zoo.fetch(reference) }
        return try zoo.verifiedFile(reference)
    }

    /// Expands references that name zoo ensemble entries into their members.
    ///
    /// - Returns: the references to load, in order, and the ensemble rule of the first
    ///   ensemble entry met (`percentile` or `mean`), if any.
    /// - Throws: the zoo's errors for a broken ensemble entry (see ``Zoo/ensemble(_:)``).
    public static func expand(_ references: [String]) throws -> (references: [String], rule: String?) {
        var out: [String] = [], rule: String?
        for r in references {
            if FileManager.default.fileExists(atPath: r) || r.contains("/") || r.hasSuffix(".opb") {
                out.append(r)
                continue
            }
            if let (members, entryRule) = try Zoo.standard().ensemble(r) {
                out += members.map(\.name)
                rule = rule ?? entryRule
            } else {
                out.append(r)
            }
        }
        return (out, rule)
    }

    /// Loads a detector (weights strictly checked) from a reference. A zoo entry is loaded
    /// from the very bytes whose SHA-256 was checked (one read, ``Zoo/loadDetector(_:registry:options:)``).
    /// - Parameter allowNonFinite: accept weights holding NaN or infinity (refused by default,
    ///   naming the tensor).
    public static func load(_ reference: String, registry: Registry, allowFetch: Bool = false,
                            allowNonFinite: Bool = false) throws -> (Detector, URL) {
        let options: LoadOptions = allowNonFinite ? LoadOptions.strict.union(.allowNonFinite) : .strict
        let fm = FileManager.default
        if !fm.fileExists(atPath: reference), !reference.contains("/"), !reference.hasSuffix(".opb") {
            let zoo = try Zoo.standard()
            if allowFetch { _ = try zoo.fetch(reference) }
            let loaded = try zoo.loadDetector(reference, registry: registry, options: options)
            return (loaded.detector, loaded.info.url)
        }
        let url = try resolve(reference, allowFetch: allowFetch)
        return (try Detector.load(from: url, registry: registry, options: options), url)
    }

    /// The validation threshold saved with a checkpoint (`metric_threshold`), if any.
    public static func savedThreshold(_ url: URL) -> Float? {
        guard let info = try? BundleReader(url).info, let t = info.metadata.metrics["metric_threshold"] else { return nil }
        return Float(t)
    }
}

/// Runs one detector or an ensemble on images of any size and returns boxes in the
/// images' own pixels.
public final class Predictor {
    public let detectors: [Detector]
    public let method: EnsembleMethod
    /// Applied after NMS (and after the ensemble's own shrink).
    public var filter: ConfidenceFilter?
    /// Scales every box about its centre (the paper's 0.875); 1 leaves boxes alone.
    public var shrink: Float = 1
    /// Images per forward pass.
    public var batchSize = 4

    /// - Precondition: all detectors share the input size and anchor layout.
    public init(detectors: [Detector], method: EnsembleMethod = .paper) throws {
        precondition(!detectors.isEmpty, "Predictor: no detectors")
        let size = detectors[0].inputSize, levels = detectors[0].anchorGenerator
        for d in detectors where d.inputSize != size || d.anchorGenerator != levels {
            throw RunError.incompatible("an ensemble needs one input size and anchor layout; \(detectors[0].config) and \(d.config) differ")
        }
        self.detectors = detectors
        self.method = method
        for d in detectors { d.eval() }
    }

    public var inputSize: Int { detectors[0].inputSize }

    /// Raw detections (after NMS) in network pixels for a `[N, 1, S, S]` batch.
    public func detectNetwork(_ images: Tensor) -> [[Detection]] {
        predictNetwork(images).map(\.detections)
    }

    /// Raw detections (after NMS) in network pixels and the image-level class probabilities
    /// for a `[N, 1, S, S]` batch.
    public func predictNetwork(_ images: Tensor) -> [Prediction] {
        Autograd.inference {
            let anchors = detectors[0].anchors(height: images.shape[2], width: images.shape[3])
            let outputs = detectors.map { $0.forward(images) }
            let combined = detectors.count == 1 ? outputs[0] : EnsembleCombiner.combine(outputs, method: method)
            var dets = detectors[0].postprocessor.detections(combined, anchors: anchors, imageSize: (images.shape[2], images.shape[3]))
            var factor = shrink
            if detectors.count > 1, case .meanShrink(let f) = method { factor *= f }
            if factor != 1 { dets = dets.map { $0.map { Detection(box: $0.box.scaled(about: factor), score: $0.score) } } }
            if let filter { dets = dets.map(filter.apply) }
            var global: [[Float]?] = Array(repeating: nil, count: dets.count)
            if let g = combined.globalLogProbs, g.shape.count == 2, g.shape[0] == dets.count {
                let k = g.shape[1], values = g.scalars
                for n in 0..<dets.count { global[n] = (0..<k).map { exp(values[n * k + $0]) } }
            }
            return zip(dets, global).map { Prediction(detections: $0, globalProbabilities: $1) }
        }
    }

    /// Detections in each image's own pixels.
    public func detect(_ images: [GrayImage]) -> [[Detection]] {
        predict(images).map(\.detections)
    }

    /// Detections in each image's own pixels and the image-level class probabilities, in
    /// forward passes of at most ``batchSize`` images.
    public func predict(_ images: [GrayImage]) -> [Prediction] {
        var out: [Prediction] = []
        var i = 0
        while i < images.count {
            let chunk = Array(images[i..<min(images.count, i + batchSize)])
            let t = InferenceInput.batch(chunk.map { InferenceInput.prepare($0, size: inputSize) })
            for (img, p) in zip(chunk, predictNetwork(t)) {
                out.append(Prediction(
                    detections: InferenceInput.toSource(p.detections, size: inputSize, sourceWidth: img.width, sourceHeight: img.height),
                    globalProbabilities: p.globalProbabilities))
            }
            i += batchSize
        }
        return out
    }
}

/// What a ``Predictor`` finds on one image.
public struct Prediction: Sendable {
    /// Boxes with scores (after NMS, the ensemble rule, shrink and the predictor's filter).
    public var detections: [Detection]
    /// Image-level class probabilities in ``ImageClass`` order (not normal, normal, lung
    /// opacity), summing to 1; `nil` when the head has no global classifier.
    public var globalProbabilities: [Float]?

    /// A prediction from its parts.
    public init(detections: [Detection], globalProbabilities: [Float]?) {
        self.detections = detections
        self.globalProbabilities = globalProbabilities
    }
}

/// The challenge metric of a model on labelled images, over a sweep of thresholds.
public struct Evaluation {
    public struct ImageResult: Sendable {
        public var id: String
        public var truth: [BoundingBox]
        /// Detections after NMS, before thresholding, in source pixels.
        public var detections: [Detection]
    }

    public var images: [ImageResult]
    public var sweep: ThresholdSweep

    /// Evaluates on dataset records (boxes in source pixels).
    /// - Parameter progress: called after each batch with (done, total).
    public init(predictor: Predictor, records: [DatasetRecord], skipUnreadable: Bool = false,
                progress: ((Int, Int) -> Void)? = nil) throws {
        var results: [ImageResult] = []
        let saved = predictor.filter
        predictor.filter = nil
        defer { predictor.filter = saved }
        var i = 0
        while i < records.count {
            let chunk = Array(records[i..<min(records.count, i + predictor.batchSize)])
            var imgs: [GrayImage] = [], kept: [DatasetRecord] = []
            for r in chunk {
                guard let url = r.imageURL else {
                    if skipUnreadable { continue }
                    throw DataError.missingFile(path: r.id, expected: "an image file for \(r.id)")
                }
                do { imgs.append(try ImageFile.read(url)); kept.append(r) } catch {
                    if !skipUnreadable { throw error }
                }
            }
            for (r, d) in zip(kept, predictor.detect(imgs)) { results.append(ImageResult(id: r.id, truth: r.boxes, detections: d)) }
            i += predictor.batchSize
            progress?(min(i, records.count), records.count)
        }
        images = results
        sweep = ThresholdSweep(truth: results.map(\.truth), detections: results.map(\.detections))
    }

    /// An evaluation of results computed elsewhere (e.g. gathered from the ranks of a
    /// sharded run, in the order one process would have produced them).
    public init(results: [ImageResult]) {
        images = results
        sweep = ThresholdSweep(truth: results.map(\.truth), detections: results.map(\.detections))
    }

    /// Gathers every rank's results in rank order (exact bits: coordinates travel as raw
    /// floats); `nil` except on rank 0.
    /// - Throws: the group's transport errors.
    public static func gather(_ results: [ImageResult], group: ProcessGroup) throws -> [ImageResult]? {
        struct Part: Codable { var ids: [String]; var truth: Data; var detections: Data }
        let part = Part(ids: results.map(\.id), truth: DetectionWire.encode(results.map(\.truth)),
                        detections: DetectionWire.encode(results.map(\.detections)))
        let all = try group.allGather(JSONEncoder().encode(part))
        guard group.isLeader else { return nil }
        return try all.flatMap { d -> [ImageResult] in
            let p = try JSONDecoder().decode(Part.self, from: d)
            let truth = DetectionWire.decodeBoxes(p.truth), dets = DetectionWire.decode(p.detections)
            return p.ids.indices.map { ImageResult(id: p.ids[$0], truth: truth[$0], detections: dets[$0]) }
        }
    }

    /// Per-image scores at a threshold as CSV: `patientId,score,truth_boxes,predicted_boxes`
    /// (an empty score means the image does not count: no truth and no prediction).
    public func perImageCSV(threshold: Float) -> String {
        let f = ConfidenceFilter(threshold: threshold)
        return CSVTable.render(header: ["patientId", "score", "truth_boxes", "predicted_boxes"], rows: images.map { r in
            let kept = f.apply(r.detections)
            let score = RSNAMetric.imageScore(truth: r.truth, predictions: kept)
            return [r.id, score.map { String(format: "%.6f", $0) } ?? "", "\(r.truth.count)", "\(kept.count)"]
        })
    }

    /// The metric against the score threshold, with the best point marked.
    public func chart(title: String) -> LineChart {
        var c = LineChart(title: title, xLabel: "score threshold", yLabel: "RSNA metric",
                          series: [LineChart.Series(name: "metric", points: zip(sweep.thresholds, sweep.scores).map { (Double($0), $1) },
                                                    color: LineChart.palette[0])])
        c.markers = [(Double(sweep.bestThreshold), sweep.bestScore, LineChart.palette[3])]
        return c
    }
}
