import Foundation
import Opacity

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

/// Helpers shared by the fuzz targets.
public enum Fuzz {
    /// Runs libFuzzer's driver (its usual command line) on `callback`; each target's `main`.
    /// (SwiftPM gives executables their own entry point, so libFuzzer's `main` is not used.)
    public static func run(_ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Never {
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, callback))
    }

    /// The fuzz input as bytes.
    public static func bytes(_ start: UnsafePointer<UInt8>?, _ count: Int) -> [UInt8] {
        guard let start, count > 0 else { return [] }
        return Array(UnsafeBufferPointer(start: start, count: count))
    }

    /// A per-process scratch file holding `bytes`, for parsers that read files.
    public static func file(_ bytes: [UInt8], ext: String) -> URL {
        let url = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("opacity-fuzz-\(getpid()).\(ext)")
        _ = FileManager.default.createFile(atPath: url.path, contents: Data(bytes))
        return url
    }

    /// Recomputes a bundle's metadata and header CRC-32s, so that mutations reach the JSON
    /// and table checks instead of stopping at the checksums.
    public static func resignBundle(_ b: [UInt8]) -> [UInt8] {
        guard b.count >= 48 else { return b }
        var b = b
        let m = (16..<24).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64(b[$1]) }
        if m <= UInt64(b.count - 48) {
            let crc = CRC32.checksum(Array(b[48..<(48 + Int(m))]))
            for i in 0..<4 { b[40 + i] = UInt8((crc >> (8 * UInt32(i))) & 0xFF) }
        }
        let h = CRC32.checksum(Array(b[0..<44]))
        for i in 0..<4 { b[44 + i] = UInt8((h >> (8 * UInt32(i))) & 0xFF) }
        return b
    }

    /// The standard registry, made once.
    public static let registry: Registry = try! Registry.standard()

    /// The config of ``tinyDetector`` (also a bundle seed's).
    public static let tinyConfig = "retinanet(encoder=resnet18(width=0.125), head=retina(channels=8), neck=fpn(channels=8), size=32)"

    /// A small detector that fuzzed bundle tables are checked against and loaded into.
    nonisolated(unsafe) public static let tinyDetector: Detector = try! Initializer.withSeed(1) { try registry.makeDetector(tinyConfig) }
}
