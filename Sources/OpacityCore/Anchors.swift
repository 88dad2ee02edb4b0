import Foundation

/// The RetinaNet anchor layout: pyramid levels, ratios and scales.
///
/// Level `L` has stride `2^L` and base size `2^(L+2)`; each location carries
/// `ratios.count * scales.count` anchors with `h / w = ratio` and area
/// `(base * scale)^2`. Anchors are ordered level-major, then row-major over locations
/// (y outer, x inner), then `ratioIndex * scales.count + scaleIndex`, which is the head's
/// channel layout.
public struct AnchorGenerator: Hashable, Sendable {
    public var levels: ClosedRange<Int>
    public var ratios: [Float]
    public var scales: [Float]

    public init(levels: ClosedRange<Int> = 2...7, ratios: [Float] = [0.5, 1, 2],
                scales: [Float] = [1, Float(pow(2.0, 1.0 / 3.0)), Float(pow(2.0, 2.0 / 3.0))]) {
        self.levels = levels
        self.ratios = ratios
        self.scales = scales
    }

    /// Anchors per location.
    public var perLocation: Int { ratios.count * scales.count }

    /// The grid of a level for an input size: `ceil(size / 2^L)`.
    public static func gridSize(_ n: Int, level: Int) -> Int { (n + (1 << level) - 1) >> level }

    /// The base anchors of a level, centred at the origin, as `(x1, y1, x2, y2)`.
    public func baseAnchors(level: Int) -> [(Float, Float, Float, Float)] {
        let base = Float(1 << (level + 2))
        var out: [(Float, Float, Float, Float)] = []
        for r in ratios {
            for s in scales {
                let side = base * s
                let w = (side * side / r).squareRoot()
                let h = w * r
                out.append((-w / 2, -h / 2, w / 2, h / 2))
            }
        }
        return out
    }

    /// All anchors for an input of `height x width` pixels.
    public func anchors(height: Int, width: Int) -> AnchorSet {
        var boxes: [Float] = []
        var counts: [Int] = []
        for level in levels {
            let stride = Float(1 << level)
            let gh = Self.gridSize(height, level: level), gw = Self.gridSize(width, level: level)
            let base = baseAnchors(level: level)
            boxes.reserveCapacity(boxes.count + gh * gw * base.count * 4)
            for i in 0..<gh {
                let cy = (Float(i) + 0.5) * stride
                for j in 0..<gw {
                    let cx = (Float(j) + 0.5) * stride
                    for b in base { boxes += [cx + b.0, cy + b.1, cx + b.2, cy + b.3] }
                }
            }
            counts.append(gh * gw * base.count)
        }
        return AnchorSet(corners: boxes, levelCounts: counts, height: height, width: width)
    }
}

/// Concrete anchors for one input size, as corner boxes `(x1, y1, x2, y2)`.
public struct AnchorSet: Sendable {
    /// `count * 4` corner coordinates.
    public let corners: [Float]
    /// Anchors per pyramid level.
    public let levelCounts: [Int]
    public let height: Int
    public let width: Int

    public init(corners: [Float], levelCounts: [Int], height: Int, width: Int) {
        self.corners = corners
        self.levelCounts = levelCounts
        self.height = height
        self.width = width
    }

    /// The number of anchors.
    public var count: Int { corners.count / 4 }

    /// Anchor `i` as a box.
    public func box(_ i: Int) -> BoundingBox {
        BoundingBox(x1: corners[4 * i], y1: corners[4 * i + 1], x2: corners[4 * i + 2], y2: corners[4 * i + 3])
    }
}

/// RetinaNet box coding: deltas `(dx, dy, dw, dh)` of a box relative to an anchor, divided
/// by `std` (0.1, 0.1, 0.2, 0.2). Anchor sizes are `x2 - x1` (no `+1`); ground-truth sizes are
/// clamped to at least 1 pixel after the centres are taken, as the reference does.
public struct BoxCoder: Hashable, Sendable {
    public var std: (Float, Float, Float, Float)

    public init(std: (Float, Float, Float, Float) = (0.1, 0.1, 0.2, 0.2)) { self.std = std }

    public static func == (a: Self, b: Self) -> Bool { a.std == b.std }
    public func hash(into h: inout Hasher) { h.combine(std.0); h.combine(std.1); h.combine(std.2); h.combine(std.3) }

    /// The deltas that move anchor `(ax1, ay1, ax2, ay2)` onto `box`.
    @inline(__always)
    public func encode(_ box: BoundingBox, anchor a: (Float, Float, Float, Float)) -> (Float, Float, Float, Float) {
        let aw = a.2 - a.0, ah = a.3 - a.1
        let acx = a.0 + 0.5 * aw, acy = a.1 + 0.5 * ah
        let gcx = box.x + 0.5 * box.width, gcy = box.y + 0.5 * box.height
        let gw = max(box.width, 1), gh = max(box.height, 1)
        return ((gcx - acx) / aw / std.0, (gcy - acy) / ah / std.1, Foundation.log(gw / aw) / std.2, Foundation.log(gh / ah) / std.3)
    }

    /// The box given by applying deltas to an anchor.
    @inline(__always)
    public func decode(_ d: (Float, Float, Float, Float), anchor a: (Float, Float, Float, Float)) -> BoundingBox {
        let aw = a.2 - a.0, ah = a.3 - a.1
        let acx = a.0 + 0.5 * aw, acy = a.1 + 0.5 * ah
        let cx = acx + d.0 * std.0 * aw, cy = acy + d.1 * std.1 * ah
        let w = Foundation.exp(d.2 * std.2) * aw, h = Foundation.exp(d.3 * std.3) * ah
        return BoundingBox(x1: cx - 0.5 * w, y1: cy - 0.5 * h, x2: cx + 0.5 * w, y2: cy + 0.5 * h)
    }

    /// Clips a box to the image: `x1, y1 >= 0`, `x2 <= width`, `y2 <= height`.
    @inline(__always)
    public static func clip(_ b: BoundingBox, height: Int, width: Int) -> BoundingBox {
        BoundingBox(x1: max(0, b.x), y1: max(0, b.y), x2: min(Float(width), b.x2), y2: min(Float(height), b.y2))
    }
}

/// Assigns anchors to ground-truth boxes by IoU.
public struct AnchorMatcher: Sendable {
    /// IoU at or above which an anchor is positive.
    public var positiveIoU: Float = 0.5
    /// IoU below which an anchor is negative; in between it is ignored.
    public var negativeIoU: Float = 0.4

    public init(positiveIoU: Float = 0.5, negativeIoU: Float = 0.4) {
        self.positiveIoU = positiveIoU
        self.negativeIoU = negativeIoU
    }

    /// Per anchor: `1` positive, `0` negative, `-1` ignored; and for each anchor the index of
    /// the box with the highest IoU (`-1` when there are no boxes). An image without boxes
    /// makes every anchor negative.
    public func match(_ anchors: AnchorSet, boxes: [BoundingBox]) -> (labels: [Float], assigned: [Int32]) {
        let n = anchors.count
        var labels = [Float](repeating: 0, count: n)
        var assigned = [Int32](repeating: -1, count: n)
        if boxes.isEmpty { return (labels, assigned) }
        let gx1 = boxes.map(\.x), gy1 = boxes.map(\.y), gx2 = boxes.map(\.x2), gy2 = boxes.map(\.y2)
        let garea = boxes.map { $0.width * $0.height }
        anchors.corners.withUnsafeBufferPointer { c in
            labels.withUnsafeMutableBufferPointer { lb in
                assigned.withUnsafeMutableBufferPointer { ab in
                    let cp = c.baseAddress!, lp = lb.baseAddress!, ap = ab.baseAddress!
                    Compute.parallelRanges(n, minPerThread: 16384) { r in
                        for i in r {
                            let ax1 = cp[4 * i], ay1 = cp[4 * i + 1], ax2 = cp[4 * i + 2], ay2 = cp[4 * i + 3]
                            let aarea = (ax2 - ax1) * (ay2 - ay1)
                            var best: Float = -1, bi = 0
                            for g in 0..<gx1.count {
                                let iw = max(0, min(ax2, gx2[g]) - max(ax1, gx1[g]))
                                let ih = max(0, min(ay2, gy2[g]) - max(ay1, gy1[g]))
                                let inter = iw * ih
                                let iou = inter / max(aarea + garea[g] - inter, 1e-8)
                                if iou > best { best = iou; bi = g }
                            }
                            ap[i] = Int32(bi)
                            lp[i] = best >= positiveIoU ? 1 : (best < negativeIoU ? 0 : -1)
                        }
                    }
                }
            }
        }
        return (labels, assigned)
    }
}
