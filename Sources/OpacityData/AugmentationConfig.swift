import Foundation
import OpacityCore

/// How a box is carried through a rotation or shear.
public enum BoxMappingRule: String, Sendable, CaseIterable {
    /// The paper's custom rule: the min/max of 8 points at 1/3 and 2/3 of each side. Never
    /// larger than ``corners``, and tighter under rotation.
    case eightPoint = "8point"
    /// The min/max of the 4 transformed corners ("basic rotations").
    case corners
}

/// Every augmentation parameter (paper section 4), with named presets for the paper's
/// ablation levels. All values are overridable.
///
/// Geometric: the output is one bilinear warp of the source to `size x size`: centre
/// jitter `U(-centerJitter, centerJitter)` source pixels (at 1024 px; scaled with the
/// source size) on each axis, scale `2^N(0, scaleSigma)` per axis, rotation
/// `N(0, rotationSigma)` degrees, shear `N(0, shearSigma)` degrees, and a horizontal flip
/// with probability `flipProbability` (a real flip; the original code's is a no-op).
/// Photometric, in order after the warp: gamma `x^(2^N(0, gammaSigma))`, coarse salt and
/// pepper, Gaussian blur, additive Gaussian noise, each applied with its probability.
public struct AugmentationConfig: Sendable, Equatable, CustomStringConvertible {
    /// The preset this started from (for printing).
    public var preset: String
    /// Maximum centre shift in source pixels of a 1024-px image.
    public var centerJitter: Float
    /// Standard deviation of log2 of the per-axis scale.
    public var scaleSigma: Float
    /// Standard deviation of the rotation, degrees.
    public var rotationSigma: Float
    /// Standard deviation of the shear, degrees.
    public var shearSigma: Float
    /// Probability of a horizontal flip.
    public var flipProbability: Float
    /// Standard deviation of log2 of the gamma exponent.
    public var gammaSigma: Float
    /// How boxes follow the transform.
    public var boxRule: BoxMappingRule
    /// Probability of a Gaussian blur.
    public var blurProbability: Float
    /// Blur sigma is `U(0, blurSigmaMax)` output pixels.
    public var blurSigmaMax: Float
    /// Probability of additive Gaussian noise.
    public var noiseProbability: Float
    /// Noise standard deviation is `U(0, noiseScaleMax)` (intensity units, 1 = white).
    public var noiseScaleMax: Float
    /// Probability of coarse salt and pepper.
    public var saltPepperProbability: Float
    /// Fraction of coarse cells replaced.
    public var saltPepperAmount: Float
    /// The coarse grid is `U(min, max)` of the image size per axis (imgaug's size_percent).
    public var saltPepperSizeMin: Float
    /// See ``saltPepperSizeMin``.
    public var saltPepperSizeMax: Float

    /// A configuration with every value given (defaults: no augmentation).
    public init(preset: String = "custom", centerJitter: Float = 0, scaleSigma: Float = 0, rotationSigma: Float = 0,
                shearSigma: Float = 0, flipProbability: Float = 0, gammaSigma: Float = 0, boxRule: BoxMappingRule = .eightPoint,
                blurProbability: Float = 0, blurSigmaMax: Float = 0, noiseProbability: Float = 0, noiseScaleMax: Float = 0,
                saltPepperProbability: Float = 0, saltPepperAmount: Float = 0.01, saltPepperSizeMin: Float = 0.1,
                saltPepperSizeMax: Float = 0.2) {
        self.preset = preset
        self.centerJitter = centerJitter
        self.scaleSigma = scaleSigma
        self.rotationSigma = rotationSigma
        self.shearSigma = shearSigma
        self.flipProbability = flipProbability
        self.gammaSigma = gammaSigma
        self.boxRule = boxRule
        self.blurProbability = blurProbability
        self.blurSigmaMax = blurSigmaMax
        self.noiseProbability = noiseProbability
        self.noiseScaleMax = noiseScaleMax
        self.saltPepperProbability = saltPepperProbability
        self.saltPepperAmount = saltPepperAmount
        self.saltPepperSizeMin = saltPepperSizeMin
        self.saltPepperSizeMax = saltPepperSizeMax
    }

    // MARK: Presets (PAPER.md section 4.2)

    /// No augmentation: an exact resize (validation, inference).
    public static let none = AugmentationConfig(preset: "none")
    /// Paper level 1 ("no aug"): only the +-32 px centre jitter.
    public static let minimal = AugmentationConfig(preset: "minimal", centerJitter: 32)
    /// Paper level 10 ("light", the dataset default): scale 0.10, rotation 5, shear 2.5, gamma 0.20.
    public static let light = AugmentationConfig(preset: "light", centerJitter: 32, scaleSigma: 0.10, rotationSigma: 5,
                                                 shearSigma: 2.5, gammaSigma: 0.20)
    /// Paper level 11: light without rotation.
    public static let lightNoRotation: AugmentationConfig = {
        var c = light
        c.preset = "light_norotation"
        c.rotationSigma = 0
        return c
    }()
    /// Paper "basic rotations": light with 4-corner boxes.
    public static let lightBasicRotation: AugmentationConfig = {
        var c = light
        c.preset = "light_basic_rotation"
        c.boxRule = .corners
        return c
    }()
    /// Paper level 15 ("medium"): scale 0.15, rotation 6, shear 4, gamma 0.20, flip 0.5,
    /// blur p 0.25 sigma U(0,1), noise p 0.25 scale U(0, 0.02).
    public static let medium = AugmentationConfig(preset: "medium", centerJitter: 32, scaleSigma: 0.15, rotationSigma: 6,
                                                  shearSigma: 4, flipProbability: 0.5, gammaSigma: 0.20,
                                                  blurProbability: 0.25, blurSigmaMax: 1.0, noiseProbability: 0.25,
                                                  noiseScaleMax: 0.02)
    /// Paper level 20 ("heavy", the main models; 8-point boxes = "heavy with the custom
    /// rotation"): scale 0.15, rotation 6, shear 4, gamma 0.25, flip 0.5, salt and pepper
    /// p 0.1 (amount 0.01, size 0.1-0.2), blur p 0.5 sigma U(0,2), noise p 0.5 scale U(0, 0.04).
    public static let heavy = AugmentationConfig(preset: "heavy", centerJitter: 32, scaleSigma: 0.15, rotationSigma: 6,
                                                 shearSigma: 4, flipProbability: 0.5, gammaSigma: 0.25,
                                                 blurProbability: 0.5, blurSigmaMax: 2.0, noiseProbability: 0.5,
                                                 noiseScaleMax: 0.04, saltPepperProbability: 0.1)
    /// Paper level 21: heavy without rotation.
    public static let heavyNoRotation: AugmentationConfig = {
        var c = heavy
        c.preset = "heavy_norotation"
        c.rotationSigma = 0
        return c
    }()
    /// Heavy with 4-corner boxes (the ablation against the custom rotation).
    public static let heavyBasicRotation: AugmentationConfig = {
        var c = heavy
        c.preset = "heavy_basic_rotation"
        c.boxRule = .corners
        return c
    }()

    /// Presets by name. `heavy_custom_rotation` is an alias of `heavy`.
    public static let presets: [String: AugmentationConfig] = [
        "none": .none, "minimal": .minimal, "light": .light, "light_norotation": .lightNoRotation,
        "light_basic_rotation": .lightBasicRotation, "medium": .medium, "heavy": .heavy,
        "heavy_custom_rotation": .heavy, "heavy_norotation": .heavyNoRotation, "heavy_basic_rotation": .heavyBasicRotation,
    ]

    /// Parameter names accepted by ``init(parsing:)``.
    public static let parameterNames = [
        "jitter", "scale", "rotation", "shear", "flip", "gamma", "boxes", "blur_p", "blur_sigma", "noise_p", "noise_scale",
        "sp_p", "sp_amount", "sp_size_min", "sp_size_max",
    ]

    /// The valid range of each numeric key: wide enough for any sensible augmentation,
    /// narrow enough that the warp stays finite (a scale sigma of 200 or a rotation of
    /// 1e19 degrees is refused, not drawn).
    public static let ranges: [String: ClosedRange<Float>] = [
        "jitter": 0...512, "scale": 0...1, "rotation": 0...180, "shear": 0...45, "flip": 0...1, "gamma": 0...2,
        "blur_p": 0...1, "blur_sigma": 0...16, "noise_p": 0...1, "noise_scale": 0...1, "sp_p": 0...1, "sp_amount": 0...1,
        "sp_size_min": 0...1, "sp_size_max": 0...1,
    ]
    static let units: [String: String] = [
        "jitter": "pixels at 1024 px", "scale": "standard deviation of log2 of the scale", "rotation": "degrees, standard deviation",
        "shear": "degrees, standard deviation", "flip": "probability", "gamma": "standard deviation of log2 of the exponent",
        "blur_p": "probability", "blur_sigma": "output pixels", "noise_p": "probability", "noise_scale": "intensity, 1 = white",
        "sp_p": "probability", "sp_amount": "fraction of cells", "sp_size_min": "fraction of the image", "sp_size_max": "fraction of the image",
    ]

    /// Parses `preset` or `preset,key=value,...`, e.g. `heavy,rotation=3,boxes=corners`.
    ///
    /// Keys: `jitter` (px), `scale`, `rotation` (deg), `shear` (deg), `flip` (probability),
    /// `gamma`, `boxes` (`8point` or `corners`), `blur_p`, `blur_sigma`, `noise_p`,
    /// `noise_scale`, `sp_p`, `sp_amount`, `sp_size_min`, `sp_size_max`.
    /// - Throws: ``DataError/invalidParameter(name:value:expected:nearest:)`` naming the
    ///   unknown preset or key and the nearest valid one.
    public init(parsing text: String) throws {
        guard text.count <= 4096 else {
            throw DataError.invalidParameter(name: "augmentation", value: text, expected: "at most 4096 characters", nearest: nil)
        }
        let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let name = parts.first ?? "none"
        let names = AugmentationConfig.presets.keys.sorted()
        guard var c = AugmentationConfig.presets[name] else {
            throw DataError.invalidParameter(name: "augmentation", value: name, expected: "one of \(names.joined(separator: ", "))",
                                             nearest: nearestValue(name, in: names))
        }
        for p in parts.dropFirst() where !p.isEmpty {
            let kv = p.split(separator: "=", maxSplits: 1).map { String($0).trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2 else {
                throw DataError.invalidParameter(name: p, value: "", expected: "key=value", nearest: nil)
            }
            try c.set(kv[0], kv[1])
        }
        self = c
    }

    /// Sets one parameter by its ``parameterNames`` key.
    /// - Throws: ``DataError/invalidParameter(name:value:expected:nearest:)``.
    public mutating func set(_ key: String, _ value: String) throws {
        if key == "boxes" {
            guard let r = BoxMappingRule(rawValue: value) else {
                throw DataError.invalidParameter(name: key, value: value, expected: "8point or corners",
                                                 nearest: nearestName(value, in: BoxMappingRule.allCases.map(\.rawValue)))
            }
            boxRule = r
            return
        }
        let paths: [String: WritableKeyPath<AugmentationConfig, Float>] = [
            "jitter": \.centerJitter, "scale": \.scaleSigma, "rotation": \.rotationSigma, "shear": \.shearSigma,
            "flip": \.flipProbability, "gamma": \.gammaSigma, "blur_p": \.blurProbability, "blur_sigma": \.blurSigmaMax,
            "noise_p": \.noiseProbability, "noise_scale": \.noiseScaleMax, "sp_p": \.saltPepperProbability,
            "sp_amount": \.saltPepperAmount, "sp_size_min": \.saltPepperSizeMin, "sp_size_max": \.saltPepperSizeMax,
        ]
        guard let path = paths[key] else {
            throw DataError.invalidParameter(name: key, value: value, expected: "one of \(AugmentationConfig.parameterNames.joined(separator: ", "))",
                                             nearest: nearestName(key, in: AugmentationConfig.parameterNames))
        }
        let range = AugmentationConfig.ranges[key]!
        let lowerOpen = key == "sp_size_min" || key == "sp_size_max"
        let text = lowerOpen ? "(\(f(range.lowerBound)), \(f(range.upperBound))]" : "\(f(range.lowerBound))...\(f(range.upperBound))"
        guard let v = Float(value), v.isFinite, range.contains(v), !(lowerOpen && v == range.lowerBound) else {
            // the range's end nearest to the number; none for an open end (no nearest number there)
            let nearest = Float(value).flatMap { v -> String? in
                guard v.isFinite, !(lowerOpen && v <= range.lowerBound) else { return nil }
                return f(min(max(v, range.lowerBound), range.upperBound))
            }
            throw DataError.invalidParameter(name: key, value: value, expected: "a number in \(text) (\(AugmentationConfig.units[key]!))",
                                             nearest: nearest)
        }
        self[keyPath: path] = v
    }

    private func f(_ v: Float) -> String { v == v.rounded() && abs(v) < 1e9 ? String(Int(v)) : "\(v)" }

    /// Checks every value against ``ranges`` (a config built in code rather than parsed).
    /// - Throws: ``DataError/invalidParameter(name:value:expected:nearest:)``.
    public func validate() throws {
        var copy = self
        for key in AugmentationConfig.parameterNames where key != "boxes" {
            let paths: [String: KeyPath<AugmentationConfig, Float>] = [
                "jitter": \.centerJitter, "scale": \.scaleSigma, "rotation": \.rotationSigma, "shear": \.shearSigma,
                "flip": \.flipProbability, "gamma": \.gammaSigma, "blur_p": \.blurProbability, "blur_sigma": \.blurSigmaMax,
                "noise_p": \.noiseProbability, "noise_scale": \.noiseScaleMax, "sp_p": \.saltPepperProbability,
                "sp_amount": \.saltPepperAmount, "sp_size_min": \.saltPepperSizeMin, "sp_size_max": \.saltPepperSizeMax,
            ]
            try copy.set(key, "\(self[keyPath: paths[key]!])")
        }
    }

    /// Equal when every parameter is equal (the preset name is only a label).
    public static func == (a: AugmentationConfig, b: AugmentationConfig) -> Bool {
        a.centerJitter == b.centerJitter && a.scaleSigma == b.scaleSigma && a.rotationSigma == b.rotationSigma
            && a.shearSigma == b.shearSigma && a.flipProbability == b.flipProbability && a.gammaSigma == b.gammaSigma
            && a.boxRule == b.boxRule && a.blurProbability == b.blurProbability && a.blurSigmaMax == b.blurSigmaMax
            && a.noiseProbability == b.noiseProbability && a.noiseScaleMax == b.noiseScaleMax
            && a.saltPepperProbability == b.saltPepperProbability && a.saltPepperAmount == b.saltPepperAmount
            && a.saltPepperSizeMin == b.saltPepperSizeMin && a.saltPepperSizeMax == b.saltPepperSizeMax
    }

    /// `preset,key=value,...` listing every value (parses back to an equal config).
    public var description: String {
        func f(_ v: Float) -> String {
            v == v.rounded() ? String(Int(v)) : "\(v)"
        }
        return "\(AugmentationConfig.presets[preset] != nil ? preset : "none"),jitter=\(f(centerJitter)),scale=\(f(scaleSigma)),"
            + "rotation=\(f(rotationSigma)),shear=\(f(shearSigma)),flip=\(f(flipProbability)),gamma=\(f(gammaSigma)),"
            + "boxes=\(boxRule.rawValue),blur_p=\(f(blurProbability)),blur_sigma=\(f(blurSigmaMax)),noise_p=\(f(noiseProbability)),"
            + "noise_scale=\(f(noiseScaleMax)),sp_p=\(f(saltPepperProbability)),sp_amount=\(f(saltPepperAmount)),"
            + "sp_size_min=\(f(saltPepperSizeMin)),sp_size_max=\(f(saltPepperSizeMax))"
    }
}
