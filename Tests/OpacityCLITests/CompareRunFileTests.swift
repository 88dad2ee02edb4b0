import Foundation
import XCTest

/// What a new-user trial met: `compare run1/log.jsonl` (a file of a run folder) was told
/// "not a run folder (no log.jsonl or options.json)" with exit status 1, while `--model` and
/// `zoo add` given a run's file name the run folder to pass, and `compare` of a folder that
/// does not exist is a usage error (64).
final class CompareRunFileTests: XCTestCase {
    func testAFileOfARunFolderNamesTheRunFolder() throws {
        let dir = try CLI.tempDir("compare-run-file")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        try fm.createDirectory(at: dir.appendingPathComponent("run1/checkpoints"), withIntermediateDirectories: true)
        try Data("{}\n".utf8).write(to: dir.appendingPathComponent("run1/options.json"))
        try Data("{\"epoch\":1}\n".utf8).write(to: dir.appendingPathComponent("run1/log.jsonl"))
        try Data("x".utf8).write(to: dir.appendingPathComponent("run1/checkpoints/epoch_001.opb"))
        try Data("x".utf8).write(to: dir.appendingPathComponent("notes.txt"))
        let cases: [([String], String)] = [
            (["compare", "run1/log.jsonl", "-o", "cmp"], "compare run1/log.jsonl: a file of the run folder run1, not a run folder; pass the run folder run1"),
            (
                ["compare", "run1/checkpoints/epoch_001.opb", "-o", "cmp"],
                "compare run1/checkpoints/epoch_001.opb: a file of the run folder run1, not a run folder; pass the run folder run1"
            ),
            (["compare", "notes.txt", "-o", "cmp"], "compare notes.txt: a file, not a run folder; expected a run folder (with log.jsonl)"),
        ]
        for (args, expected) in cases {
            let r = try CLI.run(args, in: dir)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.contains(expected), "\(args): \(r.stderr)")
        }
        XCTAssertFalse(fm.fileExists(atPath: dir.appendingPathComponent("cmp").path))
    }
}
