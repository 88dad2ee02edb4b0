import Foundation
import OpacityTensor
import OpacityCore

/// Why an import failed.
///
/// (An unknown key map or a checkpoint whose numerics do not fit the encoder is a
/// ``CheckpointError``.)
public enum ImportError: Error, CustomStringConvertible, Sendable {
    /// The source's tensors do not fit the encoder; nothing was written.
    case doesNotFit(file: String, encoder: String, report: ImportReport)

    public var description: String {
        switch self {
        case let .doesNotFit(file, encoder, report):
            return "\(file) does not fit encoder \(encoder); nothing was written:\n" + report.description
        }
    }
}

/// What an import mapped, converted and dropped.
public struct ImportReport: Sendable, CustomStringConvertible {
    /// One source tensor that became an encoder tensor.
    public struct Mapping: Sendable {
        /// The name in the source file.
        public var source: String
        /// The encoder's name for it.
        public var target: String
        /// The shape in the source file.
        public var sourceShape: [Int]
        /// The encoder's shape.
        public var targetShape: [Int]
        /// A conversion applied, e.g. the 3-to-1-channel stem sum.
        public var conversion: String?
    }

    /// The source file.
    public var source: String = ""
    /// The encoder's canonical config.
    public var encoder: String = ""
    /// The key map used.
    public var keyMap: String = ""
    /// Tensors that mapped, in the encoder's order.
    public var mapped: [Mapping] = []
    /// Source tensors left out on purpose, with the reason (classifier, batch-norm counters).
    public var dropped: [(name: String, reason: String)] = []
    /// Source tensors with no place in the encoder.
    public var unexpected: [(name: String, shape: [Int])] = []
    /// Encoder tensors the source lacks.
    public var missing: [String] = []
    /// Names present in both whose shapes cannot be reconciled.
    public var mismatched: [(name: String, source: [Int], target: [Int])] = []
    /// Encoder tensors left at their initial values (only with `allowMissing`).
    public var initialised: [String] = []
    /// What was written, if anything.
    public var written: BundleSummary?
    /// Another key map of the encoder's under which every encoder name is found, when this one failed.
    public var suggestedKeyMap: String?
    /// Why the checkpoint's numerics differ from the encoder's, when the import was told to
    /// accept that (``WeightImport/importEncoder(from:encoder:registry:keyMap:to:storage:allowMissing:allowUnexpected:allowDifferentNumerics:provenance:)``).
    public var numericsDiffer: String?

    /// Whether every encoder tensor came from the source and every source tensor was used or
    /// dropped on purpose.
    public var isComplete: Bool { missing.isEmpty && unexpected.isEmpty && mismatched.isEmpty }

    /// The renamed and converted tensors, one per line (for `--verbose`).
    public var details: String {
        mapped.map { m in
            "  \(m.source)" + (m.source == m.target ? "" : " -> \(m.target)") + " \(describe(m.sourceShape))"
                + (m.conversion.map { " -> \(describe(m.targetShape)) (\($0))" } ?? "")
        }.joined(separator: "\n")
    }

    public var description: String {
        var lines = ["\(source) -> encoder \(encoder) (key map \(keyMap)): \(mapped.count) tensors mapped, \(mapped.filter { $0.source != $0.target }.count) renamed"]
        for m in mapped where m.conversion != nil {
            lines.append("  converted: \(m.target) \(describe(m.sourceShape)) -> \(describe(m.targetShape)): \(m.conversion!)")
        }
        var reasons: [String: [String]] = [:]
        for d in dropped { reasons[d.reason, default: []].append(d.name) }
        for (reason, names) in reasons.sorted(by: { $0.key < $1.key }) {
            lines.append("  dropped (\(reason)): " + (names.count > 6 ? "\(names.count) tensors, e.g. \(names.prefix(3).joined(separator: ", "))" : names.joined(separator: ", ")))
        }
        if !unexpected.isEmpty {
            lines.append("  unexpected (\(unexpected.count), not in the encoder): " + unexpected.prefix(12).map { "\($0.name) \(describe($0.shape))" }.joined(separator: ", ") + (unexpected.count > 12 ? ", ..." : ""))
        }
        if !missing.isEmpty {
            lines.append("  missing (\(missing.count), not in the file): " + missing.prefix(12).joined(separator: ", ") + (missing.count > 12 ? ", ..." : ""))
        }
        if !mismatched.isEmpty {
            lines.append("  mis-shaped (\(mismatched.count)): " + mismatched.prefix(12).map { "\($0.name) file \(describe($0.source)) encoder \(describe($0.target))" }.joined(separator: ", "))
        }
        if !initialised.isEmpty { lines.append("  left at initial values (--allow-missing): \(initialised.count) tensors") }
        if let n = numericsDiffer { lines.append("  warning: imported although its numerics differ from the encoder's: \(n)") }
        if let k = suggestedKeyMap { lines.append("  hint: key map '\(k)' finds every encoder tensor in this file; try --key-map \(k)") }
        if let w = written { lines.append("  wrote \(w)") }
        return lines.joined(separator: "\n")
    }
}

/// Imports weights published elsewhere (safetensors from timm or Hugging Face) into an
/// encoder bundle that detectors can start from (`opacity train --encoder-weights FILE` or
/// ``Detector/loadEncoderWeights(from:)``).
public enum WeightImport {
    /// Maps a safetensors file onto an encoder and writes an encoder bundle.
    ///
    /// Names map one to one after `keyMap` (one of the encoder's registered key maps, see
    /// ``CheckpointNaming`` and ``Registry/keyMap(_:encoder:)``). A 3-channel stem (`[O, 3, kh, kw]`) becomes the
    /// encoder's 1-channel stem by summing the kernels over the input channels, which gives
    /// the same output as feeding the grey image three times. The ImageNet classifier and
    /// batch-norm step counters (`num_batches_tracked`) are dropped (the classifier's names are
    /// the encoder's ``CheckpointNaming/classifierPrefixes``). F16, BF16 and F64
    /// tensors are converted to f32.
    /// - Parameters:
    ///   - source: the safetensors file.
    ///   - encoder: an encoder config string, e.g. `resnet34` or `seresnext50_32x4d`.
    ///   - registry: knows the encoder.
    ///   - keyMap: renames source keys first (``KeyMap/identity`` for timm).
    ///   - output: the bundle to write; `nil` checks only (a dry run).
    ///   - storage: storage policy of the bundle.
    ///   - allowMissing: keep initial values for encoder tensors the file lacks instead of failing.
    ///   - allowUnexpected: ignore source tensors the encoder lacks instead of failing.
    ///   - allowDifferentNumerics: import a checkpoint whose convention the encoder's plugin
    ///     marks as trained for other numerics (``KeyMap/numericsDiffer``) instead of failing.
    /// - Returns: the report (with the summary of what was written).
    /// - Throws: ``CheckpointError/numericsDiffer(file:encoder:keyMap:reason:)`` when the key
    ///   map, or the convention the file's names are recognised as, does not fit the encoder's
    ///   numerics; ``ImportError/doesNotFit(file:encoder:report:)`` with the full report when
    ///   names or shapes do not fit (nothing is written in either case), ``SafeTensorsError``,
    ///   ``ConfigError``, ``BundleError``.
    @discardableResult
    public static func importEncoder(from source: URL, encoder: String, registry: Registry, keyMap: KeyMap = .identity,
                                     to output: URL?, storage: StoragePolicy = .fp32, allowMissing: Bool = false,
                                     allowUnexpected: Bool = false, allowDifferentNumerics: Bool = false,
                                     provenance: Provenance = Provenance()) throws -> ImportReport {
        let resolved = try registry.resolve(Config(parsing: encoder), as: .encoder)
        let canonical = resolved.canonical.description
        let factory = try registry.encoderFactory(resolved.name)
        let naming = factory.checkpoint
        let file = try SafeTensorsFile(source)

        var report = ImportReport(source: source.lastPathComponent, encoder: canonical, keyMap: keyMap.name)
        // the plugin's word on numerics: the chosen map's, and any map that recognises the names
        let sourceNameSet = Set(file.entries.map(\.name))
        let differing = ([keyMap] + naming.allKeyMaps.filter { $0.name != keyMap.name && ($0.recognises?(sourceNameSet) ?? false) })
            .first { $0.numericsDiffer != nil }
        if let differing, let reason = differing.numericsDiffer {
            guard allowDifferentNumerics else {
                throw CheckpointError.numericsDiffer(file: source.path, encoder: canonical, keyMap: differing.name, reason: reason)
            }
            report.numericsDiffer = reason
        }
        let module = try factory.make(resolved)
        let targets = module.stateDict()
        let targetShapes = Dictionary(uniqueKeysWithValues: targets.map { ($0.0, $0.1.shape) })
        var sourceFor: [String: SafeTensorsFile.Entry] = [:]
        for e in file.entries {
            guard let name = keyMap.map(e.name) else {
                report.dropped.append((e.name, "dropped by key map \(keyMap.name)"))
                continue
            }
            guard let shape = targetShapes[name] else {
                if name.hasSuffix("num_batches_tracked") {
                    report.dropped.append((e.name, "batch-norm step counter, not used"))
                } else if naming.classifierPrefixes.contains(where: { name.hasPrefix($0) }) {
                    report.dropped.append((e.name, "ImageNet classifier"))
                } else {
                    report.unexpected.append((e.name, e.shape))
                }
                continue
            }
            guard sourceFor[name] == nil else {
                report.mismatched.append((name, e.shape, shape))
                continue
            }
            guard e.isFloatingPoint else {
                report.mismatched.append((name + " (dtype \(e.dtype))", e.shape, shape))
                continue
            }
            if e.shape == shape || isStemSum(from: e.shape, to: shape) {
                sourceFor[name] = e
            } else {
                report.mismatched.append((name, e.shape, shape))
            }
        }
        var tensors: [(String, Tensor)] = []
        let misShaped = Set(report.mismatched.map(\.name))
        for (name, initial) in targets {
            guard let e = sourceFor[name] else {
                if misShaped.contains(name) { continue }
                report.missing.append(name)
                if allowMissing {
                    report.initialised.append(name)
                    tensors.append((name, initial))
                }
                continue
            }
            var t = try file.tensor(e.name)
            var conversion: String?
            if e.shape != initial.shape {
                t = sumInputChannels(t)
                conversion = "3-channel stem summed over input channels"
            }
            report.mapped.append(.init(source: e.name, target: name, sourceShape: e.shape, targetShape: initial.shape, conversion: conversion))
            tensors.append((name, t))
        }
        let fits = report.mismatched.isEmpty && (allowMissing || report.missing.isEmpty) && (allowUnexpected || report.unexpected.isEmpty)
        guard fits else {
            let sourceNames = file.entries.map(\.name)
            report.suggestedKeyMap = naming.allKeyMaps.first { m in
                m.name != keyMap.name && Set(sourceNames.compactMap(m.map)).isSuperset(of: targetShapes.keys)
            }?.name
            throw ImportError.doesNotFit(file: source.path, encoder: canonical, report: report)
        }
        // final check: the bundle loads strictly into the encoder
        try module.load(Dictionary(uniqueKeysWithValues: tensors))
        guard let output else { return report }
        var prov = provenance
        if prov.source == nil { prov.source = source.lastPathComponent }
        if prov.notes == nil {
            prov.notes = "imported with key map \(keyMap.name)"
                + (report.numericsDiffer.map { " (accepted although its numerics differ: \($0))" } ?? "") + (file.metadata.isEmpty ? "" : "; source metadata \(file.metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))")
        }
        let meta = BundleMetadata(kind: .encoder, config: canonical, provenance: prov)
        report.written = try WeightBundle.write(to: output, metadata: meta, groups: [TensorGroup(WeightBundle.modelGroup, tensors, storage: storage)])
        return report
    }

    /// Whether a `[O, 3, kh, kw]` kernel can become `[O, 1, kh, kw]` by summing.
    static func isStemSum(from s: [Int], to t: [Int]) -> Bool {
        s.count == 4 && t.count == 4 && s[1] == 3 && t[1] == 1 && s[0] == t[0] && s[2] == t[2] && s[3] == t[3]
    }

    /// `[O, C, kh, kw]` -> `[O, 1, kh, kw]`, summing over C.
    public static func sumInputChannels(_ w: Tensor) -> Tensor {
        precondition(w.rank == 4, "sumInputChannels: expects [O, C, kh, kw], got \(describe(w.shape))")
        let (o, c, k) = (w.shape[0], w.shape[1], w.shape[2] * w.shape[3])
        var out = Tensor.zeros([o, 1, w.shape[2], w.shape[3]])
        w.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<o { for ch in 0..<c { for j in 0..<k { dst[i * k + j] += src[(i * c + ch) * k + j] } } }
            }
        }
        return out
    }
}
