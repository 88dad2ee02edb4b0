import Foundation
import Opacity
import OpacityServe
import XCTest

/// `opacity serve` takes the model options `opacity detect` takes (ensembles by WBF with its
/// thresholds and weights, test-time augmentation) and gives the same reports.
final class ServeEnsembleTests: XCTestCase {
    /// The same ensemble (two models fused by WBF with non-default settings and weights, flip
    /// and scale TTA) through `opacity serve` and `opacity detect`: equal reports for each
    /// image sent alone; sent together (one batch of two) equal to float rounding (a batched
    /// forward pass sums in another order); the report and /v1/models say how the boxes were made.
    func testWBFEnsembleWithTTAEqualsDetect() throws {
        let model = ServeFixtures.zooModel
        let options = ["--model", model, "--model", model, "--ensemble", "wbf", "--wbf-iou", "0.5", "--wbf-skip", "0.01",
                       "--wbf-conf", "max", "--model-weights", "2:1", "--tta", "flip,scale=1.25", "--threads", "2"]
        let files = [ServeFixtures.positiveDICOM, ServeFixtures.otherDICOM]
        let server = try ServeProcess(options + ["--max-batch", "4", "--threshold", "0.01"])
        defer { server.stop() }
        var alone: [DetectionReport] = []
        for f in files {
            let a = try HTTP.request(port: server.port, "POST", "/v1/detect", headers: ["Content-Type": "application/dicom"],
                                     body: try Data(contentsOf: f), timeout: 120)
            XCTAssertEqual(a.status, 200, a.text)
            alone += try JSONDecoder().decode([DetectionReport].self, from: a.body)
        }
        let (body, type) = HTTP.multipart(zip(["a.dcm", "b.dcm"], files).map { ($0, "application/dicom", try! Data(contentsOf: $1)) })
        let b = try HTTP.request(port: server.port, "POST", "/v1/detect", headers: ["Content-Type": type], body: body, timeout: 120)
        XCTAssertEqual(b.status, 200, b.text)
        let batched = try JSONDecoder().decode([DetectionReport].self, from: b.body)
        XCTAssertEqual(alone.count, 2)
        XCTAssertEqual(batched.count, 2)
        XCTAssertEqual(alone.first?.ensemble, "WBF iou 0.50 skip 0.01 conf max, weights 2:1")
        XCTAssertEqual(alone.first?.tta, "flip,scale=1.25 (WBF)")
        XCTAssertFalse(alone[0].boxes.isEmpty, "the positive image should give boxes at threshold 0.01")
        let m = try HTTP.request(port: server.port, "GET", "/v1/models")
        XCTAssertEqual(m.object["ensemble"] as? String, alone.first?.ensemble)
        XCTAssertEqual(m.object["tta"] as? String, alone.first?.tta)
        XCTAssertEqual((m.object["models"] as? [Any])?.count, 2)
        XCTAssertEqual(server.stop(), 0)

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-serve-ens-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = Process()
        p.executableURL = ServeFixtures.executable
        p.arguments = ["detect"] + files.map(\.path) + ["--threshold", "0.01", "-o", dir.path, "--no-overlays", "-q"] + options
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        let cli = try JSONDecoder().decode([DetectionReport].self, from: Data(contentsOf: dir.appendingPathComponent("detections.json")))
        XCTAssertEqual(cli.count, 2)
        for i in cli.indices where i < alone.count && i < batched.count {
            var c = cli[i], s = alone[i]
            c.file = s.file
            c.seconds = 0
            s.seconds = 0
            XCTAssertEqual(c, s, "opacity detect and opacity serve disagree on the WBF + TTA ensemble")
            let t = batched[i]
            XCTAssertEqual(t.boxes.count, c.boxes.count)
            for (x, y) in zip(t.boxes, c.boxes) {
                for (u, v) in [(x.score, y.score), (x.x, y.x), (x.y, y.y), (x.width, y.width), (x.height, y.height)] {
                    XCTAssertEqual(u, v, accuracy: 1e-4 * max(1, abs(v)), "batched \(t.file)")
                }
            }
            XCTAssertEqual(t.globalProbabilities?.lungOpacity ?? -1, c.globalProbabilities?.lungOpacity ?? -2, accuracy: 1e-5)
        }
    }
}

/// `opacity serve` as a process on an ephemeral loopback port.
final class ServeProcess {
    let process = Process()
    private(set) var port = 0
    private(set) var log = ""
    private var reader: FileHandle?

    /// Starts `opacity serve --port 0 ARGS` and waits until `/readyz` says ready.
    init(_ arguments: [String]) throws {
        process.executableURL = ServeFixtures.executable
        process.arguments = ["serve", "--port", "0"] + arguments
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let reader = err.fileHandleForReading
        self.reader = reader
        let t0 = Date()
        while port == 0 {
            let chunk = reader.availableData
            guard !chunk.isEmpty else { throw RawHTTPError("opacity serve ended before listening: \(log)") }
            log += String(decoding: chunk, as: UTF8.self)
            if let r = log.range(of: #"listening on http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(log[r].split(separator: ":").last ?? "") ?? 0
            }
            guard Date().timeIntervalSince(t0) < 120 else { throw RawHTTPError("opacity serve did not listen in 120 s: \(log)") }
        }
        while (try? HTTP.request(port: port, "GET", "/readyz").status) != 200 {
            guard process.isRunning, Date().timeIntervalSince(t0) < 300 else { throw RawHTTPError("opacity serve not ready: \(log)") }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// Reads standard error on until `text` is in ``log`` (what the server says as it loads
    /// comes after it listens); false when the server ends first (killed after `timeout` s).
    func waitForLog(_ text: String, timeout: TimeInterval = 30) -> Bool {
        let pid = process.processIdentifier
        let killer = DispatchWorkItem { kill(pid, SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
        defer { killer.cancel() }
        while !log.contains(text), let chunk = reader?.availableData, !chunk.isEmpty {
            log += String(decoding: chunk, as: UTF8.self)
        }
        return log.contains(text)
    }

    /// SIGTERM, then the exit status.
    @discardableResult
    func stop() -> Int32 {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        process.waitUntilExit()
        return process.terminationStatus
    }
}
