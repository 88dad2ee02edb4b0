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
        if let threads, !(1...1024).contains(threads) { throw ValidationError("--threads \(threads) is not valid; expected 1...1024, e.g. 4") }
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
