import Foundation
import Opacity

/// Shows training on the terminal: a redrawn progress line with the epoch's mean loss terms
/// so far (the mean of the steps' batch means, so it ends near the epoch's `train` value), rate
/// and ETA on a TTY; plain lines (about every 10% of an epoch) otherwise.
final class TrainingProgress: TrainingObserver {
    let isTTY = isatty(STDERR_FILENO) != 0
    var epochStart = Date()
    var lastDraw = Date.distantPast
    var lastPlain = -1
    var epoch = 0, epochs = 0
    /// Sums of each loss term over the steps seen this epoch.
    var running: [String: Double] = [:]
    var seen = 0
    /// Under `--quiet`: no step, epoch-start or validation lines (epoch results and messages still print).
    let quiet: Bool

    init(quiet: Bool = false) { self.quiet = quiet }

    func write(_ s: String) { StandardStreams.writeError(s) }
    func say(_ s: String) { StandardStreams.writeOutput(s + "\n") }

    func trainingWillStartEpoch(_ epoch: Int, of epochs: Int, steps: Int, startingAt step: Int) {
        self.epoch = epoch
        self.epochs = epochs
        epochStart = Date()
        lastPlain = -1
        running = [:]
        seen = 0
        if !isTTY && !quiet { write("epoch \(epoch)/\(epochs): \(Wording.count(steps, "step"))" + (step > 0 ? " (resuming at \(step))" : "") + "\n") }
    }

    func trainingDidStep(_ step: Int, of steps: Int, terms: [(name: String, value: Float)], imagesPerSecond: Double) {
        seen += 1
        if quiet { return }
        for (n, v) in terms { running[n, default: 0] += Double(v) }
        let elapsed = Date().timeIntervalSince(epochStart)
        let eta = Double(steps - step) * elapsed / Double(max(1, seen))
        let loss = ["total", "focal", "regression", "global"].compactMap { k in running[k].map { "\(k) \(String(format: "%.4f", $0 / Double(seen)))" } }
            .joined(separator: "  ")
        if isTTY {
            guard Date().timeIntervalSince(lastDraw) > 0.2 || step == steps else { return }
            lastDraw = Date()
            let width = 24, filled = min(width, step * width / max(1, steps))
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            write(
                "\r\u{1B}[2Kepoch \(epoch)/\(epochs) [\(bar)] \(step)/\(steps)  \(loss)  \(String(format: "%.1f", imagesPerSecond)) img/s  ETA \(TerminalProgressBar.format(eta))")
            if step == steps { write("\n") }
        } else {
            let decile = step * 10 / max(1, steps)
            guard decile != lastPlain else { return }
            lastPlain = decile
            write("  step \(step)/\(steps)  \(loss)  \(String(format: "%.1f", imagesPerSecond)) img/s  ETA \(TerminalProgressBar.format(eta))\n")
        }
    }

    func trainingWillValidate(_ epoch: Int, batches: Int) {
        if quiet { return }
        write(isTTY ? "validating \(Wording.count(batches, "batch", plural: "batches"))...\r" : "  validating (\(Wording.count(batches, "batch", plural: "batches")))\n")
    }

    func trainingDidFinishEpoch(_ log: EpochLog) {
        if isTTY { write("\u{1B}[2K") }
        let g = log.val.global.map { String(format: " global %.4f", $0) } ?? ""
        say(
            String(
                format: "epoch %d  train %.4f  val %.4f (focal %.4f reg %.4f%@)  metric %.4f @ %.2f  lr %.1e  %.1f img/s  %@%@",
                log.epoch, log.train.total, log.val.total, log.val.focal, log.val.regression, g, log.metric.best,
                log.metric.threshold, log.lr, log.imagesPerSecond, log.checkpoint, log.best ? "  (best)" : ""))
    }

    /// A line of its own (on a terminal the progress line is cleared first, and redrawn with the next step).
    func trainingMessage(_ text: String) { write((isTTY ? "\r\u{1B}[2K" : "") + text + "\n") }
}

/// Turns the first Ctrl-C (SIGINT) or SIGTERM (what `timeout`, `kill` and job schedulers
/// send) into a stop request: the trainer writes a checkpoint and exits. A second signal
/// exits at once.
///
/// With ``onFirstSignal`` set (a distributed run), the first signal calls it instead, on a
/// thread of its own, while training goes on; it is to end the process.
final class InterruptFlag: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []
    private let lock = NSLock()
    private var count = 0
    private var handler: (@Sendable (Int32) -> Void)?
    /// The signal that asked to stop (SIGINT or SIGTERM), once one has.
    private(set) var signalNumber: Int32 = 0

    /// Called with the first signal's number in place of the stop request.
    var onFirstSignal: (@Sendable (Int32) -> Void)? {
        get { lock.withLock { handler } }
        set { lock.withLock { handler = newValue } }
    }

    init() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { [weak self] in
                guard let self else { return }
                self.lock.lock()
                // two signals in quick succession may reach the handler as one event
                self.count += max(1, Int(s.data))
                let c = self.count
                if c == 1 { self.signalNumber = sig }
                let handler = self.handler
                self.lock.unlock()
                if c == 1, let handler {
                    // unless the command is already ending by itself
                    if ProcessLeaving.begin() { handler(sig) }
                } else if c == 1 {
                    let name = sig == SIGTERM ? "SIGTERM" : "Ctrl-C"
                    StandardStreams.writeError("\n\(name): stopping after this step (a checkpoint is written); Ctrl-C again to quit now\n")
                } else {
                    // said, so that a run that ends here is not mistaken for one that vanished
                    let name = sig == SIGTERM ? "SIGTERM" : "Ctrl-C"
                    StandardStreams.writeError(
                        "\n\(name) again: quitting now; the step in flight is lost (--resume continues from the last checkpoint written, if any)\n"
                    )
                    // _exit, not exit: exit's teardown (OpenBLAS's buffers among it) would run
                    // under the training thread still computing, which then crashed (SIGSEGV)
                    fflush(nil)
                    _exit(128 + sig)
                }
            }
            s.resume()
            sources.append(s)
        }
    }

    /// Calls `body` on a thread of its own at every SIGCONT (a stopped process is continued
    /// all the same). Under `mpirun` a SIGCONT nobody asked for is the first sign that the
    /// job is being ended: SIGTERM follows a second later, SIGKILL one more second later.
    func onContinue(_ body: @escaping @Sendable () -> Void) {
        signal(SIGCONT, SIG_IGN)
        let s = DispatchSource.makeSignalSource(signal: SIGCONT, queue: .global())
        s.setEventHandler(handler: body)
        s.resume()
        lock.withLock { sources.append(s) }
    }

    var isSet: Bool {
        lock.lock()
        defer { lock.unlock() }
        return count > 0
    }
}

/// Who ends this process when a signal comes near the end of a distributed command: the
/// signal handler (``InterruptFlag/onFirstSignal``), or the command itself. Once the handler
/// is ending it, the training thread must neither abort the job nor exit on its own (a
/// collective whose peers have left may fail); once the command is ending, the handler
/// must not touch MPI (it may be finalised).
enum ProcessLeaving {
    private static let lock = NSLock()
    /// 0: running, 1: the handler ends the process, 2: the command does.
    nonisolated(unsafe) private static var state = 0

    /// The handler's claim. - Returns: false when the command is already ending.
    static func begin() -> Bool {
        lock.withLock {
            guard state == 0 else { return false }
            state = 1
            return true
        }
    }

    /// The command's claim, before it returns or fails; when the handler is ending the
    /// process, waits for it to do so (never returns then).
    static func end() {
        let handlerOwns = lock.withLock {
            if state == 0 { state = 2 }
            return state == 1
        }
        while handlerOwns { sleep(60) }
    }
}
