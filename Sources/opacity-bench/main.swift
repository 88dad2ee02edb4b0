// opacity-bench: measures the tensor engine, real detectors, the data loader, bundles,
// ONNX Runtime and MPI.
//
//     swift run -c release opacity-bench [section] [options]
//     swift run -c release opacity-bench report [section ...] [options]
//
// Each section is one file in this folder that defines a `BenchSection` (listed in
// `BenchSection.all`) and one subcommand in Commands.swift; add new ones the same way.
import Foundation
import OpacityDistributed

// Under mpirun (the allreduce and scaling sections launch themselves so), only rank 0 prints.
if let launch = LaunchEnvironment.detect(), launch.rank != 0 {
    let devnull = open("/dev/null", O_WRONLY)
    if devnull >= 0 { dup2(devnull, STDOUT_FILENO) }
}

// `opacity-bench blas conv resnet50 ...` and `opacity-bench all ...` (several sections, as
// before subcommands) mean `opacity-bench report blas conv resnet50 ...`.
var arguments = Array(CommandLine.arguments.dropFirst())
let sectionNames = Set(Report.Name.allCases.map(\.rawValue))
if let first = arguments.first, first == "all" || (arguments.count > 1 && sectionNames.contains(first) && sectionNames.contains(arguments[1])) {
    arguments.insert("report", at: 0)
}
OpacityBench.main(arguments)
