import FuzzSupport
import Foundation
import Opacity

/// DICOM files: the header (nested sequences, VR detection, numeric fields), every
/// transfer syntax's pixel data (native, RLE, JPEG baseline/lossless, JPEG 2000 through
/// the codecs), frames, the modality and display transforms.
@main
struct Main {
    static func main() { Fuzz.run(fuzzDICOM) }
}

func fuzzDICOM(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = Data(Fuzz.bytes(data, size))
    _ = try? DICOM.decodeHeader(bytes, path: "fuzz.dcm")
    guard let image = try? DICOM.decode(bytes, path: "fuzz.dcm") else { return 0 }
    _ = image.modalityValues()
    _ = image.displayImage()
    _ = image.displayImage(window: .fixed(center: 40, width: 400))
    _ = image.displayImage(window: .minMax)
    if image.header.numberOfFrames > 1 { _ = try? DICOM.decode(bytes, path: "fuzz.dcm", frame: image.header.numberOfFrames) }
    return 0
}
