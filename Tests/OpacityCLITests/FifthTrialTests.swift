import Foundation
import XCTest

/// What a fifth new-user trial met: a misspelt command with `--help` showed the root's help and
/// exited 0, and a misspelt input of `submit --images`, `convert` or `score` was said not to
/// exist without the nearest entry beside it, which `--data`, `--labels` and `--images` of the
/// other commands name; `zoo add` given a run's log.jsonl did not say to pass the run, as
/// `--model` does.
final class FifthTrialTests: XCTestCase {
    /// `opacity detet --help` (and `opacity zoo lst -h`) is the same usage error as the line
    /// without the help flag: the word, the nearest command, the list; exit status 64. A real
    /// command's help is still shown.
    func testAMisspelledCommandWithHelpIsRefusedNotAnswered() throws {
        let cases: [([String], String)] = [
            (["detet", "--help"], "Error: 'detet' is not a command of `opacity`; did you mean `opacity detect`? The commands: demo, synth, train,"),
            (["ensemble", "-h"], "Error: 'ensemble' is not a command of `opacity`. The commands: demo,"),
            (["zoo", "lst", "--help"], "Error: 'lst' is not a command of `opacity zoo`; did you mean `opacity zoo list`? The commands: list, info, fetch, verify, add"),
        ]
        for (args, expected) in cases {
            let r = try CLI.run(args)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.hasPrefix(expected), "\(args): \(r.stderr)")
            XCTAssertFalse(r.stdout.contains("OVERVIEW"), "\(args): \(r.stdout)")
        }
        for args in [["detect", "--help"], ["zoo", "list", "-h"], ["--help"], ["help", "detect"]] {
            let r = try CLI.run(args)
            XCTAssertEqual(r.status, 0, "\(args): \(r.all)")
            XCTAssertTrue(r.stdout.contains("USAGE: opacity"), "\(args): \(r.stdout)")
        }
    }
}
