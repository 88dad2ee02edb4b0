import Foundation
import Opacity

/// The settings of `opacity serve` (each is a command-line option of the same name).
public struct ServeConfiguration: Sendable {
    /// The address to bind: `127.0.0.1` unless told otherwise (`--host`).
    public var host: String = "127.0.0.1"
    /// The TCP port (`--port`); 0 picks a free one (tests).
    public var port: Int = 8080
    /// The bearer token every request but `/healthz` must carry (`--token-file`), if any.
    public var token: String?
    /// Most images in one forward pass (`--max-batch`).
    public var maxBatch: Int = 4
    /// Longest wait, milliseconds, for more images to fill a batch (`--max-wait-ms`).
    public var maxWaitMilliseconds: Int = 10
    /// Most images waiting for the model; more gets `503` with `Retry-After` (`--max-queue`).
    public var maxQueue: Int = 64
    /// Largest request body, bytes (`--max-body`).
    public var maxBodyBytes: Int = 64 << 20
    /// Largest image, width x height pixels (`--max-pixels`).
    public var maxPixels: Int = 50_000_000
    /// Seconds a request may take from its first byte to its answer (`--timeout`).
    public var timeoutSeconds: Double = 60
    /// Seconds an idle keep-alive connection stays open.
    public var idleTimeoutSeconds: Double = 75
    /// How DICOM images are windowed before the model sees them (`--window`, as `opacity
    /// detect --window`): the file's window, else the full range, by default.
    public var window: WindowSetting = .automatic

    /// The defaults.
    public init() {}

    /// Checks every value's range.
    /// - Throws: ``ServeError/badOption(_:)`` naming the option and the valid range.
    public func validate() throws {
        func need(_ ok: Bool, _ message: String) throws { if !ok { throw ServeError.badOption(message) } }
        // every range in the command line's one wording (Wording.outOfRange)
        func needRange(_ option: String, _ value: Int, in range: ClosedRange<Int>, _ what: String = "an integer") throws {
            try need(range.contains(value), Wording.outOfRange(option, "\(value)", expected: "\(what) in \(range.lowerBound)...\(range.upperBound)",
                                                                nearest: "\(min(max(value, range.lowerBound), range.upperBound))"))
        }
        func needAtLeast(_ option: String, _ value: Int, atLeast lower: Int, _ what: String) throws {
            try need(value >= lower, Wording.outOfRange(option, "\(value)", expected: "\(what) of at least \(lower)", nearest: "\(lower)"))
        }
        try needRange("--port", port, in: 0...65535, "a port number (0 picks a free port)")
        try need(!host.isEmpty, "--host must name an address, e.g. 127.0.0.1")
        try needRange("--max-batch", maxBatch, in: 1...256)
        try needRange("--max-wait-ms", maxWaitMilliseconds, in: 0...10_000, "a number of milliseconds")
        try needRange("--max-queue", maxQueue, in: 1...100_000)
        try needAtLeast("--max-body", maxBodyBytes, atLeast: 1024, "a number of bytes")
        try needAtLeast("--max-pixels", maxPixels, atLeast: 64 * 64, "a number of pixels")
        let timeout = timeoutSeconds.isFinite && timeoutSeconds == timeoutSeconds.rounded() && abs(timeoutSeconds) < 1e15 ? "\(Int(timeoutSeconds))" : "\(timeoutSeconds)"
        try need(timeoutSeconds > 0 && timeoutSeconds <= 3600,
                 Wording.outOfRange("--timeout", timeout, expected: "a number of seconds in (0, 3600], e.g. 60", nearest: timeoutSeconds > 3600 ? "3600" : nil))
        if let token { try need(!token.isEmpty, "the token file is empty") }
    }

    /// Reads a token file: its first line, without surrounding white space.
    /// - Throws: ``ServeError/badOption(_:)`` when the file cannot be read or holds no token.
    public static func readToken(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ServeError.badOption("--token-file \(path): cannot read the file")
        }
        let line = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        let token = line.trimmingCharacters(in: .whitespaces)
        guard !token.isEmpty else { throw ServeError.badOption("--token-file \(path): no token on its first line") }
        guard token.allSatisfy({ $0.isASCII && !$0.isWhitespace && $0.asciiValue! >= 0x21 && $0.asciiValue! < 0x7F }) else {
            throw ServeError.badOption("--token-file \(path): the token must be printable ASCII without spaces")
        }
        return token
    }
}

/// What went wrong serving a request, with the HTTP status it is answered with.
public enum ServeError: Error, CustomStringConvertible, LocalizedError, Sendable, Equatable {
    /// A command-line option is out of range.
    case badOption(String)
    /// 400: the request is malformed (message names what).
    case badRequest(String)
    /// 401: no or a wrong bearer token.
    case unauthorized
    /// 404: no such endpoint.
    case notFound(String)
    /// 405: the endpoint exists, the method does not.
    case methodNotAllowed(String)
    /// 408: the body did not arrive within the timeout.
    case bodyTimeout(seconds: Double)
    /// 413: the body is larger than `--max-body`.
    case bodyTooLarge(limit: Int, actual: Int?)
    /// 413: more images than the queue holds.
    case tooManyImages(count: Int, limit: Int)
    /// 415: a content type that is not DICOM, PNG, JPEG or multipart.
    case unsupportedMediaType(String)
    /// 422: the image cannot be decoded or is over a limit (the CLI's message).
    case unprocessable(String)
    /// 503: the queue is full.
    case queueFull(limit: Int)
    /// 503: models still loading, or the server is shutting down.
    case unavailable(String)
    /// 503: no answer within the timeout.
    case timeout(seconds: Double)
    /// 500: the model failed.
    case internalError(String)

    /// The HTTP status code.
    public var status: Int {
        switch self {
        case .badOption, .badRequest: return 400
        case .unauthorized: return 401
        case .notFound: return 404
        case .methodNotAllowed: return 405
        case .bodyTimeout: return 408
        case .bodyTooLarge, .tooManyImages: return 413
        case .unsupportedMediaType: return 415
        case .unprocessable: return 422
        case .queueFull, .unavailable, .timeout: return 503
        case .internalError: return 500
        }
    }

    /// Seconds a client should wait before retrying (503 only).
    public var retryAfter: Int? {
        switch self {
        case .queueFull: return 1
        case .timeout: return 5
        case .unavailable: return 2
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case let .badOption(m), let .badRequest(m), let .unprocessable(m), let .unavailable(m), let .internalError(m): return m
        case .unauthorized: return "missing or wrong bearer token: send 'Authorization: Bearer <token>' with the token from --token-file"
        case let .notFound(p):
            // the path as sent is quoted cut (a URI may be long); a near one (`/health`,
            // `/v2/detect`) is named, a path like no endpoint (`/v2/x`) gets none (trial: it was
            // offered /readyz, the least far of far paths)
            let endpoints = ["/v1/detect", "/v1/models", "/healthz", "/readyz", "/metrics", "/openapi.yaml"]
            let near = nearestMatch(p, in: endpoints).map { " (did you mean \($0)?)" } ?? ""
            return "no endpoint \(InputLimits.quoted(p))\(near); the API has POST /v1/detect, GET /v1/models, /healthz, /readyz, /metrics, /openapi.yaml"
        case let .methodNotAllowed(m): return m
        case let .bodyTimeout(s): return String(format: "the request body did not arrive within %.1f s (--timeout)", s)
        case let .bodyTooLarge(limit, actual):
            return "the request body" + (actual.map { " (\($0) bytes)" } ?? "") + " is larger than the limit of \(limit) bytes (--max-body)"
        case let .tooManyImages(n, limit): return "\(Wording.count(n, "image")) in one request; at most \(limit) fit the queue (--max-queue)"
        case let .unsupportedMediaType(t):
            return "content type '\(t)' is not accepted; send application/dicom, image/png, image/jpeg, application/octet-stream (told by its first bytes) or multipart/form-data"
        case let .queueFull(limit): return "the queue is full (\(Wording.count(limit, "image")) waiting, --max-queue); retry later"
        case let .timeout(s): return String(format: "no answer within %.1f s (--timeout); the server is busy, retry later", s)
        }
    }

    public var errorDescription: String? { description }
}
