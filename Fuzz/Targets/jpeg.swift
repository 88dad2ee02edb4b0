import FuzzSupport
import Foundation
import Opacity

/// JPEG decoding (libjpeg-turbo through the data layer, as for `.jpg` inputs and JPEG
/// frames inside DICOM files).
@main
struct Main {
    static func main() { Fuzz.run(fuzzJPEG) }
}

func fuzzJPEG(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = Data(Fuzz.bytes(data, size))
    _ = try? JPEG.decodeGray(bytes, path: "fuzz.jpg")
    return 0
}
