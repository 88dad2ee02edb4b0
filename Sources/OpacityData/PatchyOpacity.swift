import Foundation
import OpacityCore
import OpacityTensor

/// How the synthetic generator draws the opacities of "Lung Opacity" images.
public enum SyntheticOpacityStyle: String, Sendable, CaseIterable, Equatable {
    /// The original style: each box filled by a smooth, sharp-edged oval of a few Gaussian
    /// lobes with a plane-wave texture (what the `retinanet-r34-composite` zoo entry saw).
    case ovals
    /// Airspace consolidation as a radiologist sees it: patchy clusters of blurred blobs
    /// with ill-defined, irregular margins, mostly in the lower and peripheral lung, often
    /// both lungs, sometimes with air bronchograms; the density adds to the film (ribs and
    /// vessels stay visible through it). Boxes are drawn around each contiguous visible
    /// region afterwards, the way the RSNA readers boxed.
    case patchy
}

/// Smooth value noise on a square lattice (cells of `cell` pixels), for patchy texture and
/// irregular margins. Deterministic from the generator that made it.
struct ValueNoise {
    let side: Int
    let cell: Float
    var values: [Float]

    /// A lattice covering an `extent`-pixel square with cells of `cell` pixels.
    init(extent: Int, cell: Float, rng: inout RandomGenerator) {
        self.cell = max(1, cell)
        side = Int(Float(extent) / self.cell) + 3
        values = (0..<(side * side)).map { _ in rng.nextUniform() }
    }

    /// Value in `[0, 1]` at pixel `(x, y)` (bilinear with a smoothstep ease).
    @inline(__always)
    func sample(_ x: Float, _ y: Float) -> Float {
        let u = max(0, x / cell), v = max(0, y / cell)
        let i = min(Int(u), side - 2), j = min(Int(v), side - 2)
        var fu = min(1, u - Float(i)), fv = min(1, v - Float(j))
        fu = fu * fu * (3 - 2 * fu)
        fv = fv * fv * (3 - 2 * fv)
        let a = values[j * side + i], b = values[j * side + i + 1]
        let c = values[(j + 1) * side + i], d = values[(j + 1) * side + i + 1]
        return (a + (b - a) * fu) + ((c + (d - c) * fu) - (a + (b - a) * fu)) * fv
    }
}

extension SyntheticChestXRay {
    /// The level of the normalised opacity envelope (0...1) above which an opacity counts as
    /// visible and is boxed.
    static let patchyVisibleLevel: Float = 0.3

    /// Draws patchy consolidations onto `p` (values in [0, 1], `size x size`) and returns one
    /// box per contiguous visible region, every region inside a lung field.
    ///
    /// The regions: a box count from ``SyntheticConfig/boxCountWeights`` (two: one per lung),
    /// each a cluster of 8-17 Gaussian blobs around a centre drawn with a lower-zone and
    /// peripheral preference, of the RSNA box sizes; the union is roughened by low-frequency
    /// noise (irregular, ill-defined margins), confined to the lungs, and textured by
    /// two-octave noise (patchy airspace filling). Dense regions get air bronchograms with
    /// probability ``SyntheticConfig/airBronchogramRate``: tapering, branching lucent tubes
    /// from the hilar side. The density is added to the film (`p += a * (1 - 0.6 p)`), so
    /// ribs and vessels stay visible through partial opacities.
    func drawPatchyOpacities(_ p: inout [Float], lungs: [LungRegion], rng: inout RandomGenerator) -> [BoundingBox] {
        let n = config.size
        let s = Float(n)
        // a draw whose regions are all specks (rare) is drawn again, so that every
        // "Lung Opacity" image has a box
        var field = patchyField(lungs: lungs, rng: &rng)
        for _ in 0..<20 where field.regions.isEmpty { field = patchyField(lungs: lungs, rng: &rng) }
        let (envelope, amplitude, bronchi, regions) = field
        let scale = s / 1024
        let fine = ValueNoise(extent: n, cell: 14 * scale, rng: &rng)
        let finer = ValueNoise(extent: n, cell: 6 * scale, rng: &rng)
        for i in 0..<(n * n) where envelope[i] > 0.02 {
            let fx = Float(i % n) + 0.5, fy = Float(i / n) + 0.5
            let texture = 0.35 + 0.45 * fine.sample(fx, fy) + 0.2 * finer.sample(fx, fy)
            let core = smoothstep(0.25, 0.7, envelope[i])
            let a = amplitude[i] * envelope[i] * texture * (1 - 0.7 * bronchi[i] * core)
            p[i] += a * (1 - 0.6 * min(1, max(0, p[i])))
        }
        return mergeOverlapping(regions.map(\.box))
    }

    /// The opacity fields of one draw: the normalised envelope (0...1, confined to the
    /// lungs, specks lowered below the visible level), the peak amplitude per pixel, the
    /// air-bronchogram mask and the visible regions of at least the smallest RSNA box side.
    func patchyField(lungs: [LungRegion], rng: inout RandomGenerator)
        -> (envelope: [Float], amplitude: [Float], bronchi: [Float], regions: [(box: BoundingBox, pixels: [Int])])
    {
        let n = config.size
        let s = Float(n)
        let scale = s / 1024
        let count = sampleBoxCount(&rng)
        var envelope = [Float](repeating: 0, count: n * n)  // normalised, 0...1
        var amplitude = [Float](repeating: 0, count: n * n)  // peak added intensity of the region
        var bronchi = [Float](repeating: 0, count: n * n)  // 0...1, lucent tubes
        for k in 0..<count {
            let lung = count == 2 ? lungs[k] : lungs[rng.nextInt(2)]
            let bb = lung.boundingBox
            // size: the RSNA medians (217 x 298 at 1024), clamped to the lung
            let w = min(max(217 * expf(0.30 * rng.nextNormal()), 50) * scale, 0.75 * bb.width)
            let h = min(max(298 * expf(0.32 * rng.nextNormal()), 55) * scale, 0.80 * bb.height)
            // centre: lower zone and periphery preferred (rejection sampling inside the lung)
            let lateral: Float = lung.centerX < s / 2 ? -1 : 1
            var cx = lung.centerX, cy = lung.centerY + 0.3 * lung.radiusY
            for _ in 0..<40 {
                let dx = rng.uniform(-0.75, 0.75), dy = rng.uniform(-0.6, 0.8)
                // lower zone and periphery; the medial base (heart border) less often
                var weight = (0.15 + 0.85 * smoothstep(-0.6, 0.8, dy)) * (0.35 + 0.65 * smoothstep(-0.75, 0.75, dx * lateral))
                if dx * lateral < -0.2, dy > 0.3 { weight *= 0.4 }
                let x = lung.centerX + dx * lung.radiusX, y = lung.centerY + dy * lung.radiusY
                guard lung.distance(x: x, y: y) < 0.75 else { continue }
                if rng.nextUniform() < weight {
                    cx = x
                    cy = y
                    break
                }
            }
            let amp = rng.uniform(0.12, 0.34)
            // a cluster of blurred blobs
            let blobs = 8 + rng.nextInt(10)
            var list: [(x: Float, y: Float, sx: Float, sy: Float, wt: Float)] = []
            for _ in 0..<blobs {
                let r = rng.uniform(0.07, 0.17)
                list.append((cx + 0.2 * w * rng.nextNormal(), cy + 0.2 * h * rng.nextNormal(), r * w * rng.uniform(0.8, 1.25),
                             r * h * rng.uniform(0.8, 1.25), rng.uniform(0.5, 1)))
            }
            let x0 = max(0, Int(cx - 1.1 * w)), x1 = min(n - 1, Int(cx + 1.1 * w))
            let y0 = max(0, Int(cy - 1.1 * h)), y1 = min(n - 1, Int(cy + 1.1 * h))
            guard x0 <= x1, y0 <= y1 else { continue }
            for y in y0...y1 {
                let fy = Float(y) + 0.5
                for x in x0...x1 {
                    let fx = Float(x) + 0.5
                    var sum: Float = 0
                    for b in list {
                        let dx = (fx - b.x) / b.sx, dy = (fy - b.y) / b.sy
                        let q = dx * dx + dy * dy
                        if q < 18 { sum += b.wt * expf(-0.5 * q) }
                    }
                    let e = 1 - expf(-1.3 * sum)
                    let i = y * n + x
                    if e > envelope[i] { envelope[i] = e }
                    if e > 0.05 { amplitude[i] = max(amplitude[i], amp) }
                }
            }
            if Double(rng.nextUniform()) < config.airBronchogramRate {
                drawBronchi(&bronchi, from: lung, towards: (cx, cy), extent: max(w, h), rng: &rng)
            }
        }
        // irregular margins and patchy filling, both from noise; confined to the lungs
        let margin = ValueNoise(extent: n, cell: 48 * scale, rng: &rng)
        var visible = [Bool](repeating: false, count: n * n)
        for y in 0..<n {
            let fy = Float(y) + 0.5
            for x in 0..<n {
                let i = y * n + x
                if envelope[i] <= 0 { continue }
                let fx = Float(x) + 0.5
                var inLung: Float = 0
                for l in lungs { inLung = max(inLung, 1 - smoothstep(0.86, 0.98, l.distance(x: fx, y: fy))) }
                let e = min(1, envelope[i] * (0.45 + 1.1 * margin.sample(fx, fy))) * inLung
                envelope[i] = e
                visible[i] = e >= Self.patchyVisibleLevel
            }
        }
        // one box per contiguous visible region; specks below the smallest RSNA box are erased
        let minSide = max(3, 0.045 * s)
        var regions = connectedRegions(visible, side: n)
        for r in regions where r.box.width < minSide || r.box.height < minSide {
            for i in r.pixels { envelope[i] = min(envelope[i], Self.patchyVisibleLevel * 0.9) }
        }
        regions.removeAll { $0.box.width < minSide || $0.box.height < minSide }
        return (envelope, amplitude, bronchi, regions)
    }

    /// A box count from ``SyntheticConfig/boxCountWeights``.
    func sampleBoxCount(_ rng: inout RandomGenerator) -> Int {
        let total = config.boxCountWeights.reduce(0, +)
        var r = Double(rng.nextUniform()) * total
        for (k, w) in config.boxCountWeights.enumerated() {
            if r < w { return k + 1 }
            r -= w
        }
        return config.boxCountWeights.count
    }

    /// Branching, tapering tubes from the hilar side of a region towards its periphery,
    /// drawn into `b` (0...1).
    func drawBronchi(_ b: inout [Float], from lung: LungRegion, towards c: (Float, Float), extent: Float, rng: inout RandomGenerator) {
        let n = config.size
        let s = Float(n)
        let hilumX = lung.centerX + (lung.centerX < s / 2 ? 0.55 : -0.55) * lung.radiusX
        let hilumY = lung.centerY - 0.15 * lung.radiusY
        var dx = c.0 - hilumX, dy = c.1 - hilumY
        let len = max(1, (dx * dx + dy * dy).squareRoot())
        dx /= len
        dy /= len
        let start = (c.0 - 0.35 * extent * dx, c.1 - 0.35 * extent * dy)
        let step = 0.07 * extent
        var stack: [(x: Float, y: Float, angle: Float, width: Float, depth: Int)] = [(start.0, start.1, atan2f(dy, dx), max(0.9, 0.006 * s), 0)]
        var segments = 0
        while let t = stack.popLast(), segments < 60 {
            var x = t.x, y = t.y, angle = t.angle, width = t.width
            let pieces = 3 + rng.nextInt(3)
            for _ in 0..<pieces {
                angle += rng.uniform(-0.25, 0.25)
                let nx = x + step * cosf(angle), ny = y + step * sinf(angle)
                drawTube(&b, from: (x, y), to: (nx, ny), width: width)
                segments += 1
                x = nx
                y = ny
                width *= 0.9
                if t.depth < 3, rng.nextUniform() < 0.35 {
                    let side: Float = rng.nextUniform() < 0.5 ? -1 : 1
                    stack.append((x, y, angle + side * rng.uniform(0.4, 0.8), width * 0.8, t.depth + 1))
                }
            }
        }
    }

    /// A soft line segment of half width `width` pixels (rounded profile) into `b`.
    func drawTube(_ b: inout [Float], from a: (Float, Float), to c: (Float, Float), width: Float) {
        let n = config.size
        let x0 = max(0, Int(min(a.0, c.0) - width - 1)), x1 = min(n - 1, Int(max(a.0, c.0) + width + 1))
        let y0 = max(0, Int(min(a.1, c.1) - width - 1)), y1 = min(n - 1, Int(max(a.1, c.1) + width + 1))
        guard x0 <= x1, y0 <= y1 else { return }
        let vx = c.0 - a.0, vy = c.1 - a.1
        let vv = max(1e-6, vx * vx + vy * vy)
        for y in y0...y1 {
            for x in x0...x1 {
                let px = Float(x) + 0.5 - a.0, py = Float(y) + 0.5 - a.1
                let t = min(1, max(0, (px * vx + py * vy) / vv))
                let ex = px - t * vx, ey = py - t * vy
                let d = (ex * ex + ey * ey).squareRoot() / width
                let v = max(0, 1 - d * d)
                if v > b[y * n + x] { b[y * n + x] = v }
            }
        }
    }

    /// The 4-connected regions of `mask` (`side x side`), each with its pixels and the box
    /// around them (pixel edges), in scan order.
    func connectedRegions(_ mask: [Bool], side n: Int) -> [(box: BoundingBox, pixels: [Int])] {
        var seen = [Bool](repeating: false, count: n * n)
        var out: [(box: BoundingBox, pixels: [Int])] = []
        for start in 0..<(n * n) where mask[start] && !seen[start] {
            var stack = [start]
            seen[start] = true
            var pixels: [Int] = []
            var minX = n, minY = n, maxX = 0, maxY = 0
            while let i = stack.popLast() {
                pixels.append(i)
                let x = i % n, y = i / n
                minX = min(minX, x)
                maxX = max(maxX, x)
                minY = min(minY, y)
                maxY = max(maxY, y)
                for j in [x > 0 ? i - 1 : -1, x < n - 1 ? i + 1 : -1, y > 0 ? i - n : -1, y < n - 1 ? i + n : -1]
                where j >= 0 && mask[j] && !seen[j] {
                    seen[j] = true
                    stack.append(j)
                }
            }
            out.append((BoundingBox(x: Float(minX), y: Float(minY), width: Float(maxX - minX + 1), height: Float(maxY - minY + 1)), pixels))
        }
        return out
    }

    /// Boxes that overlap by more than a third of the smaller one are replaced by their
    /// union (a reader boxes one region where two patches run into each other).
    func mergeOverlapping(_ boxes: [BoundingBox]) -> [BoundingBox] {
        var list = boxes
        var merged = true
        while merged {
            merged = false
            outer: for i in 0..<list.count {
                for j in (i + 1)..<list.count {
                    let a = list[i], b = list[j]
                    let iw = min(a.x2, b.x2) - max(a.x, b.x), ih = min(a.y2, b.y2) - max(a.y, b.y)
                    guard iw > 0, ih > 0, iw * ih > min(a.width * a.height, b.width * b.height) / 3 else { continue }
                    let x = min(a.x, b.x), y = min(a.y, b.y)
                    list[i] = BoundingBox(x: x, y: y, width: max(a.x2, b.x2) - x, height: max(a.y2, b.y2) - y)
                    list.remove(at: j)
                    merged = true
                    break outer
                }
            }
        }
        return list
    }
}
