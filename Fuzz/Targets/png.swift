import FuzzSupport
import Foundation
import Opacity

/// PNG decoding (libpng through the data layer), and the generic image reader.
@main
struct Main {
    static func main() { Fuzz.run(fuzzPNG) }
}

func fuzzPNG(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = Fuzz.bytes(data, size)
    if let img = try? PNG.decode(Data(bytes), path: "fuzz.png") { _ = img.gray }
    return 0
}
