import Foundation
import OpacityCore

/// One model in the zoo: where its bundle is, how to check it, and what it is.
///
/// JSON keys are the property names (Documentation/Zoo.md).
public struct ZooEntry: Codable, Hashable, Sendable {
    /// The entry's name: letters, digits, `.`, `_`, `-`, `+`; no path separators or `..`.
    public var name: String
    /// `detector` (loadable with ``Zoo/load(_:registry:allowFetch:progress:)``) or `encoder`
    /// (for `opacity train --encoder-weights zoo:NAME`).
    public var kind: String
    /// The canonical config string stored in the bundle.
    public var config: String
    /// A bundle shipped beside the manifest, as a path relative to the manifest's folder.
    public var file: String?
    /// Where to fetch the bundle (`https://`, `http://` or `file://`).
    public var url: String?
    /// SHA-256 of the bundle file, 64 lower-case hex digits.
    public var sha256: String
    /// Size of the bundle file in bytes.
    public var size: Int64
    /// Number of parameters of the model (buffers excluded).
    public var parameters: Int
    /// The data it was trained on.
    public var data: String
    /// Metrics, e.g. `["map": 0.23, "val_loss": 0.41]`.
    public var metrics: [String: Double]
    /// Licence of the weights.
    public var licence: String
    /// A sentence about the model.
    public var description: String?
    /// For `kind: "ensemble"`: the names of the detector entries it combines (the paper's
    /// fold and checkpoint ensembles), in order; every member shares one config.
    public var members: [String]?
    /// For `kind: "ensemble"`: how the members' outputs combine, as `opacity detect
    /// --ensemble` names the rules (`percentile`, the paper's p20/p80 rule, or `mean`);
    /// `percentile` when absent.
    public var ensemble: String?
    /// The model card (intended use, input, outputs, data, recipe, metrics, threshold,
    /// version history, licence); optional in the format, expected for published entries.
    public var card: ModelCard?
    /// The patient ids of the validation images the entry's training held out, on the data
    /// ``data`` names: `opacity eval` on data holding them scores these by default and
    /// counts any other image of that data as one the model trained on. Absent when the
    /// entry does not say.
    public var heldOut: [String]?
    /// The patient ids of the images the entry was trained on: `opacity eval` warns when it
    /// scores any of them, whatever data they come in (a folder of converted PNGs, a subset).
    /// Absent when the entry does not say; then only ``heldOut`` tells, on data that holds it.
    public var trainedOn: [String]?

    /// An entry with every field given.
    public init(name: String, kind: String = "detector", config: String, file: String? = nil, url: String? = nil,
                sha256: String, size: Int64, parameters: Int, data: String, metrics: [String: Double] = [:],
                licence: String, description: String? = nil, card: ModelCard? = nil) {
        self.name = name
        self.kind = kind
        self.config = config
        self.file = file
        self.url = url
        self.sha256 = sha256
        self.size = size
        self.parameters = parameters
        self.data = data
        self.metrics = metrics
        self.licence = licence
        self.description = description
        self.card = card
    }

    enum CodingKeys: String, CodingKey {
        case name, kind, config, file, url, sha256, size, parameters, data, metrics, licence, description, members, ensemble, card, heldOut
        case trainedOn
    }

    /// Decodes an entry; `kind` defaults to `detector`, `metrics` to none.
    public init(from decoder: Swift.Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        kind = try c.decodeIfPresent(String.self, forKey: .kind) ?? "detector"
        config = try c.decode(String.self, forKey: .config)
        file = try c.decodeIfPresent(String.self, forKey: .file)
        url = try c.decodeIfPresent(String.self, forKey: .url)
        sha256 = try c.decode(String.self, forKey: .sha256)
        size = try c.decode(Int64.self, forKey: .size)
        parameters = try c.decode(Int.self, forKey: .parameters)
        data = try c.decode(String.self, forKey: .data)
        metrics = try c.decodeIfPresent([String: Double].self, forKey: .metrics) ?? [:]
        licence = try c.decode(String.self, forKey: .licence)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        members = try c.decodeIfPresent([String].self, forKey: .members)
        ensemble = try c.decodeIfPresent(String.self, forKey: .ensemble)
        card = try c.decodeIfPresent(ModelCard.self, forKey: .card)
        heldOut = try c.decodeIfPresent([String].self, forKey: .heldOut)
        trainedOn = try c.decodeIfPresent([String].self, forKey: .trainedOn)
    }

    /// The `sha256` an ensemble entry carries: the SHA-256 of its members' `sha256` values,
    /// one per line in member order (so the entry pins exactly those weights).
    public static func ensembleDigest(memberHashes: [String]) -> String {
        SHA256.hash(memberHashes.joined(separator: "\n")).hex
    }
}

extension ZooEntry {
    /// The ensemble rules an entry may name.
    public static let ensembleRules = ["percentile", "mean"]
}

/// A zoo manifest file: a format tag, a version and a list of entries.
public struct ZooManifest: Codable, Hashable, Sendable {
    /// Always `opacity-zoo`.
    public var format: String
    /// The manifest format version (1).
    public var version: Int
    /// The entries.
    public var entries: [ZooEntry]

    /// The manifest format version this build reads and writes.
    public static let currentVersion = 1

    /// A manifest with these entries.
    public init(entries: [ZooEntry] = []) {
        format = "opacity-zoo"
        version = ZooManifest.currentVersion
        self.entries = entries
    }

    /// Reads and checks a manifest file.
    /// - Throws: ``ZooError/invalidManifest(file:field:reason:)`` naming the field, e.g.
    ///   `entries[2].sha256`.
    public static func read(_ url: URL) throws -> ZooManifest {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ZooError.invalidManifest(file: url.path, field: "(file)", reason: "cannot read: \(error.localizedDescription)")
        }
        guard data.count <= 64 << 20 else {
            throw ZooError.invalidManifest(file: url.path, field: "(file)", reason: "\(data.count) bytes; a manifest is at most 64 MiB")
        }
        guard InputLimits.jsonDepth(data) <= InputLimits.nestingDepth else {
            throw ZooError.invalidManifest(file: url.path, field: "(document)", reason: "JSON nested deeper than \(InputLimits.nestingDepth) levels")
        }
        let m: ZooManifest
        do { m = try JSONDecoder().decode(ZooManifest.self, from: data) } catch {
            let (field, reason) = decodingErrorParts(error)
            throw ZooError.invalidManifest(file: url.path, field: field.isEmpty ? "(document)" : field, reason: reason)
        }
        try m.validate(file: url.path)
        return m
    }

    /// Checks names, hashes, sizes, kinds, files and URLs.
    /// - Throws: ``ZooError/invalidManifest(file:field:reason:)``.
    public func validate(file: String) throws {
        guard format == "opacity-zoo" else { throw ZooError.invalidManifest(file: file, field: "format", reason: "'\(format)', expected 'opacity-zoo'") }
        guard version == ZooManifest.currentVersion else {
            throw ZooError.invalidManifest(file: file, field: "version", reason: "\(version); this build reads version \(ZooManifest.currentVersion)")
        }
        var seen = Set<String>()
        for (i, e) in entries.enumerated() {
            func bad(_ f: String, _ r: String) -> ZooError { .invalidManifest(file: file, field: "entries[\(i)].\(f)", reason: r) }
            do { try Zoo.checkName(e.name) } catch let ZooError.invalidName(_, reason) { throw bad("name", "'\(e.name)' \(reason)") }
            guard seen.insert(e.name).inserted else { throw bad("name", "'\(e.name)' appears twice") }
            let kinds = ["detector", "encoder", "ensemble"]
            guard kinds.contains(e.kind) else {
                throw bad("kind", "'\(e.kind)', expected detector, encoder or ensemble" + (nearestMatch(e.kind, in: kinds).map { " (did you mean '\($0)'?)" } ?? ""))
            }
            guard !e.config.isEmpty else { throw bad("config", "empty; expected the bundle's canonical config string") }
            guard e.sha256.count == 64, e.sha256.allSatisfy({ "0123456789abcdef".contains($0) }) else {
                throw bad("sha256", "'\(e.sha256)' is not 64 lower-case hex digits")
            }
            guard e.size >= 0 else { throw bad("size", "\(e.size) is negative") }
            guard e.parameters >= 0 else { throw bad("parameters", "\(e.parameters) is negative") }
            if let h = e.heldOut {
                if let k = h.firstIndex(where: { $0.isEmpty }) { throw bad("heldOut[\(k)]", "empty; expected a patient id") }
                guard Set(h).count == h.count else { throw bad("heldOut", "names a patient id twice") }
            }
            if let t = e.trainedOn {
                if let k = t.firstIndex(where: { $0.isEmpty }) { throw bad("trainedOn[\(k)]", "empty; expected a patient id") }
                guard Set(t).count == t.count else { throw bad("trainedOn", "names a patient id twice") }
                if let both = t.first(where: { Set(e.heldOut ?? []).contains($0) }) {
                    throw bad("trainedOn", "'\(both)' is in heldOut too; an image is either trained on or held out")
                }
            }
            if e.kind == "ensemble" {
                guard let m = e.members, m.count >= 2 else { throw bad("members", "an ensemble names at least 2 member entries") }
                guard e.file == nil && e.url == nil else { throw bad("file", "an ensemble has no file or url of its own; its members do") }
                if let r = e.ensemble, !ZooEntry.ensembleRules.contains(r) {
                    throw bad("ensemble", "'\(r)', expected one of \(ZooEntry.ensembleRules.joined(separator: ", "))")
                }
                continue
            }
            guard e.members == nil else { throw bad("members", "only an entry of kind ensemble has members") }
            guard e.file != nil || e.url != nil else { throw bad("file", "neither file nor url is given") }
            if let f = e.file {
                let parts = f.split(separator: "/", omittingEmptySubsequences: false)
                guard !f.isEmpty, !f.hasPrefix("/"), !f.contains("\\"), !parts.contains(".."), !parts.contains("") else {
                    throw bad("file", "'\(f)' must be a relative path inside the manifest's folder, without '..'")
                }
            }
            if let card = e.card { try card.validate(file: file, field: "entries[\(i)].card") }
            if let u = e.url {
                guard let url = URL(string: u), let s = url.scheme?.lowercased(), ["http", "https", "file"].contains(s) else {
                    throw bad("url", "'\(u)' is not an http://, https:// or file:// URL")
                }
            }
        }
    }

    /// Writes the manifest as sorted, indented JSON, atomically.
    /// - Throws: ``BundleError/io(file:operation:reason:)``.
    public func write(to url: URL) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = try e.encode(self) + Data("\n".utf8)
        try AtomicFile.write(url) { f in try data.withUnsafeBytes { try f.file.write($0) } }
    }
}
