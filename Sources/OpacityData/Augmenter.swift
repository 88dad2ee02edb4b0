import Foundation
import OpacityCore
import OpacityTensor

/// A 2-D affine map `p -> M p + t` on continuous pixel coordinates (pixel `(i, j)` covers
/// `[i, i+1) x [j, j+1)`; its centre is `(i + 0.5, j + 0.5)`).
public struct AffineTransform2D: Sendable, Equatable {
    /// The matrix `[[a, b], [c, d]]`.
    public var a, b, c, d: Double
    /// The translation.
    public var tx, ty: Double

    /// A map from its coefficients: `x' = a x + b y + tx`, `y' = c x + d y + ty`.
    public init(a: Double, b: Double, c: Double, d: Double, tx: Double, ty: Double) {
        self.a = a
        self.b = b
        self.c = c
        self.d = d
        self.tx = tx
        self.ty = ty
    }

    /// The identity.
    public static let identity = AffineTransform2D(a: 1, b: 0, c: 0, d: 1, tx: 0, ty: 0)

    /// Applies the map to a point.
    public func apply(_ x: Double, _ y: Double) -> (x: Double, y: Double) {
        (a * x + b * y + tx, c * x + d * y + ty)
    }

    /// The inverse map.
    public var inverse: AffineTransform2D {
        let det = a * d - b * c
        let ia = d / det, ib = -b / det, ic = -c / det, id = a / det
        return AffineTransform2D(a: ia, b: ib, c: ic, d: id, tx: -(ia * tx + ib * ty), ty: -(ic * tx + id * ty))
    }

    /// Maps a box and returns the axis-aligned box around the mapped points.
    /// - Parameters:
    ///   - box: a box in the input coordinates.
    ///   - rule: ``BoxMappingRule/eightPoint`` (1/3 and 2/3 of each side) or
    ///     ``BoxMappingRule/corners``.
    public func map(_ box: BoundingBox, rule: BoxMappingRule) -> BoundingBox {
        let x = Double(box.x), y = Double(box.y), w = Double(box.width), h = Double(box.height)
        let pts: [(Double, Double)]
        switch rule {
        case .corners:
            pts = [(x, y), (x + w, y), (x, y + h), (x + w, y + h)]
        case .eightPoint:
            pts = [(x, y + h / 3), (x, y + 2 * h / 3), (x + w, y + h / 3), (x + w, y + 2 * h / 3),
                   (x + w / 3, y), (x + 2 * w / 3, y), (x + w / 3, y + h), (x + 2 * w / 3, y + h)]
        }
        var x0 = Double.infinity, y0 = Double.infinity, x1 = -Double.infinity, y1 = -Double.infinity
        for p in pts {
            let q = apply(p.0, p.1)
            x0 = min(x0, q.x); x1 = max(x1, q.x)
            y0 = min(y0, q.y); y1 = max(y1, q.y)
        }
        return BoundingBox(x: Float(x0), y: Float(y0), width: Float(x1 - x0), height: Float(y1 - y0))
    }
}

/// The random geometric choices for one sample.
public struct GeometricParameters: Sendable, Equatable {
    /// Centre shift in source pixels.
    public var shiftX, shiftY: Double
    /// Extra per-axis scale factors (1 = plain resize; 2 = zoom in 2x).
    public var scaleX, scaleY: Double
    /// Rotation in degrees (counter-clockwise on screen is negative, skimage convention).
    public var rotation: Double
    /// Shear in degrees.
    public var shear: Double
    /// Whether to flip horizontally.
    public var flip: Bool

    /// Parameters; the defaults are the plain resize.
    public init(shiftX: Double = 0, shiftY: Double = 0, scaleX: Double = 1, scaleY: Double = 1, rotation: Double = 0,
                shear: Double = 0, flip: Bool = false) {
        self.shiftX = shiftX
        self.shiftY = shiftY
        self.scaleX = scaleX
        self.scaleY = scaleY
        self.rotation = rotation
        self.shear = shear
        self.flip = flip
    }
}

/// One augmented sample: `size x size` pixels in `[0, 1]` and its boxes in output pixels.
public struct AugmentedSample: Sendable {
    /// The image.
    public var image: FloatImage
    /// Boxes in output pixels (not clipped, as in the paper).
    public var boxes: [BoundingBox]
    /// The geometric choices made.
    public var geometry: GeometricParameters
}

/// Applies an ``AugmentationConfig`` to one image: one bilinear warp from the source to
/// `outputSize x outputSize`, boxes mapped by the config's rule, then the photometric
/// steps.
///
/// Every random choice comes from the generator passed in; the loader seeds one per
/// sample from `(seed, epoch, index)`, so results do not depend on thread scheduling.
public struct Augmenter: Sendable {
    /// The parameters.
    public var config: AugmentationConfig
    /// Output side in pixels (e.g. 512).
    public var outputSize: Int

    /// An augmenter.
    public init(config: AugmentationConfig, outputSize: Int) {
        self.config = config
        self.outputSize = outputSize
    }

    /// Draws the geometric parameters (in a fixed order: shift x, y, scale x, y,
    /// rotation, shear, flip).
    public func drawGeometry(sourceWidth: Int, using rng: inout RandomGenerator) -> GeometricParameters {
        let c = config
        let j = Double(c.centerJitter) * Double(sourceWidth) / 1024
        var g = GeometricParameters()
        g.shiftX = j > 0 ? Double(rng.uniform(-1, 1)) * j : 0
        g.shiftY = j > 0 ? Double(rng.uniform(-1, 1)) * j : 0
        g.scaleX = c.scaleSigma > 0 ? pow(2, Double(rng.normal(std: c.scaleSigma))) : 1
        g.scaleY = c.scaleSigma > 0 ? pow(2, Double(rng.normal(std: c.scaleSigma))) : 1
        g.rotation = c.rotationSigma > 0 ? Double(rng.normal(std: c.rotationSigma)) : 0
        g.shear = c.shearSigma > 0 ? Double(rng.normal(std: c.shearSigma)) : 0
        g.flip = c.flipProbability > 0 ? rng.nextUniform() < c.flipProbability : false
        return g
    }

    /// The map from output pixels to source pixels for the given choices.
    ///
    /// `src = centre + D R (out - size/2)`, with `R = [[cos r, -sin(r+s)], [sin r, cos(r+s)]]`
    /// (skimage <= 0.18 rotation + shear), `D = diag(±W/(size·scaleX), H/(size·scaleY))`
    /// (minus for a flip) and `centre` the source centre plus the shift.
    public func outputToSource(_ g: GeometricParameters, sourceWidth: Int, sourceHeight: Int) -> AffineTransform2D {
        let r = g.rotation * .pi / 180, s = g.shear * .pi / 180
        let m00 = cos(r), m01 = -sin(r + s), m10 = sin(r), m11 = cos(r + s)
        let dx = (g.flip ? -1.0 : 1.0) * Double(sourceWidth) / (Double(outputSize) * g.scaleX)
        let dy = Double(sourceHeight) / (Double(outputSize) * g.scaleY)
        let a = dx * m00, b = dx * m01, c = dy * m10, d = dy * m11
        let cx = Double(sourceWidth) / 2 + g.shiftX, cy = Double(sourceHeight) / 2 + g.shiftY
        let h = Double(outputSize) / 2
        return AffineTransform2D(a: a, b: b, c: c, d: d, tx: cx - a * h - b * h, ty: cy - c * h - d * h)
    }

    /// Augments one image.
    /// - Parameters:
    ///   - image: the source (any size; 1024 x 1024 for RSNA).
    ///   - boxes: boxes in source pixels.
    ///   - rng: the sample's generator.
    /// - Returns: the `outputSize x outputSize` image in `[0, 1]` and the mapped boxes.
    public func apply(_ image: GrayImage, boxes: [BoundingBox], using rng: inout RandomGenerator) -> AugmentedSample {
        apply(.gray(image), boxes: boxes, using: &rng)
    }

    /// Augments one image of any depth (see ``SourceImage``): 8-bit sources exactly as
    /// ``apply(_:boxes:using:)-(GrayImage,_,_)``, full-depth sources in `Float` throughout.
    public func apply(_ image: SourceImage, boxes: [BoundingBox], using rng: inout RandomGenerator) -> AugmentedSample {
        let g = drawGeometry(sourceWidth: image.width, using: &rng)
        return apply(image, boxes: boxes, geometry: g, using: &rng)
    }

    /// Augments one image with given geometric choices (the photometric steps still draw
    /// from `rng`).
    public func apply(_ image: GrayImage, boxes: [BoundingBox], geometry g: GeometricParameters,
                      using rng: inout RandomGenerator) -> AugmentedSample {
        apply(.gray(image), boxes: boxes, geometry: g, using: &rng)
    }

    /// Augments one image with given geometric choices (the photometric steps still draw
    /// from `rng`).
    public func apply(_ image: SourceImage, boxes: [BoundingBox], geometry g: GeometricParameters,
                      using rng: inout RandomGenerator) -> AugmentedSample {
        let toSource = outputToSource(g, sourceWidth: image.width, sourceHeight: image.height)
        // Large downscales (4x and more, e.g. 1024 -> 256) first average k x k blocks so the
        // bilinear warp does not alias; 1024 -> 512 is one warp, exactly as in the paper.
        let ratio = min(Double(image.width) / (Double(outputSize) * g.scaleX), Double(image.height) / (Double(outputSize) * g.scaleY))
        let k = ratio.isFinite ? Int(min(max(ratio / 2, 0), 64)) : 1
        var out: FloatImage
        if k >= 2 {
            let kk = Double(k)
            let t = AffineTransform2D(a: toSource.a / kk, b: toSource.b / kk, c: toSource.c / kk, d: toSource.d / kk,
                                      tx: toSource.tx / kk, ty: toSource.ty / kk)
            switch image {
            case let .gray(gray): out = warp(gray.boxDownsampled(k), t)
            case let .float(f): out = warp(f.boxDownsampled(fx: k, fy: k), t)
            }
        } else {
            switch image {
            case let .gray(gray): out = warp(gray, toSource)
            case let .float(f): out = warp(f, toSource)
            }
        }
        let toOutput = toSource.inverse
        let mapped = boxes.map { toOutput.map($0, rule: config.boxRule) }
        photometric(&out, using: &rng)
        return AugmentedSample(image: out, boxes: mapped, geometry: g)
    }

    /// The photometric steps in order: gamma, coarse salt and pepper, blur, noise.
    public func photometric(_ img: inout FloatImage, using rng: inout RandomGenerator) {
        let c = config
        if c.gammaSigma > 0 {
            let gamma = Float(pow(2, Double(rng.normal(std: c.gammaSigma))))
            applyGamma(&img, gamma)
        }
        if c.saltPepperProbability > 0, rng.nextUniform() < c.saltPepperProbability {
            let size = rng.uniform(c.saltPepperSizeMin, max(c.saltPepperSizeMin, c.saltPepperSizeMax))
            coarseSaltAndPepper(&img, amount: c.saltPepperAmount, sizeFraction: size, rng: &rng)
        }
        if c.blurProbability > 0, rng.nextUniform() < c.blurProbability {
            let sigma = rng.uniform(0, c.blurSigmaMax)
            gaussianBlur(&img, sigma: sigma)
        }
        if c.noiseProbability > 0, rng.nextUniform() < c.noiseProbability {
            let scale = rng.uniform(0, c.noiseScaleMax)
            addNoise(&img, scale: scale, rng: &rng)
        }
    }

    // MARK: - Implementation details

    /// Bilinear warp: output pixel centre -> source point -> bilinear sample with zeros
    /// outside the image (skimage's constant mode, cval 0).
    func warp(_ src: GrayImage, _ t: AffineTransform2D) -> FloatImage {
        src.pixels.withUnsafeBufferPointer { warp($0, width: src.width, height: src.height, scale: 1 / 255, t) }
    }

    func warp(_ src: FloatImage, _ t: AffineTransform2D) -> FloatImage {
        src.pixels.withUnsafeBufferPointer { warp($0, width: src.width, height: src.height, scale: 1, t) }
    }

    @inline(__always)
    func warp<P: WarpPixel>(_ sp: UnsafeBufferPointer<P>, width w: Int, height h: Int, scale inv: Float, _ t: AffineTransform2D) -> FloatImage {
        let n = outputSize
        var out = [Float](repeating: 0, count: n * n)
        do {
            out.withUnsafeMutableBufferPointer { op in
                let a = Float(t.a), c = Float(t.c)
                for oy in 0..<n {
                    let yc = Double(oy) + 0.5
                    // Index coordinates (continuous minus 0.5) at the first pixel of the row.
                    var sx = Float(t.a * 0.5 + t.b * yc + t.tx - 0.5)
                    var sy = Float(t.c * 0.5 + t.d * yc + t.ty - 0.5)
                    let row = oy * n
                    let fw = Float(w), fh = Float(h)
                    for ox in 0..<n {
                        // Outside the source (or not finite): the output stays 0, and no
                        // coordinate is converted to an integer it cannot be.
                        guard sx > -2, sy > -2, sx < fw + 1, sy < fh + 1 else {
                            sx += a
                            sy += c
                            continue
                        }
                        let fx = sx.rounded(.down), fy = sy.rounded(.down)
                        let x0 = Int(fx), y0 = Int(fy)
                        let wx = sx - fx, wy = sy - fy
                        if x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h {
                            let i = y0 * w + x0
                            let p00 = sp[i].float, p01 = sp[i + 1].float, p10 = sp[i + w].float, p11 = sp[i + w + 1].float
                            let top = p00 + (p01 - p00) * wx, bot = p10 + (p11 - p10) * wx
                            op[row + ox] = (top + (bot - top) * wy) * inv
                        } else if x0 >= -1 && y0 >= -1 && x0 < w && y0 < h {
                            @inline(__always) func px(_ x: Int, _ y: Int) -> Float {
                                (x >= 0 && y >= 0 && x < w && y < h) ? sp[y * w + x].float : 0
                            }
                            let top = px(x0, y0) + (px(x0 + 1, y0) - px(x0, y0)) * wx
                            let bot = px(x0, y0 + 1) + (px(x0 + 1, y0 + 1) - px(x0, y0 + 1)) * wx
                            op[row + ox] = (top + (bot - top) * wy) * inv
                        }
                        sx += a
                        sy += c
                    }
                }
            }
        }
        return FloatImage(width: n, height: n, pixels: out)
    }

    func applyGamma(_ img: inout FloatImage, _ gamma: Float) {
        // A 4097-entry table with linear interpolation (pow per pixel is slow).
        let size = 4096
        var lut = [Float](repeating: 0, count: size + 2)
        for i in 0...size { lut[i] = powf(Float(i) / Float(size), gamma) }
        lut[size + 1] = 1
        lut.withUnsafeBufferPointer { l in
            img.pixels.withUnsafeMutableBufferPointer { p in
                for i in 0..<p.count {
                    let v = min(max(p[i], 0), 1) * Float(size)
                    let k = Int(v)
                    let f = v - Float(k)
                    p[i] = l[k] + (l[k + 1] - l[k]) * f
                }
            }
        }
    }

    func gaussianBlur(_ img: inout FloatImage, sigma: Float) {
        guard sigma >= 0.1 else { return }
        let r = max(1, Int((3 * sigma).rounded(.up)))
        var k = [Float](repeating: 0, count: 2 * r + 1)
        var sum: Float = 0
        for i in -r...r {
            k[i + r] = expf(-Float(i * i) / (2 * sigma * sigma))
            sum += k[i + r]
        }
        for i in 0..<k.count { k[i] /= sum }
        let w = img.width, h = img.height
        var tmp = [Float](repeating: 0, count: w * h)
        img.pixels.withUnsafeMutableBufferPointer { p in
            tmp.withUnsafeMutableBufferPointer { t in
                k.withUnsafeBufferPointer { kk in
                    // Horizontal pass (edge pixels repeat).
                    for y in 0..<h {
                        let row = y * w
                        for x in 0..<w {
                            var s: Float = 0
                            if x >= r && x + r < w {
                                for j in 0...(2 * r) { s += kk[j] * p[row + x - r + j] }
                            } else {
                                for j in 0...(2 * r) { s += kk[j] * p[row + min(max(x - r + j, 0), w - 1)] }
                            }
                            t[row + x] = s
                        }
                    }
                    // Vertical pass, row-wise accumulation for cache friendliness.
                    for y in 0..<h {
                        let row = y * w
                        for x in 0..<w { p[row + x] = 0 }
                        for j in 0...(2 * r) {
                            let sy = min(max(y - r + j, 0), h - 1) * w
                            let kj = kk[j]
                            for x in 0..<w { p[row + x] += kj * t[sy + x] }
                        }
                    }
                }
            }
        }
    }

    func addNoise(_ img: inout FloatImage, scale: Float, rng: inout RandomGenerator) {
        guard scale > 0 else { return }
        let table = NormalTable.values
        table.withUnsafeBufferPointer { tab in
            img.pixels.withUnsafeMutableBufferPointer { p in
                var i = 0
                while i < p.count {
                    var bits = rng.next()
                    for _ in 0..<4 where i < p.count {
                        let z = tab[Int(bits & 0xFFFF)]
                        bits >>= 16
                        p[i] = min(max(p[i] + scale * z, 0), 1)
                        i += 1
                    }
                }
            }
        }
    }

    func coarseSaltAndPepper(_ img: inout FloatImage, amount: Float, sizeFraction: Float, rng: inout RandomGenerator) {
        let w = img.width, h = img.height
        let gw = max(2, Int((Float(w) * sizeFraction).rounded())), gh = max(2, Int((Float(h) * sizeFraction).rounded()))
        var mask = [Bool](repeating: false, count: gw * gh)
        for i in 0..<mask.count { mask[i] = rng.nextUniform() < amount }
        guard mask.contains(true) else { return }
        for y in 0..<h {
            let my = min(gh - 1, y * gh / h)
            for x in 0..<w {
                let mx = min(gw - 1, x * gw / w)
                if mask[my * gw + mx] {
                    img.pixels[y * w + x] = rng.next() & 1 == 0 ? 0 : 1
                }
            }
        }
    }
}

/// 65,536 standard normal values (fixed seed) for fast per-pixel noise.
enum NormalTable {
    static let values: [Float] = {
        var rng = RandomGenerator(seed: 0x0BAC_17A1)
        return (0..<65_536).map { _ in rng.nextNormal() }
    }()
}

/// A pixel type the warp samples: 8-bit (scaled by 1/255) or `Float` (as is).
protocol WarpPixel {
    var float: Float { get }
}

extension UInt8: WarpPixel {
    @inline(__always) var float: Float { Float(self) }
}

extension Float: WarpPixel {
    @inline(__always) var float: Float { self }
}
