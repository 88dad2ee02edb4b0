import FuzzSupport
import Foundation
import Opacity

/// Config strings (parsed, resolved and checked against the registry, no weights built)
/// and augmentation strings.
@main
struct Main {
    static func main() { Fuzz.run(fuzzConfig) }
}

func fuzzConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let text = String(decoding: Fuzz.bytes(data, size), as: UTF8.self)
    if let c = try? Config(parsing: text) {
        _ = c.description
        _ = try? Fuzz.registry.checkDetector(text)
        _ = try? Fuzz.registry.canonical(c)
    }
    _ = try? AugmentationConfig(parsing: text)
    return 0
}
