import Foundation
import OpacityTensor
import OpacityCore

/// Why a safetensors file could not be read or written.
public enum SafeTensorsError: Error, CustomStringConvertible, Sendable {
    /// The file could not be opened or read.
    case io(file: String, reason: String)
    /// The file is shorter than its header says.
    case truncated(file: String, section: String, expectedBytes: UInt64, actualBytes: UInt64)
    /// The JSON header is not valid.
    case invalidHeader(file: String, reason: String)
    /// One tensor's header entry is not valid.
    case invalidEntry(file: String, tensor: String, field: String, reason: String)
    /// A tensor's dtype cannot be converted to `Float32`.
    case unsupportedDType(file: String, tensor: String, dtype: String, supported: [String])
    /// No tensor of that name.
    case unknownTensor(file: String, name: String, nearest: String?)

    public var description: String {
        switch self {
        case let .io(file, reason): return "\(file): \(reason)"
        case let .truncated(file, section, expected, actual):
            return "\(file): truncated safetensors file: the \(section) needs \(expected) bytes, the file has \(actual)"
        case let .invalidHeader(file, reason): return "\(file): invalid safetensors header: \(reason)"
        case let .invalidEntry(file, tensor, field, reason): return "\(file): tensor '\(tensor)', field \(field): \(reason)"
        case let .unsupportedDType(file, tensor, dtype, supported):
            return "\(file): tensor '\(tensor)' has dtype \(dtype), which cannot be read as Float32 (readable: \(supported.joined(separator: ", ")))"
        case let .unknownTensor(file, name, nearest):
            return "\(file): no tensor '\(name)'" + (nearest.map { "; did you mean '\($0)'?" } ?? "")
        }
    }
}

/// A safetensors file (the format timm and Hugging Face publish weights in), opened for
/// reading one tensor at a time.
///
/// Layout: an 8-byte little-endian header length `N`, `N` bytes of JSON mapping each
/// tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}` (plus an optional
/// `__metadata__` object of strings), then the data; offsets are relative to the data.
public final class SafeTensorsFile {
    /// One tensor's header entry.
    public struct Entry: Sendable, Hashable {
        /// The tensor's name.
        public var name: String
        /// The dtype string: `F32`, `F16`, `BF16`, `F64`, `I64`, ...
        public var dtype: String
        /// The dimensions.
        public var shape: [Int]
        /// Byte range in the data section.
        public var begin: UInt64, end: UInt64

        /// Whether ``SafeTensorsFile/tensor(_:)`` can read it as `Float32`.
        public var isFloatingPoint: Bool { SafeTensorsFile.floatDTypes.contains(dtype) }
        /// The number of values.
        public var count: Int { shape.reduce(1, *) }
    }

    /// The file.
    public let url: URL
    /// Every tensor, in data order.
    public let entries: [Entry]
    /// The `__metadata__` strings.
    public let metadata: [String: String]
    private let byName: [String: Int]
    private let file: FileDescriptor
    private let dataStart: UInt64

    /// Dtypes read as `Float32`.
    public static let floatDTypes = ["F32", "F16", "BF16", "F64"]
    static let dtypeSizes: [String: Int] = [
        "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1,
        "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    ]

    /// Opens a file and checks its header.
    /// - Throws: ``SafeTensorsError`` naming the field that is wrong.
    public init(_ url: URL) throws {
        self.url = url
        let path = url.path
        do { file = try FileDescriptor.open(reading: path) } catch BundleError.io(_, let op, let reason) {
            throw SafeTensorsError.io(file: path, reason: "cannot \(op): \(reason)")
        }
        let size = try file.size()
        let lenBytes = try file.read(count: 8, at: 0)
        guard lenBytes.count == 8 else { throw SafeTensorsError.truncated(file: path, section: "header length", expectedBytes: 8, actualBytes: size) }
        let n = BundleHeader.u64(lenBytes, 0)
        guard n >= 2, n <= 100_000_000 else { throw SafeTensorsError.invalidHeader(file: path, reason: "header length \(n) is not plausible (not a safetensors file?)") }
        guard size >= 8 + n else { throw SafeTensorsError.truncated(file: path, section: "header", expectedBytes: 8 + n, actualBytes: size) }
        let json = try file.read(count: Int(n), at: 8)
        dataStart = 8 + n
        let dataSize = size - dataStart
        let object: [String: Any]
        guard InputLimits.jsonDepth(json) <= InputLimits.nestingDepth else {
            throw SafeTensorsError.invalidHeader(file: path, reason: "the header JSON is nested deeper than \(InputLimits.nestingDepth) levels")
        }
        do {
            guard let o = try JSONSerialization.jsonObject(with: Data(json)) as? [String: Any] else {
                throw SafeTensorsError.invalidHeader(file: path, reason: "the header is not a JSON object")
            }
            object = o
        } catch let e as SafeTensorsError { throw e } catch {
            throw SafeTensorsError.invalidHeader(file: path, reason: "not JSON: \(error.localizedDescription)")
        }
        var meta: [String: String] = [:]
        var list: [Entry] = []
        for (name, value) in object {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else { throw SafeTensorsError.invalidHeader(file: path, reason: "__metadata__ is not an object") }
                for (k, v) in m { meta[k] = (v as? String) ?? "\(v)" }
                continue
            }
            func bad(_ f: String, _ r: String) -> SafeTensorsError { .invalidEntry(file: path, tensor: name, field: f, reason: r) }
            guard let d = value as? [String: Any] else { throw bad("(entry)", "not an object") }
            guard let dtype = d["dtype"] as? String else { throw bad("dtype", "missing or not a string") }
            guard let elementSize = SafeTensorsFile.dtypeSizes[dtype] else {
                throw bad("dtype", "unknown dtype '\(dtype)'; known: \(SafeTensorsFile.dtypeSizes.keys.sorted().joined(separator: ", "))")
            }
            guard let shapeAny = d["shape"] as? [Any], let shape = shapeAny.map({ ($0 as? NSNumber)?.intValue ?? -1 }) as [Int]?,
                  shape.allSatisfy({ $0 >= 0 }) else { throw bad("shape", "missing or not a list of non-negative integers") }
            guard let offs = d["data_offsets"] as? [Any], offs.count == 2,
                  let b = (offs[0] as? NSNumber)?.uint64Value, let e = (offs[1] as? NSNumber)?.uint64Value, b <= e else {
                throw bad("data_offsets", "missing or not [begin, end] with begin <= end")
            }
            var count = 1
            for s in shape {
                let (m, o) = count.multipliedReportingOverflow(by: s)
                guard !o else { throw bad("shape", "\(shape) is too large") }
                count = m
            }
            let (bytes, overflow) = count.multipliedReportingOverflow(by: elementSize)
            guard !overflow else { throw bad("shape", "\(shape) is too large") }
            guard e - b == UInt64(bytes) else {
                throw bad("data_offsets", "[\(b), \(e)] spans \(e - b) bytes but shape \(shape) of \(dtype) needs \(bytes)")
            }
            guard e <= dataSize else {
                throw SafeTensorsError.truncated(file: path, section: "data of tensor '\(name)'", expectedBytes: dataStart + e, actualBytes: size)
            }
            list.append(Entry(name: name, dtype: dtype, shape: shape, begin: b, end: e))
        }
        list.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        for (a, b) in zip(list, list.dropFirst()) where b.begin < a.end && b.end > b.begin && a.end > a.begin {
            throw SafeTensorsError.invalidEntry(file: path, tensor: b.name, field: "data_offsets", reason: "overlaps tensor '\(a.name)'")
        }
        entries = list
        metadata = meta
        byName = Dictionary(uniqueKeysWithValues: list.enumerated().map { ($1.name, $0) })
    }

    /// The entry for `name`.
    /// - Throws: ``SafeTensorsError/unknownTensor(file:name:nearest:)``.
    public func entry(_ name: String) throws -> Entry {
        guard let i = byName[name] else {
            throw SafeTensorsError.unknownTensor(file: url.path, name: name, nearest: nearestMatch(name, in: entries.map(\.name)))
        }
        return entries[i]
    }

    /// Reads a floating-point tensor as `Float32` (F16, BF16 and F64 are converted).
    /// - Throws: ``SafeTensorsError/unsupportedDType(file:tensor:dtype:supported:)`` for
    ///   integer tensors, ``SafeTensorsError/unknownTensor(file:name:nearest:)``.
    public func tensor(_ name: String) throws -> Tensor {
        let e = try entry(name)
        guard e.isFloatingPoint else {
            throw SafeTensorsError.unsupportedDType(file: url.path, tensor: name, dtype: e.dtype, supported: SafeTensorsFile.floatDTypes)
        }
        let n = Int(e.end - e.begin)
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: max(n, 1), alignment: 64)
        defer { raw.deallocate() }
        let got = try file.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<n]), at: dataStart + e.begin)
        guard got == n else {
            throw SafeTensorsError.truncated(file: url.path, section: "data of tensor '\(name)'", expectedBytes: dataStart + e.end, actualBytes: dataStart + e.begin + UInt64(got))
        }
        var t = Tensor(uninitializedShape: e.shape)
        let src = UnsafeRawPointer(raw.baseAddress!)
        t.withUnsafeMutableBufferPointer { out in
            let count = out.count
            switch e.dtype {
            case "F32":
                for i in 0..<count { out[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))) }
            case "F16":
                for i in 0..<count { out[i] = StorageCodec.float(halfBits: UInt16(littleEndian: src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))) }
            case "BF16":
                for i in 0..<count { out[i] = StorageCodec.float(bfloat16Bits: UInt16(littleEndian: src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))) }
            default:  // F64
                for i in 0..<count { out[i] = Float(Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)))) }
            }
        }
        return t
    }

    /// Writes `Float32` tensors as a safetensors file (dtype `F32`), atomically; PyTorch's
    /// `safetensors.torch.load_file` reads it.
    /// - Throws: ``BundleError/io(file:operation:reason:)`` or ``SafeTensorsError/invalidEntry(file:tensor:field:reason:)`` for a duplicate name.
    public static func write(_ tensors: [(String, Tensor)], metadata: [String: String] = [:], to url: URL) throws {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for (name, t) in tensors {
            guard header[name] == nil, name != "__metadata__" else {
                throw SafeTensorsError.invalidEntry(file: url.path, tensor: name, field: "name", reason: "appears twice or is reserved")
            }
            header[name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + t.count * 4]] as [String: Any]
            offset += t.count * 4
        }
        var json = Array(try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        while json.count % 8 != 0 { json.append(0x20) }
        try AtomicFile.write(url) { f in
            try withUnsafeBytes(of: UInt64(json.count).littleEndian) { try f.file.write($0) }
            try json.withUnsafeBytes { try f.file.write($0) }
            for (_, t) in tensors {
                #if _endian(little)
                try t.withUnsafeBufferPointer { try f.file.write(UnsafeRawBufferPointer($0)) }
                #else
                let b = try StorageCodec.encode(t, as: .f32)
                try b.withUnsafeBytes { try f.file.write($0) }
                #endif
            }
        }
    }
}
