import Foundation
import OpacityCore
import OpacityPersistence
import XCTest

final class ZooTests: TemporaryFolderTestCase {
    var bundle: URL!
    var bundleBytes: [UInt8] = []
    var sha = ""

    override func setUpWithError() throws {
        try super.setUpWithError()
        bundle = file("toy.opb")
        try WeightBundle.write(to: bundle, metadata: BundleMetadata(kind: .encoder, config: "toynet", provenance: Provenance(data: "unit test")),
                               groups: [TensorGroup("model", [("conv1.weight", randomTensor([4, 1, 3, 3], seed: 1)), ("big", randomTensor([64, 300], seed: 2))])])
        bundleBytes = Array(try Data(contentsOf: bundle))
        sha = SHA256.hash(bundleBytes).hex
    }

    func entry(_ name: String, file: String? = nil, url: String? = nil, sha256: String? = nil, size: Int64? = nil) -> ZooEntry {
        ZooEntry(name: name, kind: "encoder", config: "toynet", file: file, url: url, sha256: sha256 ?? sha, size: size ?? Int64(bundleBytes.count),
                 parameters: 19236, data: "unit test", metrics: ["loss": 1], licence: "CC0-1.0", description: "a toy")
    }

    func makeZoo(_ entries: [ZooEntry], user: [ZooEntry] = []) throws -> Zoo {
        let builtin = file("manifest.json"), userURL = file("user/zoo.json")
        try ZooManifest(entries: entries).write(to: builtin)
        if !user.isEmpty {
            try FileManager.default.createDirectory(at: userURL.deletingLastPathComponent(), withIntermediateDirectories: true)
            try ZooManifest(entries: user).write(to: userURL)
        }
        return try Zoo(manifests: [("built-in", builtin), ("user", userURL)], cacheDirectory: file("cache/zoo"))
    }

    func cacheContents() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: file("cache/zoo").path)) ?? []).sorted()
    }

    func testFetchFromFileURLWithProgressThenCacheHit() throws {
        let zoo = try makeZoo([entry("toy", url: bundle.absoluteString)])
        XCTAssertEqual(try zoo.status("toy"), .notFetched)
        XCTAssertThrowsError(try zoo.verifiedFile("toy")) { e in
            guard case ZooError.notFetched(let name, _) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(name, "toy")
            XCTAssertTrue("\(e)".contains("opacity zoo fetch toy"), "\(e)")
        }
        let seen = Locked<[Int64]>([])
        let got = try zoo.fetch("toy", progress: { p in seen.mutate { $0.append(p.bytes) } })
        XCTAssertEqual(got, zoo.cachedFile(for: try zoo.item("toy").entry))
        XCTAssertEqual(Array(try Data(contentsOf: got)), bundleBytes)
        XCTAssertEqual(seen.value.last, Int64(bundleBytes.count))
        XCTAssertEqual(seen.value, seen.value.sorted())
        XCTAssertEqual(try zoo.status("toy"), .cached(got))
        // cache hit: the source is gone, fetch and load still work
        try FileManager.default.removeItem(at: bundle)
        XCTAssertEqual(try zoo.fetch("toy"), got)
        XCTAssertEqual(try zoo.verify("toy"), got)
        XCTAssertEqual(cacheContents(), [got.lastPathComponent])
    }

    func testFetchOverHTTPFromALocalServerAndCacheHitWithoutNetwork() throws {
        let server = try ZooTestServer(routes: ["/models/toy.opb": bundleBytes])
        let zoo = try makeZoo([entry("toy", url: server.url("/models/toy.opb")), entry("gone", url: server.url("/missing.opb"))])
        let seen = Locked<[Double]>([])
        let got = try zoo.fetch("toy", progress: { p in seen.mutate { $0.append(p.fraction) } })
        XCTAssertEqual(Array(try Data(contentsOf: got)), bundleBytes)
        XCTAssertEqual(server.requests, ["/models/toy.opb"])
        XCTAssertEqual(seen.value.last, 1)
        XCTAssertThrowsError(try zoo.fetch("gone")) { e in
            guard case ZooError.fetchFailed(let name, _, let reason) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(name, "gone")
            XCTAssertTrue(reason.contains("404"), reason)
        }
        server.stop()
        // no server any more: a cached entry needs no network
        XCTAssertEqual(try zoo.fetch("toy"), got)
        XCTAssertEqual(try zoo.verifiedFile("toy"), got)
        XCTAssertEqual(server.requests.count, 2)
        XCTAssertEqual(cacheContents(), [got.lastPathComponent], "the failed fetch leaves nothing behind")
    }

    func testHashOrSizeMismatchIsRefusedAndNothingIsKept() throws {
        let wrong = String(repeating: "ab", count: 32)
        let server = try ZooTestServer(routes: ["/toy.opb": bundleBytes])
        defer { server.stop() }
        let zoo = try makeZoo([entry("bad-file", url: bundle.absoluteString, sha256: wrong),
                               entry("bad-http", url: server.url("/toy.opb"), sha256: wrong),
                               entry("short", url: bundle.absoluteString, size: Int64(bundleBytes.count - 1))])
        for name in ["bad-file", "bad-http"] {
            XCTAssertThrowsError(try zoo.fetch(name)) { e in
                guard case let ZooError.hashMismatch(n, _, expected, actual) = e else { return XCTFail("\(e)") }
                XCTAssertEqual(n, name)
                XCTAssertEqual(expected, wrong)
                XCTAssertEqual(actual, self.sha)
                XCTAssertTrue("\(e)".contains("refused"), "\(e)")
                // the download was wrong, not a cached copy: fetching again would not help
                XCTAssertFalse("\(e)".contains("zoo fetch"), "\(e)")
            }
        }
        XCTAssertThrowsError(try zoo.fetch("short")) { e in
            guard case ZooError.fetchFailed = e else { return XCTFail("\(e)") }
        }
        XCTAssertEqual(cacheContents(), [], "no file, temporary or final, may stay in the cache")
    }

    func testDamagedCachedOrShippedFileIsRefusedOnLoad() throws {
        let zoo = try makeZoo([entry("toy", url: bundle.absoluteString), entry("shipped", file: "toy.opb")])
        XCTAssertEqual(try zoo.status("shipped"), .shipped(bundle))
        XCTAssertEqual(try zoo.verify("shipped"), bundle)
        let cached = try zoo.fetch("toy")
        var b = bundleBytes
        b[b.count / 2] ^= 1
        _ = FileManager.default.createFile(atPath: cached.path, contents: Data(b))
        XCTAssertThrowsError(try zoo.verifiedFile("toy")) { e in
            guard case ZooError.hashMismatch = e else { return XCTFail("\(e)") }
            // a damaged cached copy says how to replace it
            XCTAssertTrue("\(e)".hasSuffix("; `opacity zoo fetch toy` replaces the cached copy"), "\(e)")
        }
        _ = FileManager.default.createFile(atPath: cached.path, contents: Data(b.prefix(100)))
        XCTAssertThrowsError(try zoo.verifiedBytes("toy")) { e in
            guard case ZooError.sizeMismatch = e else { return XCTFail("\(e)") }
            XCTAssertTrue("\(e)".hasSuffix("; `opacity zoo fetch toy` replaces the cached copy"), "\(e)")
        }
        _ = FileManager.default.createFile(atPath: bundle.path, contents: Data(b))
        XCTAssertThrowsError(try zoo.verifiedFile("shipped")) { e in
            guard case ZooError.hashMismatch = e else { return XCTFail("\(e)") }
            // a shipped file is not fetched: no such advice
            XCTAssertFalse("\(e)".contains("zoo fetch"), "\(e)")
        }
        // an explicit fetch replaces the damaged cached copy only from a good source
        _ = FileManager.default.createFile(atPath: bundle.path, contents: Data(bundleBytes))
        XCTAssertEqual(try zoo.fetch("toy"), cached)
        XCTAssertEqual(try zoo.verifiedFile("toy"), cached)
    }

    /// A run's `best.opb` is a symbolic link to its checkpoint; an entry naming it (as
    /// `opacity zoo add NAME runs/x/best.opb` writes) is checked by the target's size, the
    /// way loading measures it, not refused for the link's own length.
    func testEntryWhoseFileIsASymlinkVerifiesByItsTarget() throws {
        let link = file("best.opb")
        try FileManager.default.createSymbolicLink(atPath: link.path, withDestinationPath: "toy.opb")
        let zoo = try makeZoo([entry("linked", file: "best.opb")])
        XCTAssertEqual(try zoo.verifiedFile("linked"), link)
        XCTAssertEqual(try zoo.verify("linked"), link)
        XCTAssertEqual(try zoo.fetch("linked"), link)
        XCTAssertEqual(try zoo.verifiedBytes("linked").bytes, bundleBytes)
        XCTAssertNoThrow(try Zoo.check(link, against: try zoo.item("linked").entry))
        // a file that cannot be opened is said so, with the file and the system's reason (it
        // was a size mismatch of -1 bytes)
        let none = file("none.opb")
        XCTAssertThrowsError(try Zoo.check(none, against: try zoo.item("linked").entry)) { e in
            guard case let ZooError.unopenableFile(name, path, reason) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(name, "linked")
            XCTAssertEqual(path, none.path)
            XCTAssertEqual(reason, String(cString: strerror(ENOENT)))
            XCTAssertEqual("\(e)", "zoo entry 'linked': cannot open \(none.path): \(reason); expected a readable bundle file")
            // (not "-1" alone: the temporary folder's UUID may hold it, as in CI)
            XCTAssertFalse("\(e)".contains("-1 bytes") || "\(e)".contains("manifest says"), "\(e)")
        }
        // a link whose target has gone, likewise
        let dangling = file("dangling.opb")
        try FileManager.default.createSymbolicLink(atPath: dangling.path, withDestinationPath: "gone.opb")
        XCTAssertThrowsError(try Zoo.check(dangling, against: try zoo.item("linked").entry)) { e in
            guard case ZooError.unopenableFile(_, dangling.path, _) = e else { return XCTFail("\(e)") }
        }
    }

    func testFileURLsAreReadAsPaths() {
        let cwd = FileManager.default.currentDirectoryPath
        XCTAssertEqual(Zoo.localPath(ofFileURL: "file:///a/b%20c.opb"), "/a/b c.opb")
        XCTAssertEqual(Zoo.localPath(ofFileURL: "file://localhost/a/b.opb"), "/a/b.opb")
        XCTAssertEqual(Zoo.localPath(ofFileURL: "file:pub/b.opb"), URL(fileURLWithPath: cwd + "/pub/b.opb").standardizedFileURL.path)
        XCTAssertEqual(Zoo.localPath(ofFileURL: "file://pub/b.opb"), URL(fileURLWithPath: cwd + "/pub/b.opb").standardizedFileURL.path)
        XCTAssertNil(Zoo.localPath(ofFileURL: "https://example.org/b.opb"))
        let hint = "\(ZooError.notFetched(name: "x", url: "file:///models/x.opb"))"
        XCTAssertTrue(hint.contains("(copies /models/x.opb)") && !hint.contains("file:"), hint)
        XCTAssertTrue("\(ZooError.notFetched(name: "x", url: "https://h/x.opb"))".contains("(downloads https://h/x.opb)"))
    }

    func testNamesWithPathSeparatorsOrDotDotAreRefused() throws {
        for bad in ["../etc/passwd", "a/b", "a\\b", "..", "x..y", "", ".hidden", "name with space", "é"] {
            XCTAssertThrowsError(try Zoo.checkName(bad), bad) { e in
                guard case ZooError.invalidName = e else { return XCTFail("\(e)") }
            }
        }
        for good in ["retinanet-resnet34_rsna.f0", "R50+fpn", "x1"] { XCTAssertNoThrow(try Zoo.checkName(good), good) }
        let zoo = try makeZoo([entry("toy", url: bundle.absoluteString)])
        XCTAssertThrowsError(try zoo.fetch("../toy")) { e in
            guard case ZooError.invalidName = e else { return XCTFail("\(e)") }
        }
        XCTAssertThrowsError(try makeZoo([entry("a/b", url: bundle.absoluteString)])) { e in
            guard case let ZooError.invalidManifest(_, field, _) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(field, "entries[0].name")
        }
        XCTAssertThrowsError(try makeZoo([entry("toy", file: "../toy.opb")])) { e in
            guard case let ZooError.invalidManifest(_, field, _) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(field, "entries[0].file")
        }
    }

    func testUnknownNameSuggestsTheNearest() throws {
        let zoo = try makeZoo([entry("retinanet-resnet34", url: bundle.absoluteString), entry("retinanet-seresnext50", url: bundle.absoluteString)])
        XCTAssertThrowsError(try zoo.item("retinanet-resnet43")) { e in
            guard case let ZooError.unknownEntry(_, nearest, known) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(nearest, "retinanet-resnet34")
            XCTAssertEqual(known, ["retinanet-resnet34", "retinanet-seresnext50"])
            XCTAssertTrue("\(e)".contains("did you mean 'retinanet-resnet34'"), "\(e)")
        }
    }

    func testManifestValidationNamesTheField() throws {
        let m = file("m.json")
        func err(_ json: String) -> String {
            _ = FileManager.default.createFile(atPath: m.path, contents: Data(json.utf8))
            do { _ = try ZooManifest.read(m); return "no error" } catch { return "\(error)" }
        }
        let good = "\"name\":\"a\",\"config\":\"retinanet\",\"url\":\"https://x/a.opb\",\"sha256\":\"\(sha)\",\"size\":1,\"parameters\":1,\"data\":\"d\",\"licence\":\"l\""
        XCTAssertEqual(err("{\"format\":\"opacity-zoo\",\"version\":1,\"entries\":[{\(good)}]}"), "no error")
        XCTAssertTrue(err("{\"format\":\"opacity-zoo\",\"version\":1,\"entries\":[{\(good.replacingOccurrences(of: sha, with: "XYZ"))}]}").contains("entries[0].sha256"))
        XCTAssertTrue(err("{\"format\":\"opacity-zoo\",\"version\":1,\"entries\":[{\(good.replacingOccurrences(of: "https", with: "ftp"))}]}").contains("entries[0].url"))
        XCTAssertTrue(err("{\"format\":\"opacity-zoo\",\"version\":1,\"entries\":[{\(good),\"kind\":\"detektor\"}]}").contains("did you mean 'detector'"))
        XCTAssertTrue(err("{\"format\":\"opacity-zoo\",\"version\":1,\"entries\":[{\(good.replacingOccurrences(of: ",\"licence\":\"l\"", with: ""))}]}").contains("entries[0].licence"))
        XCTAssertTrue(err("{\"format\":\"opacity-zoo\",\"version\":1,\"entries\":[{\(good),\"heldOut\":[\"p1\",\"\"]}]}").contains("entries[0].heldOut[1]"))
        XCTAssertTrue(err("{\"format\":\"opacity-zoo\",\"version\":1,\"entries\":[{\(good),\"heldOut\":[\"p1\",\"p1\"]}]}").contains("names a patient id twice"))
        XCTAssertEqual(err("{\"format\":\"opacity-zoo\",\"version\":1,\"entries\":[{\(good),\"heldOut\":[\"p1\",\"p2\"]}]}"), "no error")
        // trainedOn: the same checks, and no id both trained on and held out
        XCTAssertTrue(err("{\"format\":\"opacity-zoo\",\"version\":1,\"entries\":[{\(good),\"trainedOn\":[\"\"]}]}").contains("entries[0].trainedOn[0]"))
        XCTAssertTrue(err("{\"format\":\"opacity-zoo\",\"version\":1,\"entries\":[{\(good),\"trainedOn\":[\"p3\",\"p3\"]}]}").contains("names a patient id twice"))
        XCTAssertTrue(
            err("{\"format\":\"opacity-zoo\",\"version\":1,\"entries\":[{\(good),\"heldOut\":[\"p1\"],\"trainedOn\":[\"p2\",\"p1\"]}]}")
                .contains("'p1' is in heldOut too"))
        XCTAssertEqual(err("{\"format\":\"opacity-zoo\",\"version\":1,\"entries\":[{\(good),\"heldOut\":[\"p1\"],\"trainedOn\":[\"p2\"]}]}"), "no error")
        XCTAssertTrue(err("{\"format\":\"opacity-zoo\",\"version\":2,\"entries\":[]}").contains("version"))
        XCTAssertTrue(err("not json").contains("m.json"))
    }

    func testUserManifestOverridesBuiltinAndEnvironment() throws {
        let zoo = try makeZoo([entry("toy", url: "https://example.invalid/toy.opb")], user: [entry("toy", file: "../toy.opb".replacingOccurrences(of: "../", with: "")), entry("mine", url: bundle.absoluteString)])
        XCTAssertEqual(zoo.items.map(\.entry.name), ["mine", "toy"])
        XCTAssertEqual(try zoo.item("toy").source, "user")
        let env = ["OPACITY_CACHE": folder.path + "/c", "OPACITY_USER_MANIFEST": file("user/zoo.json").path, "OPACITY_ZOO_MANIFEST": file("manifest.json").path]
        let std = try Zoo.standard(environment: env)
        XCTAssertEqual(std.cacheDirectory.path, folder.path + "/c/zoo")
        XCTAssertEqual(std.sources.map(\.label), ["built-in", "user"])
        XCTAssertEqual(Zoo.cacheDirectory(environment: ["HOME": "/home/u"]).path, "/home/u/.cache/opacity/zoo")
        XCTAssertEqual(Zoo.cacheDirectory(environment: ["XDG_CACHE_HOME": "/x"]).path, "/x/opacity/zoo")
    }

    func testBuiltinManifestIsValid() throws {
        let url = try XCTUnwrap(Zoo.builtinManifestURL(environment: [:]), "zoo/manifest.json of the checkout")
        let m = try ZooManifest.read(url)
        XCTAssertEqual(m.format, "opacity-zoo")
    }

    func testMakeEntryDescribesABundle() throws {
        let e = try Zoo.makeEntry(name: "toy", bundle: bundle, file: "toy.opb", licence: "CC0-1.0")
        XCTAssertEqual(e.sha256, sha)
        XCTAssertEqual(e.size, Int64(bundleBytes.count))
        XCTAssertEqual(e.kind, "encoder")
        XCTAssertEqual(e.config, "toynet")
        XCTAssertEqual(e.parameters, 36 + 64 * 300)
        XCTAssertEqual(e.data, "unit test")
        let zoo = try makeZoo([e])
        XCTAssertEqual(try zoo.verify("toy"), bundle)
    }

    /// Case zoo-hash-check-toctou: the bytes that are loaded are the bytes that were hashed.
    /// A file swapped after the check cannot reach the loader; a swapped file is refused.
    func testLoadedBytesAreTheHashedBytes() throws {
        let zoo = try makeZoo([entry("toy", url: bundle.absoluteString)])
        let cached = try zoo.fetch("toy")
        let (url, bytes) = try zoo.verifiedBytes("toy")
        XCTAssertEqual(url, cached)
        XCTAssertEqual(bytes, bundleBytes)
        // swap the cached file (same size, valid bundle, other tensors) after the check
        let evil = file("evil.opb")
        try WeightBundle.write(to: evil, metadata: BundleMetadata(kind: .encoder, config: "toynet", provenance: Provenance(data: "unit test")),
                               groups: [TensorGroup("model", [("conv1.weight", randomTensor([4, 1, 3, 3], seed: 7)), ("big", randomTensor([64, 300], seed: 8))])])
        XCTAssertEqual(rename(evil.path, cached.path), 0)
        // what was verified is what is read
        let reader = try BundleReader(bytes: bytes, url: url)
        let t = try reader.tensors()["model"]!["conv1.weight"]!
        XCTAssertEqual(t.scalars, randomTensor([4, 1, 3, 3], seed: 1).scalars)
        // and a new check of the swapped file refuses it
        XCTAssertThrowsError(try zoo.verifiedBytes("toy")) { e in
            switch e {
            case ZooError.hashMismatch, ZooError.sizeMismatch: break
            default: XCTFail("\(e)")
            }
        }
    }

    /// Manifests nested beyond the depth limit are refused with a clear error, not a stack
    /// overflow.
    func testDeeplyNestedManifestIsRefused() throws {
        let url = file("deep.json")
        try Data((String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)).utf8).write(to: url)
        XCTAssertThrowsError(try ZooManifest.read(url)) { e in XCTAssertTrue("\(e)".contains("nested"), "\(e)") }
    }
}

/// A value shared with callbacks on other threads.
final class Locked<T>: @unchecked Sendable {
    private var v: T
    private let lock = NSLock()
    init(_ v: T) { self.v = v }
    var value: T { lock.lock(); defer { lock.unlock() }; return v }
    func mutate(_ f: (inout T) -> Void) { lock.lock(); f(&v); lock.unlock() }
}
