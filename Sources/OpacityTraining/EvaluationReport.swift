import Foundation
import OpacityCore
import OpacityData

/// Everything `opacity eval` measures, as one JSON document (`report.json`, schema in
/// Documentation/Evaluation.md) plus the figures and a one-page Markdown summary.
///
/// Keys are snake_case; numbers that cannot be computed (no ground-truth box, no global
/// classifier) are `null`.
public struct EvaluationReport: Codable, Sendable {
    /// Always `opacity-eval-report`.
    public var format = "opacity-eval-report"
    /// The schema version (1).
    public var version = 1
    /// The model references as resolved (bundle paths).
    public var models: [String]
    /// The ensemble rule (``EnsembleMethod``'s description).
    public var ensemble: String
    /// The test-time augmentation, or `null`.
    @ExplicitNull public var tta: String? = nil
    /// What was scored (folder, fold).
    public var data: String
    /// Images scored.
    public var images: Int
    /// Images with at least one ground-truth box.
    public var imagesWithOpacity: Int
    /// Ground-truth boxes.
    public var truthBoxes: Int

    /// The RSNA challenge metric over the threshold sweep.
    public struct Challenge: Codable, Sendable {
        /// The best threshold (the operating point) and the metric there; `null` when the
        /// metric is undefined (``undefinedReason``).
        @ExplicitNull public var bestThreshold: Float? = nil
        @ExplicitNull public var bestMetric: Double? = nil
        /// The images the metric averages at ``bestThreshold``: those with a truth box or a box
        /// predicted there (the others are left out, as `opacity score` says); `null` with
        /// ``bestMetric``.
        @ExplicitNull public var countedImages: Int? = nil
        /// Every threshold swept and the metric at it (`null` where no image counts: no
        /// truth box and no box predicted anywhere).
        public var thresholds: [Float]
        public var metrics: [Double?]
        /// Why ``bestMetric`` is `null` (no image has a truth box), else `null`.
        @ExplicitNull public var undefinedReason: String? = nil
    }

    /// Why the challenge metric is undefined on images without any truth box (the wording
    /// `opacity score` prints too).
    public static let negativesOnlyReason =
        "the RSNA metric is the mean of per-image scores; an image with no truth box and no predicted box is left out of the mean, "
        + "so on negatives only it is 0 wherever a box is predicted (false positives) and undefined where every negative is left empty "
        + "(right on all of them): it has no best threshold"

    public var challenge: Challenge

    /// COCO-style box AP/AR for the opacity class (pycocotools' definitions).
    public struct Coco: Codable, Sendable {
        @ExplicitNull public var ap: Double? = nil
        @ExplicitNull public var ap50: Double? = nil
        @ExplicitNull public var ap75: Double? = nil
        @ExplicitNull public var ar100: Double? = nil
        /// Detections counted (all scores, best 100 per image).
        public var detections: Int
    }
    public var coco: Coco

    /// The precision-recall curves at IoU 0.50 and 0.75 (interpolated, 101 recall points).
    public struct PrecisionRecall: Codable, Sendable {
        public var recall: [Double]
        public var precisionIoU50: [Double]
        public var precisionIoU75: [Double]
    }
    @ExplicitNull public var precisionRecall: PrecisionRecall? = nil

    /// FROC: sensitivity at false positives per image (IoU >= 0.5 hits).
    public struct FROC: Codable, Sendable {
        public var fpPerImage: [Double]
        public var sensitivity: [Double]
        /// The mean of the sensitivities.
        public var mean: Double
    }
    @ExplicitNull public var froc: FROC? = nil

    /// The global classifier: confusion matrix and ROC AUC of "Lung Opacity" against the rest.
    public struct Classifier: Codable, Sendable {
        /// Row and column labels, ``ImageClass`` order.
        public var labels: [String]
        /// `confusion[truth][predicted]` counts; the prediction is the most probable class;
        /// `null` when the labels do not give the class of every scored image
        /// (``threeClassUnavailable`` says why).
        @ExplicitNull public var confusion: [[Int]]? = nil
        /// Fraction of images whose most probable class is their label; `null` with ``confusion``.
        @ExplicitNull public var accuracy: Double? = nil
        /// Scored images whose 3-way class the labels give.
        public var imagesWithClass: Int
        /// Why ``confusion`` and ``accuracy`` are `null`, else `null`.
        @ExplicitNull public var threeClassUnavailable: String? = nil
        /// ROC AUC of P(Lung Opacity) separating Lung Opacity images (those with truth boxes)
        /// from the rest (ties count half); `null` when only one side is present. Needs no
        /// class file: whether an image is "Lung Opacity" is its `Target`.
        @ExplicitNull public var rocAUCLungOpacity: Double? = nil
    }
    @ExplicitNull public var classifier: Classifier? = nil

    /// The challenge metric, counts and classifier per view position (AP, PA, ...).
    ///
    /// RSNA's labels confound view and class (positives are mostly AP films), so the metric
    /// over all images can hide a model that learnt the view; per view it cannot.
    public struct ByView: Codable, Sendable {
        /// Where the views came from (``ViewPositions/source``).
        public var source: String
        /// The overall best threshold (``Challenge/bestThreshold``), at which ``View/metric``
        /// is measured; `null` when the overall metric is undefined.
        @ExplicitNull public var threshold: Float? = nil
        /// One entry per view, by name; images of unknown view last, as `unknown`.
        public var views: [View]

        /// One view's numbers.
        public struct View: Codable, Sendable {
            /// The view position (`AP`, `PA`, ...), or `unknown`.
            public var view: String
            /// Images of this view, those with at least one truth box, and their truth boxes.
            public var images: Int
            public var imagesWithOpacity: Int
            public var truthBoxes: Int
            /// Images that count in the RSNA metric at ``ByView/threshold`` (a truth box or a
            /// box predicted there; the others are left out of the mean); `null` with it.
            @ExplicitNull public var scoredImages: Int? = nil
            /// The RSNA metric of this view's images at the overall best threshold; `null`
            /// when no image counts there or the threshold is `null`.
            @ExplicitNull public var metric: Double? = nil
            /// This view's own best threshold and the metric there (the sweep of
            /// ``Challenge/thresholds`` over its images); `null` when none of its images has a
            /// truth box.
            @ExplicitNull public var bestThreshold: Float? = nil
            @ExplicitNull public var bestMetric: Double? = nil
            /// ROC AUC of P(Lung Opacity) within this view (as ``Classifier/rocAUCLungOpacity``);
            /// `null` without a global classifier or unless both classes occur in the view.
            @ExplicitNull public var rocAUCLungOpacity: Double? = nil
        }
    }
    /// The numbers per view; `null` when no image's view is known (``byViewUnavailable``).
    @ExplicitNull public var byView: ByView? = nil
    /// Why ``byView`` is `null` (e.g. PNG images and no folds file with a view column), else `null`.
    @ExplicitNull public var byViewUnavailable: String? = nil

    /// The figures written beside the report (PNG, each with an SVG of the same name).
    public var figures: [String: String]

    enum CodingKeys: String, CodingKey {
        case format, version, models, ensemble, tta, data, images, coco, froc, classifier, figures, challenge
        case imagesWithOpacity = "images_with_opacity", truthBoxes = "truth_boxes", precisionRecall = "precision_recall"
        case byView = "by_view", byViewUnavailable = "by_view_unavailable"
    }

    /// Measures everything from an evaluation.
    /// - Parameters:
    ///   - evaluation: detections (before thresholding) and labels per image.
    ///   - models: the bundle paths; `ensemble`, `tta`, `data`: as printed.
    ///   - views: the view position of each image, for ``byView`` (`nil`: none known).
    public init(_ evaluation: Evaluation, models: [String], ensemble: String, tta: String?, data: String, views: ViewPositions? = nil) {
        let ims = evaluation.images
        self.models = models
        self.ensemble = ensemble
        self.tta = tta
        self.data = data
        images = ims.count
        imagesWithOpacity = ims.filter { !$0.truth.isEmpty }.count
        truthBoxes = ims.reduce(0) { $0 + $1.truth.count }
        let sw = evaluation.sweep
        if imagesWithOpacity == 0 {
            // negatives only: at each threshold the metric is 0 (some box predicted) or undefined
            let metrics = sw.thresholds.map { t -> Double? in
                let f = ConfidenceFilter(threshold: t)
                return RSNAMetric.score(ims.map { ($0.truth, f.apply($0.detections)) })
            }
            challenge = Challenge(bestThreshold: nil, bestMetric: nil, thresholds: sw.thresholds, metrics: metrics,
                                  undefinedReason: "none of the \(ims.count) images has a truth box: " + Self.negativesOnlyReason)
        } else {
            let f = ConfidenceFilter(threshold: sw.bestThreshold)
            let counted = ims.filter { RSNAMetric.imageScore(truth: $0.truth, predictions: f.apply($0.detections)) != nil }.count
            challenge = Challenge(bestThreshold: sw.bestThreshold, bestMetric: sw.bestScore, countedImages: counted, thresholds: sw.thresholds,
                                  metrics: sw.scores, undefinedReason: nil)
        }
        let c = CocoEvaluation(truth: ims.map(\.truth), detections: ims.map(\.detections))
        coco = Coco(ap: c.ap, ap50: c.ap50, ap75: c.ap75, ar100: c.ar100, detections: c.detectionCount)
        if c.precision.count == CocoEvaluation.iouThresholds.count {
            precisionRecall = PrecisionRecall(recall: CocoEvaluation.recallThresholds, precisionIoU50: c.precision[0], precisionIoU75: c.precision[5])
        }
        if let f = FROCCurve(c, images: ims.count) {
            froc = FROC(fpPerImage: FROCCurve.standardRates, sensitivity: f.sensitivities, mean: f.meanSensitivity)
            frocPoints = f.points
        }
        classifier = Self.classifier(ims)
        figures = [:]
        let v = views ?? ViewPositions(views: [:], source: nil)
        if let source = v.source, !v.views.isEmpty {
            byView = Self.byView(ims, views: v.views, source: source, threshold: challenge.bestThreshold, classifier: classifier != nil)
        } else {
            byViewUnavailable = v.unavailableReason ?? "no view positions were given"
        }
    }

    /// The per-view numbers: images grouped by `views[id]` (sorted by name; images without a
    /// view last, as `unknown`), each group's RSNA metric at the overall `threshold`, its own
    /// best threshold, counts, and, with a classifier, its Lung Opacity ROC AUC.
    public static func byView(_ ims: [Evaluation.ImageResult], views: [String: String], source: String, threshold: Float?,
                              classifier: Bool) -> ByView {
        let unknown = "unknown"
        var names = Set(ims.compactMap { views[$0.id] }).sorted()
        if ims.contains(where: { views[$0.id] == nil }) { names.append(unknown) }
        let groups = names.map { name in
            let g = ims.filter { (views[$0.id] ?? unknown) == name }
            var row = ByView.View(view: name, images: g.count, imagesWithOpacity: g.filter { !$0.truth.isEmpty }.count,
                                  truthBoxes: g.reduce(0) { $0 + $1.truth.count })
            if let threshold {
                let f = ConfidenceFilter(threshold: threshold)
                let scores = g.map { RSNAMetric.imageScore(truth: $0.truth, predictions: f.apply($0.detections)) }
                row.scoredImages = scores.compactMap { $0 }.count
                row.metric = RSNAMetric.score(g.map { ($0.truth, f.apply($0.detections)) })
            }
            if row.imagesWithOpacity > 0 {
                let sw = ThresholdSweep(truth: g.map(\.truth), detections: g.map(\.detections))
                row.bestThreshold = sw.bestThreshold
                row.bestMetric = sw.bestScore
            }
            if classifier {
                let lo = ImageClass.lungOpacity.rawValue
                func isOpacity(_ r: Evaluation.ImageResult) -> Bool { r.imageClass.map { $0 == .lungOpacity } ?? !r.truth.isEmpty }
                let scored = g.compactMap { r in r.classProbabilities.map { (r, Double($0[lo])) } }
                row.rocAUCLungOpacity = rocAUC(positives: scored.filter { isOpacity($0.0) }.map(\.1), negatives: scored.filter { !isOpacity($0.0) }.map(\.1))
            }
            return row
        }
        return ByView(source: source, threshold: threshold, views: groups)
    }

    /// One line per view for the console: the first names the views' source, e.g.
    /// `by view (DICOM ViewPosition (0018,5101)): AP: 5 images, 3 with opacity; metric 0.2500
    /// at 0.11 over 4 counted images (own best 0.3000 at 0.08); classifier ROC AUC 0.750`.
    public func viewLines() -> [String] {
        guard let b = byView else { return [] }
        let head = "by view (\(b.source)): "
        return b.views.enumerated().map { i, r in
            var line = (i == 0 ? head : String(repeating: " ", count: head.count)) + "\(r.view): \(Wording.count(r.images, "image")), \(r.imagesWithOpacity) with opacity"
            if let t = b.threshold, let n = r.scoredImages {
                if let m = r.metric {
                    line += String(format: "; metric %.4f at %.2f over ", m, t) + Wording.count(n, "counted image")
                } else {
                    line += String(format: "; metric undefined at %.2f: no image counts (all %d negatives predicted empty, correct)", t, r.images)
                }
            }
            if let m = r.bestMetric, let t = r.bestThreshold {
                line += String(format: " (own best %.4f at %.2f)", m, t)
            } else {
                line += "; no truth box, so no best threshold of its own"
            }
            if classifier != nil { line += "; classifier ROC AUC " + (r.rocAUCLungOpacity.map { String(format: "%.3f", $0) } ?? "n/a (one class only)") }
            return line
        }
    }

    /// The FROC's raw points, for the figure (not in the JSON).
    var frocPoints: [(fpPerImage: Double, sensitivity: Double)] = []

    /// Confusion matrix and AUC from images with class probabilities; `nil` when none has any.
    ///
    /// The 3x3 matrix and the accuracy need the class of every scored image; an image without
    /// boxes whose labels give no class (RSNA labels without the class-info file) is "Normal"
    /// or "No Lung Opacity / Not Normal", so both are `null` then, with the reason. The ROC
    /// AUC of "Lung Opacity" against the rest needs only whether the image has boxes.
    public static func classifier(_ ims: [Evaluation.ImageResult]) -> Classifier? {
        let scored = ims.compactMap { r in r.classProbabilities.map { (r, $0) } }
        guard !scored.isEmpty else { return nil }
        let known = scored.compactMap { r, p in r.imageClass.map { ($0, p) } }
        var confusion: [[Int]]?, accuracy: Double?, why: String?
        if known.count == scored.count {
            var m = [[Int]](repeating: [0, 0, 0], count: 3)
            for (truth, p) in known {
                let pred = p.indices.max { p[$0] < p[$1] } ?? 0
                if pred < 3 { m[truth.rawValue][pred] += 1 }
            }
            confusion = m
            accuracy = Double((0..<3).reduce(0) { $0 + m[$1][$1] }) / Double(known.count)
        } else {
            why = "\(scored.count - known.count) of the \(scored.count) images have no class in the labels (no boxes, and neither a class file "
                + "such as stage_2_detailed_class_info.csv nor a class column says \"Normal\" or \"No Lung Opacity / Not Normal\"): "
                + "the 3x3 confusion matrix and accuracy need every image's class"
        }
        let lo = ImageClass.lungOpacity.rawValue
        func isOpacity(_ r: Evaluation.ImageResult) -> Bool { r.imageClass.map { $0 == .lungOpacity } ?? !r.truth.isEmpty }
        let pos = scored.filter { isOpacity($0.0) }.map { Double($0.1[lo]) }
        let neg = scored.filter { !isOpacity($0.0) }.map { Double($0.1[lo]) }
        return Classifier(labels: ImageClass.allCases.map(\.label), confusion: confusion, accuracy: accuracy, imagesWithClass: known.count,
                          threeClassUnavailable: why, rocAUCLungOpacity: rocAUC(positives: pos, negatives: neg))
    }

    /// The area under the ROC curve: the probability that a random positive scores above a
    /// random negative, ties counting half (Mann-Whitney U / (P N)); `nil` when a side is empty.
    public static func rocAUC(positives: [Double], negatives: [Double]) -> Double? {
        guard !positives.isEmpty, !negatives.isEmpty else { return nil }
        // rank-sum with average ranks for ties
        let all = (positives.map { ($0, true) } + negatives.map { ($0, false) }).sorted { $0.0 < $1.0 }
        var rankSum = 0.0, i = 0
        while i < all.count {
            var j = i
            while j + 1 < all.count && all[j + 1].0 == all[i].0 { j += 1 }
            let avg = Double(i + j) / 2 + 1
            for k in i...j where all[k].1 { rankSum += avg }
            i = j + 1
        }
        let p = Double(positives.count), n = Double(negatives.count)
        return (rankSum - p * (p + 1) / 2) / (p * n)
    }

    // MARK: - Figures

    /// The precision-recall chart (IoU 0.50 and 0.75).
    public func precisionRecallChart() -> LineChart? {
        guard let pr = precisionRecall else { return nil }
        var c = LineChart(title: "Precision-recall, opacity boxes", xLabel: "recall", yLabel: "precision", series: [
            LineChart.Series(name: "IoU 0.50" + (coco.ap50.map { String(format: " (AP %.3f)", $0) } ?? ""),
                             points: zip(pr.recall, pr.precisionIoU50).map { ($0, $1) }, color: LineChart.palette[0]),
            LineChart.Series(name: "IoU 0.75" + (coco.ap75.map { String(format: " (AP %.3f)", $0) } ?? ""),
                             points: zip(pr.recall, pr.precisionIoU75).map { ($0, $1) }, color: LineChart.palette[1], dashed: true),
        ])
        c.yRange = 0...1.02
        c.series[0].markPoints = false
        c.series[1].markPoints = false
        return c
    }

    /// The FROC chart on a log-2 axis of false positives per image, the standard rates marked.
    ///
    /// When the model made no detection at all, the chart is a flat line at sensitivity 0,
    /// titled and labelled so ("no detections"), rather than no chart.
    /// - Returns: `nil` when there is no FROC (no truth box: see ``figuresNotWritten()``).
    public func frocChart() -> LineChart? {
        guard let f = froc else { return nil }
        var title = "FROC, opacity boxes (hit: IoU 0.5 or more)"
        var name = String(format: "mean sensitivity %.3f", f.mean)
        var pts: [(x: Double, y: Double)] = []
        if frocPoints.isEmpty {
            // no detection: no false positive and no hit at any rate
            title += ": the model made no detections"
            name = "no detections: sensitivity 0 at every rate"
            pts = [(1.0 / 16, 0), (16, 0)]
        } else {
            // a step curve: each point holds until the next detection; after the last detection
            // no false positive is added, so the sensitivity stays where it ended
            for p in frocPoints where p.fpPerImage > 0 {
                if let last = pts.last { pts.append((p.fpPerImage, last.y)) }
                pts.append((p.fpPerImage, p.sensitivity))
            }
            let start = frocPoints.filter { $0.fpPerImage == 0 }.map(\.sensitivity).max() ?? 0
            pts.insert((1.0 / 16, start), at: 0)
            pts.append((16, pts.last?.y ?? start))
        }
        var c = LineChart(title: title, xLabel: "false positives per image (log scale)", yLabel: "sensitivity",
                          series: [LineChart.Series(name: name, points: pts, color: LineChart.palette[2])])
        c.series[0].markPoints = false
        c.logX = true
        c.xRange = 0.125...8
        c.yRange = 0...1.02
        c.markers = zip(f.fpPerImage, f.sensitivity).map { ($0, $1, LineChart.palette[3]) }
        return c
    }

    /// The figures ``write(to:metricChart:)`` leaves out, each as `name.png and name.svg not
    /// written: why` (the precision-recall curve and the FROC need a truth box); empty when
    /// every figure is written.
    public func figuresNotWritten() -> [String] {
        var out: [String] = []
        let why = imagesWithOpacity == 0
            ? (images == 1 ? "the one image has no truth box" : "none of the \(images) images has a truth box") + ", so there is no sensitivity or recall to plot"
            : "no curve could be computed"
        if precisionRecall == nil { out.append("precision_recall.png and precision_recall.svg not written: \(why)") }
        if froc == nil { out.append("froc.png and froc.svg not written: \(why)") }
        return out
    }

    /// Writes `report.json`, the figures (PNG + SVG) and `summary.md` into `folder`.
    /// - Parameter metricChart: the challenge metric against the threshold.
    /// - Returns: the files written.
    /// - Throws: ``EvaluationError/cannotWrite(file:reason:)``.
    @discardableResult
    public mutating func write(to folder: URL, metricChart: LineChart) throws -> [URL] {
        var written: [URL] = []
        func png(_ name: String, _ chart: LineChart?) throws {
            guard let chart else { return }
            let u = folder.appendingPathComponent(name)
            do { try chart.write(png: u) } catch { throw EvaluationError.cannotWrite(file: u.path, reason: "\(error)") }
            figures[String(name.dropLast(4))] = name
            written += [u, u.deletingPathExtension().appendingPathExtension("svg")]
        }
        do { try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true) } catch {
            throw EvaluationError.cannotWrite(file: folder.path, reason: "\(error)")
        }
        try png("metric_vs_threshold.png", metricChart)
        try png("precision_recall.png", precisionRecallChart())
        try png("froc.png", frocChart())
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let json = folder.appendingPathComponent("report.json"), md = folder.appendingPathComponent("summary.md")
        do {
            try (try e.encode(self) + Data("\n".utf8)).write(to: json, options: .atomic)
            try Data(markdown().utf8).write(to: md, options: .atomic)
        } catch { throw EvaluationError.cannotWrite(file: json.path, reason: "\(error)") }
        return written + [json, md]
    }

    /// The one-page summary: the numbers in tables and the figures.
    public func markdown() -> String {
        func v(_ x: Double?) -> String { x.map { String(format: "%.4f", $0) } ?? "n/a" }
        var s = "# Evaluation\n\n"
        s += "- models: " + models.map { "`\($0)`" }.joined(separator: ", ") + "\n"
        s += "- ensemble: \(models.count > 1 ? ensemble : "single model")" + (tta.map { "; TTA \($0)" } ?? "") + "\n"
        s += "- data: \(data); \(Wording.count(images, "image")), \(imagesWithOpacity) with opacity, \(Wording.count(truthBoxes, "box", plural: "boxes"))\n\n"
        s += "## Challenge metric\n\n"
        if let m = challenge.bestMetric, let t = challenge.bestThreshold {
            s += String(format: "Best RSNA metric **%.4f** at score threshold **%.2f** (the operating point).\n\n", m, t)
        } else {
            s += "RSNA metric **undefined**: \(challenge.undefinedReason ?? "no image counts").\n\n"
        }
        if figures["metric_vs_threshold"] != nil { s += "![metric against threshold](metric_vs_threshold.png)\n\n" }
        if let b = byView {
            s += "## By view\n\nViews from \(b.source); the metric at the overall best threshold"
            s += (b.threshold.map { String(format: " (%.2f)", $0) } ?? " (none: undefined overall)") + " and at each view's own best.\n\n"
            s += "| view | images | with opacity | truth boxes | scored | metric | own best (threshold) | classifier ROC AUC |\n"
            s += "|---|---|---|---|---|---|---|---|\n"
            for r in b.views {
                let own = r.bestMetric.map { m in String(format: "%.4f (%.2f)", m, r.bestThreshold ?? 0) } ?? "n/a"
                s += "| \(r.view) | \(r.images) | \(r.imagesWithOpacity) | \(r.truthBoxes) | \(r.scoredImages.map(String.init) ?? "n/a") | \(v(r.metric)) | \(own) | \(v(r.rocAUCLungOpacity)) |\n"
            }
            s += "\n"
        } else if let why = byViewUnavailable {
            s += "No per-view numbers: \(why).\n\n"
        }
        s += "## Boxes (COCO-style, opacity class)\n\n| AP@[.50:.95] | AP50 | AP75 | AR@100 |\n|---|---|---|---|\n"
        s += "| \(v(coco.ap)) | \(v(coco.ap50)) | \(v(coco.ap75)) | \(v(coco.ar100)) |\n\n"
        if figures["precision_recall"] != nil { s += "![precision-recall](precision_recall.png)\n\n" }
        for line in figuresNotWritten() { s += "\(line).\n\n" }
        if let f = froc {
            s += "## FROC (IoU >= 0.5)\n\n| FP/image | " + f.fpPerImage.map { String(format: "%g", $0) }.joined(separator: " | ") + " | mean |\n"
            s += "|---|" + String(repeating: "---|", count: f.fpPerImage.count + 1) + "\n"
            s += "| sensitivity | " + f.sensitivity.map { String(format: "%.3f", $0) }.joined(separator: " | ") + String(format: " | %.3f |\n\n", f.mean)
            if figures["froc"] != nil { s += "![FROC](froc.png)\n\n" }
        }
        if let c = classifier {
            s += "## Global classifier\n\n"
            s += "Accuracy \(v(c.accuracy)); ROC AUC of Lung Opacity against the rest \(v(c.rocAUCLungOpacity)).\n\n"
            if let m = c.confusion {
                s += "| truth \\ predicted | " + c.labels.joined(separator: " | ") + " |\n|---|---|---|---|\n"
                for (i, row) in m.enumerated() { s += "| \(c.labels[i]) | " + row.map(String.init).joined(separator: " | ") + " |\n" }
            } else if let why = c.threeClassUnavailable {
                s += "No 3x3 confusion matrix: \(why).\n"
            }
            s += "\n"
        } else {
            s += "## Global classifier\n\nThe model has no global classifier.\n\n"
        }
        s += "All numbers are in `report.json` (schema: Documentation/Evaluation.md).\n"
        return s
    }
}
