import Foundation
import Opacity
import OpacityServe
import XCTest

/// `opacity serve` on a bundle whose operating point was picked where the validation metric
/// was 0 at every threshold (a run of an epoch or two stores 0.01): as detect and submit, it
/// passes the point over, says so once as it loads, and a detect request that gives no
/// threshold uses the default 0.2; in an ensemble, the next model's operating point.
final class ServeOperatingPointTests: XCTestCase {
    static let zeroPoint = OperatingPoint(threshold: 0.01, metric: 0, data: "validation", images: 4)

    /// A folder with `zero.opb` (the zoo model with a zero-metric operating point).
    func folder(_ name: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-serve-\(name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try OperatingPoint.write(Self.zeroPoint, from: try Zoo.standard().verifiedFile(ServeFixtures.zooModel), to: dir.appendingPathComponent("zero.opb"))
        return dir
    }

    /// The reports of one DICOM sent to /v1/detect without a threshold.
    func detect(_ server: ServeProcess) throws -> [DetectionReport] {
        let r = try HTTP.request(
            port: server.port, "POST", "/v1/detect", headers: ["Content-Type": "application/dicom"],
            body: try Data(contentsOf: ServeFixtures.positiveDICOM), timeout: 120)
        XCTAssertEqual(r.status, 200, r.text)
        return try JSONDecoder().decode([DetectionReport].self, from: r.body)
    }

    func testZeroMetricOperatingPointServesAtTheDefault() throws {
        let dir = try folder("zero-point")
        defer { try? FileManager.default.removeItem(at: dir) }
        let zero = dir.appendingPathComponent("zero.opb")
        XCTAssertEqual(OperatingPoint.read(zero)?.pickedAtZeroMetric, true)
        let server = try ServeProcess(["--model", zero.path, "--threads", "2"])
        defer { server.stop() }
        let why = "note: the model's operating point was picked where its validation metric was 0 at every threshold; "
        XCTAssertTrue(server.waitForLog(why + "using the default 0.20 (it stores 0.01, the lowest threshold swept"), server.log)
        let reports = try detect(server)
        XCTAssertEqual(reports.count, 1)
        XCTAssertEqual(reports.first?.threshold, 0.2)
        XCTAssertTrue(reports.first?.boxes.allSatisfy { $0.score >= 0.2 } ?? false, "\(reports)")
        let m = try HTTP.request(port: server.port, "GET", "/v1/models")
        XCTAssertEqual((m.object["threshold"] as? NSNumber)?.floatValue, 0.2, m.text)
        XCTAssertEqual(server.stop(), 0)
        XCTAssertEqual(server.log.components(separatedBy: why).count, 2, server.log)
    }

    /// An ensemble whose first model stores a zero-metric point: the next model's operating
    /// point, with the note detect and submit give.
    func testEnsembleUsesTheNextModelsOperatingPointAndSaysSo() throws {
        let dir = try folder("zero-ensemble")
        defer { try? FileManager.default.removeItem(at: dir) }
        let good = dir.appendingPathComponent("good.opb")
        try FileManager.default.copyItem(at: try Zoo.standard().verifiedFile("retinanet-r34-rsna1k"), to: good)
        let used = try XCTUnwrap(OperatingPoint.usable(good)?.threshold)
        let server = try ServeProcess(["--model", dir.appendingPathComponent("zero.opb").path, "--model", good.path, "--threads", "2"])
        defer { server.stop() }
        let note =
            "note: the operating point of zero.opb (the ensemble's first model that stores one) was picked where its validation metric was 0 at every threshold; "
            + String(format: "using the operating point of good.opb, %.2f, instead (it stores 0.01", used)
        XCTAssertTrue(server.waitForLog(note), server.log)
        XCTAssertEqual(try detect(server).first?.threshold, used)
        XCTAssertEqual(server.stop(), 0)
    }
}
