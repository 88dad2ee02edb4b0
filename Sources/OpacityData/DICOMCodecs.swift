import COpenJPEG
import CZlib
import Foundation

/// The pixel codecs of the compressed DICOM transfer syntaxes Opacity reads besides JPEG
/// Baseline: JPEG Lossless (ITU-T T.81 process 14, every predictor; our own decoder), RLE
/// Lossless (PS3.5 Annex G), JPEG 2000 (OpenJPEG) and the deflate stream of Deflated
/// Explicit VR Little Endian (zlib).
enum DICOMCodecs {
    // MARK: - RLE Lossless (PS3.5 G)

    /// Decodes one RLE Lossless frame to native little-endian bytes of `bytesPerSample` each.
    /// - Throws: ``DataError/malformedDICOM(path:reason:)`` for a bad header or short segments.
    static func decodeRLE(_ frame: [UInt8], pixels: Int, bytesPerSample: Int, path: String) throws -> [UInt8] {
        func fail(_ r: String) -> DataError { .malformedDICOM(path: path, reason: "RLE Lossless: " + r) }
        guard frame.count >= 64 else { throw fail("frame of \(frame.count) bytes has no 64-byte RLE header") }
        func u32(_ i: Int) -> Int { Int(frame[i]) | Int(frame[i + 1]) << 8 | Int(frame[i + 2]) << 16 | Int(frame[i + 3]) << 24 }
        let segments = u32(0)
        guard segments == bytesPerSample else {
            throw fail("\(segments) segments; expected \(bytesPerSample) (one per byte of a grayscale sample)")
        }
        var out = [UInt8](repeating: 0, count: pixels * bytesPerSample)
        for s in 0..<segments {
            let start = u32(4 + 4 * s)
            let end = s + 1 < segments ? u32(8 + 4 * s) : frame.count
            guard start >= 64, start <= end, end <= frame.count else { throw fail("segment \(s + 1) offsets \(start)..<\(end) are outside the frame") }
            // Segment s holds byte (bytesPerSample - 1 - s) of each sample (most significant first).
            let byteIndex = bytesPerSample - 1 - s
            var i = start, n = 0
            while n < pixels && i < end {
                let h = Int(Int8(bitPattern: frame[i]))
                i += 1
                if h >= 0 {
                    let count = h + 1
                    guard i + count <= end, n + count <= pixels else { throw fail("literal run past the end of segment \(s + 1)") }
                    for k in 0..<count { out[(n + k) * bytesPerSample + byteIndex] = frame[i + k] }
                    i += count
                    n += count
                } else if h != -128 {
                    let count = 1 - h
                    guard i < end, n + count <= pixels else { throw fail("replicate run past the end of segment \(s + 1)") }
                    let v = frame[i]
                    for k in 0..<count { out[(n + k) * bytesPerSample + byteIndex] = v }
                    i += 1
                    n += count
                }
            }
            guard n == pixels else { throw fail("segment \(s + 1) decodes to \(n) bytes; expected \(pixels)") }
        }
        return out
    }

    // MARK: - Deflate

    /// Inflates a raw deflate stream (no zlib header), refusing output beyond `limit` bytes.
    /// - Throws: ``DataError/malformedDICOM(path:reason:)`` with zlib's message.
    static func inflateRaw(_ input: UnsafeRawBufferPointer, limit: Int, path: String) throws -> [UInt8] {
        var stream = z_stream()
        guard inflateInit2_(&stream, -15, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DataError.malformedDICOM(path: path, reason: "Deflated Explicit VR Little Endian: zlib failed to start")
        }
        defer { inflateEnd(&stream) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        stream.avail_in = UInt32(input.count)
        while true {
            let rc: Int32 = chunk.withUnsafeMutableBufferPointer { c in
                stream.next_out = c.baseAddress
                stream.avail_out = UInt32(c.count)
                return inflate(&stream, Z_NO_FLUSH)
            }
            let produced = chunk.count - Int(stream.avail_out)
            guard out.count + produced <= limit else {
                throw DataError.malformedDICOM(path: path, reason: "Deflated Explicit VR Little Endian: the data set inflates beyond \(limit) bytes")
            }
            out.append(contentsOf: chunk[0..<produced])
            if rc == Z_STREAM_END { return out }
            if rc == Z_BUF_ERROR && stream.avail_in == 0 {
                throw DataError.malformedDICOM(path: path, reason: "Deflated Explicit VR Little Endian: the deflate stream is truncated")
            }
            guard rc == Z_OK else {
                let msg = stream.msg.map { String(cString: $0) } ?? "error \(rc)"
                throw DataError.malformedDICOM(path: path, reason: "Deflated Explicit VR Little Endian: zlib: \(msg)")
            }
        }
    }

    // MARK: - JPEG 2000 (OpenJPEG)

    /// Decodes a JPEG 2000 codestream (raw J2K or a JP2 file) of one grayscale component.
    /// - Returns: the samples, row-major, signed or unsigned as coded, and their precision.
    /// - Throws: ``DataError/unsupportedPixelFormat(path:reason:)`` for a size that disagrees
    ///   with the header or exceeds ``DICOM/maxPixels`` (checked before decoding), and
    ///   ``DataError/malformedDICOM(path:reason:)`` with OpenJPEG's message.
    static func decodeJPEG2000(_ data: [UInt8], expected: (width: Int, height: Int), path: String) throws -> (samples: [Int32], precision: Int, signed: Bool) {
        func fail(_ r: String) -> DataError { .malformedDICOM(path: path, reason: "JPEG 2000: " + r) }
        let isJP2 = data.count >= 12 && data[4] == 0x6A && data[5] == 0x50 && data[6] == 0x20 && data[7] == 0x20
        guard isJP2 || (data.count >= 2 && data[0] == 0xFF && data[1] == 0x4F) else {
            throw fail("the frame starts with neither a J2K SOC marker (FF 4F) nor a JP2 signature")
        }
        let box = J2KSource(data: data)
        let unmanaged = Unmanaged.passRetained(box)
        guard let stream = opj_stream_create(Int(OPJ_J2K_STREAM_CHUNK_SIZE), 1) else { throw fail("cannot create a stream") }
        defer { opj_stream_destroy(stream) }
        opj_stream_set_user_data(stream, unmanaged.toOpaque()) { p in Unmanaged<J2KSource>.fromOpaque(p!).release() }
        opj_stream_set_user_data_length(stream, UInt64(data.count))
        opj_stream_set_read_function(stream) { buffer, n, user in
            let src = Unmanaged<J2KSource>.fromOpaque(user!).takeUnretainedValue()
            let left = src.data.count - src.offset
            if left <= 0 { return Int.max }  // (OPJ_SIZE_T)-1: end of stream
            let k = min(left, n)
            src.data.withUnsafeBytes { b in buffer!.copyMemory(from: b.baseAddress! + src.offset, byteCount: k) }
            src.offset += k
            return k
        }
        opj_stream_set_skip_function(stream) { n, user in
            let src = Unmanaged<J2KSource>.fromOpaque(user!).takeUnretainedValue()
            let target = max(0, min(src.data.count, src.offset + Int(n)))
            let moved = target - src.offset
            src.offset = target
            return Int64(moved)
        }
        opj_stream_set_seek_function(stream) { n, user in
            let src = Unmanaged<J2KSource>.fromOpaque(user!).takeUnretainedValue()
            guard n >= 0, Int(n) <= src.data.count else { return 0 }
            src.offset = Int(n)
            return 1
        }
        guard let codec = opj_create_decompress(isJP2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K) else { throw fail("cannot create a decoder") }
        defer { opj_destroy_codec(codec) }
        let messages = J2KMessages()
        let mp = Unmanaged.passUnretained(messages).toOpaque()
        opj_set_error_handler(codec, { msg, user in
            guard let msg, let user else { return }
            Unmanaged<J2KMessages>.fromOpaque(user).takeUnretainedValue().text.append(String(cString: msg).trimmingCharacters(in: .whitespacesAndNewlines))
        }, mp)
        opj_set_warning_handler(codec, { _, _ in }, nil)
        opj_set_info_handler(codec, { _, _ in }, nil)
        var params = opj_dparameters_t()
        opj_set_default_decoder_parameters(&params)
        guard opj_setup_decoder(codec, &params) != 0 else { throw fail("decoder setup failed") }
        var imagePtr: UnsafeMutablePointer<opj_image_t>?
        guard opj_read_header(stream, codec, &imagePtr) != 0, let image = imagePtr else {
            throw fail("cannot read the codestream header: " + messages.text.joined(separator: "; "))
        }
        defer { opj_image_destroy(image) }
        let w = Int(image.pointee.x1) - Int(image.pointee.x0), h = Int(image.pointee.y1) - Int(image.pointee.y0)
        guard image.pointee.numcomps == 1 else {
            throw DataError.unsupportedPixelFormat(path: path, reason: "JPEG 2000 with \(image.pointee.numcomps) components; Opacity reads one (grayscale)")
        }
        guard w > 0, h > 0, w * h <= DICOM.maxPixels, w == expected.width, h == expected.height else {
            throw DataError.unsupportedPixelFormat(path: path, reason: "JPEG 2000 codestream is \(w)x\(h); the header says \(expected.width)x\(expected.height) (at most \(DICOM.maxPixels) pixels)")
        }
        guard opj_decode(codec, stream, image) != 0, opj_end_decompress(codec, stream) != 0 else {
            throw fail("decoding failed: " + messages.text.joined(separator: "; "))
        }
        let comp = image.pointee.comps[0]
        guard Int(comp.w) == w, Int(comp.h) == h, let src = comp.data else {
            throw fail("component is \(comp.w)x\(comp.h) (subsampled or empty); expected \(w)x\(h)")
        }
        let samples = [Int32](UnsafeBufferPointer(start: src, count: w * h))
        return (samples, Int(comp.prec), comp.sgnd != 0)
    }

    final class J2KSource {
        let data: [UInt8]
        var offset = 0
        init(data: [UInt8]) { self.data = data }
    }

    final class J2KMessages {
        var text: [String] = []
    }
}

/// A decoder for lossless JPEG (ITU-T T.81 process 14: Huffman coding, predictors 1-7,
/// point transform, restart intervals), one component of 2 to 16 bits.
struct LosslessJPEGDecoder {
    let data: [UInt8]
    let path: String

    struct HuffmanTable {
        var maxCode = [Int](repeating: -1, count: 18)
        var valPtr = [Int](repeating: 0, count: 17)
        var minCode = [Int](repeating: 0, count: 17)
        var values: [UInt8] = []
    }

    func fail(_ r: String) -> DataError { .malformedDICOM(path: path, reason: "JPEG Lossless: " + r) }

    /// The decoded samples (row-major, unsigned `precision`-bit values, already shifted up by
    /// the point transform) with the frame's size and precision.
    /// - Throws: ``DataError/malformedDICOM(path:reason:)`` for anything but a valid
    ///   single-component lossless codestream; ``DataError/unsupportedPixelFormat(path:reason:)``
    ///   for a size beyond ``DICOM/maxPixels``.
    func decode() throws -> (samples: [UInt16], width: Int, height: Int, precision: Int) {
        var p = 0
        func u16(_ i: Int) -> Int { Int(data[i]) << 8 | Int(data[i + 1]) }
        guard data.count >= 4, data[0] == 0xFF, data[1] == 0xD8 else { throw fail("no SOI marker (FF D8) at the start") }
        p = 2
        var tables = [Int: HuffmanTable]()
        var width = 0, height = 0, precision = 0
        var restartInterval = 0
        while true {
            // Find the next marker (skip fill bytes).
            guard p + 4 <= data.count else { throw fail("codestream ends before a scan") }
            guard data[p] == 0xFF else { throw fail("expected a marker at byte \(p)") }
            var m = data[p + 1]
            while m == 0xFF && p + 2 < data.count {
                p += 1
                m = data[p + 1]
            }
            p += 2
            if m == 0xD8 || (0xD0...0xD7).contains(m) || m == 0x01 { continue }
            if m == 0xD9 { throw fail("end of image before a scan") }
            guard p + 2 <= data.count else { throw fail("truncated marker segment") }
            let len = u16(p)
            guard len >= 2, p + len <= data.count else { throw fail(String(format: "marker FF %02X segment of length %d runs past the data", m, len)) }
            let seg = p + 2, end = p + len
            switch m {
            case 0xC3:
                guard len >= 8 else { throw fail("short SOF3 segment") }
                precision = Int(data[seg])
                height = u16(seg + 1)
                width = u16(seg + 3)
                let nf = Int(data[seg + 5])
                guard nf == 1 else {
                    throw DataError.unsupportedPixelFormat(path: path, reason: "JPEG Lossless with \(nf) components; Opacity reads one (grayscale)")
                }
                guard (2...16).contains(precision), width > 0, height > 0 else {
                    throw fail("SOF3 says \(width)x\(height) at \(precision) bits; expected positive sizes and 2...16 bits")
                }
                guard width * height <= DICOM.maxPixels else {
                    throw DataError.unsupportedPixelFormat(path: path, reason: "JPEG Lossless frame of \(width)x\(height) exceeds the \(DICOM.maxPixels)-pixel limit")
                }
            case 0xC0, 0xC1, 0xC2, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF:
                throw fail(String(format: "frame marker FF %02X is not lossless Huffman (FF C3)", m))
            case 0xC4:
                var q = seg
                while q < end {
                    guard q + 17 <= end else { throw fail("short DHT segment") }
                    let id = Int(data[q] & 0x0F)
                    var counts = [Int](repeating: 0, count: 17)
                    var total = 0
                    for l in 1...16 {
                        counts[l] = Int(data[q + l])
                        total += counts[l]
                    }
                    guard q + 17 + total <= end, total <= 256 else { throw fail("DHT table \(id) holds more values than its segment") }
                    var t = HuffmanTable()
                    t.values = Array(data[(q + 17)..<(q + 17 + total)])
                    var code = 0, k = 0
                    for l in 1...16 {
                        t.valPtr[l] = k
                        t.minCode[l] = code
                        code += counts[l]
                        k += counts[l]
                        t.maxCode[l] = counts[l] > 0 ? code - 1 : -1
                        code <<= 1
                    }
                    t.maxCode[17] = Int.max
                    tables[id] = t
                    q += 17 + total
                }
            case 0xDD:
                guard len >= 4 else { throw fail("short DRI segment") }
                restartInterval = u16(seg)
            case 0xDA:
                guard width > 0 else { throw fail("scan before the SOF3 frame header") }
                guard len >= 6 + 2 * Int(data[seg]), data[seg] == 1 else { throw fail("scan with \(data[seg]) components; expected 1") }
                let tableID = Int(data[seg + 2] >> 4)
                let predictor = Int(data[seg + 3])
                let pointTransform = Int(data[seg + 5] & 0x0F)
                guard (1...7).contains(predictor) else { throw fail("predictor (selection value) \(predictor); expected 1...7") }
                guard pointTransform < precision else { throw fail("point transform \(pointTransform) >= precision \(precision)") }
                guard let table = tables[tableID] else { throw fail("scan uses Huffman table \(tableID), which is not defined") }
                let samples = try decodeScan(from: end, width: width, height: height, precision: precision, predictor: predictor,
                                             pointTransform: pointTransform, restartInterval: restartInterval, table: table)
                return (samples, width, height, precision)
            default:
                break  // APPn, COM, DNL, ...: skipped
            }
            p = end
        }
    }

    /// The entropy-coded segment from byte `start`.
    private func decodeScan(from start: Int, width: Int, height: Int, precision: Int, predictor: Int, pointTransform: Int,
                            restartInterval: Int, table: HuffmanTable) throws -> [UInt16] {
        var reader = BitReader(data: data, pos: start)
        var out = [UInt16](repeating: 0, count: width * height)
        let initial = 1 << (precision - pointTransform - 1)
        let mask = (1 << 16) - 1
        var prev = [Int](repeating: 0, count: width), cur = [Int](repeating: 0, count: width)
        var sinceRestart = 0
        var firstLine = true  // first line of the image or of a restart interval
        var restartPending = false
        for y in 0..<height {
            for x in 0..<width {
                if restartInterval > 0 && sinceRestart == restartInterval {
                    try reader.restart()
                    sinceRestart = 0
                    restartPending = true
                }
                let ssss = try reader.decode(table, fail: fail)
                var diff: Int
                if ssss == 0 {
                    diff = 0
                } else if ssss == 16 {
                    diff = 32768
                } else {
                    guard ssss < 16 else { throw fail("difference category \(ssss) > 16") }
                    let v = reader.bits(ssss)
                    diff = v < (1 << (ssss - 1)) ? v - (1 << ssss) + 1 : v
                }
                var pred: Int
                if restartPending || (y == 0 && x == 0) {
                    pred = initial  // start of the image or of a restart interval
                    restartPending = false
                    firstLine = true
                } else if firstLine {
                    pred = x == 0 ? prev[0] : cur[x - 1]
                } else if x == 0 {
                    pred = prev[0]
                } else {
                    let ra = cur[x - 1], rb = prev[x], rc = prev[x - 1]
                    switch predictor {
                    case 1: pred = ra
                    case 2: pred = rb
                    case 3: pred = rc
                    case 4: pred = ra + rb - rc
                    case 5: pred = ra + ((rb - rc) >> 1)
                    case 6: pred = rb + ((ra - rc) >> 1)
                    default: pred = (ra + rb) >> 1
                    }
                }
                let v = (pred + diff) & mask
                cur[x] = v
                out[y * width + x] = UInt16(truncatingIfNeeded: v << pointTransform)
                sinceRestart += 1
            }
            firstLine = false
            swap(&prev, &cur)
        }
        return out
    }

    /// Reads bits MSB first, removing stuffed zero bytes; at a marker it supplies zeros.
    struct BitReader {
        let data: [UInt8]
        var pos: Int
        var acc: UInt64 = 0
        var count = 0

        init(data: [UInt8], pos: Int) {
            self.data = data
            self.pos = pos
        }

        mutating func fill() {
            while count <= 56 {
                var b: UInt8 = 0
                if pos < data.count {
                    b = data[pos]
                    if b == 0xFF {
                        let next = pos + 1 < data.count ? data[pos + 1] : 0xD9
                        if next == 0x00 {
                            pos += 2
                        } else {
                            b = 0  // a marker: feed zeros, stay put
                        }
                    } else {
                        pos += 1
                    }
                }
                acc |= UInt64(b) << UInt64(56 - count)
                count += 8
            }
        }

        mutating func bits(_ n: Int) -> Int {
            if n == 0 { return 0 }
            if count < n { fill() }
            let v = Int(acc >> UInt64(64 - n))
            acc <<= UInt64(n)
            count -= n
            return v
        }

        mutating func decode(_ t: HuffmanTable, fail: (String) -> DataError) throws -> Int {
            var code = bits(1), l = 1
            while code > t.maxCode[l] {
                l += 1
                guard l <= 16 else { throw fail("invalid Huffman code at byte \(pos)") }
                code = code << 1 | bits(1)
            }
            let i = t.valPtr[l] + code - t.minCode[l]
            guard i >= 0, i < t.values.count else { throw fail("invalid Huffman code at byte \(pos)") }
            return Int(t.values[i])
        }

        /// Drops the buffered bits and skips the RSTn marker that must come next.
        mutating func restart() throws {
            acc = 0
            count = 0
            while pos + 1 < data.count && !(data[pos] == 0xFF && (0xD0...0xD7).contains(data[pos + 1])) { pos += 1 }
            if pos + 1 < data.count { pos += 2 }
        }
    }
}
