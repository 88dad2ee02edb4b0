import Foundation
import OpacityTensor
import OpacityCore

/// Measures bundle save and load speed and size against raw fp32, for `opacity-bench`.
public enum BundleBenchmark {
    /// One measured storage type.
    public struct Row: Sendable {
        /// The storage policy.
        public var storage: String
        /// Size of the file in bytes.
        public var fileBytes: UInt64
        /// Raw fp32 bytes of the same tensors.
        public var rawFP32Bytes: UInt64
        /// Best save time in seconds.
        public var saveSeconds: Double
        /// Best load (read + decode to fp32) time in seconds.
        public var loadSeconds: Double
        /// Best full-verify time (every CRC plus zstd's checksum) in seconds.
        public var verifySeconds: Double

        /// Raw fp32 megabytes (10^6 bytes) saved per second.
        public var saveMBps: Double { Double(rawFP32Bytes) / 1e6 / saveSeconds }
        /// Raw fp32 megabytes loaded per second.
        public var loadMBps: Double { Double(rawFP32Bytes) / 1e6 / loadSeconds }
        /// File size as a fraction of raw fp32.
        public var ratio: Double { Double(fileBytes) / Double(rawFP32Bytes) }
    }

    /// Builds a detector from `config` (ResNet-34 RetinaNet by default) and benchmarks it.
    /// - Returns: a printable report.
    public static func run(registry: Registry, config: String = "retinanet(encoder=resnet34)",
                           storages: [StorageType] = StorageType.allCases, repeats: Int = 3,
                           compressionLevel: Int = 3, directory: URL? = nil) throws -> String {
        let detector = try registry.makeDetector(config)
        return try run(model: detector, name: detector.config, storages: storages, repeats: repeats,
                       compressionLevel: compressionLevel, directory: directory)
    }

    /// Saves and loads `model`'s state in each storage type, `repeats` times each, in a
    /// temporary folder (removed afterwards), and reports the best times.
    /// - Returns: a printable report with MB/s (of raw fp32 bytes) and sizes.
    public static func run(model: Module, name: String, storages: [StorageType] = StorageType.allCases,
                           repeats: Int = 3, compressionLevel: Int = 3, directory: URL? = nil) throws -> String {
        let rows = try measure(model: model, storages: storages, repeats: repeats, compressionLevel: compressionLevel, directory: directory)
        let raw = rows.first?.rawFP32Bytes ?? 0
        var lines = ["bundle: \(name), \(raw / 4) values, raw fp32 \(String(format: "%.1f", Double(raw) / 1e6)) MB, zstd level \(compressionLevel), best of \(repeats)"]
        lines.append("  storage   file MB  of fp32   save MB/s   load MB/s   verify MB/s")
        for r in rows {
            lines.append("  " + [r.storage.padding(toLength: 7, withPad: " ", startingAt: 0),
                                 String(format: "%8.1f", Double(r.fileBytes) / 1e6),
                                 String(format: "%7.1f%%", r.ratio * 100),
                                 String(format: "%11.0f", r.saveMBps),
                                 String(format: "%11.0f", r.loadMBps),
                                 String(format: "%13.0f", Double(r.rawFP32Bytes) / 1e6 / r.verifySeconds)].joined(separator: " "))
        }
        lines.append("  (MB/s counts raw fp32 megabytes of the model per second; load = read, check CRCs, decode to fp32)")
        return lines.joined(separator: "\n")
    }

    /// The measurements behind ``run(model:name:storages:repeats:compressionLevel:directory:)``.
    public static func measure(model: Module, storages: [StorageType] = StorageType.allCases, repeats: Int = 3,
                               compressionLevel: Int = 3, directory: URL? = nil) throws -> [Row] {
        let fm = FileManager.default
        let dir = (directory ?? fm.temporaryDirectory).appendingPathComponent("opacity-bundle-bench-\(UInt32.random(in: 0...UInt32.max))")
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: dir) }
        let state = model.stateDict()
        let detector = model as? Detector
        var rows: [Row] = []
        for s in storages {
            let url = dir.appendingPathComponent("bench-\(s).opb")
            var best = (save: Double.infinity, load: Double.infinity, verify: Double.infinity)
            var summary: BundleSummary?
            for _ in 0..<max(1, repeats) {
                try? fm.removeItem(at: url)
                var t = DispatchTime.now().uptimeNanoseconds
                if let detector {
                    summary = try detector.save(to: url, storage: .uniform(s), compressionLevel: compressionLevel)
                } else {
                    summary = try WeightBundle.write(to: url, metadata: BundleMetadata(kind: .tensors),
                                                     groups: [TensorGroup(WeightBundle.modelGroup, state, storage: .uniform(s))],
                                                     compressionLevel: compressionLevel)
                }
                best.save = min(best.save, Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9)
                t = DispatchTime.now().uptimeNanoseconds
                let loaded = try WeightBundle.read(url, groups: [WeightBundle.modelGroup])
                best.load = min(best.load, Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9)
                precondition(loaded[WeightBundle.modelGroup]?.count == state.count, "BundleBenchmark: read back a different number of tensors")
                t = DispatchTime.now().uptimeNanoseconds
                try WeightBundle.verify(url)
                best.verify = min(best.verify, Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9)
            }
            rows.append(Row(storage: StoragePolicy.uniform(s).name, fileBytes: summary!.fileBytes, rawFP32Bytes: summary!.rawFP32Bytes,
                            saveSeconds: best.save, loadSeconds: best.load, verifySeconds: best.verify))
        }
        return rows
    }
}
