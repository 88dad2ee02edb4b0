import Foundation
import XCTest

/// Every command's `--help` (of `opacity` and of `opacity-bench`) against the committed text
/// in Tests/OpacityCLITests/Help/: a changed option, default or wording shows up in review as
/// a changed file.
///
/// After an intended change, rewrite the texts with
/// `OPACITY_UPDATE_HELP=1 swift test -c release --filter HelpSnapshotTests` and commit them.
final class HelpSnapshotTests: XCTestCase {
    /// Every command path, as typed after `opacity`.
    static let commands: [[String]] = [
        [], ["demo"], ["synth"], ["train"], ["eval"], ["detect"], ["serve"], ["submit"], ["score"], ["compare"],
        ["folds"], ["convert"], ["preview"], ["plugins"], ["zoo"], ["zoo", "list"], ["zoo", "info"], ["zoo", "fetch"],
        ["zoo", "verify"], ["zoo", "add"], ["import"], ["export"],
    ]

    /// Every `opacity-bench` command path: the report and one subcommand per section.
    static let benchCommands: [[String]] = [
        [], ["report"], ["blas"], ["conv"], ["grouped"], ["resnet50"], ["detector"], ["loader"], ["bundle"], ["onnx"], ["allreduce"], ["scaling"],
    ]

    static var folder: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Help")
    }

    func testEveryCommandIsSnapshotted() throws {
        // The top-level help lists the subcommands; each must have a snapshot.
        for (program, commands) in [("opacity", Self.commands), ("opacity-bench", Self.benchCommands)] {
            let r = try CLI.run(["--help"], environment: ["COLUMNS": "100"], program: program)
            let block = r.stdout.components(separatedBy: "SUBCOMMANDS:").last?.components(separatedBy: "\n\n").first ?? ""
            let listed = block.split(separator: "\n")
                .compactMap { line -> String? in
                    guard line.hasPrefix("  "), !line.hasPrefix("   ") else { return nil }
                    return line.split(separator: " ").first.map(String.init)
                }
            XCTAssertFalse(listed.isEmpty, r.all)
            for name in listed { XCTAssertTrue(commands.contains([name]), "\(program) \(name) has no help snapshot") }
        }
    }

    func testHelpMatchesTheCommittedTexts() throws {
        let update = ProcessInfo.processInfo.environment["OPACITY_UPDATE_HELP"] == "1"
        let all = Self.commands.map { ("opacity", $0) } + Self.benchCommands.map { ("opacity-bench", $0) }
        for (program, path) in all {
            let r = try CLI.run(path + ["--help"], environment: ["COLUMNS": "100"], program: program)
            XCTAssertEqual(r.status, 0, r.all)
            let file = Self.folder.appendingPathComponent(([program] + path).joined(separator: "-") + ".txt")
            if update {
                try FileManager.default.createDirectory(at: Self.folder, withIntermediateDirectories: true)
                try Data(r.stdout.utf8).write(to: file, options: .atomic)
                continue
            }
            guard let expected = try? String(contentsOf: file, encoding: .utf8) else {
                XCTFail("no snapshot \(file.path); run with OPACITY_UPDATE_HELP=1 and commit it")
                continue
            }
            XCTAssertEqual(
                r.stdout, expected,
                "`\(([program] + path).joined(separator: " ")) --help` changed; if intended, run with OPACITY_UPDATE_HELP=1 and commit \(file.lastPathComponent)")
        }
    }
}
