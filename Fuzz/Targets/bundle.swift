import FuzzSupport
import Foundation
import Opacity

/// Weight bundles: header, metadata JSON, tensor table, zstd data, the table check against a
/// model and the strict load (as written, and with the CRCs recomputed so mutations reach
/// the JSON and the table). Config strings are fuzzed by the `config` target.
@main
struct Main {
    static func main() { Fuzz.run(fuzzBundle) }
}

func fuzzBundle(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = Fuzz.bytes(data, size)
    for bytes in [input, Fuzz.resignBundle(input)] {
        guard let reader = try? BundleReader(bytes: bytes, url: URL(fileURLWithPath: "/fuzz/input.opb")) else { continue }
        _ = try? reader.verify()
        if (try? Detector.checkTable(reader.info, against: Fuzz.tinyDetector, file: "fuzz")) != nil {
            _ = try? Fuzz.tinyDetector.loadWeights(reader: reader)
        }
    }
    return 0
}
