import Foundation
import OpacityTensor
import OpacityCore

/// Named tensors to write into a bundle as one group, with the storage policy to use.
public struct TensorGroup {
    /// The group's name, e.g. ``WeightBundle/modelGroup`` or ``WeightBundle/optimizerGroup``.
    public var name: String
    /// The tensors by path, in the order to store them.
    public var tensors: [(String, Tensor)]
    /// How to store each tensor.
    public var storage: StoragePolicy

    /// A group of tensors.
    public init(_ name: String, _ tensors: [(String, Tensor)], storage: StoragePolicy = .fp32) {
        self.name = name
        self.tensors = tensors
        self.storage = storage
    }
}

/// What writing a bundle produced.
public struct BundleSummary: Sendable, CustomStringConvertible {
    /// The file written.
    public var url: URL
    /// The number of tensors.
    public var tensorCount: Int
    /// The number of scalar values.
    public var valueCount: Int
    /// Bytes the values take as raw fp32 (`4 * valueCount`).
    public var rawFP32Bytes: UInt64
    /// Bytes of the data section before compression.
    public var storedBytes: UInt64
    /// Bytes of the whole file.
    public var fileBytes: UInt64

    /// File size as a fraction of raw fp32.
    public var ratio: Double { rawFP32Bytes == 0 ? 0 : Double(fileBytes) / Double(rawFP32Bytes) }

    public var description: String {
        "\(url.lastPathComponent): \(tensorCount) tensors, \(valueCount) values, \(fileBytes) bytes (\(String(format: "%.1f", ratio * 100))% of raw fp32 \(rawFP32Bytes))"
    }
}

/// Everything a bundle says about itself, read without touching the tensor data.
public struct BundleInfo: Sendable {
    /// The file.
    public var url: URL
    /// The format version of the file.
    public var formatVersion: UInt32
    /// Size of the file in bytes.
    public var fileBytes: UInt64
    /// Bytes of the compressed data section.
    public var dataBytes: UInt64
    /// Bytes of the decompressed data section.
    public var rawDataBytes: UInt64
    /// The metadata.
    public var metadata: BundleMetadata
    /// The tensor table, in storage order.
    public var tensors: [TensorEntry]

    /// The groups present, in order of first appearance.
    public var groups: [String] {
        var seen: [String] = []
        for t in tensors where !seen.contains(t.group) { seen.append(t.group) }
        return seen
    }

    /// The number of values in a group (all groups when `nil`).
    public func valueCount(group: String? = nil) -> Int {
        tensors.filter { group == nil || $0.group == group }.reduce(0) { $0 + $1.count }
    }
}

/// Reading and writing weight bundles: one zstd-compressed file holding a versioned header,
/// JSON metadata with the tensor table, and the tensor data (Documentation/Bundles.md).
///
/// Higher-level entry points: ``Detector/save(to:storage:metadata:compressionLevel:)``,
/// ``Detector/load(from:registry:options:)`` and ``Checkpoint``.
public enum WeightBundle {
    /// The group holding a model's parameters and buffers.
    public static let modelGroup = "model"
    /// The group holding optimizer state in a training checkpoint.
    public static let optimizerGroup = "optimizer"

    // MARK: Writing

    /// Writes tensors and metadata to `url` atomically.
    ///
    /// Encodes each tensor twice (once for the table's checksums, once into the
    /// compressor), so memory stays at one tensor's encoded copy plus zstd's buffers.
    /// The file appears under `url` only when complete and flushed; on any error no file
    /// is left behind and an existing file at `url` is untouched.
    /// - Parameters:
    ///   - url: the file to write (its folder must exist).
    ///   - metadata: config, provenance, metrics, extras; `frameworkVersion` is set to
    ///     this build and `storage` to the model group's policy.
    ///   - groups: the tensors; names must be unique within a group.
    ///   - compressionLevel: zstd level, 1 (fast) to 19 (small); 3 by default.
    /// - Returns: sizes of what was written.
    /// - Throws: ``BundleError`` (a value the storage cannot hold, a duplicate name, I/O).
    @discardableResult
    public static func write(to url: URL, metadata: BundleMetadata, groups: [TensorGroup],
                             compressionLevel: Int = 3) throws -> BundleSummary {
        let file = url.path
        var meta = metadata
        meta.frameworkVersion = FrameworkVersion.current
        if meta.storage.isEmpty {
            meta.storage = (groups.first { $0.name == modelGroup } ?? groups.first)?.storage.name ?? "fp32"
        }

        // Pass 1: storage types, lengths and checksums.
        struct Item { let tensor: Tensor; let entry: TensorEntry }
        var items: [Item] = []
        var offset: UInt64 = 0
        var valueCount = 0
        var scratch = Scratch()
        defer { scratch.free() }
        for g in groups {
            guard !g.name.isEmpty else { throw BundleError.invalidName(file: file, name: g.name, reason: "group names must not be empty") }
            var seen = Set<String>()
            for (name, tensor) in g.tensors {
                guard !name.isEmpty else { throw BundleError.invalidName(file: file, name: name, reason: "tensor names must not be empty (group \(g.name))") }
                guard seen.insert(name).inserted else { throw BundleError.invalidName(file: file, name: name, reason: "appears twice in group \(g.name)") }
                let dtype = g.storage.choose(name, tensor.shape)
                guard let length = dtype.storedLength(shape: tensor.shape) else {
                    throw BundleError.invalidName(file: file, name: name, reason: "shape \(tensor.shape) cannot be stored as \(dtype) (policy \(g.storage.name)); i8 needs rank 2 or more")
                }
                let crc = try withEncoded(tensor, dtype: dtype, length: length, name: name, file: file, scratch: &scratch) { CRC32.checksum($0) }
                items.append(Item(tensor: tensor, entry: TensorEntry(name: name, group: g.name, dtype: dtype, shape: tensor.shape,
                                                                     offset: offset, length: UInt64(length), crc32: crc)))
                offset += UInt64(length)
                valueCount += tensor.count
            }
        }
        let json: [UInt8]
        do { json = Array(try BundleDocument.encoder().encode(BundleDocument(meta, table: items.map(\.entry)))) } catch {
            throw BundleError.invalidMetadata(file: file, field: "(metadata)", reason: "cannot encode as JSON: \(error)")
        }
        var header = BundleHeader(metadataLength: UInt64(json.count), dataLength: 0, rawDataLength: offset,
                                  metadataCRC: CRC32.checksum(json))

        // Pass 2: header, metadata, compressed data; then the final header.
        try AtomicFile.write(url) { out in
            try header.encoded().withUnsafeBytes { try out.file.write($0) }
            try json.withUnsafeBytes { try out.file.write($0) }
            let z = try ZstdCompressor(level: compressionLevel, pledgedSize: offset, file: file)
            let sink: (UnsafeRawBufferPointer) throws -> Void = { try out.file.write($0) }
            for item in items {
                try withEncoded(item.tensor, dtype: item.entry.dtype, length: Int(item.entry.length), name: item.entry.name,
                                file: file, scratch: &scratch) { try z.compress($0, sink: sink) }
            }
            try z.finish(sink: sink)
            header.dataLength = z.produced
            try out.file.write(header.encoded(), at: 0)
        }
        return BundleSummary(url: url, tensorCount: items.count, valueCount: valueCount, rawFP32Bytes: UInt64(valueCount) * 4,
                             storedBytes: offset, fileBytes: header.totalLength)
    }

    /// A reusable encoding buffer.
    struct Scratch {
        var buffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        mutating func get(_ n: Int) -> UnsafeMutableRawBufferPointer {
            if buffer.count < n {
                buffer.deallocate()
                buffer = .allocate(byteCount: max(n, 1), alignment: 64)
            }
            return UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
        }
        func free() { buffer.deallocate() }
    }

    /// Calls `body` with the stored bytes of `tensor` as `dtype` (no copy for f32 on
    /// little-endian machines).
    static func withEncoded<R>(_ tensor: Tensor, dtype: StorageType, length: Int, name: String, file: String,
                               scratch: inout Scratch, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        #if _endian(little)
        if dtype == .f32 { return try tensor.withUnsafeBufferPointer { try body(UnsafeRawBufferPointer($0)) } }
        #endif
        let buf = scratch.get(length)
        do {
            try tensor.withUnsafeBufferPointer { try StorageCodec.encode($0, shape: tensor.shape, as: dtype, into: buf) }
        } catch let e as StorageCodec.Unrepresentable {
            throw BundleError.unrepresentable(file: file, tensor: name, storage: dtype, index: e.index, value: e.value)
        }
        return try body(UnsafeRawBufferPointer(buf))
    }

    // MARK: Reading

    /// Reads a bundle's header, metadata and tensor table without touching the data.
    /// - Throws: ``BundleError`` saying what is wrong and where.
    public static func info(_ url: URL) throws -> BundleInfo { try BundleReader(url).info }

    /// Reads tensors from a bundle, decompressing as a stream and checking every tensor's
    /// CRC-32. Reading stops after the last tensor asked for.
    /// - Parameters:
    ///   - url: the bundle.
    ///   - groups: the groups to read (all when `nil`).
    ///   - include: a further filter on table rows.
    /// - Returns: `Float32` tensors by group, then by name.
    /// - Throws: ``BundleError``; nothing is returned from a file that fails a check.
    public static func read(_ url: URL, groups: Set<String>? = nil,
                            where include: ((TensorEntry) -> Bool)? = nil) throws -> [String: [String: Tensor]] {
        try BundleReader(url).tensors(groups: groups, where: include)
    }

    /// Checks a whole bundle: header, metadata, table, every tensor's CRC-32 and zstd's
    /// frame checksum. Keeps no tensors in memory.
    /// - Returns: the bundle's info.
    /// - Throws: the first ``BundleError`` found.
    @discardableResult
    public static func verify(_ url: URL) throws -> BundleInfo {
        let r = try BundleReader(url)
        try r.verify()
        return r.info
    }
}
