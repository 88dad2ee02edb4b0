import Foundation
import XCTest

/// `opacity convert --labels`: real RSNA films converted to 512 px with their labels scaled
/// into the PNGs' pixels, which `eval` takes where it refuses the original labels; the
/// refusals, the rows left out and an input on a pipe.
final class ConvertLabelsCLITests: XCTestCase {
    let rsna1k = CLI.realdata.appendingPathComponent("rsna1k")

    /// A folder `dcm/` with six real films (three with boxes, three without) and `six.csv`,
    /// their rows of `stage_2_train_labels.csv` (the films are read from rsna1k and copied to
    /// the temporary folder only).
    func sixFilms(_ name: String) throws -> (dir: URL, header: String, rows: [String], ids: [String]) {
        let dir = try CLI.tempDir(name)
        let fm = FileManager.default
        let lines = try String(contentsOf: rsna1k.appendingPathComponent("stage_2_train_labels.csv"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        var ids: [String] = []
        for target in [",1", ",0"] {
            var n = 0
            for l in lines.dropFirst() where l.hasSuffix(target) {
                let id = String(l.prefix { $0 != "," })
                let film = rsna1k.appendingPathComponent("stage_2_train_images/\(id).dcm")
                if !ids.contains(id) && n < 3 && fm.fileExists(atPath: film.path) {
                    ids.append(id)
                    n += 1
                }
            }
        }
        XCTAssertEqual(ids.count, 6)
        let rows = lines.dropFirst().filter { ids.contains(String($0.prefix { $0 != "," })) }
        try ([lines[0]] + rows).joined(separator: "\n").write(to: dir.appendingPathComponent("six.csv"), atomically: true, encoding: .utf8)
        try fm.createDirectory(at: dir.appendingPathComponent("dcm"), withIntermediateDirectories: true)
        for id in ids {
            try fm.copyItem(at: rsna1k.appendingPathComponent("stage_2_train_images/\(id).dcm"), to: dir.appendingPathComponent("dcm/\(id).dcm"))
        }
        return (dir, lines[0], rows, ids)
    }

    func rows(_ url: URL) throws -> [[String]] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
    }

    /// Each box of the 1024-px films is half as large in the 512-px PNGs, negative rows are
    /// unchanged, and `eval` takes the new labels where it refuses the original ones.
    func testLabelsFollowTheConvertedPixelsAndEvalTakesThem() throws {
        let (dir, header, original, _) = try sixFilms("convlabels")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try CLI.run(["convert", "dcm", "-o", "png", "--size", "512", "--labels", "six.csv"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stdout.contains("6 converted, 0 skipped (output exists), 0 failed\n"), r.all)
        XCTAssertTrue(
            r.stdout.contains(
                "labels: \(original.count) rows written to \(dir.appendingPathComponent("png/labels.csv").path) (boxes times 0.5: each image's output over source size)"),
            r.all)
        let scaled = try rows(dir.appendingPathComponent("png/labels.csv"))
        XCTAssertEqual(scaled.first?.joined(separator: ","), header)
        XCTAssertEqual(scaled.count - 1, original.count)
        var boxes = 0
        for (a, b) in zip(original, scaled.dropFirst()) {
            let f = a.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            XCTAssertEqual([f[0], f[5]], [b[0], b[5]])
            if f[5] == "0" {
                XCTAssertEqual(f, b)
                continue
            }
            boxes += 1
            for k in 1...4 { XCTAssertEqual(try XCTUnwrap(Double(b[k])), try XCTUnwrap(Double(f[k])) / 2, accuracy: 1e-9, "\(a) -> \(b)") }
        }
        XCTAssertGreaterThanOrEqual(boxes, 3)

        let model = ["eval", "--model", "retinanet-r34-rsna1k", "--images", "png", "--all"]
        let refused = try CLI.run(model + ["--labels", "six.csv", "-o", "ev-original"], in: dir)
        XCTAssertNotEqual(refused.status, 0, refused.all)
        XCTAssertTrue(refused.all.contains("are the labels in another resolution?"), refused.all)
        let taken = try CLI.run(model + ["--labels", "png/labels.csv", "-o", "ev-scaled"], in: dir)
        XCTAssertEqual(taken.status, 0, taken.all)
    }

    /// The input labels as output, a single-file input and --labels-output alone are refused
    /// before anything is converted; a bad value names its file, line and column and converts
    /// nothing.
    func testRefusals() throws {
        let (dir, _, _, ids) = try sixFilms("convlabels-refuse")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        XCTAssertEqual(try CLI.run(["convert", "dcm", "-o", "png", "--size", "512", "--labels", "six.csv", "-q"], in: dir).status, 0)
        let cases: [([String], String)] = [
            (
                ["convert", "dcm", "-o", "png2", "--labels", "six.csv", "--labels-output", "six.csv"],
                "is the --labels file six.csv; inputs are never overwritten"
            ),
            (["convert", "dcm/\(ids[0]).dcm", "-o", "one.png", "--labels", "six.csv"], "--labels needs a folder of DICOM files as the input"),
            (["convert", "dcm", "-o", "png2", "--labels-output", "x.csv"], "--labels-output needs --labels"),
        ]
        for (args, message) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): expected '\(message)' in \(r.all)")
        }
        XCTAssertFalse(fm.fileExists(atPath: dir.appendingPathComponent("png2").path))
        XCTAssertFalse(fm.fileExists(atPath: dir.appendingPathComponent("one.png").path))
        // --overwrite replaces it
        XCTAssertEqual(try CLI.run(["convert", "dcm", "-o", "png", "--size", "512", "--labels", "six.csv", "--overwrite", "-q"], in: dir).status, 0)

        try "patientId,x,y,width,height,Target\n\(ids[0]),1,2,3,4,1\n\(ids[0]),1,two,3,4,1\n".write(
            to: dir.appendingPathComponent("bad.csv"), atomically: true, encoding: .utf8)
        let bad = try CLI.run(["convert", "dcm", "-o", "png3", "--size", "512", "--labels", "bad.csv"], in: dir)
        XCTAssertEqual(bad.status, 1, bad.all)
        XCTAssertTrue(bad.stderr.contains("bad.csv' line 3, column 'y': 'two' is not valid; expected a number"), bad.all)
        XCTAssertFalse(fm.fileExists(atPath: dir.appendingPathComponent("png3").path), "converted before the labels were checked")
        let missing = try CLI.run(["convert", "dcm", "-o", "png3", "--labels", "nothere.csv"], in: dir)
        XCTAssertEqual(missing.status, 1, missing.all)
        XCTAssertTrue(missing.stderr.contains("nothere.csv"), missing.all)
    }

    /// The same command run again succeeds: its labels output holds what it would write, byte
    /// for byte, and is left as it is, with a note. Other labels into that file are refused,
    /// the file kept, with advice that works: another --labels-output (the PNGs are kept, so
    /// nothing is converted again), or --overwrite, which also converts the PNGs again
    /// (new-user trial: the rerun stopped, and "add --overwrite" did not say so).
    func testARerunKeepsIdenticalLabelsAndRefusesOthers() throws {
        let (dir, header, rows, _) = try sixFilms("convlabels-rerun")
        defer { try? FileManager.default.removeItem(at: dir) }
        let command = ["convert", "dcm", "-o", "png", "--size", "512", "--labels", "six.csv"]
        XCTAssertEqual(try CLI.run(command + ["-q"], in: dir).status, 0)
        let labels = dir.appendingPathComponent("png/labels.csv")
        let first = try Data(contentsOf: labels)
        let again = try CLI.run(command, in: dir)
        XCTAssertEqual(again.status, 0, again.all)
        XCTAssertTrue(again.stdout.contains("0 converted, 6 skipped (output exists), 0 failed\n"), again.all)
        XCTAssertTrue(again.stdout.contains("labels: \(labels.path) already holds these \(rows.count) rows, byte for byte; left as it is"), again.all)
        XCTAssertFalse(again.stdout.contains("rows written to"), again.all)
        XCTAssertEqual(try Data(contentsOf: labels), first)

        // labels that differ (one row fewer) are refused, naming the file, which is kept
        try ([header] + rows.dropLast()).joined(separator: "\n").write(to: dir.appendingPathComponent("fewer.csv"), atomically: true, encoding: .utf8)
        let other = try CLI.run(["convert", "dcm", "-o", "png", "--size", "512", "--labels", "fewer.csv"], in: dir)
        XCTAssertEqual(other.status, 64, other.all)
        XCTAssertTrue(
            other.stderr.contains(
                "--labels-output png/labels.csv exists and differs from the \(rows.count - 1) rows scaled now; it is kept. "
                    + "Name another file with --labels-output (the PNGs written now are kept, so that rerun converts nothing again), "
                    + "delete png/labels.csv, or add --overwrite to replace it (--overwrite also converts again every PNG that exists)"),
            other.all)
        XCTAssertEqual(try Data(contentsOf: labels), first)
        // the advice works: another --labels-output converts nothing again
        let elsewhere = try CLI.run(["convert", "dcm", "-o", "png", "--size", "512", "--labels", "fewer.csv", "--labels-output", "fewer-512.csv"], in: dir)
        XCTAssertEqual(elsewhere.status, 0, elsewhere.all)
        XCTAssertTrue(elsewhere.stdout.contains("0 converted, 6 skipped (output exists), 0 failed\n"), elsewhere.all)
        XCTAssertTrue(elsewhere.stdout.contains("labels: \(rows.count - 1) rows written to \(dir.appendingPathComponent("fewer-512.csv").path)"), elsewhere.all)
    }

    /// Rows of films that are not in the folder or fail to convert are left out, counted and
    /// named; the failed film makes the exit status 1, the absent ones alone do not; a film kept from an earlier conversion at 256 px gets its
    /// rows scaled to that PNG; labels read from a pipe give the same file.
    func testLeftOutRowsKeptImagesAndAPipe() throws {
        let (dir, header, original, ids) = try sixFilms("convlabels-rows")
        defer { try? FileManager.default.removeItem(at: dir) }
        // two films with boxes that are not in dcm/, and one that does not convert
        let lines = try String(contentsOf: rsna1k.appendingPathComponent("stage_2_train_labels.csv"), encoding: .utf8).split(separator: "\n")
        var absent: [String] = []
        for l in lines.dropFirst() where l.hasSuffix(",1") && absent.count < 2 {
            let id = String(l.prefix { $0 != "," })
            if !ids.contains(id) && !absent.contains(where: { $0.hasPrefix(id + ",") }) { absent.append(String(l)) }
        }
        try Data("not a DICOM file".utf8).write(to: dir.appendingPathComponent("dcm/broken.dcm"))
        try ([header] + original + absent + ["broken,,,,,0"]).joined(separator: "\n")
            .write(to: dir.appendingPathComponent("more.csv"), atomically: true, encoding: .utf8)
        // one film converted earlier at 256 px
        let kept = ids[0]
        XCTAssertEqual(try CLI.run(["convert", "dcm/\(kept).dcm", "-o", "png", "--size", "256", "-q"], in: dir).status, 0)

        let r = try CLI.run(["convert", "dcm", "-o", "png", "--size", "512", "--labels", "more.csv", "--labels-output", "scaled.csv"], in: dir)
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.stdout.contains("5 converted, 1 skipped (output exists), 1 failed"), r.all)
        XCTAssertTrue(r.stdout.contains("labels: \(original.count) rows written to \(dir.appendingPathComponent("scaled.csv").path) (boxes times 0.25 to 0.5, per image"), r.all)
        XCTAssertTrue(
            r.stderr.contains(
                "3 label rows (3 images) of more.csv not written to \(dir.appendingPathComponent("scaled.csv").path), as their images were not converted from dcm:"),
            r.all)
        let absentID = String(absent[0].prefix { $0 != "," })
        XCTAssertTrue(r.stderr.contains("line \(original.count + 2): \(absentID): no such input was converted"), r.all)
        XCTAssertTrue(r.stderr.contains("line \(original.count + 4): broken: its conversion failed: "), r.all)
        let scaled = try rows(dir.appendingPathComponent("scaled.csv"))
        XCTAssertEqual(scaled.count - 1, original.count)
        for (a, b) in zip(original, scaled.dropFirst()) {
            let f = a.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard f[5] == "1" else { continue }
            let ratio = f[0] == kept ? 4.0 : 2.0
            for k in 1...4 { XCTAssertEqual(try XCTUnwrap(Double(b[k])), try XCTUnwrap(Double(f[k])) / ratio, accuracy: 1e-9, "\(a) -> \(b)") }
        }

        // the same labels from a pipe: the same file
        let text = try Data(contentsOf: dir.appendingPathComponent("more.csv"))
        let piped = try CLI.run(
            ["convert", "dcm", "-o", "png", "--size", "512", "--labels", "/dev/stdin", "--labels-output", "piped.csv", "-q"], in: dir, stdin: text)
        XCTAssertEqual(piped.status, 1, piped.all)
        XCTAssertTrue(piped.stderr.contains("3 label rows (3 images) of /dev/stdin not written"), piped.all)
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("piped.csv")), try Data(contentsOf: dir.appendingPathComponent("scaled.csv")))

        // without the broken film, only rows of absent films are left out: listed, exit 0
        try FileManager.default.removeItem(at: dir.appendingPathComponent("dcm/broken.dcm"))
        let subset = try CLI.run(["convert", "dcm", "-o", "png4", "--size", "512", "--labels", "more.csv", "--labels-output", "subset.csv"], in: dir)
        XCTAssertEqual(subset.status, 0, subset.all)
        XCTAssertTrue(subset.stderr.contains("3 label rows (3 images) of more.csv not written to \(dir.appendingPathComponent("subset.csv").path)"), subset.all)
        XCTAssertTrue(subset.stderr.contains("line \(original.count + 4): broken: no such input was converted"), subset.all)
    }
}
