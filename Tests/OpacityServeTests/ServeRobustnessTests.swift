import Foundation
import Opacity
import OpacityServe
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Auth, queue limits, timeouts, hostile clients and graceful shutdown, against real servers.
final class ServeRobustnessTests: XCTestCase {
    /// zoo-hash-check-toctou for files: the SHA-256 a report gives is that of the bytes
    /// the model was built from (one read), not of whatever the path holds later.
    func testReportedDigestIsOfTheBytesLoaded() throws {
        let registry = try Registry.standard()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-digest-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = "retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=8), head=retina(channels=8), size=64)"
        let a = dir.appendingPathComponent("model.opb"), b = dir.appendingPathComponent("other.opb")
        try Initializer.withSeed(1) { try registry.makeDetector(config) }.save(to: a)
        try Initializer.withSeed(2) { try registry.makeDetector(config) }.save(to: b)
        let digest = { (u: URL) in SHA256.hash([UInt8](try Data(contentsOf: u))).hex }
        let shaA = try digest(a), shaB = try digest(b)
        XCTAssertNotEqual(shaA, shaB)
        let loaded = try ModelReference.loadHashed(a.path, registry: registry)
        XCTAssertEqual(loaded.sha256, shaA)
        // the file is replaced after the load (rename, as a concurrent writer would)
        try FileManager.default.removeItem(at: a)
        try FileManager.default.copyItem(at: b, to: a)
        let engine = try DetectionEngine(predictor: try Predictor(detectors: [loaded.detector]), references: [a.path], files: [loaded.url],
                                         digests: [loaded.sha256], threshold: 0.5)
        XCTAssertEqual(engine.models.first?.sha256, shaA, "the report must describe the weights in use")
        XCTAssertEqual(try Detector.loadHashed(from: a, registry: registry).sha256, shaB)
    }

    func testBearerTokenOnEverythingButHealthz() throws {
        let s = try RunningServer { $0.token = "s3cret-token" }
        defer { XCTAssertNil(s.stop()) }
        XCTAssertEqual(try HTTP.request(port: s.port, "GET", "/healthz").status, 200)
        XCTAssertEqual(try HTTP.request(port: s.port, "GET", "/openapi.yaml").status, 200, "the API description needs no token")
        for path in ["/readyz", "/v1/models", "/metrics"] {
            let none = try HTTP.request(port: s.port, "GET", path)
            XCTAssertEqual(none.status, 401, path)
            XCTAssertEqual(none.headers["www-authenticate"], "Bearer")
            XCTAssertEqual(try HTTP.request(port: s.port, "GET", path, headers: ["Authorization": "Bearer s3cret-tokeN"]).status, 401)
            XCTAssertEqual(try HTTP.request(port: s.port, "GET", path, headers: ["Authorization": "Bearer s3cret-token2"]).status, 401)
            XCTAssertEqual(try HTTP.request(port: s.port, "GET", path, headers: ["Authorization": "s3cret-token"]).status, 401)
            XCTAssertEqual(try HTTP.request(port: s.port, "GET", path, headers: ["Authorization": "Bearer s3cret-token"]).status, 200, path)
        }
        let dcm = try Data(contentsOf: ServeFixtures.otherDICOM)
        XCTAssertEqual(try HTTP.request(port: s.port, "POST", "/v1/detect", headers: ["Content-Type": "application/dicom"], body: dcm).status, 401)
        XCTAssertEqual(try HTTP.request(port: s.port, "POST", "/v1/detect",
                                        headers: ["Content-Type": "application/dicom", "Authorization": "Bearer s3cret-token"], body: dcm).status, 200)
        XCTAssertTrue(DetectionServer.constantTimeEqual(Array("ab".utf8), Array("ab".utf8)))
        XCTAssertFalse(DetectionServer.constantTimeEqual(Array("ab".utf8), Array("abc".utf8)))
        XCTAssertFalse(DetectionServer.constantTimeEqual([], Array("a".utf8)))
    }

    func testTokenFileIsRead() throws {
        let f = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-token-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: f) }
        try Data("  abc123  \nsecond line\n".utf8).write(to: f)
        XCTAssertEqual(try ServeConfiguration.readToken(f.path), "abc123")
        try Data("\n".utf8).write(to: f)
        XCTAssertThrowsError(try ServeConfiguration.readToken(f.path)) { XCTAssertTrue("\($0)".contains("no token")) }
        XCTAssertThrowsError(try ServeConfiguration.readToken(f.path + ".missing")) { XCTAssertTrue("\($0)".contains("cannot read")) }
    }

    func testReadyzWaitsForTheModelsAndDetectSays503() throws {
        let gate = DispatchSemaphore(value: 0)
        let s = try RunningServer(waitReady: false, load: {
            gate.wait()
            return try ServeFixtures.loadEngine()
        })
        defer { XCTAssertNil(s.stop()) }
        XCTAssertEqual(try HTTP.request(port: s.port, "GET", "/healthz").status, 200)
        let r = try HTTP.request(port: s.port, "GET", "/readyz")
        XCTAssertEqual(r.status, 503)
        XCTAssertEqual(r.object["status"] as? String, "loading")
        let d = try HTTP.request(port: s.port, "POST", "/v1/detect", headers: ["Content-Type": "image/png"], body: Data([1, 2, 3]))
        XCTAssertEqual(d.status, 503)
        XCTAssertNotNil(d.headers["retry-after"])
        gate.signal()
        let t0 = Date()
        while try HTTP.request(port: s.port, "GET", "/readyz").status != 200 {
            XCTAssertLessThan(Date().timeIntervalSince(t0), 120)
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    func testAFailedModelLoadStopsTheServerWithTheError() throws {
        struct Broken: Error, CustomStringConvertible { var description: String { "no such model" } }
        let s = try RunningServer(waitReady: false, load: { throw Broken() })
        let e = s.stop()
        XCTAssertEqual("\(e.map { "\($0)" } ?? "")", "no such model")
    }

    /// A queue of one image and batches of one: concurrent requests beyond it get 503 + Retry-After.
    func testQueueFullAnswers503WithRetryAfter() throws {
        let s = try RunningServer { c in
            c.maxQueue = 1
            c.maxBatch = 1
            c.maxWaitMilliseconds = 0
        }
        defer { XCTAssertNil(s.stop()) }
        let dcm = try Data(contentsOf: ServeFixtures.positiveDICOM)
        let port = s.port
        let answers = concurrently(8) { _ in
            try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "application/dicom"], body: dcm)
        }.map { try? $0.get() }
        let statuses = answers.map { $0?.status ?? -1 }
        XCTAssertEqual(statuses.filter { $0 == 200 }.count + statuses.filter { $0 == 503 }.count, 8, "\(statuses)")
        XCTAssertGreaterThanOrEqual(statuses.filter { $0 == 200 }.count, 1, "\(statuses)")
        XCTAssertGreaterThanOrEqual(statuses.filter { $0 == 503 }.count, 1, "\(statuses)")
        for a in answers.compactMap({ $0 }) where a.status == 503 {
            XCTAssertEqual(a.headers["retry-after"], "1")
            XCTAssertTrue((a.object["error"] as? String ?? "").contains("--max-queue"), a.text)
        }
        // two images cannot fit a one-image queue at all
        let (two, type) = HTTP.multipart([("a.dcm", "application/dicom", dcm), ("b.dcm", "application/dicom", dcm)])
        XCTAssertEqual(try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": type], body: two).status, 413)
    }

    /// Batching: concurrent single-image requests share forward passes (batch-size histogram).
    func testConcurrentRequestsAreBatched() throws {
        let s = try RunningServer { c in
            c.maxBatch = 4
            c.maxWaitMilliseconds = 200
        }
        defer { XCTAssertNil(s.stop()) }
        let dcm = try Data(contentsOf: ServeFixtures.otherDICOM)
        let port = s.port
        let answers = concurrently(4) { _ in
            try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "application/dicom"], body: dcm)
        }.compactMap { try? $0.get() }
        XCTAssertEqual(answers.map(\.status), [200, 200, 200, 200])
        let reports = try answers.map { try JSONDecoder().decode([DetectionReport].self, from: $0.body)[0] }
        for r in reports { XCTAssertEqual(r.boxes, reports[0].boxes) }
        let metrics = try HTTP.request(port: port, "GET", "/metrics").text
        let count = metrics.split(separator: "\n").first { $0.hasPrefix("opacity_batch_size_images_count") }
        let passes = Int(Double(count?.split(separator: " ").last ?? "") ?? 0)
        XCTAssertGreaterThanOrEqual(passes, 1)
        XCTAssertLessThan(passes, 4, "four concurrent requests within 200 ms should share a forward pass:\n\(metrics)")
    }

    /// A body that never completes gets 408 at --timeout; a detection that cannot finish in time gets 503.
    func testTimeouts() throws {
        let s = try RunningServer { c in c.timeoutSeconds = 1.5 }
        defer { XCTAssertNil(s.stop()) }
        let slow = try RawSocket(port: s.port, timeout: 20)
        try slow.send(Data("POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n".utf8))
        try slow.send(Data(count: 100))
        let t0 = Date()
        let a = try slow.readResponse()
        XCTAssertEqual(a.status, 408, a.text)
        XCTAssertTrue((a.object["error"] as? String ?? "").contains("--timeout"), a.text)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 10)
    }

    /// Truncated bodies, slow senders and 500 idle connections: /healthz answers throughout
    /// and detection still works afterwards.
    func testHostileClientsDoNotStopHealthz() throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < 4096 {
            limit.rlim_cur = min(limit.rlim_max, 4096)
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        let s = try RunningServer { c in c.timeoutSeconds = 5 }
        defer { XCTAssertNil(s.stop()) }
        let port = s.port
        var idle: [RawSocket] = []
        for _ in 0..<500 { idle.append(try RawSocket(port: port, timeout: 10)) }
        // half of them send an incomplete request head and stop
        for (k, c) in idle.enumerated() where k % 2 == 0 { try? c.send(Data("GET /heal".utf8)) }
        func healthy() throws {
            let t0 = Date()
            let h = try HTTP.request(port: port, "GET", "/healthz", timeout: 10)
            XCTAssertEqual(h.status, 200)
            XCTAssertLessThan(Date().timeIntervalSince(t0), 5)
        }
        try healthy()
        // truncated bodies: the client promises more than it sends, then closes
        let dcm = try Data(contentsOf: ServeFixtures.otherDICOM)
        for _ in 0..<20 {
            let c = try RawSocket(port: port)
            try c.send(Data("POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/dicom\r\nContent-Length: \(dcm.count)\r\n\r\n".utf8))
            try c.send(dcm.prefix(dcm.count / 3))
        }
        try healthy()
        // slow senders: one byte every 50 ms on 10 connections, while /healthz is polled
        let slow = try (0..<10).map { _ in try RawSocket(port: port) }
        let request = Data("POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/dicom\r\nContent-Length: 64\r\n\r\n".utf8)
        for i in 0..<40 {
            for c in slow where i < request.count { try? c.send(request.subdata(in: i..<i + 1)) }
            if i % 10 == 0 { try healthy() }
            Thread.sleep(forTimeInterval: 0.05)
        }
        try healthy()
        let d = try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "application/dicom"], body: dcm)
        XCTAssertEqual(d.status, 200, d.text)
        idle.removeAll()
        try healthy()
    }

    /// `opacity serve` as a process: it says how it binds, answers, and on SIGTERM finishes
    /// the requests it has and exits 0.
    func testSIGTERMDrainsAndExitsZero() throws {
        let p = Process()
        p.executableURL = ServeFixtures.executable
        p.arguments = ["serve", "--model", ServeFixtures.zooModel, "--port", "0", "--threads", "2", "--max-batch", "1"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { p.terminate() } }
        // read stderr lines until "listening on http://127.0.0.1:PORT"
        let reader = err.fileHandleForReading
        var text = ""
        var port = 0
        let t0 = Date()
        while port == 0 {
            let chunk = reader.availableData
            guard !chunk.isEmpty else { return XCTFail("opacity serve ended before listening: \(text)") }
            text += String(decoding: chunk, as: UTF8.self)
            if let r = text.range(of: #"listening on http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(text[r].split(separator: ":").last ?? "") ?? 0
            }
            XCTAssertLessThan(Date().timeIntervalSince(t0), 120)
        }
        XCTAssertTrue(text.contains("this machine only"), text)
        while (try? HTTP.request(port: port, "GET", "/readyz").status) != 200 {
            guard Date().timeIntervalSince(t0) < 300 else { return XCTFail("not ready in 300 s") }
            Thread.sleep(forTimeInterval: 0.05)
        }
        let dcm = try Data(contentsOf: ServeFixtures.otherDICOM)
        // three requests in flight (batches of one, so two wait in the queue), then SIGTERM
        let sockets = try (0..<3).map { _ in try RawSocket(port: port, timeout: 120) }
        for c in sockets {
            var req = Data("POST /v1/detect HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/dicom\r\nContent-Length: \(dcm.count)\r\n\r\n".utf8)
            req.append(dcm)
            try c.send(req)
        }
        Thread.sleep(forTimeInterval: 0.3)
        kill(p.processIdentifier, SIGTERM)
        for c in sockets {
            let a = try c.readResponse()
            XCTAssertEqual(a.status, 200, a.text)
        }
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        XCTAssertEqual(p.terminationReason, .exit)
        text += String(decoding: reader.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(text.contains("stopped"), text)
        XCTAssertThrowsError(try HTTP.request(port: port, "GET", "/healthz", timeout: 2))
    }

    /// Ctrl-C (SIGINT) stops `opacity serve` as SIGTERM does: exit status 0, not 130, as
    /// its help and the top-level help's exit statuses say.
    func testSIGINTExitsZero() throws {
        let p = Process()
        p.executableURL = ServeFixtures.executable
        p.arguments = ["serve", "--model", ServeFixtures.zooModel, "--port", "0", "--threads", "2"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { p.terminate() } }
        let reader = err.fileHandleForReading
        var text = ""
        while !text.contains("listening on http://") {
            let chunk = reader.availableData
            guard !chunk.isEmpty else { return XCTFail("opacity serve ended before listening: \(text)") }
            text += String(decoding: chunk, as: UTF8.self)
        }
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        text += String(decoding: reader.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(p.terminationStatus, 0, text)
        XCTAssertEqual(p.terminationReason, .exit, text)
        XCTAssertTrue(text.contains("stopped"), text)
    }
}
