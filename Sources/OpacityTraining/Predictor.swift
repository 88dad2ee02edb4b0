import Foundation
import OpacityCore
import OpacityPersistence
import OpacityData
import OpacityTensor

/// Where a model comes from: a bundle file, a run folder (its `best.opb`), or a zoo name.
public enum ModelReference {
    /// The zoo entry a reference names, if it names one: `NAME` for `zoo:NAME` (always the
    /// zoo's entry, even when a file or folder of that name exists here), the reference itself
    /// for a bare name that is no file or folder here (no `/`, not ending in `.opb`); `nil` for
    /// a path.
    public static func zooName(_ reference: String) -> String? {
        if let name = Zoo.entryName(inReference: reference) { return name }
        if reference.contains("/") || reference.hasSuffix(".opb") || FileManager.default.fileExists(atPath: reference) { return nil }
        return reference
    }

    /// Resolves a reference to a bundle file.
    ///
    /// - A path to a file is used as is; a run folder means its `best.opb`.
    /// - `zoo:NAME` is the zoo's entry NAME; anything else is looked up in the zoo (built-in
    ///   and user manifests) unless a file or folder of that name exists; a zoo entry that is
    ///   not on disk yet is fetched only when `allowFetch` is set.
    /// - Throws: ``RunError`` or the zoo's error (with the nearest name) when nothing matches.
    public static func resolve(_ reference: String, allowFetch: Bool = false) throws -> URL {
        guard let name = zooName(reference) else {
            var isDir: ObjCBool = false
            let fm = FileManager.default
            guard fm.fileExists(atPath: reference, isDirectory: &isDir) else {
                throw RunError.missingFile(reference, "a model bundle (.opb) or run folder")
            }
            let url = URL(fileURLWithPath: reference)
            if !isDir.boolValue { return url }
            let best = url.appendingPathComponent("best.opb")
            if fm.fileExists(atPath: best.path) { return best.resolvingSymlinksInPath() }
            if let last = Trainer.latestCheckpoint(in: url) { return last }
            throw RunError.notARun(reference)
        }
        let zoo = try Zoo.standard()
        if allowFetch { return try zoo.fetch(name) }
        return try zoo.verifiedFile(name)
    }

    /// Expands references that name zoo ensemble entries (`NAME` or `zoo:NAME`) into their
    /// members, each as `zoo:MEMBER`.
    ///
    /// - Returns: the references to load, in order, and the ensemble rule of the first
    ///   ensemble entry met (`percentile` or `mean`), if any.
    /// - Throws: the zoo's errors for a broken ensemble entry (see ``Zoo/ensemble(_:)``).
    public static func expand(_ references: [String]) throws -> (references: [String], rule: String?) {
        var out: [String] = [], rule: String?
        var zoo: Zoo?
        for r in references {
            guard let name = zooName(r) else {
                out.append(r)
                continue
            }
            if zoo == nil { zoo = try Zoo.standard() }
            if let (members, entryRule) = try zoo!.ensemble(name) {
                // as zoo:NAME: a member is the zoo's entry, never a file or folder of its name
                out += members.map { Zoo.referencePrefix + $0.name }
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
        let loaded = try loadHashed(reference, registry: registry, allowFetch: allowFetch, allowNonFinite: allowNonFinite)
        return (loaded.detector, loaded.url)
    }

    /// ``load(_:registry:allowFetch:allowNonFinite:)`` with the SHA-256 of the bytes the
    /// detector was built from: the file is read once into memory, hashed and parsed from
    /// there (a zoo entry's bytes are also checked against its manifest), so the digest a
    /// report gives is that of the weights in use even if the file is replaced meanwhile.
    /// - Returns: the detector, its bundle file and the digest (lower-case hex).
    public static func loadHashed(_ reference: String, registry: Registry, allowFetch: Bool = false,
                                  allowNonFinite: Bool = false) throws -> (detector: Detector, url: URL, sha256: String) {
        let options: LoadOptions = allowNonFinite ? LoadOptions.strict.union(.allowNonFinite) : .strict
        let loaded: LoadedDetector
        if let name = zooName(reference) {
            let zoo = try Zoo.standard()
            if allowFetch { _ = try zoo.fetch(name) }
            loaded = try zoo.loadDetector(name, registry: registry, options: options)
        } else {
            loaded = try Detector.loadHashed(from: try resolve(reference, allowFetch: allowFetch), registry: registry, options: options)
        }
        return (loaded.detector, loaded.info.url, loaded.sha256 ?? "")
    }

    /// The bundle's operating point threshold (``OperatingPoint``: `extra.operating_point`,
    /// else the trainer's `metric_threshold`), if any; `nil` too for one picked where the
    /// validation metric was 0 at every threshold (``OperatingPoint/usable(_:)``), which is
    /// no operating point.
    public static func savedThreshold(_ url: URL) -> Float? { OperatingPoint.usable(url)?.threshold }
}

/// Runs one detector or an ensemble, optionally with test-time augmentation, on images of
/// any size and returns boxes in the images' own pixels.
///
/// This is the library entry point for every consumer (eval, detect, submit, serve):
/// configure ``method``, ``tta``, ``filter`` and ``shrink``, then call ``predict(_:)`` or
/// ``detect(_:)``.
public final class Predictor {
    public let detectors: [Detector]
    public let method: EnsembleMethod
    /// Test-time augmentation; `nil` runs each model once per image.
    /// Anchor averaging applies to flip-only TTA; with scales the views are merged by WBF.
    public var tta: TestTimeAugmentation?
    /// Applied after NMS (and after the ensemble's own shrink).
    public var filter: ConfidenceFilter?
    /// Scales every box about its centre (the paper's 0.875); 1 leaves boxes alone.
    public var shrink: Float = 1
    /// Images per forward pass.
    public var batchSize = 4

    /// - Parameter names: what the message of a refused ensemble calls each detector (the
    ///   references it was loaded from, as `--model` gave them); `nil` names them by config only.
    /// - Throws: ``RunError/incompatible(_:)`` when the detectors differ in input size or
    ///   anchor layout, naming the first two that differ; ``EvaluationError/invalidArgument(_:)``
    ///   when WBF weights do not match the models or are not positive.
    public init(detectors: [Detector], method: EnsembleMethod = .paper, tta: TestTimeAugmentation? = nil, names: [String]? = nil) throws {
        precondition(!detectors.isEmpty, "Predictor: no detectors")
        let size = detectors[0].inputSize, levels = detectors[0].anchorGenerator
        if let i = detectors.indices.first(where: { detectors[$0].inputSize != size || detectors[$0].anchorGenerator != levels }) {
            func named(_ k: Int) -> String {
                guard let names, names.indices.contains(k) else { return detectors[k].config }
                return "\(names[k]) is \(detectors[k].config)"
            }
            throw RunError.incompatible("an ensemble needs one input size and anchor layout: \(named(0)), \(named(i)); ensemble models of one size")
        }
        if case .wbf(let w, let weights) = method, let weights {
            _ = try w.fuse(detectors.map { _ in [WeightedBoxesFusion.Box]() }, weights: weights)
        }
        if let tta, case .anchors = tta.merge {
            if !tta.scales.isEmpty { throw EvaluationError.invalidArgument("TTA anchor averaging works for flip only; merge scales by wbf") }
            let coarsest = 1 << levels.levels.upperBound
            if size % coarsest != 0 {
                throw EvaluationError.invalidArgument("TTA flip by anchor averaging needs an input size that is a multiple of \(coarsest) (the model's is \(size)); merge by wbf")
            }
        }
        self.detectors = detectors
        self.method = method
        self.tta = tta
        for d in detectors { d.eval() }
    }

    public var inputSize: Int { detectors[0].inputSize }

    /// The ensemble's per-model weights for WBF (1 each unless given).
    var modelWeights: [Double] {
        if case .wbf(_, let w?) = method { return w }
        return [Double](repeating: 1, count: detectors.count)
    }

    /// Post-processes one combined head output into detections (network pixels), with the
    /// ensemble's shrink, without ``shrink`` and ``filter``.
    private func decode(_ out: HeadOutput, height: Int, width: Int) -> [[Detection]] {
        let anchors = detectors[0].anchors(height: height, width: width)
        var dets = detectors[0].postprocessor.detections(out, anchors: anchors, imageSize: (height, width))
        if detectors.count > 1, case .meanShrink(let f) = method, f != 1 {
            dets = dets.map { $0.map { Detection(box: $0.box.scaled(about: f), score: $0.score) } }
        }
        return dets
    }

    /// Applies ``shrink`` and ``filter``.
    private func finish(_ d: [Detection]) -> [Detection] {
        var d = d
        if shrink != 1 { d = d.map { Detection(box: $0.box.scaled(about: shrink), score: $0.score) } }
        if let filter { d = filter.apply(d) }
        return d
    }

    /// Raw detections (after NMS, or WBF for a `.wbf` ensemble) in network pixels for a
    /// `[N, 1, S, S]` batch, without test-time augmentation.
    public func detectNetwork(_ images: Tensor) -> [[Detection]] {
        predictNetwork(images).map(\.detections)
    }

    /// Raw detections (after NMS) in network pixels and the image-level class probabilities
    /// for a `[N, 1, S, S]` batch.
    public func predictNetwork(_ images: Tensor) -> [Prediction] {
        Autograd.inference {
            let (h, w) = (images.shape[2], images.shape[3])
            let outputs = detectors.map { $0.forward(images) }
            let dets: [[Detection]]
            if case .wbf(let fusion, _) = method {
                let per = outputs.map { decode($0, height: h, width: w) }
                dets = (0..<images.shape[0]).map { i in fusion.fuseChecked(per.map { $0[i] }, width: w, height: h, weights: modelWeights) }
            } else {
                dets = decode(detectors.count == 1 ? outputs[0] : EnsembleCombiner.combine(outputs, method: method), height: h, width: w)
            }
            var global: [[Float]?] = Array(repeating: nil, count: dets.count)
            if outputs.allSatisfy({ $0.globalLogProbs != nil }), let g0 = outputs[0].globalLogProbs, g0.shape.count == 2, g0.shape[0] == dets.count {
                let k = g0.shape[1]
                for n in 0..<dets.count {
                    var p = [Float](repeating: 0, count: k)
                    for o in outputs { let v = o.globalLogProbs!.scalars; for c in 0..<k { p[c] += exp(v[n * k + c]) / Float(outputs.count) } }
                    global[n] = p
                }
            }
            return zip(dets, global).map { Prediction(detections: finish($0), globalProbabilities: $1) }
        }
    }

    /// Detections in each image's own pixels.
    public func detect(_ images: [GrayImage]) -> [[Detection]] { predict(images).map(\.detections) }

    /// Detections in each image's own pixels, for images of any depth (12- to 16-bit
    /// DICOM reach the network in `Float`, with no 8-bit step).
    public func detect(_ images: [SourceImage]) -> [[Detection]] { predict(images).map(\.detections) }

    /// Detections and image-level class probabilities for 8-bit images.
    public func predict(_ images: [GrayImage]) -> [Prediction] { predict(images.map { SourceImage.gray($0) }) }

    /// Detections and class probabilities for each image of any depth, in its own pixels.
    ///
    /// Without TTA each model sees the image warped to its input size. With TTA every view
    /// (flip, scale) is run; per-anchor ensembles combine models within a view, then views
    /// are merged by the TTA's rule; a WBF ensemble fuses every (model, view) box list at
    /// once, a model's weight shared by its views.
    public func predict(_ images: [SourceImage]) -> [Prediction] {
        var out: [Prediction] = []
        var i = 0
        while i < images.count {
            let chunk = Array(images[i..<min(images.count, i + batchSize)])
            out += Autograd.inference { predictChunk(chunk) }
            i += batchSize
        }
        return out
    }

    private func predictChunk(_ chunk: [SourceImage]) -> [Prediction] {
        let views = tta?.views ?? [TestTimeAugmentation.View(flip: false, scale: 1)]
        let n = chunk.count
        // per image: the box lists to fuse (with weights) and the class probabilities seen
        var lists = [[[Detection]]](repeating: [], count: n)
        var listWeights: [Double] = []
        var probs = [[Float]](repeating: [], count: n), probCount = 0
        var anchorOutputs: [HeadOutput] = []  // for anchor-averaged flip TTA
        func addProbs(_ o: HeadOutput) {
            guard let g = o.globalLogProbs else { return }
            let v = g.scalars, k = g.shape[1]
            for b in 0..<n {
                if probs[b].isEmpty { probs[b] = [Float](repeating: 0, count: k) }
                for c in 0..<k { probs[b][c] += exp(v[b * k + c]) }
            }
            probCount += 1
        }
        let isWBF: Bool = { if case .wbf = method { return true } else { return false } }()
        var anchorMerge = false
        if let tta, case .anchors = tta.merge, tta.scales.isEmpty { anchorMerge = true }
        for view in views {
            let size = TestTimeAugmentation.inputSize(inputSize, scale: view.scale)
            var batch = InferenceInput.batch(chunk.map { InferenceInput.prepare($0, size: size) })
            if view.flip { batch = TestTimeAugmentation.flipped(batch) }
            let outputs = detectors.map { $0.forward(batch) }
            outputs.forEach(addProbs)
            if anchorMerge && !isWBF {
                for o in outputs {
                    // validated in init: flip-only, and unflip only fails for odd widths
                    if view.flip, let u = try? TestTimeAugmentation.unflip(o, anchors: detectors[0].anchorGenerator, height: size, width: size) {
                        anchorOutputs.append(u)
                    } else if !view.flip {
                        anchorOutputs.append(o)
                    }
                }
                continue
            }
            let perList: [[[Detection]]]  // [list][image]
            if isWBF {
                perList = outputs.map { decode($0, height: size, width: size) }
                listWeights += modelWeights
            } else {
                perList = [decode(detectors.count == 1 ? outputs[0] : EnsembleCombiner.combine(outputs, method: method), height: size, width: size)]
                listWeights.append(1)
            }
            for l in perList {
                for (b, d) in l.enumerated() {
                    var d = d
                    if view.flip { d = d.map { Detection(box: BoundingBox(x1: Float(size) - $0.box.x2, y1: $0.box.y, x2: Float(size) - $0.box.x, y2: $0.box.y2), score: $0.score) } }
                    lists[b].append(InferenceInput.toSource(d, size: size, sourceWidth: chunk[b].width, sourceHeight: chunk[b].height))
                }
            }
        }
        var result: [Prediction] = []
        let classProbs: [[Float]?] = probs.map { p in p.isEmpty ? nil : p.map { $0 / Float(probCount) } }
        if !anchorOutputs.isEmpty {
            let combined = anchorOutputs.count == 1 ? anchorOutputs[0] : EnsembleCombiner.combine(anchorOutputs, method: method)
            let dets = decode(combined, height: inputSize, width: inputSize)
            for (b, d) in dets.enumerated() {
                result.append(Prediction(detections: finish(InferenceInput.toSource(d, size: inputSize, sourceWidth: chunk[b].width, sourceHeight: chunk[b].height)),
                                         globalProbabilities: classProbs[b]))
            }
            return result
        }
        let fusion: WeightedBoxesFusion
        if case .wbf(let f, _) = method { fusion = f } else if let tta, case .wbf(let f) = tta.merge { fusion = f } else { fusion = WeightedBoxesFusion() }
        for b in 0..<n {
            let d = lists[b].count == 1 ? lists[b][0] : fusion.fuseChecked(lists[b], width: chunk[b].width, height: chunk[b].height, weights: listWeights)
            result.append(Prediction(detections: finish(d), globalProbabilities: classProbs[b]))
        }
        return result
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
        /// The labelled image class, or `nil` when the labels do not give it (see
        /// ``DatasetRecord/imageClass``); whether the image is "Lung Opacity" is always known
        /// from ``truth``.
        public var imageClass: ImageClass? = nil
        /// The global classifier's probabilities (``ImageClass`` order), if the head has one.
        public var classProbabilities: [Float]? = nil

        /// One image's labels and predictions.
        public init(id: String, truth: [BoundingBox], detections: [Detection], imageClass: ImageClass? = nil,
                    classProbabilities: [Float]? = nil) {
            self.id = id
            self.truth = truth
            self.detections = detections
            self.imageClass = imageClass
            self.classProbabilities = classProbabilities
        }
    }

    /// An evaluation of results already at hand (e.g. read from a submission).
    public init(images: [ImageResult]) {
        self.images = images
        sweep = ThresholdSweep(truth: images.map(\.truth), detections: images.map(\.detections))
    }

    public var images: [ImageResult]
    public var sweep: ThresholdSweep
    /// Records left out with `skipUnreadable` (missing or unreadable image), with the reason.
    public var skipped: [(id: String, reason: String)] = []

    /// Evaluates on dataset records (boxes in source pixels).
    /// - Parameters:
    ///   - window: how DICOM images are windowed to 8 bits (PNG and JPEG are read as they
    ///     are), as `detect --window`; the file's own window by default.
    ///   - progress: called after each batch with (done, total).
    public init(predictor: Predictor, records: [DatasetRecord], skipUnreadable: Bool = false,
                window: WindowSetting = .automatic, progress: ((Int, Int) -> Void)? = nil) throws {
        var results: [ImageResult] = []
        let saved = predictor.filter
        predictor.filter = nil
        defer { predictor.filter = saved }
        var i = 0
        while i < records.count {
            let chunk = Array(records[i..<min(records.count, i + predictor.batchSize)])
            var imgs: [SourceImage] = [], kept: [DatasetRecord] = []
            for r in chunk {
                guard let url = r.imageURL else {
                    if skipUnreadable { skipped.append((r.id, "missing")); continue }
                    throw DataError.missingFile(path: r.id, expected: "an image file for \(r.id)")
                }
                do {
                    let img = try ImageFile.readSource(url, window: window)
                    try r.checkBoxes(width: img.width, height: img.height)
                    imgs.append(img)
                    kept.append(r)
                } catch {
                    if !skipUnreadable { throw error }
                    skipped.append((r.id, "\(error)"))
                }
            }
            for (r, p) in zip(kept, predictor.predict(imgs)) {
                results.append(ImageResult(id: r.id, truth: r.boxes, detections: p.detections, imageClass: r.imageClass,
                                           classProbabilities: p.globalProbabilities))
            }
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
    /// floats; labelled classes and class probabilities travel too); `nil` except on rank 0.
    /// - Throws: the group's transport errors.
    public static func gather(_ results: [ImageResult], group: ProcessGroup) throws -> [ImageResult]? {
        struct Part: Codable {
            var ids: [String]; var truth: Data; var detections: Data
            var classes: [Int?]; var probabilities: [[Float]?]
        }
        let part = Part(ids: results.map(\.id), truth: DetectionWire.encode(results.map(\.truth)),
                        detections: DetectionWire.encode(results.map(\.detections)),
                        classes: results.map { $0.imageClass?.rawValue }, probabilities: results.map(\.classProbabilities))
        let all = try group.allGather(JSONEncoder().encode(part))
        guard group.isLeader else { return nil }
        return try all.flatMap { d -> [ImageResult] in
            let p = try JSONDecoder().decode(Part.self, from: d)
            let truth = DetectionWire.decodeBoxes(p.truth), dets = DetectionWire.decode(p.detections)
            return p.ids.indices.map {
                ImageResult(id: p.ids[$0], truth: truth[$0], detections: dets[$0], imageClass: p.classes[$0].flatMap(ImageClass.init(rawValue:)),
                            classProbabilities: p.probabilities[$0])
            }
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
