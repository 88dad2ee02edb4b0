import ArgumentParser
import Foundation
import Opacity

/// Parses a `--window` value (`convert`, `detect`): `auto` (the file's window, else the full
/// range of the rescaled values), `minmax` (the full range), or `CENTER,WIDTH` in rescaled
/// (modality) units, e.g. `40,400`.
///
/// - Parameter text: the value as given; `automatic`, `min-max` and `full` are accepted too.
/// - Returns: the ``WindowSetting`` for DICOM decoding.
/// - Throws: `ValidationError` (a usage error, 64) naming `--window` and the value: a word
///   with the nearest valid one (`atuo` -> `auto`), a malformed pair with the form expected,
///   or a center or width out of range (not finite, width below 1) with the library's reason.
func parseWindow(_ text: String) throws -> WindowSetting {
    switch text.lowercased() {
    case "auto", "automatic": return .automatic
    case "minmax", "min-max", "full": return .minMax
    default:
        let parts = text.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, let c = parts[0], let w = parts[1] else {
            // a word: the nearest of the named settings; numbers: the form they need
            let near = text.contains(where: \.isLetter) ? nearestValue(text, in: ["auto", "minmax"]).map { " (nearest valid: '\($0)')" } ?? "" : ""
            throw ValidationError("--window '\(InputLimits.quoted(text))' is not valid; expected auto, minmax, or CENTER,WIDTH such as 40,400" + near)
        }
        do { return try WindowSetting.fixed(center: c, width: w).validated() } catch let DataError.invalidParameter(name, value, expected, nearest) {
            // the library's "parameter 'window centre'" said as the part of the value it is
            let part = name.hasPrefix("window ") ? String(name.dropFirst("window ".count)) : name
            // the number as typed (0, not 0.0)
            let typed = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            let shown = part == "centre" ? typed[0] : part == "width" ? typed[1] : value
            throw ValidationError(
                "--window '\(InputLimits.quoted(text))': the \(part) \(InputLimits.quoted(shown)) is not valid; expected \(expected)\(nearest.map { " (nearest valid: \($0))" } ?? ""), e.g. 40,400"
            )
        } catch {
            throw ValidationError("--window '\(InputLimits.quoted(text))': \(error) (e.g. 40,400)")
        }
    }
}

/// `--window` of the commands that run a model on image files (`detect`, `eval`, `submit`):
/// how DICOM images are windowed before the model sees them, with convert's values and parser
/// (``parseWindow(_:)``); PNG and JPEG are read as they are. One declaration, so that the
/// three commands' help and errors are the same.
struct ModelWindowOption: ParsableArguments {
    @Option(
        name: .long,
        help: "DICOM windowing (as convert's): auto (the file's window, else the full range), minmax, or CENTER,WIDTH in rescaled units; PNG and JPEG are read as they are."
    )
    var window: String = "auto"

    func validate() throws { _ = try parseWindow(window) }

    /// The windowing asked for (checked by ``validate()`` before the command runs).
    /// - Throws: as ``parseWindow(_:)``.
    func setting() throws -> WindowSetting { try parseWindow(window) }
}
