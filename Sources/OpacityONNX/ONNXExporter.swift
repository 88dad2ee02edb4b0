import Foundation
import OpacityCore
import OpacityRetinaNet
import OpacityTensor

/// What the exported graph's post-processing does (``ONNXExportOptions/postprocess``).
///
/// The defaults come from the detector's own post-processor (candidate score, NMS IoU,
/// candidate cap, shrink) and from `opacity detect`'s confidence filter (half-max cut and
/// score threshold), so the graph returns what `opacity detect` returns, in network pixels.
public struct ONNXPostprocess: Sendable {
    /// A sigmoid score an anchor needs to enter NMS (`candidate_score`).
    public var candidateScore: Float
    /// Class-agnostic NMS IoU (`nms`).
    public var nmsIoU: Float
    /// At most this many candidates (best first) enter NMS.
    public var maxCandidates: Int
    /// Boxes are scaled about their centre by this after NMS (`shrink`).
    public var shrink: Float
    /// Boxes scoring at or below this are dropped after NMS (`opacity detect --threshold`).
    public var threshold: Float
    /// Boxes scoring below this fraction of their image's top score are dropped (0.5: the
    /// half-max cut; 0 switches it off).
    public var relativeToMax: Float
    /// The box coding of the deltas.
    public var coder: BoxCoder

    public init(candidateScore: Float, nmsIoU: Float, maxCandidates: Int, shrink: Float, threshold: Float,
                relativeToMax: Float = 0.5, coder: BoxCoder = BoxCoder()) {
        self.candidateScore = candidateScore
        self.nmsIoU = nmsIoU
        self.maxCandidates = maxCandidates
        self.shrink = shrink
        self.threshold = threshold
        self.relativeToMax = relativeToMax
        self.coder = coder
    }

    /// The settings of a detector's RetinaNet post-processor with `opacity detect`'s filter.
    /// - Throws: ``ONNXExportError/unsupportedPostprocessor(_:)`` for any other post-processor.
    public static func matching(_ detector: Detector, threshold: Float, relativeToMax: Float = 0.5) throws -> ONNXPostprocess {
        guard let p = detector.postprocessor as? RetinaPostprocessor else {
            throw ONNXExportError.unsupportedPostprocessor("\(type(of: detector.postprocessor))")
        }
        return ONNXPostprocess(candidateScore: p.candidateScore, nmsIoU: p.nmsIoU, maxCandidates: p.maxCandidates, shrink: p.shrink,
                               threshold: threshold, relativeToMax: relativeToMax, coder: p.coder)
    }
}

/// How to export (see ``ONNXExporter``).
public struct ONNXExportOptions: Sendable {
    /// Adds box decoding, NMS and the confidence filter to the graph when set.
    public var postprocess: ONNXPostprocess?
    /// Extra `metadata_props` (e.g. the bundle's sha256), after the exporter's own.
    public var metadata: [(String, String)]
    /// The batch size of the tracing pass (any size works in the graph; 2 makes a batch
    /// that is confused with no other dimension of size 1).
    public var traceBatch: Int

    public init(postprocess: ONNXPostprocess? = nil, metadata: [(String, String)] = [], traceBatch: Int = 2) {
        self.postprocess = postprocess
        self.metadata = metadata
        self.traceBatch = traceBatch
    }
}

/// Exports a detector to an ONNX model (opset 17, IR version 8).
///
/// The graph is captured by tracing one forward pass (``OpTrace``): every public operation
/// of the engine reports itself, parameters and buffers are recognised by identity and named
/// by their module path, so every encoder, neck and head exports without code of its own.
///
/// The graph:
/// - input `images` `[N, 1, S, S]` float32 in `[0, 1]`, `N` dynamic, `S` the detector's
///   ``Detector/inputSize``;
/// - output `class_logits` `[N, A, K]` (per-anchor logits before the sigmoid, `K` = 1),
///   `box_deltas` `[N, A, 4]` (`(dx, dy, dw, dh)` divided by the coder's std),
///   `global_log_probs` `[N, 3]` (when the head has a global classifier) and `anchors`
///   `[A, 4]` (corner boxes `(x1, y1, x2, y2)` in input pixels), anchors ordered level-major,
///   then row-major, then anchor;
/// - with post-processing: `boxes` `[M, 4]` (corners in input pixels), `scores` `[M]` and
///   `batch_index` `[M]` (int64), best first within each image.
///
/// Frozen batch norm is folded into the convolution before it.
public enum ONNXExporter {
    /// Builds the ONNX model for `detector` (which is put in evaluation mode).
    /// - Throws: ``ONNXExportError`` when the forward pass uses an operation without an ONNX
    ///   translation or fixes the batch size.
    public static func model(for detector: Detector, options: ONNXExportOptions = ONNXExportOptions()) throws -> ONNXModel {
        detector.eval()
        let s = detector.inputSize, n = max(1, options.traceBatch)
        var pixels = [Float](repeating: 0, count: n * s * s)
        for i in 0..<pixels.count { pixels[i] = Float((i * 7919) % 1000) / 1000 }
        let images = Tensor(shape: [n, 1, s, s], scalars: pixels)
        let trace = OpTrace()
        let out = Autograd.inference { trace.run { detector.forward(images) } }
        var outputs: [(Tensor, String)] = [(out.classLogits, "class_logits"), (out.boxDeltas, "box_deltas")]
        if let g = out.globalLogProbs { outputs.append((g, "global_log_probs")) }
        let params = detector.namedParameters().map { ($0.0, $0.1.value) } + detector.namedBuffers().map { ($0.0, $0.1.value) }
        var b = ONNXGraphBuilder(graphName: "opacity", parameters: params, input: images, inputName: "images",
                                 outputs: outputs, trace: trace)
        for op in trace.ops { try b.translate(op) }
        let batch = ONNXDimension.named("N")
        let a = out.classLogits.shape[1]
        b.model.inputs = [ONNXValueInfo(name: "images", shape: [batch, .fixed(1), .fixed(s), .fixed(s)],
                                        doc: "grey images in [0, 1], \(s) x \(s) pixels")]
        var docs = ["class_logits": "per-anchor class logits (before the sigmoid)",
                    "box_deltas": "per-anchor box deltas (dx, dy, dw, dh) / (0.1, 0.1, 0.2, 0.2)",
                    "global_log_probs": "image-level log-probabilities: not normal, normal, lung opacity"]
        docs["box_deltas"] = "per-anchor box deltas (dx, dy, dw, dh) divided by \(detector.coderStd)"
        for (t, name) in outputs {
            guard let bound = b.name(of: t), b.isBatched(t) else { throw ONNXExportError.untracedOutput(name) }
            if bound != name { b.node("Identity", [bound], outputs: [name]) }
            b.model.outputs.append(ONNXValueInfo(name: name, shape: [batch] + t.shape.dropFirst().map { .fixed($0) }, doc: docs[name] ?? ""))
        }
        // The anchors, as a constant output.
        let anchors = detector.anchors(height: s, width: s)
        b.addInitializer(ONNXInitializer(name: "anchor_boxes", dims: [anchors.count, 4], floats: anchors.corners))
        b.node("Identity", ["anchor_boxes"], outputs: ["anchors"])
        b.model.outputs.append(ONNXValueInfo(name: "anchors", shape: [.fixed(anchors.count), .fixed(4)],
                                             doc: "anchor corner boxes (x1, y1, x2, y2) in input pixels"))
        precondition(anchors.count == a, "anchors and head disagree")
        if let post = options.postprocess {
            addPostprocessing(&b, post, anchors: anchors, size: s)
            let m = ONNXDimension.named("M")
            b.model.outputs += [
                ONNXValueInfo(name: "boxes", shape: [m, .fixed(4)], doc: "kept boxes (x1, y1, x2, y2) in input pixels"),
                ONNXValueInfo(name: "scores", shape: [m], doc: "their scores (sigmoid of the best class logit)"),
                ONNXValueInfo(name: "batch_index", type: .int64, shape: [m], doc: "the image each box belongs to"),
            ]
        }
        // Drop initializers nothing reads (weights replaced by their folded versions).
        let read = Set(b.model.nodes.flatMap(\.inputs))
        b.model.initializers.removeAll { !read.contains($0.name) }
        var meta: [(String, String)] = [("config", detector.config), ("input_size", "\(s)"), ("anchors", "\(a)")]
        if let p = options.postprocess {
            meta.append(("postprocess", String(format: "candidate_score=%g nms=%g max_candidates=%d shrink=%g threshold=%g relative_to_max=%g",
                                                p.candidateScore, p.nmsIoU, p.maxCandidates, p.shrink, p.threshold, p.relativeToMax)))
        }
        b.model.metadata = meta + options.metadata
        b.model.docString = "Opacity detector \(detector.config)"
        return b.model
    }

    /// Writes the model for `detector` to `url` atomically (nothing half-written is left).
    /// - Returns: the model written.
    /// - Throws: ``ONNXExportError``, or the file system's error.
    @discardableResult
    public static func write(_ detector: Detector, to url: URL, options: ONNXExportOptions = ONNXExportOptions()) throws -> ONNXModel {
        let m = try model(for: detector, options: options)
        try m.serialized().write(to: url, options: .atomic)
        return m
    }

    /// Decoding, TopK, NonMaxSuppression, shrink and the confidence filter, as
    /// ``RetinaPostprocessor`` and ``ConfidenceFilter`` compute them.
    static func addPostprocessing(_ b: inout ONNXGraphBuilder, _ p: ONNXPostprocess, anchors: AnchorSet, size: Int) {
        let a = anchors.count
        // Anchor centres and sizes, computed exactly as BoxCoder.decode does, [A, 1] each.
        var acx = [Float](), acy = [Float](), aw = [Float](), ah = [Float]()
        for i in 0..<a {
            let c = (anchors.corners[4 * i], anchors.corners[4 * i + 1], anchors.corners[4 * i + 2], anchors.corners[4 * i + 3])
            let w = c.2 - c.0, h = c.3 - c.1
            aw.append(w); ah.append(h)
            acx.append(c.0 + 0.5 * w); acy.append(c.1 + 0.5 * h)
        }
        let cAcx = b.constant("anchor_cx", dims: [a, 1], acx), cAcy = b.constant("anchor_cy", dims: [a, 1], acy)
        let cAw = b.constant("anchor_w", dims: [a, 1], aw), cAh = b.constant("anchor_h", dims: [a, 1], ah)
        func scalar(_ v: Float) -> String { b.constant("scalar", dims: [], [v]) }
        func column(_ x: String, _ j: Int) -> String {
            b.node("Slice", [x, b.constant("starts", dims: [1], int64s: [j]), b.constant("ends", dims: [1], int64s: [j + 1]),
                             b.constant("axes", dims: [1], int64s: [2])])
        }
        let std = p.coder.std
        // scores: sigmoid of the best class logit, [N, A]
        let best = b.node("ReduceMax", ["class_logits"], [("axes", .ints([2])), ("keepdims", .int(0))])
        let score = b.node("Sigmoid", [best])
        // decode: cx = acx + dx * std.x * aw, w = exp(dw * std.w) * aw, corners = c -+ 0.5 w
        let dx = column("box_deltas", 0), dy = column("box_deltas", 1), dw = column("box_deltas", 2), dh = column("box_deltas", 3)
        let cx = b.node("Add", [cAcx, b.node("Mul", [b.node("Mul", [dx, scalar(std.0)]), cAw])])
        let cy = b.node("Add", [cAcy, b.node("Mul", [b.node("Mul", [dy, scalar(std.1)]), cAh])])
        let w = b.node("Mul", [b.node("Exp", [b.node("Mul", [dw, scalar(std.2)])]), cAw])
        let h = b.node("Mul", [b.node("Exp", [b.node("Mul", [dh, scalar(std.3)])]), cAh])
        let hw = b.node("Mul", [w, scalar(0.5)]), hh = b.node("Mul", [h, scalar(0.5)])
        // clip to the image
        let x1 = b.node("Max", [b.node("Sub", [cx, hw]), scalar(0)])
        let y1 = b.node("Max", [b.node("Sub", [cy, hh]), scalar(0)])
        let x2 = b.node("Min", [b.node("Add", [cx, hw]), scalar(Float(size))])
        let y2 = b.node("Min", [b.node("Add", [cy, hh]), scalar(Float(size))])
        let boxes = b.node("Concat", [x1, y1, x2, y2], [("axis", .int(2))])
        // the best candidates, sorted by score: [N, K]
        let k = min(p.maxCandidates, a)
        let topScores = b.fresh("top_scores"), topIndices = b.fresh("top_indices")
        b.node("TopK", [score, b.constant("k", dims: [1], int64s: [k])], outputs: [topScores, topIndices],
               [("axis", .int(1)), ("largest", .int(1)), ("sorted", .int(1))])
        let idx = b.node("Expand", [b.node("Unsqueeze", [topIndices, b.constant("axes", dims: [1], int64s: [2])]),
                                    b.constant("shape", dims: [3], int64s: [1, 1, 4])])
        let topBoxes = b.node("GatherElements", [boxes, idx], [("axis", .int(1))])
        // A box clipped to nothing (it lay wholly outside the image) is dropped by our
        // post-processor before NMS: its score becomes 0 here, below NMS's score threshold.
        let (tx1, ty1) = (column(topBoxes, 0), column(topBoxes, 1))
        let nonEmpty = b.node("And", [b.node("Greater", [column(topBoxes, 2), tx1]), b.node("Greater", [column(topBoxes, 3), ty1])])
        let nonEmptyF = b.node("Squeeze", [b.node("Cast", [nonEmpty], [("to", .int(1))]), b.constant("axes", dims: [1], int64s: [2])])
        let liveScores = b.node("Mul", [topScores, nonEmptyF])
        let nmsScores = b.node("Unsqueeze", [liveScores, b.constant("axes", dims: [1], int64s: [1])])
        // ONNX Runtime would flip the corners of such a box: NMS sees it with zero size.
        let nmsBoxes = b.node("Concat", [tx1, ty1, b.node("Max", [column(topBoxes, 2), tx1]), b.node("Max", [column(topBoxes, 3), ty1])],
                              [("axis", .int(2))])
        let selected = b.node("NonMaxSuppression", [nmsBoxes, nmsScores, b.constant("max_boxes", dims: [1], int64s: [k]),
                                                    b.constant("iou", dims: [1], [p.nmsIoU]),
                                                    b.constant("score_threshold", dims: [1], [p.candidateScore])],
                              [("center_point_box", .int(0))])
        let batchCol = b.node("Gather", [selected, b.constant("index", dims: [1], int64s: [0])], [("axis", .int(1))])
        let boxCol = b.node("Gather", [selected, b.constant("index", dims: [1], int64s: [2])], [("axis", .int(1))])
        let pairs = b.node("Concat", [batchCol, boxCol], [("axis", .int(1))])
        var kept = b.node("GatherND", [topBoxes, pairs])
        let keptScores = b.node("GatherND", [liveScores, pairs])
        let keptBatch = b.node("Squeeze", [batchCol, b.constant("axes", dims: [1], int64s: [1])])
        if p.shrink != 1 {
            // BoundingBox.scaled(about:): centre = x + width / 2, new width = width * f
            func col2(_ j: Int) -> String {
                b.node("Slice", [kept, b.constant("starts", dims: [1], int64s: [j]), b.constant("ends", dims: [1], int64s: [j + 1]),
                                 b.constant("axes", dims: [1], int64s: [1])])
            }
            let (kx1, ky1, kx2, ky2) = (col2(0), col2(1), col2(2), col2(3))
            let width = b.node("Sub", [kx2, kx1]), height = b.node("Sub", [ky2, ky1])
            let ccx = b.node("Add", [kx1, b.node("Div", [width, scalar(2)])])
            let ccy = b.node("Add", [ky1, b.node("Div", [height, scalar(2)])])
            let nw = b.node("Mul", [width, scalar(p.shrink)]), nh = b.node("Mul", [height, scalar(p.shrink)])
            let nx = b.node("Sub", [ccx, b.node("Div", [nw, scalar(2)])])
            let ny = b.node("Sub", [ccy, b.node("Div", [nh, scalar(2)])])
            kept = b.node("Concat", [nx, ny, b.node("Add", [nx, nw]), b.node("Add", [ny, nh])], [("axis", .int(1))])
        }
        // The confidence filter: score >= relativeToMax * the image's top score, and > threshold.
        // The image's top kept score is its best non-empty candidate (NMS keeps the best box).
        let top = b.node("ReduceMax", [liveScores], [("axes", .ints([1])), ("keepdims", .int(0))])
        let cut = b.node("Mul", [b.node("Gather", [top, keptBatch], [("axis", .int(0))]), scalar(p.relativeToMax)])
        let keep = b.node("And", [b.node("GreaterOrEqual", [keptScores, cut]), b.node("Greater", [keptScores, scalar(p.threshold)])])
        b.node("Compress", [kept, keep], outputs: ["boxes"], [("axis", .int(0))])
        b.node("Compress", [keptScores, keep], outputs: ["scores"], [("axis", .int(0))])
        b.node("Compress", [keptBatch, keep], outputs: ["batch_index"], [("axis", .int(0))])
    }
}

extension Detector {
    /// The std of the RetinaNet box coder, for the graph's documentation.
    var coderStd: String {
        let s = (postprocessor as? RetinaPostprocessor)?.coder.std ?? BoxCoder().std
        return "(\(s.0), \(s.1), \(s.2), \(s.3))"
    }
}
