import FuzzSupport
import Foundation
import Opacity

/// Zoo manifests (JSON, entries, names, hashes, URLs).
@main
struct Main {
    static func main() { Fuzz.run(fuzzZooManifest) }
}

func fuzzZooManifest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let url = Fuzz.file(Fuzz.bytes(data, size), ext: "json")
    _ = try? ZooManifest.read(url)
    return 0
}
