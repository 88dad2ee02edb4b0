import Foundation
import XCTest

/// What a new-user trial met: `train --clip 0` was answered "--clip 0.0 is not valid; expected
/// a number in (0, 1e6]": the value not as typed, and no valid value to try, where `--lr` and
/// `--factor` give the usual one.
final class TrainNumberWordingTests: XCTestCase {
    func testOutOfRangeNumbersAreSaidAsTypedWithAValueToTry() throws {
        let cases: [([String], String)] = [
            (["--clip", "0"], "Error: --clip 0 is not valid; expected a number in (0, 1e6], e.g. 0.05 (the paper's)"),
            (["--clip", "-1"], "Error: --clip -1 is not valid; expected a number in (0, 1e6], e.g. 0.05 (the paper's)"),
            (["--clip", "2000000"], "Error: --clip 2000000 is not valid; expected a number in (0, 1e6] (nearest valid: 1e6)"),
            (["--factor", "0"], "Error: --factor 0 is not valid; expected a number in (0, 1), e.g. 0.2"),
            (["--factor", "1"], "Error: --factor 1 is not valid; expected a number in (0, 1), e.g. 0.2"),
        ]
        for (extra, expected) in cases {
            let r = try CLI.run(["train", "--data", "data", "-o", "run"] + extra)
            XCTAssertEqual(r.status, 64, "\(extra): \(r.all)")
            XCTAssertTrue(r.stderr.hasPrefix(expected), "\(extra): \(r.stderr)")
        }
    }
}
