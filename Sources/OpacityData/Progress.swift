import Foundation

/// How far a long job (conversion, generation) has come.
public struct ProgressUpdate: Sendable, Equatable {
    /// Items finished.
    public var done: Int
    /// Items in all.
    public var total: Int
    /// Seconds since the job started.
    public var elapsed: Double

    /// An update.
    public init(done: Int, total: Int, elapsed: Double) {
        self.done = done
        self.total = total
        self.elapsed = elapsed
    }

    /// Estimated seconds left, from the rate so far (`nil` before the first item).
    public var remaining: Double? {
        guard done > 0, total >= done else { return nil }
        return elapsed / Double(done) * Double(total - done)
    }
}

/// A progress callback. Called from the thread doing the work, at most once per item.
public typealias ProgressHandler = @Sendable (ProgressUpdate) -> Void

/// A terminal progress display for the CLI: a redrawn bar with rate and ETA when the
/// output is a terminal, otherwise one plain line about every 10% (logs stay readable).
public final class TerminalProgressBar: @unchecked Sendable {
    private let label: String
    private let output: FileHandle
    private let isTTY: Bool
    private let lock = NSLock()
    private var lastPrinted = -1
    private var lastDraw = 0.0

    /// A progress display.
    /// - Parameters:
    ///   - label: a word or two before the bar (e.g. "convert").
    ///   - output: where to write (standard error by default).
    ///   - isTTY: force bar or plain mode; by default detected with `isatty`.
    public init(label: String, output: FileHandle = .standardError, isTTY: Bool? = nil) {
        self.label = label
        self.output = output
        self.isTTY = isTTY ?? (isatty(output.fileDescriptor) != 0)
    }

    /// A ``ProgressHandler`` that drives this display.
    public var handler: ProgressHandler { { [self] u in self.update(u) } }

    /// Shows an update.
    public func update(_ u: ProgressUpdate) {
        lock.lock()
        defer { lock.unlock() }
        let total = max(u.total, 1)
        if isTTY {
            // Redraw at most 10 times a second, and always at the end.
            guard u.done == u.total || u.elapsed - lastDraw >= 0.1 || lastPrinted < 0 else { return }
            lastDraw = u.elapsed
            lastPrinted = u.done
            let width = 30
            let filled = min(width, u.done * width / total)
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            var line = "\r\(label) [\(bar)] \(u.done)/\(u.total)"
            if u.elapsed > 0 { line += String(format: " %.1f/s", Double(u.done) / u.elapsed) }
            if let r = u.remaining, u.done < u.total { line += " ETA " + TerminalProgressBar.format(r) }
            if u.done >= u.total { line += " done in " + TerminalProgressBar.format(u.elapsed) + "\n" }
            try? output.write(contentsOf: Data(line.utf8))
        } else {
            let decile = u.done * 10 / total
            guard decile > lastPrinted * 10 / total || u.done == u.total || lastPrinted < 0 else { return }
            if u.done == lastPrinted { return }
            lastPrinted = u.done
            var line = "\(label): \(u.done)/\(u.total)"
            if let r = u.remaining, u.done < u.total { line += ", about " + TerminalProgressBar.format(r) + " left" }
            if u.done >= u.total { line += ", done in " + TerminalProgressBar.format(u.elapsed) }
            try? output.write(contentsOf: Data((line + "\n").utf8))
        }
    }

    /// `1h02m`, `3m05s` or `12.3s`.
    public static func format(_ seconds: Double) -> String {
        let s = max(0, seconds)
        if s >= 3600 { return String(format: "%dh%02dm", Int(s) / 3600, (Int(s) % 3600) / 60) }
        if s >= 60 { return String(format: "%dm%02ds", Int(s) / 60, Int(s) % 60) }
        return String(format: "%.1fs", s)
    }
}

/// Calls a handler with elapsed time filled in; thread-safe counting for parallel jobs.
final class ProgressCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var done = 0
    private let total: Int
    private let start = Date()
    private let handler: ProgressHandler?

    init(total: Int, handler: ProgressHandler?) {
        self.total = total
        self.handler = handler
    }

    func step() {
        lock.lock()
        done += 1
        let u = ProgressUpdate(done: done, total: total, elapsed: Date().timeIntervalSince(start))
        lock.unlock()
        handler?(u)
    }
}
