import Foundation
import OpacityCore
import OpacityPersistence
import XCTest

final class BundleTests: TemporaryFolderTestCase {
    /// Tensors covering ranks 0-4, an empty tensor, an all-zero channel and a wide value range.
    func sampleTensors() -> [(String, Tensor)] {
        var w = randomTensor([8, 3, 3, 3], seed: 1, std: 0.2)
        w.withUnsafeMutableBufferPointer { b in for i in 0..<27 { b[i] = 0 } }  // channel 0 all zeros
        var wide = randomTensor([4, 50], seed: 2)
        wide.withUnsafeMutableBufferPointer { b in for i in 0..<b.count { b[i] *= Float(pow(10, Double(i % 9) - 4)) } }
        return [
            ("conv.weight", w),
            ("conv.bias", randomTensor([8], seed: 3)),
            ("bn.running_var", Tensor(shape: [8], scalars: (0..<8).map { 0.5 + Float($0) })),
            ("fc.weight", wide),
            ("scalar", Tensor(3.25)),
            ("empty", Tensor.zeros([0, 4])),
            ("empty_rows", Tensor.zeros([3, 0])),
        ]
    }

    func testEveryStorageTypeRoundTripsWithinItsPrecision() throws {
        let tensors = sampleTensors()
        for type in StorageType.allCases {
            let url = file("t-\(type).opb")
            let policy = StoragePolicy.uniform(type)
            let summary = try WeightBundle.write(to: url, metadata: BundleMetadata(kind: .tensors), groups: [TensorGroup("model", tensors, storage: policy)])
            XCTAssertEqual(summary.tensorCount, tensors.count)
            let info = try WeightBundle.verify(url)
            XCTAssertEqual(info.metadata.storage, policy.name)
            let back = try XCTUnwrap(WeightBundle.read(url)["model"])
            XCTAssertEqual(Set(back.keys), Set(tensors.map(\.0)))
            for (name, original) in tensors {
                let t = try XCTUnwrap(back[name])
                XCTAssertEqual(t.shape, original.shape, "\(type) \(name)")
                let stored = try XCTUnwrap(info.tensors.first { $0.name == name }).dtype
                XCTAssertEqual(stored, type == .i8 && original.rank < 2 ? .f32 : type, "\(name) stored as")
                let a = original.scalars, b = t.scalars
                switch stored {
                case .f32:
                    XCTAssertEqual(a, b, "\(type) \(name) must be exact")
                case .f16:
                    for (x, y) in zip(a, b) {
                        // relative 2^-11 for normal halves, absolute 2^-25 in the subnormal range
                        XCTAssertLessThanOrEqual(abs(x - y), max(abs(x) * 0x1p-11, 0x1p-25), "\(name) f16 \(x) -> \(y)")
                    }
                case .bf16:
                    for (x, y) in zip(a, b) { XCTAssertLessThanOrEqual(abs(x - y), abs(x) * 0x1p-8, "\(name) bf16 \(x) -> \(y)") }
                case .i8:
                    guard original.count > 0 else { continue }
                    let c = original.shape[0], k = original.count / c
                    for ch in 0..<c {
                        let row = a[(ch * k)..<((ch + 1) * k)]
                        let scale = (row.map(abs).max() ?? 0) / 127
                        for j in 0..<k {
                            let x = a[ch * k + j], y = b[ch * k + j]
                            XCTAssertLessThanOrEqual(abs(x - y), scale / 2 * 1.0001 + 1e-30, "\(name) i8 channel \(ch) \(x) -> \(y)")
                        }
                        if scale == 0 { XCTAssertTrue(b[(ch * k)..<((ch + 1) * k)].allSatisfy { $0 == 0 }) }
                    }
                }
            }
        }
    }

    func testHalfConversionMatchesSwiftFloat16() throws {
        #if !(os(macOS) && arch(x86_64))
        for bits in 0...UInt16.max {
            let f = StorageCodec.float(halfBits: bits)
            let expected = Float(Float16(bitPattern: bits))
            if expected.isNaN { XCTAssertTrue(f.isNaN) } else { XCTAssertEqual(f.bitPattern, expected.bitPattern, "bits \(bits)") }
        }
        var rng = RandomGenerator(seed: 9)
        for i in 0..<200_000 {
            // random bit patterns cover subnormals, overflow and ties
            let x = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))
            guard !x.isNaN else { continue }
            let h = StorageCodec.halfBits(x)
            XCTAssertEqual(h, Float16(x).bitPattern, "value \(x) (#\(i))")
            if h != Float16(x).bitPattern { break }
        }
        #else
        throw XCTSkip("Float16 is unavailable on macOS x86_64")
        #endif
    }

    func testBFloat16RoundsToNearestEven() {
        XCTAssertEqual(StorageCodec.float(bfloat16Bits: StorageCodec.bfloat16Bits(1 + 0x1p-8)), 1)  // tie -> even
        XCTAssertEqual(StorageCodec.float(bfloat16Bits: StorageCodec.bfloat16Bits(1 + 0x1p-7 + 0x1p-8)), 1 + 0x1p-6)  // tie -> even
        XCTAssertEqual(StorageCodec.float(bfloat16Bits: StorageCodec.bfloat16Bits(1 + 0x1p-8 + 0x1p-12)), 1 + 0x1p-7)  // above tie
        XCTAssertEqual(StorageCodec.float(bfloat16Bits: StorageCodec.bfloat16Bits(-3.0)), -3.0)
        XCTAssertTrue(StorageCodec.float(bfloat16Bits: StorageCodec.bfloat16Bits(.nan)).isNaN)
        XCTAssertEqual(StorageCodec.float(bfloat16Bits: StorageCodec.bfloat16Bits(.infinity)), .infinity)
    }

    func testInt8IsAboutFourTimesSmallerThanFP32() throws {
        let big = [("w", randomTensor([128, 64, 3, 3], seed: 4, std: 0.05)), ("b", randomTensor([128], seed: 5))]
        let f32 = try WeightBundle.write(to: file("f32.opb"), metadata: BundleMetadata(kind: .tensors), groups: [TensorGroup("model", big)])
        let i8 = try WeightBundle.write(to: file("i8.opb"), metadata: BundleMetadata(kind: .tensors), groups: [TensorGroup("model", big, storage: .int8)])
        let f16 = try WeightBundle.write(to: file("f16.opb"), metadata: BundleMetadata(kind: .tensors), groups: [TensorGroup("model", big, storage: .fp16)])
        XCTAssertLessThan(Double(i8.fileBytes) / Double(f32.rawFP32Bytes), 0.27, "\(i8)")
        XCTAssertLessThan(Double(f16.fileBytes) / Double(f32.rawFP32Bytes), 0.52, "\(f16)")
        XCTAssertLessThanOrEqual(f32.fileBytes, f32.rawFP32Bytes + 4096, "\(f32)")
    }

    func testMetadataRoundTrips() throws {
        struct Sched: Codable, Equatable { var best: Float; var bad: Int; var mode: String }
        var meta = BundleMetadata(kind: .detector, config: "retinanet(encoder=resnet34, size=256)",
                                  provenance: Provenance(data: "rsna-stage2", fold: 2, folds: 4, epoch: 7, seed: 42, notes: "α test"),
                                  metrics: ["val_loss": 0.4125, "map": 0.2301, "broken": .nan])
        try meta.setExtra("scheduler", Sched(best: 0.5, bad: 2, mode: "min"))
        meta.extra["notes"] = .array([.string("a"), .number(1), .bool(true), .null, .object(["k": .string("v")])])
        let url = file("meta.opb")
        try WeightBundle.write(to: url, metadata: meta, groups: [TensorGroup("model", [("x", Tensor(1))])])
        let back = try WeightBundle.info(url).metadata
        XCTAssertEqual(back.kind, .detector)
        XCTAssertEqual(back.config, meta.config)
        XCTAssertEqual(back.provenance, meta.provenance)
        XCTAssertEqual(back.frameworkVersion, FrameworkVersion.current)
        XCTAssertEqual(back.created, meta.created)
        XCTAssertEqual(back.metrics["map"], 0.2301)
        XCTAssertTrue(back.metrics["broken"]!.isNaN)
        XCTAssertEqual(try back.extra("scheduler", as: Sched.self), Sched(best: 0.5, bad: 2, mode: "min"))
        XCTAssertEqual(back.extra["notes"], meta.extra["notes"])
        XCTAssertNil(try back.extra("absent", as: Sched.self))
        XCTAssertThrowsError(try back.extra("notes", as: Sched.self)) { XCTAssertEqual(bundleErrorKind($0), "extraValue") }
    }

    func testGroupsAndFilteredReads() throws {
        let url = file("groups.opb")
        let model = sampleTensors()
        let opt = [("exp_avg.conv.weight", randomTensor([8, 3, 3, 3], seed: 7)), ("lr", Tensor(0.001))]
        try WeightBundle.write(to: url, metadata: BundleMetadata(), groups: [TensorGroup("model", model, storage: .fp16), TensorGroup("optimizer", opt)])
        let info = try WeightBundle.info(url)
        XCTAssertEqual(info.groups, ["model", "optimizer"])
        XCTAssertEqual(info.tensors.filter { $0.group == "optimizer" }.map(\.dtype), [.f32, .f32])
        let onlyModel = try WeightBundle.read(url, groups: ["model"])
        XCTAssertEqual(Array(onlyModel.keys), ["model"])
        let both = try WeightBundle.read(url)
        XCTAssertEqual(both["optimizer"]?["lr"]?.scalar, 0.001)
        XCTAssertEqual(both["optimizer"]?["exp_avg.conv.weight"]?.scalars, opt[0].1.scalars)
        let some = try WeightBundle.read(url, where: { $0.name.hasPrefix("conv.") })
        XCTAssertEqual(Set(some["model"]!.keys), ["conv.weight", "conv.bias"])
        XCTAssertThrowsError(try WeightBundle.read(url, groups: ["ema"])) { e in
            XCTAssertEqual(bundleErrorKind(e), "missingGroup")
            XCTAssertTrue("\(e)".contains("model, optimizer"), "\(e)")
        }
    }

    func testEmptyBundleAndBadNames() throws {
        let url = file("empty.opb")
        try WeightBundle.write(to: url, metadata: BundleMetadata(kind: .tensors), groups: [])
        XCTAssertEqual(try WeightBundle.verify(url).tensors.count, 0)
        XCTAssertTrue(try WeightBundle.read(url).isEmpty)
        XCTAssertThrowsError(try WeightBundle.write(to: file("dup.opb"), metadata: BundleMetadata(),
                                                    groups: [TensorGroup("model", [("a", Tensor(1)), ("a", Tensor(2))])])) { e in
            XCTAssertEqual(bundleErrorKind(e), "invalidName")
            XCTAssertTrue("\(e)".contains("'a'"), "\(e)")
        }
        XCTAssertThrowsError(try WeightBundle.write(to: file("i8.opb"), metadata: BundleMetadata(),
                                                    groups: [TensorGroup("model", [("bias", Tensor.zeros([3]))], storage: StoragePolicy(name: "all-i8") { _, _ in .i8 })])) { e in
            XCTAssertTrue("\(e)".contains("rank 2"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: file("dup.opb").path))
    }

    func testUnrepresentableValueFailsAndLeavesNothing() throws {
        let url = file("big.opb")
        let good = [("w", Tensor(shape: [2, 2], scalars: [1, 2, 3, 4]))]
        try WeightBundle.write(to: url, metadata: BundleMetadata(), groups: [TensorGroup("model", good)])
        let before = try Data(contentsOf: url)
        let bad = [("w", Tensor(shape: [2, 2], scalars: [1, 2, 70000, 4]))]
        XCTAssertThrowsError(try WeightBundle.write(to: url, metadata: BundleMetadata(), groups: [TensorGroup("model", bad, storage: .fp16)])) { e in
            guard case let BundleError.unrepresentable(_, tensor, storage, index, value) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(tensor, "w")
            XCTAssertEqual(storage, .f16)
            XCTAssertEqual(index, 2)
            XCTAssertEqual(value, 70000)
        }
        XCTAssertThrowsError(try WeightBundle.write(to: url, metadata: BundleMetadata(),
                                                    groups: [TensorGroup("model", [("w", Tensor(shape: [1, 2], scalars: [1, .infinity]))], storage: .int8)])) { e in
            XCTAssertEqual(bundleErrorKind(e), "unrepresentable")
        }
        XCTAssertEqual(try Data(contentsOf: url), before, "the existing bundle must be untouched")
        XCTAssertEqual(try folderContents(), ["big.opb"], "no temporary file may be left")
        // overwriting succeeds atomically and leaves no temporary file
        try WeightBundle.write(to: url, metadata: BundleMetadata(), groups: [TensorGroup("model", bad, storage: .bf16)])
        XCTAssertEqual(try folderContents(), ["big.opb"])
        XCTAssertEqual(try WeightBundle.read(url)["model"]?["w"]?.scalars[2], 70144)  // bf16 rounding of 70000
        XCTAssertThrowsError(try WeightBundle.write(to: folder.appendingPathComponent("no/such/folder/x.opb"), metadata: BundleMetadata(), groups: [])) { e in
            XCTAssertEqual(bundleErrorKind(e), "io")
            XCTAssertTrue("\(e)".contains("does not exist"), "\(e)")
        }
    }

    // MARK: Damaged files

    /// A bundle of a few kilobytes with several tensors and two storage types.
    func writeSample() throws -> (URL, [UInt8]) {
        let url = file("sample.opb")
        var meta = BundleMetadata(kind: .tensors, config: "sample", provenance: Provenance(data: "unit test"))
        meta.metrics = ["loss": 1.5]
        let tensors = sampleTensors() + [("extra.weight", randomTensor([16, 40], seed: 11))]
        try WeightBundle.write(to: url, metadata: meta, groups: [TensorGroup("model", tensors, storage: .fp16), TensorGroup("optimizer", [("m", randomTensor([300], seed: 12))])])
        return (url, Array(try Data(contentsOf: url)))
    }

    func check(_ bytes: [UInt8], _ name: String) -> Error? {
        let url = file(name)
        _ = FileManager.default.createFile(atPath: url.path, contents: Data(bytes))
        defer { try? FileManager.default.removeItem(at: url) }
        do {
            try WeightBundle.verify(url)
            _ = try WeightBundle.read(url)
            return nil
        } catch { return error }
    }

    func testTruncationAtEverySixtyFourthIsReportedAsTruncation() throws {
        let (_, bytes) = try writeSample()
        XCTAssertGreaterThan(bytes.count, 1000)
        for k in 0..<64 {
            let cut = bytes.count * k / 64
            let e = check(Array(bytes[0..<cut]), "cut.opb")
            XCTAssertEqual(e.map(bundleErrorKind), "truncated", "cut at \(cut) of \(bytes.count): \(String(describing: e))")
            if let e { XCTAssertTrue("\(e)".contains("cut.opb"), "error names the file: \(e)") }
        }
    }

    func testFlippedBytesAreCaughtWhereTheyAre() throws {
        let (_, bytes) = try writeSample()
        let meta = bundleMetadataRange(bytes)
        var positions = Set((0..<64).map { bytes.count * $0 / 64 })
        positions.formUnion([0, 7, 8, 11, 12, 16, 24, 32, 40, 44, 47, meta.lowerBound, meta.upperBound - 1, meta.upperBound, bytes.count - 1, bytes.count - 5])
        for p in positions.sorted() {
            for mask: UInt8 in [0x01, 0x80, 0xFF] {
                var b = bytes
                b[p] ^= mask
                let e = check(b, "flip.opb")
                let kind = e.map(bundleErrorKind) ?? "no error"
                let expected: Set<String>
                switch p {
                case 0..<8: expected = ["wrongMagic"]
                case 8..<12: expected = ["unsupportedVersion"]
                case 12..<48: expected = ["corruptHeader"]
                case meta: expected = ["metadataChecksumMismatch"]
                default: expected = ["corruptData", "tensorChecksumMismatch"]
                }
                XCTAssertTrue(expected.contains(kind), "byte \(p) ^ \(mask): expected \(expected), got \(kind): \(String(describing: e))")
            }
        }
    }

    func testWrongMagicWrongVersionAndTrailingBytes() throws {
        let (_, bytes) = try writeSample()
        var zip = bytes
        zip.replaceSubrange(0..<4, with: [0x50, 0x4B, 0x03, 0x04])
        let e1 = check(zip, "zip.opb")
        XCTAssertEqual(e1.map(bundleErrorKind), "wrongMagic")
        XCTAssertTrue("\(e1!)".contains("not an Opacity bundle"), "\(e1!)")
        XCTAssertEqual(check(Array("{\"not\": \"a bundle\"}".utf8), "json.opb").map(bundleErrorKind), "wrongMagic")

        var v2 = bytes
        v2[8] = 2
        resign(&v2)
        let e2 = check(v2, "v2.opb")
        guard case let BundleError.unsupportedVersion(_, found, supported)? = e2 else { return XCTFail("\(String(describing: e2))") }
        XCTAssertEqual(found, 2)
        XCTAssertEqual(supported, [1])

        let e3 = check(bytes + [0, 0, 0], "long.opb")
        XCTAssertEqual(e3.map(bundleErrorKind), "trailingBytes")

        // a header that claims an impossible decompressed size, consistently signed
        var huge = bytes
        let claimed = UInt64(1) << 46  // 64 TiB from a few kilobytes
        for i in 0..<8 { huge[32 + i] = UInt8((claimed >> (8 * UInt64(i))) & 0xFF) }
        resign(&huge)
        let e4 = check(huge, "huge.opb")
        guard case let BundleError.corruptHeader(_, field, _)? = e4 else { return XCTFail("\(String(describing: e4))") }
        XCTAssertTrue(field.contains("raw data length"), field)
    }

    func testTamperedTensorTable() throws {
        let (_, bytes) = try writeSample()
        let r = bundleMetadataRange(bytes)
        let json = String(decoding: bytes[r], as: UTF8.self)
        // 1. an edit without fixing the checksum
        var edited = bytes
        let shapeAt = try XCTUnwrap(json.range(of: "\"shape\":[16,40]"))
        let digit = r.lowerBound + json.utf8.distance(from: json.startIndex, to: shapeAt.lowerBound) + 9
        XCTAssertEqual(edited[digit], UInt8(ascii: "1"))
        edited[digit] = UInt8(ascii: "2")  // [26,40]
        let e1 = check(edited, "t1.opb")
        XCTAssertEqual(e1.map(bundleErrorKind), "metadataChecksumMismatch")
        XCTAssertTrue("\(e1!)".contains("bytes 48..<"), "says where: \(e1!)")

        // 2. the same edit with the checksums recomputed: the table no longer adds up
        resign(&edited)
        let e2 = check(edited, "t2.opb")
        guard case let BundleError.invalidTensorTable(_, tensor, field, reason)? = e2 else { return XCTFail("\(String(describing: e2))") }
        XCTAssertEqual(tensor, "extra.weight")
        XCTAssertEqual(field, "length")
        XCTAssertTrue(reason.contains("[26, 40]"), reason)

        // 3. a changed tensor checksum, re-signed: caught when the data is read
        var crcEdit = bytes
        let crcAt = try XCTUnwrap(json.range(of: "\"crc32\":"))
        let p = r.lowerBound + json.utf8.distance(from: json.startIndex, to: crcAt.upperBound)
        crcEdit[p] = crcEdit[p] == UInt8(ascii: "1") ? UInt8(ascii: "2") : UInt8(ascii: "1")
        resign(&crcEdit)
        let e3 = check(crcEdit, "t3.opb")
        XCTAssertEqual(e3.map(bundleErrorKind), "tensorChecksumMismatch", "\(String(describing: e3))")

        // 4. an unknown dtype, re-signed
        var dtypeEdit = bytes
        let dAt = try XCTUnwrap(json.range(of: "\"dtype\":\"f16\""))
        let q = r.lowerBound + json.utf8.distance(from: json.startIndex, to: dAt.lowerBound) + 10
        dtypeEdit[q] = UInt8(ascii: "g")  // "g16"
        resign(&dtypeEdit)
        let e4 = check(dtypeEdit, "t4.opb")
        guard case let BundleError.invalidTensorTable(_, _, f4, r4)? = e4 else { return XCTFail("\(String(describing: e4))") }
        XCTAssertEqual(f4, "dtype")
        XCTAssertTrue(r4.contains("f16"), r4)

        // 5. metadata that is not the expected JSON, re-signed
        var kindEdit = bytes
        let kAt = try XCTUnwrap(json.range(of: "\"kind\":\"tensors\""))
        let s = r.lowerBound + json.utf8.distance(from: json.startIndex, to: kAt.lowerBound) + 8
        kindEdit[s] = UInt8(ascii: "x")
        resign(&kindEdit)
        let e5 = check(kindEdit, "t5.opb")
        guard case let BundleError.invalidMetadata(_, f5, _)? = e5 else { return XCTFail("\(String(describing: e5))") }
        XCTAssertEqual(f5, "kind")
    }
}
