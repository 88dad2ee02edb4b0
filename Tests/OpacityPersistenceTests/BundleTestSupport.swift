import Foundation
import OpacityCore
import OpacityPersistence
import XCTest

/// A fresh temporary folder, removed by `tearDown`.
class TemporaryFolderTestCase: XCTestCase {
    var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-\(type(of: self))-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let folder { try? FileManager.default.removeItem(at: folder) }
    }

    func file(_ name: String) -> URL { folder.appendingPathComponent(name) }

    /// Files in the folder, hidden ones (temporary files) included.
    func folderContents() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
    }
}

/// A tensor of normal random values.
func randomTensor(_ shape: [Int], seed: UInt64, std: Float = 1) -> Tensor {
    var rng = RandomGenerator(seed: seed)
    return Tensor.randomNormal(shape, std: std, using: &rng)
}

/// The kind of a bundle error, for assertions.
func bundleErrorKind(_ error: Error) -> String {
    guard let e = error as? BundleError else { return "not a BundleError: \(error)" }
    switch e {
    case .io: return "io"
    case .wrongMagic: return "wrongMagic"
    case .unsupportedVersion: return "unsupportedVersion"
    case .truncated: return "truncated"
    case .trailingBytes: return "trailingBytes"
    case .corruptHeader: return "corruptHeader"
    case .metadataChecksumMismatch: return "metadataChecksumMismatch"
    case .invalidMetadata: return "invalidMetadata"
    case .invalidTensorTable: return "invalidTensorTable"
    case .corruptData: return "corruptData"
    case .tensorChecksumMismatch: return "tensorChecksumMismatch"
    case .unrepresentable: return "unrepresentable"
    case .invalidName: return "invalidName"
    case .wrongKind: return "wrongKind"
    case .cannotBuild: return "cannotBuild"
    case .doesNotFit: return "doesNotFit"
    case .missingGroup: return "missingGroup"
    case .extraValue: return "extraValue"
    case .configMismatch: return "configMismatch"
    }
}

/// Reads the metadata JSON of a bundle file's bytes.
func bundleMetadataRange(_ bytes: [UInt8]) -> Range<Int> {
    let m = (16..<24).reversed().reduce(0) { $0 << 8 | Int(bytes[$1]) }
    return 48..<(48 + m)
}

/// Recomputes a bundle's metadata and header CRCs after an edit, as a deliberate tamperer would.
func resign(_ bytes: inout [UInt8]) {
    let r = bundleMetadataRange(bytes)
    let crc = CRC32.checksum(Array(bytes[r]))
    for i in 0..<4 { bytes[40 + i] = UInt8((crc >> (8 * UInt32(i))) & 0xFF) }
    let h = CRC32.checksum(Array(bytes[0..<44]))
    for i in 0..<4 { bytes[44 + i] = UInt8((h >> (8 * UInt32(i))) & 0xFF) }
}
