// opacity-bench: measures the tensor engine (and, later, the data loader and bundles).
//
//     swift run -c release opacity-bench [section ...] [options]
//
// Sections run in the order given (default: all of `BenchSection.all` that are marked
// default). Each section is one file in this folder that adds a `BenchSection` to
// `BenchSection.all`; add new ones (`loader`, `bundle`, ...) the same way.
import Foundation
import Opacity
import OpacityDistributed

// Under mpirun (the allreduce and scaling sections launch themselves so), only rank 0 prints.
if let launch = LaunchEnvironment.detect(), launch.rank != 0 {
    let devnull = open("/dev/null", O_WRONLY)
    if devnull >= 0 { dup2(devnull, STDOUT_FILENO) }
}

let options: BenchOptions
do {
    options = try BenchOptions.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    FileHandle.standardError.write(Data("opacity-bench: \(error)\n\n\(BenchOptions.usage)\n".utf8))
    exit(2)
}
if options.help {
    print(BenchOptions.usage)
    exit(0)
}
Compute.threads = options.threads ?? Compute.threads
benchClock = options.clock
var context = BenchContext(options: options)
context.printHeader()
for section in options.sections {
    section.run(&context)
}
