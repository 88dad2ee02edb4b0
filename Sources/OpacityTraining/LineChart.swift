import Foundation
import OpacityCore
import OpacityData

/// A line chart rendered to an RGB image: axes with ticks, a legend, optional bands
/// (mean +- spread) drawn under their lines. Used for loss curves, the metric against the
/// score threshold, and the encoder comparison.
public struct LineChart {
    /// One line, with an optional band.
    public struct Series {
        public var name: String
        public var points: [(x: Double, y: Double)]
        /// `(x, low, high)` per point, drawn as a translucent band.
        public var band: [(x: Double, low: Double, high: Double)]?
        public var color: RGBColor
        public var dashed: Bool

        public init(name: String, points: [(x: Double, y: Double)], band: [(x: Double, low: Double, high: Double)]? = nil,
                    color: RGBColor, dashed: Bool = false) {
            self.name = name
            self.points = points
            self.band = band
            self.color = color
            self.dashed = dashed
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    public var width = 960
    public var height = 600
    /// Extra points to mark (e.g. the best threshold), drawn as small squares.
    public var markers: [(x: Double, y: Double, color: RGBColor)] = []

    public init(title: String, xLabel: String, yLabel: String, series: [Series]) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
    }

    /// A palette of distinguishable colours.
    public static let palette: [RGBColor] = [
        RGBColor(r: 31, g: 119, b: 180), RGBColor(r: 255, g: 127, b: 14), RGBColor(r: 44, g: 160, b: 44),
        RGBColor(r: 214, g: 39, b: 40), RGBColor(r: 148, g: 103, b: 189), RGBColor(r: 140, g: 86, b: 75),
        RGBColor(r: 227, g: 119, b: 194), RGBColor(r: 127, g: 127, b: 127), RGBColor(r: 188, g: 189, b: 34),
        RGBColor(r: 23, g: 190, b: 207),
    ]

    /// Tick positions covering `lo...hi` with about `count` steps of 1, 2 or 5 x 10^k.
    static func ticks(_ lo: Double, _ hi: Double, count: Int = 6) -> [Double] {
        let span = max(hi - lo, 1e-12)
        let raw = span / Double(count)
        let mag = pow(10, floor(log10(raw)))
        let step = [1.0, 2.0, 5.0, 10.0].map { $0 * mag }.first { $0 >= raw } ?? 10 * mag
        var t = ceil(lo / step) * step
        var out: [Double] = []
        while t <= hi + step * 1e-9 { out.append(abs(t) < step * 1e-9 ? 0 : t); t += step }
        return out
    }

    static func label(_ v: Double) -> String {
        if v == 0 { return "0" }
        if abs(v) >= 1000 || abs(v) < 0.001 { return String(format: "%.1e", v) }
        var s = String(format: "%.4f", v)
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
        return s
    }

    /// Draws the chart.
    public func render() -> RGBImage {
        var img = RGBImage(width: width, height: height, fill: .white)
        let left = 90, right = width - 24, top = 48, bottom = height - 70
        var xs: [Double] = [], ys: [Double] = []
        for s in series {
            xs += s.points.map(\.x); ys += s.points.map(\.y)
            if let b = s.band { ys += b.map(\.low) + b.map(\.high) }
        }
        ys = ys.filter(\.isFinite)
        var x0 = xs.min() ?? 0, x1 = xs.max() ?? 1
        var y0 = ys.min() ?? 0, y1 = ys.max() ?? 1
        if x1 - x0 < 1e-12 { x0 -= 0.5; x1 += 0.5 }
        if y1 - y0 < 1e-12 { y0 -= 0.5; y1 += 0.5 }
        let pad = (y1 - y0) * 0.06
        y0 -= pad; y1 += pad
        func px(_ x: Double) -> Double { Double(left) + (x - x0) / (x1 - x0) * Double(right - left) }
        func py(_ y: Double) -> Double { Double(bottom) - (y - y0) / (y1 - y0) * Double(bottom - top) }
        let grid = RGBColor(r: 225, g: 225, b: 225), ink = RGBColor(r: 40, g: 40, b: 40)
        for t in Self.ticks(y0, y1) {
            let y = Int(py(t).rounded())
            img.fillRect(x: left, y: y, width: right - left, height: 1, grid)
            let l = Self.label(t)
            img.drawText(l, x: left - 10 - RGBImage.textWidth(l, scale: 2), y: y - 7, color: ink, scale: 2)
        }
        for t in Self.ticks(x0, x1, count: 8) {
            let x = Int(px(t).rounded())
            img.fillRect(x: x, y: top, width: 1, height: bottom - top, grid)
            let l = Self.label(t)
            img.drawText(l, x: x - RGBImage.textWidth(l, scale: 2) / 2, y: bottom + 8, color: ink, scale: 2)
        }
        img.fillRect(x: left, y: top, width: 2, height: bottom - top + 1, ink)
        img.fillRect(x: left, y: bottom, width: right - left, height: 2, ink)
        img.drawText(title, x: (width - RGBImage.textWidth(title, scale: 2)) / 2, y: 14, color: ink, scale: 2)
        img.drawText(xLabel, x: (left + right - RGBImage.textWidth(xLabel, scale: 2)) / 2, y: height - 34, color: ink, scale: 2)
        img.drawText(yLabel, x: 8, y: top - 30, color: ink, scale: 2)
        // bands first, then lines
        for s in series {
            guard let band = s.band, band.count >= 2 else { continue }
            for i in 0..<(band.count - 1) {
                let a = band[i], b = band[i + 1]
                let xa = Int(px(a.x)), xb = Int(px(b.x))
                guard xb > xa else { continue }
                for x in xa...xb {
                    let f = Double(x - xa) / Double(xb - xa)
                    let lo = a.low + (b.low - a.low) * f, hi = a.high + (b.high - a.high) * f
                    let ya = Int(py(hi)), yb = Int(py(lo))
                    for y in max(top, ya)...min(bottom, max(ya, yb)) { Self.blend(&img, x, y, s.color, 0.22) }
                }
            }
        }
        for s in series {
            for i in 0..<max(0, s.points.count - 1) {
                let a = s.points[i], b = s.points[i + 1]
                guard a.y.isFinite, b.y.isFinite else { continue }
                Self.line(&img, px(a.x), py(a.y), px(b.x), py(b.y), s.color, dashed: s.dashed, clip: (left, top, right, bottom))
            }
            for p in s.points where p.y.isFinite {
                let cx = Int(px(p.x)), cy = Int(py(p.y))
                if s.points.count <= 60 { img.fillRect(x: cx - 2, y: cy - 2, width: 5, height: 5, s.color) }
            }
        }
        for m in markers {
            img.fillRect(x: Int(px(m.x)) - 5, y: Int(py(m.y)) - 5, width: 11, height: 11, m.color)
        }
        // legend
        var ly = top + 8
        let lx = right - 12 - (series.map { RGBImage.textWidth($0.name, scale: 2) }.max() ?? 0) - 34
        for s in series {
            img.fillRect(x: lx, y: ly + 6, width: 24, height: 3, s.color)
            img.drawText(s.name, x: lx + 30, y: ly, color: ink, scale: 2, background: .white)
            ly += 22
        }
        return img
    }

    static func blend(_ img: inout RGBImage, _ x: Int, _ y: Int, _ c: RGBColor, _ a: Double) {
        guard x >= 0, y >= 0, x < img.width, y < img.height else { return }
        let i = (y * img.width + x) * 3
        img.pixels[i] = UInt8(Double(img.pixels[i]) * (1 - a) + Double(c.r) * a)
        img.pixels[i + 1] = UInt8(Double(img.pixels[i + 1]) * (1 - a) + Double(c.g) * a)
        img.pixels[i + 2] = UInt8(Double(img.pixels[i + 2]) * (1 - a) + Double(c.b) * a)
    }

    /// An anti-aliased line about 2.5 px wide (distance-based coverage).
    static func line(_ img: inout RGBImage, _ xa: Double, _ ya: Double, _ xb: Double, _ yb: Double, _ c: RGBColor,
                     dashed: Bool, clip: (Int, Int, Int, Int)) {
        let half = 1.3
        let minX = Int(floor(min(xa, xb) - 2)), maxX = Int(ceil(max(xa, xb) + 2))
        let minY = Int(floor(min(ya, yb) - 2)), maxY = Int(ceil(max(ya, yb) + 2))
        let dx = xb - xa, dy = yb - ya
        let len2 = max(dx * dx + dy * dy, 1e-9)
        for y in max(minY, clip.1)...min(maxY, clip.3) {
            for x in max(minX, clip.0)...min(maxX, clip.2) {
                let t = max(0, min(1, ((Double(x) - xa) * dx + (Double(y) - ya) * dy) / len2))
                if dashed && Int((t * len2.squareRoot()) / 6) % 2 == 1 { continue }
                let ex = xa + t * dx - Double(x), ey = ya + t * dy - Double(y)
                let d = (ex * ex + ey * ey).squareRoot()
                let cov = max(0, min(1, half + 0.5 - d))
                if cov > 0 { blend(&img, x, y, c, cov) }
            }
        }
    }
}
