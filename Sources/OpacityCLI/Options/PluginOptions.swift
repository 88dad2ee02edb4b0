import ArgumentParser
import Foundation
import Opacity

/// `--plugin PATH`: backbone plugins built as shared libraries, for every command that builds
/// models (with the paths in `OPACITY_PLUGINS`, which are loaded first).
struct PluginOptions: ParsableArguments {
    @Option(
        name: .customLong("plugin"),
        help: ArgumentHelp(
            "Load a plugin built as a shared library against OpacityDynamic (repeatable; also OPACITY_PLUGINS, colon-separated; Documentation/AddingABackbone.md).",
            valueName: "lib.so"))
    var paths: [String] = []

    func validate() throws {
        for path in paths {
            try requireExistingPath("--plugin", path, directory: false, expected: "a shared library (lib<Name>.so) of a plugin package")
        }
    }

    /// A registry of this command line's plugins, the `OPACITY_PLUGINS` libraries and the
    /// `--plugin` libraries.
    ///
    /// - Throws: `DynamicPluginError` for a library that does not load, `ConfigError` for a
    ///   name registered twice.
    func registry() throws -> Registry { try CommandContext.registry(pluginPaths: paths) }
}
