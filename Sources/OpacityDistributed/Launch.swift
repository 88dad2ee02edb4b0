import Foundation

/// How this process was started: plainly, or as one rank of an MPI job (mpirun, srun).
///
/// Detection reads only the environment, so a plain start never touches MPI:
/// - Open MPI's `mpirun`: `OMPI_COMM_WORLD_SIZE`, `OMPI_COMM_WORLD_RANK`,
///   `OMPI_COMM_WORLD_LOCAL_SIZE`, `OMPI_COMM_WORLD_LOCAL_RANK`;
/// - Slurm `srun --mpi=pmix`: `PMIX_RANK` with `SLURM_NTASKS` / `SLURM_STEP_NUM_TASKS`,
///   `SLURM_LOCALID` and `SLURM_STEP_TASKS_PER_NODE` (or `SLURM_TASKS_PER_NODE`);
/// - PMI-2 launchers (`srun --mpi=pmi2`, Hydra): `PMI_RANK`, `PMI_SIZE`.
public struct LaunchEnvironment: Sendable, Equatable {
    /// Which launcher was recognised: `mpirun`, `slurm-pmix`, `pmi`.
    public var launcher: String
    /// Rank in the job, `0..<size`.
    public var rank: Int
    /// Processes in the job.
    public var size: Int
    /// Rank among the processes on this machine.
    public var localRank: Int
    /// Processes of the job on this machine.
    public var localSize: Int

    /// A launch description (for tests and for a `--distributed` start without a launcher).
    public init(launcher: String, rank: Int, size: Int, localRank: Int, localSize: Int) {
        self.launcher = launcher
        self.rank = rank
        self.size = size
        self.localRank = localRank
        self.localSize = localSize
    }

    /// The launch recognised in `environment`, or `nil` for a plain start.
    public static func detect(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> LaunchEnvironment? {
        func int(_ k: String) -> Int? { environment[k].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } }
        if let size = int("OMPI_COMM_WORLD_SIZE"), let rank = int("OMPI_COMM_WORLD_RANK") {
            return LaunchEnvironment(launcher: "mpirun", rank: rank, size: size,
                                     localRank: int("OMPI_COMM_WORLD_LOCAL_RANK") ?? 0,
                                     localSize: int("OMPI_COMM_WORLD_LOCAL_SIZE") ?? 1)
        }
        if let rank = int("PMIX_RANK"), let size = int("SLURM_STEP_NUM_TASKS") ?? int("SLURM_NTASKS") ?? int("PMIX_SIZE") {
            let local = environment["SLURM_STEP_TASKS_PER_NODE"] ?? environment["SLURM_TASKS_PER_NODE"]
            return LaunchEnvironment(launcher: "slurm-pmix", rank: rank, size: size, localRank: int("SLURM_LOCALID") ?? 0,
                                     localSize: local.flatMap(Self.firstTaskCount) ?? 1)
        }
        if let rank = int("PMI_RANK"), let size = int("PMI_SIZE") {
            return LaunchEnvironment(launcher: "pmi", rank: rank, size: size, localRank: int("MPI_LOCALRANKID") ?? 0,
                                     localSize: int("MPI_LOCALNRANKS") ?? 1)
        }
        return nil
    }

    /// The compute threads per rank that fill this machine without oversubscribing it:
    /// `cores / localSize`, at least 1.
    public func defaultThreads(cores: Int = ProcessInfo.processInfo.activeProcessorCount) -> Int {
        max(1, cores / max(1, localSize))
    }

    /// Slurm's tasks-per-node lists look like `4(x2),3`; the first count is this node's
    /// upper bound, good enough for dividing cores.
    static func firstTaskCount(_ s: String) -> Int? {
        let head = s.split(separator: ",").first.map(String.init) ?? s
        return Int(head.split(separator: "(").first ?? "")
    }
}
