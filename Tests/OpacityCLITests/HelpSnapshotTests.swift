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
        [], ["report"], ["blas"], ["conv"], ["grouped"], ["tails"], ["resnet50"], ["detector"], ["detect"], ["loader"], ["bundle"], ["onnx"], ["allreduce"], ["scaling"],
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

    /// Help text wraps cleanly at 80 and 100 columns (new-user trial): no line break inside
    /// a quoted argument (a config string), every indented command line (the examples) fits
    /// whole (long ones continue with a backslash, as in a shell), and no prose line ends
    /// where the next line's first word would still have fitted (a hard break in the source).
    func testHelpWrapsCleanly() throws {
        for width in [80, 100] {
            for path in Self.commands {
                let r = try CLI.run(path + ["--help"], environment: ["COLUMNS": "\(width)"])
                XCTAssertEqual(r.status, 0, r.all)
                let name = (["opacity"] + path).joined(separator: " ")
                // the overview and discussion: everything before USAGE
                let text = r.stdout.components(separatedBy: "\nUSAGE:").first ?? ""
                for paragraph in text.components(separatedBy: "\n\n") {
                    let lines = paragraph.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
                    var command = ""  // an indented command line, with its backslash continuations
                    for (i, line) in lines.enumerated() {
                        XCTAssertLessThan(line.count, width, "\(name) at \(width) columns: \(line)")
                        if line.hasPrefix("  ") {
                            command += line
                            if line.hasSuffix("\\") { continue }
                            XCTAssertEqual(command.filter { $0 == "\"" }.count % 2, 0, "\(name) at \(width) columns breaks inside a quoted argument: \(command)")
                            command = ""
                            // a command line (examples end their paragraph) is not wrapped onto an unindented line
                            if i + 1 < lines.count {
                                XCTAssertTrue(lines[i + 1].hasPrefix("  "), "\(name) at \(width) columns: a command wraps: \(line) / \(lines[i + 1])")
                            }
                        }
                    }
                    XCTAssertEqual(command, "", "\(name): a continued command line without its end")
                    for (a, b) in zip(lines, lines.dropFirst()) where !a.hasPrefix(" ") && !b.hasPrefix(" ") && !b.hasPrefix("- ") {
                        // the parser fills a line to at most width - 1 characters
                        let next = b.split(separator: " ").first.map(String.init) ?? ""
                        XCTAssertGreaterThanOrEqual(a.count + 1 + next.count, width, "\(name) at \(width) columns: a stray line break after: \(a)")
                    }
                }
            }
        }
    }
}
