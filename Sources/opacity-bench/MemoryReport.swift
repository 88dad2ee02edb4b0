import Foundation
import Opacity
import OpacityTensor

/// With `OPACITY_MEMORY_REPORT=1`, `opacity-bench detector` prints where the training step's
/// memory goes, for its last repetition: the bytes of tensor storage alive at each point of
/// the step and the most alive in the stretch before it, the parameters, gradients and
/// optimizer state, the storage pool's cached blocks and derived values, and what the
/// autograd graph saved for backward by operation kind (``Autograd/measuringSavedTensors(_:)``).
final class MemoryProbe {
    /// Whether the report is asked for.
    static let enabled = ProcessInfo.processInfo.environment["OPACITY_MEMORY_REPORT"] == "1"

    private var marks: [(name: String, live: Int, peak: Int, rss: Double?, faults: Int, mapped: Int)] = []
    var saved: [String: (bytes: Int, nodes: Int)] = [:]

    init() {
        SparseActivation.resetTotals()
        TensorMemory.resetLivePeak()
        mark("start")
    }

    /// Notes the bytes alive now and the peak since the previous mark.
    func mark(_ name: String) {
        var usage = rusage()
        #if os(Linux)
            getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        #else
            getrusage(RUSAGE_SELF, &usage)
        #endif
        marks.append((name, TensorMemory.liveBytes, TensorMemory.livePeakBytes, currentResident(), usage.ru_minflt, TensorStorage.mappedBytes))
        TensorMemory.resetLivePeak()
    }

    /// What each column of the table of points means, printed under the table.
    static let columnKey = [
        "key: point = where in the step; each row covers the stretch since the row above (start: before the forward pass)",
        "     alive = MiB of tensor storage alive at the point; peak before = the most tensor storage alive during the stretch",
        "     rss = the whole process's resident memory at the point (VmRSS, MiB)",
        "     page faults, MiB mapped before = minor page faults during the stretch, and the MiB the storage pool newly mapped from the system then (reused blocks cost no faults)",
    ]

    /// Prints the report.
    func report(parameters: [Parameter], optimizerState: [String: Tensor], checkpointing: GradientCheckpointing) {
        func mib(_ b: Int) -> String { fmt(Double(b) / 1_048_576, 1) }
        let values = parameters.reduce(0) { $0 + $1.value.count * 4 }
        let grads = parameters.reduce(0) { $0 + ($1.grad?.count ?? 0) * 4 }
        let state = optimizerState.values.reduce(0) { $0 + $1.count * 4 }
        print("    training step memory (OPACITY_MEMORY_REPORT, last repetition, grad_checkpointing=\(checkpointing.rawValue); MiB of tensor storage):")
        print(
            "      after the step: parameters \(mib(values)), gradients \(mib(grads)) (the step releases them, as the trainer does), optimizer state \(mib(state)); pool cached \(mib(TensorMemory.pooledBytes)), derived values \(mib(TensorMemory.derivedCachedBytes))"
        )
        print("      \(pad("point", 22)) \(pad("alive", 9)) \(pad("peak before", 12)) \(pad("rss", 6)) page faults, MiB mapped before")
        for (i, m) in marks.enumerated() {
            let rss = m.rss.map { fmt($0 / 1_048_576, 0) } ?? "?"
            let faults = i == 0 ? "" : "\(m.faults - marks[i - 1].faults), \(mib(m.mapped - marks[i - 1].mapped))"
            print("      \(pad(m.name, 22)) \(pad(mib(m.live), 9)) \(pad(mib(m.peak), 12)) \(pad(rss, 6)) \(faults)")
        }
        for line in Self.columnKey { print("      " + line) }
        if let peak = Autograd.backwardPeak {
            print(
                "      backward's peak, \(mib(peak.bytes)) MiB of tensor storage, came in the backward of \(peak.op) \(peak.shape) (node \(peak.position + 1) of \(peak.nodes) in the walk); then the pool cached \(mib(peak.pooledBytes)) MiB of free blocks and \(mib(peak.idleScratchBytes)) of idle kernel scratch"
            )
        }
        let total = saved.values.reduce(0) { $0 + $1.bytes }
        print(
            "      saved for backward (freed with each node\(checkpointing == .none ? "" : "; with checkpointing, 'checkpoint' is what the segments kept and the other kinds include what their recomputations saved, one segment at a time")), \(mib(total)) MiB in all:"
        )
        for (op, v) in saved.sorted(by: { $0.value.bytes > $1.value.bytes }) where v.bytes > 0 {
            print("        \(pad(op, 28)) \(pad(mib(v.bytes), 9)) \(v.nodes) nodes")
        }
        let sparse = SparseActivation.totals
        if Autograd.sparseActivations {
            let zeros = sparse.mapBytes > 0 ? " (\(fmt(100 * (1 - Double(sparse.packedBytes - sparse.mapBytes / 32) / Double(sparse.mapBytes)), 0))% zeros)" : ""
            print(
                "      maps kept without their zeros (ReLU outputs, frozen norms' inputs; the default, OPACITY_SPARSE_ACTIVATIONS=0 keeps them whole): \(sparse.maps) maps, \(mib(sparse.mapBytes)) MiB as maps, \(mib(sparse.packedBytes)) MiB packed\(zeros); \(sparse.whole) kept whole (too few zeros), \(mib(sparse.wholeBytes)) MiB"
            )
        } else {
            print("      ReLU outputs and norms' inputs kept as maps (OPACITY_SPARSE_ACTIVATIONS=0)")
        }
    }
}

/// The resident set size now (`VmRSS`) in bytes, or nil where /proc is missing.
func currentResident() -> Double? {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
        let kb = Double(line.split(separator: " ").dropFirst().first ?? "")
    else { return nil }
    return kb * 1024
}
