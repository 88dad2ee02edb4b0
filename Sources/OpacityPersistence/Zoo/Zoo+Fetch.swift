import Foundation
import OpacityCore
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

extension Zoo {
    /// Fetches an entry's bundle into the cache (the only zoo call that uses the network).
    ///
    /// A shipped entry is only checked. A cached file whose hash matches is used as is
    /// (no network) unless `force` is set. Otherwise the URL (`https://`, `http://` or
    /// `file://`) is streamed into a temporary file in the cache while its SHA-256 is
    /// computed; the file takes its final name only if size and hash match the manifest.
    /// - Parameters:
    ///   - name: the entry.
    ///   - force: download again even if a good copy is cached.
    ///   - progress: called as bytes arrive (possibly on another thread).
    /// - Returns: the verified local file.
    /// - Throws: ``ZooError/hashMismatch(name:file:expected:actual:)`` (nothing is kept),
    ///   ``ZooError/sizeMismatch(name:file:expected:actual:)``, ``ZooError/unopenableFile(name:file:reason:)``
    ///   (a shipped file that cannot be opened), ``ZooError/fetchFailed(name:url:reason:)``,
    ///   ``ZooError/unsupportedURL(name:url:)``, ``ZooError/missingFile(name:file:)``.
    @discardableResult
    public func fetch(_ name: String, force: Bool = false, progress: (@Sendable (Progress) -> Void)? = nil) throws -> URL {
        let item = try self.item(name)
        let entry = item.entry
        if let f = item.shippedFile, FileManager.default.fileExists(atPath: f.path) {
            try Zoo.check(f, against: entry)
            return f
        }
        guard let text = entry.url else { throw ZooError.missingFile(name: name, file: item.shippedFile?.path ?? "(none)") }
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), ["http", "https", "file"].contains(scheme) else {
            throw ZooError.unsupportedURL(name: name, url: text)
        }
        let dest = cachedFile(for: entry)
        if !force, FileManager.default.fileExists(atPath: dest.path) {
            if (try? Zoo.check(dest, against: entry)) != nil { return dest }
            try? FileManager.default.removeItem(at: dest)  // a damaged cached copy: fetch again
        }
        do { try FileManager.default.createDirectory(at: cacheDirectory, withIntermediateDirectories: true) } catch {
            throw ZooError.fetchFailed(name: name, url: text, reason: "cannot create the cache folder \(cacheDirectory.path): \(error.localizedDescription)")
        }
        try AtomicFile.write(dest) { out in
            let sink = FetchSink(out: out, limit: entry.size, progress: progress)
            if scheme == "file" {
                try Zoo.copyFile(url, into: sink, name: name)
            } else {
                try Zoo.download(url, into: sink, name: name)
            }
            guard sink.count == entry.size else {
                throw ZooError.sizeMismatch(name: name, file: text, expected: entry.size, actual: sink.count)
            }
            let digest = sink.hasher.finalize().hex
            guard digest == entry.sha256 else { throw ZooError.hashMismatch(name: name, file: text, expected: entry.sha256, actual: digest) }
        }
        return dest
    }

    /// The file a `file:` URL names, as a path: `file:///a/b.opb` is `/a/b.opb`; a relative
    /// `file:b.opb` (or `file://b.opb`, read as a path, not a host) is made absolute against the
    /// current folder. `nil` for other schemes. Fetching reads this path and messages show it.
    public static func localPath(ofFileURL text: String) -> String? {
        guard text.lowercased().hasPrefix("file:") else { return nil }
        var rest = Substring(text.dropFirst(5))
        if rest.hasPrefix("//") {
            rest = rest.dropFirst(2)
            if rest.lowercased().hasPrefix("localhost/") { rest = rest.dropFirst(9) }
        }
        let path = String(rest).removingPercentEncoding ?? String(rest)
        return path.isEmpty ? nil : URL(fileURLWithPath: path).standardizedFileURL.path
    }

    private static func copyFile(_ url: URL, into sink: FetchSink, name: String) throws {
        let fd: FileDescriptor
        let path = localPath(ofFileURL: url.absoluteString) ?? url.path
        do { fd = try FileDescriptor.open(reading: path) } catch {
            throw ZooError.fetchFailed(name: name, url: url.absoluteString, reason: "\(error)")
        }
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buf.deallocate() }
        var offset: UInt64 = 0
        while true {
            let n = try fd.read(into: buf, at: offset)
            if n == 0 { break }
            try sink.take(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            if let reason = sink.failure { throw ZooError.fetchFailed(name: name, url: url.absoluteString, reason: reason) }
            offset += UInt64(n)
        }
    }

    private static func download(_ url: URL, into sink: FetchSink, name: String) throws {
        let delegate = DownloadDelegate(sink: sink)
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = 60
        let session = URLSession(configuration: config, delegate: delegate, delegateQueue: nil)
        var request = URLRequest(url: url)
        request.timeoutInterval = 60
        session.dataTask(with: request).resume()
        delegate.done.wait()
        session.finishTasksAndInvalidate()
        if let reason = delegate.failure ?? sink.failure { throw ZooError.fetchFailed(name: name, url: url.absoluteString, reason: reason) }
    }
}

/// Receives fetched bytes: hashes, counts, writes, reports progress.
final class FetchSink: @unchecked Sendable {
    let out: AtomicFile
    let limit: Int64
    let progress: (@Sendable (Zoo.Progress) -> Void)?
    var hasher = SHA256()
    var count: Int64 = 0
    var failure: String?

    init(out: AtomicFile, limit: Int64, progress: (@Sendable (Zoo.Progress) -> Void)?) {
        self.out = out
        self.limit = limit
        self.progress = progress
    }

    func take(_ bytes: UnsafeRawBufferPointer) throws {
        count += Int64(bytes.count)
        guard count <= limit else {
            failure = "the source holds more than the manifest's \(limit) bytes"
            return
        }
        hasher.update(bytes)
        try out.file.write(bytes)
        progress?(Zoo.Progress(bytes: count, total: limit))
    }
}

/// URLSession callbacks for one download (called on the session's queue, one at a time).
final class DownloadDelegate: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    let sink: FetchSink
    let done = DispatchSemaphore(value: 0)
    var failure: String?

    init(sink: FetchSink) { self.sink = sink }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        guard failure == nil, sink.failure == nil else { return }
        if let http = dataTask.response as? HTTPURLResponse, !(200..<300).contains(http.statusCode) {
            failure = "HTTP status \(http.statusCode)"
            dataTask.cancel()
            return
        }
        do { try data.withUnsafeBytes { try sink.take($0) } } catch { failure = "\(error)" }
        if failure != nil || sink.failure != nil { dataTask.cancel() }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        if failure == nil, sink.failure == nil {
            if let error {
                failure = error.localizedDescription
            } else if let http = task.response as? HTTPURLResponse, !(200..<300).contains(http.statusCode) {
                failure = "HTTP status \(http.statusCode)"
            }
        }
        done.signal()
    }
}
