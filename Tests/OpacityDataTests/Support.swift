import Foundation
import OpacityCore
import OpacityPersistence
import XCTest

/// The shared real test files: `<repo>/../shared/realdata`.
let realdata: URL = {
    URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // OpacityDataTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // repo root
        .deletingLastPathComponent()
        .appendingPathComponent("shared/realdata")
}()

let rsnaFolder = realdata.appendingPathComponent("rsna")
let rsnaImages = rsnaFolder.appendingPathComponent("stage_1_train_images")
let conformance = realdata.appendingPathComponent("dicom_conformance")

/// A fresh temporary folder, removed at process exit is not guaranteed; tests remove it.
func temporaryFolder(_ name: String = #function) throws -> URL {
    let safe = name.filter { $0.isLetter || $0.isNumber }
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("opacity-data-tests-\(safe)-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// The full `stage_2_train_labels.csv`, unzipped once per process with `/usr/bin/unzip -p`.
let fullLabelsCSV: URL = {
    let dest = FileManager.default.temporaryDirectory.appendingPathComponent("opacity-data-tests-stage_2_train_labels-\(getpid()).csv")
    if FileManager.default.fileExists(atPath: dest.path) { return dest }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/unzip")
    p.arguments = ["-p", rsnaFolder.appendingPathComponent("stage_2_train_labels.csv.zip").path]
    let pipe = Pipe()
    p.standardOutput = pipe
    try! p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    try! data.write(to: dest)
    return dest
}()

/// SHA-256 of `bytes`, lower-case hex (the core's implementation).
func sha256Hex(_ bytes: [UInt8]) -> String { SHA256.hash(bytes).hex }

/// Asserts that `body` throws an error whose description contains every one of `parts`.
func assertThrows<T>(_ body: @autoclosure () throws -> T, containing parts: [String],
                     file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected an error containing \(parts)", file: file, line: line)
    } catch {
        let text = "\(error)"
        for p in parts where !text.contains(p) {
            XCTFail("error '\(text)' does not mention '\(p)'", file: file, line: line)
        }
    }
}
