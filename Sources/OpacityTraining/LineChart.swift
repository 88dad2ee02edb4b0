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
        /// Draw a small square at each point (when there are at most 60).
        public var markPoints = true

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
    /// Draw x on a base-2 logarithmic axis (e.g. false positives per image); points with
    /// `x <= 0` are left out.
    public var logX = false
    /// Fixed y range (e.g. `0...1` for precision and recall); `nil` fits the data.
    public var yRange: ClosedRange<Double>?
    /// Fixed x range in data units (before the log); `nil` fits the data.
    public var xRange: ClosedRange<Double>?

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
    /// With `integer`, steps are whole numbers (at least 1), for epochs.
    static func ticks(_ lo: Double, _ hi: Double, count: Int = 6, integer: Bool = false) -> [Double] {
        let span = max(hi - lo, 1e-12)
        let raw = span / Double(count)
        let mag = pow(10, floor(log10(raw)))
        var step = [1.0, 2.0, 5.0, 10.0].map { $0 * mag }.first { $0 >= raw } ?? 10 * mag
        if integer { step = max(1, step.rounded(.up)) }
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

    /// Where everything goes, shared by the PNG and the SVG renderer.
    ///
    /// The title has the top line to itself and the y-axis label the line under it, so they
    /// never overlap; the x label sits under the tick labels. The legend goes into the corner
    /// of the plot that covers the fewest drawn points, or to the right of the plot when every
    /// corner would cover data. Integer-valued x data (epochs) get integer ticks.
    struct Layout {
        var left = 90, right = 0, top = 76, bottom = 0
        var x0 = 0.0, x1 = 1.0, y0 = 0.0, y1 = 1.0
        var logX = false
        var xTicks: [Double] = [], yTicks: [Double] = []
        var legend: (x: Int, y: Int, width: Int, height: Int)?
        func px(_ x: Double) -> Double {
            let v = logX ? log2(x) : x
            return Double(left) + (v - x0) / (x1 - x0) * Double(right - left)
        }
        func py(_ y: Double) -> Double { Double(bottom) - (y - y0) / (y1 - y0) * Double(bottom - top) }
        /// Whether a data point lies inside the plot area.
        func inside(_ x: Double, _ y: Double) -> Bool {
            let (a, b) = (px(x), py(y))
            return a >= Double(left) - 0.5 && a <= Double(right) + 0.5 && b >= Double(top) - 0.5 && b <= Double(bottom) + 0.5
        }
    }

    static let legendRow = 22
    /// Side in pixels of the square that shows a series of a single point.
    public static let lonePoint = 11

    /// Where the legend goes in the rendered image, as `(x, y, width, height)` pixels; `nil`
    /// without named series. It never covers a drawn point.
    public var legendFrame: (x: Int, y: Int, width: Int, height: Int)? { layout().legend }
    /// The plot area as `(left, top, right, bottom)` pixels.
    public var plotFrame: (left: Int, top: Int, right: Int, bottom: Int) { let l = layout(); return (l.left, l.top, l.right, l.bottom) }
    /// Where a data point `(x, y)` is drawn in the rendered image, in pixels (it may lie
    /// outside the plot area).
    public func pixel(_ x: Double, _ y: Double) -> (x: Double, y: Double) { let l = layout(); return (l.px(x), l.py(y)) }
    /// The x tick values (data units).
    public var xTickValues: [Double] { layout().xTicks }

    func layout() -> Layout {
        var l = Layout()
        l.logX = logX
        l.right = width - 24
        l.bottom = height - 74
        func visible(_ x: Double) -> Bool { !logX || x > 0 }
        var xs: [Double] = [], ys: [Double] = []
        for s in series {
            for p in s.points where visible(p.x) { xs.append(logX ? log2(p.x) : p.x); ys.append(p.y) }
            if let b = s.band { ys += b.filter { visible($0.x) }.flatMap { [$0.low, $0.high] } }
        }
        ys = ys.filter(\.isFinite)
        xs = xs.filter(\.isFinite)
        var x0 = xs.min() ?? 0, x1 = xs.max() ?? 1
        var y0 = ys.min() ?? 0, y1 = ys.max() ?? 1
        if let r = xRange { x0 = logX ? log2(max(r.lowerBound, 1e-12)) : r.lowerBound; x1 = logX ? log2(max(r.upperBound, 1e-12)) : r.upperBound }
        if x1 - x0 < 1e-12 { x0 -= 0.5; x1 += 0.5 }
        if let r = yRange { y0 = r.lowerBound; y1 = r.upperBound } else {
            if y1 - y0 < 1e-12 { y0 -= 0.5; y1 += 0.5 }
            let pad = (y1 - y0) * 0.06
            y0 -= pad; y1 += pad
        }
        (l.x0, l.x1, l.y0, l.y1) = (x0, x1, y0, y1)
        let integerX = !logX && !xs.isEmpty && xs.allSatisfy { $0 == $0.rounded() }
        if logX {
            l.xTicks = Array(Int(ceil(x0 - 1e-9))...Int(floor(x1 + 1e-9))).map { pow(2, Double($0)) }
        } else {
            l.xTicks = Self.ticks(x0, x1, count: 8, integer: integerX)
        }
        l.yTicks = Self.ticks(y0, y1)
        // legend: size, then the emptiest corner, else outside on the right
        let named = series.filter { !$0.name.isEmpty }
        guard !named.isEmpty else { return l }
        let lw = (named.map { RGBImage.textWidth($0.name, scale: 2) }.max() ?? 0) + 46
        let lh = named.count * Self.legendRow + 10
        // what the legend would cover, exactly: every line segment (clipped against the box,
        // not sampled: a long segment of a few-epoch run crossed a box between samples), each
        // point's marker, and every pixel column of a band
        var segments: [(Double, Double, Double, Double)] = []
        var bands: [(Double, Double, Double, Double, Double, Double)] = []  // xa, loA, hiA, xb, loB, hiB (pixels)
        for s in series {
            let pts = s.points.filter { visible($0.x) && $0.y.isFinite }
            for i in pts.indices {
                let (x, y) = (l.px(pts[i].x), l.py(pts[i].y))
                segments.append((x, y, x, y))
                if i + 1 < pts.count { segments.append((x, y, l.px(pts[i + 1].x), l.py(pts[i + 1].y))) }
            }
            if let b = s.band?.filter({ visible($0.x) }), b.count >= 2 {
                for (p, q) in zip(b, b.dropFirst()) {
                    bands.append((l.px(p.x), l.py(p.low), l.py(p.high), l.px(q.x), l.py(q.low), l.py(q.high)))
                }
            }
        }
        let corners = [(l.right - lw - 8, l.top + 8), (l.left + 12, l.top + 8), (l.right - lw - 8, l.bottom - lh - 8), (l.left + 12, l.bottom - lh - 8)]
        let counts = corners.map { c -> Int in
            // the box with a margin for line width and point markers
            let (bx0, by0, bx1, by1) = (Double(c.0 - 6), Double(c.1 - 6), Double(c.0 + lw + 6), Double(c.1 + lh + 6))
            var n = segments.filter { Self.segment($0, meets: (bx0, by0, bx1, by1)) }.count
            for (xa, loA, hiA, xb, loB, hiB) in bands where xb > xa {
                let from = max(bx0, xa), to = min(bx1, xb)
                guard from <= to else { continue }
                for x in stride(from: from, through: to, by: 1) {
                    let f = (x - xa) / (xb - xa)
                    let lo = loA + (loB - loA) * f, hi = hiA + (hiB - hiA) * f
                    if min(lo, hi) <= by1 && max(lo, hi) >= by0 { n += 1 }
                }
            }
            return n
        }
        let best = counts.indices.min { counts[$0] < counts[$1] }!
        if counts[best] == 0 {
            l.legend = (corners[best].0, corners[best].1, lw, lh)
        } else {
            // outside: shrink the plot and put the legend in the right margin
            l.right = width - lw - 24
            l.legend = (l.right + 14, l.top, lw, lh)
        }
        return l
    }

    /// Whether the segment `(xa, ya, xb, yb)` meets the box `(x0, y0, x1, y1)` (Liang-Barsky
    /// clipping; a segment of zero length is a point).
    static func segment(_ s: (Double, Double, Double, Double), meets box: (Double, Double, Double, Double)) -> Bool {
        let (xa, ya, xb, yb) = s, (x0, y0, x1, y1) = box
        let dx = xb - xa, dy = yb - ya
        var t0 = 0.0, t1 = 1.0
        for (p, q) in [(-dx, xa - x0), (dx, x1 - xa), (-dy, ya - y0), (dy, y1 - ya)] {
            if p == 0 {
                if q < 0 { return false }
            } else {
                let r = q / p
                if p < 0 { t0 = max(t0, r) } else { t1 = min(t1, r) }
                if t0 > t1 { return false }
            }
        }
        return true
    }

    /// Draws the chart as an RGB image (`width x height` pixels).
    public func render() -> RGBImage {
        var img = RGBImage(width: width, height: height, fill: .white)
        let l = layout()
        let (left, right, top, bottom) = (l.left, l.right, l.top, l.bottom)
        let grid = RGBColor(r: 225, g: 225, b: 225), ink = RGBColor(r: 40, g: 40, b: 40)
        for t in l.yTicks {
            let y = Int(l.py(t).rounded())
            img.fillRect(x: left, y: y, width: right - left, height: 1, grid)
            let s = Self.label(t)
            img.drawText(s, x: left - 10 - RGBImage.textWidth(s, scale: 2), y: y - 7, color: ink, scale: 2)
        }
        for t in l.xTicks {
            let x = Int(l.px(t).rounded())
            img.fillRect(x: x, y: top, width: 1, height: bottom - top, grid)
            let s = Self.label(t)
            img.drawText(s, x: x - RGBImage.textWidth(s, scale: 2) / 2, y: bottom + 10, color: ink, scale: 2)
        }
        img.fillRect(x: left, y: top, width: 2, height: bottom - top + 1, ink)
        img.fillRect(x: left, y: bottom, width: right - left, height: 2, ink)
        img.drawText(title, x: max(4, (width - RGBImage.textWidth(title, scale: 3)) / 2), y: 10, color: ink, scale: 3)
        img.drawText(xLabel, x: (left + right - RGBImage.textWidth(xLabel, scale: 2)) / 2, y: height - 34, color: ink, scale: 2)
        img.drawText(yLabel, x: 12, y: top - 28, color: ink, scale: 2)
        func visible(_ x: Double) -> Bool { !logX || x > 0 }
        // bands first, then lines
        for s in series {
            guard let band = s.band?.filter({ visible($0.x) }), band.count >= 2 else { continue }
            for i in 0..<(band.count - 1) {
                let a = band[i], b = band[i + 1]
                let xa = Int(l.px(a.x)), xb = Int(l.px(b.x))
                guard xb > xa else { continue }
                for x in max(xa, left)...max(min(xb, right), max(xa, left)) where x <= right && x >= left {
                    let f = Double(x - xa) / Double(xb - xa)
                    let lo = a.low + (b.low - a.low) * f, hi = a.high + (b.high - a.high) * f
                    let ya = Int(l.py(hi)), yb = Int(l.py(lo))
                    let y0 = max(top, min(ya, yb)), y1 = min(bottom, max(ya, yb))
                    if y0 <= y1 { for y in y0...y1 { Self.blend(&img, x, y, s.color, 0.22) } }
                }
            }
        }
        for s in series {
            let pts = s.points.filter { visible($0.x) }
            for i in 0..<max(0, pts.count - 1) {
                let a = pts[i], b = pts[i + 1]
                guard a.y.isFinite, b.y.isFinite else { continue }
                Self.line(&img, l.px(a.x), l.py(a.y), l.px(b.x), l.py(b.y), s.color, dashed: s.dashed, clip: (left, top, right, bottom))
            }
            if s.markPoints && pts.count <= 60 {
                for p in pts where p.y.isFinite && l.inside(p.x, p.y) { img.fillRect(x: Int(l.px(p.x)) - 2, y: Int(l.py(p.y)) - 2, width: 5, height: 5, s.color) }
            }
            // a series of one point has no line to show it: a square the legend's line is as tall as
            let finite = pts.filter { $0.y.isFinite && l.inside($0.x, $0.y) }
            if finite.count == 1, let p = finite.first {
                img.fillRect(x: Int(l.px(p.x)) - Self.lonePoint / 2, y: Int(l.py(p.y)) - Self.lonePoint / 2, width: Self.lonePoint, height: Self.lonePoint, s.color)
            }
        }
        for m in markers where visible(m.x) && l.inside(m.x, m.y) {
            img.fillRect(x: Int(l.px(m.x)) - 5, y: Int(l.py(m.y)) - 5, width: 11, height: 11, m.color)
        }
        if let g = l.legend {
            img.fillRect(x: g.x - 1, y: g.y - 1, width: g.width + 2, height: g.height + 2, RGBColor(r: 200, g: 200, b: 200))
            img.fillRect(x: g.x, y: g.y, width: g.width, height: g.height, .white)
            var ly = g.y + 8
            for s in series where !s.name.isEmpty {
                img.fillRect(x: g.x + 8, y: ly + 5, width: 24, height: 4, s.color)
                img.drawText(s.name, x: g.x + 38, y: ly, color: ink, scale: 2)
                ly += Self.legendRow
            }
        }
        return img
    }

    /// The same chart as an SVG document (vector lines, real text), same size and layout.
    public func renderSVG() -> String {
        let l = layout()
        let (left, right, top, bottom) = (l.left, l.right, l.top, l.bottom)
        func hex(_ c: RGBColor) -> String { String(format: "#%02x%02x%02x", c.r, c.g, c.b) }
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        func visible(_ x: Double) -> Bool { !logX || x > 0 }
        var o = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
        o += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        for t in l.yTicks {
            let y = f(l.py(t))
            o += "<line x1=\"\(left)\" y1=\"\(y)\" x2=\"\(right)\" y2=\"\(y)\" stroke=\"#e1e1e1\"/>"
            o += "<text x=\"\(left - 10)\" y=\"\(y)\" font-size=\"15\" text-anchor=\"end\" dominant-baseline=\"middle\" fill=\"#282828\">\(Self.label(t))</text>\n"
        }
        for t in l.xTicks {
            let x = f(l.px(t))
            o += "<line x1=\"\(x)\" y1=\"\(top)\" x2=\"\(x)\" y2=\"\(bottom)\" stroke=\"#e1e1e1\"/>"
            o += "<text x=\"\(x)\" y=\"\(bottom + 24)\" font-size=\"15\" text-anchor=\"middle\" fill=\"#282828\">\(Self.label(t))</text>\n"
        }
        o += "<path d=\"M\(left) \(top) V\(bottom) H\(right)\" stroke=\"#282828\" stroke-width=\"2\" fill=\"none\"/>\n"
        o += "<text x=\"\(width / 2)\" y=\"32\" font-size=\"22\" text-anchor=\"middle\" fill=\"#282828\">\(esc(title))</text>\n"
        o += "<text x=\"12\" y=\"\(top - 14)\" font-size=\"16\" fill=\"#282828\">\(esc(yLabel))</text>\n"
        o += "<text x=\"\((left + right) / 2)\" y=\"\(height - 22)\" font-size=\"16\" text-anchor=\"middle\" fill=\"#282828\">\(esc(xLabel))</text>\n"
        o += "<defs><clipPath id=\"plot\"><rect x=\"\(left)\" y=\"\(top)\" width=\"\(right - left)\" height=\"\(bottom - top)\"/></clipPath></defs>\n<g clip-path=\"url(#plot)\">\n"
        for s in series {
            guard let band = s.band?.filter({ visible($0.x) }), band.count >= 2 else { continue }
            var corners: [String] = band.map { p in f(l.px(p.x)) + "," + f(l.py(p.high)) }
            corners += band.reversed().map { p in f(l.px(p.x)) + "," + f(l.py(p.low)) }
            let pointList = corners.joined(separator: " ")
            o += "<polygon points=\"\(pointList)\" fill=\"\(hex(s.color))\" fill-opacity=\"0.22\"/>\n"
        }
        for s in series {
            let pts = s.points.filter { visible($0.x) && $0.y.isFinite }
            guard !pts.isEmpty else { continue }
            let d = pts.enumerated().map { ($0.offset == 0 ? "M" : "L") + "\(f(l.px($0.element.x))) \(f(l.py($0.element.y)))" }.joined(separator: " ")
            o += "<path d=\"\(d)\" stroke=\"\(hex(s.color))\" stroke-width=\"2.5\" fill=\"none\"" + (s.dashed ? " stroke-dasharray=\"6 6\"" : "") + "/>\n"
            if s.markPoints && pts.count <= 60 {
                for p in pts where l.inside(p.x, p.y) { o += "<rect x=\"\(f(l.px(p.x) - 2.5))\" y=\"\(f(l.py(p.y) - 2.5))\" width=\"5\" height=\"5\" fill=\"\(hex(s.color))\"/>" }
                o += "\n"
            }
            let inside = pts.filter { l.inside($0.x, $0.y) }
            if inside.count == 1, let p = inside.first {
                let h = Double(Self.lonePoint) / 2
                o += "<rect x=\"\(f(l.px(p.x) - h))\" y=\"\(f(l.py(p.y) - h))\" width=\"\(Self.lonePoint)\" height=\"\(Self.lonePoint)\" fill=\"\(hex(s.color))\"/>\n"
            }
        }
        for m in markers where visible(m.x) && l.inside(m.x, m.y) {
            o += "<rect x=\"\(f(l.px(m.x) - 5.5))\" y=\"\(f(l.py(m.y) - 5.5))\" width=\"11\" height=\"11\" fill=\"\(hex(m.color))\"/>\n"
        }
        o += "</g>\n"
        if let g = l.legend {
            o += "<rect x=\"\(g.x)\" y=\"\(g.y)\" width=\"\(g.width)\" height=\"\(g.height)\" fill=\"white\" stroke=\"#c8c8c8\"/>\n"
            var ly = g.y + 8
            for s in series where !s.name.isEmpty {
                o += "<rect x=\"\(g.x + 8)\" y=\"\(ly + 5)\" width=\"24\" height=\"4\" fill=\"\(hex(s.color))\"/>"
                o += "<text x=\"\(g.x + 38)\" y=\"\(ly + 12)\" font-size=\"15\" fill=\"#282828\">\(esc(s.name))</text>\n"
                ly += Self.legendRow
            }
        }
        return o + "</svg>\n"
    }

    /// Writes the PNG to `url` and the SVG beside it (same name, `.svg`), making the folder.
    /// - Throws: the PNG writer's error or the file system's.
    public func write(png url: URL) throws {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try PNG.write(render(), to: url)
        try Data(renderSVG().utf8).write(to: url.deletingPathExtension().appendingPathExtension("svg"), options: .atomic)
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
        let ys = max(minY, clip.1), ye = min(maxY, clip.3), xs = max(minX, clip.0), xe = min(maxX, clip.2)
        guard ys <= ye, xs <= xe else { return }  // wholly outside the plot
        for y in ys...ye {
            for x in xs...xe {
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
