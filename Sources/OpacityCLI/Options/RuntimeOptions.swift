import ArgumentParser
import Foundation
import Opacity

/// Options every command that computes shares: threads and how much progress it prints.
struct RuntimeOptions: ParsableArguments {
    @Option(name: .long, parsing: .unconditional, help: "Compute threads (default: all cores, or OPACITY_THREADS).")
    var threads: Int?

    @Flag(name: .shortAndLong, help: "Print no progress lines on standard error (results, warnings and errors still print).")
    var quiet = false

    func validate() throws {
        if let threads, !Compute.validThreadCounts.contains(threads) {
            let r = Compute.validThreadCounts
            throw outOfRange("--threads", "\(threads)", expected: "an integer in \(Self.validThreads)", nearest: "\(min(max(threads, r.lowerBound), r.upperBound))")
        }
    }

    /// The valid thread counts as messages write them (`1...1024`).
    static var validThreads: String { "\(Compute.validThreadCounts.lowerBound)...\(Compute.validThreadCounts.upperBound)" }

    /// Warns on standard error when an engine tuning variable is set to a value it ignores
    /// (``Compute/tuningVariableWarnings``), and when `OPACITY_THREADS` is set but not a valid
    /// thread count (the engine ignores it and uses all cores), unless `command` was given `--threads`,
    /// which replaces it. The variable is a standing setting of the shell, read by every
    /// program on the engine, so a bad value is a warning, not the usage error of a bad `--threads`.
    static func warnAboutThreadsVariable(for command: any ParsableCommand) {
        for warning in Compute.tuningVariableWarnings { note(warning) }
        guard let warning = Compute.threadsVariableWarning else { return }
        let given = Mirror(reflecting: command).children.contains { ($0.value as? OptionGroup<RuntimeOptions>)?.wrappedValue.threads != nil }
        guard !given else { return }
        note(warning)
    }

    /// Sets the engine's thread count; call first in `run()`.
    func apply() {
        if let threads { Compute.threads = threads }
    }

    /// A progress handler that draws a bar on standard error, or nil under `--quiet`.
    func progressBar(_ label: String) -> ProgressHandler? {
        quiet ? nil : TerminalProgressBar(label: label).handler
    }
}
