import ArgumentParser

/// The exit statuses of every `opacity` command (Documentation/CLI.md lists them too).
///
/// | status | meaning |
/// |---|---|
/// | 0 | success |
/// | 1 | data or runtime error: an input file or folder that does not exist, cannot be read or is invalid (the message names the file and field: `score missing.csv`, `--data`, `--labels`, `--images`, `--folds-file`, `convert`'s and `submit`'s inputs; `score --labels` with the nearest file, ``requireExistingDataFile(_:_:expected:)``), a model that does not load, some items of a batch failed (`convert`, `zoo verify`; a frame a file lacks said as `--frame`, ``frameNotInFile(_:path:)``) |
/// | 64 | usage error (`EX_USAGE`): an unknown or missing option, a value out of range or not among the listed choices, a path the command checks before anything loads that does not exist (a `--model` path, or an unknown zoo name, with the nearer of the nearest zoo name and the nearest local bundle or run folder, ``requireModelReference(_:option:)``; a file of a run folder given to `--model` or `zoo add` that is no bundle, with the run to pass, ``notABundleInRunFolder(_:option:)``; a folder given to `--labels`, ``requireNotAFolder(_:_:expected:)``; a `--plugin` path; `detect`'s inputs), a config string given as an option (`--config`, `plugins --canonical`, `import --encoder`) that does not parse or that the registry refuses (an unknown name or key, a value out of range; `commandLineConfig`), an output folder that is an existing file, an output file that is an existing folder or lies under a file, a `train` run folder another running `train` holds (`run.lock`), an earlier run's result that only `--overwrite` replaces (`detect`'s detections file, the outputs of `submit`, `eval`, `export`, `compare`, `folds`, `preview`, `import` and `score --per-image`, `convert`'s `--labels-output`; ``refuseEarlierResults(_:overwrite:replacing:otherwise:)``), a value the library checks under its own name, said as its option (``namingOption(_:_:keysOf:)``; `detect`'s `--frame` beyond a file's frames as `convert` says it, ``frameNotInFile(_:path:)``), a path given as a bare argument to `folds`, `train` or `eval`, with the command line meant (``StrayArguments``) |
/// | 130 | interrupted by Ctrl-C; `train` wrote a checkpoint first and `--resume` continues (128 + SIGINT); `serve` instead drains its queue and exits 0 |
/// | 141 | standard output's reader went away early (`opacity ... \| head`; 128 + SIGPIPE, as a shell reports a process that SIGPIPE ended): nothing more is printed, the command finishes its files quietly; `train` stops as after Ctrl-C, writing a checkpoint that `--resume` continues (``StandardStreams``) |
/// | 143 | stopped by SIGTERM (128 + SIGTERM); `train` wrote a checkpoint first; `serve` instead drains its queue and exits 0 |
public enum ExitStatus: Int32, CaseIterable, Sendable {
    /// The command did what was asked.
    case success = 0
    /// Reading or processing the data failed; the message says which file and why.
    case dataError = 1
    /// The command line is wrong; the message names the option and what it takes.
    case usageError = 64
    /// Stopped by Ctrl-C (SIGINT).
    case interrupted = 130
    /// Standard output's reader went away (`| head`); a training run saved a checkpoint first.
    case outputClosed = 141
    /// Stopped by SIGTERM (`timeout`, `kill`, a job scheduler); a training run saved a checkpoint first.
    case terminated = 143

    /// The `ExitCode` to throw from a command.
    var code: ExitCode { ExitCode(rawValue) }
}
