import OpacityCore
/// How one tensor's values are stored in a bundle. Loading always yields `Float32`.
///
/// The raw values are the `dtype` strings of the bundle's tensor table
/// (Documentation/Bundles.md gives the exact byte layouts).
public enum StorageType: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
    /// IEEE 754 binary32, little-endian: 4 bytes a value, exact.
    case f32
    /// IEEE 754 binary16, little-endian, rounded to nearest even: 2 bytes a value, about
    /// 3 significant digits (relative error at most 2^-11), finite values up to 65504.
    case f16
    /// bfloat16 (the upper half of a binary32, rounded to nearest even): 2 bytes a value,
    /// relative error at most 2^-8, the full `Float32` range.
    case bf16
    /// Symmetric int8 with one `Float32` scale per output channel (the first dimension):
    /// `value = q * scale[c]`, `scale[c] = max|w[c, ...]| / 127`. About 1 byte a value;
    /// absolute error at most `scale[c] / 2`. Only for tensors of rank 2 or more.
    case i8

    /// Short names accepted on the command line: `fp32`, `fp16`, `bf16`, `int8` and the
    /// table names `f32`, `f16`, `i8`.
    public init?(name: String) {
        switch name.lowercased() {
        case "f32", "fp32", "float32", "float": self = .f32
        case "f16", "fp16", "float16", "half": self = .f16
        case "bf16", "bfloat16": self = .bf16
        case "i8", "int8", "q8": self = .i8
        default: return nil
        }
    }

    /// The names ``init(name:)`` documents, for help texts and errors.
    public static let userNames = ["fp32", "fp16", "bf16", "int8"]

    public var description: String { rawValue }

    /// Bytes a tensor of `shape` takes in this storage, or `nil` if the shape cannot be
    /// stored this way (i8 needs rank 2 or more) or the size overflows.
    public func storedLength(shape: [Int]) -> Int? {
        var count = 1
        for d in shape {
            guard d >= 0 else { return nil }
            let (m, o) = count.multipliedReportingOverflow(by: d)
            if o { return nil }
            count = m
        }
        switch self {
        case .f32:
            let (m, o) = count.multipliedReportingOverflow(by: 4)
            return o ? nil : m
        case .f16, .bf16:
            let (m, o) = count.multipliedReportingOverflow(by: 2)
            return o ? nil : m
        case .i8:
            guard shape.count >= 2 else { return nil }
            let (s, o) = shape[0].multipliedReportingOverflow(by: 4)
            if o { return nil }
            let (t, o2) = s.addingReportingOverflow(count)
            return o2 ? nil : t
        }
    }
}

/// Chooses the storage of each tensor when writing a bundle.
///
/// The built-in policies: ``fp32``, ``fp16``, ``bf16`` store every tensor that way;
/// ``int8`` stores weight tensors (rank 2 or more: convolution and linear weights) as
/// ``StorageType/i8`` and the rest (biases, batch-norm parameters and statistics) as f32,
/// which makes a detector about 4x smaller than fp32.
public struct StoragePolicy: Sendable, CustomStringConvertible {
    /// A short name for messages and metadata.
    public var name: String
    /// The storage for a tensor, given its name and shape.
    public var choose: @Sendable (_ name: String, _ shape: [Int]) -> StorageType

    /// A policy from a closure.
    public init(name: String, choose: @escaping @Sendable (_ name: String, _ shape: [Int]) -> StorageType) {
        self.name = name
        self.choose = choose
    }

    /// Every tensor as exact f32.
    public static let fp32 = StoragePolicy(name: "fp32") { _, _ in .f32 }
    /// Every tensor as f16.
    public static let fp16 = StoragePolicy(name: "fp16") { _, _ in .f16 }
    /// Every tensor as bf16.
    public static let bf16 = StoragePolicy(name: "bf16") { _, _ in .bf16 }
    /// Weights of rank 2 or more as per-channel i8, everything else as f32.
    public static let int8 = StoragePolicy(name: "int8") { _, shape in shape.count >= 2 ? .i8 : .f32 }

    /// The built-in policy for a storage type (``int8`` for ``StorageType/i8``).
    public static func uniform(_ type: StorageType) -> StoragePolicy {
        switch type {
        case .f32: return .fp32
        case .f16: return .fp16
        case .bf16: return .bf16
        case .i8: return .int8
        }
    }

    /// The built-in policy named `fp32`, `fp16`, `bf16` or `int8` (or any name
    /// ``StorageType/init(name:)`` accepts).
    public init?(name: String) {
        guard let t = StorageType(name: name) else { return nil }
        self = .uniform(t)
    }

    public var description: String { name }
}
