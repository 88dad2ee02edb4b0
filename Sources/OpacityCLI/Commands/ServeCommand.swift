import ArgumentParser
import Foundation
import Opacity
import OpacityServe

/// `opacity serve`.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve detection over HTTP: POST a DICOM or PNG (or several, multipart) to /v1/detect and get JSON boxes back.",
        discussion: """
            Endpoints: POST /v1/detect, GET /v1/models, /healthz, /readyz, /metrics (Prometheus), /openapi.yaml. The API is Documentation/openapi.yaml, which the server also serves at GET /openapi.yaml (no token needed); the answer's schema (the same as `opacity detect --format json`) is Documentation/detections.schema.json. Concurrent requests are batched (up to --max-batch images, waiting at most --max-wait-ms); a full queue answers 503 with Retry-After. SIGTERM or SIGINT stops accepting, finishes what is queued and exits 0.

            Without --token-file the server binds 127.0.0.1 only unless --host says otherwise.

            Examples:
              opacity serve --model retinanet-r34-composite --port 8080
              opacity serve --model runs/fold0 --model runs/fold1 --ensemble percentile \\
                  --threads 8 --token-file token.txt --host 0.0.0.0
              curl -s --data-binary @patient.dcm -H 'Content-Type: application/dicom' \\
                  localhost:8080/v1/detect
            """)

    @OptionGroup var model: ModelOptions
    @Option(name: .long, parsing: .unconditional, help: "TCP port (0 picks a free one and prints it).") var port: Int = 8080
    @Option(name: .long, help: "Address to bind (0.0.0.0: every interface).") var host: String = "127.0.0.1"
    @Option(name: .long, help: "A file whose first line is the bearer token every request but /healthz and /openapi.yaml must carry.") var tokenFile: String?
    @Option(name: .long, parsing: .unconditional, help: "Most images in one forward pass.") var maxBatch: Int = 4
    @Option(name: .customLong("max-wait-ms"), parsing: .unconditional, help: "Longest wait, in milliseconds, for more images to fill a batch.") var maxWaitMs: Int = 10
    @Option(name: .long, parsing: .unconditional, help: "Most images waiting for the model; beyond it requests get 503.") var maxQueue: Int = 64
    @Option(name: .long, parsing: .unconditional, help: "Largest request body in bytes.") var maxBody: Int = 64 << 20
    @Option(name: .long, parsing: .unconditional, help: "Largest image in pixels (width x height).") var maxPixels: Int = 50_000_000
    @Option(name: .long, parsing: .unconditional, help: "Seconds a request may take from arrival to answer.") var timeout: Double = 60
    @Option(name: .long, parsing: .unconditional, help: "Default score threshold (default: the one saved with the first model, else 0.2); requests may pass ?threshold=.")
    var threshold: Float?
    @OptionGroup var windowOption: ModelWindowOption
    @OptionGroup var runtime: RuntimeOptions

    @OptionGroup var pluginOptions: PluginOptions

    /// The server's settings from the options; the token is read in ``serve()``.
    var configuration: ServeConfiguration {
        var c = ServeConfiguration()
        c.host = host
        c.port = port
        c.maxBatch = maxBatch
        c.maxWaitMilliseconds = maxWaitMs
        c.maxQueue = maxQueue
        c.maxBodyBytes = maxBody
        c.maxPixels = maxPixels
        c.timeoutSeconds = timeout
        return c
    }

    /// The options' values, checked before anything runs, so that a value out of range is a
    /// usage error with the command's usage line, as every other command's (new-user trial:
    /// `serve --max-batch 0` printed no `Usage:` line, checked only once the command ran).
    func validate() throws {
        do { try configuration.validate() } catch { throw ValidationError("\(error)") }
        try requireRange("--threshold", threshold, 0, 1)
    }

    func run() throws {
        // the root command is synchronous: run the server on the concurrency pool and wait
        final class Outcome: @unchecked Sendable { var error: Error? }
        let outcome = Outcome(), done = DispatchSemaphore(value: 0)
        let command = self
        Task.detached {
            do { try await command.serve() } catch { outcome.error = error }
            done.signal()
        }
        done.wait()
        if let e = outcome.error { throw e }
    }

    func serve() async throws {
        runtime.apply()
        // before the server starts: the models load in the background
        try model.requireReferences()
        var c = configuration
        c.window = try windowOption.setting()
        if let tokenFile {
            // trial: a misspelt token file was "cannot read the file" (exit 1), unlike every other
            // path checked before anything loads (64, "no such file", the nearest file beside it)
            try requireExistingPath("--token-file", tokenFile, directory: false, expected: "a file whose first line is the bearer token")
            c.token = try ServeConfiguration.readToken(tokenFile)
        }
        // the token's (the other settings were checked by validate())
        do { try c.validate() } catch { throw ValidationError("\(error)") }

        let server = DetectionServer(configuration: c, log: { note($0) })
        let host = c.host
        let options = model, t = threshold, pluginPaths = pluginOptions.paths
        let refs = model.models.isEmpty ? [defaultModelName] : model.models
        let auth =
            c.token == nil
            ? "no token (--token-file): anyone who can reach \(host) may call it"
                + (host == "127.0.0.1" || host == "localhost" || host == "::1" ? "; bound to this machine only" : "")
            : "bearer token required on every endpoint but /healthz and /openapi.yaml"
        final class Listening: @unchecked Sendable { var yes = false }
        let listening = Listening()
        do {
            try await server.run(
                load: {
                    let registry = try CommandContext.registry(pluginPaths: pluginPaths)
                    let (predictor, urls, digests) = try options.hashedPredictor(registry: registry)
                    // an operating point picked at metric 0 is passed over, and said once
                    let consequence = "using the default \(thresholdText(OperatingPoint.defaultThreshold))"
                    if let n = ModelOptions.zeroMetricNote(given: t, urls: urls, consequence: consequence) { note(n) }
                    let engine = try DetectionEngine(predictor: predictor, references: refs, files: urls, digests: digests, threshold: t)
                    engine.softwareVersion = "opacity " + OpacityMain.version
                    return engine
                },
                onListening: { p in
                    listening.yes = true
                    note("listening on http://\(host.contains(":") ? "[\(host)]" : host):\(p) (\(auth)); loading \(refs.joined(separator: ", "))")
                })
        } catch  where !listening.yes && "\(error)".contains("bind(") {
            // the socket's own message names neither the address nor the option: one line instead
            throw ValidationError(Self.bindFailure("\(error)", host: host, port: port))
        }
        note("stopped")
    }

    /// One line for a socket that could not be bound: the address and port, why (from the
    /// errno in `message`, the socket library's text), and which option to change.
    static func bindFailure(_ message: String, host: String, port: Int) -> String {
        let at = (host.contains(":") ? "[\(host)]" : host) + ":\(port)"
        if message.contains("errno: \(EADDRINUSE))") {
            return "cannot listen on \(at): port \(port) is in use by another program; choose another --port (--port 0 picks a free one)"
        }
        if message.contains("errno: \(EADDRNOTAVAIL))") {
            return "cannot listen on \(at): \(host) is not an address of this machine; choose another --host (127.0.0.1: this machine only)"
        }
        if message.contains("errno: \(EACCES))") {
            return "cannot listen on \(at): port \(port) needs administrator rights (ports below 1024); choose --port 1024 or above"
        }
        // else the system's reason: the text after the call, without its errno
        var reason = message.components(separatedBy: "): ").dropFirst().joined(separator: "): ")
        if let r = reason.range(of: " (errno:") { reason = String(reason[..<r.lowerBound]) }
        while reason.hasSuffix(")") && reason.filter({ $0 == ")" }).count > reason.filter({ $0 == "(" }).count { reason.removeLast() }
        return "cannot listen on \(at)" + (reason.isEmpty ? "" : ": " + reason) + "; choose another --port or --host"
    }
}
