import Foundation

#if canImport(Glibc)
    import Glibc
#endif

// Plugins built as shared libraries (`opacity train --plugin libMyBackbone.so ...`).
//
// A dynamic plugin is a `.dynamic` library product that depends on Opacity's `OpacityDynamic`
// product (OpacityTensor + OpacityCore) and exports one C function, `opacity_plugin_v1`. Its
// Swift types must be the loading program's own types (an encoder subclasses the program's
// `Module`, computes with its `Tensor`, registers into its `Registry`), so the program must
// provide Opacity's symbols itself: the stock `opacity` exports every symbol and answers to the
// library name `libOpacityDynamic.so`, so the plugin's dependency on that library binds to the
// running executable and no second copy of Opacity is loaded. The loader checks that, and the
// versions, before it touches any Swift value of the plugin. Documentation/AddingABackbone.md.

/// The binary interface between a dynamic plugin and the program that loads it.
///
/// A plugin exports the C function ``entrySymbol`` (`opacity_plugin_v1`), with the C signature
/// `const void *opacity_plugin_v1(void)`, written in Swift as
///
/// ```swift
/// @_cdecl("opacity_plugin_v1")
/// public func opacityPluginV1() -> UnsafeMutableRawPointer {
///     DynamicPluginABI.descriptor(plugins: [MyBackbonePlugin.self])
/// }
/// ```
///
/// It returns a descriptor of 32 bytes, laid out for C on a 64-bit machine:
///
/// | offset | type | field |
/// |---|---|---|
/// | 0 | `uint32_t` | ``magic`` (`0x4C50504F`, "OPPL" in memory) |
/// | 4 | `uint32_t` | ``formatVersion``: this layout and the plugin protocol's generation |
/// | 8 | `const char *` | the Opacity version the plugin was built against (``opacityVersion``) |
/// | 16 | `const char *` | the Swift compiler that built it (``swiftVersion``) |
/// | 24 | `void *` | the plugin types, a Swift `[any OpacityPlugin.Type]` in memory of its own |
///
/// The host reads the first four fields, and only when the magic, the format, the Opacity
/// version and the Swift version all equal its own does it read the plugin list. Building the
/// descriptor runs no code of the host (only the standard library), so a mismatched plugin is
/// reported, not run.
public enum DynamicPluginABI {
    /// The C function every dynamic plugin exports.
    public static let entrySymbol = "opacity_plugin_v1"
    /// The library a plugin links against, and the name the stock `opacity` answers to
    /// (its `DT_SONAME`), so that the plugin's dependency binds to the running executable.
    public static let libraryName = "libOpacityDynamic.so"
    /// The descriptor's first four bytes.
    public static let magic: UInt32 = 0x4C50_504F
    /// The descriptor's size in bytes.
    public static let descriptorSize = 32

    /// The descriptor layout and plugin protocol generation. Raised when either changes.
    ///
    /// Compiled into the caller (the plugin), so a plugin reports the value of the Opacity it
    /// was built against, not the loading program's.
    @_alwaysEmitIntoClient public static var formatVersion: UInt32 { 1 }

    /// The Opacity version (semantic versioning), compiled into the caller: `opacity --version`
    /// prints the program's, a plugin's descriptor carries the one it was built against.
    @_alwaysEmitIntoClient public static var opacityVersion: String { "0.1.0" }

    /// The Swift compiler's language version, major.minor (Swift has no stable binary interface
    /// on Linux, so a plugin must be built by the same compiler release as the program).
    @_alwaysEmitIntoClient public static var swiftVersion: String {
        #if compiler(>=7.0)
            return "7.0 or later"
        #elseif compiler(>=6.5)
            return "6.5"
        #elseif compiler(>=6.4)
            return "6.4"
        #elseif compiler(>=6.3)
            return "6.3"
        #elseif compiler(>=6.2)
            return "6.2"
        #elseif compiler(>=6.1)
            return "6.1"
        #else
            return "6.0"
        #endif
    }

    /// A descriptor for the entry function to return (see ``DynamicPluginABI``): the plugin
    /// types and the versions this plugin is built against. Compiled into the plugin, and it
    /// calls only the standard library, so the loader can read the versions before it runs any
    /// code of Opacity on the plugin's behalf.
    ///
    /// - Parameter plugins: the plugin's `OpacityPlugin` types, in registration order.
    /// - Returns: memory the loader takes over (allocated once per call).
    @_alwaysEmitIntoClient
    public static func descriptor(plugins: [any OpacityPlugin.Type]) -> UnsafeMutableRawPointer {
        func cString(_ s: String) -> UnsafeMutablePointer<CChar> {
            let bytes = Array(s.utf8)
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
            for (i, b) in bytes.enumerated() { p[i] = CChar(bitPattern: b) }
            p[bytes.count] = 0
            return p
        }
        let list = UnsafeMutablePointer<[any OpacityPlugin.Type]>.allocate(capacity: 1)
        list.initialize(to: plugins)
        let d = UnsafeMutableRawPointer.allocate(byteCount: 32, alignment: 8)
        d.storeBytes(of: 0x4C50_504F as UInt32, toByteOffset: 0, as: UInt32.self)
        d.storeBytes(of: formatVersion, toByteOffset: 4, as: UInt32.self)
        d.storeBytes(of: cString(opacityVersion), toByteOffset: 8, as: UnsafeMutablePointer<CChar>.self)
        d.storeBytes(of: cString(swiftVersion), toByteOffset: 16, as: UnsafeMutablePointer<CChar>.self)
        d.storeBytes(of: UnsafeMutableRawPointer(list), toByteOffset: 24, as: UnsafeMutableRawPointer.self)
        return d
    }
}

/// Why a dynamic plugin did not load. Every case names the file.
public enum DynamicPluginError: Error, CustomStringConvertible, Equatable {
    /// No file at `path`; `source` is `--plugin` or `OPACITY_PLUGINS`.
    case fileNotFound(path: String, source: String)
    /// The file is not an ELF shared library (`found` describes its first bytes).
    case notSharedLibrary(path: String, found: String)
    /// The dynamic loader refused the file (`reason` is its message, `hint` what to do).
    case cannotLoad(path: String, reason: String, hint: String)
    /// The library does not export ``DynamicPluginABI/entrySymbol``.
    case missingEntry(path: String)
    /// The entry returned no descriptor, or one without ``DynamicPluginABI/magic``.
    case badDescriptor(path: String)
    /// The plugin was built against another Opacity, descriptor format or Swift compiler.
    /// `plugin` and `host` read like "Opacity 0.1.0, plugin format 1, Swift 6.3".
    case versionMismatch(path: String, plugin: String, host: String)
    /// The plugin's references to Opacity bound to another copy of Opacity (`copy`) than the
    /// program's own, so its types would not be the program's.
    case separateCopy(path: String, copy: String)

    public var description: String {
        switch self {
        case .fileNotFound(let path, let source):
            return "plugin \(path) (\(source)): no such file; expected a shared library built from a package with a .dynamic library product"
        case .notSharedLibrary(let path, let found):
            return "plugin \(path) is not a shared library: expected an ELF file (starting with 0x7F 'ELF'), found \(found)"
        case .cannotLoad(let path, let reason, let hint):
            return "plugin \(path) does not load: \(reason)" + (hint.isEmpty ? "" : "; \(hint)")
        case .missingEntry(let path):
            return "plugin \(path) is a shared library but exports no \(DynamicPluginABI.entrySymbol) function; "
                + "add `@_cdecl(\"\(DynamicPluginABI.entrySymbol)\") public func opacityPluginV1() -> UnsafeMutableRawPointer "
                + "{ DynamicPluginABI.descriptor(plugins: [MyPlugin.self]) }` (Documentation/AddingABackbone.md)"
        case .badDescriptor(let path):
            return "plugin \(path): \(DynamicPluginABI.entrySymbol) did not return an Opacity plugin descriptor (wrong magic number)"
        case .versionMismatch(let path, let plugin, let host):
            return "plugin \(path) was built against \(plugin); this program is \(host): rebuild the plugin against the same Opacity and Swift compiler"
        case .separateCopy(let path, let copy):
            return "plugin \(path) bound to its own copy of Opacity (\(copy)) instead of this program's, so its types would not be this program's; "
                + "load it with the stock opacity, or link the program as Documentation/AddingABackbone.md describes"
        }
    }
}

/// Loads dynamic plugins: checks the file, opens it, checks versions and that its Opacity is
/// the program's own, and returns its plugin types. A library stays loaded for the life of the
/// process (Swift code cannot be unloaded); loading the same file again returns the same types.
public enum DynamicPluginLoader {
    /// The environment variable with plugin paths, separated by colons.
    public static let environmentVariable = "OPACITY_PLUGINS"

    /// The paths in `OPACITY_PLUGINS` of `environment` (default: the process's), in order,
    /// empty entries skipped.
    public static func environmentPaths(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> [String] {
        (environment[environmentVariable] ?? "").split(separator: ":").map(String.init).filter { !$0.isEmpty }
    }

    /// The plugin types of the shared library at `path`.
    ///
    /// - Parameters:
    ///   - path: the library file (`libMyBackbone.so`).
    ///   - source: where the path came from, for messages (`--plugin`, `OPACITY_PLUGINS`).
    /// - Throws: ``DynamicPluginError``: a missing file, a file that is not ELF, a library the
    ///   loader refuses (e.g. an undefined symbol of another Opacity build), no entry symbol, a
    ///   descriptor of another Opacity, format or Swift version, or a plugin bound to another
    ///   copy of Opacity than the program's.
    public static func load(_ path: String, source: String = "--plugin") throws -> [any OpacityPlugin.Type] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw DynamicPluginError.fileNotFound(path: path, source: source)
        }
        let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        return try cache.value(for: resolved) { try open(resolved, shownAs: path) }
    }

    /// The plugin types of a descriptor an entry function returned, after checking its magic
    /// number, format, Opacity and Swift versions against this program's, and (for a loaded
    /// library) that `libOpacityDynamic.so` is this program's own code. Takes the descriptor
    /// over when it returns the types (frees it and its strings).
    ///
    /// - Parameters:
    ///   - descriptor: what ``DynamicPluginABI/entrySymbol`` returned (layout in ``DynamicPluginABI``).
    ///   - path: the library, for messages.
    /// - Throws: ``DynamicPluginError/badDescriptor(path:)``,
    ///   ``DynamicPluginError/versionMismatch(path:plugin:host:)``,
    ///   ``DynamicPluginError/separateCopy(path:copy:)``.
    public static func plugins(fromDescriptor descriptor: UnsafeMutableRawPointer?, path: String) throws -> [any OpacityPlugin.Type] {
        guard let d = descriptor, d.load(fromByteOffset: 0, as: UInt32.self) == DynamicPluginABI.magic else {
            throw DynamicPluginError.badDescriptor(path: path)
        }
        let format = d.load(fromByteOffset: 4, as: UInt32.self)
        func string(at offset: Int) -> String {
            d.load(fromByteOffset: offset, as: UnsafePointer<CChar>?.self).map { String(cString: $0) } ?? "?"
        }
        // The strings are read only when the format is one whose layout this loader knows.
        let plugin =
            format == DynamicPluginABI.formatVersion
            ? "Opacity \(string(at: 8)), plugin format \(format), Swift \(string(at: 16))" : "plugin format \(format)"
        let host = "Opacity \(DynamicPluginABI.opacityVersion), plugin format \(DynamicPluginABI.formatVersion), Swift \(DynamicPluginABI.swiftVersion)"
        guard plugin == host else { throw DynamicPluginError.versionMismatch(path: path, plugin: plugin, host: host) }
        #if canImport(Glibc)
            if let copy = separateCopy() { throw DynamicPluginError.separateCopy(path: path, copy: copy) }
        #endif
        let list = d.load(fromByteOffset: 24, as: UnsafeMutableRawPointer.self).assumingMemoryBound(to: [any OpacityPlugin.Type].self)
        let types = list.move()
        list.deallocate()
        for offset in [8, 16] { d.load(fromByteOffset: offset, as: UnsafeMutablePointer<CChar>?.self)?.deallocate() }
        d.deallocate()
        return types
    }

    private static let cache = LoadedPlugins()

    private static func open(_ path: String, shownAs shown: String) throws -> [any OpacityPlugin.Type] {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw DynamicPluginError.cannotLoad(path: shown, reason: "the file cannot be read", hint: "check its permissions")
        }
        let head = (try? handle.read(upToCount: 4)) ?? Data()
        try? handle.close()
        guard head == Data([0x7F, 0x45, 0x4C, 0x46]) else {
            let shownBytes = head.isEmpty ? "an empty file" : "the bytes " + head.map { String(format: "%02X", $0) }.joined(separator: " ")
            throw DynamicPluginError.notSharedLibrary(path: shown, found: shownBytes)
        }
        #if canImport(Glibc)
            _ = dlerror()
            guard let library = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
                let reason = dlerror().map { String(cString: $0) } ?? "unknown error"
                throw DynamicPluginError.cannotLoad(path: shown, reason: reason, hint: hint(for: reason))
            }
            guard let entry = dlsym(library, DynamicPluginABI.entrySymbol) else { throw DynamicPluginError.missingEntry(path: shown) }
            typealias Entry = @convention(c) () -> UnsafeMutableRawPointer?
            return try plugins(fromDescriptor: unsafeBitCast(entry, to: Entry.self)(), path: shown)
        #else
            throw DynamicPluginError.cannotLoad(path: shown, reason: "dynamic plugins are supported on Linux only", hint: "")
        #endif
    }

    #if canImport(Glibc)
        /// What to do about a loader message.
        private static func hint(for reason: String) -> String {
            if reason.contains("undefined symbol") {
                return "the plugin uses a symbol this program does not define: it was built against another Opacity "
                    + "(this program is Opacity \(DynamicPluginABI.opacityVersion), Swift \(DynamicPluginABI.swiftVersion)), "
                    + "or this program does not export Opacity's symbols (the stock opacity does)"
            }
            if reason.contains(DynamicPluginABI.libraryName) {
                return "this program does not provide \(DynamicPluginABI.libraryName); load the plugin with the stock opacity"
            }
            return ""
        }

        /// The file of another Opacity the plugins bound to, or nil when `libOpacityDynamic.so`
        /// is this program's own code (the stock `opacity`, or a program linked against the
        /// library) or not loaded at all.
        private static func separateCopy() -> String? {
            guard let library = dlopen(DynamicPluginABI.libraryName, RTLD_NOW | RTLD_NOLOAD) else { return nil }
            let mine = unsafeBitCast(opacityCoreImageMarker as @convention(c) () -> Int32, to: UnsafeMutableRawPointer.self)
            guard let theirs = dlsym(library, "opacity_core_image_marker"), theirs != mine else { return nil }
            return mappedFile(containing: UInt(bitPattern: theirs)) ?? "another \(DynamicPluginABI.libraryName)"
        }

        /// The file mapped at `address` (from /proc/self/maps), if any.
        private static func mappedFile(containing address: UInt) -> String? {
            // procfs files report size 0: read to the end instead of by size
            guard let file = FileHandle(forReadingAtPath: "/proc/self/maps") else { return nil }
            defer { try? file.close() }
            let maps = String(decoding: file.readDataToEndOfFile(), as: UTF8.self)
            for line in maps.split(separator: "\n") {
                let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
                let range = fields.first?.split(separator: "-") ?? []
                guard fields.count == 6, range.count == 2, let lo = UInt(range[0], radix: 16), let hi = UInt(range[1], radix: 16) else { continue }
                if lo <= address && address < hi { return fields[5].trimmingCharacters(in: .whitespaces) }
            }
            return nil
        }
    #endif
}

/// A function whose address says which loaded file holds this copy of OpacityCore (the
/// dynamic plugin loader compares it across `libOpacityDynamic.so` and the program).
@_cdecl("opacity_core_image_marker")
public func opacityCoreImageMarker() -> Int32 { 1 }

/// The plugin types loaded so far, by resolved path.
private final class LoadedPlugins: @unchecked Sendable {
    private let lock = NSLock()
    private var loaded: [String: [any OpacityPlugin.Type]] = [:]

    func value(for path: String, load: () throws -> [any OpacityPlugin.Type]) throws -> [any OpacityPlugin.Type] {
        lock.lock()
        defer { lock.unlock() }
        if let types = loaded[path] { return types }
        let types = try load()
        loaded[path] = types
        return types
    }
}
