import Foundation
import Opacity

/// Library errors said in the command line's words where the library's message names its own
/// API: ``DataError/imageProblems(missing:unreadable:examples:named:folder:)`` ends "pass
/// skipProblemImages (CLI: --skip-unreadable)", which `opacity` says as "add
/// --skip-unreadable" (new-user trial: `eval --labels` with a folder holding only some of
/// the images).
enum LibraryWording {
    /// The library's advice at the end of an image-problems message.
    static let skipAdvice = DataError.skipProblemImagesAdvice

    /// `error`, or an error with its message in the command line's words.
    static func amend(_ error: Error) -> Error {
        guard let e = error as? DataError, case .imageProblems = e else { return error }
        let text = "\(e)"
        guard text.hasSuffix(skipAdvice) else { return error }
        return Message(String(text.dropLast(skipAdvice.count)) + "; add --skip-unreadable to go on without them (each is listed, with the reason)")
    }

    /// A message printed as it is (exit status 1, as the library error it stands for).
    struct Message: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }
}
