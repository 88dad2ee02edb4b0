import Foundation
import XCTest

/// `POST /v1/detect?threshold=2` answered "must be a number in 0...1 (e.g. 0.2)" without the
/// nearest valid value the command line's `--threshold 2` gives: every numeric query
/// parameter out of range now says it in the command line's one wording.
final class ServeQueryRangeTests: XCTestCase {
    func testANumericQueryParameterOutOfRangeGivesTheNearestValidValue() throws {
        let server = try RunningServer { _ in }
        defer { XCTAssertNil(server.stop()) }
        let dcm = try Data(contentsOf: ServeFixtures.otherDICOM)
        let cases: [(String, String)] = [
            ("threshold=2", "query parameter threshold 2 is not valid; expected a number in [0, 1] (nearest valid: 1)"),
            ("threshold=-0.5", "query parameter threshold -0.5 is not valid; expected a number in [0, 1] (nearest valid: 0)"),
            ("frame=0", "query parameter frame 0 is not valid; expected a frame number of at least 1 (nearest valid: 1)"),
            ("threshold=abc", "query parameter threshold must be a number in [0, 1] (e.g. 0.2), not 'abc'"),
        ]
        for (query, message) in cases {
            let a = try HTTP.request(port: server.port, "POST", "/v1/detect?\(query)", headers: ["Content-Type": "application/dicom"], body: dcm)
            XCTAssertEqual(a.status, 400, a.text)
            XCTAssertEqual(a.object["error"] as? String, message, a.text)
        }
    }
}
