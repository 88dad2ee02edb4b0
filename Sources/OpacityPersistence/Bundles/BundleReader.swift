import Foundation
import OpacityTensor
import OpacityCore

/// An open bundle whose header, metadata and tensor table have been checked.
///
/// Use ``WeightBundle/info(_:)``, ``WeightBundle/read(_:groups:where:)`` and
/// ``WeightBundle/verify(_:)`` for one-shot access; keep a reader to read the metadata
/// first and the tensors after.
public final class BundleReader {
    /// The header, metadata and table.
    public let info: BundleInfo
    private let file: FileDescriptor
    private let dataStart: UInt64

    /// Opens `url` and checks everything but the tensor data.
    /// - Throws: ``BundleError``: ``BundleError/wrongMagic(file:found:)``,
    ///   ``BundleError/unsupportedVersion(file:found:supported:)``,
    ///   ``BundleError/truncated(file:section:expectedBytes:actualBytes:)``,
    ///   ``BundleError/corruptHeader(file:field:reason:)``,
    ///   ``BundleError/metadataChecksumMismatch(file:offset:length:expected:actual:)``,
    ///   ``BundleError/invalidMetadata(file:field:reason:)`` or
    ///   ``BundleError/invalidTensorTable(file:tensor:field:reason:)``.
    public convenience init(_ url: URL) throws {
        try self.init(file: try FileDescriptor.open(reading: url.path), url: url)
    }

    /// Opens bundle bytes already in memory (`url` names them in errors and in ``info``), so
    /// that what is parsed is exactly what was read once and hash-checked (see
    /// ``Zoo/verifiedBytes(_:)``).
    /// - Throws: as ``init(_:)``.
    public convenience init(bytes: [UInt8], url: URL) throws {
        try self.init(file: FileDescriptor.memory(bytes, path: url.path), url: url)
    }

    init(file: FileDescriptor, url: URL) throws {
        let path = url.path
        self.file = file
        let size = try file.size()
        let head = try file.read(count: BundleFormat.headerSize, at: 0)
        if head.isEmpty {
            throw BundleError.truncated(file: path, section: "fixed header", expectedBytes: UInt64(BundleFormat.headerSize), actualBytes: 0)
        }
        let header = try BundleHeader.parse(head, fileSize: size, file: path)
        let metaStart = UInt64(BundleFormat.headerSize)
        let json = try file.read(count: Int(header.metadataLength), at: metaStart)
        guard json.count == Int(header.metadataLength) else {
            throw BundleError.truncated(file: path, section: "metadata", expectedBytes: header.totalLength, actualBytes: metaStart + UInt64(json.count))
        }
        let crc = CRC32.checksum(json)
        guard crc == header.metadataCRC else {
            throw BundleError.metadataChecksumMismatch(file: path, offset: metaStart, length: header.metadataLength,
                                                       expected: header.metadataCRC, actual: crc)
        }
        let (metadata, table) = try BundleReader.parseMetadata(json, header: header, file: path)
        dataStart = metaStart + header.metadataLength
        info = BundleInfo(url: url, formatVersion: header.version, fileBytes: size, dataBytes: header.dataLength,
                          rawDataBytes: header.rawDataLength, metadata: metadata, tensors: table)
    }

    static func parseMetadata(_ json: [UInt8], header: BundleHeader, file: String) throws -> (BundleMetadata, [TensorEntry]) {
        let doc: BundleDocument
        guard InputLimits.jsonDepth(json) <= InputLimits.nestingDepth else {
            throw BundleError.invalidMetadata(file: file, field: "(document)", reason: "JSON nested deeper than \(InputLimits.nestingDepth) levels")
        }
        do { doc = try BundleDocument.decoder().decode(BundleDocument.self, from: Data(json)) } catch {
            let (field, reason) = decodingErrorParts(error)
            throw BundleError.invalidMetadata(file: file, field: field.isEmpty ? "(document)" : field, reason: reason)
        }
        guard doc.format == BundleDocument.formatName else {
            throw BundleError.invalidMetadata(file: file, field: "format", reason: "'\(doc.format)', expected '\(BundleDocument.formatName)'")
        }
        guard doc.formatVersion == header.version else {
            throw BundleError.invalidMetadata(file: file, field: "format_version", reason: "\(doc.formatVersion) disagrees with the header's version \(header.version)")
        }
        guard let kind = BundleMetadata.Kind(rawValue: doc.kind) else {
            let valid = BundleMetadata.Kind.allCases.map(\.rawValue)
            throw BundleError.invalidMetadata(file: file, field: "kind", reason: "'\(doc.kind)' is not one of \(valid.joined(separator: ", "))"
                                              + (nearestMatch(doc.kind, in: valid).map { "; did you mean '\($0)'?" } ?? ""))
        }
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        guard let created = f.date(from: doc.created) else {
            throw BundleError.invalidMetadata(file: file, field: "created", reason: "'\(doc.created)' is not an ISO 8601 time like 2024-01-31T12:00:00Z")
        }
        var meta = BundleMetadata(kind: kind, config: doc.config, provenance: doc.provenance, metrics: doc.metrics, extra: doc.extra)
        meta.frameworkVersion = doc.frameworkVersion
        meta.created = created
        meta.storage = doc.storage

        var table: [TensorEntry] = []
        table.reserveCapacity(doc.tensors.count)
        var offset: UInt64 = 0
        var seen = Set<String>()
        for (i, row) in doc.tensors.enumerated() {
            let label = row.name.isEmpty ? "tensors[\(i)]" : row.name
            func bad(_ field: String, _ reason: String) -> BundleError {
                .invalidTensorTable(file: file, tensor: label, field: field, reason: reason)
            }
            guard !row.name.isEmpty else { throw bad("name", "empty") }
            guard !row.group.isEmpty else { throw bad("group", "empty") }
            guard seen.insert(row.group + "\u{0}" + row.name).inserted else { throw bad("name", "appears twice in group \(row.group)") }
            guard let dtype = StorageType(rawValue: row.dtype) else {
                let valid = StorageType.allCases.map(\.rawValue)
                throw bad("dtype", "'\(row.dtype)' is not one of \(valid.joined(separator: ", "))" + (nearestMatch(row.dtype, in: valid).map { "; did you mean '\($0)'?" } ?? ""))
            }
            guard row.shape.allSatisfy({ $0 >= 0 }) else { throw bad("shape", "\(row.shape) has a negative dimension") }
            guard let length = dtype.storedLength(shape: row.shape) else {
                throw bad("shape", "\(row.shape) cannot be stored as \(dtype)" + (dtype == .i8 ? " (i8 needs rank 2 or more)" : " (too large)"))
            }
            guard row.length == UInt64(length) else {
                throw bad("length", "\(row.length) bytes, but shape \(row.shape) as \(dtype) takes \(length)")
            }
            guard row.offset == offset else {
                throw bad("offset", "\(row.offset), expected \(offset) (tensors are stored back to back in table order)")
            }
            offset += row.length
            guard offset <= header.rawDataLength else {
                throw bad("length", "ends at byte \(offset) of the data, beyond the header's raw data length \(header.rawDataLength)")
            }
            table.append(TensorEntry(name: row.name, group: row.group, dtype: dtype, shape: row.shape, offset: row.offset,
                                     length: row.length, crc32: row.crc32))
        }
        guard offset == header.rawDataLength else {
            throw BundleError.invalidTensorTable(file: file, tensor: "(table)", field: "length",
                                                 reason: "the tensors take \(offset) bytes but the header's raw data length is \(header.rawDataLength)")
        }
        return (meta, table)
    }

    /// Reads tensors as `Float32`, checking each one's CRC-32 (see ``WeightBundle/read(_:groups:where:)``).
    public func tensors(groups: Set<String>? = nil, where include: ((TensorEntry) -> Bool)? = nil) throws -> [String: [String: Tensor]] {
        if let groups {
            let have = Set(info.groups)
            for g in groups.sorted() where !have.contains(g) {
                throw BundleError.missingGroup(file: file.path, group: g, available: info.groups)
            }
        }
        let wanted = info.tensors.map { e in (groups?.contains(e.group) ?? true) && (include?(e) ?? true) }
        var out: [String: [String: Tensor]] = [:]
        guard let last = wanted.lastIndex(of: true) else { return out }
        try stream(through: last, keep: { wanted[$0] }) { i, e, bytes in
            out[e.group, default: [:]][e.name] = bytes.decode(e)
        }
        return out
    }

    /// Checks every tensor and the end of the frame (see ``WeightBundle/verify(_:)``).
    public func verify() throws {
        try stream(through: info.tensors.count - 1, keep: { _ in false }) { _, _, _ in }
    }

    /// The bytes of one tensor as they come out of the decompressor.
    struct StoredBytes {
        let raw: UnsafeRawBufferPointer
        let direct: Tensor?
        func decode(_ e: TensorEntry) -> Tensor {
            if let direct { return direct }
            var t = Tensor(uninitializedShape: e.shape)
            t.withUnsafeMutableBufferPointer { StorageCodec.decode(raw, shape: e.shape, as: e.dtype, into: $0) }
            return t
        }
    }

    /// Decompresses tensors 0...last in order, checks each CRC and hands the bytes of those
    /// `keep` selects to `body`; when `last` is the final tensor, also checks the end of the frame.
    private func stream(through last: Int, keep: (Int) -> Bool, _ body: (Int, TensorEntry, StoredBytes) throws -> Void) throws {
        let reader = try ZstdFrameReader(file: file, start: dataStart, length: info.dataBytes)
        var scratch = WeightBundle.Scratch()
        defer { scratch.free() }
        if last >= 0 {
            for i in 0...last {
                let e = info.tensors[i]
                if !keep(i) {
                    // checked, not kept: decompressed in bounded pieces, so a tensor that
                    // claims gigabytes never takes more than one piece of memory
                    var crc = CRC32()
                    var left = Int(e.length)
                    let piece = scratch.get(min(left, 4 << 20))
                    while left > 0 {
                        let n = min(left, piece.count)
                        let chunk = UnsafeMutableRawBufferPointer(rebasing: piece[0..<n])
                        try reader.read(into: chunk, tensor: e.name)
                        crc.update(UnsafeRawBufferPointer(chunk))
                        left -= n
                    }
                    guard crc.value == e.crc32 else {
                        throw BundleError.tensorChecksumMismatch(file: file.path, tensor: e.name, dataOffset: e.offset, expected: e.crc32, actual: crc.value)
                    }
                    continue
                }
                var direct: Tensor?
                let raw: UnsafeRawBufferPointer
                #if _endian(little)
                let kept = keep(i)
                if e.dtype == .f32, kept {
                    var t = Tensor(uninitializedShape: e.shape)
                    try t.withUnsafeMutableBufferPointer { try reader.read(into: UnsafeMutableRawBufferPointer($0), tensor: e.name) }
                    direct = t
                    raw = t.withUnsafeBufferPointer { UnsafeRawBufferPointer($0) }
                } else {
                    let buf = scratch.get(Int(e.length))
                    try reader.read(into: buf, tensor: e.name)
                    raw = UnsafeRawBufferPointer(buf)
                }
                #else
                let kept = keep(i)
                let buf = scratch.get(Int(e.length))
                try reader.read(into: buf, tensor: e.name)
                raw = UnsafeRawBufferPointer(buf)
                #endif
                let crc = CRC32.checksum(raw)
                guard crc == e.crc32 else {
                    throw BundleError.tensorChecksumMismatch(file: file.path, tensor: e.name, dataOffset: e.offset, expected: e.crc32, actual: crc)
                }
                if kept { try body(i, e, StoredBytes(raw: raw, direct: direct)) }
            }
        }
        if last == info.tensors.count - 1 { try reader.finish() }
    }
}
