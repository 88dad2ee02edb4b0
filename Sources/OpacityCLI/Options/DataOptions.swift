import ArgumentParser
import Foundation
import Opacity

/// Options naming a labelled dataset: an RSNA-layout folder, or a CSV of boxes with an
/// image folder.
struct DataOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("A folder in the Kaggle RSNA layout (as downloaded, or made by `opacity synth`).", valueName: "dir"))
    var data: String?

    @Option(name: .long, help: ArgumentHelp("A CSV of boxes for any folder of images (use with --images).", valueName: "csv"))
    var labels: String?

    @Option(name: .long, help: ArgumentHelp("The image folder the --labels CSV refers to.", valueName: "dir"))
    var images: String?

    @Flag(name: .long, help: "Leave out missing or unreadable images (they are reported) instead of stopping.")
    var skipUnreadable = false

    func location() throws -> DataLocation {
        switch (data, labels, images) {
        case (let d?, nil, nil):
            try Self.requireExisting("--data", d, directory: true, expected: "a folder in the Kaggle RSNA layout")
            return .rsna(URL(fileURLWithPath: d))
        case (nil, let l?, let i?):
            try Self.requireExisting("--labels", l, directory: false, expected: "a CSV of boxes")
            try Self.requireExisting("--images", i, directory: true, expected: "the folder of images the CSV names")
            return .csv(labels: URL(fileURLWithPath: l), images: URL(fileURLWithPath: i))
        case (nil, _?, nil): throw ValidationError("--labels needs --images (the folder its image column refers to)")
        case (nil, nil, _?): throw ValidationError("--images needs --labels (a CSV of boxes)")
        case (nil, nil, nil): throw ValidationError("name the data: --data DIR (RSNA layout) or --labels CSV --images DIR")
        default: throw ValidationError("give either --data or --labels with --images, not both")
        }
    }

    /// Throws a usage error (exit status 64) when `path`, the value of `option`, names no
    /// folder (`directory`) or no file: the option, the path, `expected`, and the nearest
    /// existing entry of the same kind beside it when the name looks like a typo of one
    /// (`nearestMatch`, edit distance).
    static func requireExisting(_ option: String, _ path: String, directory: Bool, expected: String) throws {
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        if exists && isDirectory.boolValue == directory { return }
        let kind = directory ? "folder" : "file"
        if exists {
            throw ValidationError("\(option) \(path) is a \(directory ? "file" : "folder"); expected \(expected)")
        }
        let parent = (path as NSString).deletingLastPathComponent
        let names = (try? FileManager.default.contentsOfDirectory(atPath: parent.isEmpty ? "." : parent)) ?? []
        let sameKind = names.filter { name in
            var d: ObjCBool = false
            return FileManager.default.fileExists(atPath: (parent.isEmpty ? name : (parent as NSString).appendingPathComponent(name)), isDirectory: &d)
                && d.boolValue == directory
        }
        let hint = nearestMatch((path as NSString).lastPathComponent, in: sameKind).map {
            " (did you mean '\(parent.isEmpty ? $0 : (parent as NSString).appendingPathComponent($0))'?)"
        }
        throw ValidationError("\(option) \(path): no such \(kind); expected \(expected)\(hint ?? "")")
    }
}
