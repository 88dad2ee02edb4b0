import Foundation
import OpacityCore

/// Why a bundle could not be read or written. Every case names the file; those about a
/// place in the file say where (byte offset, header field, tensor name).
public enum BundleError: Error, CustomStringConvertible, Sendable {
    /// The file could not be opened, read, written or renamed.
    case io(file: String, operation: String, reason: String)
    /// The file does not start with the bundle magic bytes: it is not an Opacity bundle.
    case wrongMagic(file: String, found: [UInt8])
    /// The file is a bundle of a format version this build does not read.
    case unsupportedVersion(file: String, found: UInt32, supported: [UInt32])
    /// The file ends before its header says it should.
    case truncated(file: String, section: String, expectedBytes: UInt64, actualBytes: UInt64)
    /// The file is longer than its header says.
    case trailingBytes(file: String, expectedBytes: UInt64, actualBytes: UInt64)
    /// The fixed header fails its checksum or holds an impossible field value.
    case corruptHeader(file: String, field: String, reason: String)
    /// The metadata (JSON with the tensor table) fails its CRC-32: corrupt or edited.
    case metadataChecksumMismatch(file: String, offset: UInt64, length: UInt64, expected: UInt32, actual: UInt32)
    /// The metadata is not the JSON the format requires.
    case invalidMetadata(file: String, field: String, reason: String)
    /// The tensor table is inconsistent (offsets, lengths, shapes, dtypes, names).
    case invalidTensorTable(file: String, tensor: String, field: String, reason: String)
    /// The compressed data cannot be decompressed.
    case corruptData(file: String, tensor: String?, compressedOffset: UInt64, reason: String)
    /// A tensor's stored bytes fail their CRC-32.
    case tensorChecksumMismatch(file: String, tensor: String, dataOffset: UInt64, expected: UInt32, actual: UInt32)
    /// A value cannot be stored in the requested storage type (e.g. 70000 as f16).
    case unrepresentable(file: String, tensor: String, storage: StorageType, index: Int, value: Float)
    /// Two tensors of one group share a name, or a name or group is empty.
    case invalidName(file: String, name: String, reason: String)
    /// The bundle holds a different kind of model than asked for.
    case wrongKind(file: String, expected: String, found: String)
    /// The bundle's config string cannot be built by the registry.
    case cannotBuild(file: String, config: String, reason: String)
    /// The bundle's tensors do not fit the model; nothing was loaded.
    case doesNotFit(file: String, report: LoadReport)
    /// A group the caller asked for is not in the bundle.
    case missingGroup(file: String, group: String, available: [String])
    /// A free-form metadata value could not be encoded or decoded.
    case extraValue(file: String, key: String, reason: String)
    /// The bundle was saved for a different config than the model it is loaded into.
    case configMismatch(file: String, bundle: String, model: String)

    public var description: String {
        switch self {
        case let .io(file, op, reason):
            return "\(file): cannot \(op): \(reason)"
        case let .wrongMagic(file, found):
            return "\(file): not an Opacity bundle (first bytes \(found.map { String(format: "%02x", $0) }.joined(separator: " ")), expected 89 4f 50 42 0d 0a 1a 0a)"
        case let .unsupportedVersion(file, found, supported):
            return "\(file): bundle format version \(found) is not supported by this build (reads \(supported.map(String.init).joined(separator: ", "))); update Opacity or re-save the bundle"
        case let .truncated(file, section, expected, actual):
            return "\(file): truncated in the \(section): the header promises \(expected) bytes, the file has \(actual)"
        case let .trailingBytes(file, expected, actual):
            return "\(file): \(actual - expected) unexpected bytes after the end of the bundle (expected \(expected) bytes, found \(actual))"
        case let .corruptHeader(file, field, reason):
            return "\(file): corrupt header, field \(field): \(reason)"
        case let .metadataChecksumMismatch(file, offset, length, expected, actual):
            return "\(file): metadata and tensor table (bytes \(offset)..<\(offset + length)) fail their CRC-32 (stored \(hex(expected)), computed \(hex(actual))): the file is corrupt or was edited"
        case let .invalidMetadata(file, field, reason):
            return "\(file): invalid metadata at \(field): \(reason)"
        case let .invalidTensorTable(file, tensor, field, reason):
            return "\(file): invalid tensor table entry '\(tensor)', field \(field): \(reason)"
        case let .corruptData(file, tensor, offset, reason):
            return "\(file): corrupt compressed data near byte \(offset) of the data section" + (tensor.map { " (tensor '\($0)')" } ?? "") + ": \(reason)"
        case let .tensorChecksumMismatch(file, tensor, dataOffset, expected, actual):
            return "\(file): tensor '\(tensor)' (decompressed bytes from \(dataOffset)) fails its CRC-32 (stored \(hex(expected)), computed \(hex(actual))): the file is corrupt"
        case let .unrepresentable(file, tensor, storage, index, value):
            return "\(file): tensor '\(tensor)' holds \(value) at flat index \(index), which \(storage) storage cannot represent; use fp32 or bf16 storage for it"
        case let .invalidName(file, name, reason):
            return "\(file): invalid tensor name '\(name)': \(reason)"
        case let .wrongKind(file, expected, found):
            return "\(file): holds a \(found) bundle, expected a \(expected) bundle"
        case let .cannotBuild(file, config, reason):
            return "\(file): cannot build the bundle's model '\(InputLimits.quotedConfig(config, limit: 400))': \(reason)"
        case let .doesNotFit(file, report):
            if let f = report.firstNonFinite, report.missing.isEmpty, report.unexpected.isEmpty, report.mismatched.isEmpty {
                let others = report.nonFinite.filter { $0 != f.name }
                return "\(file): tensor '\(f.name)' holds \(f.value) (element \(f.index)): the bundle's weights are not finite; nothing was loaded"
                    + (others.isEmpty ? "" : ". Also not finite (\(others.count)): " + others.prefix(8).joined(separator: ", ") + (others.count > 8 ? ", …" : ""))
                    + ". Load anyway with --allow-nonfinite (LoadOptions.allowNonFinite)"
            }
            // "nothing was loaded" once, with how many tensors would have fitted
            return "\(file): the bundle's tensors do not fit the model; nothing was loaded (\(report.loaded.count) tensors would have fitted):\n"
                + report.problems.joined(separator: "\n")
        case let .missingGroup(file, group, available):
            return "\(file): no tensor group '\(group)' (the bundle has: \(available.isEmpty ? "none" : available.joined(separator: ", ")))"
        case let .extraValue(file, key, reason):
            return "\(file): metadata extra '\(key)': \(reason)"
        case let .configMismatch(file, bundle, model):
            return "\(file) holds weights for '\(InputLimits.quotedConfig(bundle, limit: 400))', but the model is '\(InputLimits.quotedConfig(model, limit: 400))'"
        }
    }
}

func hex(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - s.count)) + s
}
