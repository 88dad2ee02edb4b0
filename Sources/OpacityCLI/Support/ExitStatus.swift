import ArgumentParser

/// The exit statuses of every `opacity` command (Documentation/CLI.md lists them too).
///
/// | status | meaning |
/// |---|---|
/// | 0 | success |
/// | 1 | data or runtime error: an input that cannot be read or is invalid (the message names the file and field), a model that does not load, some items of a batch failed (`convert`, `zoo verify`) |
/// | 64 | usage error: an unknown or missing option, a value out of range or not among the listed choices, a path that does not exist (`EX_USAGE`) |
/// | 130 | interrupted by Ctrl-C; `train` wrote a checkpoint first and `--resume` continues (128 + SIGINT) |
public enum ExitStatus: Int32, CaseIterable, Sendable {
    /// The command did what was asked.
    case success = 0
    /// Reading or processing the data failed; the message says which file and why.
    case dataError = 1
    /// The command line is wrong; the message names the option and what it takes.
    case usageError = 64
    /// Stopped by Ctrl-C (SIGINT).
    case interrupted = 130
    /// Stopped by SIGTERM (`timeout`, `kill`, a job scheduler); a training run saved a checkpoint first.
    case terminated = 143

    /// The `ExitCode` to throw from a command.
    var code: ExitCode { ExitCode(rawValue) }
}
