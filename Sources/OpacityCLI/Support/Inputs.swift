import ArgumentParser
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What `path` is when it is not a regular file ("a folder", "a pipe", "a character device",
/// "a socket", "a block device"), following symbolic links (`/dev/stdin` is what standard
/// input is); `nil` for a regular file or a path that does not exist (its reader says so).
func fileKind(_ path: String) -> String? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    switch st.st_mode & S_IFMT {
    case S_IFDIR: return "a folder"
    case S_IFIFO: return "a pipe"
    case S_IFCHR: return "a character device"
    case S_IFSOCK: return "a socket"
    case S_IFBLK: return "a block device"
    default: return nil
    }
}

/// Refuses a folder, and an input that is read more than once (a second time in the same
/// command, or again by `--resume` from the path the run records) when it is a pipe or a
/// device, which can be read only once: every CSV reader takes a pipe (`--labels /dev/stdin`),
/// but such an input would be empty, or gone, the second time.
/// - Parameters:
///   - path: the input as given.
///   - option: the option that named it (`--labels`).
///   - reason: why it is read twice, for the message ("train reads it again on --resume").
/// - Throws: `ValidationError` naming the option, the path, what it is and what to give.
func requireRereadable(_ path: String, option: String, reason: String) throws {
    switch fileKind(path) {
    case nil: return
    case "a folder": throw ValidationError("\(option) \(path) is a folder; expected a CSV file (a regular file)")
    case let kind?: throw ValidationError("\(option) \(path) is \(kind); this input is read twice (\(reason)), give a regular file")
    }
}
