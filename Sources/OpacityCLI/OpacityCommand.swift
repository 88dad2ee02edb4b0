import ArgumentParser
import Foundation
import Opacity

/// The `opacity` command line.
struct OpacityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "opacity",
        abstract: "Find lung opacities on chest X-rays with single-shot detectors.",
        discussion: """
            Opacity rebuilds the RSNA Pneumonia Detection Challenge 2018 second-place method (RetinaNet with an extra small-anchor level, a global classifier with dropout, heavy augmentation, fold and checkpoint ensembles, box shrinking) in Swift, on the CPU.

            Start with `opacity demo`: it makes a synthetic chest X-ray set, trains a small model and shows what it finds. Models are named by config strings, e.g. `retinanet(encoder=resnet34, size=512, levels=2-7)`; `opacity plugins` lists every name.

            Exit status: 0 success, 1 data or runtime error (the message names the file), 64 usage error (an option or value the command does not take), 130 interrupted by Ctrl-C, 143 stopped by SIGTERM (`train` saves a checkpoint first on either; `serve` instead stops accepting, answers what is queued and exits 0 on either), 141 standard output closed by its reader (`| head`: nothing more is printed; `train` saves a checkpoint first).
            """,
        version: OpacityMain.version,
        subcommands: commandList)
}
