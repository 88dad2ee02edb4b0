import Foundation

/// What a model is for, what it must not be used for, what it takes and gives, how it was
/// made and how well it did: carried by each zoo entry (`card`) and each exported bundle
/// (metadata `extra.model_card`). `opacity zoo info NAME` prints it. Schema:
/// Documentation/Zoo.md, "Model cards".
///
/// JSON keys are snake_case (`intended_use`, `input`, ...).
public struct ModelCard: Codable, Hashable, Sendable {
    /// The input the model expects.
    public struct Input: Codable, Hashable, Sendable {
        /// Image channels (1: grey).
        public var channels: Int
        /// The square side the image is resampled to, in pixels.
        public var size: Int
        /// The intensity range fed to the network, e.g. `[0, 1] (8-bit grey / 255)`.
        public var intensityRange: String
        /// How DICOM files are turned into that input (rescale, MONOCHROME1, windowing).
        public var dicom: String

        public init(channels: Int, size: Int, intensityRange: String, dicom: String) {
            self.channels = channels
            self.size = size
            self.intensityRange = intensityRange
            self.dicom = dicom
        }

        enum CodingKeys: String, CodingKey {
            case channels, size, dicom
            case intensityRange = "intensity_range"
        }
    }

    /// One measured number and the data it was measured on.
    public struct Metric: Codable, Hashable, Sendable {
        /// E.g. `rsna_metric`, `coco_ap50`.
        public var name: String
        public var value: Double
        /// The data it was measured on (set, split, image count).
        public var data: String

        public init(name: String, value: Double, data: String) {
            self.name = name
            self.value = value
            self.data = data
        }
    }

    /// One version of the model and what changed.
    public struct Change: Codable, Hashable, Sendable {
        public var version: String
        /// `YYYY-MM-DD`.
        public var date: String
        public var changes: String

        public init(version: String, date: String, changes: String) {
            self.version = version
            self.date = date
            self.changes = changes
        }
    }

    /// The card's model version (e.g. `1.0.0`).
    public var version: String
    /// What the model is meant for.
    public var intendedUse: String
    /// What it must not be used for.
    public var outOfScope: String
    /// The input it expects.
    public var input: Input
    /// What it returns.
    public var outputs: String
    /// The data it was trained on.
    public var trainingData: String
    /// How it was trained (the command or options).
    public var recipe: String
    /// Metrics, each with the data it was measured on.
    public var metrics: [Metric]
    /// The score threshold it is used at by default (its operating point), if any.
    public var operatingThreshold: Double?
    /// The licence of the weights (SPDX identifier where there is one).
    public var license: String
    /// Versions, newest first.
    public var changelog: [Change]

    public init(version: String, intendedUse: String, outOfScope: String, input: Input, outputs: String, trainingData: String,
                recipe: String, metrics: [Metric], operatingThreshold: Double?, license: String, changelog: [Change]) {
        self.version = version
        self.intendedUse = intendedUse
        self.outOfScope = outOfScope
        self.input = input
        self.outputs = outputs
        self.trainingData = trainingData
        self.recipe = recipe
        self.metrics = metrics
        self.operatingThreshold = operatingThreshold
        self.license = license
        self.changelog = changelog
    }

    enum CodingKeys: String, CodingKey {
        case version, input, outputs, recipe, metrics, license, changelog
        case intendedUse = "intended_use", outOfScope = "out_of_scope", trainingData = "training_data"
        case operatingThreshold = "operating_threshold"
    }

    /// The metadata key of a bundle's card.
    public static let metadataKey = "model_card"

    /// Checks that every text field is filled in and numbers are in range.
    /// - Parameter field: the card's path in its document, for the message (e.g. `entries[0].card`).
    /// - Throws: ``ZooError/invalidManifest(file:field:reason:)`` naming the field.
    public func validate(file: String, field: String) throws {
        func bad(_ f: String, _ r: String) -> ZooError { .invalidManifest(file: file, field: "\(field).\(f)", reason: r) }
        for (name, value) in [("version", version), ("intended_use", intendedUse), ("out_of_scope", outOfScope), ("outputs", outputs),
                              ("training_data", trainingData), ("recipe", recipe), ("license", license),
                              ("input.intensity_range", input.intensityRange), ("input.dicom", input.dicom)]
        where value.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw bad(name, "is empty; a model card states it (Documentation/Zoo.md, Model cards)")
        }
        guard input.channels >= 1 else { throw bad("input.channels", "\(input.channels); expected 1 or more") }
        guard input.size >= 16 else { throw bad("input.size", "\(input.size); expected the input side in pixels, e.g. 256") }
        if let t = operatingThreshold, !(t >= 0 && t <= 1) { throw bad("operating_threshold", "\(t); expected a score in [0, 1]") }
        for (i, m) in metrics.enumerated() {
            guard !m.name.isEmpty, m.value.isFinite else { throw bad("metrics[\(i)]", "needs a name and a finite value") }
            guard !m.data.isEmpty else { throw bad("metrics[\(i)].data", "is empty; say what '\(m.name)' was measured on") }
        }
        guard !changelog.isEmpty else { throw bad("changelog", "is empty; list at least this version") }
    }

    /// The card from a bundle's metadata, if it carries one that decodes.
    public init?(metadata: BundleMetadata) {
        guard let v = metadata.extra[Self.metadataKey], let data = try? JSONEncoder().encode(v),
              let card = try? JSONDecoder().decode(ModelCard.self, from: data) else { return nil }
        self = card
    }

    /// The card as a metadata value.
    public var jsonValue: JSONValue {
        // encoding our own Codable value into JSONValue cannot fail
        (try? JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(self))) ?? .null
    }

    /// The card as text, one field a line (what `opacity zoo info` prints).
    public var text: String {
        var s = "model card (version \(version))\n"
        s += "  intended use:   \(intendedUse)\n"
        s += "  not for:        \(outOfScope)\n"
        s += "  input:          \(input.channels) channel(s), \(input.size) x \(input.size) px, intensities \(input.intensityRange)\n"
        s += "  DICOM:          \(input.dicom)\n"
        s += "  outputs:        \(outputs)\n"
        s += "  training data:  \(trainingData)\n"
        s += "  recipe:         \(recipe)\n"
        s += "  metrics:\n"
        for m in metrics { s += "    \(m.name) = \(String(format: "%.4f", m.value))  (on \(m.data))\n" }
        s += "  operating threshold: " + (operatingThreshold.map { String(format: "%.2f", $0) } ?? "none (detect uses 0.2)") + "\n"
        s += "  license:        \(license)\n"
        s += "  changelog:\n"
        for c in changelog { s += "    \(c.version) (\(c.date)): \(c.changes)\n" }
        return s
    }
}
