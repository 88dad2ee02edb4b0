import OpacityCore
import OpacityPersistence
import XCTest

/// SHA-256 against FIPS 180-4 / NIST vectors and Python's hashlib; CRC-32 against zlib.
final class SHA256Tests: XCTestCase {
    func testStandardVectors() {
        XCTAssertEqual(SHA256.hash("").hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hash("abc").hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").hex,
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(SHA256.hash("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu").hex,
                       "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1")
    }

    func testOneMillionA() {
        var h = SHA256()
        let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: 1000)
        for _ in 0..<1000 { h.update(chunk) }
        XCTAssertEqual(h.finalize().hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    /// Lengths around the 55/56/64-byte padding boundaries, against Python's hashlib.
    func testPaddingBoundaries() {
        let expected: [(Int, String, UInt32)] = [
            (55, "463eb28e72f82e0a96c0a4cc53690c571281131f672aa229e0d45ae59b598b59", 0xfd4f_dad4),
            (56, "da2ae4d6b36748f2a318f23e7ab1dfdf45acdc9d049bd80e59de82a60895f562", 0xebfc_1395),
            (63, "29af2686fd53374a36b0846694cc342177e428d1647515f078784d69cdb9e488", 0xdbde_a683),
            (64, "fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108", 0x100e_ce8c),
            (65, "4bfd2c8b6f1eec7a2afeb48b934ee4b2694182027e6d0fc075074f2fabb31781", 0x40c0_6fd8),
            (119, "da18797ed7c3a777f0847f429724a2d8cd5138e6ed2895c3fa1a6d39d18f7ec6", 0x9353_a1a6),
            (120, "f52b23db1fbb6ded89ef42a23ce0c8922c45f25c50b568a93bf1c075420bbb7c", 0x2345_5e6e),
            (1000, "4e4c294b331f7a2099a379bec34b9f9fc03dc46ab465d998f4d683da53487e6d", 0x7217_46a6),
        ]
        for (n, sha, crc) in expected {
            let bytes = (0..<n).map { UInt8($0 % 251) }
            XCTAssertEqual(SHA256.hash(bytes).hex, sha, "length \(n)")
            XCTAssertEqual(CRC32.checksum(bytes), crc, "crc length \(n)")
        }
    }

    func testStreamingInPiecesEqualsOneShot() {
        let bytes = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let whole = SHA256.hash(bytes)
        for piece in [1, 3, 63, 64, 65, 1000] {
            var h = SHA256()
            var c = CRC32()
            var i = 0
            while i < bytes.count {
                let part = Array(bytes[i..<min(bytes.count, i + piece)])
                h.update(part)
                c.update(part)
                i += piece
            }
            XCTAssertEqual(h.finalize(), whole, "pieces of \(piece)")
            XCTAssertEqual(c.value, CRC32.checksum(bytes), "crc pieces of \(piece)")
        }
        // finalize does not consume the state
        var h = SHA256()
        h.update(Array("ab".utf8))
        _ = h.finalize()
        h.update(Array("c".utf8))
        XCTAssertEqual(h.finalize().hex, SHA256.hash("abc").hex)
    }

    func testCRC32CheckValue() {
        XCTAssertEqual(CRC32.checksum("123456789"), 0xCBF4_3926)
        XCTAssertEqual(CRC32.checksum([UInt8]()), 0)
    }
}
