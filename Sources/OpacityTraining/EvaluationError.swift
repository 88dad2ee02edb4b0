import Foundation

/// Errors of evaluation, ensembling and test-time augmentation.
public enum EvaluationError: Error, CustomStringConvertible, Equatable, Sendable {
    /// An argument out of range; the message says which, what was given and what is valid.
    case invalidArgument(String)
    /// A `--tta` or `--ensemble` specification that does not parse.
    case invalidSpecification(option: String, value: String, reason: String)
    /// A report could not be written.
    case cannotWrite(file: String, reason: String)
    /// No best threshold to store as an operating point; `reason` says why (the challenge
    /// metric is undefined on these images, or 0 at every threshold).
    case noOperatingPoint(reason: String)

    public var description: String {
        switch self {
        case .invalidArgument(let m): return m
        case .invalidSpecification(let o, let v, let r): return "\(o) '\(v)': \(r)"
        case .cannotWrite(let f, let r): return "cannot write \(f): \(r)"
        case .noOperatingPoint(let r): return "no operating point to store: \(r)"
        }
    }
}
