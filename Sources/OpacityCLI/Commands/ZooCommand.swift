import ArgumentParser
import Foundation
import Opacity

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `opacity zoo`: list, inspect, fetch and verify zoo models.
struct ZooCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "zoo",
        abstract: "List, inspect, fetch and verify the model zoo.",
        discussion: """
            Entries come from the built-in manifest (zoo/manifest.json) and the user manifest \
            ($OPACITY_USER_MANIFEST, default ~/.config/opacity/zoo.json). Fetched bundles go to \
            $OPACITY_CACHE/zoo (default ~/.cache/opacity/zoo). Only `zoo fetch` uses the \
            network; every file's SHA-256 is checked on fetch and on every load.
            """,
        subcommands: [List.self, Info.self, Fetch.self, Verify.self, Add.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List every zoo entry with where its bundle is.")

        func run() throws {
            let zoo = try Zoo.standard()
            let items = zoo.items
            guard !items.isEmpty else {
                say("the zoo has no entries yet (\(manifests(zoo)))")
                say("add a bundle with: opacity zoo add NAME BUNDLE --licence LICENCE [--url URL]")
                return
            }
            say("name".padding(toLength: 32, withPad: " ", startingAt: 0) + " kind      status       size MB   params  metrics")
            for i in items {
                let e = i.entry
                let status: String
                switch try zoo.status(e.name) {
                case .shipped: status = "shipped"
                case .cached: status = "cached"
                case .notFetched: status = "not fetched"
                }
                // as `zoo info` says them (trial: list said 0.07 where info said 0.0700)
                let metrics = e.metrics.sorted { $0.key < $1.key }.map { "\($0.key)=\(metricText($0.value))" }.joined(separator: " ")
                var line = e.name.padding(toLength: max(32, e.name.count), withPad: " ", startingAt: 0) + " "
                line += e.kind.padding(toLength: 9, withPad: " ", startingAt: 0) + " "
                line += status.padding(toLength: 11, withPad: " ", startingAt: 0)
                line += String(format: " %8.1f %7.1fM  ", Double(e.size) / 1e6, Double(e.parameters) / 1e6)
                line += metrics
                if i.source != "built-in" { line += "  [\(i.source)]" }
                say(line)
            }
        }
    }

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one entry, its bundle's metadata if it is local, and its model card.")

        @Argument(help: "The entry's name.")
        var name: String

        func run() throws {
            let zoo = try Zoo.standard()
            let item = try entryNamedByUser { try zoo.item(name) }
            let e = item.entry
            say("name:        \(e.name)  (\(item.source) manifest \(item.manifestURL.path))")
            if let d = e.description { say("about:       \(d)") }
            say("kind:        \(e.kind)")
            say("config:      \(e.config)")
            say("parameters:  \(e.parameters)")
            say("data:        \(e.data.isEmpty ? "(not given)" : e.data)")
            say("licence:     \(e.licence)")
            say("metrics:     " + e.metrics.sorted { $0.key < $1.key }.map { "\($0.key)=\(metricText($0.value))" }.joined(separator: ", "))
            say("size:        \(e.size) bytes")
            say("sha256:      \(e.sha256)")
            if let f = e.file { say("file:        \(f)") }
            if let u = e.url { say("url:         \(u)") }
            switch try zoo.status(name) {
            case .shipped(let f), .cached(let f):
                say("local:       \(f.path)")
                let info = try WeightBundle.info(f)
                let m = info.metadata
                say("bundle:      format \(info.formatVersion), written by Opacity \(m.frameworkVersion) on \(m.created), storage \(m.storage), \(info.tensors.count) tensors")
                let p = m.provenance
                var prov: [String] = []
                if let d = p.data { prov.append("data \(d)") }
                if let f = p.fold { prov.append("fold \(f)" + (p.folds.map { " of \($0)" } ?? "")) }
                // the epoch counts in the run that wrote the checkpoint: a model trained in
                // stages (a new run from another's weights) says the whole story in its notes
                // (trial: "epoch 1" beside a card that says 3 epochs in all, 2 + 1)
                if let e = p.epoch { prov.append("epoch \(e) of the training run that wrote the weights" + (p.notes == nil ? "" : " (see notes)")) }
                if let s = p.seed { prov.append("seed \(s)") }
                if let s = p.source { prov.append("source \(s)") }
                if !prov.isEmpty { say("provenance:  " + prov.joined(separator: ", ")) }
                if let n = p.notes { say("notes:       \(n)") }
            case .notFetched:
                say("local:       not fetched (run `opacity zoo fetch \(name)`; cache \(zoo.cacheDirectory.path))")
            }
            var card = e.card
            if card == nil, case .shipped(let f)? = try? zoo.status(name) { card = (try? WeightBundle.info(f)).flatMap { ModelCard(metadata: $0.metadata) } }
            if card == nil, case .cached(let f)? = try? zoo.status(name) { card = (try? WeightBundle.info(f)).flatMap { ModelCard(metadata: $0.metadata) } }
            say("")
            if let card { StandardStreams.writeOutput(card.text) } else { say("model card: none (the entry and its bundle carry no card; see Documentation/Zoo.md, Model cards)") }
        }
    }

    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Download entries into the cache and check their SHA-256.")

        @Argument(help: "Entry names (all entries with --all).")
        var names: [String] = []

        @Flag(name: .long, help: "Fetch every entry.")
        var all = false

        @Flag(name: .long, help: "Download again even if a good copy is cached.")
        var force = false

        @Flag(name: .shortAndLong, help: "No progress output.")
        var quiet = false

        func validate() throws {
            if names.isEmpty && !all { throw ValidationError("name at least one entry, or pass --all") }
        }

        func run() throws {
            let zoo = try Zoo.standard()
            let targets = all ? zoo.items.map(\.entry.name) : names
            for name in names { _ = try entryNamedByUser { try zoo.item(name) } }  // every name, before any download
            for name in targets {
                let quiet = self.quiet
                let printer = ProgressPrinter(name: name)
                var progress: (@Sendable (Zoo.Progress) -> Void)?
                if !quiet { progress = { p in printer.show(p) } }
                let url = try zoo.fetch(name, force: force, progress: progress)
                if !quiet { printer.finish() }
                say("\(name): \(url.path) (sha256 ok)")
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check local bundles: size, SHA-256, structure and every tensor checksum.")

        @Argument(help: "Entry names (default: every local entry).")
        var names: [String] = []

        func run() throws {
            let zoo = try Zoo.standard()
            let targets = names.isEmpty ? zoo.items.map(\.entry.name).filter { (try? zoo.status($0)) != .notFetched } : names
            // a name that is no entry is the usage error (64, with the nearest name) info and fetch give, before any check
            for name in names { _ = try entryNamedByUser { try zoo.item(name) } }
            if targets.isEmpty { say("nothing to verify: no entry is shipped or fetched") }
            var failures = 0
            for name in targets {
                do {
                    let f = try zoo.verify(name)
                    say("\(name): ok (\(f.path))")
                } catch {
                    failures += 1
                    say("\(name): FAILED: \(error)")
                }
            }
            if failures > 0 { throw ExitStatus.dataError.code }
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a bundle to a manifest (the user manifest by default).",
            discussion:
                "Reads config, size, SHA-256, parameter count and metrics from the bundle. A bundle inside the manifest's folder is listed as a shipped file; pass --url for one published elsewhere. A symbolic link (a run's best.opb) is recorded as the file it points to, as is a file: URL that names one, so that the entry stays valid when the link moves on."
        )

        @Argument(help: "The entry's name.")
        var name: String

        @Argument(help: "The bundle file, or a run folder (its best.opb).")
        var bundle: String

        @Option(name: .long, help: "The weights' licence, e.g. CC-BY-4.0.")
        var licence: String

        @Option(name: .long, help: "Where the bundle is published (https://, http:// or file://; a file: URL is stored absolute).")
        var url: String?

        @Option(name: .long, help: "The training data (default: the bundle's provenance).")
        var data: String?

        @Option(name: .long, help: "A sentence about the model.")
        var about: String?

        @Option(name: .long, help: "The manifest to add to (default: the user manifest).")
        var manifest: String?

        @Flag(name: .long, help: "Replace an entry of the same name.")
        var replace = false

        /// The bundle file `path` names: the file itself, or a run folder's best.opb. A path that
        /// names nothing, or a folder without best.opb, is a usage error (64) saying what was expected.
        static func bundleFile(_ path: String) throws -> String {
            let expected = "a bundle file (.opb) or a run folder (its best.opb)"
            var isFolder: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
                try requireExistingPath("the bundle argument", path, directory: false, expected: expected)
                return path
            }
            guard isFolder.boolValue else {
                // a run's log.jsonl or options.json: the run folder or its best.opb to pass, as --model says
                if let message = notABundleInRunFolder(path, option: "the bundle argument") { throw ValidationError(message) }
                return path
            }
            let best = URL(fileURLWithPath: path).appendingPathComponent("best.opb").path
            guard FileManager.default.fileExists(atPath: best) else {
                throw ValidationError("the bundle argument \(path) is a folder without best.opb; expected \(expected), or name one of its checkpoints")
            }
            return best
        }

        func run() throws {
            let manifestURL = manifest.map { URL(fileURLWithPath: $0) } ?? Zoo.userManifestURL()
            // everything that would stop the manifest's write is checked before the bundle is
            // read and hashed: where the manifest goes, the manifest itself, the name
            var m = try existingManifest(at: manifestURL)
            try entryNamedByUser { try Zoo.checkName(name) }
            let existing = m.entries.firstIndex { $0.name == name }
            if existing != nil && !replace {
                throw ValidationError("\(manifestURL.path) already has an entry '\(name)'; pass --replace to replace it, or choose another name")
            }
            // a run folder is its best.opb, as for --model everywhere (trial: `zoo add NAME runs/r34`
            // was "cannot read at byte 0: Is a directory", a missing file "cannot open", both exit 1)
            let bundle = try Self.bundleFile(self.bundle)
            // a link (a run's best.opb moves to each new best epoch) is recorded as its target
            // (new-user trial: the entry named the link, and broke when it moved)
            let bundleURL = Self.resolved(URL(fileURLWithPath: bundle))
            if bundleURL.path != URL(fileURLWithPath: bundle).standardizedFileURL.path, Self.isSymbolicLink(bundle) {
                note("note: \(bundle) is a symbolic link; the entry records the file it points to, \(bundleURL.path)")
            }
            let folder = Self.resolved(manifestURL.deletingLastPathComponent()).path + "/"
            let file = bundleURL.path.hasPrefix(folder) ? String(bundleURL.path.dropFirst(folder.count)) : nil
            guard file != nil || url != nil else {
                throw ValidationError(
                    "\(bundle) is outside the manifest's folder \(folder); pass --url with where it is published, or --url \(bundleURL.absoluteString) for this file where it is")
            }
            // a file: URL is stored absolute (file:///...), so the entry works from any folder
            let url = self.url.map { u in Zoo.localPath(ofFileURL: u).map { Self.resolved(URL(fileURLWithPath: $0)).absoluteString } ?? u }
            let entry = try Zoo.makeEntry(name: name, bundle: bundleURL, file: file, url: url, data: data, licence: licence, description: about)
            // a training checkpoint (a run's best.opb or epoch file) is added as it is, optimizer
            // state and all: say how to add the model alone (new-user trial: no word of export)
            if let checkpointNote = checkpointNote(bundle: bundle, file: bundleURL) { note(checkpointNote) }
            if let i = existing {
                m.entries[i] = entry
            } else {
                m.entries.append(entry)
            }
            m.entries.sort { $0.name < $1.name }
            try m.validate(file: manifestURL.path)
            try FileManager.default.createDirectory(at: manifestURL.deletingLastPathComponent(), withIntermediateDirectories: true)
            try m.write(to: manifestURL)
            say("added \(name) to \(manifestURL.path): \(entry.config), \(entry.size) bytes, sha256 \(entry.sha256)")
        }

        /// `note: ...` when `file` (the bundle argument's file, as found) is a training checkpoint,
        /// holding the optimizer's state beside the weights, which only `train --resume` reads:
        /// the share of the bundle's data it takes, the `opacity export` command that writes the
        /// weights alone beside the file, and the `opacity zoo add ... --replace` that adds that
        /// bundle instead. `nil` for a model-only bundle, and for a file whose header cannot be read.
        func checkpointNote(bundle: String, file: URL) -> String? {
            guard let info = try? WeightBundle.info(file), info.groups.contains(WeightBundle.optimizerGroup) else { return nil }
            let optimizerBytes = info.tensors.filter { $0.group == WeightBundle.optimizerGroup }.reduce(UInt64(0)) { $0 + $1.length }
            let share = info.rawDataBytes > 0 ? " (\(Int((100 * Double(optimizerBytes) / Double(info.rawDataBytes)).rounded()))% of its data)" : ""
            // the model-only bundle beside the file, in a run folder given for its best.opb
            let (parent, given) = splitPath(bundle)
            let folder = bundle == self.bundle ? parent : self.bundle
            let leaf = given == "\(name).opb" ? "\(name)-model.opb" : "\(name).opb"
            func inFolder(_ file: String) -> String { folder.isEmpty ? file : folder.hasSuffix("/") ? folder + file : folder + "/" + file }
            let output = inFolder(leaf)
            let export = ["opacity", "export", self.bundle, "-o", output]
            var add = ["opacity", "zoo", "add", name, output, "--licence", licence]
            // not --url: that names where the checkpoint is published, not the new file
            for (option, value) in [("--data", data), ("--about", about), ("--manifest", manifest)] {
                if let value { add += [option, value] }
            }
            add.append("--replace")
            func line(_ words: [String]) -> String { "`" + words.map(StrayArguments.shellWord).joined(separator: " ") + "`" }
            return "note: \(bundle == self.bundle ? bundle : inFolder("best.opb")) is a training checkpoint: it holds the optimizer's state beside the weights\(share),"
                + " which only `opacity train --resume` reads; \(line(export)) writes the weights alone (a smaller file),"
                + " and \(line(add)) adds that in its place" + (url == nil ? "" : " (with the --url you publish it at)")
        }

        /// `url` with every symbolic link in its path resolved (`realpath`), absolute and
        /// standardised; as given (standardised) when it does not exist.
        static func resolved(_ url: URL) -> URL {
            let standard = url.standardizedFileURL
            guard let real = realpath(standard.path, nil) else { return standard }
            defer { free(real) }
            return URL(fileURLWithPath: String(cString: real))
        }

        /// Whether `path` itself is a symbolic link (not followed).
        static func isSymbolicLink(_ path: String) -> Bool {
            var st = stat()
            return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK
        }

        /// The manifest at `url` (empty when there is none yet), after checking that it can be
        /// written: a file path (not a folder, not under a file) in a folder that exists and is
        /// writable or can be created, and, when it exists, a writable and valid manifest.
        /// - Throws: `ValidationError` naming the option and the path; ``ZooError`` for a manifest that does not read.
        private func existingManifest(at url: URL) throws -> ZooManifest {
            let option = manifest == nil ? "the user manifest" : "--manifest"
            try requireOutputFile(manifest ?? url.path, option: option, for: "the zoo manifest, JSON")
            guard FileManager.default.fileExists(atPath: url.path) else { return ZooManifest() }
            guard FileManager.default.isWritableFile(atPath: url.path) else {
                throw ValidationError("\(option) \(url.path) is not writable; expected a manifest you can write to (or name another with --manifest)")
            }
            return try ZooManifest.read(url)
        }
    }
}

/// Runs `body`, turning the zoo's errors about a name typed on the command line (no entry of
/// that name, with the nearest; a name that is not valid, with why) into usage errors (exit
/// status 64), as `--model NAME` does. Other errors pass through.
///
/// - Throws: `ValidationError` with the zoo's message for ``ZooError/unknownEntry(name:nearest:known:)``
///   and ``ZooError/invalidName(name:reason:)``; whatever else `body` throws.
func entryNamedByUser<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as ZooError {
        switch error {
        case .unknownEntry, .invalidName: throw ValidationError(error.description)
        default: throw error
        }
    }
}

/// Prints fetch progress to standard error at most every 5%.
final class ProgressPrinter: @unchecked Sendable {
    let name: String
    private let lock = NSLock()
    private var lastStep = -1

    init(name: String) { self.name = name }

    func show(_ p: Zoo.Progress) {
        let step = Int(p.fraction * 20)
        lock.lock()
        defer { lock.unlock() }
        guard step != lastStep else { return }
        lastStep = step
        StandardStreams.writeError(String(format: "\r%@: %3.0f%% of %.1f MB", name, p.fraction * 100, Double(p.total) / 1e6))
    }

    func finish() { StandardStreams.writeError("\n") }
}

/// A metric as `opacity zoo info` and `zoo list` print it: whole numbers (epochs, counts) as they are,
/// anything else rounded to 4 decimals.
func metricText<T: BinaryFloatingPoint>(_ v: T) -> String {
    let d = Double(v)
    if d.isFinite && d == d.rounded() && abs(d) < 1e15 { return String(Int64(d)) }
    return String(format: "%.4f", d)
}

private func manifests(_ zoo: Zoo) -> String {
    var m = zoo.sources.map { "\($0.label) manifest \($0.manifestURL.path)" }
    if !zoo.sources.contains(where: { $0.label == "user" }) { m.append("user manifest \(Zoo.userManifestURL().path) (not present)") }
    return m.joined(separator: ", ")
}
