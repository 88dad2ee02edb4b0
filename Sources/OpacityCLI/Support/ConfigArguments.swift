import ArgumentParser
import Opacity

/// A config string given on the command line (`train`'s and `demo`'s `--config`, `plugins
/// --canonical`, `import --encoder`), checked before anything loads or is written: a string
/// that does not parse, names a component or key the registry does not have, gives a value
/// out of range, or (a detector) whose parts do not fit, is an error in the command line,
/// exit status 64 (``ExitStatus/usageError``), as a value off an option's list is. The same
/// errors in a config read from a file (a bundle, a run's options.json) stay data errors (1).
///
/// - Parameters:
///   - text: the config string as given, e.g. `retinanet(encoder=resnet34, size=512)`.
///   - option: the option that gave it, named in the message (`--config`).
///   - kind: what the string names: a detector (its parts are also checked against each
///     other, without allocating weights) or an encoder.
///   - registry: the registry of the command's plugins.
/// - Returns: the canonical form (defaults elided, keys sorted).
/// - Throws: `ValidationError` naming the option with the registry's message (what was
///   expected, the nearest valid name, key or value).
func commandLineConfig(_ text: String, option: String, as kind: ComponentKind = .detector, registry: Registry) throws -> String {
    do {
        let canonical = try registry.canonical(text, as: kind)
        if kind == .detector { _ = try registry.checkDetector(canonical) }
        return canonical
    } catch let error as ConfigError {
        throw ValidationError("\(option): \(error)")
    }
}
