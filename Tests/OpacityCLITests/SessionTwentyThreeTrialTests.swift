import Foundation
import XCTest

/// What a twenty-third new-user trial met.
final class SessionTwentyThreeTrialTests: XCTestCase {
    /// `detect`, `convert` and `preview` take their inputs as arguments; a user who learnt
    /// `--data` from `train`, `folds` and `eval` typed `opacity detect --data scans` and was
    /// asked "Did you mean '--tta'?" (preview: '--aug', convert: '--depth'), the parser's
    /// nearest spelling, which names nothing like an input. The error now gives the command
    /// line meant.
    func testAnInputOptionOfACommandThatTakesItsInputsAsArgumentsGetsTheLineMeant() throws {
        let cases: [([String], String)] = [
            (["detect", "--data", "scans"], "`opacity detect scans`"),
            (["detect", "--images", "scans", "-o", "found"], "`opacity detect scans -o found`"),
            (["preview", "--data", "rsna", "-o", "p.png"], "`opacity preview rsna -o p.png`"),
            (["convert", "--data", "dcm", "-o", "png"], "`opacity convert dcm -o png`"),
        ]
        for (arguments, meant) in cases {
            let r = try CLI.run(arguments)
            XCTAssertEqual(r.status, 64, "\(arguments): \(r.all)")
            let first = r.stderr.split(separator: "\n").first.map(String.init) ?? ""
            XCTAssertTrue(first.hasPrefix("Error: Unknown option '\(arguments[1])'"), "\(arguments): \(r.stderr)")
            XCTAssertTrue(first.contains("`opacity \(arguments[0])` takes its inputs as arguments"), "\(arguments): \(r.stderr)")
            XCTAssertTrue(first.contains("did you mean \(meant)?"), "\(arguments): \(r.stderr)")
            XCTAssertFalse(first.contains("Did you mean '--"), "\(arguments): \(r.stderr)")
        }
    }
}
