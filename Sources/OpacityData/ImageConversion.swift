import Foundation

/// DICOM (or any readable image) to 8-bit PNG, for one file or a whole folder: the step
/// most RSNA users do first.
public enum ImageConversion {
    /// Conversion settings.
    public struct Options: Sendable {
        /// Output side for the longer image side (aspect kept), or `nil` for the original size.
        public var size: Int?
        /// DICOM windowing.
        public var window: WindowSetting
        /// Replace existing outputs (otherwise they are skipped).
        public var overwrite: Bool
        /// Worker threads.
        public var threads: Int
        /// PNG bit depth: 8 (the display image) or 16 (full depth: the windowed value in
        /// `[0, 1]` times 65535, no 8-bit step).
        public var depth: Int = 8
        /// The frame of multi-frame DICOM files, from 1.
        public var frame: Int = 1
        /// Also measure the inputs skipped because their output existed (the source's and
        /// the existing PNG's headers), so that ``Summary/images`` lists them too, as
        /// ``scaleLabels(_:summary:)`` needs. Off by default: a re-run over a converted
        /// folder then reads nothing.
        public var measureSkipped = false

        /// Settings; by default original size, automatic window, existing files skipped.
        public init(size: Int? = nil, window: WindowSetting = .automatic, overwrite: Bool = false,
                    threads: Int = ProcessInfo.processInfo.activeProcessorCount) {
            self.size = size
            self.window = window
            self.overwrite = overwrite
            self.threads = threads
        }
    }

    /// What a conversion did.
    public struct Summary: Sendable, CustomStringConvertible {
        /// Files written.
        public var converted = 0
        /// Files skipped because the output existed.
        public var skippedExisting = 0
        /// Inputs that failed, with the reason (the conversion goes on past them).
        public var failures: [(path: String, reason: String)] = []
        /// The error behind each of ``failures`` that an error caused, by input path (an output
        /// refused before anything was read has none): for a caller that says it in its own
        /// words, as the command line names its `--frame` option for a frame the file lacks
        /// (``DataError/invalidParameter(name:value:expected:nearest:)`` named `frame`).
        public var failureErrors: [String: any Error] = [:]
        /// Every input converted, and with ``Options/measureSkipped`` every input skipped
        /// because its output existed, with both sizes; sorted by source path.
        public var images: [ConvertedImage] = []

        /// An empty summary: nothing converted, skipped or failed.
        public init() {}

        /// `N converted, M skipped, K failed` and the first failures.
        public var description: String {
            var s = "\(converted) converted, \(skippedExisting) skipped (output exists), \(failures.count) failed"
            for f in failures.prefix(5) { s += "\n  " + (f.reason.contains(f.path) ? f.reason : "\(f.path): \(f.reason)") }
            if failures.count > 5 { s += "\n  ... and \(failures.count - 5) more" }
            return s
        }
    }

    /// The DICOM inputs of a folder (`.dcm`, `.dicom`), sorted.
    public static func dicomFiles(in folder: URL) throws -> [URL] {
        try ImageFile.list(in: folder).filter { ["dcm", "dicom"].contains($0.pathExtension.lowercased()) }
    }

    /// Converts a file or every DICOM file of a folder to PNG.
    /// - Parameters:
    ///   - input: a file, or a folder of `.dcm` files (not recursive).
    ///   - output: for a file input, a `.png` path or a folder; for a folder input, a folder
    ///     (created) receiving `{name}.png`.
    ///   - options: size, window, overwrite, threads.
    ///   - progress: called after each file.
    /// - Returns: counts, the failures (one bad file does not stop the rest) and each
    ///   image's source and output size in pixels (``Summary/images``).
    /// - Throws: ``DataError/missingFile(path:expected:)`` when the input does not exist or
    ///   a folder holds no DICOM files; ``DataError/invalidParameter(name:value:expected:nearest:)``
    ///   for a bad size.
    public static func convert(input: URL, output: URL, options: Options = Options(),
                               progress: ProgressHandler? = nil) throws -> Summary {
        guard options.depth == 8 || options.depth == 16 else {
            throw DataError.invalidParameter(name: "depth", value: "\(options.depth)", expected: "8 or 16", nearest: options.depth > 8 ? "16" : "8")
        }
        guard options.frame >= 1 else {
            throw DataError.invalidParameter(name: "frame", value: "\(options.frame)", expected: "1 or more (frames count from 1)", nearest: "1")
        }
        if let s = options.size, s < 1 || s > 65_536 {
            throw DataError.invalidParameter(name: "size", value: "\(s)", expected: "a number of pixels in 1...65536", nearest: "\(min(max(s, 1), 65_536))")
        }
        _ = try options.window.validated()
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: input.path, isDirectory: &isDir) else {
            throw DataError.missingFile(path: input.path, expected: "a DICOM file or a folder of .dcm files")
        }
        var jobs: [(URL, URL)] = []
        if isDir.boolValue {
            let files = try dicomFiles(in: input)
            guard !files.isEmpty else {
                // a study kept as study/series/*.dcm: say which subfolders hold images
                throw DataError.missingFile(path: input.path, expected: "a folder containing .dcm files" + ImageFile.subfolderHint(in: input, shown: input.path))
            }
            jobs = files.map { ($0, output.appendingPathComponent($0.deletingPathExtension().lastPathComponent + ".png")) }
        } else {
            let dest = output.pathExtension.lowercased() == "png" ? output
                : output.appendingPathComponent(input.deletingPathExtension().lastPathComponent + ".png")
            jobs = [(input, dest)]
        }
        // never over an input, never two inputs onto one output (a.dcm and a.dicom -> a.png):
        // such jobs are failures that name both files, and the first input keeps its output
        let inputs = jobs.map(\.0)
        var claimed: [String: URL] = [:]
        var refused: [(String, String)] = []
        jobs = jobs.filter { src, dst in
            if let i = OutputPaths.input(replacedBy: dst, inputs: inputs) {
                refused.append((src.path, "its output \(dst.path) is the input \(i.path), which is never overwritten; choose another output"))
                return false
            }
            let key = dst.standardizedFileURL.path
            if let other = claimed[key] {
                refused.append((src.path, "its output \(dst.path) is also the output of \(other.path); convert one of them separately"))
                return false
            }
            claimed[key] = src
            return true
        }
        let todo = jobs
        let counter = ProgressCounter(total: jobs.count, handler: progress)
        let summary = SummaryBox()
        let next = AtomicCounter()
        DispatchQueue.concurrentPerform(iterations: max(1, min(options.threads, jobs.count))) { _ in
            while true {
                let i = next.increment()
                if i >= todo.count { return }
                let (src, dst) = todo[i]
                if !options.overwrite && FileManager.default.fileExists(atPath: dst.path) {
                    if !options.measureSkipped {
                        summary.update { $0.skippedExisting += 1 }
                    } else {
                        // the labels must fit the PNG that is there, whatever size it was made at
                        do {
                            let (sw, sh) = try ImageFile.size(of: src)
                            let (ow, oh) = try ImageFile.size(of: dst)
                            let image = ConvertedImage(source: src, output: dst, sourceWidth: sw, sourceHeight: sh,
                                                       outputWidth: ow, outputHeight: oh, existed: true)
                            summary.update {
                                $0.skippedExisting += 1
                                $0.images.append(image)
                            }
                        } catch {
                            summary.update { $0.failures.append((src.path, "its existing output \(dst.path) was kept, but its size is not known: \(error)")) }
                        }
                    }
                } else {
                    do {
                        // 8-bit: the display image (rounded once); 16-bit: the full-depth values.
                        let source: SourceImage = options.depth == 16
                            ? try ImageFile.readSource(src, window: options.window, frame: options.frame)
                            : .gray(try ImageFile.read(src, window: options.window, frame: options.frame))
                        var newSize: (Int, Int)?
                        if let s = options.size {
                            let scale = Double(s) / Double(max(source.width, source.height))
                            newSize = (max(1, Int((Double(source.width) * scale).rounded())), max(1, Int((Double(source.height) * scale).rounded())))
                        }
                        if options.depth == 16 {
                            var f = source
                            if let (w, h) = newSize { f = .float(source.floatImage.resized(width: w, height: h)) }
                            try PNG.write(f.gray16, to: dst)
                        } else {
                            var img = source.gray
                            if let (w, h) = newSize { img = img.resized(width: w, height: h) }
                            try PNG.write(img, to: dst)
                        }
                        let (ow, oh) = newSize ?? (source.width, source.height)
                        let image = ConvertedImage(source: src, output: dst, sourceWidth: source.width, sourceHeight: source.height,
                                                   outputWidth: ow, outputHeight: oh, existed: false)
                        summary.update {
                            $0.converted += 1
                            $0.images.append(image)
                        }
                    } catch {
                        summary.update {
                            $0.failures.append((src.path, "\(error)"))
                            $0.failureErrors[src.path] = error
                        }
                    }
                }
                counter.step()
            }
        }
        var result = summary.value
        result.failures += refused.map { (path: $0.0, reason: $0.1) }
        result.failures.sort { $0.path < $1.path }
        result.images.sort { $0.source.path < $1.source.path }
        return result
    }
}

final class SummaryBox: @unchecked Sendable {
    private let lock = NSLock()
    private var s = ImageConversion.Summary()
    func update(_ f: (inout ImageConversion.Summary) -> Void) {
        lock.lock()
        f(&s)
        lock.unlock()
    }
    var value: ImageConversion.Summary {
        lock.lock()
        defer { lock.unlock() }
        return s
    }
}
