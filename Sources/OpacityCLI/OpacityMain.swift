import ArgumentParser
import Foundation
@_exported import Opacity

/// The `opacity` command line as a library: every command, built on the registry of the plugins
/// it is given.
///
/// The stock `opacity` executable is
///
/// ```swift
/// import OpacityCLI
/// OpacityMain.run(plugins: builtinPlugins)
/// ```
///
/// and an executable of a backbone package is `opacity` with its backbone in every command
/// (train, eval, detect, export, compare, ...):
///
/// ```swift
/// import OpacityCLI
/// import MyBackbone
/// OpacityMain.run(plugins: builtinPlugins + [MyBackbonePlugin.self])
/// ```
public enum OpacityMain {
    /// The version `opacity --version` prints (semantic versioning).
    public static let version = DynamicPluginABI.opacityVersion

    /// Parses `arguments` (default: the process's own), runs the command and exits the process
    /// with the status described in ``ExitStatus``.
    ///
    /// - Parameters:
    ///   - plugins: the plugins every command's registry is built from, in registration order;
    ///     two plugins that register the same name make each command fail with the registry's
    ///     error (exit status 1).
    ///   - arguments: the command line without the executable's name; `nil` reads the process's.
    ///
    /// Errors in the command line (parsing and each command's checks of its options) print
    /// the message and the command's usage; errors while running print the message (and its
    /// hint) only: a `ValidationError` thrown then (a path that does not exist, a fold the data
    /// lacks) exits with status 64, any other error with 1. SIGPIPE is ignored: when standard
    /// output's reader goes away early (`| head`), the command prints nothing more, finishes
    /// quietly (`train` stops with a checkpoint) and the process exits with status 141
    /// (``ExitStatus/outputClosed``) unless an error came first.
    public static func run(plugins: [any OpacityPlugin.Type] = builtinPlugins, arguments: [String]? = nil) -> Never {
        CommandContext.shared.setPlugins(plugins)
        // a reader that stops early fails the write (EPIPE, StandardStreams) rather than ending
        // the process from a signal: a training run then still writes its checkpoint
        signal(SIGPIPE, SIG_IGN)
        // `opacity detet --help`: the parser would show the group's help and exit 0, as if the
        // misspelt command were not there; say that it is no command, as without --help
        if let refused = UnknownCommand.refuseHelp(arguments: arguments ?? Array(CommandLine.arguments.dropFirst())) {
            StandardStreams.writeError(refused.hasSuffix("\n") ? refused : refused + "\n")
            exit(ExitStatus.usageError.rawValue)
        }
        var command: any ParsableCommand
        do {
            command = try OpacityCommand.parseAsRoot(arguments)
        } catch {
            // a value refused for an option with a list of values: the message also names the nearest;
            // a path given bare to a command that takes it as an option: the command line meant
            // a command name that names none (`opacity trian`): the nearest command and the list;
            // an option spelt longer or shorter than the command's (`--limit-validation`): that option
            let message = OpacityCommand.fullMessage(for: error)
            let words = arguments ?? Array(CommandLine.arguments.dropFirst())
            var amended = UnknownCommand.amend(message, arguments: words) ?? ChoiceErrors.amend(message) ?? StrayArguments.amend(message, arguments: words)
            // (its first line, after the others: a value after the option may read as a stray argument)
            if let option = UnknownOption.amend(amended ?? message, arguments: words) { amended = option }
            if OpacityCommand.exitCode(for: error) == .validationFailure, let amended {
                StandardStreams.writeError(amended.hasSuffix("\n") ? amended : amended + "\n")
                exit(ExitStatus.usageError.rawValue)
            }
            // usage errors, --help and --version, as ArgumentParser prints them
            OpacityCommand.exit(withError: error)
        }
        RuntimeOptions.warnAboutThreadsVariable(for: command)
        do {
            try command.run()
        } catch let error as ValidationError {
            // found while running: ArgumentParser would add the root command's usage line, which
            // says nothing about this command or this error
            OutputFolders.removeEmpty()
            StandardStreams.writeError(rankPrefix + "Error: \(error.message)\n")
            exit(ExitStatus.usageError.rawValue)
        } catch {
            OutputFolders.removeEmpty()
            OpacityCommand.exit(withError: LibraryWording.amend(error))
        }
        exit(StandardStreams.outputClosed ? ExitStatus.outputClosed.rawValue : ExitStatus.success.rawValue)
    }
}

/// What the commands share in one process: the plugin list given to ``OpacityMain/run(plugins:arguments:)``.
final class CommandContext: @unchecked Sendable {
    static let shared = CommandContext()

    private let lock = NSLock()
    private var plugins: [any OpacityPlugin.Type] = builtinPlugins

    func setPlugins(_ list: [any OpacityPlugin.Type]) {
        lock.lock()
        plugins = list
        lock.unlock()
    }

    /// A registry of the plugins this command line was started with, then those of the
    /// shared libraries in `OPACITY_PLUGINS` and of `pluginPaths` (`--plugin`), in that order.
    ///
    /// - Throws: `DynamicPluginError` for a library that does not load (it names the file),
    ///   `ConfigError.duplicateName` when two plugins register the same name.
    static func registry(pluginPaths: [String] = []) throws -> Registry {
        shared.lock.lock()
        var list = shared.plugins
        shared.lock.unlock()
        for path in DynamicPluginLoader.environmentPaths() {
            list += try DynamicPluginLoader.load(path, source: DynamicPluginLoader.environmentVariable)
        }
        for path in pluginPaths { list += try DynamicPluginLoader.load(path, source: "--plugin") }
        return try Registry(plugins: list)
    }
}
