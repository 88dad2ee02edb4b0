import Foundation
import OpacityCore

/// The model zoo: named bundles listed in manifests, fetched into a cache on request,
/// hash-checked every time they are used.
///
/// Entries come from the built-in manifest (found beside the executable, see
/// ``builtinManifestURL(environment:executable:)``) and a user manifest; a user entry with the same name replaces the built-in one.
/// Loading never touches the network: ``fetch(_:force:progress:)`` (or
/// `opacity zoo fetch NAME`, or `allowFetch: true`) does.
///
/// ```swift
/// let detector = try Zoo.load("retinanet-resnet34-rsna", registry: Registry.standard())
/// ```
///
/// Environment variables: `OPACITY_CACHE` (cache folder; default `$XDG_CACHE_HOME/opacity`
/// or `~/.cache/opacity`), `OPACITY_USER_MANIFEST` (default
/// `$XDG_CONFIG_HOME/opacity/zoo.json` or `~/.config/opacity/zoo.json`),
/// `OPACITY_ZOO_MANIFEST` (replaces the built-in manifest), `OPACITY_HOME` (the folder holding
/// `zoo/` when none is found beside the executable).
public struct Zoo: Sendable {
    /// The entry `opacity detect`, `eval`, `serve` and `export` use when no model is named: the
    /// ResNet-34 RetinaNet trained on the real rsna1k images (Documentation/Zoo.md).
    public static let defaultModelName = "retinanet-r34-rsna1k"

    /// The prefix that makes a model reference the zoo's entry (`zoo:NAME`), whatever files or
    /// folders of that name exist: `train --init-weights` and `--encoder-weights`, and
    /// `--model` of detect, eval, submit, serve and export.
    public static let referencePrefix = "zoo:"

    /// `NAME` for a reference `zoo:NAME`, else `nil`.
    public static func entryName(inReference reference: String) -> String? {
        reference.hasPrefix(referencePrefix) ? String(reference.dropFirst(referencePrefix.count)) : nil
    }

    /// One manifest the zoo reads.
    public struct Source: Sendable {
        /// `built-in` or `user` (or a caller's label).
        public var label: String
        /// The manifest file.
        public var manifestURL: URL
        /// Its entries.
        public var manifest: ZooManifest
    }

    /// An entry with the manifest it came from.
    public struct Item: Sendable {
        /// The entry.
        public var entry: ZooEntry
        /// The label of its manifest.
        public var source: String
        /// The manifest file (shipped files are relative to its folder).
        public var manifestURL: URL

        /// The shipped file's location, if the entry names one.
        public var shippedFile: URL? {
            entry.file.map { manifestURL.deletingLastPathComponent().appendingPathComponent($0) }
        }
    }

    /// Where an entry's bundle is.
    public enum Status: Sendable, Equatable {
        /// Shipped beside the manifest.
        case shipped(URL)
        /// Fetched into the cache.
        case cached(URL)
        /// Needs a fetch.
        case notFetched
    }

    /// Progress of a fetch.
    public struct Progress: Sendable {
        /// Bytes received so far.
        public var bytes: Int64
        /// Expected bytes (from the manifest).
        public var total: Int64
        /// `bytes / total`, in `[0, 1]`.
        public var fraction: Double { total > 0 ? min(1, Double(bytes) / Double(total)) : 1 }
    }

    /// The manifests, built-in first.
    public let sources: [Source]
    /// The folder fetched bundles are kept in.
    public let cacheDirectory: URL

    /// A zoo over the given manifests. A manifest file that does not exist counts as empty.
    /// - Parameters:
    ///   - manifests: `(label, file)` pairs; later ones replace earlier entries of the same name.
    ///   - cacheDirectory: where fetched bundles go (created on first fetch).
    /// - Throws: ``ZooError/invalidManifest(file:field:reason:)``.
    public init(manifests: [(label: String, url: URL)], cacheDirectory: URL) throws {
        var s: [Source] = []
        for (label, url) in manifests where FileManager.default.fileExists(atPath: url.path) {
            s.append(Source(label: label, manifestURL: url, manifest: try ZooManifest.read(url)))
        }
        sources = s
        self.cacheDirectory = cacheDirectory
    }

    /// The zoo a user gets: built-in manifest, user manifest and cache folder from the
    /// environment (see the type's discussion).
    /// - Throws: ``ZooError/invalidManifest(file:field:reason:)``.
    public static func standard(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Zoo {
        var m: [(String, URL)] = []
        if let b = builtinManifestURL(environment: environment) { m.append(("built-in", b)) }
        m.append(("user", userManifestURL(environment: environment)))
        return try Zoo(manifests: m, cacheDirectory: cacheDirectory(environment: environment))
    }

    /// Loads a zoo detector by name from the standard zoo (no network; see
    /// ``load(_:registry:allowFetch:progress:)``).
    public static func load(_ name: String, registry: Registry) throws -> Detector {
        try standard().load(name, registry: registry)
    }

    // MARK: Locations

    /// `OPACITY_CACHE`, else `$XDG_CACHE_HOME/opacity`, else `~/.cache/opacity`; fetched
    /// zoo bundles go into its `zoo` subfolder.
    public static func cacheDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        let base: URL
        if let c = environment["OPACITY_CACHE"], !c.isEmpty { base = URL(fileURLWithPath: c) }
        else if let x = environment["XDG_CACHE_HOME"], !x.isEmpty { base = URL(fileURLWithPath: x).appendingPathComponent("opacity") }
        else { base = home(environment).appendingPathComponent(".cache/opacity") }
        return base.appendingPathComponent("zoo")
    }

    /// `OPACITY_USER_MANIFEST`, else `$XDG_CONFIG_HOME/opacity/zoo.json`, else `~/.config/opacity/zoo.json`.
    public static func userManifestURL(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let u = environment["OPACITY_USER_MANIFEST"], !u.isEmpty { return URL(fileURLWithPath: u) }
        if let x = environment["XDG_CONFIG_HOME"], !x.isEmpty { return URL(fileURLWithPath: x).appendingPathComponent("opacity/zoo.json") }
        return home(environment).appendingPathComponent(".config/opacity/zoo.json")
    }

    /// The built-in manifest, found at run time (no path of the build machine is compiled in):
    ///
    /// 1. `OPACITY_ZOO_MANIFEST`, if set;
    /// 2. beside the running executable (symbolic links resolved), looking up to five folders
    ///    up from it: `share/opacity/zoo/manifest.json` (the layout `scripts/install.sh
    ///    --prefix DIR` makes: `DIR/bin/opacity`, `DIR/share/opacity/zoo/`), or
    ///    `zoo/manifest.json` in a folder that also holds `Package.swift` (a source checkout
    ///    whose `.build` holds the executable, wherever the checkout was moved);
    /// 3. `$OPACITY_HOME/zoo/manifest.json` (`OPACITY_HOME` names the folder holding `zoo/`,
    ///    e.g. `/usr/local/share/opacity` or a checkout).
    ///
    /// - Parameter executable: the running program (default: this process's executable).
    /// - Returns: the first manifest file that exists, or `nil` (the zoo then has only the
    ///   user manifest).
    public static func builtinManifestURL(environment: [String: String] = ProcessInfo.processInfo.environment,
                                          executable: URL? = Bundle.main.executableURL) -> URL? {
        if let z = environment["OPACITY_ZOO_MANIFEST"], !z.isEmpty { return URL(fileURLWithPath: z) }
        let fm = FileManager.default
        if let exe = executable?.resolvingSymlinksInPath() {
            var dir = exe.deletingLastPathComponent()
            for _ in 0..<6 {
                let installed = dir.appendingPathComponent("share/opacity/zoo/manifest.json")
                if fm.fileExists(atPath: installed.path) { return installed }
                let checkout = dir.appendingPathComponent("zoo/manifest.json")
                if fm.fileExists(atPath: dir.appendingPathComponent("Package.swift").path), fm.fileExists(atPath: checkout.path) {
                    return checkout
                }
                let parent = dir.deletingLastPathComponent()
                if parent.path == dir.path { break }
                dir = parent
            }
        }
        if let h = environment["OPACITY_HOME"], !h.isEmpty {
            let m = URL(fileURLWithPath: h).appendingPathComponent("zoo/manifest.json")
            if fm.fileExists(atPath: m.path) { return m }
        }
        return nil
    }

    private static func home(_ env: [String: String]) -> URL {
        URL(fileURLWithPath: env["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory())
    }

    // MARK: Entries

    /// Every entry, sorted by name; user entries replace built-in ones of the same name.
    public var items: [Item] {
        var byName: [String: Item] = [:]
        for s in sources { for e in s.manifest.entries { byName[e.name] = Item(entry: e, source: s.label, manifestURL: s.manifestURL) } }
        return byName.values.sorted { $0.entry.name < $1.entry.name }
    }

    /// Checks that a name is safe to use as a file name in the cache.
    /// - Throws: ``ZooError/invalidName(name:reason:)``.
    public static func checkName(_ name: String) throws {
        func bad(_ r: String) -> ZooError { .invalidName(name: name, reason: r) }
        guard !name.isEmpty else { throw bad("it is empty") }
        guard name.count <= 128 else { throw bad("it is longer than 128 characters") }
        if name.contains("/") || name.contains("\\") { throw bad("it contains a path separator") }
        if name.contains("..") { throw bad("it contains '..'") }
        guard let f = name.unicodeScalars.first, f.isASCII, f.properties.isAlphabetic || ("0"..."9").contains(Character(f)) else {
            throw bad("it must start with an ASCII letter or digit")
        }
        for c in name.unicodeScalars {
            guard c.isASCII, c.properties.isAlphabetic || ("0"..."9").contains(Character(c)) || "._-+".unicodeScalars.contains(c) else {
                throw bad("it contains '\(c)'")
            }
        }
    }

    /// The entry called `name`.
    /// - Throws: ``ZooError/invalidName(name:reason:)``, or ``ZooError/unknownEntry(name:nearest:known:)``
    ///   with the nearest known name.
    public func item(_ name: String) throws -> Item {
        try Zoo.checkName(name)
        let all = items
        if let i = all.first(where: { $0.entry.name == name }) { return i }
        let names = all.map(\.entry.name)
        throw ZooError.unknownEntry(name: name, nearest: nearestMatch(name, in: names), known: names)
    }

    /// The members and rule of an ensemble entry, checked: every member is a detector
    /// entry of this zoo, all share one config, and the entry's `sha256` pins the members'
    /// hashes (see ``ZooEntry/ensembleDigest(memberHashes:)``).
    /// - Returns: `nil` when `name` is not an ensemble entry.
    /// - Throws: ``ZooError/unknownEntry(name:nearest:known:)`` for an unknown name or
    ///   member, ``ZooError/wrongKind(name:expected:found:)`` for a member that is not a
    ///   detector, ``ZooError/invalidManifest(file:field:reason:)`` for mixed configs or a
    ///   digest that does not match the members.
    public func ensemble(_ name: String) throws -> (members: [ZooEntry], rule: String)? {
        let i = try item(name)
        guard i.entry.kind == "ensemble", let names = i.entry.members else { return nil }
        var members: [ZooEntry] = []
        for n in names {
            let m = try item(n).entry
            guard m.kind == "detector" else { throw ZooError.wrongKind(name: n, expected: "detector (member of \(name))", found: m.kind) }
            guard m.config == members.first?.config ?? m.config else {
                throw ZooError.invalidManifest(file: i.manifestURL.path, field: "\(name).members",
                                               reason: "'\(n)' has config \(m.config), unlike \(members[0].name)'s \(members[0].config)")
            }
            members.append(m)
        }
        let digest = ZooEntry.ensembleDigest(memberHashes: members.map(\.sha256))
        guard digest == i.entry.sha256 else {
            throw ZooError.invalidManifest(file: i.manifestURL.path, field: "\(name).sha256",
                                           reason: "\(i.entry.sha256) does not pin the members' hashes (expected \(digest))")
        }
        return (members, i.entry.ensemble ?? "percentile")
    }

    /// Where the entry's bundle lives in the cache.
    public func cachedFile(for entry: ZooEntry) -> URL {
        cacheDirectory.appendingPathComponent("\(entry.name)-\(entry.sha256.prefix(16)).\(BundleFormat.fileExtension)")
    }

    /// Whether the entry is shipped, cached or still to fetch (files are not hashed here).
    public func status(_ name: String) throws -> Status {
        let i = try item(name)
        if let f = i.shippedFile, FileManager.default.fileExists(atPath: f.path) { return .shipped(f) }
        let c = cachedFile(for: i.entry)
        return FileManager.default.fileExists(atPath: c.path) ? .cached(c) : .notFetched
    }

    /// The entry's local bundle after checking its size and SHA-256; never uses the network.
    /// - Throws: ``ZooError/notFetched(name:url:)``, ``ZooError/unopenableFile(name:file:reason:)``,
    ///   ``ZooError/sizeMismatch(name:file:expected:actual:)``, ``ZooError/hashMismatch(name:file:expected:actual:)``.
    public func verifiedFile(_ name: String) throws -> URL {
        let i = try item(name)
        switch try status(name) {
        case .shipped(let f), .cached(let f):
            try Zoo.check(f, against: i.entry)
            return f
        case .notFetched:
            if i.entry.url == nil, let f = i.shippedFile { throw ZooError.missingFile(name: name, file: f.path) }
            throw ZooError.notFetched(name: name, url: i.entry.url)
        }
    }

    /// The entry's local bundle read once into memory and checked there: its size and
    /// SHA-256 are those of the bytes returned, so loading them (``BundleReader/init(bytes:url:)``,
    /// ``Zoo/loadDetector(_:registry:options:)``) uses exactly what was verified, even if
    /// the file is replaced meanwhile. Never uses the network.
    /// - Throws: as ``verifiedFile(_:)``.
    public func verifiedBytes(_ name: String) throws -> (url: URL, bytes: [UInt8]) {
        let i = try item(name)
        switch try status(name) {
        case .shipped(let f), .cached(let f):
            let fd = try FileDescriptor.open(reading: f.path)
            let size = try fd.size()
            guard size == UInt64(max(0, i.entry.size)) else {
                throw ZooError.sizeMismatch(name: name, file: f.path, expected: i.entry.size, actual: Int64(size))
            }
            let bytes = try fd.read(count: Int(size), at: 0)
            // one byte more would mean the file grew while it was read
            guard bytes.count == Int(size), try fd.read(count: 1, at: size).isEmpty else {
                throw ZooError.sizeMismatch(name: name, file: f.path, expected: i.entry.size, actual: Int64(bytes.count))
            }
            var h = SHA256()
            bytes.withUnsafeBytes { h.update($0) }
            let digest = h.finalize().hex
            guard digest == i.entry.sha256 else {
                throw ZooError.hashMismatch(name: name, file: f.path, expected: i.entry.sha256, actual: digest)
            }
            return (f, bytes)
        case .notFetched:
            if i.entry.url == nil, let f = i.shippedFile { throw ZooError.missingFile(name: name, file: f.path) }
            throw ZooError.notFetched(name: name, url: i.entry.url)
        }
    }

    /// Loads an entry's detector from the bytes that were hash-checked (``verifiedBytes(_:)``).
    /// - Throws: ``ZooError`` and ``BundleError``.
    public func loadDetector(_ name: String, registry: Registry, options: LoadOptions = .strict) throws -> LoadedDetector {
        let (url, bytes) = try verifiedBytes(name)
        var loaded = try Detector.loadWithReport(reader: try BundleReader(bytes: bytes, url: url), registry: registry, options: options)
        loaded.sha256 = try item(name).entry.sha256  // verifiedBytes checked these very bytes against it
        return loaded
    }

    /// Checks a file's size and SHA-256 against an entry.
    /// - Throws: ``ZooError/unopenableFile(name:file:reason:)`` for a file that cannot be opened
    ///   (missing, a dangling link, no permission: the system's reason),
    ///   ``ZooError/sizeMismatch(name:file:expected:actual:)`` or
    ///   ``ZooError/hashMismatch(name:file:expected:actual:)``;
    ///   ``BundleError/io(file:operation:reason:)`` when an opened file cannot be read.
    ///
    /// The size is that of the file opened and hashed (`fstat`), as ``verifiedBytes(_:)``
    /// measures it: a symbolic link (a run's `best.opb` added with `opacity zoo add`) is
    /// checked by its target, not refused for the length of the link itself.
    public static func check(_ file: URL, against entry: ZooEntry) throws {
        let fd: FileDescriptor
        do { fd = try FileDescriptor.open(reading: file.path) } catch {
            let reason: String
            if case let BundleError.io(_, _, why) = error { reason = why } else { reason = "\(error)" }
            throw ZooError.unopenableFile(name: entry.name, file: file.path, reason: reason)
        }
        let size = Int64(try fd.size())
        guard size == entry.size else { throw ZooError.sizeMismatch(name: entry.name, file: file.path, expected: entry.size, actual: size) }
        let digest = try sha256(of: fd)
        guard digest == entry.sha256 else { throw ZooError.hashMismatch(name: entry.name, file: file.path, expected: entry.sha256, actual: digest) }
    }

    /// The SHA-256 of a file, read in 1 MiB pieces.
    /// - Throws: ``BundleError/io(file:operation:reason:)``.
    public static func sha256(of file: URL) throws -> String {
        try sha256(of: try FileDescriptor.open(reading: file.path))
    }

    /// The SHA-256 of an open file, read from its start in 1 MiB pieces.
    static func sha256(of fd: FileDescriptor) throws -> String {
        var h = SHA256()
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buf.deallocate() }
        var offset: UInt64 = 0
        while true {
            let n = try fd.read(into: buf, at: offset)
            if n == 0 { break }
            h.update(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            offset += UInt64(n)
        }
        return h.finalize().hex
    }

    /// Checks an entry completely: size, SHA-256, and the bundle's own structure and
    /// checksums.
    /// - Returns: the file checked.
    /// - Throws: ``ZooError`` or ``BundleError``.
    @discardableResult
    public func verify(_ name: String) throws -> URL {
        let f = try verifiedFile(name)
        try WeightBundle.verify(f)
        return f
    }

    /// Loads a zoo detector: finds the entry, checks the local file's SHA-256, builds the
    /// model from the bundle's config string and loads its weights strictly.
    /// - Parameters:
    ///   - name: the entry.
    ///   - registry: must know the model's components.
    ///   - allowFetch: fetch the bundle if it is not local (off by default: loading
    ///     never uses the network unless asked).
    ///   - progress: called during a fetch.
    /// - Returns: the detector, in evaluation mode.
    /// - Throws: ``ZooError`` or ``BundleError``.
    public func load(_ name: String, registry: Registry, allowFetch: Bool = false,
                     progress: (@Sendable (Progress) -> Void)? = nil) throws -> Detector {
        let i = try item(name)
        guard i.entry.kind == "detector" else {
            throw ZooError.wrongKind(name: name, expected: "detector", found: i.entry.kind + " (start training from it with --encoder-weights zoo:\(name))")
        }
        let file: URL
        if allowFetch, try status(name) == .notFetched { file = try fetch(name, progress: progress) } else { file = try verifiedFile(name) }
        return try Detector.load(from: file, registry: registry)
    }

    // MARK: Publishing

    /// A manifest entry describing a bundle file: config, kind, size, SHA-256, parameter
    /// count and metrics are read from the file.
    /// - Parameters:
    ///   - name: the entry's name.
    ///   - bundle: the bundle file.
    ///   - file: its path relative to the manifest (for bundles shipped in `zoo/`).
    ///   - url: where it will be published.
    ///   - data: the training data.
    ///   - licence: the weights' licence.
    /// - Throws: ``ZooError/invalidName(name:reason:)`` or ``BundleError``.
    public static func makeEntry(name: String, bundle: URL, file: String? = nil, url: String? = nil, data: String? = nil,
                                 licence: String, description: String? = nil) throws -> ZooEntry {
        try checkName(name)
        let info = try WeightBundle.verify(bundle)
        let buffers = ["running_mean", "running_var", "num_batches_tracked"]
        let params = info.tensors.filter { t in t.group == WeightBundle.modelGroup && !buffers.contains { t.name.hasSuffix($0) } }
            .reduce(0) { $0 + $1.count }
        return ZooEntry(name: name, kind: info.metadata.kind == .encoder ? "encoder" : "detector", config: info.metadata.config,
                        file: file, url: url, sha256: try sha256(of: bundle), size: Int64(info.fileBytes), parameters: params,
                        data: data ?? info.metadata.provenance.data ?? "", metrics: info.metadata.metrics, licence: licence,
                        description: description)
    }
}
