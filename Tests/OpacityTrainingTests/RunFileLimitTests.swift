import Foundation
import Opacity
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `compare`'s run files with limits: `log.jsonl` is read line by line with a 1 MiB limit on
/// a line (refused with its file and line, without reading the whole file), `options.json`
/// is refused by its size over 16 MiB; normal runs still compare.
final class RunFileLimitTests: XCTestCase {
    func folder(_ name: String = #function) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("opacity-runfiles-\(name.filter { $0.isLetter })-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// One epoch's record as the trainer writes it (keys sorted).
    func record(epoch: Int, valTotal: Double) -> String {
        """
        {"best":true,"checkpoint":"checkpoints/epoch-\(epoch).opb","epoch":\(epoch),"images_per_second":10,"lr":0.001,\
        "metric":{"best":0.2,"sweep":[[0.5,0.2]],"threshold":0.5},"seconds":1,"time":"2026-01-01T00:00:00Z",\
        "train":{"focal":1,"regression":1,"total":2},"train_images":10,"val":{"focal":1,"regression":1,"total":\(valTotal)},"val_images":5}
        """
    }

    /// A run folder holding `log` as its `log.jsonl`.
    func run(_ root: URL, _ name: String, log: String) throws -> URL {
        let dir = root.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Data(log.utf8).write(to: dir.appendingPathComponent("log.jsonl"))
        return dir
    }

    func testNormalLogsStillCompare() throws {
        let root = try folder()
        defer { try? FileManager.default.removeItem(at: root) }
        // a blank line, CRLF ends and a last line without a line end read as before
        let a = try run(root, "a", log: (1...3).map { record(epoch: $0, valTotal: 3 - Double($0) / 2) + "\n" }.joined())
        let b = try run(root, "b", log: record(epoch: 1, valTotal: 2) + "\r\n\n" + record(epoch: 2, valTotal: 1))
        XCTAssertEqual(try EpochLog.read(a.appendingPathComponent("log.jsonl")).map(\.epoch), [1, 2, 3])
        XCTAssertEqual(try EpochLog.read(b.appendingPathComponent("log.jsonl")).map(\.val.total), [2, 1])
        let c = try RunComparison(folders: [a, b])
        XCTAssertEqual(c.groups.map(\.label), ["a", "b"])
        XCTAssertEqual(c.groups.map { $0.runs[0].logs.count }, [3, 2])
        XCTAssertEqual(c.chart("val_total").series.map(\.points.count), [3, 2])
        // a line that is not a record is named by its line, blank lines counted
        let bad = try run(root, "bad", log: record(epoch: 1, valTotal: 2) + "\n\n{\"epoch\": 2}\n")
        XCTAssertThrowsError(try RunComparison(folders: [bad])) { e in
            guard case let RunError.malformed(path, line, _) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(path, bad.appendingPathComponent("log.jsonl").path)
            XCTAssertEqual(line, 3)
        }
        // nested too deep: refused before a decoder sees it
        let deep = try run(root, "deep", log: String(repeating: "[", count: 100_000) + "\n")
        XCTAssertThrowsError(try EpochLog.read(deep.appendingPathComponent("log.jsonl"))) { e in
            XCTAssertTrue("\(e)".contains("line 1") && "\(e)".contains("nested deeper"), "\(e)")
        }
    }

    /// A 100 MB line (a sparse file: nothing is written) is refused with the file and the line.
    func testOverLongLineIsRefusedWithItsFileAndLine() throws {
        let root = try folder()
        defer { try? FileManager.default.removeItem(at: root) }
        let dir = try run(root, "long", log: record(epoch: 1, valTotal: 2) + "\n" + record(epoch: 2, valTotal: 1) + "\n")
        let log = dir.appendingPathComponent("log.jsonl")
        let h = try FileHandle(forWritingTo: log)
        try h.truncate(atOffset: 100_000_000)
        try h.close()
        XCTAssertThrowsError(try RunComparison(folders: [dir])) { e in
            XCTAssertEqual(e as? RunError, .malformed(log.path, line: 3, "a line of more than 1 MiB; expected one epoch's JSON record of at most 1 MiB"))
            XCTAssertTrue("\(e)".hasPrefix("'\(log.path)' line 3: "), "\(e)")
        }
    }

    /// The over-long line comes from a writer that never stops: the reader gives the line's
    /// error after 1 MiB of it, so it cannot have read the whole file (it would never end, or
    /// stop at the 256 MiB limit with another message).
    func testOverLongLineIsRefusedWithoutReadingTheWholeFile() throws {
        let root = try folder()
        defer { try? FileManager.default.removeItem(at: root) }
        let dir = root.appendingPathComponent("endless")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let log = dir.appendingPathComponent("log.jsonl")
        guard mkfifo(log.path, 0o600) == 0 else { return XCTFail("mkfifo \(log.path)") }
        let writer = Process()
        writer.executableURL = URL(fileURLWithPath: "/bin/sh")
        writer.arguments = ["-c", "{ printf '%s\\n' \"$2\"; yes b 2>/dev/null | tr -d '\\n' 2>/dev/null; } > \"$1\"", "sh", log.path, record(epoch: 1, valTotal: 2)]
        try writer.run()
        XCTAssertThrowsError(try RunComparison(folders: [dir])) { e in
            XCTAssertEqual("\(e)", "'\(log.path)' line 2: malformed record: a line of more than 1 MiB; expected one epoch's JSON record of at most 1 MiB")
        }
        writer.waitUntilExit()
    }

    /// An `options.json` over 16 MiB (sparse) is refused by its size, naming the file and the
    /// limit, by `compare` and by `--resume`'s reader alike.
    func testOversizedOptionsAreRefusedBySize() throws {
        let root = try folder()
        defer { try? FileManager.default.removeItem(at: root) }
        let dir = try run(root, "opts", log: record(epoch: 1, valTotal: 2) + "\n")
        let options = dir.appendingPathComponent("options.json")
        XCTAssertTrue(FileManager.default.createFile(atPath: options.path, contents: nil))
        let h = try FileHandle(forWritingTo: options)
        try h.truncate(atOffset: UInt64(TrainingSetup.optionsFileBytes + 1))
        try h.close()
        let expected = "cannot read '\(options.path)': it holds more than 16 MiB; expected a run's options (options.json) of at most 16 MiB"
        XCTAssertThrowsError(try RunComparison(folders: [dir])) { e in XCTAssertEqual("\(e)", expected) }
        XCTAssertThrowsError(try TrainingSetup.savedOptions(in: dir)) { e in XCTAssertEqual("\(e)", expected) }
        // without options the run still compares, alone in its group
        try FileManager.default.removeItem(at: options)
        XCTAssertEqual(try RunComparison(folders: [dir]).groups.map(\.label), ["opts"])
    }
}
