import Foundation
import Opacity
import OpacityServe
import XCTest

/// Paths and a running in-process server for the service tests.
enum ServeFixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let realdata = root.deletingLastPathComponent().appendingPathComponent("shared/realdata")
    static let zooModel = "retinanet-r34-composite"
    /// A positive RSNA image with two labelled opacities (JPEG-baseline DICOM, 1024 x 1024, pixel spacing).
    static let positiveDICOM = realdata.appendingPathComponent("rsna/stage_1_train_images/00436515-870c-4b36-a041-de91049b9ab4.dcm")
    static let otherDICOM = realdata.appendingPathComponent("rsna/stage_1_train_images/0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm")
    /// A real NIH ChestX-ray14 PNG.
    static let png = realdata.appendingPathComponent("nih/00000001_000.png")

    /// The built `opacity` executable next to the test bundle.
    static var executable: URL {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("opacity").path) {
            dir = Bundle.main.bundleURL.deletingLastPathComponent()
        }
        return dir.appendingPathComponent("opacity")
    }

    /// The zoo model's engine, loaded once (two compute threads).
    static func loadEngine(threshold: Float? = nil) throws -> DetectionEngine {
        Compute.threads = 2
        let registry = try Registry.standard()
        let (d, url) = try ModelReference.load(zooModel, registry: registry)
        return try DetectionEngine(predictor: try Predictor(detectors: [d]), references: [zooModel], files: [url], threshold: threshold)
    }
}

/// A ``DetectionServer`` running in this process on an ephemeral loopback port.
final class RunningServer: @unchecked Sendable {
    let server: DetectionServer
    private(set) var port = 0
    private var task: Task<Error?, Never>?
    let lines = LineLog()

    /// Starts the server and waits until it listens and, when `waitReady`, until `/readyz` says ready.
    init(_ configure: (inout ServeConfiguration) -> Void = { _ in }, waitReady: Bool = true,
         load: @escaping @Sendable () throws -> DetectionEngine = { try ServeFixtures.loadEngine() }) throws {
        var c = ServeConfiguration()
        c.port = 0
        configure(&c)
        let log = lines
        server = DetectionServer(configuration: c, log: { log.append($0) })
        let s = server
        task = Task.detached { do { try await s.run(load: load); return nil } catch { return error } }
        let t0 = Date()
        while server.port == nil {
            guard Date().timeIntervalSince(t0) < 60 else { throw RawHTTPError("the server did not start listening in 60 s") }
            Thread.sleep(forTimeInterval: 0.02)
        }
        port = server.port!
        if waitReady {
            while !server.isReady {
                guard Date().timeIntervalSince(t0) < 300 else { throw RawHTTPError("the models did not load in 300 s: \(lines.all)") }
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
    }

    /// Shuts down gracefully and returns the error `run` ended with, if any.
    @discardableResult
    func stop() -> Error? {
        let s = server
        let done = DispatchSemaphore(value: 0)
        final class Box: @unchecked Sendable { var error: Error? }
        let box = Box()
        let t = task
        Task.detached {
            await s.shutdown()
            box.error = await t?.value
            done.signal()
        }
        done.wait()
        return box.error
    }
}

/// Lines a server logged.
final class LineLog: @unchecked Sendable {
    private var lines: [String] = []
    private let lock = NSLock()
    func append(_ s: String) { lock.withLock { lines.append(s) } }
    var all: [String] { lock.withLock { lines } }
}

/// Results filled in by several threads.
final class Slots<T>: @unchecked Sendable {
    var r: [Result<T, Error>?]
    let lock = NSLock()
    init(_ n: Int) { r = Array(repeating: nil, count: n) }
}

/// Runs `body` on `n` threads at once and returns the results in order.
func concurrently<T: Sendable>(_ n: Int, _ body: @escaping @Sendable (Int) throws -> T) -> [Result<T, Error>] {
    let slots = Slots<T>(n)
    let group = DispatchGroup()
    for i in 0..<n {
        group.enter()
        // a thread each, so all n really run at once (a dispatch pool has as many threads as cores)
        let t = Thread {
            let v = Result { try body(i) }
            slots.lock.withLock { slots.r[i] = v }
            group.leave()
        }
        t.start()
    }
    group.wait()
    return slots.r.map { $0! }
}
