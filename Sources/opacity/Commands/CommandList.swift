import ArgumentParser

/// Every subcommand, in the order `opacity --help` shows them.
let commandList: [any ParsableCommand.Type] = [
    PluginsCommand.self,
]
