import Foundation
import Opacity
import OpacityServe
import XCTest

/// The real server on a loopback port, called over TCP: every endpoint, DICOM, PNG and
/// multipart bodies from ../shared/realdata, each error status, and equality with `opacity detect`.
final class ServeEndpointTests: XCTestCase {
    nonisolated(unsafe) static var shared: RunningServer?

    /// One server for the endpoint tests: 8 MB bodies, 2 megapixels, the zoo model.
    func server() throws -> RunningServer {
        if let s = Self.shared { return s }
        let s = try RunningServer { c in
            c.maxBodyBytes = 8 << 20
            c.maxPixels = 2_000_000
        }
        Self.shared = s
        return s
    }

    override class func tearDown() {
        if let s = shared { XCTAssertNil(s.stop()) }
        shared = nil
        super.tearDown()
    }

    func testHealthReadyModelsAndMetrics() throws {
        let port = try server().port
        let h = try HTTP.request(port: port, "GET", "/healthz")
        XCTAssertEqual(h.status, 200)
        XCTAssertEqual(h.object["status"] as? String, "ok")
        let r = try HTTP.request(port: port, "GET", "/readyz")
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(r.object["status"] as? String, "ready")

        let m = try HTTP.request(port: port, "GET", "/v1/models")
        XCTAssertEqual(m.status, 200, m.text)
        let models = m.object["models"] as? [[String: Any]] ?? []
        XCTAssertEqual(models.count, 1)
        XCTAssertEqual(models.first?["name"] as? String, ServeFixtures.zooModel)
        // the sha256 served is the file's, which the zoo manifest also records
        let entry = try Zoo.standard().item(ServeFixtures.zooModel).entry
        XCTAssertEqual(models.first?["sha256"] as? String, entry.sha256)
        XCTAssertEqual(models.first?["config"] as? String, entry.config)
        XCTAssertEqual((models.first?["zoo"] as? [String: Any])?["licence"] as? String, entry.licence)
        XCTAssertEqual(m.object["threshold"] as? Double ?? -1, Double(entry.metrics["metric_threshold"]!), accuracy: 1e-6)

        // one detection so the model metrics move, then the exposition
        let d = try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "application/dicom"],
                                 body: try Data(contentsOf: ServeFixtures.otherDICOM))
        XCTAssertEqual(d.status, 200, d.text)
        let metrics = try HTTP.request(port: port, "GET", "/metrics")
        XCTAssertEqual(metrics.status, 200)
        XCTAssertTrue(metrics.headers["content-type"]?.hasPrefix("text/plain") ?? false)
        let text = metrics.text
        for name in ["opacity_http_requests_total{status=\"200\"}", "opacity_http_request_duration_seconds_bucket",
                     "opacity_queue_depth_images", "opacity_batch_size_images_bucket", "opacity_images_total",
                     "opacity_images_per_second"] {
            XCTAssertTrue(text.contains(name), "\(name) missing from /metrics:\n\(text)")
        }
        let images = text.split(separator: "\n").first { $0.hasPrefix("opacity_images_total ") }
        XCTAssertGreaterThanOrEqual(Double(images?.split(separator: " ").last ?? "") ?? 0, 1)
    }

    /// `GET /openapi.yaml` serves the API description built into the binary, as
    /// `application/yaml`, byte for byte Documentation/openapi.yaml (new-user trial: the help
    /// and Serving.md pointed to a document the server did not serve); the document lists
    /// the path itself, and other methods are refused.
    func testOpenAPIDocument() throws {
        let documented = try Data(contentsOf: ServeFixtures.root.appendingPathComponent("Documentation/openapi.yaml"))
        XCTAssertEqual(
            Data(OpenAPIDocument.yaml.utf8), documented,
            "Sources/OpacityServe/OpenAPIDocument.swift is not Documentation/openapi.yaml: run scripts/embed-openapi.sh")
        let port = try server().port
        let r = try HTTP.request(port: port, "GET", "/openapi.yaml")
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(r.headers["content-type"], "application/yaml")
        XCTAssertEqual(r.body, documented)
        XCTAssertTrue(r.text.contains("\n  /openapi.yaml:\n    get:"), "the document lists its own path")
        let post = try HTTP.request(port: port, "POST", "/openapi.yaml", headers: ["Content-Type": "text/plain"], body: Data("x".utf8))
        XCTAssertEqual(post.status, 405, post.text)
    }

    /// The service and `opacity detect --format json` give the same report for the same DICOM.
    func testDICOMDetectionsEqualTheCLIs() throws {
        let port = try server().port
        let dcm = ServeFixtures.positiveDICOM
        let a = try HTTP.request(port: port, "POST", "/v1/detect?threshold=0.01", headers: ["Content-Type": "application/dicom"],
                                 body: try Data(contentsOf: dcm))
        XCTAssertEqual(a.status, 200, a.text)
        let served = try JSONDecoder().decode([DetectionReport].self, from: a.body)
        XCTAssertEqual(served.count, 1)
        let r = served[0]
        XCTAssertEqual(r.width, 1024)
        XCTAssertEqual(r.height, 1024)
        XCTAssertEqual(r.format, "dicom")
        XCTAssertEqual(r.threshold, 0.01)
        XCTAssertEqual(r.patientId, "00436515-870c-4b36-a041-de91049b9ab4")
        let header = try DICOM.readHeader(dcm)
        XCTAssertEqual(r.sopInstanceUID, header.sopInstanceUID)
        XCTAssertNotNil(r.sopInstanceUID)
        XCTAssertEqual(r.viewPosition, header.viewPosition)
        XCTAssertEqual(r.studyInstanceUID, header.studyInstanceUID)
        XCTAssertEqual(r.pixelSpacing?.count, 2)
        XCTAssertFalse(r.boxes.isEmpty, "the positive image should give a box at threshold 0.01")
        for b in r.boxes {
            XCTAssertGreaterThan(b.score, 0.01)
            let mm = try XCTUnwrap(b.mm)
            XCTAssertEqual(mm.width, Double(b.width) * r.pixelSpacing![1], accuracy: 1e-3)
            XCTAssertEqual(mm.y, Double(b.y) * r.pixelSpacing![0], accuracy: 1e-3)
        }
        XCTAssertEqual(r.models.first?.sha256, try Zoo.standard().item(ServeFixtures.zooModel).entry.sha256)
        if let g = r.globalProbabilities {
            XCTAssertEqual(g.notNormal + g.normal + g.lungOpacity, 1, accuracy: 1e-3)
        }

        // the CLI on the same file
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-serve-cli-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = Process()
        p.executableURL = ServeFixtures.executable
        p.arguments = ["detect", dcm.path, "--model", ServeFixtures.zooModel, "--threshold", "0.01", "-o", dir.path, "--no-overlays", "--threads", "2"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        let cli = try JSONDecoder().decode([DetectionReport].self, from: Data(contentsOf: dir.appendingPathComponent("detections.json")))
        XCTAssertEqual(cli.count, 1)
        var c = cli[0], s = r
        XCTAssertEqual(c.file, dcm.path)
        c.file = "body.dcm"; c.seconds = 0; s.seconds = 0
        XCTAssertEqual(c, s, "opacity detect and opacity serve disagree")

        // the schema file names every key the report has
        let schema = try String(contentsOf: ServeFixtures.root.appendingPathComponent("Documentation/detections.schema.json"), encoding: .utf8)
        let keys = (try JSONSerialization.jsonObject(with: a.body) as! [[String: Any]])[0].keys
        for k in keys { XCTAssertTrue(schema.contains("\"\(k)\""), "detections.schema.json does not describe \(k)") }
    }

    func testPNGKaggleAndOverlay() throws {
        let port = try server().port
        let png = try Data(contentsOf: ServeFixtures.png)
        let a = try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "image/png"], body: png)
        XCTAssertEqual(a.status, 200, a.text)
        let r = try JSONDecoder().decode([DetectionReport].self, from: a.body)
        let source = try PNG.decode(png).gray
        XCTAssertEqual(r.first?.format, "png")
        XCTAssertEqual(r.first?.width, source.width)
        XCTAssertEqual(r.first?.height, source.height)
        XCTAssertNil(r.first?.sopInstanceUID)
        XCTAssertNil(r.first?.pixelSpacing)
        // the same image through the engine directly
        let engine = try ServeFixtures.loadEngine()
        var direct = engine.run([try DetectionEngine.decode(png, name: "body.png")])[0]
        direct.seconds = r[0].seconds
        XCTAssertEqual(direct, r[0])

        let k = try HTTP.request(port: port, "POST", "/v1/detect?format=kaggle&threshold=0.01",
                                 headers: ["Content-Type": "application/dicom"], body: try Data(contentsOf: ServeFixtures.positiveDICOM))
        XCTAssertEqual(k.status, 200, k.text)
        XCTAssertTrue(k.headers["content-type"]?.hasPrefix("text/csv") ?? false)
        let lines = k.text.split(separator: "\n")
        XCTAssertEqual(lines.first, "patientId,PredictionString")
        XCTAssertTrue(lines.count == 2 && lines[1].hasPrefix("00436515-870c-4b36-a041-de91049b9ab4,"), k.text)
        let sub = try Submission(csv: k.text)
        XCTAssertFalse(sub.rows[0].detections.isEmpty)
        // the row `opacity submit` writes for the same detections (it was %.4f scores here, %.3f there)
        let j = try HTTP.request(port: port, "POST", "/v1/detect?threshold=0.01",
                                 headers: ["Content-Type": "application/dicom"], body: try Data(contentsOf: ServeFixtures.positiveDICOM))
        let report = try JSONDecoder().decode([DetectionReport].self, from: j.body)[0]
        XCTAssertEqual(String(lines[1]), Submission(rows: [(report.kaggleId, report.detections)]).csv.split(separator: "\n")[1].description)

        let o = try HTTP.request(port: port, "POST", "/v1/detect?overlay=true", headers: ["Content-Type": "image/png"], body: png)
        XCTAssertEqual(o.status, 200, o.text)
        XCTAssertEqual(o.headers["content-type"], "image/png")
        let decoded = try PNG.decode(o.body)
        guard case .rgb(let overlay) = decoded else { return XCTFail("the overlay is not an RGB PNG") }
        XCTAssertEqual(overlay.width, source.width)
    }

    /// The CSV lists an image without boxes as a row with empty box fields.
    func testCSVListsImagesWithoutBoxes() throws {
        let port = try server().port
        let dcm = try Data(contentsOf: ServeFixtures.positiveDICOM)
        var reports: [DetectionReport] = []
        for t in ["1", "0.01"] {
            let a = try HTTP.request(port: port, "POST", "/v1/detect?threshold=\(t)", headers: ["Content-Type": "application/dicom"], body: dcm)
            reports += try JSONDecoder().decode([DetectionReport].self, from: a.body)
        }
        XCTAssertTrue(reports[0].boxes.isEmpty)
        XCTAssertFalse(reports[1].boxes.isEmpty)
        let rows = DetectionReport.csv(reports).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertEqual(rows[0], "file,score,x,y,width,height,image_width,image_height,patientId,sopInstanceUID")
        XCTAssertEqual(rows[1], "body.dcm,,,,,,1024,1024,00436515-870c-4b36-a041-de91049b9ab4,\(reports[0].sopInstanceUID!)")
        XCTAssertEqual(rows.count, 1 + 1 + reports[1].boxes.count + 1)
        let kaggle = DetectionReport.kaggle(reports).split(separator: "\n").map(String.init)
        XCTAssertEqual(kaggle[1], "00436515-870c-4b36-a041-de91049b9ab4,")
    }

    func testMultipartKeepsOrderAndNames() throws {
        let port = try server().port
        let (body, type) = HTTP.multipart([
            ("a.dcm", "application/dicom", try Data(contentsOf: ServeFixtures.positiveDICOM)),
            ("b.png", "image/png", try Data(contentsOf: ServeFixtures.png)),
            ("c.dcm", "application/dicom", try Data(contentsOf: ServeFixtures.otherDICOM)),
        ])
        let a = try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": type], body: body)
        XCTAssertEqual(a.status, 200, a.text)
        let r = try JSONDecoder().decode([DetectionReport].self, from: a.body)
        XCTAssertEqual(r.map(\.file), ["a.dcm", "b.png", "c.dcm"])
        XCTAssertEqual(r.map(\.format), ["dicom", "png", "dicom"])
        // batched with others or not, each equals its single-image answer to float rounding (a
        // batch of three may take another convolution path, e.g. Winograd above 160 tiles, which
        // sums in another order)
        let single = try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "application/dicom"],
                                      body: try Data(contentsOf: ServeFixtures.otherDICOM))
        let one = try JSONDecoder().decode([DetectionReport].self, from: single.body)[0]
        XCTAssertEqual(one.boxes.count, r[2].boxes.count)
        for (u, v) in zip(one.boxes, r[2].boxes) {
            for (a, b) in [(u.score, v.score), (u.x, v.x), (u.y, v.y), (u.width, v.width), (u.height, v.height)] {
                XCTAssertEqual(a, b, accuracy: 1e-5 * max(1, abs(b)))
            }
        }
        let (p, q) = (one.globalProbabilities, r[2].globalProbabilities)
        XCTAssertEqual(p?.lungOpacity ?? -1, q?.lungOpacity ?? -2, accuracy: 1e-6)
        XCTAssertEqual(p?.normal ?? -1, q?.normal ?? -2, accuracy: 1e-6)
        XCTAssertEqual(p?.notNormal ?? -1, q?.notNormal ?? -2, accuracy: 1e-6)

        // a truncated multipart body is a 400 naming the problem
        let cut = body.prefix(body.count - 40)
        let t = try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": type], body: Data(cut))
        XCTAssertEqual(t.status, 400, t.text)
        XCTAssertTrue((t.object["error"] as? String ?? "").contains("multipart"), t.text)
    }

    func testErrorsAreJSONWithTheRightStatus() throws {
        let port = try server().port
        func check(_ a: HTTPAnswer, _ status: Int, _ words: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertEqual(a.status, status, a.text, file: file, line: line)
            XCTAssertEqual(a.object["status"] as? Int, status, a.text, file: file, line: line)
            XCTAssertTrue((a.object["error"] as? String ?? "").contains(words), "'\(words)' not in \(a.text)", file: file, line: line)
        }
        let dcm = try Data(contentsOf: ServeFixtures.otherDICOM)
        check(try HTTP.request(port: port, "GET", "/v2/nothing"), 404, "/v2/nothing")
        // a near path names the endpoint meant; a long one is quoted cut
        check(try HTTP.request(port: port, "GET", "/health"), 404, "no endpoint /health (did you mean /healthz?)")
        check(try HTTP.request(port: port, "GET", "/v2/detect"), 404, "no endpoint /v2/detect (did you mean /v1/detect?)")
        // a path near no endpoint is offered none (it was offered /readyz)
        let far = try HTTP.request(port: port, "GET", "/v2/x")
        check(far, 404, "no endpoint /v2/x; the API has POST /v1/detect")
        XCTAssertFalse(far.text.contains("did you mean"), far.text)
        let longPath = try HTTP.request(port: port, "GET", "/" + String(repeating: "y", count: 4000))
        check(longPath, 404, "(4001 bytes)")
        XCTAssertLessThan(longPath.text.utf8.count, 400, String(longPath.text.prefix(200)))
        check(try HTTP.request(port: port, "GET", "/v1/detect"), 405, "use POST")
        check(try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "text/plain"], body: Data("hi".utf8)), 415, "text/plain")
        check(try HTTP.request(port: port, "POST", "/v1/detect?threshold=2", headers: ["Content-Type": "application/dicom"], body: dcm), 400, "threshold")
        check(try HTTP.request(port: port, "POST", "/v1/detect?format=xml", headers: ["Content-Type": "application/dicom"], body: dcm), 400, "json, kaggle or dicom-sr")
        check(try HTTP.request(port: port, "POST", "/v1/detect?overlay=maybe", headers: ["Content-Type": "application/dicom"], body: dcm), 400, "overlay")
        // a misspelt format names the one meant; a long value is quoted cut, never echoed whole
        check(try HTTP.request(port: port, "POST", "/v1/detect?format=kagle", headers: ["Content-Type": "application/dicom"], body: dcm), 400,
              "not 'kagle' (did you mean 'kaggle'?)")
        let long = String(repeating: "x", count: 4000)
        for parameter in ["format", "threshold", "frame", "overlay"] {
            let a = try HTTP.request(port: port, "POST", "/v1/detect?\(parameter)=\(long)", headers: ["Content-Type": "application/dicom"], body: dcm)
            check(a, 400, "(4000 bytes)")
            XCTAssertLessThan(a.text.utf8.count, 400, "\(parameter): \(a.text.prefix(200))")
        }
        // a misspelt parameter is refused, not ignored (the default threshold would be used)
        check(try HTTP.request(port: port, "POST", "/v1/detect?tresh=0.1", headers: ["Content-Type": "application/dicom"], body: dcm), 400,
              "unknown query parameter 'tresh' (did you mean 'threshold'?)")
        check(try HTTP.request(port: port, "POST", "/v1/detect?threshold=0.1&foo=1", headers: ["Content-Type": "application/dicom"], body: dcm), 400,
              "POST /v1/detect takes threshold, format, frame and overlay")
        // two answers asked for: the overlay PNG and the CSV
        check(try HTTP.request(port: port, "POST", "/v1/detect?format=kaggle&overlay=true", headers: ["Content-Type": "application/dicom"], body: dcm), 400,
              "format=kaggle")
        // the 415 names every accepted type, application/octet-stream too
        check(try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "application/x-www-form-urlencoded"], body: dcm), 415,
              "application/octet-stream")
        check(try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "multipart/form-data"], body: dcm), 400, "boundary")
        // a body over --max-body (8 MB here)
        check(try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "image/png"], body: Data(count: 9 << 20)), 413, "--max-body")
        // refused before the body is read: the body is still taken in, so the answer arrives
        check(try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "text/plain"], body: Data(count: 9 << 20)), 415, "text/plain")
        // not an image: the decoder's own message, as the CLI prints it
        check(try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "image/png"], body: Data("not a png".utf8)), 422, "Not a PNG")
        check(try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "application/octet-stream"], body: Data("not an image".utf8)), 422, "not a DICOM")
        check(try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "image/png"], body: Data()), 422, "empty")
        // a truncated DICOM: the parser's message names the element
        let cut = try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "application/dicom"], body: dcm.prefix(2000))
        XCTAssertEqual(cut.status, 422, cut.text)
        var expected = ""
        do { _ = try DICOM.decode(Data(dcm.prefix(2000)), path: "body.dcm") } catch { expected = "\(error)" }
        XCTAssertEqual(cut.object["error"] as? String, expected)
        // over --max-pixels (2 megapixels here), refused from the PNG header
        let big = try PNG.encode(GrayImage(width: 2000, height: 1500, pixels: [UInt8](repeating: 0, count: 3_000_000)))
        check(try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "image/png"], body: big), 422, "--max-pixels")
        // overlay takes one image
        let (two, type) = HTTP.multipart([("a.dcm", "application/dicom", dcm), ("b.dcm", "application/dicom", dcm)])
        check(try HTTP.request(port: port, "POST", "/v1/detect?overlay=1", headers: ["Content-Type": type], body: two), 400, "exactly one image")
        // and the server still serves
        XCTAssertEqual(try HTTP.request(port: port, "POST", "/v1/detect", headers: ["Content-Type": "application/dicom"], body: dcm).status, 200)
    }
}
