import CZstd
import Foundation
import OpacityCore

/// Streaming zstd compression into a sink, one bounded output buffer at a time.
///
/// Holds only zstd's window and a small output buffer, never the whole compressed or
/// decompressed stream.
final class ZstdCompressor {
    private let cctx: OpaquePointer
    private let outCapacity = ZSTD_CStreamOutSize()
    private let out: UnsafeMutableRawPointer
    private let file: String
    /// Compressed bytes produced so far.
    private(set) var produced: UInt64 = 0

    /// - Parameters:
    ///   - level: zstd level (1 fastest ... 19 smallest; 3 is zstd's default).
    ///   - pledgedSize: the exact number of bytes that will be fed in (written into the frame).
    init(level: Int, pledgedSize: UInt64, file: String) throws {
        guard let c = ZSTD_createCCtx() else { throw BundleError.io(file: file, operation: "compress", reason: "zstd could not allocate a context") }
        cctx = c
        out = UnsafeMutableRawPointer.allocate(byteCount: outCapacity, alignment: 16)
        self.file = file
        try check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, Int32(level)))
        try check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1))
        try check(ZSTD_CCtx_setPledgedSrcSize(cctx, pledgedSize))
    }

    deinit {
        ZSTD_freeCCtx(cctx)
        out.deallocate()
    }

    private func check(_ r: Int) throws {
        if ZSTD_isError(r) != 0 {
            throw BundleError.io(file: file, operation: "compress", reason: "zstd: " + String(cString: ZSTD_getErrorName(r)))
        }
    }

    /// Compresses `input`, passing each full output buffer to `sink`.
    func compress(_ input: UnsafeRawBufferPointer, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard let base = input.baseAddress, input.count > 0 else { return }
        var inb = ZSTD_inBuffer(src: base, size: input.count, pos: 0)
        while inb.pos < inb.size {
            var outb = ZSTD_outBuffer(dst: out, size: outCapacity, pos: 0)
            try check(ZSTD_compressStream2(cctx, &outb, &inb, ZSTD_e_continue))
            if outb.pos > 0 {
                try sink(UnsafeRawBufferPointer(start: out, count: outb.pos))
                produced += UInt64(outb.pos)
            }
        }
    }

    /// Ends the frame (writes the content checksum), passing the rest to `sink`.
    func finish(sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        var inb = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
        while true {
            var outb = ZSTD_outBuffer(dst: out, size: outCapacity, pos: 0)
            let left = ZSTD_compressStream2(cctx, &outb, &inb, ZSTD_e_end)
            try check(left)
            if outb.pos > 0 {
                try sink(UnsafeRawBufferPointer(start: out, count: outb.pos))
                produced += UInt64(outb.pos)
            }
            if left == 0 { return }
        }
    }
}

/// Streaming zstd decompression of one frame stored at a byte range of a file.
///
/// Reads the compressed bytes in bounded chunks and decompresses straight into the
/// caller's buffers; errors say where in the data section they happened.
final class ZstdFrameReader {
    private let dctx: OpaquePointer
    private let file: FileDescriptor
    private let start: UInt64
    private let length: UInt64
    private let chunkCapacity = max(ZSTD_DStreamInSize(), 1 << 20)
    private let chunk: UnsafeMutableRawPointer
    private var inb: ZSTD_inBuffer
    private var consumedFromFile: UInt64 = 0
    private var frameEnded = false
    /// Decompressed bytes produced so far.
    private(set) var position: UInt64 = 0

    init(file: FileDescriptor, start: UInt64, length: UInt64) throws {
        guard let d = ZSTD_createDCtx() else { throw BundleError.io(file: file.path, operation: "decompress", reason: "zstd could not allocate a context") }
        dctx = d
        self.file = file
        self.start = start
        self.length = length
        chunk = UnsafeMutableRawPointer.allocate(byteCount: chunkCapacity, alignment: 16)
        inb = ZSTD_inBuffer(src: chunk, size: 0, pos: 0)
    }

    deinit {
        ZSTD_freeDCtx(dctx)
        chunk.deallocate()
    }

    /// Where in the data section the reader is (compressed bytes consumed), for errors.
    var compressedPosition: UInt64 { consumedFromFile - UInt64(inb.size - inb.pos) }

    private func refill() throws -> Bool {
        guard consumedFromFile < length else { return false }
        let want = Int(min(UInt64(chunkCapacity), length - consumedFromFile))
        let n = try file.read(into: UnsafeMutableRawBufferPointer(start: chunk, count: want), at: start + consumedFromFile)
        guard n == want else {
            throw BundleError.truncated(file: file.path, section: "data section", expectedBytes: start + length, actualBytes: start + consumedFromFile + UInt64(n))
        }
        consumedFromFile += UInt64(n)
        inb = ZSTD_inBuffer(src: chunk, size: n, pos: 0)
        return true
    }

    private func corrupt(_ tensor: String?, _ reason: String) -> BundleError {
        .corruptData(file: file.path, tensor: tensor, compressedOffset: compressedPosition, reason: reason)
    }

    /// Fills `buffer` completely with the next decompressed bytes.
    /// - Throws: ``BundleError/corruptData(file:tensor:compressedOffset:reason:)`` naming `tensor`.
    func read(into buffer: UnsafeMutableRawBufferPointer, tensor: String) throws {
        guard buffer.count > 0 else { return }
        var outb = ZSTD_outBuffer(dst: buffer.baseAddress!, size: buffer.count, pos: 0)
        while outb.pos < outb.size {
            if frameEnded { throw corrupt(tensor, "the compressed frame ends before this tensor is complete") }
            if inb.pos == inb.size, !(try refill()) {
                // no more input: let zstd flush what it holds, then give up
                let before = outb.pos
                let r = ZSTD_decompressStream(dctx, &outb, &inb)
                if ZSTD_isError(r) != 0 { throw corrupt(tensor, "zstd: " + String(cString: ZSTD_getErrorName(r))) }
                if r == 0 { frameEnded = true; continue }
                if outb.pos == before { throw corrupt(tensor, "the compressed data ends in the middle of the frame") }
                continue
            }
            let r = ZSTD_decompressStream(dctx, &outb, &inb)
            if ZSTD_isError(r) != 0 { throw corrupt(tensor, "zstd: " + String(cString: ZSTD_getErrorName(r))) }
            if r == 0 { frameEnded = true }
        }
        position += UInt64(buffer.count)
    }

    /// Checks that the frame ends here (verifying zstd's content checksum) and that no
    /// bytes follow it.
    func finish() throws {
        var one: UInt8 = 0
        while !frameEnded {
            let produced: Int = try withUnsafeMutableBytes(of: &one) { p in
                var outb = ZSTD_outBuffer(dst: p.baseAddress!, size: 1, pos: 0)
                if inb.pos == inb.size, !(try refill()) {
                    let r = ZSTD_decompressStream(dctx, &outb, &inb)
                    if ZSTD_isError(r) != 0 { throw corrupt(nil, "zstd: " + String(cString: ZSTD_getErrorName(r))) }
                    if r == 0 { frameEnded = true } else if outb.pos == 0 { throw corrupt(nil, "the compressed data ends in the middle of the frame") }
                    return outb.pos
                }
                let r = ZSTD_decompressStream(dctx, &outb, &inb)
                if ZSTD_isError(r) != 0 { throw corrupt(nil, "zstd: " + String(cString: ZSTD_getErrorName(r))) }
                if r == 0 { frameEnded = true }
                return outb.pos
            }
            if produced > 0 { throw corrupt(nil, "the frame holds more data than the tensor table lists") }
        }
        if inb.pos < inb.size || consumedFromFile < length {
            throw corrupt(nil, "\(length - compressedPosition) bytes follow the end of the compressed frame")
        }
    }
}
