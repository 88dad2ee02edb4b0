import Foundation
import Opacity
import XCTest

/// What a new-user trial met: `train --init-weights` asks for `zoo:NAME`, but `--model
/// zoo:NAME` was refused by every other command ("invalid zoo name 'zoo:...': it contains
/// ':'"). `zoo:NAME` is the zoo's entry wherever `--model` takes a zoo name, even where a file
/// or folder NAME exists; a NAME the zoo lacks is a usage error with the nearest zoo names.
final class LeftoverZooPrefixTests: XCTestCase {
    let entry = "retinanet-r34-composite"

    func testZooPrefixNamesTheZooEntry() throws {
        let dir = try CLI.tempDir("zoo-prefix")
        defer { try? FileManager.default.removeItem(at: dir) }
        var r = try CLI.run(["synth", "-o", "s", "--count", "2", "--size", "64", "--seed", "3", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        let image = try XCTUnwrap(try ImageFile.list(in: dir.appendingPathComponent("s/stage_2_train_images")).first).path
        // a folder of the entry's name here: the plain name means the folder, zoo:NAME the zoo's entry
        try FileManager.default.createDirectory(at: dir.appendingPathComponent(entry), withIntermediateDirectories: true)
        r = try CLI.run(["detect", image, "--model", "zoo:\(entry)", "-o", "d", "--no-overlays", "-q"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.stderr.contains("model: \(try CLI.zoo().verifiedFile(entry).path) "), r.all)
        r = try CLI.run(["export", "--model", "zoo:\(entry)", "-o", "x.opb"], in: dir)
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("x.opb").path), r.all)
        // a name the zoo lacks: the nearest zoo name, never the local folder
        for args in [
            ["detect", image, "--model", "zoo:retinanet-r34-compsite", "-o", "d2"],
            ["eval", "--data", "s", "--model", "zoo:retinanet-r34-compsite", "-o", "e"],
            ["serve", "--model", "zoo:retinanet-r34-compsite", "--port", "0"],
            ["export", "--model", "zoo:retinanet-r34-compsite", "-o", "y.opb"],
        ] {
            r = try CLI.run(args, in: dir, timeout: 120)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(
                r.stderr.contains(
                    "Error: --model zoo:retinanet-r34-compsite: no zoo entry named 'retinanet-r34-compsite'; did you mean 'retinanet-r34-composite'?"),
                "\(args): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("contains ':'"), "\(args): \(r.stderr)")
        }
    }
}
