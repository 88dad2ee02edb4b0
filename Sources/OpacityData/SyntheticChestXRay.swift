import Foundation
import OpacityCore
import OpacityTensor

/// One lung field of a synthetic image: an egg-shaped region (narrower at the apex), in
/// pixels.
public struct LungRegion: Sendable, Equatable {
    /// Centre.
    public var centerX, centerY: Float
    /// Half width (at the widest, lower part) and half height.
    public var radiusX, radiusY: Float

    /// A region.
    public init(centerX: Float, centerY: Float, radiusX: Float, radiusY: Float) {
        self.centerX = centerX
        self.centerY = centerY
        self.radiusX = radiusX
        self.radiusY = radiusY
    }

    /// The axis-aligned box around the region.
    public var boundingBox: BoundingBox {
        BoundingBox(x: centerX - radiusX, y: centerY - radiusY, width: 2 * radiusX, height: 2 * radiusY)
    }

    /// The half width at height `y` relative to `radiusX` (0.7 at the apex, 1 below the middle).
    func widthFactor(_ y: Float) -> Float {
        0.7 + 0.3 * smoothstep(centerY - radiusY, centerY + 0.2 * radiusY, y)
    }

    /// Normalised distance from the centre: below 1 inside the lung.
    public func distance(x: Float, y: Float) -> Float {
        let dx = (x - centerX) / (radiusX * widthFactor(y)), dy = (y - centerY) / radiusY
        return (dx * dx + dy * dy).squareRoot()
    }

    /// Whether a point is inside the lung.
    public func contains(x: Float, y: Float) -> Bool { distance(x: x, y: y) < 1 }
}

/// Settings of the synthetic chest X-ray generator.
public struct SyntheticConfig: Sendable {
    /// How images are stored.
    public enum ImageFormat: Sendable, Equatable {
        /// 8-bit gray PNG (`{id}.png`).
        case png
        /// Uncompressed Explicit VR Little Endian DICOM (`{id}.dcm`).
        case dicom
        /// JPEG Baseline DICOM like the RSNA files (`{id}.dcm`), with the JPEG quality.
        case dicomJPEG(quality: Int)
    }

    /// Number of images.
    public var count: Int
    /// Side of the square images in pixels (RSNA: 1024).
    public var size: Int
    /// Seed: the same seed and settings write identical files.
    public var seed: UInt64
    /// Fractions of Lung Opacity, No Lung Opacity / Not Normal and Normal images
    /// (RSNA stage 2: 0.225, 0.443, 0.332). Counts are exact: rounded and the remainder
    /// given to the largest class.
    public var classFractions: (lungOpacity: Double, notNormal: Double, normal: Double)
    /// Probabilities of 1, 2, 3, 4 boxes on an opacity image (RSNA: 2614, 3266, 119, 13 of 6012).
    public var boxCountWeights: [Double]
    /// A folder of real images to use as backgrounds (composite mode), or `nil` to draw
    /// the anatomy.
    public var backgroundFolder: URL?
    /// Storage format.
    public var format: ImageFormat
    /// Worker threads for generation.
    public var threads: Int
    /// How opacities are drawn (``SyntheticOpacityStyle``; default `.ovals`, the style the
    /// `retinanet-r34-composite` zoo entry was trained on).
    public var opacityStyle: SyntheticOpacityStyle
    /// With `.patchy`: the probability, 0...1, that a region shows air bronchograms.
    public var airBronchogramRate: Double

    /// Settings; the defaults mimic the RSNA class mix and box statistics at 1024 px.
    public init(count: Int = 100, size: Int = 1024, seed: UInt64 = 0,
                classFractions: (lungOpacity: Double, notNormal: Double, normal: Double) = (0.225, 0.443, 0.332),
                boxCountWeights: [Double] = [2614, 3266, 119, 13], backgroundFolder: URL? = nil, format: ImageFormat = .png,
                threads: Int = ProcessInfo.processInfo.activeProcessorCount, opacityStyle: SyntheticOpacityStyle = .ovals,
                airBronchogramRate: Double = 0.35) {
        self.count = count
        self.size = size
        self.seed = seed
        self.classFractions = classFractions
        self.boxCountWeights = boxCountWeights
        self.backgroundFolder = backgroundFolder
        self.format = format
        self.threads = threads
        self.opacityStyle = opacityStyle
        self.airBronchogramRate = airBronchogramRate
    }
}

/// One generated image with its ground truth.
public struct SyntheticCase: Sendable {
    /// The patient id (a UUID-shaped string derived from the seed).
    public var id: String
    /// The image.
    public var image: GrayImage
    /// The opacity boxes (empty unless the class is Lung Opacity).
    public var boxes: [BoundingBox]
    /// The class.
    public var imageClass: ImageClass
    /// The two lung fields (image-left first); every box lies inside one of them.
    public var lungs: [LungRegion]
    /// What was drawn for a "not normal" image (e.g. `effusion`, `nodules`).
    public var findings: [String]
}

/// A synthetic chest X-ray generator that writes the RSNA layout, so the same loader reads
/// it: `stage_2_train_labels.csv`, `stage_2_detailed_class_info.csv` and
/// `stage_2_train_images/{patientId}.png` (or `.dcm`).
///
/// Images show a body outline, two lungs, ribs and clavicles, heart, spine and noise.
/// "Lung Opacity" images carry 1-4 fuzzy opacities, each boxed, lying inside a lung; box
/// sizes follow the RSNA statistics (median 217 x 298 px at 1024, clamped to the lung).
/// ``SyntheticConfig/opacityStyle`` picks smooth ovals (the original) or patchy,
/// ill-defined consolidations boxed the way the RSNA readers did.
/// "Not normal" images carry findings that are not boxed (effusion, enlarged heart,
/// nodules, a line or tube, interstitial pattern); "Normal" images are clean. In composite
/// mode, a real image from a folder replaces the drawn anatomy and opacities are placed in
/// the standard lung fields of a PA film.
public struct SyntheticChestXRay: Sendable {
    /// The settings.
    public let config: SyntheticConfig
    private let classes: [ImageClass]
    private let backgrounds: [URL]

    /// The smallest image side the generator draws, in pixels.
    public static let minimumSize = 64

    /// A generator.
    /// - Throws: ``DataError/invalidParameter(name:value:expected:nearest:)`` for a bad
    ///   count, size or fractions; ``DataError/missingFile(path:expected:)`` when the
    ///   background folder has no images.
    public init(config: SyntheticConfig) throws {
        guard config.count >= 1 else {
            throw DataError.invalidParameter(name: "count", value: "\(config.count)", expected: "at least 1", nearest: "1")
        }
        guard config.size >= Self.minimumSize else {
            throw DataError.invalidParameter(
                name: "size", value: "\(config.size)", expected: "at least \(Self.minimumSize) pixels", nearest: "\(Self.minimumSize)")
        }
        let f = config.classFractions
        guard f.lungOpacity >= 0, f.notNormal >= 0, f.normal >= 0, f.lungOpacity + f.notNormal + f.normal > 0 else {
            throw DataError.invalidParameter(name: "classFractions", value: "\(f)", expected: "non-negative with a positive sum", nearest: nil)
        }
        guard config.boxCountWeights.count >= 1, config.boxCountWeights.allSatisfy({ $0 >= 0 }), config.boxCountWeights.reduce(0, +) > 0 else {
            throw DataError.invalidParameter(name: "boxCountWeights", value: "\(config.boxCountWeights)",
                                             expected: "non-negative weights for 1, 2, ... boxes with a positive sum", nearest: "[2614, 3266, 119, 13]")
        }
        guard config.airBronchogramRate >= 0, config.airBronchogramRate <= 1 else {
            throw DataError.invalidParameter(name: "airBronchogramRate", value: "\(config.airBronchogramRate)",
                                             expected: "a probability from 0 to 1", nearest: "\(min(max(config.airBronchogramRate, 0), 1))")
        }
        self.config = config
        // Exact class counts, then a seeded shuffle.
        let sum = f.lungOpacity + f.notNormal + f.normal
        var n = [ImageClass.lungOpacity: Int((Double(config.count) * f.lungOpacity / sum).rounded()),
                 .notNormal: Int((Double(config.count) * f.notNormal / sum).rounded())]
        n[.normal] = max(0, config.count - n[.lungOpacity]! - n[.notNormal]!)
        while n.values.reduce(0, +) > config.count {
            let k = n.max { $0.value < $1.value }!.key
            n[k]! -= 1
        }
        var list = [ImageClass](repeating: .lungOpacity, count: n[.lungOpacity]!)
            + [ImageClass](repeating: .notNormal, count: n[.notNormal]!) + [ImageClass](repeating: .normal, count: n[.normal]!)
        var rng = RandomGenerator(seed: config.seed, stream: 0xC1A5_5E5)
        for i in stride(from: list.count - 1, to: 0, by: -1) { list.swapAt(i, rng.nextInt(i + 1)) }
        classes = list
        if let folder = config.backgroundFolder {
            backgrounds = try ImageFile.list(in: folder)
            if backgrounds.isEmpty {
                throw DataError.missingFile(path: folder.path, expected: "at least one background image (.dcm, .png, .jpg)")
            }
        } else {
            backgrounds = []
        }
    }

    /// The class of image `index`.
    public func imageClass(of index: Int) -> ImageClass { classes[index] }

    /// Generates image `index` (independent of every other index).
    /// - Throws: background image errors in composite mode.
    public func generate(index: Int) throws -> SyntheticCase {
        var rng = RandomGenerator(seed: config.seed, stream: UInt64(index) &+ 1)
        let id = SyntheticChestXRay.uuid(&rng)
        let cls = classes[index]
        let n = config.size
        let s = Float(n)
        var canvas: [Float]
        var lungs: [LungRegion]
        if backgrounds.isEmpty {
            (canvas, lungs) = drawAnatomy(&rng)
        } else {
            let url = backgrounds[rng.nextInt(backgrounds.count)]
            let bg = try ImageFile.read(url).resized(width: n, height: n)
            canvas = bg.toFloat().pixels
            lungs = [LungRegion(centerX: 0.31 * s, centerY: 0.47 * s, radiusX: 0.15 * s, radiusY: 0.28 * s),
                     LungRegion(centerX: 0.69 * s, centerY: 0.47 * s, radiusX: 0.15 * s, radiusY: 0.28 * s)]
        }
        var boxes: [BoundingBox] = []
        var findings: [String] = []
        switch cls {
        case .lungOpacity:
            boxes = drawOpacities(&canvas, lungs: lungs, rng: &rng)
        case .notNormal:
            findings = drawFindings(&canvas, lungs: lungs, composite: !backgrounds.isEmpty, rng: &rng)
        case .normal:
            break
        }
        addNoise(&canvas, rng: &rng)
        let img = FloatImage(width: n, height: n, pixels: canvas).to8Bit()
        return SyntheticCase(id: id, image: img, boxes: boxes, imageClass: cls, lungs: lungs, findings: findings)
    }

    /// Draws the opacities of a "Lung Opacity" image in the configured
    /// ``SyntheticConfig/opacityStyle`` onto `image` and returns their boxes (image pixels,
    /// one per opacity: `.ovals` fills each box; `.patchy` boxes each contiguous visible
    /// region). ``generate(index:)`` calls this before adding film grain; call it on any
    /// image (e.g. a real film) to composite opacities yourself.
    /// - Parameters:
    ///   - image: values in [0, 1], `config.size x config.size` (else nothing is drawn and
    ///     the result is empty).
    ///   - lungs: the lung fields; every opacity stays inside them.
    ///   - rng: the random source (the same state draws the same opacities).
    /// - Returns: the boxes; at least one for a `size x size` image.
    public func addOpacities(to image: inout FloatImage, lungs: [LungRegion], rng: inout RandomGenerator) -> [BoundingBox] {
        guard image.width == config.size, image.height == config.size, lungs.count >= 2 else { return [] }
        return drawOpacities(&image.pixels, lungs: lungs, rng: &rng)
    }

    func drawOpacities(_ canvas: inout [Float], lungs: [LungRegion], rng: inout RandomGenerator) -> [BoundingBox] {
        switch config.opacityStyle {
        case .ovals:
            let boxes = placeBoxes(lungs: lungs, rng: &rng)
            for b in boxes { drawOpacity(&canvas, box: b, lungs: lungs, rng: &rng) }
            return boxes
        case .patchy:
            return drawPatchyOpacities(&canvas, lungs: lungs, rng: &rng)
        }
    }

    /// Writes the whole set in the RSNA layout under `root`.
    /// - Parameters:
    ///   - root: the output folder (created).
    ///   - progress: called after each image.
    /// - Returns: the cases' ground truth without pixels (`image` is 1x1), in index order.
    /// - Throws: write errors naming the file.
    @discardableResult
    public func write(to root: URL, progress: ProgressHandler? = nil) throws -> [SyntheticCase] {
        let folder = root.appendingPathComponent("stage_2_train_images")
        do { try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true) } catch {
            throw DataError.unwritableFile(path: folder.path, reason: error.localizedDescription)
        }
        let counter = ProgressCounter(total: config.count, handler: progress)
        let results = ResultSlots<SyntheticCase>(count: config.count)
        let threads = max(1, min(config.threads, config.count))
        let next = AtomicCounter()
        let me = self
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            while true {
                let i = next.increment()
                if i >= me.config.count || results.failed { return }
                do {
                    var c = try me.generate(index: i)
                    switch me.config.format {
                    case .png:
                        try PNG.write(c.image, to: folder.appendingPathComponent("\(c.id).png"), fast: true)
                    case .dicom:
                        try DICOM.write(c.image, patientID: c.id, to: folder.appendingPathComponent("\(c.id).dcm"))
                    case let .dicomJPEG(q):
                        try DICOM.write(c.image, patientID: c.id, jpegQuality: q, to: folder.appendingPathComponent("\(c.id).dcm"))
                    }
                    c.image = GrayImage(width: 1, height: 1)
                    results.set(i, .success(c))
                } catch {
                    results.set(i, .failure(error))
                }
                counter.step()
            }
        }
        let cases = try results.values()
        var labels = RSNALabels.labelsHeader.joined(separator: ",") + "\n"
        var info = RSNALabels.classInfoHeader.joined(separator: ",") + "\n"
        for c in cases {
            if c.boxes.isEmpty {
                labels += "\(c.id),,,,,0\n"
                info += "\(c.id),\(c.imageClass.label)\n"
            }
            for b in c.boxes {
                labels += "\(c.id),\(csvNumber(b.x)),\(csvNumber(b.y)),\(csvNumber(b.width)),\(csvNumber(b.height)),1\n"
                info += "\(c.id),\(c.imageClass.label)\n"
            }
        }
        try writeData(Data(labels.utf8), to: root.appendingPathComponent("stage_2_train_labels.csv"))
        try writeData(Data(info.utf8), to: root.appendingPathComponent("stage_2_detailed_class_info.csv"))
        return cases
    }

    // MARK: - Implementation details

    static func uuid(_ rng: inout RandomGenerator) -> String {
        let a = rng.next(), b = rng.next()
        let h = String(format: "%016llx%016llx", a, b)
        let c = Array(h)
        return String(c[0..<8]) + "-" + String(c[8..<12]) + "-" + String(c[12..<16]) + "-" + String(c[16..<20]) + "-" + String(c[20..<32])
    }

    /// Draws body, lungs, heart, spine, ribs, clavicles. Returns the canvas in [0, 1].
    func drawAnatomy(_ rng: inout RandomGenerator) -> ([Float], [LungRegion]) {
        let n = config.size
        let s = Float(n)
        var p = [Float](repeating: 0, count: n * n)
        // Per-image anatomy variation.
        let bodyHalf = 0.40 + rng.uniform(-0.03, 0.03)
        let tissue = 0.50 + rng.uniform(-0.06, 0.06)
        let lungDark = 0.16 + rng.uniform(-0.04, 0.05)
        let lungCY = 0.47 + rng.uniform(-0.02, 0.02), lungRY = 0.29 + rng.uniform(-0.02, 0.02)
        let lungRX = 0.15 + rng.uniform(-0.012, 0.012)
        let lungs = [
            LungRegion(centerX: (0.31 + rng.uniform(-0.015, 0.015)) * s, centerY: lungCY * s, radiusX: lungRX * s, radiusY: lungRY * s),
            LungRegion(centerX: (0.69 + rng.uniform(-0.015, 0.015)) * s, centerY: lungCY * s,
                       radiusX: (lungRX + rng.uniform(-0.01, 0.01)) * s, radiusY: (lungRY - 0.01) * s),
        ]
        let heartCX = 0.55 + rng.uniform(-0.02, 0.02), heartCY = 0.64 + rng.uniform(-0.02, 0.02)
        let heartRX = 0.12 + rng.uniform(-0.015, 0.015), heartRY = 0.11 + rng.uniform(-0.01, 0.01)
        let diaphragm = (lungCY + lungRY) - 0.02
        let tilt = rng.uniform(-0.01, 0.01)
        let edge: Float = 3 / s
        for y in 0..<n {
            let v = (Float(y) + 0.5) / s
            // Body half width: neck at the top widening to the shoulders.
            let hw = 0.11 + (bodyHalf - 0.11) * smoothstep(0.0, 0.17, v)
            let cx = 0.5 + tilt * (v - 0.5)
            let row = y * n
            for x in 0..<n {
                let u = (Float(x) + 0.5) / s
                let d = abs(u - cx)
                let body = 1 - smoothstep(hw - 0.02, hw + 0.01, d)
                var val: Float = 0.04 + body * (tissue - 0.04)
                // Abdomen below the diaphragm is denser.
                val += body * 0.12 * smoothstep(diaphragm - 0.02, diaphragm + 0.06, v)
                // Lungs.
                var lungMask: Float = 0
                for l in lungs {
                    let dist = l.distance(x: u * s, y: v * s)
                    lungMask = max(lungMask, 1 - smoothstep(0.93, 1.0 + edge * 10, dist))
                }
                val -= lungMask * (tissue - lungDark) * body
                // Heart.
                let hx = (u - heartCX) / heartRX, hy = (v - heartCY) / heartRY
                let heart = 1 - smoothstep(0.85, 1.05, (hx * hx + hy * hy).squareRoot())
                val = max(val, val + heart * (tissue + 0.05 - val) * 0.9)
                // Spine and mediastinum.
                let spine = 1 - smoothstep(0.035, 0.055, d)
                let vertebra = 0.5 + 0.5 * sin(v * 2 * .pi / 0.036)
                val += spine * body * (0.10 + 0.05 * vertebra) * smoothstep(0.05, 0.12, v)
                p[row + x] = val
            }
        }
        // Ribs: posterior ribs sloping down laterally, 10 per side, brighter over the lungs.
        let ribTop = lungCY - lungRY + 0.01
        for side: Float in [-1, 1] {
            for i in 0..<10 {
                let v0 = ribTop + Float(i) * 0.062 + rng.uniform(-0.005, 0.005)
                let thick = 0.011 + rng.uniform(0, 0.004)
                drawRib(&p, side: side, v0: v0, thickness: thick, strength: 0.09 + rng.uniform(0, 0.03), bodyHalf: bodyHalf)
            }
            // Clavicle.
            drawRib(&p, side: side, v0: ribTop - 0.02, thickness: 0.016, strength: 0.12, bodyHalf: bodyHalf, slope: -0.05, curve: 0.2)
        }
        return (p, lungs)
    }

    /// A bright band `v = v0 + slope·t + curve·t²` with `t` the distance from the spine.
    func drawRib(_ p: inout [Float], side: Float, v0: Float, thickness: Float, strength: Float, bodyHalf: Float,
                 slope: Float = 0.12, curve: Float = 0.35) {
        let n = config.size
        let s = Float(n)
        let x0 = side < 0 ? Int((0.5 - bodyHalf) * s) : Int(0.53 * s), x1 = side < 0 ? Int(0.47 * s) : Int((0.5 + bodyHalf) * s)
        for x in max(0, x0)..<min(n, x1) {
            let u = (Float(x) + 0.5) / s
            let t = abs(u - 0.5) - 0.03
            if t < 0 { continue }
            let vc = v0 + slope * t + curve * t * t
            let fade = 1 - smoothstep(bodyHalf - 0.08, bodyHalf, t + 0.03)
            let ylo = max(0, Int((vc - thickness) * s)), yhi = min(n - 1, Int((vc + thickness) * s))
            if ylo > yhi { continue }
            for y in ylo...yhi {
                let v = (Float(y) + 0.5) / s
                let dv = abs(v - vc) / thickness
                let profile = max(0, 1 - dv * dv)  // rounded cross-section
                p[y * n + x] += strength * profile * fade
            }
        }
    }

    /// Box sizes from the RSNA statistics (log-normal around the medians), clamped to the
    /// lung, placed with the centre inside the lung and little overlap.
    func placeBoxes(lungs: [LungRegion], rng: inout RandomGenerator) -> [BoundingBox] {
        let total = config.boxCountWeights.reduce(0, +)
        var r = Double(rng.nextUniform()) * total
        var count = config.boxCountWeights.count
        for (k, w) in config.boxCountWeights.enumerated() {
            if r < w {
                count = k + 1
                break
            }
            r -= w
        }
        let scale = Float(config.size) / 1024
        var boxes: [BoundingBox] = []
        for k in 0..<count {
            // Two boxes: one per lung (the common bilateral case); otherwise random lungs.
            let lung = count == 2 ? lungs[k] : (k < 2 ? lungs[(k + rng.nextInt(2)) % 2] : lungs[rng.nextInt(2)])
            let bb = lung.boundingBox
            var placed: BoundingBox?
            for attempt in 0..<60 {
                let shrink = Float(pow(0.85, Double(attempt / 10)))
                var w = min(max(217 * expf(0.30 * rng.nextNormal()), 40) * scale, 0.92 * bb.width) * shrink
                var h = min(max(298 * expf(0.32 * rng.nextNormal()), 45) * scale, 0.92 * bb.height) * shrink
                w = max(w, min(40 * scale, bb.width * 0.5))
                h = max(h, min(45 * scale, bb.height * 0.5))
                let x = bb.x + rng.uniform(0, max(0, bb.width - w))
                let y = bb.y + rng.uniform(0, max(0, bb.height - h))
                let b = BoundingBox(x: x, y: y, width: w, height: h)
                guard lung.distance(x: b.centerX, y: b.centerY) < 0.75 else { continue }
                if boxes.contains(where: { $0.iou(b) > 0.05 }) { continue }
                placed = b
                break
            }
            if let b = placed { boxes.append(b) }
        }
        if boxes.isEmpty {  // always at least one box on an opacity image
            let bb = lungs[0].boundingBox
            boxes.append(BoundingBox(x: bb.centerX - bb.width / 4, y: bb.centerY - bb.height / 4, width: bb.width / 2, height: bb.height / 2))
        }
        return boxes
    }

    /// A fuzzy consolidation filling the box: a few Gaussian lobes with mottled texture
    /// inside an elliptical window that just fits the box, confined to the lung, blended
    /// so that already bright regions (heart, ribs) brighten less.
    func drawOpacity(_ p: inout [Float], box: BoundingBox, lungs: [LungRegion], rng: inout RandomGenerator) {
        let n = config.size
        let lobes = 3 + rng.nextInt(4)
        var centres: [(Float, Float, Float, Float)] = []
        for _ in 0..<lobes {
            centres.append((box.x + box.width * rng.uniform(0.3, 0.7), box.y + box.height * rng.uniform(0.3, 0.7),
                            box.width * rng.uniform(0.18, 0.32), box.height * rng.uniform(0.18, 0.32)))
        }
        let amp = rng.uniform(0.35, 0.6)
        // Texture: three plane waves in random directions (airspace mottling).
        var waves: [(Float, Float, Float)] = []
        for _ in 0..<3 {
            let angle = rng.uniform(0, .pi)
            let f = rng.uniform(0.04, 0.09) * 1024 / Float(n)
            waves.append((cosf(angle) * f, sinf(angle) * f, rng.uniform(0, 6.28)))
        }
        let x0 = max(0, Int(box.x)), x1 = min(n - 1, Int(box.x2)), y0 = max(0, Int(box.y)), y1 = min(n - 1, Int(box.y2))
        guard x0 <= x1, y0 <= y1 else { return }
        let cx = box.centerX, cy = box.centerY, rx = box.width / 2, ry = box.height / 2
        for y in y0...y1 {
            let fy = Float(y) + 0.5
            for x in x0...x1 {
                let fx = Float(x) + 0.5
                let ex = (fx - cx) / rx, ey = (fy - cy) / ry
                let window = 1 - smoothstep(0.75, 1.0, (ex * ex + ey * ey).squareRoot())
                if window <= 0 { continue }
                var dens: Float = 0
                for c in centres {
                    let dx = (fx - c.0) / c.2, dy = (fy - c.1) / c.3
                    dens += expf(-0.5 * (dx * dx + dy * dy))
                }
                dens = min(1, dens)
                var t: Float = 0
                for w in waves { t += sinf(fx * w.0 + fy * w.1 + w.2) }
                let texture = 0.8 + 0.2 * t / 3
                var inLung: Float = 0
                for l in lungs { inLung = max(inLung, 1 - smoothstep(0.9, 1.0, l.distance(x: fx, y: fy))) }
                let a = amp * dens * texture * window * inLung
                let i = y * n + x
                p[i] += a * (1 - p[i])
            }
        }
    }

    /// Findings that make an image "not normal" without an opacity box.
    func drawFindings(_ p: inout [Float], lungs: [LungRegion], composite: Bool, rng: inout RandomGenerator) -> [String] {
        let n = config.size
        let s = Float(n)
        var kinds = ["effusion", "cardiomegaly", "nodules", "line", "interstitial"]
        if composite { kinds.removeAll { $0 == "cardiomegaly" } }
        let first = kinds[rng.nextInt(kinds.count)]
        var chosen = [first]
        if rng.nextUniform() < 0.35 {
            let second = kinds[rng.nextInt(kinds.count)]
            if second != first { chosen.append(second) }
        }
        for kind in chosen {
            switch kind {
            case "effusion":
                // Blunted costophrenic angle: the lung base whitened up to a meniscus.
                let l = lungs[rng.nextInt(2)]
                let level = l.centerY + l.radiusY * rng.uniform(0.45, 0.75)
                for y in max(0, Int(level - 0.05 * s))..<min(n, Int(l.centerY + l.radiusY + 2)) {
                    let fy = Float(y) + 0.5
                    for x in max(0, Int(l.centerX - l.radiusX))..<min(n, Int(l.centerX + l.radiusX)) {
                        let fx = Float(x) + 0.5
                        let meniscus = level - 0.04 * s * abs(fx - l.centerX) / l.radiusX
                        let a = smoothstep(meniscus - 0.01 * s, meniscus + 0.01 * s, fy)
                        let inLung = 1 - smoothstep(0.9, 1.02, l.distance(x: fx, y: fy))
                        p[y * n + x] += 0.3 * a * inLung
                    }
                }
            case "cardiomegaly":
                let cx = 0.55 * s, cy = 0.63 * s, rx = rng.uniform(0.16, 0.19) * s, ry = rng.uniform(0.13, 0.15) * s
                for y in max(0, Int(cy - ry))..<min(n, Int(cy + ry)) {
                    for x in max(0, Int(cx - rx))..<min(n, Int(cx + rx)) {
                        let dx = (Float(x) - cx) / rx, dy = (Float(y) - cy) / ry
                        let h = 1 - smoothstep(0.85, 1.0, (dx * dx + dy * dy).squareRoot())
                        p[y * n + x] = max(p[y * n + x], p[y * n + x] * (1 - h) + h * 0.58)
                    }
                }
            case "nodules":
                for _ in 0..<(2 + rng.nextInt(4)) {
                    let l = lungs[rng.nextInt(2)]
                    var cx: Float = 0, cy: Float = 0
                    repeat {
                        cx = l.centerX + l.radiusX * rng.uniform(-0.8, 0.8)
                        cy = l.centerY + l.radiusY * rng.uniform(-0.8, 0.8)
                    } while !l.contains(x: cx, y: cy)
                    let r = rng.uniform(0.005, 0.013) * s
                    for y in max(0, Int(cy - 2 * r))..<min(n, Int(cy + 2 * r) + 1) {
                        for x in max(0, Int(cx - 2 * r))..<min(n, Int(cx + 2 * r) + 1) {
                            let d = ((Float(x) - cx) * (Float(x) - cx) + (Float(y) - cy) * (Float(y) - cy)).squareRoot() / r
                            p[y * n + x] += 0.22 * (1 - smoothstep(0.8, 1.2, d))
                        }
                    }
                }
            case "line":
                // A tube from the neck down the mediastinum, curving to one side.
                let endX = rng.uniform(0.40, 0.62) * s, endY = rng.uniform(0.45, 0.62) * s
                let startX = 0.5 * s + rng.uniform(-0.03, 0.03) * s
                let w = max(1.0, 0.003 * s)
                for y in 0..<Int(endY) {
                    let t = Float(y) / endY
                    let xc = startX + (endX - startX) * t * t
                    for x in max(0, Int(xc - 2 * w))..<min(n, Int(xc + 2 * w) + 1) {
                        let d = abs(Float(x) - xc) / w
                        p[y * n + x] += 0.35 * max(0, 1 - d * d)
                    }
                }
            default:  // interstitial: fine reticular texture across both lungs
                let f = rng.uniform(0.08, 0.14) * 1024 / s
                for l in lungs {
                    let bb = l.boundingBox
                    for y in max(0, Int(bb.y))..<min(n, Int(bb.y2)) {
                        for x in max(0, Int(bb.x))..<min(n, Int(bb.x2)) {
                            let fx = Float(x), fy = Float(y)
                            let inLung = 1 - smoothstep(0.85, 1.0, l.distance(x: fx, y: fy))
                            let net = abs(sinf(fx * f) + sinf(fy * f * 1.3 + fx * 0.02))
                            p[y * n + x] += 0.07 * inLung * (net > 1.4 ? 1 : 0.2)
                        }
                    }
                }
            }
        }
        return chosen
    }

    /// Gaussian grain plus a gentle low-frequency exposure gradient.
    func addNoise(_ p: inout [Float], rng: inout RandomGenerator) {
        let n = config.size
        let sigma = rng.uniform(0.008, 0.02)
        let gx = rng.uniform(-0.04, 0.04), gy = rng.uniform(-0.04, 0.04)
        let table = NormalTable.values
        table.withUnsafeBufferPointer { tab in
            p.withUnsafeMutableBufferPointer { q in
                var i = 0
                var bits: UInt64 = 0
                for y in 0..<n {
                    let ry = (Float(y) / Float(n) - 0.5) * gy
                    for x in 0..<n {
                        if i & 3 == 0 { bits = rng.next() }
                        let z = tab[Int(bits & 0xFFFF)]
                        bits >>= 16
                        let g = (Float(x) / Float(n) - 0.5) * gx + ry
                        q[i] = min(max(q[i] + sigma * z + g, 0), 1)
                        i += 1
                    }
                }
            }
        }
    }
}

@inline(__always)
func smoothstep(_ e0: Float, _ e1: Float, _ x: Float) -> Float {
    let t = min(max((x - e0) / (e1 - e0), 0), 1)
    return t * t * (3 - 2 * t)
}

/// A lock-protected counter for work sharing.
final class AtomicCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    /// Returns the current value and increments it.
    func increment() -> Int {
        lock.lock()
        defer { lock.unlock() }
        value += 1
        return value - 1
    }
}

/// Per-index results filled by worker threads.
final class ResultSlots<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var slots: [Result<T, Error>?]
    private var _failed = false
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    var failed: Bool {
        lock.lock()
        defer { lock.unlock() }
        return _failed
    }
    func set(_ i: Int, _ r: Result<T, Error>) {
        lock.lock()
        slots[i] = r
        if case .failure = r { _failed = true }
        lock.unlock()
    }
    func values() throws -> [T] {
        lock.lock()
        defer { lock.unlock() }
        var out: [T] = []
        for s in slots {
            switch s {
            case let .success(v): out.append(v)
            case let .failure(e): throw e
            case nil: continue
            }
        }
        return out
    }
}
