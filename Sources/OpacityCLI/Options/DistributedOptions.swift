import ArgumentParser
import Foundation
import Opacity
import OpacityDistributed

/// Whether this process's `say`/`note` lines are shown: ranks other than 0 of a
/// distributed command are silent unless `--print-all-ranks` is given.
nonisolated(unsafe) var outputSilenced = false

/// Options of the commands that run data-parallel under MPI (`train`, `eval`, `detect`,
/// `submit`). See Documentation/Distributed.md.
struct DistributedOptions: ParsableArguments {
    @Flag(name: .long, help: "Run as one rank of an MPI job even where the launcher is not recognised (under mpirun or srun --mpi=pmix this is detected).")
    var distributed = false

    @Flag(name: .long, help: "Under MPI, every rank prints its lines (prefixed with its rank); by default only rank 0 does.")
    var printAllRanks = false

    /// The process group: MPI when started by mpirun or srun (or with `--distributed`),
    /// else a single process; MPI is initialised only in the first case. Sets the compute
    /// threads: `threads`, or (under MPI) the machine's cores divided by the ranks on it.
    /// - Throws: ``MPIError`` when MPI cannot start.
    func makeGroup(threads: Int?) throws -> ProcessGroup {
        let launch = LaunchEnvironment.detect()
        guard distributed || launch != nil else {
            if let threads { Compute.threads = threads }
            return SingleProcess()
        }
        let world = try MPIRuntime.initialize()
        let group = MPIProcessGroup(world: world)
        Compute.threads = threads ?? (launch ?? LaunchEnvironment(launcher: "singleton", rank: 0, size: 1, localRank: 0, localSize: 1)).defaultThreads()
        if group.rank != 0 && !printAllRanks { outputSilenced = true }
        if printAllRanks { rankPrefix = "[rank \(group.rank)] " }
        return group
    }

    /// One header line: processes, launcher and threads per process.
    func describe(_ group: ProcessGroup) -> String {
        guard let g = group as? MPIProcessGroup else { return "processes: 1 (plain start), threads: \(Compute.threads)" }
        let launch = LaunchEnvironment.detect()
        return "processes: \(g.size) (MPI, \(launch?.launcher ?? "--distributed"), \(MPIRuntime.libraryVersion)), threads per process: \(Compute.threads)"
    }
}

/// Prefix of every printed line (`--print-all-ranks`).
nonisolated(unsafe) var rankPrefix = ""

/// Runs a command's body; under MPI an error on any rank stops the whole job with
/// `MPI_Abort` and a message naming the rank and the cause (the other ranks may be waiting
/// in a collective and could not otherwise end). `ExitCode`s (e.g. an interrupted run,
/// which every rank reaches together) pass through.
///
/// While a signal handler is ending the process (``ProcessLeaving``), neither an error nor
/// the end of the body ends it: the handler exits once rank 0's checkpoint is written; a
/// signal after the body has ended is left to the normal exit.
func runCollectively(_ group: ProcessGroup, command: String, _ body: () throws -> Void) throws {
    guard group is MPIProcessGroup else { return try body() }
    do {
        try body()
        ProcessLeaving.end()
    } catch let e as ExitCode {
        ProcessLeaving.end()
        throw e
    } catch let e as CleanExit { throw e } catch {
        ProcessLeaving.end()
        group.abort("opacity \(command): rank \(group.rank) of \(group.size) failed, stopping all ranks: \(error)")
    }
}

/// Splits `count` items into `chunk`-sized batches and gives each rank a contiguous block of
/// whole batches, so each image is processed in the same batch (same neighbours, same
/// arithmetic) as in a one-process run.
func shardedRange(_ count: Int, chunk: Int, group: ProcessGroup) -> Range<Int> {
    let batches = (count + chunk - 1) / max(1, chunk)
    let b = group.block(batches)
    return min(count, b.lowerBound * chunk)..<min(count, b.upperBound * chunk)
}
