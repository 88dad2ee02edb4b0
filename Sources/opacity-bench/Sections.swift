import Foundation
import Opacity

/// One part of the benchmark report, selected by name on the command line.
struct BenchSection: Sendable {
    /// The command-line name (`blas`, `conv`, `resnet50`, ...).
    let name: String
    /// One line for `--help`.
    let summary: String
    /// Whether the section runs when no section is named.
    let runsByDefault: Bool
    /// Prints the section's measurements; may record figures in the context for later
    /// sections (the conv section reads the sgemm figure of the blas section).
    let run: @Sendable (inout BenchContext) -> Void

    /// Every section, in report order. Add new sections here (one file each).
    static let all: [BenchSection] = [
        .blas,
        .conv,
        .grouped,
        .tails,
        .resnet50,
        .detector,
        .detect,
        .loader,
        .bundle,
        .onnx,
        .allreduce,
        .scaling,
    ]

    static func named(_ name: String) -> BenchSection? { all.first { $0.name == name } }
}
