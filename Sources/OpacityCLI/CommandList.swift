import ArgumentParser

/// Every subcommand, in the order `opacity --help` shows them.
let commandList: [any ParsableCommand.Type] = [
    DemoCommand.self,
    SynthCommand.self,
    TrainCommand.self,
    FoldsCommand.self,
    EvalCommand.self,
    DetectCommand.self,
    ServeCommand.self,
    SubmitCommand.self,
    ScoreCommand.self,
    CompareCommand.self,
    ConvertCommand.self,
    AugmentPreviewCommand.self,
    PluginsCommand.self,
    ZooCommand.self,
    ImportCommand.self,
    ExportCommand.self,
]
