import Foundation
import XCTest

/// What a new-user trial met in `serve`: its option values out of range were refused without
/// the `Usage:` line every other command's usage errors carry, and `--help` showed `--host`'s
/// default twice.
final class LeftoverServeUsageTests: XCTestCase {
    func testOptionErrorsCarryTheUsageLine() throws {
        for args in [["--max-batch", "0"], ["--threshold", "2"], ["--port", "70000"], ["--timeout", "0"], ["--max-body", "1"]] {
            let r = try CLI.run(["serve"] + args, timeout: 120)
            XCTAssertEqual(r.status, 64, "\(args): \(r.all)")
            XCTAssertTrue(r.stderr.hasPrefix("Error: \(args[0]) \(args[1]) is not valid; expected "), "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("\nUsage: opacity serve "), "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("See 'opacity serve --help' for more information."), "\(args): \(r.stderr)")
        }
    }

    func testHostDefaultIsShownOnce() throws {
        let r = try CLI.run(["serve", "--help"], environment: ["COLUMNS": "1000"])
        XCTAssertEqual(r.status, 0, r.all)
        let line = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.contains("--host <host>") }, r.stdout)
        XCTAssertEqual(line.components(separatedBy: "127.0.0.1").count, 2, String(line))
        XCTAssertEqual(line.components(separatedBy: "default").count, 2, String(line))
        XCTAssertTrue(line.hasSuffix("(default: 127.0.0.1)"), String(line))
    }
}
