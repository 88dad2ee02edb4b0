import Foundation
import Opacity
import XCTest

/// Runs the built `opacity` executable (next to the test bundle) and captures its output.
enum CLI {
    /// ../shared/realdata next to the repository.
    static let realdata = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/realdata")

    static var executable: URL {
        // .../release/OpacityPackageTests.xctest -> .../release/opacity
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("opacity").path) {
            dir = Bundle.main.bundleURL.deletingLastPathComponent()
        }
        return dir.appendingPathComponent("opacity")
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        var all: String { stdout + stderr }
    }

    /// The user manifest every command of the tests reads unless a test names another: one of
    /// this test process's own, which no test writes (each `zoo add` names its manifest), so it
    /// does not exist. Not the machine's (`~/.config/opacity/zoo.json`), which any `opacity zoo
    /// add` run meanwhile without `--manifest` (a person, another checkout's tests) writes, and
    /// whose entries would then be in every test's zoo, or, unreadable, fail every command.
    static let userManifest = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-cli-user-\(getpid())/zoo.json")

    /// The zoo the commands of the tests see (with ``userManifest``), for a test's own look-ups.
    static func zoo() throws -> Zoo {
        var environment = ProcessInfo.processInfo.environment
        environment["OPACITY_USER_MANIFEST"] = userManifest.path
        return try Zoo.standard(environment: environment)
    }

    /// A process (not started) that runs `executable` (`opacity`) with `args` in `cwd`, with two
    /// compute threads, the tests' zoo cache, ``userManifest`` and `environment` on top of this
    /// process's.
    static func process(_ args: [String], in cwd: URL?, environment: [String: String] = [:], executable: URL = CLI.executable) -> Process {
        let p = Process()
        p.executableURL = executable
        p.arguments = args
        if let cwd { p.currentDirectoryURL = cwd }
        var env = ProcessInfo.processInfo.environment
        env["OPACITY_THREADS"] = "2"
        env["OPACITY_CACHE"] = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-cli-cache").path
        env["OPACITY_USER_MANIFEST"] = userManifest.path
        env.merge(environment) { _, new in new }
        p.environment = env
        return p
    }

    /// Runs `opacity args...` in `cwd` with two compute threads.
    @discardableResult
    /// With `launcher` (e.g. `["/usr/bin/mpirun", "-np", "2"]`) the launcher runs `opacity`.
    /// `program` names another executable of the package (`opacity-bench`). With `stdin`, its
    /// standard input is a pipe that those bytes are written to (then closed).
    static func run(
        _ args: [String], in cwd: URL? = nil, environment: [String: String] = [:], timeout: TimeInterval = 900,
        launcher: [String] = [], program: String = "opacity", stdin: Data? = nil
    ) throws -> Result {
        let binary = executable.deletingLastPathComponent().appendingPathComponent(program)
        let p = process(args, in: cwd, environment: environment, executable: binary)
        if let first = launcher.first {
            p.executableURL = URL(fileURLWithPath: first)
            p.arguments = Array(launcher.dropFirst()) + [binary.path] + args
        }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let input = stdin.map { _ in Pipe() }
        if let input { p.standardInput = input }
        try p.run()
        if let input, let stdin {
            // a command that exits without reading it must not end the tests with SIGPIPE
            signal(SIGPIPE, SIG_IGN)
            // written from another thread: a large input fills the pipe until the command reads it
            let writer = input.fileHandleForWriting
            DispatchQueue.global().async {
                try? writer.write(contentsOf: stdin)
                try? writer.close()
            }
        }
        // read both pipes concurrently so neither fills up
        let box = DataBox()
        let group = DispatchGroup()
        group.enter()
        let reader = out.fileHandleForReading
        DispatchQueue.global().async {
            box.set(reader.readDataToEndOfFile()); group.leave()
        }
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        let outData = box.get()
        return Result(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
    }

    final class DataBox: @unchecked Sendable {
        private var data = Data()
        private let lock = NSLock()
        func set(_ d: Data) { lock.lock(); data = d; lock.unlock() }
        func get() -> Data { lock.lock(); defer { lock.unlock() }; return data }
    }

    static func tempDir(_ name: String) throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-cli-\(name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }
}
