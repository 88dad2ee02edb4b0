import Foundation
import Hummingbird
import Opacity
import ServiceLifecycle

/// The HTTP detection service behind `opacity serve` (API: Documentation/openapi.yaml).
///
/// The server listens at once and answers `/healthz`; the models load on a thread of their
/// own and `/readyz` says `ready` when they are in. Detection requests wait in a bounded
/// ``BatchQueue`` and run in batches on one worker thread through the same
/// ``DetectionEngine`` as `opacity detect`. SIGTERM or SIGINT (or ``shutdown()``) stops
/// accepting connections, answers every request already received, then returns.
public final class DetectionServer: @unchecked Sendable {
    /// The settings.
    public let configuration: ServeConfiguration
    let metrics = ServeMetrics()
    private let log: @Sendable (String) -> Void
    private let lock = NSLock()
    private var engine: DetectionEngine?
    private var queue: BatchQueue?
    private var loadError: Error?
    private var draining = false
    private var group: ServiceGroup?
    private var boundPort: Int?
    private let tokenBytes: [UInt8]?

    /// - Parameters:
    ///   - configuration: checked with ``ServeConfiguration/validate()`` by ``run(load:onListening:)``.
    ///   - log: where start, ready and stop lines go (the command passes standard error).
    public init(configuration: ServeConfiguration, log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.configuration = configuration
        self.log = log
        self.tokenBytes = configuration.token.map { Array("Bearer \($0)".utf8) }
    }

    /// The port the server listens on, once it does.
    public var port: Int? { lock.withLock { boundPort } }

    /// Whether the models are loaded and requests are accepted.
    public var isReady: Bool { lock.withLock { engine != nil && !draining } }

    /// Runs the server until SIGTERM, SIGINT or ``shutdown()``, then drains the queue.
    /// - Parameters:
    ///   - load: builds the engine (runs on a thread of its own while `/healthz` already answers).
    ///   - onListening: called with the bound port once the server listens.
    /// - Throws: ``ServeError/badOption(_:)`` for bad settings, a bind error, or the error
    ///   `load` threw (the server then stops at once).
    public func run(load: @escaping @Sendable () throws -> DetectionEngine,
                    onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        try configuration.validate()
        var app = Application(
            responder: ServeResponder(server: self),
            server: .http1(configuration: .init(idleTimeout: .milliseconds(Int64(configuration.idleTimeoutSeconds * 1000)))),
            configuration: ApplicationConfiguration(
                address: .hostname(configuration.host, port: configuration.port), serverName: "opacity", backlog: 1024),
            onServerRunning: { [self] channel in
                let p = channel.localAddress?.port ?? configuration.port
                lock.withLock { boundPort = p }
                onListening(p)
            })
        app.logger.logLevel = .warning
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: app.logger))
        lock.withLock { self.group = group }
        let loader = Thread { [self] in
            do {
                let e = try load()
                let q = BatchQueue(engine: e, maxBatch: configuration.maxBatch, maxWaitMilliseconds: configuration.maxWaitMilliseconds,
                                   capacity: configuration.maxQueue, metrics: metrics)
                q.start()
                let stopping: Bool = lock.withLock {
                    queue = q
                    engine = e
                    return draining
                }
                if stopping { q.drain() } else { log("ready: \(e.models.map(\.name).joined(separator: ", ")) loaded") }
            } catch {
                lock.withLock { loadError = error }
                log("error: the models did not load: \(error)")
                Task { await group.triggerGracefulShutdown() }
            }
        }
        loader.stackSize = 16 << 20
        loader.start()
        try await group.run()
        // the server has answered every request it received; finish the queue
        let q: BatchQueue? = lock.withLock {
            draining = true
            return queue
        }
        let waiting = q?.depth ?? 0
        log("stopping: \(Wording.count(waiting, "queued image")) to finish")
        q?.drain()
        if let e = lock.withLock({ loadError }) { throw e }
    }

    /// Starts a graceful shutdown: no new connections, requests already received are answered.
    public func shutdown() async {
        let g: ServiceGroup? = lock.withLock {
            draining = true
            return group
        }
        await g?.triggerGracefulShutdown()
    }

    // MARK: - Routing

    /// Answers a request; when it is refused before its body was read, the body is read to
    /// its end and dropped first (until the timeout), so that a client still sending it, with
    /// `Connection: close`, gets the answer instead of a stalled connection.
    func route(_ request: Request, start: ContinuousClock.Instant) async throws(ServeError) -> Response {
        let bodyRead = Flag()
        do {
            return try await answer(request, start: start, bodyRead: bodyRead)
        } catch {
            if !bodyRead.value, request.headers[.contentLength].flatMap({ Int($0) }) ?? 0 > 0 || request.headers[.transferEncoding] != nil {
                await drain(request.body, until: start.advanced(by: .milliseconds(Int64(configuration.timeoutSeconds * 1000))))
            }
            throw error
        }
    }

    private func drain(_ body: RequestBody, until deadline: ContinuousClock.Instant) async {
        _ = try? await withThrowingTaskGroup(of: Void.self) { g in
            g.addTask { for try await _ in body {} }
            g.addTask { try await Task.sleep(until: deadline, clock: .continuous) }
            defer { g.cancelAll() }
            try await g.next()
        }
    }

    private func answer(_ request: Request, start: ContinuousClock.Instant, bodyRead: Flag) async throws(ServeError) -> Response {
        let path = request.uri.path
        // liveness and the API description are open; everything else needs the token
        if path != "/healthz", path != "/openapi.yaml", let tokenBytes {
            let given = Array((request.headers[.authorization] ?? "").utf8)
            guard DetectionServer.constantTimeEqual(given, tokenBytes) else { throw .unauthorized }
        }
        func only(_ methods: [HTTPRequest.Method]) throws(ServeError) {
            guard methods.contains(request.method) else {
                throw .methodNotAllowed("\(request.method.rawValue) \(path) is not allowed; use \(methods.map(\.rawValue).joined(separator: " or "))")
            }
        }
        switch path {
        case "/healthz":
            try only([.get, .head])
            return Self.json(["status": "ok"])
        case "/readyz":
            try only([.get, .head])
            let (ready, stopping, failed) = lock.withLock { (engine != nil, draining, loadError != nil) }
            if ready && !stopping { return Self.json(["status": "ready"]) }
            let state = stopping ? "shutting down" : failed ? "the models failed to load" : "loading models"
            var r = Self.json(["status": stopping ? "draining" : "loading", "error": state], status: 503)
            r.headers[.retryAfter] = "2"
            return r
        case "/openapi.yaml":
            try only([.get])
            return Self.response(Data(OpenAPIDocument.yaml.utf8), type: "application/yaml")
        case "/metrics":
            try only([.get])
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: metrics.render())))
        case "/v1/models":
            try only([.get])
            return try models()
        case "/v1/detect":
            try only([.post])
            return try await detect(request, start: start, bodyRead: bodyRead)
        default:
            throw .notFound(path)
        }
    }

    /// Whether two byte strings are equal, in time that depends on their lengths only, not on
    /// where they differ (the bearer token check).
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var diff: UInt8 = a.count == b.count ? 0 : 1
        for i in 0..<max(a.count, b.count) {
            diff |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return diff == 0
    }

    private func readyEngine() throws(ServeError) -> (DetectionEngine, BatchQueue) {
        let (e, q, stopping, failed) = lock.withLock { (engine, queue, draining, loadError) }
        if stopping { throw .unavailable("the server is shutting down") }
        if failed != nil { throw .unavailable("the models failed to load") }
        guard let e, let q else { throw .unavailable("the models are still loading; GET /readyz says when they are ready") }
        return (e, q)
    }

    private func models() throws(ServeError) -> Response {
        let (e, _) = try readyEngine()
        struct Entry: Encodable {
            var name: String, sha256: String, config: String, file: String, inputSize: Int, zoo: ZooEntry?
        }
        struct Models: Encodable {
            var models: [Entry], ensemble: String?, tta: String?, threshold: Float, maxBatch: Int, maxWaitMs: Int, maxQueue: Int
        }
        let entries = e.models.indices.map { i in
            Entry(name: e.models[i].name, sha256: e.models[i].sha256, config: e.models[i].config,
                  file: e.files[i].lastPathComponent, inputSize: e.predictor.inputSize, zoo: e.zooEntries[i])
        }
        let body = Models(models: entries, ensemble: e.ensemble, tta: e.tta, threshold: e.defaultThreshold, maxBatch: configuration.maxBatch,
                          maxWaitMs: configuration.maxWaitMilliseconds, maxQueue: configuration.maxQueue)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? enc.encode(body) else { throw .internalError("cannot encode the model list") }
        return Self.response(data, type: "application/json")
    }

    // MARK: - POST /v1/detect

    /// The query parameters `POST /v1/detect` takes (Documentation/openapi.yaml).
    static let detectParameters = ["threshold", "format", "frame", "overlay"]

    private func detect(_ request: Request, start: ContinuousClock.Instant, bodyRead: Flag) async throws(ServeError) -> Response {
        let (engine, queue) = try readyEngine()
        let q = request.uri.queryParameters
        // a misspelt parameter (`tresh=0.1`) would otherwise be ignored and the default used
        for (key, _) in q where !Self.detectParameters.contains(String(key)) {
            let near = nearestValue(String(key), in: Self.detectParameters).map { " (did you mean '\($0)'?)" } ?? ""
            let list = Self.detectParameters.dropLast().joined(separator: ", ") + " and " + Self.detectParameters.last!
            throw .badRequest("unknown query parameter '\(String(key).prefix(40))'\(near); POST /v1/detect takes \(list)")
        }
        var threshold = engine.defaultThreshold
        if let t = q["threshold"] {
            guard let v = Float(String(t)) else {
                throw .badRequest("query parameter threshold must be a number in [0, 1] (e.g. 0.2), not '\(InputLimits.quoted(t))'")
            }
            // out of range: the command line's one wording, with the nearest valid value (--threshold 2)
            guard v.isFinite, v >= 0, v <= 1 else {
                throw .badRequest(
                    Wording.outOfRange("query parameter threshold", Wording.plainNumber(v), expected: "a number in [0, 1]",
                                       nearest: v.isNaN ? nil : Wording.plainNumber(min(max(v, 0), 1))))
            }
            threshold = v
        }
        let format = q["format"].map(String.init) ?? "json"
        let formats = ["json", "kaggle", "dicom-sr"]
        guard formats.contains(format) else {
            // a value the client sent is quoted cut (a URI may be long), and a typo names the format meant
            let near = nearestValue(format, in: formats).map { " (did you mean '\($0)'?)" } ?? ""
            throw .badRequest("query parameter format takes json, kaggle or dicom-sr, not '\(InputLimits.quoted(format))'\(near)")
        }
        var frame = 1
        if let f = q["frame"] {
            guard let v = Int(String(f)) else { throw .badRequest("query parameter frame must be a frame number from 1 (e.g. 1), not '\(InputLimits.quoted(f))'") }
            guard v >= 1 else {
                throw .badRequest(Wording.outOfRange("query parameter frame", "\(v)", expected: "a frame number of at least 1", nearest: "1"))
            }
            frame = v
        }
        var overlay = false
        if let o = q["overlay"] {
            switch o.lowercased() {
            case "1", "true", "yes": overlay = true
            case "0", "false", "no", "": overlay = false
            default: throw .badRequest("query parameter overlay takes true or false, not '\(InputLimits.quoted(o))'")
            }
        }
        let contentType = request.headers[.contentType] ?? ""
        let mediaType = contentType.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        let names = ["application/dicom": "body.dcm", "image/png": "body.png", "image/jpeg": "body.jpg", "application/octet-stream": "body"]
        guard names[mediaType] != nil || mediaType == "multipart/form-data" else {
            throw .unsupportedMediaType(contentType.isEmpty ? "(none)" : contentType)
        }
        let boundary = mediaType == "multipart/form-data" ? try MultipartForm.boundary(from: contentType) : nil
        let declared = request.headers[.contentLength].flatMap { Int($0) }
        let deadline = start.advanced(by: .milliseconds(Int64(configuration.timeoutSeconds * 1000)))
        bodyRead.value = true
        let body = try await collect(request.body, declaredLength: declared, deadline: deadline)

        var files: [(name: String, data: Data)] = []
        if let boundary {
            let form = try MultipartForm(body: body, boundary: boundary)
            for (k, p) in form.parts.enumerated() { files.append((p.filename ?? p.name ?? "part\(k + 1)", p.data)) }
            guard !files.isEmpty else { throw .badRequest("the multipart body holds no parts") }
        } else {
            files = [(names[mediaType]!, body)]
        }
        if files.count > queue.capacity { throw .tooManyImages(count: files.count, limit: queue.capacity) }
        if overlay && files.count != 1 {
            throw .badRequest("overlay=true answers one PNG, so it takes exactly one image; this request has \(files.count)")
        }
        if overlay && format == "kaggle" {
            throw .badRequest("overlay=true answers a PNG and format=kaggle a CSV; ask for one of them")
        }
        if format == "dicom-sr" && (files.count != 1 || overlay) {
            throw .badRequest("format=dicom-sr answers one DICOM SR, so it takes exactly one image and no overlay; this request has \(files.count)")
        }
        var images: [DecodedImage] = []
        for f in files {
            do {
                images.append(try DetectionEngine.decode(f.data, name: f.name, maxPixels: configuration.maxPixels, frame: frame, window: configuration.window))
            } catch {
                throw .unprocessable("\(error)")
            }
        }
        let reports = try await queue.submit(images, thresholds: Array(repeating: threshold, count: images.count),
                                             deadline: deadline, timeoutSeconds: configuration.timeoutSeconds)
        if overlay {
            let img = images[0].image
            guard let png = try? PNG.encode(img.overlay(detections: reports[0].detections, thickness: max(2, img.width / 300)), fast: true) else {
                throw .internalError("cannot encode the overlay PNG")
            }
            return Self.response(png, type: "image/png")
        }
        if format == "dicom-sr" {
            do {
                let sr = try engine.structuredReport(images[0], reports[0], placement: DICOMSeriesPlacement(seriesNumber: 9901))
                return Self.response(sr, type: "application/dicom")
            } catch {
                throw .unprocessable("\(error)")
            }
        }
        if format == "kaggle" { return Self.response(Data(DetectionReport.kaggle(reports).utf8), type: "text/csv; charset=utf-8") }
        guard let data = try? DetectionReport.json(reports) else { throw .internalError("cannot encode the detections") }
        return Self.response(data, type: "application/json")
    }

    /// Collects the body up to `--max-body` bytes, failing at the deadline.
    ///
    /// A body over the limit is read to its end and dropped (at most until the deadline)
    /// before the 413 goes out, so a client that sends `Connection: close` and then its whole
    /// body is not left blocked on a server that no longer reads.
    private func collect(_ body: RequestBody, declaredLength: Int?, deadline: ContinuousClock.Instant) async throws(ServeError) -> Data {
        let limit = configuration.maxBodyBytes, seconds = configuration.timeoutSeconds
        do {
            return try await withThrowingTaskGroup(of: Data?.self) { g in
                g.addTask {
                    var data = Data(), total = 0
                    for try await chunk in body {
                        total += chunk.readableBytes
                        if total <= limit { data.append(contentsOf: chunk.readableBytesView) } else { data = Data() }
                    }
                    if total > limit { throw ServeError.bodyTooLarge(limit: limit, actual: total) }
                    return data
                }
                g.addTask {
                    try await Task.sleep(until: deadline, clock: .continuous)
                    return nil
                }
                defer { g.cancelAll() }
                guard let first = try await g.next(), let data = first else {
                    if let declaredLength, declaredLength > limit { throw ServeError.bodyTooLarge(limit: limit, actual: declaredLength) }
                    throw ServeError.bodyTimeout(seconds: seconds)
                }
                return data
            }
        } catch let e as ServeError {
            throw e
        } catch {
            throw .badRequest("the request body could not be read: \(error)")
        }
    }

    // MARK: - Responses

    static func response(_ data: Data, type: String, status: Int = 200) -> Response {
        Response(status: .init(code: status), headers: [.contentType: type], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func json(_ object: [String: String], status: Int = 200) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return response(data, type: "application/json", status: status)
    }

    /// The JSON error answer: `{"error": "<message>", "status": 413}` (keys sorted, so every
    /// answer has the same bytes for the same error), with `Retry-After` for 503 and
    /// `WWW-Authenticate` for 401.
    static func errorResponse(_ e: ServeError) -> Response {
        struct Body: Encodable { var status: Int; var error: String }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(Body(status: e.status, error: e.description))) ?? Data("{}".utf8)
        var r = response(data, type: "application/json", status: e.status)
        if let s = e.retryAfter { r.headers[.retryAfter] = "\(s)" }
        if e.status == 401 { r.headers[.wwwAuthenticate] = "Bearer" }
        if [408, 413].contains(e.status) { r.headers[.connection] = "close" }
        return r
    }
}

/// A flag set once (a request's body has been read).
final class Flag: @unchecked Sendable {
    var value = false
}

/// Routes every request through ``DetectionServer/route(_:start:)``, turning errors into
/// JSON answers and counting them in the metrics.
struct ServeResponder: HTTPResponder {
    typealias Context = BasicRequestContext
    let server: DetectionServer

    func respond(to request: Request, context: BasicRequestContext) async throws -> Response {
        let start = ContinuousClock.now
        let response: Response
        do {
            response = try await server.route(request, start: start)
        } catch {
            response = DetectionServer.errorResponse(error)
        }
        server.metrics.recordRequest(status: response.status.code, duration: ContinuousClock.now - start)
        return response
    }
}
