import ArgumentParser
import Opacity

// String choices of the command line as enums: the parser rejects any other value and lists
// the valid ones in its error and in --help.

/// How an ensemble combines models per anchor (`--ensemble`).
enum EnsembleChoice: String, CaseIterable, ExpressibleByArgument {
    case percentile, mean, wbf
}

/// How Weighted Boxes Fusion scores a fused box (`--wbf-conf`, ensemble-boxes' `conf_type`).
enum WBFConfidenceChoice: String, CaseIterable, ExpressibleByArgument {
    case avg, max
    case boxAndModelAvg = "box_and_model_avg"
    case absentModelAwareAvg = "absent_model_aware_avg"
}

/// How test-time augmentation views are merged (`--tta-merge`).
enum TTAMergeChoice: String, CaseIterable, ExpressibleByArgument {
    case wbf, anchors
}

/// The detections file `opacity detect` writes (`--format`).
enum DetectionFormat: String, CaseIterable, ExpressibleByArgument {
    case json, csv
}

/// The image format `opacity synth` writes (`--format`).
enum SyntheticFormat: String, CaseIterable, ExpressibleByArgument {
    case png, dicom
    case dicomJPEG = "dicom-jpeg"

    /// The library's format (JPEG at quality 90, like the RSNA files).
    var format: SyntheticConfig.ImageFormat {
        switch self {
        case .png: return .png
        case .dicom: return .dicom
        case .dicomJPEG: return .dicomJPEG(quality: 90)
        }
    }
}

extension SyntheticOpacityStyle: ExpressibleByArgument {}

/// On or off (`train --freeze-bn`).
enum Switch: String, CaseIterable, ExpressibleByArgument {
    case on, off
    init(_ value: Bool) { self = value ? .on : .off }
    var isOn: Bool { self == .on }
}

/// Which epoch `best.opb` points to (`train --best-by`).
enum BestBy: String, CaseIterable, ExpressibleByArgument {
    case metric, loss
}

/// A choice (one of `Value`'s cases) that tells a value given on the command line from the
/// default, for the options that `train --resume` compares with the run's own (given means
/// given, even at the default value), while the help reads as every other choice's:
/// `(values: on, off; default: on)` (new-user trial: `--freeze-bn`, an optional for that,
/// read "(default: on) (values: on, off)", its default written into its help text).
struct GivenChoice<Value: CaseIterable & RawRepresentable & ExpressibleByArgument>: ExpressibleByArgument where Value.RawValue == String {
    /// The value given, else the default.
    var value: Value
    /// Whether the command line gave it.
    var isGiven: Bool

    /// The default, not given.
    init(default value: Value) {
        self.value = value
        isGiven = false
    }

    init?(argument: String) {
        guard let value = Value(argument: argument) else { return nil }
        self.value = value
        isGiven = true
    }

    /// The value when the command line gave it; `nil` for the default.
    var given: Value? { isGiven ? value : nil }

    var defaultValueDescription: String { value.rawValue }

    static var allValueStrings: [String] { Value.allValueStrings }

    static var defaultCompletionKind: CompletionKind { Value.defaultCompletionKind }
}

/// A tensor storage type by its user name (`--storage fp32|fp16|bf16|int8`).
struct StorageChoice: ExpressibleByArgument {
    var type: StorageType

    init(_ type: StorageType) { self.type = type }

    init?(argument: String) {
        guard let t = StorageType(name: argument) else { return nil }
        type = t
    }

    var defaultValueDescription: String { StorageType.userNames[StorageType.allCases.firstIndex(of: type) ?? 0] }

    static var allValueStrings: [String] { StorageType.userNames }
}

/// A component kind (`plugins --kind`).
extension ComponentKind: ExpressibleByArgument {}
