import ArgumentParser
import Foundation
import Opacity

/// A library error about a value that came from a command-line option, said in the option's
/// words: the library names its own parameter (``DataError/invalidParameter(name:value:expected:nearest:)``
/// with `augmentation`, `size`, `airBronchogramRate`), which the user never typed; the message
/// names the option instead (`--aug 'hevy' is not valid; expected one of ... (did you mean
/// 'heavy'?)`), keeping what was expected and the nearest valid value.
///
/// - Parameters:
///   - error: the library's error.
///   - options: the library's parameter names with the option each one's value came from
///     (`["augmentation": "--aug"]`).
///   - keysOf: the option whose value also holds `key=value` overrides (`--aug heavy,rotation=3`):
///     an error about any other parameter is about one of its keys, and names the option and the key.
/// - Returns: a `ValidationError` (usage error, exit status 64) naming the option; `error` as
///   it is when it concerns none of the options.
func namingOption(_ error: Error, _ options: [String: String], keysOf: String? = nil) -> Error {
    guard case let .invalidParameter(name, value, expected, nearest) = error as? DataError else {
        return keysOf.map { ValidationError("\($0): \(error)") } ?? error
    }
    let quotedValue = "'\(InputLimits.quoted(value))'"
    if let option = options[name] {
        return ValidationError("\(option) \(quotedValue) is not valid; expected \(expected)" + DataError.suggestion(nearest))
    }
    if let keysOf {
        return ValidationError("\(keysOf): key '\(InputLimits.quoted(name))' = \(quotedValue) is not valid; expected \(expected)" + DataError.suggestion(nearest))
    }
    return error
}

/// The library's refusal of a fold count (``Folds/stratified(_:count:seed:)``: under 2, or
/// more folds than the data has patients), said as `option` in the words of every range
/// error (``Wording/outOfRange(_:_:expected:nearest:)``): `--folds 100 is not valid; expected
/// an integer in 2...40: more folds than patients leave folds empty, and the data has 40
/// patients (nearest valid: 40)`. `train` and `eval` say it so (new-user trial: `train --folds
/// 100` on 40 patients trained on fold 0's one validation image, and `--fold 70` was told only
/// that the fold had no validation images).
/// - Returns: a `ValidationError` (usage error, exit status 64); `error` as it is when it is
///   no such refusal.
func foldCountAsOption(_ error: Error, option: String = "--folds") -> Error {
    guard case let .invalidParameter("folds", value, expected, nearest)? = error as? DataError, Int(value) != nil else { return error }
    return ValidationError(Wording.outOfRange(option, value, expected: expected, nearest: nearest))
}

/// A library error about a frame that `path` lacks (``DataError/invalidParameter(name:value:expected:nearest:)``
/// named `frame`), said as `--frame`: the option and the frame asked for, the file, how many
/// frames it has (numbered from 1) and the nearest valid frame. The frame count is read from
/// the file's DICOM header; `nil` for any other error, and for a file whose header cannot be
/// read (the library's own words then stand). `convert` (a failure of its batch, status 1) and
/// `detect` (a usage error, status 64) both say it so.
func frameNotInFile(_ error: Error, path: String) -> String? {
    guard case let .invalidParameter("frame", value, _, _)? = error as? DataError, let asked = Int(value),
        let frames = try? DICOM.readHeader(URL(fileURLWithPath: path)).numberOfFrames, frames >= 1
    else { return nil }
    let nearest = min(max(asked, 1), frames)
    let has = frames == 1 ? "it has one frame" : "it has \(frames) frames, numbered 1...\(frames)"
    return "--frame \(asked) is not valid for \(path): \(has) (nearest valid: \(nearest))"
}
