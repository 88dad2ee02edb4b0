import Foundation
import OpacityData
import OpacityTensor
import XCTest

/// The PNG encoder writes in one pass into a buffer of libpng's worst-case size: images that do
/// not compress at all (noise) and ones that compress well round-trip in every format, at odd
/// sizes, with and without the fast setting.
final class PNGEncodingTests: XCTestCase {
    func testIncompressibleAndCompressibleImagesRoundTrip() throws {
        var rng = RandomGenerator(seed: 11)
        func noise(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
        for (w, h) in [(1, 1), (257, 131), (1024, 3)] {
            for fast in [false, true] {
                let rgb = RGBImage(width: w, height: h, pixels: noise(3 * w * h))
                XCTAssertEqual(try PNG.decode(try PNG.encode(rgb, fast: fast)), .rgb(rgb), "rgb \(w)x\(h) fast \(fast)")
                let gray = GrayImage(width: w, height: h, pixels: noise(w * h))
                XCTAssertEqual(try PNG.decode(try PNG.encode(gray, fast: fast)), .gray8(gray), "gray \(w)x\(h) fast \(fast)")
                let g16 = GrayImage16(width: w, height: h, pixels: (0..<(w * h)).map { _ in UInt16(truncatingIfNeeded: rng.next()) })
                XCTAssertEqual(try PNG.decode(try PNG.encode(g16, fast: fast)), .gray16(g16), "gray16 \(w)x\(h) fast \(fast)")
                let flat = RGBImage(width: w, height: h, pixels: [UInt8](repeating: 200, count: 3 * w * h))
                let encoded = try PNG.encode(flat, fast: fast)
                XCTAssertEqual(try PNG.decode(encoded), .rgb(flat))
                if w * h > 1000 { XCTAssertLessThan(encoded.count, w * h / 10, "a flat image compresses") }
            }
        }
        // the bound holds with room for noise, whose deflate output is larger than its input
        let n = 257 * 131 * 3
        XCTAssertGreaterThan(PNG.maximumEncodedSize(width: 257, height: 131, channels: 3, bytesPerSample: 1), n + 131)
    }
}
