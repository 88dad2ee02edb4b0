import Foundation

/// An 8-bit single-channel image, row-major, top row first (the display and training
/// form of every X-ray in Opacity).
public struct GrayImage: Sendable, Equatable {
    /// Width in pixels.
    public var width: Int
    /// Height in pixels.
    public var height: Int
    /// `width * height` values, row-major; 0 is black.
    public var pixels: [UInt8]

    /// An image with the given pixels.
    /// - Precondition: `pixels.count == width * height`.
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height, "GrayImage: \(pixels.count) pixels do not fill \(width)x\(height)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// An image filled with one value.
    public init(width: Int, height: Int, value: UInt8 = 0) {
        self.init(width: width, height: height, pixels: [UInt8](repeating: value, count: width * height))
    }

    /// The pixel at column `x`, row `y`.
    public subscript(x: Int, y: Int) -> UInt8 {
        get { pixels[y * width + x] }
        set { pixels[y * width + x] = newValue }
    }

    /// The image as floats in `[0, 1]` (value / 255).
    public func toFloat() -> FloatImage {
        var out = [Float](repeating: 0, count: pixels.count)
        let inv: Float = 1 / 255
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<src.count { dst[i] = Float(src[i]) * inv }
            }
        }
        return FloatImage(width: width, height: height, pixels: out)
    }

    /// The image resized to `width` x `height` with bilinear interpolation (pixel centres
    /// aligned; an integer downscale averages neighbouring pixels first, so a 1024 -> 512
    /// resize is a clean 2x2 mean).
    public func resized(width newWidth: Int, height newHeight: Int) -> GrayImage {
        if newWidth == width && newHeight == height { return self }
        return toFloat().resized(width: newWidth, height: newHeight).to8Bit()
    }

    /// The image with each `k x k` block averaged (a partial last block is dropped).
    public func boxDownsampled(_ k: Int) -> GrayImage {
        guard k > 1 else { return self }
        let w = width / k, h = height / k
        var out = [UInt8](repeating: 0, count: w * h)
        var acc = [Int](repeating: 0, count: w)
        let n = k * k
        pixels.withUnsafeBufferPointer { p in
            for oy in 0..<h {
                for i in 0..<w { acc[i] = 0 }
                for dy in 0..<k {
                    let row = (oy * k + dy) * width
                    for ox in 0..<w {
                        var s = 0
                        let base = row + ox * k
                        for dx in 0..<k { s += Int(p[base + dx]) }
                        acc[ox] += s
                    }
                }
                for ox in 0..<w { out[oy * w + ox] = UInt8((acc[ox] + n / 2) / n) }
            }
        }
        return GrayImage(width: w, height: h, pixels: out)
    }

    /// The image as RGB (gray copied to the three channels), e.g. to draw coloured boxes.
    public func toRGB() -> RGBImage {
        var out = [UInt8](repeating: 0, count: pixels.count * 3)
        for i in 0..<pixels.count {
            let v = pixels[i]
            out[3 * i] = v
            out[3 * i + 1] = v
            out[3 * i + 2] = v
        }
        return RGBImage(width: width, height: height, pixels: out)
    }
}

/// A 16-bit single-channel image, row-major (for 16-bit PNGs).
public struct GrayImage16: Sendable, Equatable {
    /// Width in pixels.
    public var width: Int
    /// Height in pixels.
    public var height: Int
    /// `width * height` values, row-major.
    public var pixels: [UInt16]

    /// An image with the given pixels.
    /// - Precondition: `pixels.count == width * height`.
    public init(width: Int, height: Int, pixels: [UInt16]) {
        precondition(pixels.count == width * height, "GrayImage16: \(pixels.count) pixels do not fill \(width)x\(height)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The image scaled to 8 bits (value * 255 / 65535, rounded).
    public func to8Bit() -> GrayImage {
        GrayImage(width: width, height: height, pixels: pixels.map { UInt8((UInt32($0) * 255 + 32767) / 65535) })
    }
}

/// An 8-bit RGB image, row-major, channels interleaved (`R G B R G B ...`); used for
/// overlays (boxes, scores) and previews.
public struct RGBImage: Sendable, Equatable {
    /// Width in pixels.
    public var width: Int
    /// Height in pixels.
    public var height: Int
    /// `width * height * 3` values.
    public var pixels: [UInt8]

    /// An image with the given interleaved pixels.
    /// - Precondition: `pixels.count == width * height * 3`.
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "RGBImage: \(pixels.count) values do not fill \(width)x\(height)x3")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// An image filled with one colour.
    public init(width: Int, height: Int, fill: RGBColor = .black) {
        var p = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            p[3 * i] = fill.r
            p[3 * i + 1] = fill.g
            p[3 * i + 2] = fill.b
        }
        self.init(width: width, height: height, pixels: p)
    }

    /// The luma (ITU-R BT.601 weights) as a gray image.
    public func toGray() -> GrayImage {
        var out = [UInt8](repeating: 0, count: width * height)
        for i in 0..<out.count {
            let r = Int(pixels[3 * i]), g = Int(pixels[3 * i + 1]), b = Int(pixels[3 * i + 2])
            out[i] = UInt8((299 * r + 587 * g + 114 * b + 500) / 1000)
        }
        return GrayImage(width: width, height: height, pixels: out)
    }
}

/// An RGB colour for drawing.
public struct RGBColor: Sendable, Equatable, Hashable {
    /// Red, green and blue, 0...255.
    public var r, g, b: UInt8
    /// A colour from its components.
    public init(r: UInt8, g: UInt8, b: UInt8) {
        self.r = r
        self.g = g
        self.b = b
    }
    /// Pure red, used for ground-truth boxes by convention in previews.
    public static let red = RGBColor(r: 255, g: 40, b: 40)
    /// Green, used for predictions.
    public static let green = RGBColor(r: 40, g: 230, b: 60)
    /// Yellow.
    public static let yellow = RGBColor(r: 255, g: 220, b: 0)
    /// Cyan.
    public static let cyan = RGBColor(r: 0, g: 220, b: 255)
    /// White.
    public static let white = RGBColor(r: 255, g: 255, b: 255)
    /// Black.
    public static let black = RGBColor(r: 0, g: 0, b: 0)
}

/// A single-channel `Float32` image, row-major, values nominally in `[0, 1]`: the form the
/// augmentations work on and the loader copies into `[N, 1, S, S]` tensors.
public struct FloatImage: Sendable, Equatable {
    /// Width in pixels.
    public var width: Int
    /// Height in pixels.
    public var height: Int
    /// `width * height` values, row-major.
    public var pixels: [Float]

    /// An image with the given pixels.
    /// - Precondition: `pixels.count == width * height`.
    public init(width: Int, height: Int, pixels: [Float]) {
        precondition(pixels.count == width * height, "FloatImage: \(pixels.count) pixels do not fill \(width)x\(height)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// An image filled with one value.
    public init(width: Int, height: Int, value: Float = 0) {
        self.init(width: width, height: height, pixels: [Float](repeating: value, count: width * height))
    }

    /// The image clamped to `[0, 1]` and rounded to 8 bits.
    public func to8Bit() -> GrayImage {
        var out = [UInt8](repeating: 0, count: pixels.count)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<src.count {
                    let v = min(max(src[i], 0), 1) * 255 + 0.5
                    dst[i] = UInt8(v)
                }
            }
        }
        return GrayImage(width: width, height: height, pixels: out)
    }

    /// The image resized with bilinear interpolation, pixel centres aligned. Integer
    /// downscale factors are first box-averaged so no source pixel is skipped.
    public func resized(width newWidth: Int, height newHeight: Int) -> FloatImage {
        precondition(newWidth > 0 && newHeight > 0, "resized: size must be positive")
        var src = self
        // Box-average integer factors first (anti-aliasing for large downscales).
        let fx = max(1, width / newWidth), fy = max(1, height / newHeight)
        if fx > 1 || fy > 1 { src = src.boxDownsampled(fx: fx, fy: fy) }
        if src.width == newWidth && src.height == newHeight { return src }
        var out = [Float](repeating: 0, count: newWidth * newHeight)
        let sx = Float(src.width) / Float(newWidth), sy = Float(src.height) / Float(newHeight)
        src.pixels.withUnsafeBufferPointer { p in
            for oy in 0..<newHeight {
                let y = (Float(oy) + 0.5) * sy - 0.5
                let y0f = y.rounded(.down)
                let wy = y - y0f
                let y0 = min(max(Int(y0f), 0), src.height - 1), y1 = min(max(Int(y0f) + 1, 0), src.height - 1)
                for ox in 0..<newWidth {
                    let x = (Float(ox) + 0.5) * sx - 0.5
                    let x0f = x.rounded(.down)
                    let wx = x - x0f
                    let x0 = min(max(Int(x0f), 0), src.width - 1), x1 = min(max(Int(x0f) + 1, 0), src.width - 1)
                    let a = p[y0 * src.width + x0], b = p[y0 * src.width + x1]
                    let c = p[y1 * src.width + x0], d = p[y1 * src.width + x1]
                    let top = a + (b - a) * wx, bottom = c + (d - c) * wx
                    out[oy * newWidth + ox] = top + (bottom - top) * wy
                }
            }
        }
        return FloatImage(width: newWidth, height: newHeight, pixels: out)
    }

    /// Averages `fx` x `fy` blocks (dropping a partial last block).
    func boxDownsampled(fx: Int, fy: Int) -> FloatImage {
        let w = width / fx, h = height / fy
        var out = [Float](repeating: 0, count: w * h)
        let inv = 1 / Float(fx * fy)
        for oy in 0..<h {
            for ox in 0..<w {
                var s: Float = 0
                for dy in 0..<fy {
                    let row = (oy * fy + dy) * width + ox * fx
                    for dx in 0..<fx { s += pixels[row + dx] }
                }
                out[oy * w + ox] = s * inv
            }
        }
        return FloatImage(width: w, height: h, pixels: out)
    }
}

/// A decoded image as it enters the model: 8-bit sources stay exact 8-bit values, deeper
/// sources (12- to 16-bit DICOM after rescale and window, 16-bit PNG) are `Float` in
/// `[0, 1]`, with no 8-bit step in between.
public enum SourceImage: Sendable, Equatable {
    /// 8-bit gray (RSNA JPEG Baseline DICOM, 8-bit PNG, JPEG); model value = pixel / 255.
    case gray(GrayImage)
    /// Full-depth gray in `[0, 1]`.
    case float(FloatImage)

    /// Width in pixels.
    public var width: Int {
        switch self {
        case let .gray(g): return g.width
        case let .float(f): return f.width
        }
    }

    /// Height in pixels.
    public var height: Int {
        switch self {
        case let .gray(g): return g.height
        case let .float(f): return f.height
        }
    }

    /// The model's view: values in `[0, 1]`.
    public var floatImage: FloatImage {
        switch self {
        case let .gray(g): return g.toFloat()
        case let .float(f): return f
        }
    }

    /// An 8-bit rendering for display (overlays, previews, 8-bit PNG).
    public var gray: GrayImage {
        switch self {
        case let .gray(g): return g
        case let .float(f): return f.to8Bit()
        }
    }

    /// A 16-bit rendering (value * 65535, rounded) for 16-bit PNG.
    public var gray16: GrayImage16 {
        switch self {
        case let .gray(g): return GrayImage16(width: g.width, height: g.height, pixels: g.pixels.map { UInt16($0) * 257 })
        case let .float(f):
            return GrayImage16(width: f.width, height: f.height, pixels: f.pixels.map { UInt16(min(max($0, 0), 1) * 65535 + 0.5) })
        }
    }
}
