import Foundation
import Opacity
import XCTest

/// Test-time augmentation, WBF ensembles through the predictor, the evaluation report and
/// the charts.
final class EvaluationTests: XCTestCase {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The shipped zoo model (256 px), so that detections exist.
    func zooDetector() throws -> Detector {
        try Detector.load(from: Self.repo.appendingPathComponent("zoo/retinanet-r34-composite.opb"), registry: try Registry.standard())
    }

    /// A synthetic film with opacities, 256 px.
    func film(_ index: Int = 0) throws -> SyntheticCase {
        let gen = try SyntheticChestXRay(config: SyntheticConfig(count: 8, size: 256, seed: 11, classFractions: (1, 0, 0), threads: 1))
        return try gen.generate(index: index)
    }

    func testTTAParsesViewsAndRejectsNonsense() throws {
        let t = try TestTimeAugmentation.parse("flip,scale=0.9:1.1")
        XCTAssertTrue(t.flip)
        XCTAssertEqual(t.scales, [0.9, 1.1])
        XCTAssertEqual(t.views.count, 6)
        XCTAssertEqual(t.views.first, TestTimeAugmentation.View(flip: false, scale: 1))
        XCTAssertEqual(try TestTimeAugmentation.parse("flip").views.count, 2)
        XCTAssertThrowsError(try TestTimeAugmentation.parse("flop")) { e in XCTAssertTrue("\(e)".contains("did you mean 'flip'"), "\(e)") }
        XCTAssertThrowsError(try TestTimeAugmentation.parse("scale=0.9:x")) { e in XCTAssertTrue("\(e)".contains("'x'"), "\(e)") }
        XCTAssertThrowsError(try TestTimeAugmentation.parse("scale=9"))
        XCTAssertThrowsError(try TestTimeAugmentation.parse(""))
        XCTAssertThrowsError(try TestTimeAugmentation.parse("flip,scale=1.1", merge: .anchors)) { e in XCTAssertTrue("\(e)".contains("flip only"), "\(e)") }
        XCTAssertEqual(TestTimeAugmentation.inputSize(256, scale: 0.9), 224)
        XCTAssertEqual(TestTimeAugmentation.inputSize(256, scale: 1.1), 288)
    }

    func testUnflipMirrorsAnchorsAndNegatesDx() throws {
        let gen = AnchorGenerator(levels: 2...3, ratios: [1], scales: [1, 2])
        let (h, w) = (8, 16)
        let count = gen.anchors(height: h, width: w).count
        let logits = Tensor(shape: [1, count, 1], scalars: (0..<count).map(Float.init))
        let deltas = Tensor(shape: [1, count, 4], scalars: (0..<(count * 4)).map { Float($0) })
        let out = HeadOutput(classLogits: logits, boxDeltas: deltas, globalLogProbs: nil)
        let u = try TestTimeAugmentation.unflip(out, anchors: gen, height: h, width: w)
        // level 2: 2 x 4 locations, 2 anchors each; (row 0, col 0, anchor 1) takes (row 0, col 3, anchor 1)
        XCTAssertEqual(u.classLogits.scalars[1], Float((0 * 4 + 3) * 2 + 1))
        XCTAssertEqual(u.boxDeltas.scalars[4], -Float(((0 * 4 + 3) * 2 + 1) * 4))
        XCTAssertEqual(u.boxDeltas.scalars[5], Float(((0 * 4 + 3) * 2 + 1) * 4 + 1))
        // the anchors really are mirror images
        let a = gen.anchors(height: h, width: w)
        let src = a.box(7), dst = a.box(1)
        XCTAssertEqual(dst.x, Float(w) - src.x2, accuracy: 1e-5)
        let twice = try TestTimeAugmentation.unflip(u, anchors: gen, height: h, width: w)
        XCTAssertEqual(twice.classLogits.scalars, logits.scalars)
        XCTAssertEqual(twice.boxDeltas.scalars, deltas.scalars)
        XCTAssertThrowsError(try TestTimeAugmentation.unflip(out, anchors: gen, height: h, width: 12))
    }

    func testFlipTTAMakesPredictionsMirrorSymmetric() throws {
        let d = try zooDetector()
        let image = try film().image
        var mirrored = image
        for y in 0..<image.height { for x in 0..<image.width { mirrored.pixels[y * image.width + x] = image.pixels[y * image.width + image.width - 1 - x] } }
        for merge in [TestTimeAugmentation.Merge.anchors, .wbf(WeightedBoxesFusion())] {
            let p = try Predictor(detectors: [d], tta: try TestTimeAugmentation(flip: true, merge: merge))
            let a = p.detect([image])[0], b = p.detect([mirrored])[0]
            XCTAssertFalse(a.isEmpty)
            XCTAssertEqual(a.count, b.count, "\(merge)")
            let w = Float(image.width)
            for (x, y) in zip(a.sorted { $0.score > $1.score }.prefix(5), b.sorted { $0.score > $1.score }.prefix(5)) {
                XCTAssertEqual(x.score, y.score, accuracy: 1e-4, "\(merge)")
                XCTAssertEqual(x.box.x, w - y.box.x2, accuracy: 0.05, "\(merge)")
                XCTAssertEqual(x.box.y, y.box.y, accuracy: 0.05, "\(merge)")
                XCTAssertEqual(x.box.width, y.box.width, accuracy: 0.05, "\(merge)")
            }
        }
    }

    func testWBFEnsembleOfOneModelTwiceEqualsTheModel() throws {
        let d = try zooDetector()
        let image = try film(1).image
        let single = try Predictor(detectors: [d]).predict([image])[0]
        let twice = try Predictor(detectors: [d, d], method: .wbf(WeightedBoxesFusion(), weights: [2, 1])).predict([image])[0]
        XCTAssertFalse(single.detections.isEmpty)
        XCTAssertEqual(single.detections.count, twice.detections.count)
        for (a, b) in zip(single.detections, twice.detections) {
            XCTAssertEqual(a.score, b.score, accuracy: 1e-5)
            XCTAssertEqual(a.box.x, b.box.x, accuracy: 1e-3)
            XCTAssertEqual(a.box.y2, b.box.y2, accuracy: 1e-3)
        }
        XCTAssertEqual(try XCTUnwrap(single.globalProbabilities).reduce(0, +), 1, accuracy: 1e-4)
        XCTAssertThrowsError(try Predictor(detectors: [d, d], method: .wbf(WeightedBoxesFusion(), weights: [1])))
        // scales through WBF run and keep boxes inside the image
        let p = try Predictor(detectors: [d], tta: try TestTimeAugmentation.parse("flip,scale=0.875:1.125"))
        let t = p.detect([image])[0]
        XCTAssertFalse(t.isEmpty)
        for det in t { XCTAssertTrue(det.box.x >= 0 && det.box.x2 <= 256.01, "\(det.box)") }
    }

    func testROCAUC() {
        XCTAssertEqual(EvaluationReport.rocAUC(positives: [0.9, 0.8, 0.4], negatives: [0.5, 0.3])!, 5.0 / 6, accuracy: 1e-12)
        XCTAssertEqual(EvaluationReport.rocAUC(positives: [0.5], negatives: [0.5])!, 0.5, accuracy: 1e-12)
        XCTAssertEqual(EvaluationReport.rocAUC(positives: [0.1, 0.2], negatives: [0.3])!, 0, accuracy: 1e-12)
        XCTAssertNil(EvaluationReport.rocAUC(positives: [], negatives: [0.3]))
    }

    /// Images whose class the labels do not give: no 3x3 matrix or accuracy (null in the
    /// JSON, with the reason), the Lung Opacity ROC AUC from the boxes all the same.
    func testClassifierWithUnknownClasses() throws {
        let box = BoundingBox(x: 100, y: 100, width: 200, height: 150)
        let images: [Evaluation.ImageResult] = [
            .init(id: "a", truth: [box], detections: [], imageClass: .lungOpacity, classProbabilities: [0.1, 0.2, 0.7]),
            .init(id: "b", truth: [], detections: [], imageClass: nil, classProbabilities: [0.2, 0.5, 0.3]),
            .init(id: "c", truth: [], detections: [], imageClass: nil, classProbabilities: [0.3, 0.6, 0.1]),
        ]
        let c = try XCTUnwrap(EvaluationReport.classifier(images))
        XCTAssertNil(c.confusion)
        XCTAssertNil(c.accuracy)
        XCTAssertEqual(c.imagesWithClass, 1)
        XCTAssertTrue(try XCTUnwrap(c.threeClassUnavailable).contains("2 of the 3 images have no class"))
        XCTAssertEqual(try XCTUnwrap(c.rocAUCLungOpacity), 1, accuracy: 1e-12)
        let report = EvaluationReport(Evaluation(images: images), models: ["m.opb"], ensemble: "single", tta: nil, data: "test")
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: JSONEncoder().encode(report)) as? [String: Any])
        let cj = try XCTUnwrap(json["classifier"] as? [String: Any])
        XCTAssertTrue(cj["confusion"] is NSNull && cj["accuracy"] is NSNull, "\(cj)")
        XCTAssertNotNil(cj["threeClassUnavailable"] as? String)
        XCTAssertTrue(report.markdown().contains("No 3x3 confusion matrix"))
    }

    /// Negatives only: the challenge metric is undefined (null with the reason), not 0; per
    /// threshold it is 0 where a box is kept and null where every image is left empty.
    func testNegativesOnlyMetricIsUndefined() throws {
        let box = BoundingBox(x: 100, y: 100, width: 200, height: 150)
        let images: [Evaluation.ImageResult] = [
            .init(id: "a", truth: [], detections: [Detection(box: box, score: 0.3)]),
            .init(id: "b", truth: [], detections: []),
        ]
        let report = EvaluationReport(Evaluation(images: images), models: ["m.opb"], ensemble: "single", tta: nil, data: "test")
        XCTAssertNil(report.challenge.bestMetric)
        XCTAssertNil(report.challenge.bestThreshold)
        XCTAssertTrue(try XCTUnwrap(report.challenge.undefinedReason).hasPrefix("none of the 2 images has a truth box"))
        for (t, m) in zip(report.challenge.thresholds, report.challenge.metrics) {
            if t < 0.29 { XCTAssertEqual(m, 0, "\(t)") } else if t > 0.31 { XCTAssertNil(m, "\(t)") }
        }
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: JSONEncoder().encode(report)) as? [String: Any])
        let ch = try XCTUnwrap(json["challenge"] as? [String: Any])
        XCTAssertTrue(ch["bestMetric"] is NSNull && ch["bestThreshold"] is NSNull, "\(ch)")
        XCTAssertTrue(report.markdown().contains("RSNA metric **undefined**"))
    }

    /// The keys of the report.json schema table in Documentation/Evaluation.md (`a.b` for a
    /// nested key; a cell's `.c` is a sibling of the key before it).
    static func documentedReportKeys() throws -> [String] {
        let doc = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Documentation/Evaluation.md")
        let text = try String(contentsOf: doc, encoding: .utf8)
        let section = try XCTUnwrap(text.components(separatedBy: "### `report.json` schema").dropFirst().first)
        var keys: [String] = []
        for line in section.split(separator: "\n").prefix(while: { !$0.hasPrefix("#") }) where line.hasPrefix("| `") {
            let cell = line.split(separator: "|")[0]
            var last = ""
            for (i, part) in cell.split(separator: "`", omittingEmptySubsequences: false).enumerated() where i % 2 == 1 {
                let key = part.hasPrefix(".") ? String(last.split(separator: ".").dropLast().joined(separator: ".") + part) : String(part)
                keys.append(key)
                last = key
            }
        }
        return keys
    }

    /// Every documented key is in report.json, negatives only or not, with or without TTA:
    /// a value that cannot be computed is an explicit `null`, never a missing key (keys under
    /// an object that is itself `null`, such as `froc` without truth boxes, go with it).
    func testReportJSONHasEveryDocumentedKey() throws {
        let keys = try Self.documentedReportKeys()
        XCTAssertGreaterThan(keys.count, 25, "\(keys)")
        for expected in [
            "tta", "coco.ap", "precision_recall.precisionIoU75", "froc.mean", "classifier.rocAUCLungOpacity", "by_view.views[].bestMetric",
            "by_view_unavailable",
        ] {
            XCTAssertTrue(keys.contains(expected), "\(expected) not parsed from Evaluation.md: \(keys)")
        }
        let box = BoundingBox(x: 100, y: 100, width: 200, height: 150)
        let negatives: [Evaluation.ImageResult] = [
            .init(id: "a", truth: [], detections: [Detection(box: box, score: 0.3)], imageClass: .normal, classProbabilities: [0.2, 0.5, 0.3]),
            .init(id: "b", truth: [], detections: [], imageClass: .notNormal, classProbabilities: [0.6, 0.3, 0.1]),
        ]
        let normal = negatives + [.init(id: "c", truth: [box], detections: [Detection(box: box, score: 0.9)], imageClass: .lungOpacity, classProbabilities: [0.1, 0.2, 0.7])]
        for (name, images, tta) in [("negatives only", negatives, nil), ("normal", normal, nil), ("normal with TTA", normal, Optional("flip"))] {
            let views = ViewPositions(views: ["a": "AP", "b": "PA"], source: "test")  // "c": unknown
            var report = EvaluationReport(Evaluation(images: images), models: ["m.opb"], ensemble: "single", tta: tta, data: "test", views: views)
            XCTAssertEqual(report.byView?.views.map(\.view), images.count == 3 ? ["AP", "PA", "unknown"] : ["AP", "PA"])
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-report-keys-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: dir) }
            try report.write(to: dir, metricChart: Evaluation(images: images).chart(title: "metric"))
            let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("report.json"))) as? [String: Any])
            // `a[]` is an array whose every element has the rest of the key
            func check(_ node: Any, _ parts: ArraySlice<Substring>, key: String) {
                guard let part = parts.first, !(node is NSNull) else { return }  // done, or under a null object
                let isArray = part.hasSuffix("[]")
                guard let object = node as? [String: Any], let value = object[String(isArray ? part.dropLast(2) : part)] else {
                    return XCTFail("\(name): report.json lacks \(key): \(json)")
                }
                guard isArray else { return check(value, parts.dropFirst(), key: key) }
                guard let elements = value as? [Any], !elements.isEmpty else { return XCTFail("\(name): \(key): not a non-empty array: \(value)") }
                for e in elements { check(e, parts.dropFirst(), key: key) }
            }
            for key in keys { check(json, key.split(separator: ".")[...], key: key) }
            // round trip: the explicit nulls decode, and so does a file written before a key existed
            var old = json
            old["tta"] = nil
            let withoutKey = try JSONDecoder().decode(EvaluationReport.self, from: JSONSerialization.data(withJSONObject: old))
            XCTAssertNil(withoutKey.tta)
            let decoded = try JSONDecoder().decode(EvaluationReport.self, from: Data(contentsOf: dir.appendingPathComponent("report.json")))
            XCTAssertEqual(decoded.tta, tta)
            XCTAssertEqual(decoded.imagesWithOpacity, report.imagesWithOpacity)
            if name == "negatives only" {
                let coco = try XCTUnwrap(json["coco"] as? [String: Any])
                XCTAssertTrue(coco["ap"] is NSNull && coco["ar100"] is NSNull, "\(coco)")
                XCTAssertTrue(json["froc"] is NSNull && json["precision_recall"] is NSNull && json["tta"] is NSNull, "\(json)")
                XCTAssertNil(decoded.froc)
                let byView = try XCTUnwrap(json["by_view"] as? [String: Any])
                XCTAssertTrue(byView["threshold"] is NSNull, "\(byView)")
            } else {
                XCTAssertNotNil(json["froc"] as? [String: Any])
                XCTAssertEqual(json["tta"] as? String ?? "null", tta ?? "null")
            }
        }
    }

    /// The per-view numbers against a hand-computed example (box B scores 1 on its own truth,
    /// far box F 0). Overall, images count as follows: a, b, d, g always (truth boxes); c while
    /// the threshold is below 0.105, e below 0.255. Metric: t <= 0.10: 3/6; 0.11-0.25: 3/5;
    /// 0.26-0.30: 3/4 (d's 0.305 kept, e left out); 0.31-0.35: 2/4; above: 1/4. So the best
    /// threshold is 0.26, where AP {a 1, b 0} gives 0.5 over 2 counted, PA {d 1} 1.0 over 1,
    /// unknown {g 1} 1.0 over 1 ((2 x 0.5 + 1 + 1) / 4 = 0.75 overall). Own bests: AP 1/3 up
    /// to 0.10, then 0.5 (best at 0.11); PA 0.5 up to 0.25, 1.0 at 0.26-0.30, 0 above; unknown
    /// 1.0 from 0.01. ROC AUC of P(Lung Opacity): AP a 0.7 > c 0.5 > b 0.4: 1 of 2 pairs = 0.5;
    /// PA d 0.6 = e 0.6 (half), > f 0.2: 0.75; unknown has positives only: none.
    func testPerViewNumbersMatchAHandComputedExample() throws {
        let b = BoundingBox(x: 100, y: 100, width: 200, height: 150), f = BoundingBox(x: 600, y: 600, width: 80, height: 80)
        func image(_ id: String, _ truth: [BoundingBox], _ det: (BoundingBox, Float)?, _ p: Float) -> Evaluation.ImageResult {
            .init(id: id, truth: truth, detections: det.map { [Detection(box: $0.0, score: $0.1)] } ?? [], classProbabilities: [(1 - p) / 2, (1 - p) / 2, p])
        }
        let images = [
            image("a", [b], (b, 0.905), 0.7), image("b", [b], (f, 0.505), 0.4), image("c", [], (f, 0.105), 0.5),
            image("d", [b], (b, 0.305), 0.6), image("e", [], (f, 0.255), 0.6), image("f", [], nil, 0.2),
            image("g", [b], (b, 0.355), 0.9),
        ]
        let views = ViewPositions(views: ["a": "AP", "b": " ap", "c": "AP", "d": "PA", "e": "pa", "f": "PA", "x": "LL"], source: "hand")
        let report = EvaluationReport(Evaluation(images: images), models: ["m"], ensemble: "single", tta: nil, data: "hand", views: views)
        XCTAssertEqual(try XCTUnwrap(report.challenge.bestThreshold), 0.26, accuracy: 1e-6)
        XCTAssertEqual(try XCTUnwrap(report.challenge.bestMetric), 0.75, accuracy: 1e-12)
        let v = try XCTUnwrap(report.byView)
        XCTAssertNil(report.byViewUnavailable)
        XCTAssertEqual(v.source, "hand")
        XCTAssertEqual(try XCTUnwrap(v.threshold), 0.26, accuracy: 1e-6)
        XCTAssertEqual(v.views.map(\.view), ["AP", "PA", "unknown"])
        XCTAssertEqual(v.views.map(\.images), [3, 3, 1])
        XCTAssertEqual(v.views.map(\.imagesWithOpacity), [2, 1, 1])
        XCTAssertEqual(v.views.map(\.truthBoxes), [2, 1, 1])
        XCTAssertEqual(v.views.map(\.scoredImages), [2, 1, 1])
        // the overall count eval prints ("over 4 of the 7 images") is in report.json too
        XCTAssertEqual(report.challenge.countedImages, v.views.compactMap(\.scoredImages).reduce(0, +))
        XCTAssertEqual(report.challenge.countedImages, 4)
        let encoded = try XCTUnwrap(try JSONSerialization.jsonObject(with: JSONEncoder().encode(report)) as? [String: Any])
        XCTAssertEqual((encoded["challenge"] as? [String: Any])?["countedImages"] as? Int, 4)
        for (got, want) in zip(v.views.map(\.metric), [0.5, 1.0, 1.0]) { XCTAssertEqual(try XCTUnwrap(got), want, accuracy: 1e-12) }
        for (got, want) in zip(v.views.map(\.bestMetric), [0.5, 1.0, 1.0]) { XCTAssertEqual(try XCTUnwrap(got), want, accuracy: 1e-12) }
        for (got, want) in zip(v.views.map(\.bestThreshold), [Float(0.11), 0.26, 0.01]) { XCTAssertEqual(try XCTUnwrap(got), want, accuracy: 1e-6) }
        XCTAssertEqual(try XCTUnwrap(v.views[0].rocAUCLungOpacity), 0.5, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(v.views[1].rocAUCLungOpacity), 0.75, accuracy: 1e-12)
        XCTAssertNil(v.views[2].rocAUCLungOpacity)
        // the overall metric is the per-view metrics weighted by the images each counts
        let pooled = v.views.reduce(0.0) { $0 + ($1.metric ?? 0) * Double($1.scoredImages ?? 0) } / Double(v.views.reduce(0) { $0 + ($1.scoredImages ?? 0) })
        XCTAssertEqual(pooled, try XCTUnwrap(report.challenge.bestMetric), accuracy: 1e-12)
        let lines = report.viewLines()
        XCTAssertEqual(lines.count, 3)
        XCTAssertTrue(lines[0].hasPrefix("by view (hand): AP: 3 images, 2 with opacity; metric 0.5000 at 0.26 over 2 counted images (own best 0.5000 at 0.11)"), lines[0])
        XCTAssertTrue(report.markdown().contains("| PA | 3 | 1 | 1 | 1 | 1.0000 | 1.0000 (0.26) | 0.7500 |"), report.markdown())

        // a view with negatives only, all left empty at the threshold: no metric there, no best of its own
        let two = EvaluationReport(Evaluation(images: [images[0], images[5]]), models: ["m"], ensemble: "single", tta: nil, data: "hand", views: views)
        let pa = try XCTUnwrap(two.byView?.views.last)
        XCTAssertEqual(pa.view, "PA")
        XCTAssertEqual(pa.scoredImages, 0)
        XCTAssertNil(pa.metric)
        XCTAssertNil(pa.bestMetric)
        XCTAssertTrue(two.viewLines()[1].contains("metric undefined at"), two.viewLines()[1])
        // no view known: null with the reason, nothing on the console
        let none = EvaluationReport(Evaluation(images: images), models: ["m"], ensemble: "single", tta: nil, data: "hand",
                                    views: ViewPositions(views: [:], source: nil, unavailableReason: "PNG images"))
        XCTAssertNil(none.byView)
        XCTAssertEqual(none.byViewUnavailable, "PNG images")
        XCTAssertEqual(none.viewLines(), [])
        XCTAssertTrue(none.markdown().contains("No per-view numbers: PNG images."))
    }

    /// eval's views and `folds --stratify view` read a DICOM's view alike
    /// (``ViewPositions/dicomView(of:)``): a real RSNA file gives its view, a PNG none, and a
    /// header that does not read is an error naming the file in both (eval used to leave
    /// that image's view unknown without a word).
    func testAnUnreadableDICOMHeaderIsAnErrorNamingTheFile() throws {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let images = repo.deletingLastPathComponent().appendingPathComponent("shared/realdata/rsna/stage_1_train_images")
        let real = try XCTUnwrap(try FileManager.default.contentsOfDirectory(at: images, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "dcm" }.sorted { $0.path < $1.path }.first, "no RSNA DICOM in \(images.path)")
        let view = try XCTUnwrap(try ViewPositions.dicomView(of: real))
        XCTAssertTrue(["AP", "PA"].contains(view), view)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("views-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let broken = dir.appendingPathComponent("broken.dcm"), png = dir.appendingPathComponent("p.png")
        try Data(repeating: 7, count: 300).write(to: broken)
        try Data(repeating: 7, count: 10).write(to: png)
        XCTAssertNil(try ViewPositions.dicomView(of: png))
        let records = [
            DatasetRecord(id: "real", imageURL: real, boxes: [], imageClass: nil), DatasetRecord(id: "png", imageURL: png, boxes: [], imageClass: nil),
        ]
        let views = try ViewPositions.of(records, folds: nil, foldsPath: nil)
        XCTAssertEqual(views.views, ["real": view])
        var readerError = ""
        do { _ = try DICOM.readHeader(broken) } catch { readerError = "\(error)" }
        XCTAssertTrue(readerError.contains(broken.path), readerError)
        XCTAssertThrowsError(try ViewPositions.of(records + [DatasetRecord(id: "broken", imageURL: broken, boxes: [], imageClass: nil)],
                                                  folds: nil, foldsPath: nil)) { e in
            XCTAssertEqual("\(e)", readerError)
        }
    }

    /// A model that made no detection at all still gets its FROC figure: a flat line at
    /// sensitivity 0, titled and labelled "no detections" (new-user trial: `opacity eval` wrote
    /// no froc.png then, without a word); without any truth box the figures that need one are
    /// named, with the reason, as not written.
    func testNoDetectionsStillWriteAFlatFROC() throws {
        let box = BoundingBox(x: 100, y: 100, width: 200, height: 150)
        let images: [Evaluation.ImageResult] = [
            .init(id: "a", truth: [box], detections: [], imageClass: .lungOpacity, classProbabilities: nil),
            .init(id: "b", truth: [], detections: [], imageClass: .normal, classProbabilities: nil),
        ]
        var report = EvaluationReport(Evaluation(images: images), models: ["m.opb"], ensemble: "single", tta: nil, data: "test")
        XCTAssertEqual(try XCTUnwrap(report.froc).sensitivity, [0, 0, 0, 0, 0, 0, 0])
        let chart = try XCTUnwrap(report.frocChart(), "no FROC chart for a model without detections")
        XCTAssertTrue(chart.title.contains("no detections"), chart.title)
        XCTAssertEqual(chart.series.first?.name, "no detections: sensitivity 0 at every rate")
        XCTAssertEqual(chart.series.first?.points.map(\.y), [0, 0])
        XCTAssertEqual(report.figuresNotWritten(), [])
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-report-nodet-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let written = try report.write(to: dir, metricChart: Evaluation(images: images).chart(title: "metric"))
        for name in ["froc.png", "froc.svg"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent(name).path), name)
            XCTAssertTrue(written.map(\.lastPathComponent).contains(name), "\(written)")
        }
        XCTAssertTrue(try String(contentsOf: dir.appendingPathComponent("summary.md"), encoding: .utf8).contains("![FROC](froc.png)"))
        // negatives only: no FROC to draw, and the files left out are named with the reason
        let negatives = EvaluationReport(Evaluation(images: [images[1]]), models: ["m.opb"], ensemble: "single", tta: nil, data: "test")
        XCTAssertNil(negatives.frocChart())
        XCTAssertEqual(
            negatives.figuresNotWritten(),
            [
                "precision_recall.png and precision_recall.svg not written: the one image has no truth box, so there is no sensitivity or recall to plot",
                "froc.png and froc.svg not written: the one image has no truth box, so there is no sensitivity or recall to plot",
            ])
    }

    func testReportHoldsEveryMeasureAndWritesItsFiles() throws {
        let box = BoundingBox(x: 100, y: 100, width: 200, height: 150)
        let images: [Evaluation.ImageResult] = [
            .init(id: "a", truth: [box], detections: [Detection(box: box, score: 0.9), Detection(box: BoundingBox(x: 600, y: 600, width: 80, height: 80), score: 0.3)],
                  imageClass: .lungOpacity, classProbabilities: [0.1, 0.2, 0.7]),
            .init(id: "b", truth: [], detections: [Detection(box: box, score: 0.25)], imageClass: .normal, classProbabilities: [0.2, 0.5, 0.3]),
            .init(id: "c", truth: [], detections: [], imageClass: .notNormal, classProbabilities: [0.3, 0.6, 0.1]),
        ]
        var report = EvaluationReport(Evaluation(images: images), models: ["m.opb"], ensemble: "single", tta: nil, data: "test")
        XCTAssertEqual(report.truthBoxes, 1)
        XCTAssertEqual(try XCTUnwrap(report.challenge.bestMetric), 1, accuracy: 1e-9)  // threshold above 0.3 keeps only the hit
        XCTAssertEqual(try XCTUnwrap(report.coco.ap50), 1, accuracy: 1e-9)
        XCTAssertEqual(try XCTUnwrap(report.froc).sensitivity, [1, 1, 1, 1, 1, 1, 1])
        let c = try XCTUnwrap(report.classifier)
        XCTAssertEqual(c.confusion, [[0, 1, 0], [0, 1, 0], [0, 0, 1]])
        XCTAssertEqual(try XCTUnwrap(c.accuracy), 2.0 / 3, accuracy: 1e-9)
        XCTAssertEqual(try XCTUnwrap(c.rocAUCLungOpacity), 1, accuracy: 1e-9)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-report-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let written = try report.write(to: dir, metricChart: Evaluation(images: images).chart(title: "metric"))
        for name in ["report.json", "summary.md", "metric_vs_threshold.png", "metric_vs_threshold.svg", "precision_recall.png", "precision_recall.svg", "froc.png", "froc.svg"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent(name).path), name)
        }
        XCTAssertEqual(written.count, 8)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("report.json"))) as? [String: Any])
        XCTAssertEqual(json["format"] as? String, "opacity-eval-report")
        for key in ["challenge", "coco", "froc", "precision_recall", "classifier", "figures", "images_with_opacity", "truth_boxes"] {
            XCTAssertNotNil(json[key], key)
        }
        let md = try String(contentsOf: dir.appendingPathComponent("summary.md"), encoding: .utf8)
        XCTAssertTrue(md.contains("![FROC](froc.png)") && md.contains("| Lung Opacity | 0 | 0 | 1 |"), md)
        let svg = try String(contentsOf: dir.appendingPathComponent("froc.svg"), encoding: .utf8)
        XCTAssertTrue(svg.hasPrefix("<svg") && svg.contains("sensitivity"))
    }

    /// The legend covers no drawn line anywhere along it, not only at sampled points: in
    /// charts like compare's (few epochs, so long segments), every pixel of every segment,
    /// and each curve's end, lies outside the legend box (new-user trial: compare's legend
    /// covered the end of a curve).
    func testLegendCoversNoPixelOfAnyCurve() {
        var state: UInt64 = 12345
        func next() -> Double {  // a fixed sequence (LCG), so the charts are the same every run
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Double(state >> 11) / Double(1 << 53)
        }
        var overlaps: [String] = []
        for chart in 0..<300 {
            let epochs = 2 + Int(next() * 4)
            let series = (0..<(1 + Int(next() * 3))).map { k in
                LineChart.Series(name: "run \(k) with a long name", points: (1...epochs).map { (Double($0), next()) }, color: LineChart.palette[k])
            }
            let c = LineChart(title: "validation loss per epoch", xLabel: "epoch", yLabel: "validation loss", series: series)
            guard let g = c.legendFrame else { continue }
            func covered(_ x: Double, _ y: Double) -> Bool {
                // the line is drawn 2-3 px wide: a pixel next to the box counts
                x >= Double(g.x - 2) && x <= Double(g.x + g.width + 2) && y >= Double(g.y - 2) && y <= Double(g.y + g.height + 2)
            }
            for s in series {
                let end = s.points[s.points.count - 1]
                let e = c.pixel(end.x, end.y)
                if covered(e.x, e.y) { overlaps.append("chart \(chart): the end of \(s.name)") }
                for (a, b) in zip(s.points, s.points.dropFirst()) {
                    let (pa, pb) = (c.pixel(a.x, a.y), c.pixel(b.x, b.y))
                    let (xa, ya, xb, yb) = (pa.x, pa.y, pb.x, pb.y)
                    let steps = Int(Swift.max(Swift.abs(xb - xa), Swift.abs(yb - ya))) + 1
                    if (0...steps).contains(where: { i in
                        let f = Double(i) / Double(steps)
                        return covered(xa + (xb - xa) * f, ya + (yb - ya) * f)
                    }) {
                        overlaps.append("chart \(chart): \(s.name) between epochs \(a.x) and \(b.x)")
                    }
                }
            }
        }
        XCTAssertEqual(overlaps, [], "\(overlaps.count) overlaps, e.g. \(overlaps.prefix(5))")
    }

    func testChartsKeepTheLegendOffTheDataAndEpochTicksWhole() {
        let epochs = (1...7).map(Double.init)
        // a rising line leaves the top-left corner empty
        var c = LineChart(title: "loss per epoch", xLabel: "epoch", yLabel: "loss",
                          series: [LineChart.Series(name: "validation", points: epochs.map { ($0, $0) }, color: LineChart.palette[0])])
        XCTAssertTrue(c.xTickValues.allSatisfy { $0 == $0.rounded() }, "\(c.xTickValues)")
        var g = c.legendFrame!
        let plot = c.plotFrame
        XCTAssertLessThan(g.x, (plot.left + plot.right) / 2, "top-left: \(g)")
        XCTAssertLessThan(g.y, (plot.top + plot.bottom) / 2)
        // lines through every corner push the legend out of the plot
        c.series.append(LineChart.Series(name: "training", points: epochs.map { ($0, 8 - $0) }, color: LineChart.palette[1]))
        c.series.append(LineChart.Series(name: "flat top", points: epochs.map { ($0, 7) }, color: LineChart.palette[2]))
        c.series.append(LineChart.Series(name: "flat bottom", points: epochs.map { ($0, 1) }, color: LineChart.palette[3]))
        g = c.legendFrame!
        XCTAssertGreaterThan(g.x, c.plotFrame.right, "outside: \(g) plot \(c.plotFrame)")
        // two epochs only: still whole-number ticks
        let two = LineChart(title: "t", xLabel: "epoch", yLabel: "y", series: [LineChart.Series(name: "a", points: [(1, 0), (2, 1)], color: LineChart.palette[0])])
        XCTAssertEqual(two.xTickValues, [1, 2])
        // segments wholly outside a fixed range (FROC beyond 8 FP/image) are clipped, not drawn
        var froc = LineChart(title: "FROC", xLabel: "FP per image", yLabel: "sensitivity",
                             series: [LineChart.Series(name: "s", points: [(0.01, 0.1), (0.5, 0.5), (20, 0.9), (90, 0.95)], band: [(0.01, 0, 0.2), (90, 0.9, 1)],
                                                       color: LineChart.palette[0])])
        froc.logX = true
        froc.xRange = 0.125...8
        froc.yRange = 0...1
        let img = froc.render()
        XCTAssertEqual(img.width, 960)
        XCTAssertEqual(froc.xTickValues, [0.125, 0.25, 0.5, 1, 2, 4, 8])
        XCTAssertTrue(froc.renderSVG().contains("</svg>"))
    }

    /// A run with one epoch is a series of one point: it is drawn as a visible square (not a
    /// 5-pixel dot under the axis), in the PNG and in the SVG.
    func testASinglePointSeriesIsVisible() {
        let color = LineChart.palette[4]
        let chart = LineChart(title: "metric per epoch", xLabel: "epoch", yLabel: "metric",
                              series: [LineChart.Series(name: "two", points: [(1, 0.1), (2, 0.2)], color: LineChart.palette[0]),
                                       LineChart.Series(name: "one", points: [(1, 0.15)], color: color)])
        let img = chart.render()
        var n = 0
        for i in stride(from: 0, to: img.pixels.count, by: 3) where img.pixels[i] == color.r && img.pixels[i + 1] == color.g && img.pixels[i + 2] == color.b { n += 1 }
        // the legend's swatch is 24 x 4 = 96 pixels; the point adds at least half its square (it may sit on the axis)
        XCTAssertGreaterThanOrEqual(n, 96 + LineChart.lonePoint * LineChart.lonePoint / 2, "pixels of the single-point series: \(n)")
        XCTAssertTrue(chart.renderSVG().contains("width=\"\(LineChart.lonePoint)\""))
    }
}
