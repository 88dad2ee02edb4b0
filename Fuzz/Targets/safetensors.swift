import FuzzSupport
import Foundation
import Opacity

/// safetensors files: header length, JSON header, entries, data offsets, tensor reads.
@main
struct Main {
    static func main() { Fuzz.run(fuzzSafeTensors) }
}

func fuzzSafeTensors(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let url = Fuzz.file(Fuzz.bytes(data, size), ext: "safetensors")
    guard let f = try? SafeTensorsFile(url) else { return 0 }
    for e in f.entries.prefix(16) { _ = try? f.tensor(e.name) }
    return 0
}
