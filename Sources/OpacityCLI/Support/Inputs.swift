import ArgumentParser
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What `path` is when it is neither a regular file nor a folder ("a pipe", "a character
/// device", "a socket"), following symbolic links (`/dev/stdin` is what standard input is);
/// `nil` for a regular file, a folder, or a path that does not exist (its reader says so).
func streamKind(_ path: String) -> String? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    switch st.st_mode & S_IFMT {
    case S_IFIFO: return "a pipe"
    case S_IFCHR: return "a character device"
    case S_IFSOCK: return "a socket"
    case S_IFBLK: return "a block device"
    default: return nil
    }
}

/// Refuses a folder, and an input that is read more than once (a second time in the same command, or again
/// by `--resume` from the path the run records) when it is a pipe or a device, which can be
/// read only once: every CSV reader takes a pipe (`--labels /dev/stdin`), but such an input
/// would be empty, or gone, the second time.
/// - Parameters:
///   - path: the input as given.
///   - option: the option that named it (`--labels`).
///   - reason: why it is read twice, for the message ("train reads it again on --resume").
/// - Throws: `ValidationError` naming the option, the path, what it is and what to give.
func requireRereadable(_ path: String, option: String, reason: String) throws {
    var isFolder: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue {
        throw ValidationError("\(option) \(path) is a folder; expected a CSV file (a regular file)")
    }
    guard let kind = streamKind(path) else { return }
    throw ValidationError("\(option) \(path) is \(kind); this input is read twice (\(reason)), give a regular file")
}
