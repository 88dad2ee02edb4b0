import FuzzSupport
import Foundation
import Opacity

/// CSV: the table reader, submissions, RSNA labels, boxes CSV and folds files.
@main
struct Main {
    static func main() { Fuzz.run(fuzzCSV) }
}

func fuzzCSV(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = Fuzz.bytes(data, size)
    _ = try? CSVTable(data: Data(bytes), path: "fuzz.csv")
    _ = try? Submission(data: Data(bytes), file: "fuzz.csv")
    let url = Fuzz.file(bytes, ext: "csv")
    _ = try? RSNALabels.load(labels: url, classInfo: nil)
    _ = try? Folds.read(from: url)
    _ = try? BoxesCSV.load(csv: url, imageFolder: url.deletingLastPathComponent())
    return 0
}
