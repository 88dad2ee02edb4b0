import Foundation
import XCTest

/// `opacity eval` on real rsna1k files: the global classifier's report with and without the
/// class file, negatives only, and what is scored.
final class EvalReportingTests: XCTestCase {
    let rsna1k = CLI.realdata.appendingPathComponent("rsna1k")

    func json(_ url: URL) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    }

    /// The same 8 real images scored with the class file (--data, RSNA layout) and without it
    /// (--labels stage_2_train_labels.csv): with it, a 3x3 matrix and an accuracy; without it,
    /// none (null in report.json with the reason, said on the console), never "Normal" for
    /// every Target 0 image; the Lung Opacity ROC AUC is the same in both.
    func testClassifierWithAndWithoutClassFile() throws {
        let dir = try CLI.tempDir("evalclass")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = "retinanet-r34-rsna1k"
        let with = try CLI.run(["eval", "--model", model, "--data", rsna1k.path, "--all", "--limit", "8", "-o", "with"], in: dir)
        XCTAssertEqual(with.status, 0, with.all)
        XCTAssertTrue(with.stdout.contains("classifier: accuracy "), with.stdout)
        let without = try CLI.run(
            [
                "eval", "--model", model, "--labels", rsna1k.appendingPathComponent("stage_2_train_labels.csv").path,
                "--images", rsna1k.appendingPathComponent("stage_2_train_images").path, "--all", "--limit", "8", "-o", "without",
            ], in: dir)
        XCTAssertEqual(without.status, 0, without.all)
        XCTAssertTrue(without.stdout.contains("no 3x3 confusion matrix or accuracy"), without.stdout)
        XCTAssertTrue(without.stdout.contains("have no class in the labels"), without.stdout)
        XCTAssertFalse(without.stdout.contains("classifier: accuracy"), without.stdout)

        let a = try XCTUnwrap(try json(dir.appendingPathComponent("with/report.json"))["classifier"] as? [String: Any])
        let b = try XCTUnwrap(try json(dir.appendingPathComponent("without/report.json"))["classifier"] as? [String: Any])
        let confusion = try XCTUnwrap(a["confusion"] as? [[Int]])
        XCTAssertEqual(confusion.flatMap { $0 }.reduce(0, +), 8)
        XCTAssertNotNil(a["accuracy"] as? Double)
        XCTAssertEqual(a["imagesWithClass"] as? Int, 8)
        XCTAssertTrue(a["threeClassUnavailable"] is NSNull)
        XCTAssertTrue(b["confusion"] is NSNull && b["accuracy"] is NSNull, "\(b)")
        let positives = confusion[2].reduce(0, +)
        // accuracy counts the arg-max, the AUC ranks by the probability: when the arg-max seldom
        // says Lung Opacity the console says why the two disagree
        XCTAssertEqual(with.stdout.contains("note: the arg-max says Lung Opacity for"), positives > 0 && confusion[2][2] * 2 < positives, with.stdout)
        XCTAssertEqual(b["imagesWithClass"] as? Int, positives)
        XCTAssertTrue(try XCTUnwrap(b["threeClassUnavailable"] as? String).contains("\(8 - positives) of the 8 images have no class"))
        XCTAssertEqual(try XCTUnwrap(a["rocAUCLungOpacity"] as? Double), try XCTUnwrap(b["rocAUCLungOpacity"] as? Double), accuracy: 1e-12)
        let md = try String(contentsOf: dir.appendingPathComponent("without/summary.md"), encoding: .utf8)
        XCTAssertTrue(md.contains("No 3x3 confusion matrix"), md)
    }

    /// The default zoo model lists the 190 rsna1k images it held out (fold 0 of `opacity folds
    /// --stratify view`, its recipe's split): eval without --fold scores exactly those, with no
    /// warning; a fold of the default split, which holds images it trained on, is scored with a
    /// warning that counts them.
    func testZooModelScoresItsHeldOutImages() throws {
        let dir = try CLI.tempDir("evalheld")
        defer { try? FileManager.default.removeItem(at: dir) }
        let held = try CLI.run(["eval", "--data", rsna1k.path, "--limit", "6", "-o", "held"], in: dir)
        XCTAssertEqual(held.status, 0, held.all)
        XCTAssertTrue(held.stdout.contains("scoring the 190 images retinanet-r34-rsna1k held out from its training"), held.stdout)
        XCTAssertFalse(held.all.contains("warning:"), held.all)
        XCTAssertEqual(try CLI.run(["folds", "--data", rsna1k.path, "--stratify", "view", "-o", "folds.csv"], in: dir).status, 0)
        func column(_ file: String, _ keep: (Substring) -> Bool = { _ in true }) throws -> [String] {
            try String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8).split(separator: "\n").dropFirst().filter(keep)
                .map { String($0.split(separator: ",", omittingEmptySubsequences: false)[0]) }
        }
        let fold0 = Set(try column("folds.csv") { $0.split(separator: ",", omittingEmptySubsequences: false)[2] == "0" })
        XCTAssertEqual(fold0.count, 190)
        let scored = try column("held/per_image.csv")
        XCTAssertEqual(scored.count, 6)
        XCTAssertTrue(Set(scored).isSubset(of: fold0), "\(scored)")

        let other = try CLI.run(["eval", "--data", rsna1k.path, "--fold", "1", "--limit", "6", "-o", "other"], in: dir)
        XCTAssertEqual(other.status, 0, other.all)
        let trained = try column("other/per_image.csv").filter { !fold0.contains($0) }.count
        XCTAssertGreaterThan(trained, 0)
        XCTAssertTrue(other.stdout.contains("warning: \(trained) of the 6 images scored are ones retinanet-r34-rsna1k trained on"), other.stdout)
    }

    /// Data without any of the held-out images (a subset of the films it trained on, in another
    /// folder): the zoo entry's `trainedOn` list still makes eval warn, and counts them.
    func testZooModelWarnsOnItsTrainingImagesInAnyFolder() throws {
        let dir = try CLI.tempDir("evaltrained")
        defer { try? FileManager.default.removeItem(at: dir) }
        let manifest = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("zoo/manifest.json")
        let entries = try XCTUnwrap(try json(manifest)["entries"] as? [[String: Any]])
        let entry = try XCTUnwrap(entries.first { $0["name"] as? String == "retinanet-r34-rsna1k" })
        let held = Set(try XCTUnwrap(entry["heldOut"] as? [String])), trained = Set(try XCTUnwrap(entry["trainedOn"] as? [String]))
        XCTAssertEqual(held.count + trained.count, 757)
        let lines = try String(contentsOf: rsna1k.appendingPathComponent("stage_2_train_labels.csv"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        let ids = lines.dropFirst().map { String($0.prefix { $0 != "," }) }
        var chosen: [String] = []
        for id in ids where trained.contains(id) && !chosen.contains(id) && chosen.count < 3 { chosen.append(id) }
        let films = dir.appendingPathComponent("films")
        try FileManager.default.createDirectory(at: films, withIntermediateDirectories: true)
        for id in chosen {
            try FileManager.default.createSymbolicLink(
                at: films.appendingPathComponent("\(id).dcm"),
                withDestinationURL: rsna1k.appendingPathComponent("stage_2_train_images/\(id).dcm"))
        }
        try ([lines[0]] + lines.dropFirst().filter { chosen.contains(String($0.prefix { $0 != "," })) })
            .joined(separator: "\n").write(to: dir.appendingPathComponent("three.csv"), atomically: true, encoding: .utf8)
        let r = try CLI.run(["eval", "--labels", "three.csv", "--images", "films", "--all", "-o", "ev"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(
            r.stdout.contains("warning: 3 of the 3 images scored are ones retinanet-r34-rsna1k trained on (its zoo entry lists the 567"),
            r.all)
    }

    /// Negatives only (real Target 0 rows of rsna1k): "metric undefined" with score's
    /// reason, null with the reason in report.json; --operating-point-out refuses.
    func testNegativesOnlyMetricIsUndefined() throws {
        let dir = try CLI.tempDir("evalneg")
        defer { try? FileManager.default.removeItem(at: dir) }
        let lines = try String(contentsOf: rsna1k.appendingPathComponent("stage_2_train_labels.csv"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        let negatives = lines.dropFirst().filter { $0.hasSuffix(",0") }.prefix(4)
        XCTAssertEqual(negatives.count, 4)
        try ([lines[0]] + negatives).joined(separator: "\n").write(to: dir.appendingPathComponent("neg.csv"), atomically: true, encoding: .utf8)
        let args = [
            "eval", "--model", "retinanet-r34-rsna1k", "--labels", "neg.csv", "--images", rsna1k.appendingPathComponent("stage_2_train_images").path,
            "--all", "-o", "ev",
        ]
        let r = try CLI.run(args, in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("metric undefined: none of the 4 images has a truth box"), r.stdout)
        XCTAssertTrue(r.stdout.contains("an image with no truth box and no predicted box is left out of the mean"), r.stdout)
        XCTAssertTrue(r.stdout.contains("negatives predicted empty (correct)"), r.stdout)
        XCTAssertFalse(r.stdout.contains("metric 0.0000"), r.stdout)
        // the figures that need a truth box are named as not written, with the reason
        XCTAssertTrue(r.stdout.contains("froc.png and froc.svg not written: none of the 4 images has a truth box"), r.stdout)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("ev/froc.png").path))
        let ch = try XCTUnwrap(try json(dir.appendingPathComponent("ev/report.json"))["challenge"] as? [String: Any])
        XCTAssertTrue(ch["bestMetric"] is NSNull && ch["bestThreshold"] is NSNull, "\(ch)")
        XCTAssertTrue(try XCTUnwrap(ch["undefinedReason"] as? String).contains("none of the 4 images has a truth box"))
        // the same -o again: the first run's report is replaced (--overwrite)
        let op = try CLI.run(args + ["--overwrite", "--operating-point-out", "op.opb"], in: dir)
        XCTAssertEqual(op.status, 1, op.all)
        XCTAssertTrue(op.stderr.contains("no operating point to store"), op.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("op.opb").path))
    }

    /// The per-view report on real DICOM files: the zoo model's held-out rsna1k images, views
    /// from the (0018,5101) headers, one console line per view; the views' counts add up and
    /// the overall metric is their metrics weighted by the images each counts.
    func testPerViewNumbersFromDICOMHeaders() throws {
        let dir = try CLI.tempDir("evalview")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try CLI.run(["eval", "--data", rsna1k.path, "--limit", "6", "-o", "ev"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("scoring the 190 images retinanet-r34-rsna1k held out"), r.stdout)
        let report = try json(dir.appendingPathComponent("ev/report.json"))
        XCTAssertTrue(report["by_view_unavailable"] is NSNull, "\(report)")
        let byView = try XCTUnwrap(report["by_view"] as? [String: Any])
        XCTAssertEqual(byView["source"] as? String, "DICOM ViewPosition (0018,5101)")
        let best = try XCTUnwrap((report["challenge"] as? [String: Any])?["bestThreshold"] as? Double)
        XCTAssertEqual(try XCTUnwrap(byView["threshold"] as? Double), best, accuracy: 1e-6)
        let views = try XCTUnwrap(byView["views"] as? [[String: Any]])
        // the first 6 held-out ids (in rsna1k's label order) are 3 AP and 3 PA films
        XCTAssertEqual(views.map { $0["view"] as? String }, ["AP", "PA"])
        XCTAssertEqual(views.map { $0["images"] as? Int ?? -1 }.reduce(0, +), 6)
        XCTAssertEqual(views.map { $0["imagesWithOpacity"] as? Int ?? -1 }.reduce(0, +), report["images_with_opacity"] as? Int)
        XCTAssertEqual(views.map { $0["truthBoxes"] as? Int ?? -1 }.reduce(0, +), report["truth_boxes"] as? Int)
        var weighted = 0.0, counted = 0
        for v in views {
            let n = try XCTUnwrap(v["scoredImages"] as? Int)
            weighted += (v["metric"] as? Double ?? 0) * Double(n)
            counted += n
        }
        let overall = try XCTUnwrap((report["challenge"] as? [String: Any])?["bestMetric"] as? Double)
        XCTAssertEqual(weighted / Double(counted), overall, accuracy: 1e-9)
        // the metric line counts what the metric averages, as `opacity score` does (new-user
        // trial: "over 20 images" where 8 counted)
        XCTAssertTrue(
            r.stdout.contains("over \(counted) of the 6 images (\(6 - counted) without truth or predictions left out)"), r.stdout)
        // the console: one line per view, the first naming the source
        let lines = r.stdout.split(separator: "\n").filter { $0.contains(" AP: ") || $0.contains(" PA: ") }
        XCTAssertEqual(lines.count, 2, r.stdout)
        XCTAssertTrue(lines[0].hasPrefix("by view (DICOM ViewPosition (0018,5101)): AP: "), r.stdout)
        let md = try String(contentsOf: dir.appendingPathComponent("ev/summary.md"), encoding: .utf8)
        XCTAssertTrue(md.contains("## By view") && md.contains("| AP | "), md)
    }

    /// PNG copies of real films carry no view: eval takes it from the view column that
    /// `opacity folds --stratify view` writes (with --all, the folds file gives only the views;
    /// with --fold, also the fold), and the per-view numbers equal those of the same films
    /// scored as DICOM. Without a folds file nothing is said and `by_view` is null with the reason.
    func testPerViewNumbersForPNGFromAFoldsFile() throws {
        let dir = try CLI.tempDir("evalviewpng")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        let lines = try String(contentsOf: rsna1k.appendingPathComponent("stage_2_train_labels.csv"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        var ids: [String] = []
        for target in [",1", ",0"] {
            for l in lines.dropFirst() where l.hasSuffix(target) {
                let id = String(l.prefix { $0 != "," })
                if !ids.contains(id) && ids.count < (target == ",1" ? 3 : 6) { ids.append(id) }
            }
        }
        XCTAssertEqual(ids.count, 6)
        let rows = lines.dropFirst().filter { ids.contains(String($0.prefix { $0 != "," })) }
        try ([lines[0]] + rows).joined(separator: "\n").write(to: dir.appendingPathComponent("six.csv"), atomically: true, encoding: .utf8)
        try fm.createDirectory(at: dir.appendingPathComponent("dcm"), withIntermediateDirectories: true)
        for id in ids {
            try fm.copyItem(
                at: rsna1k.appendingPathComponent("stage_2_train_images/\(id).dcm"), to: dir.appendingPathComponent("dcm/\(id).dcm"))
        }
        XCTAssertEqual(try CLI.run(["convert", "dcm", "-o", "png", "-q"], in: dir).status, 0)
        let folds = try CLI.run(["folds", "--data", rsna1k.path, "--stratify", "view", "-o", "folds.csv"], in: dir)
        XCTAssertEqual(folds.status, 0, folds.all)
        let foldsText = try String(contentsOf: dir.appendingPathComponent("folds.csv"), encoding: .utf8)
        XCTAssertTrue(foldsText.hasPrefix("patientId,class,fold,view\n"), String(foldsText.prefix(200)))

        let model = ["--model", "retinanet-r34-rsna1k", "--labels", "six.csv"]
        let png = try CLI.run(["eval"] + model + ["--images", "png", "--all", "--folds-file", "folds.csv", "-o", "png-ev"], in: dir)
        XCTAssertEqual(png.status, 0, png.all)
        XCTAssertTrue(png.stdout.contains("by view (the view column of folds.csv): AP: "), png.stdout)
        let dcm = try CLI.run(["eval"] + model + ["--images", "dcm", "--all", "-o", "dcm-ev"], in: dir)
        XCTAssertEqual(dcm.status, 0, dcm.all)
        let a = try XCTUnwrap(try json(dir.appendingPathComponent("png-ev/report.json"))["by_view"] as? [String: Any])
        let b = try XCTUnwrap(try json(dir.appendingPathComponent("dcm-ev/report.json"))["by_view"] as? [String: Any])
        XCTAssertEqual(a["source"] as? String, "the view column of folds.csv")
        XCTAssertEqual(b["source"] as? String, "DICOM ViewPosition (0018,5101)")
        let va = try XCTUnwrap(a["views"] as? [[String: Any]]), vb = try XCTUnwrap(b["views"] as? [[String: Any]])
        XCTAssertEqual(va.map { $0["view"] as? String }, ["AP", "PA"])
        XCTAssertEqual(va.count, vb.count)
        for (x, y) in zip(va, vb) {
            for key in ["view", "images", "imagesWithOpacity", "truthBoxes", "scoredImages"] {
                XCTAssertEqual("\(x[key] ?? "none")", "\(y[key] ?? "none")", "\(key): \(x) vs \(y)")
            }
            for key in ["metric", "bestMetric", "rocAUCLungOpacity"] {
                XCTAssertEqual(x[key] as? Double ?? -1, y[key] as? Double ?? -1, accuracy: 1e-9, "\(key): \(x) vs \(y)")
            }
        }

        // score: a submission of the same films at eval's threshold, per view from the folds file
        let threshold = String(format: "%.2f", try XCTUnwrap(b["threshold"] as? Double))
        let submit = try CLI.run(["submit", "--model", "retinanet-r34-rsna1k", "--images", "dcm", "--threshold", threshold, "-o", "sub.csv", "-q"], in: dir)
        XCTAssertEqual(submit.status, 0, submit.all)
        let score = try CLI.run(["score", "sub.csv", "--labels", "six.csv", "--folds-file", "folds.csv"], in: dir)
        XCTAssertEqual(score.status, 0, score.all)
        for (i, v) in vb.enumerated() {
            let name = try XCTUnwrap(v["view"] as? String), m = try XCTUnwrap(v["metric"] as? Double)
            let prefix = i == 0 ? "by view (the view column of folds.csv): " : String(repeating: " ", count: 40)
            let counted = try XCTUnwrap(v["scoredImages"] as? Int)
            let line =
                "\(prefix)\(name): \(v["images"] ?? "?") images, \(v["imagesWithOpacity"] ?? "?") with opacity; "
                + String(format: "metric %.4f over ", m) + (counted == 1 ? "1 counted image" : "\(counted) counted images")
            XCTAssertTrue(score.stdout.contains(line + "\n"), "expected '\(line)' in:\n\(score.stdout)")
        }
        try "patientId,class,fold\n\(ids[0]),Lung Opacity,0\n\(ids[3]),,1\n".write(to: dir.appendingPathComponent("noview.csv"), atomically: true, encoding: .utf8)
        let noView = try CLI.run(["score", "sub.csv", "--labels", "six.csv", "--folds-file", "noview.csv"], in: dir)
        XCTAssertEqual(noView.status, 1, noView.all)
        XCTAssertTrue(noView.stderr.contains("expected columns 'patientId,class,fold,view'") && noView.stderr.contains("--stratify view"), noView.all)

        // --fold with the folds file: that fold's images, still with their views
        let foldOf = Dictionary(
            uniqueKeysWithValues: foldsText.split(separator: "\n").dropFirst().map { l in
                let f = l.split(separator: ",", omittingEmptySubsequences: false)
                return (String(f[0]), String(f[2]))
            })
        let k = try XCTUnwrap(foldOf[ids[0]])
        let inFold = ids.filter { foldOf[$0] == k }.count
        let fold = try CLI.run(["eval"] + model + ["--images", "png", "--folds-file", "folds.csv", "--fold", k, "-o", "fold-ev"], in: dir)
        XCTAssertEqual(fold.status, 0, fold.all)
        let vf = try XCTUnwrap((try json(dir.appendingPathComponent("fold-ev/report.json"))["by_view"] as? [String: Any])?["views"] as? [[String: Any]])
        XCTAssertEqual(vf.map { $0["images"] as? Int ?? -1 }.reduce(0, +), inFold)

        // no folds file: the PNG films' views are unknown
        let none = try CLI.run(["eval"] + model + ["--images", "png", "--all", "-o", "none-ev"], in: dir)
        XCTAssertEqual(none.status, 0, none.all)
        XCTAssertFalse(none.stdout.contains("by view"), none.stdout)
        let report = try json(dir.appendingPathComponent("none-ev/report.json"))
        XCTAssertTrue(report["by_view"] is NSNull, "\(report)")
        let why = try XCTUnwrap(report["by_view_unavailable"] as? String)
        XCTAssertTrue(why.contains("the images are not DICOM") && why.contains("opacity folds --stratify view"), why)
    }

    /// A run trained with --folds-file keeps no folds.csv of its own; eval of the run scores
    /// its validation fold of that file (not of the default split, which would mix in images
    /// it trained on).
    func testRunTrainedWithAFoldsFileIsScoredOnThatFile() throws {
        let dir = try CLI.tempDir("evalrunfolds")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertEqual(try CLI.run(["synth", "-o", "data", "--count", "16", "--size", "64", "--seed", "2", "-q"], in: dir).status, 0)
        XCTAssertEqual(try CLI.run(["folds", "--data", "data", "--seed", "9", "-o", "f.csv"], in: dir).status, 0)
        let tiny = "retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=16), head=retina(channels=16), size=64)"
        let train = try CLI.run(
            ["train", "--data", "data", "--config", tiny, "--epochs", "1", "--batch", "4", "--folds-file", "f.csv", "--fold", "1", "-o", "run", "-q"], in: dir)
        XCTAssertEqual(train.status, 0, train.all)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run/folds.csv").path))
        let r = try CLI.run(["eval", "--model", "run", "--data", "data", "-o", "ev", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("scoring fold 1 of 4 (folds file \(dir.appendingPathComponent("f.csv").standardizedFileURL.path))"), r.stdout)
        let fold1 = try String(contentsOf: dir.appendingPathComponent("f.csv"), encoding: .utf8).split(separator: "\n").dropFirst()
            .filter { $0.hasSuffix(",1") }.map { String($0.prefix { $0 != "," }) }
        let scored = try String(contentsOf: dir.appendingPathComponent("ev/per_image.csv"), encoding: .utf8).split(separator: "\n").dropFirst()
            .map { String($0.prefix { $0 != "," }) }
        XCTAssertEqual(Set(scored), Set(fold1))
    }

    /// Without --all eval scores one fold and says which on the console.
    func testFoldIsSaidOnTheConsole() throws {
        let dir = try CLI.tempDir("evalfold")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try CLI.run(["eval", "--model", "retinanet-r34-rsna1k", "--data", rsna1k.path, "--fold", "2", "--limit", "4", "-o", "ev"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertNotNil(
            r.stdout.range(
                of: #"scoring fold 2 of 4 \(stratified split, 4 folds, seed 42\): 4 of 757 images \(the first 4 of the 1[89][0-9] chosen: --limit 4\); --all scores every image"#,
                options: .regularExpression), r.stdout)
    }

    /// A run folder scored on data other than its own: a warning on standard error names both
    /// data locations and how many of the images scored were and were not in the run's data,
    /// and how many of the data read are in none of its folds; the score is still made
    /// (new-user trial: only the overlap was scored, without a word). Its own data: no warning.
    func testRunScoredOnOtherDataIsWarnedAbout() throws {
        let dir = try CLI.tempDir("evalotherdata")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        XCTAssertEqual(try CLI.run(["synth", "-o", "data", "--count", "16", "--size", "64", "--seed", "2", "-q"], in: dir).status, 0)
        XCTAssertEqual(try CLI.run(["synth", "-o", "extra", "--count", "8", "--size", "64", "--seed", "5", "-q"], in: dir).status, 0)
        let train = try CLI.run(["train", "--data", "data", "--config", CLIRobustnessTests.tiny, "--epochs", "1", "--batch", "4", "-o", "run", "-q"], in: dir)
        XCTAssertEqual(train.status, 0, train.all)
        // other data: the run's 16 images and 8 more
        let data = dir.appendingPathComponent("data"), extra = dir.appendingPathComponent("extra"), more = dir.appendingPathComponent("more")
        try fm.copyItem(at: data, to: more)
        for name in try fm.contentsOfDirectory(atPath: extra.path) where name.hasSuffix(".csv") {
            let lines = try String(contentsOf: extra.appendingPathComponent(name), encoding: .utf8).split(separator: "\n").dropFirst()
            let handle = try FileHandle(forWritingTo: more.appendingPathComponent(name))
            handle.seekToEndOfFile()
            handle.write(Data((lines.joined(separator: "\n") + "\n").utf8))
            try handle.close()
        }
        let images = extra.appendingPathComponent("stage_2_train_images")
        for name in try fm.contentsOfDirectory(atPath: images.path) {
            try fm.copyItem(at: images.appendingPathComponent(name), to: more.appendingPathComponent("stage_2_train_images/\(name)"))
        }
        let own = "warning: run was trained on other data: \(data.standardizedFileURL.path) (options.json \"dataRoot\"), not \(more.standardizedFileURL.path) (--data)"
        // the run's validation fold (its folds.csv): its 4 images, the 8 others in no fold
        var r = try CLI.run(["eval", "--model", "run", "--data", "more", "-o", "ev1", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(
            r.stderr.contains(
                own + "; of the 4 images scored, 4 are in the run's data (its folds file \(dir.appendingPathComponent("run/folds.csv").path)) and 0 are not; "
                    + "8 of the 24 images read are in none of the run's folds and are not scored (--all or --folds-file scores them); scoring anyway"), r.stderr)
        XCTAssertTrue(fm.fileExists(atPath: dir.appendingPathComponent("ev1/report.json").path), r.all)
        // every image
        r = try CLI.run(["eval", "--model", "run", "--data", "more", "--all", "-o", "ev2", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains(own + "; of the 24 images scored, 16 are in the run's data"), r.stderr)
        XCTAssertTrue(r.stderr.contains("and 8 are not; scoring anyway"), r.stderr)
        // its own data, named another way: no warning
        r = try CLI.run(["eval", "--model", "run", "--data", "./data/", "-o", "ev3", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertFalse(r.stderr.contains("other data"), r.stderr)
    }
}
