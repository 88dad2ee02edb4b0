import Foundation
import OpacityCore
import OpacityData
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// CSV inputs that are not regular files: a FIFO (as `/dev/stdin` is a pipe under
/// `cat labels.csv | opacity score ... --labels /dev/stdin`) reads like a file, once, with the
/// same line limit; a folder, an empty device and a file over the size limit are refused with
/// what they are, never "permission".
final class StreamInputTests: XCTestCase {
    /// A FIFO in a fresh folder, and `sh -c script` started in the background with `$1` the
    /// FIFO's path: it writes while the test reads (opening a FIFO waits for the other end).
    func fifo(_ name: String, writer script: String) throws -> (folder: URL, fifo: URL, writer: Process) {
        let folder = try temporaryFolder(name)
        let fifo = folder.appendingPathComponent("input.csv")
        guard mkfifo(fifo.path, 0o600) == 0 else { throw CocoaError(.fileWriteUnknown) }
        let writer = Process()
        writer.executableURL = URL(fileURLWithPath: "/bin/sh")
        writer.arguments = ["-c", script, "sh", fifo.path]
        try writer.run()
        return (folder, fifo, writer)
    }

    /// A labels file of several MiB through a FIFO: read in many pieces, parsed as the same
    /// bytes from memory are.
    func testCSVFromAFIFOReadsLikeAFile() throws {
        var text = "patientId,x,y,width,height,Target\n"
        let pad = String(repeating: "0", count: 36)  // ids as long as RSNA's
        for i in 0..<60_000 { text += i % 3 == 0 ? "p\(pad)\(i),100.0,200.0,50.0,60.0,1\n" : "p\(pad)\(i),,,,,0\n" }
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = folder.appendingPathComponent("labels.csv")
        try Data(text.utf8).write(to: source)
        XCTAssertGreaterThan(text.utf8.count, 2 * BoundedRead.pieceBytes)
        let (dir, fifo, writer) = try self.fifo("fifo-labels", writer: "cat '\(source.path)' > \"$1\"")
        defer { try? FileManager.default.removeItem(at: dir) }
        let table = try CSVTable(contentsOf: fifo)
        writer.waitUntilExit()
        let expected = try CSVTable(data: Data(text.utf8), path: fifo.path)
        XCTAssertEqual(table.header, expected.header)
        XCTAssertEqual(table.rows.count, 60_000)
        XCTAssertEqual(table.rows.map(\.fields), expected.rows.map(\.fields))
        XCTAssertEqual(table.rows.last?.line, 60_001)
        // the labels reader on top of it
        let (dir2, fifo2, writer2) = try self.fifo("fifo-rsna", writer: "cat '\(source.path)' > \"$1\"")
        defer { try? FileManager.default.removeItem(at: dir2) }
        let labels = try RSNALabels.load(labels: fifo2, classInfo: nil)
        writer2.waitUntilExit()
        XCTAssertEqual(labels.patients.count, 60_000)
    }

    /// An over-long line through a FIFO is refused at the line limit, with its line, after
    /// reading at most that line (the writer of 8 MiB is cut off).
    func testOverLongLineFromAFIFOIsRefusedWithItsLine() throws {
        let (dir, fifo, writer) = try self.fifo("fifo-long", writer: "{ printf 'patientId,PredictionString\\n'; head -c 8388608 /dev/zero | tr '\\0' b; } 2>/dev/null > \"$1\"")
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertThrowsError(try CSVTable(contentsOf: fifo)) { e in
            let message = "\(e)"
            XCTAssertTrue(message.contains("line 2") && message.contains("more than \(InputLimits.csvLineBytes) bytes"), message)
            XCTAssertTrue(message.contains(fifo.path), message)
        }
        writer.waitUntilExit()
    }

    /// A stream that never ends (`yes`) is refused at the size limit, not read forever.
    func testEndlessStreamIsRefusedAtTheSizeLimit() throws {
        let (dir, fifo, writer) = try self.fifo("fifo-endless", writer: "yes a,b 2>/dev/null > \"$1\"")
        defer { try? FileManager.default.removeItem(at: dir) }
        var seen = 0
        XCTAssertThrowsError(try BoundedRead.pieces(of: fifo, limit: 100_000, what: "a CSV file") { seen += $0.count }) { e in
            XCTAssertEqual("\(e)", "cannot read '\(fifo.path)': it holds more than 100000 bytes; expected a CSV file of at most 100000 bytes")
        }
        XCTAssertLessThanOrEqual(seen, 100_000)
        writer.waitUntilExit()
    }

    /// A folder is refused as a folder; `/dev/null` (a device, empty) reads as an empty file,
    /// so the labels reader names the header it lacks; neither says "permission".
    func testFolderAndDevNullAreRefusedWithWhatTheyAre() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        XCTAssertThrowsError(try CSVTable(contentsOf: folder)) { e in
            XCTAssertEqual(e as? DataError, .unreadableFile(path: folder.path, reason: "it is a folder; expected a CSV file (a regular file, a pipe or /dev/stdin)"))
        }
        XCTAssertEqual(try CSVTable(contentsOf: URL(fileURLWithPath: "/dev/null")).header, [])
        XCTAssertThrowsError(try RSNALabels.load(labels: URL(fileURLWithPath: "/dev/null"), classInfo: nil)) { e in
            let message = "\(e)"
            XCTAssertTrue(message.contains("/dev/null") && message.contains("empty file; expected the header"), message)
            XCTAssertFalse(message.lowercased().contains("permission"), message)
        }
        let missing = folder.appendingPathComponent("nope.csv")
        XCTAssertThrowsError(try CSVTable(contentsOf: missing)) { e in
            XCTAssertEqual(e as? DataError, .missingFile(path: missing.path, expected: "a CSV file"))
        }
    }

    /// A regular file over ``InputLimits/csvFileBytes`` (sparse: nothing is written) is refused
    /// from its size before a byte is read.
    func testFileOverTheSizeLimitIsRefusedFromItsSize() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let big = folder.appendingPathComponent("big.csv")
        XCTAssertTrue(FileManager.default.createFile(atPath: big.path, contents: nil))
        let h = try FileHandle(forWritingTo: big)
        try h.truncate(atOffset: UInt64(InputLimits.csvFileBytes + 1))
        try h.close()
        XCTAssertThrowsError(try CSVTable(contentsOf: big)) { e in
            XCTAssertEqual("\(e)", "cannot read '\(big.path)': it holds more than 256 MiB; expected a CSV file of at most 256 MiB")
        }
    }
}
